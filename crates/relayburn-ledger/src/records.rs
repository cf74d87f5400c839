//! Ledger line kinds and the stamp selector rule (SPEC §2, §5).
//!
//! Records stay JSON values (see `json`) and are read by field name where
//! they are used. There are deliberately no typed views of the record
//! shapes: what the contract computes from a field — an id key, a
//! fingerprint, an archive column — depends on JavaScript's conversions of
//! whatever the field holds (absent, null, a number where a string was
//! meant), which a view returning `Option<&str>` would erase.

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

/// Does a stamp select this turn? Each present selector field must match
/// (`sessionId`, `messageId`, the `fromTs..=toTs` window) and at least one
/// must be present.
pub fn stamp_matches(selector: &Value, turn: &Value) -> bool {
    let session = selector.get("sessionId");
    let message = selector.get("messageId");
    let range = selector.get("range");
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
}
