//! Turn queries answered from the archive, as the reference's
//! `archive-query` tests pin them down, plus the 2^53 extension.

mod support;

use relayburn_ledger::archive::{
    archive_available, build_archive, query_all_from_archive, query_turns_from_archive,
    rebuild_archive,
};
use relayburn_ledger::json::{parse, Value};
use relayburn_ledger::query::Query;
use relayburn_ledger::{Kind, LedgerHome};
use support::archive::*;

const T0: &str = "2026-04-20T00:00:00.000Z";

fn add(h: &TempHome, session: &str, message: &str, idx: u32, ts: &str, extra: &str) {
    h.append_record(Kind::Turn, &turn(session, message, idx, ts, extra));
}

fn q(json: &str) -> Query {
    Query::from_json(&parse(json).unwrap())
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.get("messageId")
                .and_then(Value::as_str)
                .unwrap()
                .to_string()
        })
        .collect()
}

fn two_tool_calls() -> &'static str {
    r#"{"toolCalls":[{"id":"tu-1","name":"Read","target":"/tmp/foo.ts","argsHash":"a1"},{"id":"tu-2","name":"Edit","target":"/tmp/foo.ts","argsHash":"a2","isError":false}]}"#
}

#[test]
fn availability_follows_the_first_build() {
    let h = TempHome::new();
    assert!(!archive_available(&h.home));
    add(&h, "s-a", "m-a", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    assert!(archive_available(&h.home));
}

#[test]
fn rows_have_the_reference_shape_and_order() {
    let h = TempHome::new();
    add(&h, "s-P", "mp-2", 1, "2026-04-20T00:01:00.000Z", "");
    add(&h, "s-P", "mp-1", 0, T0, two_tool_calls());
    add(
        &h,
        "s-Q",
        "mq-1",
        0,
        "2026-04-20T00:02:00.000Z",
        r#"{"project":"/tmp/other"}"#,
    );
    h.append_stamp(
        T0,
        r#"{"sessionId":"s-P"}"#,
        r#"{"workflowId":"wf-42","persona":"eng","n":1}"#,
    );
    build_archive(&h.home, &h.locks).unwrap();

    let all = query_all_from_archive(&h.home, &Query::default()).unwrap();
    assert_eq!(ids(&all), ["mp-1", "mp-2", "mq-1"]);
    // Exactly what the reference returns for mp-1 (worked by hand from
    // its rowToEnrichedTurn): no fidelity stored → no fidelity key, and
    // non-string enrichment values dropped.
    assert_eq!(
        all[0].to_json(),
        r#"{"v":1,"source":"claude-code","sessionId":"s-P","messageId":"mp-1","turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"claude-sonnet-4-6","usage":{"input":100,"output":50,"reasoning":0,"cacheRead":1000,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[{"id":"tu-1","name":"Read","argsHash":"a1","target":"/tmp/foo.ts"},{"id":"tu-2","name":"Edit","argsHash":"a2","target":"/tmp/foo.ts","isError":false}],"project":"/tmp/project","enrichment":{"workflowId":"wf-42","persona":"eng"}}"#
    );

    let by_project = query_all_from_archive(&h.home, &q(r#"{"project":"/tmp/project"}"#)).unwrap();
    assert_eq!(ids(&by_project), ["mp-1", "mp-2"]);
    let by_wf =
        query_all_from_archive(&h.home, &q(r#"{"enrichment":{"workflowId":"wf-42"}}"#)).unwrap();
    assert_eq!(ids(&by_wf), ["mp-1", "mp-2"]);
    // A key without a column goes through json_extract.
    let by_persona =
        query_all_from_archive(&h.home, &q(r#"{"enrichment":{"persona":"eng"}}"#)).unwrap();
    assert_eq!(by_persona.len(), 2);
    let by_n = query_all_from_archive(&h.home, &q(r#"{"enrichment":{"n":"1"}}"#)).unwrap();
    assert!(by_n.is_empty());
}

#[test]
fn replaced_tools_and_collapsed_calls_round_trip() {
    let h = TempHome::new();
    add(
        &h,
        "s-RS",
        "mrs-1",
        0,
        T0,
        r#"{"toolCalls":[{"id":"tu-rs-1","name":"relaywash__Search","argsHash":"rs1","replacedTools":["Glob","Grep","Read"],"collapsedCalls":9},{"id":"tu-rs-2","name":"Bash","argsHash":"rs2"}]}"#,
    );
    build_archive(&h.home, &h.locks).unwrap();
    let rows = query_all_from_archive(&h.home, &q(r#"{"sessionId":"s-RS"}"#)).unwrap();
    assert_eq!(rows.len(), 1);
    let calls = rows[0].get("toolCalls").unwrap().to_json();
    assert_eq!(
        calls,
        r#"[{"id":"tu-rs-1","name":"relaywash__Search","argsHash":"rs1","replacedTools":["Glob","Grep","Read"],"collapsedCalls":9},{"id":"tu-rs-2","name":"Bash","argsHash":"rs2"}]"#
    );
}

#[test]
fn since_until_and_source_filters() {
    let h = TempHome::new();
    add(&h, "s-W", "mw-1", 0, "2026-04-20T00:00:00.000Z", "");
    add(&h, "s-W", "mw-2", 1, "2026-04-21T00:00:00.000Z", "");
    add(&h, "s-W", "mw-3", 2, "2026-04-22T00:00:00.000Z", "");
    add(&h, "s-cx", "cx-1", 0, T0, r#"{"source":"codex"}"#);
    build_archive(&h.home, &h.locks).unwrap();
    let since =
        query_all_from_archive(&h.home, &q(r#"{"since":"2026-04-21T00:00:00.000Z"}"#)).unwrap();
    assert_eq!(ids(&since), ["mw-2", "mw-3"]);
    let window = query_turns_from_archive(
        &h.home,
        &q(r#"{"since":"2026-04-20T12:00:00.000Z","until":"2026-04-21T00:00:00.000Z"}"#),
    )
    .unwrap();
    assert_eq!(ids(&window), ["mw-2"]);
    let cx = query_turns_from_archive(&h.home, &q(r#"{"source":"codex"}"#)).unwrap();
    assert_eq!(ids(&cx), ["cx-1"]);
    assert_eq!(cx[0].get("source").and_then(Value::as_str), Some("codex"));
}

#[test]
fn subagent_block_only_when_populated() {
    let h = TempHome::new();
    add(
        &h,
        "s-S",
        "ms-1",
        0,
        T0,
        r#"{"subagent":{"isSidechain":true,"agentId":"agent-A","parentAgentId":"agent-root","parentToolUseId":"tu-spawn","subagentType":"investigator","description":"find auth-flow regressions"}}"#,
    );
    add(&h, "s-S", "ms-2", 1, "2026-04-20T00:01:00.000Z", "");
    build_archive(&h.home, &h.locks).unwrap();
    let rows = query_all_from_archive(&h.home, &q(r#"{"sessionId":"s-S"}"#)).unwrap();
    assert_eq!(
        rows[0].get("subagent").unwrap().to_json(),
        r#"{"isSidechain":true,"agentId":"agent-A","parentAgentId":"agent-root","parentToolUseId":"tu-spawn","subagentType":"investigator","description":"find auth-flow regressions"}"#
    );
    assert!(rows[1].get("subagent").is_none());
}

#[test]
fn fidelity_is_synthesised_from_the_stored_class() {
    let h = TempHome::new();
    add(
        &h,
        "s-F",
        "mf-1",
        0,
        T0,
        r#"{"fidelity":{"granularity":"per-turn","coverage":{"hasInputTokens":true},"class":"usage-only"}}"#,
    );
    add(
        &h,
        "s-F",
        "mf-2",
        1,
        "2026-04-20T00:01:00.000Z",
        r#"{"fidelity":{"granularity":"cost-only","coverage":{},"class":"cost-only"}}"#,
    );
    add(&h, "s-F", "mf-3", 2, "2026-04-20T00:02:00.000Z", "");
    build_archive(&h.home, &h.locks).unwrap();
    let rows = query_all_from_archive(&h.home, &q(r#"{"sessionId":"s-F"}"#)).unwrap();
    assert_eq!(
        rows[0].get("fidelity").unwrap().to_json(),
        r#"{"class":"usage-only","granularity":"per-turn","coverage":{"hasInputTokens":true,"hasOutputTokens":true,"hasReasoningTokens":false,"hasCacheReadTokens":true,"hasCacheCreateTokens":true,"hasToolCalls":false,"hasToolResultEvents":false,"hasSessionRelationships":false,"hasRawContent":false}}"#
    );
    let f2 = rows[1].get("fidelity").unwrap();
    assert_eq!(f2.get("class").and_then(Value::as_str), Some("cost-only"));
    assert_eq!(
        f2.get("granularity").and_then(Value::as_str),
        Some("cost-only")
    );
    assert!(rows[2].get("fidelity").is_none());
    // The slimmer query leaves fidelity out.
    let slim = query_turns_from_archive(&h.home, &q(r#"{"sessionId":"s-F"}"#)).unwrap();
    assert!(slim.iter().all(|r| r.get("fidelity").is_none()));
}

#[test]
fn empty_results_and_empty_archives() {
    let h = TempHome::new();
    build_archive(&h.home, &h.locks).unwrap();
    assert!(query_turns_from_archive(&h.home, &Query::default())
        .unwrap()
        .is_empty());
    add(&h, "s-E", "me-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    assert!(
        query_all_from_archive(&h.home, &q(r#"{"sessionId":"does-not-exist"}"#))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_unopenable_archive_is_an_error() {
    let home = LedgerHome::new("/dev/null/nope");
    assert!(query_turns_from_archive(&home, &Query::default()).is_err());
}

#[test]
fn integers_beyond_2_pow_53_come_back_as_numbers() {
    let r = reference_or_skip!();
    let h = TempHome::new();
    copy_into(
        &r.join("ops/numbers/expected/ledger.jsonl"),
        &h,
        "ledger.jsonl",
    );
    rebuild_archive(&h.home, &h.locks).unwrap();
    let rows = query_all_from_archive(&h.home, &Query::default()).unwrap();
    assert_eq!(rows.len(), 9);
    let output = |m: &str| {
        rows.iter()
            .find(|r| r.get("messageId").and_then(Value::as_str) == Some(m))
            .and_then(|r| r.get("usage"))
            .and_then(|u| u.get("output"))
            .and_then(Value::as_f64)
            .unwrap()
    };
    // The values of the ledger lines, stored as integers above 2^53.
    assert_eq!(output("turn_4_4fabb514"), 123_456_789_012_345_680.0);
    assert_eq!(output("turn_5_4fabb514"), 9_007_199_254_740_992.0);
    assert_eq!(output("turn_2_4fabb514"), 1e21);
    assert_eq!(output("turn_1_4fabb514"), 0.1);
}
