//! Writer and query behaviour: append, dedup, stamps, filters, index
//! rebuild, and the on-disk dedup that follows other processes.

mod support;

use std::io::Write;

use relayburn_ledger::{Ledger, LedgerHome, Query, Value};
use support::*;

#[test]
fn appended_turns_come_back_with_empty_enrichment() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn("{}"),
        turn(r#"{"messageId":"m-002","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z"}"#),
    ])
    .unwrap();
    let got = turns(&l, &Query::default());
    assert_eq!(got.len(), 2);
    assert_eq!(s(&got[0], "messageId"), Some("m-001"));
    assert_eq!(got[0].get("enrichment").unwrap().to_json(), "{}");
    // The record comes back as written, enrichment appended last.
    let line = std::fs::read_to_string(l.home().ledger()).unwrap();
    let first = line.lines().next().unwrap();
    let mut expected = turn("{}");
    expected
        .as_object_mut()
        .unwrap()
        .insert("enrichment", obj("{}"));
    assert_eq!(
        first,
        format!(
            r#"{{"v":1,"kind":"turn","record":{}}}"#,
            turn("{}").to_json()
        )
    );
    assert_eq!(got[0].to_json(), expected.to_json());
}

#[test]
fn the_ledger_file_is_ledger_jsonl_in_the_home() {
    let (d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    assert!(d.path().join("ledger.jsonl").is_file());
    assert!(d.path().join("ledger.idx").is_file());
    assert!(d.path().join("ledger.content.idx").is_file());
}

#[test]
fn a_session_stamp_enriches_only_that_session() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"sessionId":"s-A","messageId":"m-A1"}"#),
        turn(r#"{"sessionId":"s-B","messageId":"m-B1","ts":"2026-04-20T00:00:01.000Z"}"#),
    ])
    .unwrap();
    l.stamp(
        obj(r#"{"sessionId":"s-A"}"#),
        obj(r#"{"workflowId":"flow-1","agentId":"agent-7"}"#),
    )
    .unwrap();
    let got = turns(&l, &Query::default());
    let a = got
        .iter()
        .find(|t| s(t, "sessionId") == Some("s-A"))
        .unwrap();
    let b = got
        .iter()
        .find(|t| s(t, "sessionId") == Some("s-B"))
        .unwrap();
    assert_eq!(enrichment(a, "workflowId"), Some("flow-1"));
    assert_eq!(enrichment(a, "agentId"), Some("agent-7"));
    assert_eq!(b.get("enrichment").unwrap().to_json(), "{}");
}

#[test]
fn a_parent_agent_stamp_records_a_spawn_env_relationship_once() {
    let (_d, l) = temp_ledger();
    let line = l
        .stamp(
            obj(r#"{"sessionId":"sess-kid"}"#),
            obj(r#"{"agentId":"agent-kid","parentAgentId":"agent-boss","harness":"codex"}"#),
        )
        .unwrap();
    let rels = all(l.query_relationships(&Query::default()).unwrap());
    assert_eq!(rels.len(), 1);
    let ts = s(&line, "ts").unwrap();
    assert_eq!(
        rels[0].to_json(),
        format!(
            r#"{{"v":1,"source":"spawn-env","sessionId":"sess-kid","relatedSessionId":"agent-boss","relationshipType":"subagent","ts":"{ts}","agentId":"agent-kid"}}"#
        )
    );
    // A second stamp with the same edge adds the stamp, not the edge.
    l.stamp(
        obj(r#"{"sessionId":"sess-kid"}"#),
        obj(r#"{"agentId":"agent-kid","parentAgentId":"agent-boss"}"#),
    )
    .unwrap();
    assert_eq!(
        all(l.query_relationships(&Query::default()).unwrap()).len(),
        1
    );
    let text = std::fs::read_to_string(l.home().ledger()).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert_eq!(
        std::fs::read_to_string(l.home().ledger_index())
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_message_stamp_enriches_one_turn() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"sessionId":"s-A","messageId":"m1"}"#),
        turn(
            r#"{"sessionId":"s-A","messageId":"m2","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z"}"#,
        ),
    ])
    .unwrap();
    l.stamp(obj(r#"{"messageId":"m2"}"#), obj(r#"{"stepId":"step-2"}"#))
        .unwrap();
    let got = turns(&l, &Query::default());
    let by = |m: &str| got.iter().find(|t| s(t, "messageId") == Some(m)).unwrap();
    assert_eq!(enrichment(by("m1"), "stepId"), None);
    assert_eq!(enrichment(by("m2"), "stepId"), Some("step-2"));
}

#[test]
fn the_later_stamp_wins_per_key() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    l.stamp(
        obj(r#"{"sessionId":"sess-a"}"#),
        obj(r#"{"tier":"best","a":"1"}"#),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(10));
    l.stamp(obj(r#"{"sessionId":"sess-a"}"#), obj(r#"{"tier":"fast"}"#))
        .unwrap();
    let got = turns(&l, &Query::default());
    assert_eq!(
        got[0].get("enrichment").unwrap().to_json(),
        r#"{"tier":"fast","a":"1"}"#
    );
}

#[test]
fn stamps_apply_in_timestamp_order_not_file_order() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    let stamp = |ts: &str, tier: &str| {
        obj(&format!(
            r#"{{"v":1,"kind":"stamp","ts":"{ts}","selector":{{"sessionId":"sess-a"}},"enrichment":{{"tier":"{tier}"}}}}"#
        ))
    };
    l.append_stamp(&stamp("2026-01-02T00:00:00.000Z", "late"))
        .unwrap();
    l.append_stamp(&stamp("2026-01-01T00:00:00.000Z", "early"))
        .unwrap();
    assert_eq!(
        enrichment(&turns(&l, &Query::default())[0], "tier"),
        Some("late")
    );
}

#[test]
fn a_range_stamp_applies_between_its_bounds() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"messageId":"m1","ts":"2026-04-20T00:00:00.000Z"}"#),
        turn(r#"{"messageId":"m2","ts":"2026-04-20T05:00:00.000Z","turnIndex":1}"#),
        turn(r#"{"messageId":"m3","ts":"2026-04-20T10:00:00.000Z","turnIndex":2}"#),
    ])
    .unwrap();
    l.stamp(
        obj(r#"{"sessionId":"sess-a","range":{"fromTs":"2026-04-20T03:00:00.000Z","toTs":"2026-04-20T06:00:00.000Z"}}"#),
        obj(r#"{"workflowId":"flow-mid"}"#),
    )
    .unwrap();
    let got = turns(&l, &Query::default());
    let wf: Vec<Option<&str>> = got.iter().map(|t| enrichment(t, "workflowId")).collect();
    assert_eq!(wf, vec![None, Some("flow-mid"), None]);
}

#[test]
fn queries_filter_by_since_project_session_and_enrichment() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"sessionId":"s-A","messageId":"m1","ts":"2026-04-19T00:00:00.000Z","project":"/a"}"#),
        turn(r#"{"sessionId":"s-B","messageId":"m2","ts":"2026-04-20T12:00:00.000Z","project":"/b","turnIndex":1}"#),
    ])
    .unwrap();
    l.stamp(
        obj(r#"{"sessionId":"s-B"}"#),
        obj(r#"{"persona":"analyst"}"#),
    )
    .unwrap();
    let ids = |query: &str| -> Vec<String> {
        turns(&l, &q(query))
            .iter()
            .map(|t| s(t, "messageId").unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(r#"{"since":"2026-04-20T00:00:00.000Z"}"#), ["m2"]);
    assert_eq!(ids(r#"{"until":"2026-04-19T00:00:00.000Z"}"#), ["m1"]);
    assert_eq!(ids(r#"{"project":"/a"}"#), ["m1"]);
    assert_eq!(ids(r#"{"sessionId":"s-B"}"#), ["m2"]);
    assert_eq!(ids(r#"{"enrichment":{"persona":"analyst"}}"#), ["m2"]);
    assert_eq!(ids(r#"{"source":"codex"}"#), Vec::<String>::new());
    // Empty strings do not filter, as in the reference.
    assert_eq!(ids(r#"{"since":"","sessionId":""}"#).len(), 2);
}

#[test]
fn a_stamp_written_before_its_turn_still_applies() {
    let (_d, l) = temp_ledger();
    l.stamp(
        obj(r#"{"sessionId":"s-future"}"#),
        obj(r#"{"workflowId":"flow-early"}"#),
    )
    .unwrap();
    l.append_turns(vec![turn(
        r#"{"sessionId":"s-future","messageId":"m-late"}"#,
    )])
    .unwrap();
    let got = turns(&l, &Query::default());
    assert_eq!(got.len(), 1);
    assert_eq!(enrichment(&got[0], "workflowId"), Some("flow-early"));
}

#[test]
fn a_stamp_without_selector_fields_is_refused() {
    let (_d, l) = temp_ledger();
    for selector in ["{}", r#"{"other":"s"}"#] {
        let err = l.stamp(obj(selector), obj(r#"{"x":"y"}"#)).unwrap_err();
        assert!(
            matches!(&err, relayburn_ledger::Error::Invalid { field, .. } if field == "selector"),
            "{err:?}"
        );
    }
    assert!(!l.home().ledger().exists());
}

#[test]
fn appending_the_same_turns_again_does_not_grow_the_ledger() {
    let (_d, l) = temp_ledger();
    let t1 = turn(r#"{"messageId":"twice-1"}"#);
    let t2 = turn(r#"{"messageId":"twice-2","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z"}"#);
    assert_eq!(l.append_turns(vec![t1.clone(), t2.clone()]).unwrap(), 2);
    let first = size(&l.home().ledger());
    assert_eq!(l.append_turns(vec![t1.clone(), t2.clone()]).unwrap(), 0);
    assert_eq!(size(&l.home().ledger()), first);
    // Also within one batch, and across a cache reset (as a new process).
    l.invalidate_index_cache();
    assert_eq!(l.append_turns(vec![t1.clone(), t1, t2]).unwrap(), 0);
    assert_eq!(turns(&l, &Query::default()).len(), 2);
}

#[test]
fn a_turn_with_a_regenerated_id_but_the_same_content_is_dropped() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"first-id"}"#)])
        .unwrap();
    assert_eq!(
        l.append_turns(vec![turn(r#"{"messageId":"second-id","turnIndex":1}"#)])
            .unwrap(),
        0
    );
    assert_eq!(turns(&l, &Query::default()).len(), 1);
}

#[test]
fn content_twins_in_one_batch_are_both_kept() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"messageId":"fp-a"}"#),
        turn(r#"{"messageId":"fp-b","turnIndex":1}"#),
    ])
    .unwrap();
    assert_eq!(turns(&l, &Query::default()).len(), 2);
    // Both fingerprints are written to the window, twice the same line.
    let window = std::fs::read_to_string(l.home().ledger_content_index()).unwrap();
    let lines: Vec<&str> = window.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn the_project_filter_also_matches_project_key() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"sessionId":"s-X","messageId":"key-1","project":"/home/dev/app","projectKey":"example.org/team/app"}"#),
        turn(r#"{"sessionId":"s-Y","messageId":"key-2","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z","project":"/home/dev/app-wt","projectKey":"example.org/team/app"}"#),
        turn(r#"{"sessionId":"s-Z","messageId":"key-3","turnIndex":2,"ts":"2026-04-20T00:00:02.000Z","project":"/home/dev/misc"}"#),
    ])
    .unwrap();
    assert_eq!(
        turns(&l, &q(r#"{"project":"example.org/team/app"}"#)).len(),
        2
    );
    assert_eq!(turns(&l, &q(r#"{"project":"/home/dev/app"}"#)).len(), 1);
}

#[test]
fn relationships_round_trip() {
    let (_d, l) = temp_ledger();
    l.append_relationships(vec![
        obj(r#"{"v":1,"source":"claude-code","sessionId":"s-root","relationshipType":"root","ts":"2026-04-20T00:00:00.000Z"}"#),
        obj(r#"{"v":1,"source":"claude-code","sessionId":"s-root","relationshipType":"subagent","relatedSessionId":"s-root","agentId":"agent-one","parentToolUseId":"call-outer","subagentType":"Survey","ts":"2026-04-20T00:00:01.000Z"}"#),
    ])
    .unwrap();
    let got = all(l.query_relationships(&Query::default()).unwrap());
    assert_eq!(got.len(), 2);
    let sub = got
        .iter()
        .find(|r| s(r, "relationshipType") == Some("subagent"))
        .unwrap();
    assert_eq!(s(sub, "agentId"), Some("agent-one"));
    assert_eq!(s(sub, "subagentType"), Some("Survey"));
}

#[test]
fn relationship_dedup_uses_all_six_key_parts() {
    let (_d, l) = temp_ledger();
    let sub = obj(
        r#"{"v":1,"source":"claude-code","sessionId":"s-x","relationshipType":"subagent","relatedSessionId":"s-x","agentId":"agent-x","parentToolUseId":"tu_x"}"#,
    );
    l.append_relationships(vec![sub.clone()]).unwrap();
    let after = size(&l.home().ledger());
    l.append_relationships(vec![sub.clone(), sub.clone()])
        .unwrap();
    assert_eq!(size(&l.home().ledger()), after);
    // A different parentToolUseId is a different edge.
    let other = merge(&sub.to_json(), r#"{"parentToolUseId":"tu_y"}"#);
    assert_eq!(l.append_relationships(vec![other]).unwrap(), 1);
    assert_eq!(
        all(l.query_relationships(&Query::default()).unwrap()).len(),
        2
    );
}

#[test]
fn tool_result_events_round_trip_and_dedup() {
    let (_d, l) = temp_ledger();
    let ev1 = obj(
        r#"{"v":1,"source":"claude-code","sessionId":"s-tre","toolUseId":"tu_a","callIndex":0,"eventIndex":0,"status":"completed","eventSource":"tool_result","contentLength":12,"contentHash":"0f1e2d3c4b5a6978"}"#,
    );
    let ev2 = merge(
        &ev1.to_json(),
        r#"{"eventIndex":1,"status":"errored","isError":true}"#,
    );
    l.append_tool_result_events(vec![ev1.clone(), ev2]).unwrap();
    l.append_tool_result_events(vec![ev1]).unwrap();
    let got = all(l.query_tool_result_events(&Query::default()).unwrap());
    assert_eq!(got.len(), 2);
    let errored = got
        .iter()
        .find(|e| s(e, "status") == Some("errored"))
        .unwrap();
    assert_eq!(errored.get("isError"), Some(&Value::Bool(true)));
    assert_eq!(errored.get("eventIndex").and_then(Value::as_f64), Some(1.0));
}

#[test]
fn user_turns_round_trip_and_dedup_on_user_uuid() {
    let (_d, l) = temp_ledger();
    let u1 = merge(USER_TURN, "{}");
    let u2 = merge(
        USER_TURN,
        r#"{"userUuid":"u-0002","ts":"2026-04-20T00:00:01.000Z","blocks":[{"kind":"text","byteLen":20,"approxTokens":5},{"kind":"tool_result","toolUseId":"tu_b","byteLen":80,"approxTokens":20,"isError":true}]}"#,
    );
    l.append_user_turns(vec![u1.clone(), u2]).unwrap();
    assert_eq!(l.append_user_turns(vec![u1]).unwrap(), 0);
    let got = all(l.query_user_turns(&Query::default()).unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!(s(&got[0], "userUuid"), Some("u-0001"));
    let blocks = got[1].get("blocks").and_then(Value::as_array).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].get("isError"), Some(&Value::Bool(true)));
    assert!(all(l
        .query_user_turns(&q(r#"{"sessionId":"sess-a","source":"codex"}"#))
        .unwrap())
    .is_empty());
}

#[test]
fn user_turn_filters() {
    let (_d, l) = temp_ledger();
    l.append_user_turns(vec![
        merge(USER_TURN, r#"{"sessionId":"s-A","userUuid":"u-A1","ts":"2026-04-19T00:00:00.000Z"}"#),
        merge(USER_TURN, r#"{"sessionId":"s-B","userUuid":"u-B1","ts":"2026-04-21T00:00:00.000Z"}"#),
        merge(USER_TURN, r#"{"source":"codex","sessionId":"s-C","userUuid":"u-C1","ts":"2026-04-21T00:00:00.000Z"}"#),
    ])
    .unwrap();
    let n = |query: &str| all(l.query_user_turns(&q(query)).unwrap()).len();
    assert_eq!(n(r#"{"sessionId":"s-A"}"#), 1);
    assert_eq!(n(r#"{"source":"codex"}"#), 1);
    assert_eq!(n(r#"{"since":"2026-04-20T00:00:00.000Z"}"#), 2);
    // Project and enrichment do not filter user turns.
    assert_eq!(n(r#"{"project":"/nowhere","enrichment":{"k":"v"}}"#), 3);
}

#[test]
fn relationship_filters_match_either_end_and_the_source() {
    let (_d, l) = temp_ledger();
    l.append_relationships(vec![
        obj(r#"{"v":1,"source":"claude-code","sessionId":"s-A","relationshipType":"root"}"#),
        obj(r#"{"v":1,"source":"claude-code","sessionId":"s-B","relatedSessionId":"s-A","relationshipType":"subagent","agentId":"a-1"}"#),
        obj(r#"{"v":1,"source":"claude-code","sessionId":"s-C","relationshipType":"root"}"#),
    ])
    .unwrap();
    let n = |query: &str| all(l.query_relationships(&q(query)).unwrap()).len();
    assert_eq!(n(r#"{"sessionId":"s-A"}"#), 2);
    assert_eq!(n(r#"{"source":"codex"}"#), 0);
    // Records without ts pass time bounds.
    assert_eq!(n(r#"{"since":"2030-01-01"}"#), 3);
}

#[test]
fn compaction_filters() {
    let (_d, l) = temp_ledger();
    l.append_compactions(vec![
        merge(COMPACTION, "{}"),
        merge(
            COMPACTION,
            r#"{"ts":"2026-04-22T00:00:00.000Z","sessionId":"s-2"}"#,
        ),
    ])
    .unwrap();
    assert_eq!(
        l.append_compactions(vec![merge(COMPACTION, "{}")]).unwrap(),
        0
    );
    let n = |query: &str| all(l.query_compactions(&q(query)).unwrap()).len();
    assert_eq!(n("{}"), 2);
    assert_eq!(n(r#"{"since":"2026-04-21"}"#), 1);
    assert_eq!(n(r#"{"until":"2026-04-21"}"#), 1);
    assert_eq!(n(r#"{"sessionId":"s-2","project":"/ignored"}"#), 1);
}

#[test]
fn turns_and_user_turns_share_the_ledger_without_colliding() {
    let (_d, l) = temp_ledger();
    l.append_user_turns(vec![merge(
        USER_TURN,
        r#"{"sessionId":"s-mix","userUuid":"u-mix-1"}"#,
    )])
    .unwrap();
    l.append_turns(vec![turn(
        r#"{"sessionId":"s-mix","messageId":"msg-mix-1"}"#,
    )])
    .unwrap();
    assert_eq!(turns(&l, &q(r#"{"sessionId":"s-mix"}"#)).len(), 1);
    assert_eq!(
        all(l.query_user_turns(&q(r#"{"sessionId":"s-mix"}"#)).unwrap()).len(),
        1
    );
}

#[test]
fn rebuild_restores_dedup_after_the_index_files_are_deleted() {
    let (_d, l) = temp_ledger();
    let t1 = turn(r#"{"messageId":"r-1"}"#);
    let t2 = turn(r#"{"messageId":"r-2","turnIndex":1,"ts":"2026-04-20T00:01:00.000Z"}"#);
    let rel = obj(
        r#"{"v":1,"source":"claude-code","sessionId":"s-rebuild","relationshipType":"subagent","agentId":"a-rebuild","relatedSessionId":"s-rebuild"}"#,
    );
    let ev = merge(TOOL_RESULT_EVENT, r#"{"sessionId":"s-rebuild"}"#);
    let ut = merge(
        USER_TURN,
        r#"{"sessionId":"s-rebuild","userUuid":"user-rebuild"}"#,
    );
    l.append_turns(vec![t1.clone(), t2.clone()]).unwrap();
    l.append_relationships(vec![rel.clone()]).unwrap();
    l.append_tool_result_events(vec![ev.clone()]).unwrap();
    l.append_user_turns(vec![ut.clone()]).unwrap();
    l.stamp(obj(r#"{"sessionId":"sess-a"}"#), obj(r#"{"k":"v"}"#))
        .unwrap();
    std::fs::remove_file(l.home().ledger_index()).unwrap();
    std::fs::remove_file(l.home().ledger_content_index()).unwrap();
    l.invalidate_index_cache();

    let r = l.rebuild_index().unwrap();
    assert_eq!((r.ids, r.content, r.skipped), (5, 2, 0));
    let before = size(&l.home().ledger());
    l.append_turns(vec![t1, t2]).unwrap();
    l.append_relationships(vec![rel]).unwrap();
    l.append_tool_result_events(vec![ev]).unwrap();
    l.append_user_turns(vec![ut]).unwrap();
    assert_eq!(size(&l.home().ledger()), before);
    let ids = std::fs::read_to_string(l.home().ledger_index()).unwrap();
    assert_eq!(ids.lines().count(), 5);
    // And as a fresh process would see it.
    let fresh = Ledger::open(LedgerHome::new(l.home().root())).unwrap();
    assert_eq!(
        fresh
            .append_turns(vec![turn(r#"{"messageId":"r-1"}"#)])
            .unwrap(),
        0
    );
}

#[test]
fn rebuild_keeps_first_seen_order_and_counts_unhashable_lines() {
    let (_d, l) = temp_ledger();
    let t = |m: &str, ts: &str| {
        format!(
            r#"{{"v":1,"kind":"turn","record":{}}}"#,
            turn(&format!(r#"{{"messageId":"{m}","ts":"{ts}"}}"#)).to_json()
        )
    };
    let body = [
        t("b", "2026-01-02"),
        t("a", "2026-01-01"),
        t("b", "2026-01-02"),
        // Same content as "a" under another id: one fingerprint, two ids.
        t("c", "2026-01-01"),
        r#"{"v":1,"kind":"turn","record":{"source":"x","sessionId":"s","messageId":"no-usage","toolCalls":[]}}"#.into(),
        "not json".into(),
        String::new(),
    ]
    .join("\n");
    std::fs::write(l.home().ledger(), body).unwrap();
    let r = l.rebuild_index().unwrap();
    assert_eq!((r.ids, r.content, r.skipped), (4, 2, 1));
    let hash = |m: &str| {
        relayburn_ledger::index::turn_id(&turn(&format!(r#"{{"messageId":"{m}"}}"#)))
            .unwrap()
            .hex()
    };
    let ids: Vec<String> = std::fs::read_to_string(l.home().ledger_index())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let no_usage = relayburn_ledger::index::turn_id(&obj(
        r#"{"source":"x","sessionId":"s","messageId":"no-usage"}"#,
    ))
    .unwrap()
    .hex();
    assert_eq!(ids, vec![hash("b"), hash("a"), hash("c"), no_usage]);
}

#[test]
fn a_turn_that_cannot_be_fingerprinted_fails_the_batch_and_writes_nothing() {
    let (_d, l) = temp_ledger();
    let bad = obj(r#"{"source":"x","sessionId":"s","messageId":"m","toolCalls":[]}"#);
    let err = l.append_turns(vec![turn("{}"), bad]).unwrap_err();
    assert!(
        matches!(&err, relayburn_ledger::Error::Invalid { field, .. } if field == "records[1]"),
        "{err:?}"
    );
    assert!(!l.home().ledger().exists());
    // The good turn was not remembered as written.
    assert_eq!(l.append_turns(vec![turn("{}")]).unwrap(), 1);
}

#[test]
fn with_lock_is_reentrant_and_serialises_threads() {
    let (_d, l) = temp_ledger();
    let v = l
        .with_lock("demo", || l.with_lock("demo", || Ok(42)))
        .unwrap();
    assert_eq!(v, 42);
    let inside = std::sync::atomic::AtomicUsize::new(0);
    let max = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|sc| {
        for _ in 0..3 {
            sc.spawn(|| {
                l.with_lock("serialize", || {
                    use std::sync::atomic::Ordering::SeqCst;
                    let n = inside.fetch_add(1, SeqCst) + 1;
                    max.fetch_max(n, SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    inside.fetch_sub(1, SeqCst);
                    Ok(())
                })
                .unwrap();
            });
        }
    });
    assert_eq!(max.into_inner(), 1);
}

// --- dedup across processes (SPEC §4, beyond) ---

#[test]
fn a_second_handle_sees_what_the_first_appended() {
    let (d, a) = temp_ledger();
    let b = Ledger::open(LedgerHome::new(d.path())).unwrap();
    // Both load their state before either writes.
    a.append_turns(vec![turn(r#"{"messageId":"seed"}"#)])
        .unwrap();
    b.append_turns(vec![turn(r#"{"messageId":"seed2","ts":"2026-04-21"}"#)])
        .unwrap();
    let x = turn(r#"{"messageId":"x","ts":"2026-04-22"}"#);
    assert_eq!(a.append_turns(vec![x.clone()]).unwrap(), 1);
    assert_eq!(b.append_turns(vec![x]).unwrap(), 0);
    // Same content under a new id, too.
    let twin = turn(r#"{"messageId":"x-twin","ts":"2026-04-22"}"#);
    assert_eq!(b.append_turns(vec![twin]).unwrap(), 0);
    assert_eq!(turns(&a, &Query::default()).len(), 3);
}

#[test]
fn a_line_appended_without_index_lines_is_not_appended_again() {
    // The reference appends its index lines after releasing the ledger
    // lock; a record can be in the ledger before its id is in the index.
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"seed"}"#)])
        .unwrap();
    let foreign = turn(r#"{"messageId":"foreign","ts":"2026-05-01"}"#);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(l.home().ledger())
        .unwrap();
    writeln!(
        f,
        r#"{{"v":1,"kind":"turn","record":{}}}"#,
        foreign.to_json()
    )
    .unwrap();
    assert_eq!(l.append_turns(vec![foreign]).unwrap(), 0);
    assert_eq!(turns(&l, &Query::default()).len(), 2);
}

#[test]
fn ids_another_process_indexed_are_honoured() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"seed"}"#)])
        .unwrap();
    let other = turn(r#"{"messageId":"other","ts":"2026-05-01"}"#);
    let id = relayburn_ledger::index::turn_id(&other).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(l.home().ledger_index())
        .unwrap();
    writeln!(f, "{id}").unwrap();
    assert_eq!(l.append_turns(vec![other]).unwrap(), 0);
}

#[test]
fn a_replaced_ledger_is_reloaded() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"a"}"#)]).unwrap();
    // Another process wipes the home (ledger and index).
    std::fs::remove_file(l.home().ledger()).unwrap();
    std::fs::remove_file(l.home().ledger_index()).unwrap();
    std::fs::remove_file(l.home().ledger_content_index()).unwrap();
    std::fs::write(l.home().ledger(), "").unwrap();
    assert_eq!(
        l.append_turns(vec![turn(r#"{"messageId":"a"}"#)]).unwrap(),
        1
    );
}

#[test]
fn a_torn_tail_gets_its_own_line_before_new_records() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"before"}"#)])
        .unwrap();
    let whole = format!(
        r#"{{"v":1,"kind":"turn","record":{}}}"#,
        turn(r#"{"messageId":"torn","ts":"2026-06-01"}"#).to_json()
    );
    let half = &whole[..whole.len() / 2];
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(l.home().ledger())
        .unwrap();
    f.write_all(half.as_bytes()).unwrap();
    l.append_turns(vec![
        turn(r#"{"messageId":"after-1","ts":"2026-06-02"}"#),
        turn(r#"{"messageId":"after-2","ts":"2026-06-03"}"#),
    ])
    .unwrap();
    let got: Vec<String> = turns(&l, &Query::default())
        .iter()
        .map(|t| s(t, "messageId").unwrap().to_string())
        .collect();
    assert_eq!(got, ["before", "after-1", "after-2"]);
    let text = std::fs::read_to_string(l.home().ledger()).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines[1], half);
    assert!(text.ends_with("}}\n"));
    // The torn turn can still be appended whole: it was never a record.
    assert_eq!(
        l.append_turns(vec![turn(r#"{"messageId":"torn","ts":"2026-06-01"}"#)])
            .unwrap(),
        1
    );
}

#[test]
fn a_fresh_handle_knows_records_whose_index_lines_are_still_missing() {
    // A reference writer has appended its line but not yet its index line
    // when this process loads its state.
    let (d, l) = temp_ledger();
    l.append_turns(vec![turn(r#"{"messageId":"seed"}"#)])
        .unwrap();
    let pending = turn(r#"{"messageId":"pending","ts":"2026-05-01"}"#);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(l.home().ledger())
        .unwrap();
    writeln!(
        f,
        r#"{{"v":1,"kind":"turn","record":{}}}"#,
        pending.to_json()
    )
    .unwrap();
    let fresh = Ledger::open(LedgerHome::new(d.path())).unwrap();
    assert_eq!(fresh.append_turns(vec![pending]).unwrap(), 0);
}

#[test]
fn records_that_differ_only_by_source_are_different_records() {
    // `source` is the first part of every id key (SPEC §4).
    let (_d, l) = temp_ledger();
    // Turns: one batch, since across batches the content fingerprint
    // (which has no source) would drop the second.
    assert_eq!(
        l.append_turns(vec![turn("{}"), turn(r#"{"source":"codex"}"#)])
            .unwrap(),
        2
    );
    let other = |base: &str| merge(base, r#"{"source":"codex"}"#);
    let rel = obj(RELATIONSHIP);
    assert_eq!(l.append_compactions(vec![obj(COMPACTION)]).unwrap(), 1);
    assert_eq!(l.append_compactions(vec![other(COMPACTION)]).unwrap(), 1);
    assert_eq!(l.append_relationships(vec![rel]).unwrap(), 1);
    assert_eq!(
        l.append_relationships(vec![other(RELATIONSHIP)]).unwrap(),
        1
    );
    assert_eq!(
        l.append_tool_result_events(vec![obj(TOOL_RESULT_EVENT)])
            .unwrap(),
        1
    );
    assert_eq!(
        l.append_tool_result_events(vec![other(TOOL_RESULT_EVENT)])
            .unwrap(),
        1
    );
    assert_eq!(l.append_user_turns(vec![obj(USER_TURN)]).unwrap(), 1);
    assert_eq!(l.append_user_turns(vec![other(USER_TURN)]).unwrap(), 1);
    let sources = |v: Vec<Value>| -> Vec<String> {
        v.iter()
            .map(|r| s(r, "source").unwrap().to_string())
            .collect()
    };
    let both = ["claude-code", "codex"];
    assert_eq!(sources(turns(&l, &Query::default())), both);
    assert_eq!(
        sources(all(l.query_compactions(&Query::default()).unwrap())),
        both
    );
    assert_eq!(
        sources(all(l.query_relationships(&Query::default()).unwrap())),
        both
    );
    assert_eq!(
        sources(all(l.query_tool_result_events(&Query::default()).unwrap())),
        both
    );
    assert_eq!(
        sources(all(l.query_user_turns(&Query::default()).unwrap())),
        both
    );
    // Ten distinct id hashes in the index.
    let idx = std::fs::read_to_string(l.home().root().join("ledger.idx")).unwrap();
    let ids: std::collections::HashSet<&str> = idx.lines().collect();
    assert_eq!((idx.lines().count(), ids.len()), (10, 10));
    // And the same again is a duplicate of each.
    assert_eq!(
        l.append_turns(vec![turn(r#"{"source":"codex"}"#)]).unwrap(),
        0
    );
    assert_eq!(l.append_user_turns(vec![other(USER_TURN)]).unwrap(), 0);
}
