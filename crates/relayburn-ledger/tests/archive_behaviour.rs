//! Behaviours of the archive build, status and vacuum, as the reference's
//! own test suite pins them down, plus this project's extensions.

mod support;

use std::time::{Duration, Instant};

use relayburn_ledger::archive::{
    archive_status, build_archive, open_archive, rebuild_archive, vacuum_archive, ARCHIVE_VERSION,
};
use relayburn_ledger::home::lock_name;
use relayburn_ledger::Kind;
use rusqlite::OptionalExtension;
use support::archive::*;

const T0: &str = "2026-04-20T00:00:00.000Z";
const T1: &str = "2026-04-20T00:00:01.000Z";

fn add_turn(h: &TempHome, session: &str, message: &str, idx: u32, ts: &str, extra: &str) {
    h.append_record(Kind::Turn, &turn(session, message, idx, ts, extra));
}

fn count(h: &TempHome, table: &str) -> i64 {
    h.db()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn text(h: &TempHome, sql: &str) -> Option<String> {
    h.db()
        .query_row(sql, [], |r| r.get::<_, Option<String>>(0))
        .optional()
        .unwrap()
        .flatten()
}

fn int(h: &TempHome, sql: &str) -> Option<i64> {
    h.db()
        .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))
        .unwrap()
}

const FULL_COVERAGE: &str = r#"{"hasInputTokens":true,"hasOutputTokens":true,"hasReasoningTokens":false,"hasCacheReadTokens":true,"hasCacheCreateTokens":true,"hasToolCalls":true,"hasToolResultEvents":true,"hasSessionRelationships":true,"hasRawContent":true}"#;
const NO_COVERAGE: &str = r#"{"hasInputTokens":false,"hasOutputTokens":false,"hasReasoningTokens":false,"hasCacheReadTokens":false,"hasCacheCreateTokens":false,"hasToolCalls":false,"hasToolResultEvents":false,"hasSessionRelationships":false,"hasRawContent":false}"#;

fn fidelity(class: &str, granularity: &str, coverage: &str) -> String {
    format!(
        r#"{{"fidelity":{{"granularity":"{granularity}","coverage":{coverage},"class":"{class}"}}}}"#
    )
}

#[test]
fn build_with_no_ledger_is_a_no_op_with_zero_counts() {
    let h = TempHome::new();
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.sessions_touched), (0, 0));
    let s = archive_status(&h.home).unwrap();
    assert!(s.exists);
    assert_eq!(s.row_counts.turns, 0);
    assert_eq!(s.archive_version, ARCHIVE_VERSION);
    assert!(s.last_built_at.is_some());
}

#[test]
fn materializes_turns_tool_calls_and_sessions() {
    let h = TempHome::new();
    add_turn(
        &h,
        "s-A",
        "m-1",
        0,
        T0,
        r#"{"toolCalls":[{"id":"tu-1","name":"Read","target":"/tmp/foo.ts","argsHash":"a1"},{"id":"tu-2","name":"Edit","target":"/tmp/foo.ts","argsHash":"a2","isError":false}]}"#,
    );
    add_turn(&h, "s-A", "m-2", 1, "2026-04-20T00:01:00.000Z", "");
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.sessions_touched), (2, 1));
    assert_eq!(count(&h, "turns"), 2);
    assert_eq!(count(&h, "tool_calls"), 2);
    let db = h.db();
    let names: Vec<String> = db
        .prepare("SELECT tool_name FROM tool_calls WHERE message_id = 'm-1' ORDER BY call_index")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(names, ["Read", "Edit"]);
    let (n, start, end): (i64, String, String) = db
        .query_row(
            "SELECT turn_count, started_at, ended_at FROM sessions WHERE session_id = 's-A'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (n, start.as_str(), end.as_str()),
        (2, T0, "2026-04-20T00:01:00.000Z")
    );
}

#[test]
fn folds_stamps_into_enrichment_columns() {
    let h = TempHome::new();
    add_turn(&h, "s-X", "mx-1", 0, T0, "");
    h.append_stamp(
        "2026-04-21T00:00:00.000Z",
        r#"{"sessionId":"s-X"}"#,
        r#"{"workflowId":"wf-42","persona":"eng","tier":"best"}"#,
    );
    build_archive(&h.home, &h.locks).unwrap();
    let db = h.db();
    let row: (String, String, String, String) = db
        .query_row(
            "SELECT workflow_id, persona, tier, enrichment_json FROM turns WHERE message_id = 'mx-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "wf-42".into(),
            "eng".into(),
            "best".into(),
            r#"{"workflowId":"wf-42","persona":"eng","tier":"best"}"#.into()
        )
    );
}

#[test]
fn stamps_table_is_filled_incrementally_and_older_stamps_fold_onto_later_turns() {
    let h = TempHome::new();
    h.append_stamp(
        T0,
        r#"{"sessionId":"s-future"}"#,
        r#"{"workflowId":"wf-before-turn"}"#,
    );
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.stamps_applied, r.turns_applied), (1, 0));
    let cols: Vec<String> = h
        .db()
        .prepare("PRAGMA table_info(stamps)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        cols,
        [
            "source",
            "session_id",
            "ts",
            "selector_json",
            "enrichment_json",
            "ledger_offset_bytes"
        ]
    );
    let has_index: i64 = h
        .db()
        .query_row(
            "SELECT COUNT(*) FROM pragma_index_list('stamps') WHERE name = 'idx_stamps_session'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(has_index, 1);
    assert_eq!(count(&h, "stamps"), 1);
    add_turn(&h, "s-future", "m-future", 0, T0, "");
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.stamps_applied), (1, 0));
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'm-future'"
        )
        .as_deref(),
        Some("wf-before-turn")
    );
    assert_eq!(count(&h, "stamps"), 1);
}

#[test]
fn refolds_when_a_stamp_arrives_after_the_turn() {
    let h = TempHome::new();
    add_turn(&h, "s-late", "ml-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'ml-1'"
        ),
        None
    );
    h.append_stamp(T1, r#"{"sessionId":"s-late"}"#, r#"{"workflowId":"wf-99"}"#);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(r.stamps_applied, 1);
    assert_eq!(r.sessions_touched, 1);
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'ml-1'"
        )
        .as_deref(),
        Some("wf-99")
    );
}

#[test]
fn refolds_message_and_range_stamps() {
    let h = TempHome::new();
    add_turn(&h, "s-msg", "msg-a", 0, T0, "");
    add_turn(&h, "s-msg", "msg-b", 1, T1, "");
    add_turn(&h, "s-other", "msg-c", 0, "2026-04-22T00:00:00.000Z", "");
    build_archive(&h.home, &h.locks).unwrap();
    h.append_stamp(T1, r#"{"messageId":"msg-b"}"#, r#"{"stepId":"step-b"}"#);
    h.append_stamp(
        T1,
        r#"{"range":{"fromTs":"2026-04-20T00:00:00.500Z","toTs":"2026-04-22T00:00:00.000Z"}}"#,
        r#"{"sprint":"s9"}"#,
    );
    build_archive(&h.home, &h.locks).unwrap();
    let e = |m: &str| {
        text(
            &h,
            &format!("SELECT enrichment_json FROM turns WHERE message_id = '{m}'"),
        )
    };
    assert_eq!(e("msg-a").as_deref(), Some("{}"));
    assert_eq!(
        e("msg-b").as_deref(),
        Some(r#"{"stepId":"step-b","sprint":"s9"}"#)
    );
    assert_eq!(e("msg-c").as_deref(), Some(r#"{"sprint":"s9"}"#));
}

#[test]
fn a_second_build_without_new_lines_is_a_no_op() {
    let h = TempHome::new();
    add_turn(&h, "s-i", "mi-1", 0, T0, "");
    add_turn(&h, "s-i", "mi-2", 1, T1, "");
    assert_eq!(build_archive(&h.home, &h.locks).unwrap().turns_applied, 2);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.scanned_bytes), (0, 0));
    let s = archive_status(&h.home).unwrap();
    assert!(s.up_to_date);
    assert_eq!(s.row_counts.turns, 2);
}

#[test]
fn stamp_heavy_history_keeps_tail_builds_fast() {
    let h = TempHome::new();
    let mut text_block = String::new();
    for i in 0..10_000u32 {
        text_block.push_str(&format!(
            "{{\"v\":1,\"kind\":\"stamp\",\"ts\":\"2026-04-20T00:00:{:02}.{:03}Z\",\"selector\":{{\"sessionId\":\"stamp-heavy-{}\"}},\"enrichment\":{{\"workflowId\":\"wf-{i}\"}}}}\n",
            i / 1000,
            i % 1000,
            i % 1000
        ));
    }
    h.append(&text_block);
    build_archive(&h.home, &h.locks).unwrap();
    let before = archive_status(&h.home).unwrap();
    add_turn(
        &h,
        "stamp-heavy-7",
        "tail",
        0,
        "2026-04-21T00:00:00.000Z",
        "",
    );
    let started = Instant::now();
    let r = build_archive(&h.home, &h.locks).unwrap();
    let elapsed = started.elapsed();
    let after = archive_status(&h.home).unwrap();
    assert_eq!((r.turns_applied, r.stamps_applied), (1, 0));
    assert_eq!(
        r.scanned_bytes as i64,
        after.ledger_offset_bytes - before.ledger_offset_bytes
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "tail build took {elapsed:?}"
    );
    assert_eq!(count(&h, "stamps"), 10_000);
    // The ten stamps of session 7 fold in ts order: the last is wf-9007.
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'tail'"
        )
        .as_deref(),
        Some("wf-9007")
    );
    let plan: Vec<String> = h
        .db()
        .prepare(
            "EXPLAIN QUERY PLAN SELECT ts, selector_json, enrichment_json FROM stamps
             WHERE source IN ('claude-code', '*') AND session_id IN ('stamp-heavy-7', '*')
             ORDER BY ts, ledger_offset_bytes",
        )
        .unwrap()
        .query_map([], |r| r.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(plan.iter().any(|d| d.contains("INDEX")), "{plan:?}");
    assert!(!plan.iter().any(|d| d.contains("SCAN stamps")), "{plan:?}");
}

#[test]
fn rebuild_is_deterministic_and_flags_itself() {
    let h = TempHome::new();
    add_turn(&h, "s-r", "mr-1", 0, T0, "");
    add_turn(&h, "s-r", "mr-2", 1, T1, "");
    h.append_stamp(T1, r#"{"sessionId":"s-r"}"#, r#"{"workflowId":"wf-r"}"#);
    build_archive(&h.home, &h.locks).unwrap();
    let before = archive_status(&h.home).unwrap();
    assert_eq!(before.last_rebuild_at, None);
    let r = rebuild_archive(&h.home, &h.locks).unwrap();
    assert!(r.rebuilt_from_zero);
    let after = archive_status(&h.home).unwrap();
    assert_eq!(after.row_counts, before.row_counts);
    assert!(after.last_built_at.is_some() && after.last_rebuild_at.is_some());
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'mr-1'"
        )
        .as_deref(),
        Some("wf-r")
    );
}

#[test]
fn appended_turns_show_up_in_the_next_build() {
    let h = TempHome::new();
    add_turn(&h, "s-tail", "mt-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(archive_status(&h.home).unwrap().row_counts.turns, 1);
    add_turn(&h, "s-tail", "mt-2", 1, T1, "");
    assert_eq!(build_archive(&h.home, &h.locks).unwrap().turns_applied, 1);
    let s = archive_status(&h.home).unwrap();
    assert_eq!(s.row_counts.turns, 2);
    assert!(s.up_to_date);
    assert!(s.last_built_at.is_some());
    assert_eq!(s.last_rebuild_at, None);
}

#[test]
fn compactions_are_recorded() {
    let h = TempHome::new();
    add_turn(&h, "s-c", "mc-1", 0, T0, "");
    h.append_record(
        Kind::Compaction,
        r#"{"v":1,"source":"claude-code","sessionId":"s-c","ts":"2026-04-20T00:05:00.000Z","precedingMessageId":"mc-1","tokensBeforeCompact":12345}"#,
    );
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(r.compactions_applied, 1);
    assert_eq!(count(&h, "compactions"), 1);
    assert_eq!(
        int(&h, "SELECT tokens_before_compact FROM compactions"),
        Some(12345)
    );
}

fn tre(session: &str, tool: &str, i: u32, extra: &str) -> String {
    let base = format!(
        r#"{{"v":1,"source":"claude-code","sessionId":"{session}","messageId":"m-{session}","toolUseId":"{tool}","callIndex":{i},"eventIndex":{i},"ts":"2026-04-20T00:00:0{i}.000Z","status":"completed","eventSource":"tool_result","contentLength":{},"contentHash":"h{i}"}}"#,
        100 * i
    );
    if extra.is_empty() {
        return base;
    }
    let mut o = relayburn_ledger::json::parse(&base)
        .unwrap()
        .into_object()
        .unwrap();
    for (k, v) in relayburn_ledger::json::parse(extra)
        .unwrap()
        .as_object()
        .unwrap()
        .iter()
    {
        o.insert(k.clone(), v.clone());
    }
    relayburn_ledger::Value::Object(o).to_json()
}

#[test]
fn tool_result_events_round_trip_with_every_column() {
    let h = TempHome::new();
    h.append_record(
        Kind::ToolResultEvent,
        &tre("s-tre", "tu-A", 0, r#"{"agentId":"agent-X"}"#),
    );
    h.append_record(
        Kind::ToolResultEvent,
        &tre("s-tre", "tu-B", 1, r#"{"status":"errored","isError":true}"#),
    );
    // No messageId: stored under ''.
    h.append_record(
        Kind::ToolResultEvent,
        r#"{"v":1,"source":"codex","sessionId":"s-cx","toolUseId":"call-1","eventIndex":0,"status":"completed","eventSource":"function_call_output"}"#,
    );
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(r.tool_result_events_applied, 3);
    assert_eq!(
        archive_status(&h.home)
            .unwrap()
            .row_counts
            .tool_result_events,
        3
    );
    let db = h.db();
    let row: (
        String,
        i64,
        String,
        Option<i64>,
        Option<String>,
        Option<i64>,
    ) = db
        .query_row(
            "SELECT message_id, content_length, content_hash, is_error, agent_id, call_index
             FROM tool_result_events WHERE tool_use_id = 'tu-A'",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "m-s-tre".into(),
            0,
            "h0".into(),
            None,
            Some("agent-X".into()),
            Some(0)
        )
    );
    assert_eq!(
        int(
            &h,
            "SELECT is_error FROM tool_result_events WHERE tool_use_id = 'tu-B'"
        ),
        Some(1)
    );
    let row: (String, i64, Option<String>) = db
        .query_row(
            "SELECT message_id, call_index, ts FROM tool_result_events WHERE tool_use_id = 'call-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(row, (String::new(), 0, None));
}

#[test]
fn tool_result_events_rebuild_and_replay_idempotently() {
    let h = TempHome::new();
    for i in 0..5 {
        h.append_record(
            Kind::ToolResultEvent,
            &tre("s-rb", &format!("tu-{i}"), i, ""),
        );
    }
    // The same event line again: the key collapses it.
    h.append_record(Kind::ToolResultEvent, &tre("s-rb", "tu-0", 0, ""));
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(
        archive_status(&h.home)
            .unwrap()
            .row_counts
            .tool_result_events,
        5
    );
    let r = rebuild_archive(&h.home, &h.locks).unwrap();
    assert!(r.rebuilt_from_zero);
    assert_eq!(r.tool_result_events_applied, 6);
    assert_eq!(
        archive_status(&h.home)
            .unwrap()
            .row_counts
            .tool_result_events,
        5
    );
    let noop = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(noop.tool_result_events_applied, 0);
    h.append_record(Kind::ToolResultEvent, &tre("s-rb", "tu-9", 9, ""));
    assert_eq!(
        build_archive(&h.home, &h.locks)
            .unwrap()
            .tool_result_events_applied,
        1
    );
    assert_eq!(
        archive_status(&h.home)
            .unwrap()
            .row_counts
            .tool_result_events,
        6
    );
}

#[test]
fn the_archive_lives_in_the_home() {
    let h = TempHome::new();
    build_archive(&h.home, &h.locks).unwrap();
    assert!(h.dir.path().join("archive.sqlite").is_file());
}

#[test]
fn a_ledger_shorter_than_the_cursor_restarts_from_zero() {
    let h = TempHome::new();
    add_turn(&h, "s-t", "mt-A", 0, T0, "");
    add_turn(&h, "s-t", "mt-B", 1, T1, "");
    h.append_stamp(T1, r#"{"sessionId":"s-t"}"#, r#"{"workflowId":"old"}"#);
    build_archive(&h.home, &h.locks).unwrap();
    std::fs::remove_file(h.ledger()).unwrap();
    add_turn(&h, "s-t", "mt-C", 0, "2026-04-21T00:00:00.000Z", "");
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert!(!r.rebuilt_from_zero);
    assert_eq!(r.turns_applied, 1);
    let s = archive_status(&h.home).unwrap();
    assert_eq!(s.row_counts.turns, 1);
    assert_eq!(count(&h, "stamps"), 0);
    assert_eq!(
        text(&h, "SELECT message_id FROM turns WHERE session_id = 's-t'").as_deref(),
        Some("mt-C")
    );
    assert_eq!(text(&h, "SELECT workflow_id FROM turns"), None);
    assert!(s.up_to_date);
}

#[test]
fn a_torn_last_line_is_left_for_the_next_build() {
    let h = TempHome::new();
    add_turn(&h, "s-p", "mp-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    let after1 = archive_status(&h.home).unwrap();
    let full = relayburn_ledger::records::wrap_record(
        Kind::Turn,
        relayburn_ledger::json::parse(&turn("s-p", "mp-2", 1, T1, "")).unwrap(),
    )
    .to_json();
    let (head, tail) = full.split_at(20);
    h.append(head);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.scanned_bytes), (0, 0));
    let after2 = archive_status(&h.home).unwrap();
    assert_eq!(after2.ledger_offset_bytes, after1.ledger_offset_bytes);
    assert!((after2.ledger_offset_bytes as u64) < after2.ledger_size_bytes);
    assert!(!after2.up_to_date);
    h.append(&format!("{tail}\n"));
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(r.turns_applied, 1);
    assert_eq!(r.scanned_bytes, full.len() as u64 + 1);
    assert!(archive_status(&h.home).unwrap().up_to_date);
}

#[test]
fn blank_and_malformed_lines_are_passed_but_not_counted() {
    let h = TempHome::new();
    let junk = "\n   \n{broken json\n";
    h.append(junk);
    add_turn(&h, "s-m", "mm-1", 0, T0, "");
    let line_len = std::fs::metadata(h.ledger()).unwrap().len() - junk.len() as u64;
    h.append("{also broken\n\n");
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(r.turns_applied, 1);
    assert_eq!(r.scanned_bytes, line_len);
    // The cursor stops after the last line that parsed, as the reference's.
    let s = archive_status(&h.home).unwrap();
    assert_eq!(s.ledger_offset_bytes as u64, junk.len() as u64 + line_len);
    assert!(!s.up_to_date);
    let again = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((again.turns_applied, again.scanned_bytes), (0, 0));
}

#[test]
fn fidelity_columns_and_session_rollups() {
    let h = TempHome::new();
    add_turn(
        &h,
        "s-mix",
        "mix-full",
        0,
        T0,
        &fidelity("full", "per-turn", FULL_COVERAGE),
    );
    add_turn(&h, "s-mix", "mix-old", 1, T1, "");
    add_turn(
        &h,
        "s-mix",
        "mix-cost",
        2,
        "2026-04-20T00:00:02.000Z",
        &fidelity("cost-only", "cost-only", NO_COVERAGE),
    );
    add_turn(
        &h,
        "s-allfull",
        "af-1",
        0,
        T0,
        &fidelity("full", "per-turn", FULL_COVERAGE),
    );
    add_turn(
        &h,
        "s-allfull",
        "af-2",
        1,
        T1,
        &fidelity("full", "per-turn", FULL_COVERAGE),
    );
    add_turn(&h, "s-nofid", "nf-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    let db = h.db();
    type FidelityRow = (String, Option<String>, Option<i64>, Option<i64>);
    let rows: Vec<FidelityRow> = db
        .prepare(
            "SELECT message_id, attribution_fidelity, tokens_present, cost_present
             FROM turns WHERE session_id = 's-mix' ORDER BY turn_index",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("mix-full".into(), Some("full".into()), Some(1), Some(0)),
            ("mix-old".into(), None, None, None),
            (
                "mix-cost".into(),
                Some("cost-only".into()),
                Some(0),
                Some(1)
            ),
        ]
    );
    let rollup = |sid: &str| -> (Option<String>, Option<i64>) {
        db.query_row(
            "SELECT min_fidelity, has_full_attribution FROM sessions WHERE session_id = ?1",
            [sid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    assert_eq!(rollup("s-mix"), (Some("cost-only".into()), Some(0)));
    assert_eq!(rollup("s-allfull"), (Some("full".into()), Some(1)));
    assert_eq!(rollup("s-nofid"), (None, None));
    let s = archive_status(&h.home).unwrap();
    assert_eq!(
        s.fidelity_histogram,
        vec![
            ("cost-only".into(), 1),
            ("full".into(), 3),
            ("unknown".into(), 2)
        ]
    );
}

#[test]
fn rebuilding_a_fidelity_tagged_ledger_keeps_counts_and_rollups() {
    let h = TempHome::new();
    add_turn(
        &h,
        "s-idem",
        "id-1",
        0,
        T0,
        &fidelity("full", "per-turn", FULL_COVERAGE),
    );
    add_turn(
        &h,
        "s-idem",
        "id-2",
        1,
        T1,
        &fidelity("usage-only", "per-turn", NO_COVERAGE),
    );
    build_archive(&h.home, &h.locks).unwrap();
    let before = archive_status(&h.home).unwrap();
    rebuild_archive(&h.home, &h.locks).unwrap();
    let after = archive_status(&h.home).unwrap();
    assert_eq!(after.row_counts, before.row_counts);
    assert_eq!(after.fidelity_histogram, before.fidelity_histogram);
    assert_eq!(
        after.fidelity_histogram,
        vec![("full".into(), 1), ("usage-only".into(), 1)]
    );
    assert_eq!(
        text(
            &h,
            "SELECT min_fidelity FROM sessions WHERE session_id = 's-idem'"
        )
        .as_deref(),
        Some("usage-only")
    );
    assert_eq!(
        int(
            &h,
            "SELECT has_full_attribution FROM sessions WHERE session_id = 's-idem'"
        ),
        Some(0)
    );
}

#[test]
fn opening_an_archive_without_the_fidelity_columns_adds_them_and_keeps_rows() {
    let h = TempHome::new();
    add_turn(&h, "s-mig", "mg-old", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    {
        let db = h.db();
        db.execute_batch(
            "BEGIN;
             DROP INDEX idx_turns_attribution_fidelity;
             ALTER TABLE turns DROP COLUMN attribution_fidelity;
             ALTER TABLE turns DROP COLUMN tokens_present;
             ALTER TABLE turns DROP COLUMN cost_present;
             ALTER TABLE sessions DROP COLUMN min_fidelity;
             ALTER TABLE sessions DROP COLUMN has_full_attribution;
             COMMIT;",
        )
        .unwrap();
    }
    let conn = open_archive(&h.archive()).unwrap();
    let cols: Vec<String> = conn
        .prepare("PRAGMA table_info(turns)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for c in ["attribution_fidelity", "tokens_present", "cost_present"] {
        assert!(cols.iter().any(|n| n == c), "{c}");
    }
    let scols: Vec<String> = conn
        .prepare("PRAGMA table_info(sessions)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(scols.iter().any(|n| n == "min_fidelity"));
    assert!(scols.iter().any(|n| n == "has_full_attribution"));
    drop(conn);
    assert_eq!(count(&h, "turns"), 1);
    add_turn(
        &h,
        "s-mig",
        "mg-new",
        1,
        T1,
        &fidelity("full", "per-turn", FULL_COVERAGE),
    );
    build_archive(&h.home, &h.locks).unwrap();
    let s = archive_status(&h.home).unwrap();
    assert_eq!(s.row_counts.turns, 2);
    assert_eq!(
        s.fidelity_histogram,
        vec![("full".into(), 1), ("unknown".into(), 1)]
    );
}

#[test]
fn another_archive_version_is_recreated_on_open() {
    let h = TempHome::new();
    add_turn(&h, "s-v", "mv-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    h.db()
        .execute(
            "UPDATE archive_state SET archive_version = 0 WHERE id = 1",
            [],
        )
        .unwrap();
    let conn = open_archive(&h.archive()).unwrap();
    let (v, off): (i64, i64) = conn
        .query_row(
            "SELECT archive_version, ledger_offset_bytes FROM archive_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((v, off), (ARCHIVE_VERSION, 0));
    drop(conn);
    assert_eq!(count(&h, "turns"), 0);
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(archive_status(&h.home).unwrap().row_counts.turns, 1);
}

#[test]
fn vacuum_of_a_missing_archive_creates_nothing() {
    let h = TempHome::new();
    let v = vacuum_archive(&h.home, &h.locks).unwrap();
    assert!(!v.existed);
    assert_eq!(
        (v.before_bytes, v.after_bytes, v.reclaimed_bytes),
        (0, 0, 0)
    );
    assert!(!archive_status(&h.home).unwrap().exists);
    assert!(!h.archive().exists());
}

#[test]
fn vacuum_after_churn_does_not_grow_the_file_and_keeps_rows() {
    let h = TempHome::new();
    for i in 0..200u32 {
        let ts = format!("2026-04-20T00:{:02}:{:02}.000Z", i / 60, i % 60);
        add_turn(
            &h,
            &format!("s-vac-{}", i % 5),
            &format!("mv-{i}"),
            i,
            &ts,
            "",
        );
    }
    build_archive(&h.home, &h.locks).unwrap();
    // Churn in place: drop and re-add the stamp-fold columns' values.
    h.db()
        .execute_batch("UPDATE turns SET enrichment_json = printf('%.2000c', 'x'); UPDATE turns SET enrichment_json = '{}';")
        .unwrap();
    let conn = h.db();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let size = std::fs::metadata(h.archive()).unwrap().len();
    let v = vacuum_archive(&h.home, &h.locks).unwrap();
    assert!(v.existed);
    assert_eq!(v.before_bytes, size);
    assert!(v.after_bytes < v.before_bytes, "{v:?}");
    assert_eq!(
        v.reclaimed_bytes,
        v.before_bytes as i64 - v.after_bytes as i64
    );
    assert_eq!(archive_status(&h.home).unwrap().row_counts.turns, 200);
    let json = v.to_value();
    assert_eq!(
        json.get("existed"),
        Some(&relayburn_ledger::Value::Bool(true))
    );
}

#[test]
fn vacuum_and_build_wait_for_the_archive_lock() {
    let h = TempHome::new();
    add_turn(&h, "s-lk", "lk-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    add_turn(&h, "s-lk", "lk-2", 1, T1, "");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locks = h.locks.clone();
    let holder = std::thread::spawn(move || {
        locks
            .with_lock(lock_name::ARCHIVE, || {
                held_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                Ok(())
            })
            .unwrap();
    });
    held_rx.recv().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let (home, locks, done) = (h.home.clone(), h.locks.clone(), done.clone());
            std::thread::spawn(move || {
                if i == 0 {
                    assert!(vacuum_archive(&home, &locks).unwrap().existed);
                } else {
                    build_archive(&home, &locks).unwrap();
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(done.load(std::sync::atomic::Ordering::SeqCst), 0);
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(archive_status(&h.home).unwrap().row_counts.turns, 2);
}

#[test]
fn unarchivable_records_are_skipped_and_reported_with_their_offset() {
    for rebuild in [false, true] {
        let h = TempHome::new();
        add_turn(&h, "s-bad", "ok-1", 0, T0, "");
        let bad_offset = std::fs::metadata(h.ledger()).unwrap().len();
        // A turn without usage makes the reference's build throw.
        h.append(r#"{"v":1,"kind":"turn","record":{"v":1,"source":"claude-code","sessionId":"s-bad","messageId":"bad","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z","model":"m","toolCalls":[]}}"#);
        h.append("\n");
        let stamp_offset = std::fs::metadata(h.ledger()).unwrap().len();
        h.append_stamp(T1, "null", r#"{"workflowId":"x"}"#);
        add_turn(&h, "s-bad", "ok-2", 2, "2026-04-20T00:00:02.000Z", "");
        let r = if rebuild {
            rebuild_archive(&h.home, &h.locks).unwrap()
        } else {
            build_archive(&h.home, &h.locks).unwrap()
        };
        assert_eq!(r.turns_applied, 2);
        assert_eq!(r.stamps_applied, 0);
        assert_eq!(r.skipped_count, 2);
        assert_eq!(r.skipped[0].offset, bad_offset);
        assert_eq!(r.skipped[0].kind, Kind::Turn);
        assert_eq!(r.skipped[0].reason, "usage is missing");
        assert_eq!(r.skipped[1].offset, stamp_offset);
        assert_eq!(r.skipped[1].kind, Kind::Stamp);
        let v = r.to_value();
        assert_eq!(
            v.get("skippedRecords")
                .and_then(relayburn_ledger::Value::as_f64),
            Some(2.0)
        );
        assert_eq!(count(&h, "turns"), 2);
        let s = archive_status(&h.home).unwrap();
        assert!(s.up_to_date);
    }
}

#[test]
fn a_leftover_rebuild_file_never_breaks_the_next_build() {
    let h = TempHome::new();
    add_turn(&h, "s-l", "l-1", 0, T0, "");
    // A dead process's half-written rebuild (pid 1 is never us; an
    // unparsable pid is treated as dead).
    let junk = h.dir.path().join("archive.sqlite.rebuild-notapid.tmp");
    std::fs::write(&junk, b"garbage").unwrap();
    build_archive(&h.home, &h.locks).unwrap();
    assert!(!junk.exists());
    std::fs::write(&junk, b"garbage").unwrap();
    rebuild_archive(&h.home, &h.locks).unwrap();
    assert!(!junk.exists());
    assert_eq!(count(&h, "turns"), 1);
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("rebuild"))
        .collect();
    assert!(leftovers.is_empty());
}

/// A turn line, complete and valid, without its newline.
fn unterminated_turn(session: &str, message: &str, idx: u32, ts: &str) -> String {
    relayburn_ledger::records::wrap_record(
        Kind::Turn,
        relayburn_ledger::json::parse(&turn(session, message, idx, ts, "")).unwrap(),
    )
    .to_json()
}

fn cursor(h: &TempHome) -> u64 {
    archive_status(&h.home).unwrap().ledger_offset_bytes as u64
}

#[test]
fn a_complete_record_without_its_newline_waits_for_the_newline() {
    // SPEC §6: the cursor is the end of the last newline-terminated line,
    // even when the line after it is complete, valid JSON.
    let h = TempHome::new();
    add_turn(&h, "s-n", "mn-1", 0, T0, "");
    build_archive(&h.home, &h.locks).unwrap();
    let first_end = size(&h.ledger());
    assert_eq!(cursor(&h), first_end);

    // A turn without its newline: not applied, cursor unchanged.
    let line = unterminated_turn("s-n", "mn-2", 1, T1);
    h.append(&line);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.scanned_bytes), (0, 0));
    assert_eq!(cursor(&h), first_end);
    assert_eq!(count(&h, "turns"), 1);

    // Its newline arrives, and with it a stamp without one.
    h.append("\n");
    let stamp = format!(
        r#"{{"v":1,"kind":"stamp","ts":"{T1}","selector":{{"sessionId":"s-n"}},"enrichment":{{"workflowId":"wf-n"}}}}"#
    );
    h.append(&stamp);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.stamps_applied), (1, 0));
    assert_eq!(r.scanned_bytes, line.len() as u64 + 1);
    let second_end = first_end + line.len() as u64 + 1;
    assert_eq!(cursor(&h), second_end);
    assert_eq!(count(&h, "stamps"), 0);
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'mn-1'"
        ),
        None
    );

    // The stamp's newline: now it folds, and nothing is applied twice.
    h.append("\n");
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.turns_applied, r.stamps_applied), (0, 1));
    assert!(!r.rebuilt_from_zero);
    assert_eq!(cursor(&h), second_end + stamp.len() as u64 + 1);
    assert_eq!(count(&h, "turns"), 2);
    assert_eq!(
        text(
            &h,
            "SELECT workflow_id FROM turns WHERE message_id = 'mn-2'"
        )
        .as_deref(),
        Some("wf-n")
    );
}

#[test]
fn a_full_rebuild_also_stops_before_a_complete_record_without_its_newline() {
    for last in ["turn", "stamp"] {
        let h = TempHome::new();
        add_turn(&h, "s-r", "mr-1", 0, T0, "");
        let end = size(&h.ledger());
        let tail = if last == "turn" {
            unterminated_turn("s-r", "mr-2", 1, T1)
        } else {
            format!(
                r#"{{"v":1,"kind":"stamp","ts":"{T1}","selector":{{"sessionId":"s-r"}},"enrichment":{{"workflowId":"wf-r"}}}}"#
            )
        };
        h.append(&tail);
        let r = rebuild_archive(&h.home, &h.locks).unwrap();
        assert_eq!((r.turns_applied, r.stamps_applied), (1, 0), "{last}");
        assert_eq!(cursor(&h), end, "{last}");
        assert_eq!(count(&h, "turns"), 1, "{last}");
        assert_eq!(count(&h, "stamps"), 0, "{last}");
        assert_eq!(text(&h, "SELECT workflow_id FROM turns"), None, "{last}");
    }
}

#[test]
fn every_usage_column_holds_its_own_usage_field() {
    let h = TempHome::new();
    add_turn(
        &h,
        "s-u",
        "mu-1",
        0,
        T0,
        r#"{"usage":{"input":11,"output":22,"reasoning":33,"cacheRead":44,"cacheCreate5m":55,"cacheCreate1h":66}}"#,
    );
    for build in ["incremental", "full"] {
        if build == "incremental" {
            build_archive(&h.home, &h.locks).unwrap();
        } else {
            rebuild_archive(&h.home, &h.locks).unwrap();
        }
        let cols: (i64, i64, i64, i64, i64, i64) = h
            .db()
            .query_row(
                "SELECT input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
                        cache_create_5m_tokens, cache_create_1h_tokens FROM turns",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(cols, (11, 22, 33, 44, 55, 66), "{build}");
        let rows = relayburn_ledger::archive::query_all_from_archive(
            &h.home,
            &relayburn_ledger::Query::default(),
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].get("usage").unwrap().to_json(),
            r#"{"input":11,"output":22,"reasoning":33,"cacheRead":44,"cacheCreate5m":55,"cacheCreate1h":66}"#,
            "{build}"
        );
    }
}

#[test]
fn stamps_fold_in_timestamp_order_not_file_order() {
    // SPEC §5/§6: stamps apply sorted by `ts` (ties by file offset), so a
    // stamp written later with an earlier `ts` is overwritten by one
    // written earlier with a later `ts`.
    let h = TempHome::new();
    add_turn(&h, "s-o", "mo-1", 0, T0, "");
    h.append_stamp(
        "2026-04-22T00:00:00.000Z",
        r#"{"sessionId":"s-o"}"#,
        r#"{"workflowId":"wf-late","persona":"p-first"}"#,
    );
    h.append_stamp(
        "2026-04-21T00:00:00.000Z",
        r#"{"sessionId":"s-o"}"#,
        r#"{"workflowId":"wf-early","tier":"t-early"}"#,
    );
    // Same ts as the first: the one written later wins.
    h.append_stamp(
        "2026-04-22T00:00:00.000Z",
        r#"{"sessionId":"s-o"}"#,
        r#"{"persona":"p-second"}"#,
    );
    let want = (
        Some("wf-late".to_string()),
        Some("p-second".to_string()),
        Some("t-early".to_string()),
    );
    let got = |h: &TempHome| {
        (
            text(h, "SELECT workflow_id FROM turns"),
            text(h, "SELECT persona FROM turns"),
            text(h, "SELECT tier FROM turns"),
        )
    };
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(got(&h), want, "incremental build");
    rebuild_archive(&h.home, &h.locks).unwrap();
    assert_eq!(got(&h), want, "full rebuild");

    // A stamp with an even earlier ts arriving in a later build refolds
    // the turn but changes nothing that later stamps set.
    h.append_stamp(
        "2026-04-20T12:00:00.000Z",
        r#"{"sessionId":"s-o"}"#,
        r#"{"workflowId":"wf-oldest","tier":"t-oldest","team":"x"}"#,
    );
    build_archive(&h.home, &h.locks).unwrap();
    assert_eq!(got(&h), want, "refold after an older stamp");
    let json = text(&h, "SELECT enrichment_json FROM turns").unwrap();
    assert_eq!(
        json,
        r#"{"workflowId":"wf-late","tier":"t-early","team":"x","persona":"p-second"}"#
    );
}

fn size(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}
