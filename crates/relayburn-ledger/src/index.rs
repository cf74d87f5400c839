//! Id hashes, content fingerprints (SPEC §4) and the index sidecars
//! `ledger.idx` / `ledger.content.idx`.

pub mod sidecar;

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use crate::json::{format_number, Value};
use crate::records::Kind;

/// How many content fingerprints the window keeps.
pub const CONTENT_WINDOW: usize = 10_000;

/// A 64-bit hash: the first 16 hex characters of a SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash16(pub u64);

impl Hash16 {
    /// Hash a key string (as Node hashes a JS string: UTF-8).
    pub fn of(key: &str) -> Hash16 {
        let d = Sha256::digest(key.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        Hash16(u64::from_be_bytes(b))
    }

    /// Parse a 16-hex-character line of an index file (already trimmed, as
    /// the reference trims each line). Only lowercase digits: the reference
    /// compares lines as strings, so an uppercase line never equals a digest.
    pub fn parse_hex(s: &str) -> Option<Hash16> {
        if s.len() != 16 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(Hash16)
    }

    /// The 16 lowercase hex characters the index files hold.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// Hashes [`Hash16`] keys by their own bits: they are SHA-256 prefixes,
/// already uniform, so SipHash would only cost time (a million ids are
/// loaded on a process's first append).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hash16Hasher(u64);

impl std::hash::Hasher for Hash16Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Hash16`; fold any other input in (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A set of [`Hash16`] with the pass-through hasher.
pub type Hash16Set = std::collections::HashSet<Hash16, std::hash::BuildHasherDefault<Hash16Hasher>>;

impl std::fmt::Display for Hash16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a record cannot be hashed: the reference would throw a TypeError.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record cannot be hashed: {0}")]
pub struct HashError(pub &'static str);

/// A record value as JavaScript's template literal prints it: absent is
/// `undefined`.
fn tmpl<'a>(v: Option<&'a Value>) -> Cow<'a, str> {
    match v {
        None => Cow::Borrowed("undefined"),
        Some(v) => v.js_to_string(),
    }
}

/// As `Array#join` prints an element: absent and null are empty.
fn joined<'a>(v: Option<&'a Value>) -> Cow<'a, str> {
    match v {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(v) => v.js_to_string(),
    }
}

/// `r.field ?? ''` then joined.
fn nullish_empty<'a>(v: Option<&'a Value>) -> Cow<'a, str> {
    joined(v)
}

/// Property access on a record; `null`/absent records throw in the reference.
fn rec(r: &Value) -> Result<&Value, HashError> {
    match r {
        Value::Null => Err(HashError("record is null or missing")),
        other => Ok(other),
    }
}

/// `source|sessionId|messageId` (template string).
pub fn turn_id(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    Ok(Hash16::of(&format!(
        "{}|{}|{}",
        tmpl(r.get("source")),
        tmpl(r.get("sessionId")),
        tmpl(r.get("messageId"))
    )))
}

/// `source|sessionId|ts` (template string).
pub fn compaction_id(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    Ok(Hash16::of(&format!(
        "{}|{}|{}",
        tmpl(r.get("source")),
        tmpl(r.get("sessionId")),
        tmpl(r.get("ts"))
    )))
}

/// `source|sessionId|relationshipType|relatedSessionId|agentId|parentToolUseId`
/// (joined, optional parts `?? ''`).
pub fn relationship_id(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    Ok(Hash16::of(&format!(
        "{}|{}|{}|{}|{}|{}",
        joined(r.get("source")),
        joined(r.get("sessionId")),
        joined(r.get("relationshipType")),
        nullish_empty(r.get("relatedSessionId")),
        nullish_empty(r.get("agentId")),
        nullish_empty(r.get("parentToolUseId"))
    )))
}

/// `source|sessionId|toolUseId|eventIndex` (joined).
pub fn tool_result_event_id(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    Ok(Hash16::of(&format!(
        "{}|{}|{}|{}",
        joined(r.get("source")),
        joined(r.get("sessionId")),
        joined(r.get("toolUseId")),
        joined(r.get("eventIndex"))
    )))
}

/// `source|sessionId|userUuid` (template string).
pub fn user_turn_id(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    Ok(Hash16::of(&format!(
        "{}|{}|{}",
        tmpl(r.get("source")),
        tmpl(r.get("sessionId")),
        tmpl(r.get("userUuid"))
    )))
}

/// The id hash of a record of `kind` (stamps have none).
pub fn record_id(kind: Kind, r: &Value) -> Option<Result<Hash16, HashError>> {
    Some(match kind {
        Kind::Turn => turn_id(r),
        Kind::Compaction => compaction_id(r),
        Kind::Relationship => relationship_id(r),
        Kind::ToolResultEvent => tool_result_event_id(r),
        Kind::UserTurn => user_turn_id(r),
        Kind::Stamp => return None,
    })
}

/// The result of JavaScript's binary `+` on two JSON-ish operands.
enum JsSum {
    Num(f64),
    Str(String),
}

fn js_add(a: Option<&Value>, b: Option<&Value>) -> JsSum {
    fn prim(v: Option<&Value>) -> Result<f64, String> {
        match v {
            None => Ok(f64::NAN),
            Some(Value::Null) => Ok(0.0),
            Some(Value::Bool(b)) => Ok(if *b { 1.0 } else { 0.0 }),
            Some(Value::Number(n)) => Ok(*n),
            // Strings, arrays and objects turn the sum into concatenation.
            Some(other) => Err(crate::js::to_string(other).into_owned()),
        }
    }
    fn text(v: Option<&Value>) -> String {
        match v {
            None => "undefined".into(),
            Some(v) => crate::js::to_string(v).into_owned(),
        }
    }
    match (prim(a), prim(b)) {
        (Ok(x), Ok(y)) => JsSum::Num(x + y),
        _ => JsSum::Str(format!("{}{}", text(a), text(b))),
    }
}

fn sum_text(s: JsSum) -> String {
    match s {
        JsSum::Num(n) => format_number(n),
        JsSum::Str(s) => s,
    }
}

/// `x[0]`: an array's first element, an object's `"0"` property; a
/// string's first character is a string, whose `.argsHash` is undefined.
fn first_element(v: &Value) -> Option<&Value> {
    match v {
        Value::Array(a) => a.first(),
        Value::Object(o) => o.get("0"),
        _ => None,
    }
}

/// The turn content fingerprint:
/// `ts|model|(input+output)|cacheRead|(cacheCreate5m+cacheCreate1h)|argsPrefix`.
pub fn turn_fingerprint(r: &Value) -> Result<Hash16, HashError> {
    let r = rec(r)?;
    let calls = match r.get("toolCalls") {
        None | Some(Value::Null) => return Err(HashError("turn has no toolCalls")),
        Some(v) => v,
    };
    // `toolCalls.length > 0 && typeof toolCalls[0]?.argsHash === 'string'`
    let prefix = if crate::js::length_positive(calls) {
        match first_element(calls).and_then(|c| c.get("argsHash")) {
            Some(Value::String(s)) => {
                // `.slice(0, 4)` counts UTF-16 code units and may split a
                // pair; the half left over hashes as U+FFFD.
                let units: Vec<u16> = match s.as_str() {
                    Some(t) => t.encode_utf16().take(4).collect(),
                    None => s.to_lossy().encode_utf16().take(4).collect(),
                };
                String::from_utf16_lossy(&units)
            }
            _ => String::new(),
        }
    } else {
        String::new()
    };
    let usage = match r.get("usage") {
        None | Some(Value::Null) => return Err(HashError("turn has no usage")),
        Some(u) => u,
    };
    let key = format!(
        "{}|{}|{}|{}|{}|{}",
        joined(r.get("ts")),
        joined(r.get("model")),
        sum_text(js_add(usage.get("input"), usage.get("output"))),
        joined(usage.get("cacheRead")),
        sum_text(js_add(
            usage.get("cacheCreate5m"),
            usage.get("cacheCreate1h")
        )),
        prefix
    );
    Ok(Hash16::of(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn sha16(s: &str) -> String {
        let d = Sha256::digest(s.as_bytes());
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn key_strings_follow_js_conversions() {
        let t = parse(r#"{"source":"codex","sessionId":"s","messageId":"m"}"#).unwrap();
        assert_eq!(turn_id(&t).unwrap().hex(), sha16("codex|s|m"));
        let t = parse(r#"{"source":"codex","sessionId":"s"}"#).unwrap();
        assert_eq!(turn_id(&t).unwrap().hex(), sha16("codex|s|undefined"));
        let r = parse(r#"{"source":"spawn-env","sessionId":"s","relationshipType":"subagent","relatedSessionId":"p"}"#).unwrap();
        assert_eq!(
            relationship_id(&r).unwrap().hex(),
            sha16("spawn-env|s|subagent|p||")
        );
        let e = parse(r#"{"source":"codex","sessionId":"s","toolUseId":"t","eventIndex":1e21}"#)
            .unwrap();
        assert_eq!(
            tool_result_event_id(&e).unwrap().hex(),
            sha16("codex|s|t|1e+21")
        );
        let e = parse(r#"{"source":"codex","sessionId":"s","toolUseId":"t"}"#).unwrap();
        assert_eq!(tool_result_event_id(&e).unwrap().hex(), sha16("codex|s|t|"));
        assert!(turn_id(&Value::Null).is_err());
    }

    #[test]
    fn fingerprint_uses_double_sums() {
        let t = parse(r#"{"ts":"T","model":"M","usage":{"input":0.1,"output":0.2,"cacheRead":1.5,"cacheCreate5m":1e21,"cacheCreate1h":1},"toolCalls":[{"argsHash":"abcdef"}]}"#).unwrap();
        assert_eq!(
            turn_fingerprint(&t).unwrap().hex(),
            sha16("T|M|0.30000000000000004|1.5|1e+21|abcd")
        );
        let t = parse(r#"{"ts":"T","model":"M","usage":{"input":1},"toolCalls":[]}"#).unwrap();
        assert_eq!(turn_fingerprint(&t).unwrap().hex(), sha16("T|M|NaN||NaN|"));
        let t = parse(r#"{"ts":"T","model":"M","usage":{"input":"5","output":7,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[{}]}"#).unwrap();
        assert_eq!(turn_fingerprint(&t).unwrap().hex(), sha16("T|M|57|0|0|"));
        let t = parse(r#"{"ts":"T","model":"M","toolCalls":[]}"#).unwrap();
        assert!(turn_fingerprint(&t).is_err());
    }

    #[test]
    fn string_to_number_follows_javascript() {
        // Expected values: Node's `Number(text)`.
        for (text, want) in [
            ("1", 1.0),
            (" 1 ", 1.0),
            ("", 0.0),
            ("  ", 0.0),
            ("0x10", 16.0),
            ("0X1f", 31.0),
            ("0o7", 7.0),
            ("0b11", 3.0),
            ("+1", 1.0),
            ("-1", -1.0),
            ("1e3", 1000.0),
            ("1.", 1.0),
            ("  .5", 0.5),
            ("Infinity", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("+Infinity", f64::INFINITY),
            ("\u{a0}1\u{2028}", 1.0),
            ("0.0000001", 1e-7),
            ("00012", 12.0),
        ] {
            assert_eq!(crate::js::string_to_number(text), want, "{text:?}");
        }
        for text in [
            "-0x10", "infinity", "inf", "NaN", "1_0", "1n", "1 2", "- 1", "1e", "-", ".", "0x",
        ] {
            assert!(crate::js::string_to_number(text).is_nan(), "{text:?}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = Hash16::of("x");
        assert_eq!(Hash16::parse_hex(&h.hex()), Some(h));
        assert_eq!(Hash16::parse_hex("xyz"), None);
    }
}
