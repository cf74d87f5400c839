//! Ledger records turned into archive rows.
//!
//! The reference hands record fields to SQLite as they are, so a field's
//! JSON type decides what is stored: numbers are bound as doubles (SQLite
//! then stores integral ones in `INTEGER` columns as integers), strings as
//! text (a lone surrogate becomes U+FFFD), `null` as NULL. Values the
//! reference cannot bind (a missing required field, a boolean, an object)
//! make its whole build fail; here they reject just that record, with a
//! reason, and the build goes on.

use crate::js;
use crate::json::{JsString, Object, Value};

pub(crate) use super::sql::{Sv, TOOL_CALL_COLUMNS, TURN_COLUMNS};

/// The `usage` fields, in the order of the `turns` columns
/// `input_tokens` … `cache_create_1h_tokens`.
pub(crate) const USAGE_KEYS: [&str; 6] = [
    "input",
    "output",
    "reasoning",
    "cacheRead",
    "cacheCreate5m",
    "cacheCreate1h",
];

/// Why a record cannot be archived.
pub(crate) type Reject = String;

fn js_string_into(s: &mut JsString) -> String {
    match std::mem::replace(s, JsString::Utf8(Box::from(""))) {
        JsString::Utf8(b) => b.into_string(),
        JsString::Utf16(u) => String::from_utf16_lossy(&u),
    }
}

/// The parameter the reference binds for a value, moving strings out.
fn take_bindable(v: &mut Value) -> Option<Sv> {
    match v {
        Value::Null => Some(Sv::Null),
        Value::Number(n) => Some(Sv::Real(*n)),
        Value::String(s) => Some(Sv::Text(js_string_into(s))),
        _ => None,
    }
}

/// The parameter for a borrowed value (used where the value stays needed).
pub(crate) fn bindable(v: &Value) -> Option<Sv> {
    match v {
        Value::Null => Some(Sv::Null),
        Value::Number(n) => Some(Sv::Real(*n)),
        Value::String(s) => Some(Sv::Text(s.to_lossy().into_owned())),
        _ => None,
    }
}

/// `field` passed as is: absent or unbindable is fatal for the record.
fn raw(o: &mut Object, field: &str) -> Result<Sv, Reject> {
    match o.get_mut(field) {
        None => Err(format!("{field} is missing")),
        Some(v) => take_bindable(v).ok_or_else(|| format!("{field} is not a string or number")),
    }
}

/// A column declared `NOT NULL`: null is fatal too.
fn required(o: &mut Object, field: &str) -> Result<Sv, Reject> {
    match raw(o, field)? {
        Sv::Null => Err(format!("{field} is null")),
        sv => Ok(sv),
    }
}

/// `field ?? null`.
fn optional(o: &mut Object, field: &str) -> Result<Sv, Reject> {
    match o.get_mut(field) {
        None => Ok(Sv::Null),
        Some(v) => take_bindable(v).ok_or_else(|| format!("{field} is not a string or number")),
    }
}

/// `field === undefined ? null : field ? 1 : 0`.
fn flag(o: &Object, field: &str) -> Sv {
    match o.get(field) {
        None => Sv::Null,
        Some(v) => Sv::Int(i64::from(v.is_truthy())),
    }
}

/// The fields of a turn the stamp fold and session bookkeeping look at,
/// read before the row takes the strings away.
pub(crate) struct TurnKeys {
    /// `${source}|${sessionId}` as the reference builds it.
    pub session_key: String,
}

/// A `turns` row in insert order, with its `tool_calls` rows.
pub(crate) struct TurnRow {
    pub cols: [Sv; TURN_COLUMNS],
    /// tool_use_id, tool_name, target, args_hash, is_error, replaced_tools,
    /// collapsed_calls (call_index is the position).
    pub tool_calls: Vec<[Sv; TOOL_CALL_COLUMNS]>,
}

/// The enrichment columns and JSON text of a folded turn.
#[derive(Debug, Clone)]
pub(crate) struct EnrichmentCols {
    pub workflow_id: Sv,
    pub agent_id: Sv,
    pub persona: Sv,
    pub tier: Sv,
    pub json: String,
}

impl EnrichmentCols {
    /// No stamp applies: all NULL, `{}`.
    pub(crate) fn empty() -> EnrichmentCols {
        EnrichmentCols {
            workflow_id: Sv::Null,
            agent_id: Sv::Null,
            persona: Sv::Null,
            tier: Sv::Null,
            json: "{}".into(),
        }
    }
}

/// The record object of a `turn`, `compaction` or `tool_result_event`
/// line; anything but an object fails in the reference's field reads.
pub(crate) fn record_mut<'a>(line: &'a mut Value, what: &str) -> Result<&'a mut Object, Reject> {
    line.as_object_mut()
        .and_then(|o| o.get_mut("record"))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("{what} line has no record object"))
}

pub(crate) fn turn_keys(rec: &Object) -> TurnKeys {
    let s = |k: &str| match rec.get(k) {
        None => "undefined".to_string(),
        Some(v) => v.js_to_string().into_owned(),
    };
    TurnKeys {
        session_key: format!("{}|{}", s("source"), s("sessionId")),
    }
}

/// Build the `turns` and `tool_calls` rows of a turn record, moving its
/// strings out. Fails where the reference's insert would throw.
pub(crate) fn turn_row(rec: &mut Object, enrichment: EnrichmentCols) -> Result<TurnRow, Reject> {
    // Shape checks first, so that a rejected record costs nothing more.
    let usage = match rec.get("usage") {
        None | Some(Value::Null) => return Err("usage is missing".into()),
        Some(u) => u,
    };
    if usage.as_object().is_none() {
        return Err("usage is not an object".into());
    }
    let tool_calls = match rec.get("toolCalls") {
        None | Some(Value::Null) => return Err("toolCalls is missing".into()),
        Some(Value::Array(a)) => a.len(),
        Some(_) => return Err("toolCalls is not an array".into()),
    };

    let has_edits = flag(rec, "hasEdits");
    let (is_sidechain, sub_fields) = match rec.get("subagent") {
        Some(v) if v.is_truthy() => {
            let side = v.get("isSidechain").is_some_and(Value::is_truthy);
            (Sv::Int(i64::from(side)), v.as_object().is_some())
        }
        _ => (Sv::Null, false),
    };
    let (fid_class, tokens_present, cost_present) = fidelity_cols(rec)?;

    let source = required(rec, "source")?;
    let session_id = required(rec, "sessionId")?;
    let message_id = required(rec, "messageId")?;
    let turn_index = required(rec, "turnIndex")?;
    let ts = required(rec, "ts")?;
    let model = required(rec, "model")?;
    let project = optional(rec, "project")?;
    let project_key = optional(rec, "projectKey")?;
    let activity = optional(rec, "activity")?;
    let stop_reason = optional(rec, "stopReason")?;
    let retries = optional(rec, "retries")?;

    let mut sub = [Sv::Null, Sv::Null, Sv::Null, Sv::Null, Sv::Null];
    if sub_fields {
        if let Some(o) = rec.get_mut("subagent").and_then(Value::as_object_mut) {
            for (slot, key) in sub.iter_mut().zip([
                "agentId",
                "parentAgentId",
                "parentToolUseId",
                "subagentType",
                "description",
            ]) {
                *slot = optional(o, key).map_err(|e| format!("subagent.{e}"))?;
            }
        }
    }

    let mut usage_cols = [Sv::Null, Sv::Null, Sv::Null, Sv::Null, Sv::Null, Sv::Null];
    if let Some(u) = rec.get_mut("usage").and_then(Value::as_object_mut) {
        for (slot, key) in usage_cols.iter_mut().zip(USAGE_KEYS) {
            *slot = required(u, key).map_err(|e| format!("usage.{e}"))?;
        }
    }

    let mut calls = Vec::with_capacity(tool_calls);
    if let Some(Value::Array(a)) = rec.get_mut("toolCalls") {
        for (i, tc) in a.iter_mut().enumerate() {
            calls.push(tool_call_row(tc).map_err(|e| format!("toolCalls[{i}].{e}"))?);
        }
    }

    let [agent_id, parent_agent_id, parent_tool_use_id, subagent_type, description] = sub;
    let [input, output, reasoning, cache_read, cc5m, cc1h] = usage_cols;
    let EnrichmentCols {
        workflow_id,
        agent_id: enr_agent,
        persona,
        tier,
        json,
    } = enrichment;
    Ok(TurnRow {
        cols: [
            source,
            session_id,
            message_id,
            turn_index,
            ts,
            model,
            project,
            project_key,
            activity,
            stop_reason,
            has_edits,
            retries,
            is_sidechain,
            agent_id,
            parent_agent_id,
            parent_tool_use_id,
            subagent_type,
            description,
            input,
            output,
            reasoning,
            cache_read,
            cc5m,
            cc1h,
            workflow_id,
            enr_agent,
            persona,
            tier,
            Sv::Text(json),
            fid_class,
            tokens_present,
            cost_present,
        ],
        tool_calls: calls,
    })
}

/// attribution_fidelity, tokens_present, cost_present.
fn fidelity_cols(rec: &Object) -> Result<(Sv, Sv, Sv), Reject> {
    let Some(f) = rec.get("fidelity").filter(|f| f.is_truthy()) else {
        return Ok((Sv::Null, Sv::Null, Sv::Null));
    };
    let class = match f.get("class") {
        None => return Err("fidelity.class is missing".into()),
        Some(c) => bindable(c).ok_or("fidelity.class is not a string")?,
    };
    let cov = match f.get("coverage") {
        None | Some(Value::Null) => return Err("fidelity.coverage is missing".into()),
        Some(c) => c,
    };
    let any = ["hasInputTokens", "hasOutputTokens", "hasReasoningTokens"]
        .iter()
        .any(|k| cov.get(k).is_some_and(Value::is_truthy));
    let cost = f.get("granularity").and_then(Value::as_str) == Some("cost-only");
    Ok((class, Sv::Int(i64::from(any)), Sv::Int(i64::from(cost))))
}

fn tool_call_row(tc: &mut Value) -> Result<[Sv; TOOL_CALL_COLUMNS], Reject> {
    let o = match tc {
        Value::Object(o) => o,
        Value::Null => return Err("is null".into()),
        _ => return Err("name is missing".into()),
    };
    let is_error = flag(o, "isError");
    let replaced = match o.get("replacedTools") {
        Some(v) if js::truthy(v) && js::length_positive(v) => Sv::Text(v.to_json()),
        _ => Sv::Null,
    };
    let collapsed = match o.get("collapsedCalls") {
        Some(Value::Number(n)) if *n > 0.0 => Sv::Real(*n),
        _ => Sv::Null,
    };
    Ok([
        optional(o, "id")?,
        required(o, "name")?,
        optional(o, "target")?,
        optional(o, "argsHash")?,
        is_error,
        replaced,
        collapsed,
    ])
}

/// A `compactions` row: source, session_id, ts, preceding_message_id,
/// tokens_before_compact.
pub(crate) fn compaction_row(rec: &mut Object) -> Result<[Sv; 5], Reject> {
    Ok([
        required(rec, "source")?,
        required(rec, "sessionId")?,
        required(rec, "ts")?,
        optional(rec, "precedingMessageId")?,
        optional(rec, "tokensBeforeCompact")?,
    ])
}

/// A `tool_result_events` row in insert order.
pub(crate) fn tool_result_event_row(rec: &mut Object) -> Result<[Sv; 14], Reject> {
    let is_error = flag(rec, "isError");
    // A missing messageId is stored as '' so that the key stays NOT NULL.
    let message_id = match rec.get_mut("messageId") {
        None | Some(Value::Null) => Sv::Text(String::new()),
        Some(v) => take_bindable(v).ok_or("messageId is not a string or number")?,
    };
    let call_index = match rec.get_mut("callIndex") {
        None | Some(Value::Null) => Sv::Real(0.0),
        Some(v) => take_bindable(v).ok_or("callIndex is not a number")?,
    };
    Ok([
        required(rec, "source")?,
        required(rec, "sessionId")?,
        message_id,
        required(rec, "toolUseId")?,
        call_index,
        required(rec, "eventIndex")?,
        raw(rec, "status")?,
        optional(rec, "contentLength")?,
        optional(rec, "contentHash")?,
        is_error,
        optional(rec, "subagentSessionId")?,
        optional(rec, "agentId")?,
        raw(rec, "eventSource")?,
        optional(rec, "ts")?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn enr() -> EnrichmentCols {
        EnrichmentCols::empty()
    }

    fn obj(s: &str) -> Object {
        parse(s).unwrap().into_object().unwrap()
    }

    #[test]
    fn turn_without_usage_is_rejected() {
        let mut o = obj(
            r#"{"source":"a","sessionId":"s","messageId":"m","turnIndex":0,"ts":"t","model":"x","toolCalls":[]}"#,
        );
        assert_eq!(turn_row(&mut o, enr()).err().unwrap(), "usage is missing");
    }

    #[test]
    fn values_bind_like_node() {
        let mut o = obj(
            r#"{"source":"a","sessionId":"s","messageId":"m","turnIndex":1.5,"ts":"t","model":"x",
            "usage":{"input":1,"output":"2","reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},
            "toolCalls":[{"name":"Read","isError":"yes","replacedTools":[]}],"hasEdits":null,
            "subagent":{"agentId":"g"},"fidelity":{"class":"full","coverage":{"hasOutputTokens":1},"granularity":"cost-only"}}"#,
        );
        let row = turn_row(&mut o, enr()).unwrap();
        assert_eq!(row.cols[3], Sv::Real(1.5));
        assert_eq!(row.cols[10], Sv::Int(0));
        assert_eq!(row.cols[12], Sv::Int(0));
        assert_eq!(row.cols[13], Sv::Text("g".into()));
        assert_eq!(row.cols[19], Sv::Text("2".into()));
        assert_eq!(row.cols[29], Sv::Text("full".into()));
        assert_eq!(row.cols[30], Sv::Int(1));
        assert_eq!(row.cols[31], Sv::Int(1));
        assert_eq!(row.tool_calls[0][4], Sv::Int(1));
        assert_eq!(row.tool_calls[0][5], Sv::Null);
    }

    #[test]
    fn boolean_in_a_bound_field_is_rejected() {
        let mut o = obj(
            r#"{"source":"a","sessionId":"s","messageId":"m","turnIndex":0,"ts":"t","model":"x","project":true,
            "usage":{"input":1,"output":2,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[]}"#,
        );
        assert!(turn_row(&mut o, enr()).is_err());
    }
}
