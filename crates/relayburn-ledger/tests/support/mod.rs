//! The one support module of the integration tests: record builders
//! (here), the reference's fixtures (`fixtures`), archive dumps and temporary
//! homes (`archive`), the reliability workload and audits (`reliability`),
//! child processes in a role (`role`), and the replays of the
//! reference's `ops/` scripts (`ops`). Each test binary compiles all of
//! it and uses what it needs.
#![allow(dead_code)]

pub mod archive;
#[macro_use]
pub mod fixtures;
pub mod ops;
pub mod reliability;
pub mod role;

use relayburn_ledger::{json, Ledger, LedgerHome, Query, Value};

/// `{...base, ...overrides}`: existing keys keep their place.
pub fn merge(base: &str, overrides: &str) -> Value {
    let mut b = json::parse(base).unwrap();
    let o = json::parse(overrides).unwrap();
    let bo = b.as_object_mut().unwrap();
    for (k, v) in o.as_object().unwrap().iter() {
        bo.insert(k.clone(), v.clone());
    }
    b
}

pub const TURN: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","messageId":"m-001","turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"claude-opus-4","usage":{"input":100,"output":50,"reasoning":0,"cacheRead":1000,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[],"project":"/srv/demo"}"#;

pub const USER_TURN: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","userUuid":"u-0001","ts":"2026-04-20T00:00:00.500Z","precedingMessageId":"m-001","followingMessageId":"m-002","blocks":[{"kind":"tool_result","toolUseId":"tu-1","byteLen":4000,"approxTokens":1000}]}"#;

pub const RELATIONSHIP: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","relatedSessionId":"sess-up","relationshipType":"continuation","ts":"2026-04-20T00:00:00.000Z"}"#;

pub const TOOL_RESULT_EVENT: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","messageId":"m-001","toolUseId":"tu-1","eventIndex":0,"status":"completed","eventSource":"tool_result","ts":"2026-04-20T00:00:00.250Z"}"#;

pub const COMPACTION: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","ts":"2026-04-20T00:00:00.000Z","precedingMessageId":"m-001","tokensBeforeCompact":12345}"#;

pub const CONTENT: &str = r#"{"v":1,"source":"claude-code","sessionId":"sess-a","messageId":"m-001","ts":"2026-04-20T00:00:00.000Z","role":"assistant","kind":"text","text":"hi there"}"#;

pub fn turn(overrides: &str) -> Value {
    merge(TURN, overrides)
}

pub fn obj(text: &str) -> Value {
    json::parse(text).unwrap()
}

pub fn temp_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    (dir, ledger)
}

pub fn all<I: Iterator<Item = relayburn_ledger::Result<Value>>>(it: I) -> Vec<Value> {
    it.collect::<Result<Vec<_>, _>>().unwrap()
}

pub fn turns(l: &Ledger, q: &Query) -> Vec<Value> {
    all(l.query_turns(q).unwrap())
}

pub fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn enrichment<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("enrichment")
        .and_then(|e| e.get(key))
        .and_then(Value::as_str)
}

pub fn size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

pub fn q(text: &str) -> Query {
    Query::from_json(&json::parse(text).unwrap())
}

/// `node`, or `None` after a notice; with `RELAYBURN_REQUIRE_NODE=1` (as
/// CI sets) its absence fails the test instead.
pub fn node_or_skip() -> Option<&'static str> {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Some("node");
    }
    if std::env::var_os("RELAYBURN_REQUIRE_NODE").is_some_and(|v| v == "1") {
        panic!("node is required (RELAYBURN_REQUIRE_NODE=1) but cannot be run");
    }
    eprintln!("notice: node not found; skipping the test that needs it");
    None
}
