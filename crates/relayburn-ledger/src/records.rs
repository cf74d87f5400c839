//! Ledger line kinds and typed views of the record shapes of
//! `packages/reader/src/types.ts` (SPEC §2).
//!
//! Records stay JSON objects so that nothing the reference wrote is lost:
//! the views below only read fields. A field of the wrong type reads as
//! absent, as a `typeof` check in the reference would.

use crate::json::{JsString, Object, Value};

/// The six line kinds of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Turn,
    Stamp,
    Compaction,
    Relationship,
    ToolResultEvent,
    UserTurn,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Turn,
        Kind::Stamp,
        Kind::Compaction,
        Kind::Relationship,
        Kind::ToolResultEvent,
        Kind::UserTurn,
    ];

    /// The `kind` string on the line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Turn => "turn",
            Kind::Stamp => "stamp",
            Kind::Compaction => "compaction",
            Kind::Relationship => "relationship",
            Kind::ToolResultEvent => "tool_result_event",
            Kind::UserTurn => "user_turn",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The kind of a parsed line: an object whose `v` is exactly the number 1
/// and whose `kind` is known. Anything else is skipped by readers.
pub fn line_kind(line: &Value) -> Option<Kind> {
    let o = line.as_object()?;
    if o.get("v")?.as_f64()? != 1.0 {
        return None;
    }
    Kind::parse(o.get("kind")?.as_str()?)
}

/// Wrap a record into its ledger line, `{"v":1,"kind":K,"record":…}`.
pub fn wrap_record(kind: Kind, record: Value) -> Value {
    debug_assert!(kind != Kind::Stamp, "stamps are not wrapped");
    let mut o = Object::new();
    o.insert("v", Value::Number(1.0));
    o.insert("kind", Value::str(kind.as_str()));
    o.insert("record", record);
    Value::Object(o)
}

macro_rules! view {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $key:literal => $acc:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'a>(pub &'a Value);

        impl<'a> $name<'a> {
            /// The record as JSON.
            pub fn value(&self) -> &'a Value {
                self.0
            }
            /// A field by its JSON name.
            pub fn field(&self, key: &str) -> Option<&'a Value> {
                self.0.get(key)
            }
            $(
                $(#[$fm])*
                pub fn $f(&self) -> view!(@ty $acc) {
                    view!(@get self.0.get($key), $acc)
                }
            )*
        }
    };
    (@ty str) => { Option<&'a str> };
    (@ty num) => { Option<f64> };
    (@ty bool) => { Option<bool> };
    (@ty obj) => { Option<&'a Object> };
    (@ty arr) => { Option<&'a [Value]> };
    (@get $e:expr, str) => { $e.and_then(Value::as_str) };
    (@get $e:expr, num) => { $e.and_then(Value::as_f64) };
    (@get $e:expr, bool) => { $e.and_then(Value::as_bool) };
    (@get $e:expr, obj) => { $e.and_then(Value::as_object) };
    (@get $e:expr, arr) => { $e.and_then(Value::as_array) };
}

view!(
    /// `TurnRecord`: one assistant turn with its token usage.
    TurnRecord {
        source: "source" => str,
        session_id: "sessionId" => str,
        session_path: "sessionPath" => str,
        message_id: "messageId" => str,
        turn_index: "turnIndex" => num,
        ts: "ts" => str,
        model: "model" => str,
        project: "project" => str,
        project_key: "projectKey" => str,
        usage_object: "usage" => obj,
        tool_calls: "toolCalls" => arr,
        files_touched: "filesTouched" => arr,
        subagent_object: "subagent" => obj,
        stop_reason: "stopReason" => str,
        activity: "activity" => str,
        retries: "retries" => num,
        has_edits: "hasEdits" => bool,
        fidelity_object: "fidelity" => obj,
    }
);

impl<'a> TurnRecord<'a> {
    pub fn usage(&self) -> Option<Usage> {
        self.0.get("usage").map(Usage::from_value)
    }
    pub fn subagent(&self) -> Option<Subagent<'a>> {
        self.0
            .get("subagent")
            .filter(|v| v.as_object().is_some())
            .map(Subagent)
    }
    pub fn fidelity(&self) -> Option<Fidelity<'a>> {
        self.0
            .get("fidelity")
            .filter(|v| v.as_object().is_some())
            .map(Fidelity)
    }
    pub fn tool_call_views(&self) -> impl Iterator<Item = ToolCall<'a>> {
        self.tool_calls().unwrap_or(&[]).iter().map(ToolCall)
    }
}

/// `Usage`: token counts. Numbers are doubles; a missing or non-numeric
/// field reads as NaN, which is what JavaScript arithmetic would see.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub input: f64,
    pub output: f64,
    pub reasoning: f64,
    pub cache_read: f64,
    pub cache_create_5m: f64,
    pub cache_create_1h: f64,
}

impl Usage {
    pub fn from_value(v: &Value) -> Usage {
        let n = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        Usage {
            input: n("input"),
            output: n("output"),
            reasoning: n("reasoning"),
            cache_read: n("cacheRead"),
            cache_create_5m: n("cacheCreate5m"),
            cache_create_1h: n("cacheCreate1h"),
        }
    }
}

view!(
    /// `ToolCall`: one tool invocation inside a turn.
    ToolCall {
        id: "id" => str,
        name: "name" => str,
        target: "target" => str,
        args_hash: "argsHash" => str,
        is_error: "isError" => bool,
        edit_pre_hash: "editPreHash" => str,
        edit_post_hash: "editPostHash" => str,
        skill_name: "skillName" => str,
        replaced_tools: "replacedTools" => arr,
        collapsed_calls: "collapsedCalls" => num,
    }
);

view!(
    /// `Subagent`: sidechain metadata of a turn.
    Subagent {
        is_sidechain: "isSidechain" => bool,
        parent_tool_use_id: "parentToolUseId" => str,
        agent_id: "agentId" => str,
        parent_agent_id: "parentAgentId" => str,
        subagent_type: "subagentType" => str,
        description: "description" => str,
    }
);

view!(
    /// `Fidelity`: granularity, coverage and class of the usage data.
    Fidelity {
        granularity: "granularity" => str,
        class: "class" => str,
        coverage_object: "coverage" => obj,
    }
);

impl<'a> Fidelity<'a> {
    pub fn coverage(&self) -> Option<Coverage<'a>> {
        self.0
            .get("coverage")
            .filter(|v| v.as_object().is_some())
            .map(Coverage)
    }
}

view!(
    /// `Coverage`: which usage fields the source actually supplies.
    Coverage {
        has_input_tokens: "hasInputTokens" => bool,
        has_output_tokens: "hasOutputTokens" => bool,
        has_reasoning_tokens: "hasReasoningTokens" => bool,
        has_cache_read_tokens: "hasCacheReadTokens" => bool,
        has_cache_create_tokens: "hasCacheCreateTokens" => bool,
        has_tool_calls: "hasToolCalls" => bool,
        has_tool_result_events: "hasToolResultEvents" => bool,
        has_session_relationships: "hasSessionRelationships" => bool,
        has_raw_content: "hasRawContent" => bool,
    }
);

view!(
    /// `CompactionEvent`: a context compaction in a session.
    CompactionEvent {
        source: "source" => str,
        session_id: "sessionId" => str,
        ts: "ts" => str,
        preceding_message_id: "precedingMessageId" => str,
        tokens_before_compact: "tokensBeforeCompact" => num,
    }
);

view!(
    /// `SessionRelationshipRecord`: an edge between two sessions.
    SessionRelationshipRecord {
        source: "source" => str,
        session_id: "sessionId" => str,
        related_session_id: "relatedSessionId" => str,
        relationship_type: "relationshipType" => str,
        ts: "ts" => str,
        source_session_id: "sourceSessionId" => str,
        source_version: "sourceVersion" => str,
        parent_tool_use_id: "parentToolUseId" => str,
        agent_id: "agentId" => str,
        subagent_type: "subagentType" => str,
        description: "description" => str,
    }
);

view!(
    /// `ToolResultEventRecord`: a tool output or terminal status event.
    ToolResultEventRecord {
        source: "source" => str,
        session_id: "sessionId" => str,
        message_id: "messageId" => str,
        tool_use_id: "toolUseId" => str,
        call_index: "callIndex" => num,
        event_index: "eventIndex" => num,
        ts: "ts" => str,
        status: "status" => str,
        event_source: "eventSource" => str,
        content_length: "contentLength" => num,
        content_hash: "contentHash" => str,
        is_error: "isError" => bool,
        usage_attribution: "usageAttribution" => str,
        subagent_session_id: "subagentSessionId" => str,
        agent_id: "agentId" => str,
        replaced_tools: "replacedTools" => arr,
        collapsed_calls: "collapsedCalls" => num,
    }
);

impl ToolResultEventRecord<'_> {
    pub fn usage(&self) -> Option<Usage> {
        self.0.get("usage").map(Usage::from_value)
    }
}

view!(
    /// `UserTurnRecord`: the blocks of one user line between assistant turns.
    UserTurnRecord {
        source: "source" => str,
        session_id: "sessionId" => str,
        user_uuid: "userUuid" => str,
        ts: "ts" => str,
        preceding_message_id: "precedingMessageId" => str,
        following_message_id: "followingMessageId" => str,
        blocks: "blocks" => arr,
    }
);

view!(
    /// `UserTurnBlock`: one tool result or text block of a user turn.
    UserTurnBlock {
        kind: "kind" => str,
        tool_use_id: "toolUseId" => str,
        byte_len: "byteLen" => num,
        approx_tokens: "approxTokens" => num,
        is_error: "isError" => bool,
    }
);

view!(
    /// `ContentRecord`: raw text or tool payload kept in a content sidecar.
    ContentRecord {
        source: "source" => str,
        session_id: "sessionId" => str,
        message_id: "messageId" => str,
        ts: "ts" => str,
        role: "role" => str,
        kind: "kind" => str,
        text: "text" => str,
        tool_use: "toolUse" => obj,
        tool_result: "toolResult" => obj,
    }
);

view!(
    /// A stamp line: `{"v":1,"kind":"stamp","ts","selector","enrichment"}`.
    StampLine {
        ts: "ts" => str,
        selector_object: "selector" => obj,
        enrichment: "enrichment" => obj,
    }
);

view!(
    /// `StampSelector`: which turns a stamp applies to.
    StampSelector {
        session_id_value: "sessionId" => str,
        message_id_value: "messageId" => str,
        range_object: "range" => obj,
    }
);

view!(
    /// `MessageIdRange`: a timestamp window (the message-id bounds are kept
    /// but, as in the reference, not used for matching).
    MessageIdRange {
        from_message_id: "fromMessageId" => str,
        to_message_id: "toMessageId" => str,
        from_ts: "fromTs" => str,
        to_ts: "toTs" => str,
    }
);

impl<'a> StampLine<'a> {
    pub fn selector(&self) -> Option<StampSelector<'a>> {
        self.0.get("selector").map(StampSelector)
    }
}

impl<'a> StampSelector<'a> {
    /// The raw `sessionId` (any JSON type; presence is what matters).
    pub fn session_id(&self) -> Option<&'a Value> {
        self.0.get("sessionId")
    }
    pub fn message_id(&self) -> Option<&'a Value> {
        self.0.get("messageId")
    }
    pub fn range(&self) -> Option<&'a Value> {
        self.0.get("range")
    }
}

/// Does a stamp select this turn? Each present selector field must match
/// (`sessionId`, `messageId`, the `fromTs..=toTs` window) and at least one
/// must be present.
pub fn stamp_matches(selector: &Value, turn: &Value) -> bool {
    let sel = StampSelector(selector);
    let session = sel.session_id();
    let message = sel.message_id();
    let range = sel.range();
    if let Some(s) = session {
        if Some(s) != turn.get("sessionId") {
            return false;
        }
    }
    if let Some(m) = message {
        if Some(m) != turn.get("messageId") {
            return false;
        }
    }
    if let Some(r) = range {
        let ts = turn.get("ts");
        if let Some(from) = r.get("fromTs").filter(|v| v.is_truthy()) {
            if js_less(ts, from) {
                return false;
            }
        }
        if let (Some(to), Some(ts)) = (r.get("toTs").filter(|v| v.is_truthy()), ts) {
            if js_less(Some(to), ts) {
                return false;
            }
        }
    }
    session.is_some() || message.is_some() || range.is_some()
}

/// `a < b` for the string comparisons the reference makes on timestamps.
/// Non-strings compare false, as `undefined < "x"` does.
fn js_less(a: Option<&Value>, b: &Value) -> bool {
    match (a.and_then(Value::as_js_string), b.as_js_string()) {
        (Some(x), Some(y)) => x.js_cmp(y).is_lt(),
        _ => false,
    }
}

/// A helper for building string-keyed objects in tests and generators.
pub fn obj(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (JsString::from(k), v))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn kinds_need_v_exactly_one() {
        for (line, want) in [
            (r#"{"v":1,"kind":"turn"}"#, Some(Kind::Turn)),
            (r#"{"v":1.0,"kind":"stamp"}"#, Some(Kind::Stamp)),
            (r#"{"v":1e0,"kind":"user_turn"}"#, Some(Kind::UserTurn)),
            (r#"{"v":"1","kind":"turn"}"#, None),
            (r#"{"v":2,"kind":"turn"}"#, None),
            (r#"{"kind":"turn"}"#, None),
            (r#"{"v":1,"kind":"mystery"}"#, None),
            (r#"[1]"#, None),
            (r#"null"#, None),
        ] {
            assert_eq!(line_kind(&parse(line).unwrap()), want, "{line}");
        }
    }

    #[test]
    fn stamp_selector_rules() {
        let turn = parse(r#"{"sessionId":"s","messageId":"m","ts":"2026-01-02"}"#).unwrap();
        let yes = [
            r#"{"sessionId":"s"}"#,
            r#"{"messageId":"m"}"#,
            r#"{"range":{"fromTs":"2026-01-01","toTs":"2026-01-02"}}"#,
            r#"{"range":{}}"#,
            r#"{"range":{"fromTs":""}}"#,
            r#"{"sessionId":"s","range":{"toTs":"2026-01-03"}}"#,
        ];
        let no = [
            r#"{}"#,
            r#"{"sessionId":"t"}"#,
            r#"{"sessionId":"s","messageId":"x"}"#,
            r#"{"range":{"fromTs":"2026-01-03"}}"#,
            r#"{"range":{"toTs":"2026-01-01"}}"#,
            r#"{"sessionId":null}"#,
        ];
        for s in yes {
            assert!(stamp_matches(&parse(s).unwrap(), &turn), "{s}");
        }
        for s in no {
            assert!(!stamp_matches(&parse(s).unwrap(), &turn), "{s}");
        }
    }

    #[test]
    fn typed_views_read_fields() {
        let v = parse(r#"{"sessionId":"s","turnIndex":3,"usage":{"input":1.5,"output":2},"toolCalls":[{"id":"t","argsHash":"abcd"}],"extra":{"x":1}}"#).unwrap();
        let t = TurnRecord(&v);
        assert_eq!(t.session_id(), Some("s"));
        assert_eq!(t.turn_index(), Some(3.0));
        let u = t.usage().unwrap();
        assert_eq!(u.input, 1.5);
        assert!(u.reasoning.is_nan());
        assert_eq!(
            t.tool_call_views().next().unwrap().args_hash(),
            Some("abcd")
        );
        assert!(t.field("extra").is_some());
        assert_eq!(t.model(), None);
    }
}
