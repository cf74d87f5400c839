//! Query filters shared by the ledger readers and the archive (SPEC §5).

use crate::json::Value;

/// The filters of a turn query. Empty strings count as absent, because
/// the reference tests each filter for truthiness.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Inclusive lower bound on `ts` (string comparison).
    pub since: Option<String>,
    /// Inclusive upper bound on `ts` (string comparison).
    pub until: Option<String>,
    /// Matches a record's `project` or `projectKey`.
    pub project: Option<String>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    /// Enrichment key/value pairs that must all be equal, in the order the
    /// filter object lists them.
    pub enrichment: Vec<(String, String)>,
}

impl Query {
    /// Read a filter object as the fixtures and the CLI spell it
    /// (`{"since": …, "sessionId": …, "enrichment": {…}}`). Fields of the
    /// wrong type are ignored, as an undefined filter would be.
    pub fn from_json(v: &Value) -> Query {
        let text = |key: &str| {
            v.get(key)
                .and_then(Value::as_js_string)
                .map(|s| s.to_lossy().into_owned())
                .filter(|s| !s.is_empty())
        };
        let mut enrichment = Vec::new();
        if let Some(o) = v.get("enrichment").and_then(Value::as_object) {
            for (k, val) in o.iter() {
                if let Some(s) = val.as_js_string() {
                    enrichment.push((k.to_lossy().into_owned(), s.to_lossy().into_owned()));
                }
            }
        }
        Query {
            since: text("since"),
            until: text("until"),
            project: text("project"),
            session_id: text("sessionId"),
            source: text("source"),
            enrichment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn reads_camel_case_filters() {
        let q = Query::from_json(
            &parse(r#"{"since":"a","until":"","sessionId":"s","enrichment":{"tier":"x","n":1}}"#)
                .unwrap(),
        );
        assert_eq!(q.since.as_deref(), Some("a"));
        assert_eq!(q.until, None);
        assert_eq!(q.session_id.as_deref(), Some("s"));
        assert_eq!(q.enrichment, vec![("tier".to_string(), "x".to_string())]);
    }
}
