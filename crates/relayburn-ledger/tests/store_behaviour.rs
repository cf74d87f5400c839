//! The storage seam's behaviour, one suite run over every backend:
//! append and dedup, queries and their filters, stamps, content, prune
//! and named locks. A backend joins with one line in `backends!` below.
//! Expected values are worked out by hand from the records written.
//!
//! The `postgres` backend needs a server (`RELAYBURN_TEST_POSTGRES_URL`,
//! see `team_support`); without one its tests print a notice and pass,
//! unless `RELAYBURN_REQUIRE_POSTGRES=1`.

mod team_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use relayburn_ledger::json::parse;
use relayburn_ledger::store::Store;
use relayburn_ledger::{Kind, Ledger, LedgerHome, PostgresStore, Query, SqliteStore, Value};

type Open = fn(&Path) -> Box<dyn Store>;

fn file(dir: &Path) -> Box<dyn Store> {
    Box::new(Ledger::open(LedgerHome::new(dir)).unwrap())
}

fn sqlite(dir: &Path) -> Box<dyn Store> {
    Box::new(SqliteStore::open(&dir.join("burn.sqlite")).unwrap())
}

fn postgres(dir: &Path) -> Box<dyn Store> {
    let admin = team_support::server().expect("checked by `available`");
    let url = team_support::store_url(&admin, dir);
    Box::new(PostgresStore::open(&url).unwrap())
}

/// Whether a backend can run here; a missing server is a skip (or a
/// failure when it is required).
fn available(backend: &str) -> bool {
    backend != "postgres" || team_support::server().is_some()
}

fn turn(session: &str, message: &str, ts: &str, input: u32) -> Value {
    parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{session}","messageId":"{message}","turnIndex":0,
        "ts":"{ts}","model":"gpt-5","project":"/p/{session}","usage":{{"input":{input},"output":1,
        "reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[]}}"#
    ))
    .unwrap()
}

fn all(s: &dyn Store, kind: Kind, q: &Query) -> Vec<Value> {
    s.query_records(kind, q)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn field<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn messages(turns: &[Value]) -> Vec<&str> {
    turns.iter().map(|t| field(t, "messageId")).collect()
}

fn session(sid: &str) -> Query {
    Query {
        session_id: Some(sid.into()),
        ..Query::default()
    }
}

fn appends_dedup_on_ids(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let a = turn("s1", "m1", "2026-01-01T00:00:01Z", 1);
    let b = turn("s1", "m2", "2026-01-01T00:00:02Z", 2);
    let c = turn("s2", "m3", "2026-01-01T00:00:03Z", 3);
    // The same id twice in one batch is written once.
    assert_eq!(
        s.append_turns(vec![a.clone(), b.clone(), a.clone()])
            .unwrap(),
        2
    );
    assert_eq!(s.append_turns(vec![b, c]).unwrap(), 1);
    // A second handle (a new process would be the same) sees the same.
    let again = open(dir.path());
    assert_eq!(again.append_turns(vec![a]).unwrap(), 0);
    let got = all(s.as_ref(), Kind::Turn, &Query::default());
    assert_eq!(messages(&got), ["m1", "m2", "m3"]);
    assert_eq!(got[0].get("enrichment"), Some(&parse("{}").unwrap()));
}

fn turns_skip_a_known_fingerprint_but_not_within_a_batch(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    // Same ts, model and usage: the same content fingerprint.
    let first = turn("s", "m1", "2026-01-01T00:00:00Z", 7);
    let twin = turn("s", "m2", "2026-01-01T00:00:00Z", 7);
    assert_eq!(
        s.append_turns(vec![first.clone(), twin.clone()]).unwrap(),
        2
    );
    let late_twin = turn("s", "m3", "2026-01-01T00:00:00Z", 7);
    assert_eq!(s.append_turns(vec![late_twin]).unwrap(), 0);
    let bad = parse(r#"{"source":"codex","sessionId":"s","messageId":"x","ts":"t"}"#).unwrap();
    let fresh = turn("s", "m4", "2026-01-01T00:00:09Z", 1);
    // A turn that cannot be fingerprinted fails the batch; nothing is written.
    assert!(s.append_turns(vec![fresh, bad]).is_err());
    assert_eq!(
        messages(&all(s.as_ref(), Kind::Turn, &Query::default())),
        ["m1", "m2"]
    );
}

fn a_fingerprint_another_handle_wrote_is_seen(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path());
    let b = open(dir.path());
    assert_eq!(
        a.append_turns(vec![turn("s", "m1", "2026-01-01T00:00:01Z", 1)])
            .unwrap(),
        1
    );
    // `b` writes a turn; `a` then offers its twin under another id.
    assert_eq!(
        b.append_turns(vec![turn("s", "m2", "2026-01-01T00:00:02Z", 2)])
            .unwrap(),
        1
    );
    assert_eq!(
        a.append_turns(vec![turn("s", "m3", "2026-01-01T00:00:02Z", 2)])
            .unwrap(),
        0
    );
    assert_eq!(
        a.append_turns(vec![turn("s", "m4", "2026-01-01T00:00:03Z", 3)])
            .unwrap(),
        1
    );
    assert_eq!(
        b.append_turns(vec![turn("s", "m5", "2026-01-01T00:00:03Z", 3)])
            .unwrap(),
        0
    );
    assert_eq!(
        messages(&all(a.as_ref(), Kind::Turn, &Query::default())),
        ["m1", "m2", "m4"]
    );
}

fn queries_apply_the_reference_filters(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_turns(vec![
        turn("s1", "m1", "2026-01-01T00:00:00Z", 1),
        turn("s2", "m2", "2026-01-02T00:00:00Z", 2),
        turn("s1", "m3", "2026-01-03T00:00:00Z", 3),
    ])
    .unwrap();
    let q = Query {
        since: Some("2026-01-02T00:00:00Z".into()),
        ..Query::default()
    };
    assert_eq!(messages(&all(s.as_ref(), Kind::Turn, &q)), ["m2", "m3"]);
    let q = Query {
        until: Some("2026-01-02T00:00:00Z".into()),
        project: Some("/p/s2".into()),
        ..Query::default()
    };
    assert_eq!(messages(&all(s.as_ref(), Kind::Turn, &q)), ["m2"]);
    assert_eq!(
        messages(&all(s.as_ref(), Kind::Turn, &session("s1"))),
        ["m1", "m3"]
    );
    let q = Query {
        source: Some("claude-code".into()),
        ..Query::default()
    };
    assert!(all(s.as_ref(), Kind::Turn, &q).is_empty());

    let rel = |sid: &str, rel: &str, ts: &str| {
        parse(&format!(
            r#"{{"v":1,"source":"claude-code","sessionId":"{sid}","relatedSessionId":"{rel}","relationshipType":"subagent"{ts}}}"#
        ))
        .unwrap()
    };
    assert_eq!(
        s.append_relationships(vec![
            rel("a", "b", r#","ts":"2026-01-01T00:00:00Z""#),
            rel("c", "a", ""),
            rel("a", "b", r#","ts":"2026-01-01T00:00:00Z""#),
        ])
        .unwrap(),
        2
    );
    // `sessionId` matches either end; a record without ts passes the bounds.
    let q = Query {
        session_id: Some("a".into()),
        since: Some("2026-06-01".into()),
        ..Query::default()
    };
    let got = all(s.as_ref(), Kind::Relationship, &q);
    assert_eq!(got.len(), 1);
    assert_eq!(field(&got[0], "sessionId"), "c");

    let ev = |sid: &str, ts: &str| {
        parse(&format!(
            r#"{{"v":1,"source":"codex","sessionId":"{sid}","ts":"{ts}","precedingMessageId":"m"}}"#
        ))
        .unwrap()
    };
    s.append_compactions(vec![ev("s1", "2026-01-01"), ev("s2", "2026-01-05")])
        .unwrap();
    let got = all(s.as_ref(), Kind::Compaction, &session("s2"));
    assert_eq!(got.len(), 1);
    assert_eq!(field(&got[0], "ts"), "2026-01-05");

    let user = |uuid: &str| {
        parse(&format!(
            r#"{{"v":1,"source":"codex","sessionId":"s1","userUuid":"{uuid}","ts":"2026-01-01","blocks":[]}}"#
        ))
        .unwrap()
    };
    assert_eq!(
        s.append_user_turns(vec![user("u1"), user("u2"), user("u1")])
            .unwrap(),
        2
    );
    assert_eq!(all(s.as_ref(), Kind::UserTurn, &session("s1")).len(), 2);
    let tre = |i: u32| {
        parse(&format!(
            r#"{{"v":1,"source":"codex","sessionId":"s1","toolUseId":"t","eventIndex":{i}}}"#
        ))
        .unwrap()
    };
    assert_eq!(
        s.append_tool_result_events(vec![tre(0), tre(1), tre(0)])
            .unwrap(),
        2
    );
    let q = Query {
        until: Some("2000".into()),
        ..session("s1")
    };
    assert_eq!(all(s.as_ref(), Kind::ToolResultEvent, &q).len(), 2);
}

fn stamps_fold_in_ts_order(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append_turns(vec![
        turn("s1", "m1", "2026-01-01T00:00:00Z", 1),
        turn("s1", "m2", "2026-01-02T00:00:00Z", 2),
        turn("s2", "m3", "2026-01-03T00:00:00Z", 3),
    ])
    .unwrap();
    let stamp = |ts: &str, sel: &str, enr: &str| {
        parse(&format!(
            r#"{{"v":1,"kind":"stamp","ts":"{ts}","selector":{sel},"enrichment":{enr}}}"#
        ))
        .unwrap()
    };
    // Appended out of ts order: the later ts wins whatever the order.
    s.append_stamp(&stamp(
        "2026-02-02",
        r#"{"sessionId":"s1"}"#,
        r#"{"team":"late"}"#,
    ))
    .unwrap();
    s.append_stamp(&stamp(
        "2026-02-01",
        r#"{"sessionId":"s1"}"#,
        r#"{"team":"early","x":"1"}"#,
    ))
    .unwrap();
    s.append_stamp(&stamp(
        "2026-02-03",
        r#"{"messageId":"m3"}"#,
        r#"{"team":"m"}"#,
    ))
    .unwrap();
    s.append_stamp(&stamp(
        "2026-02-04",
        r#"{"range":{"fromTs":"2026-01-02T00:00:00Z","toTs":"2026-01-02T23:00:00Z"}}"#,
        r#"{"sprint":"9"}"#,
    ))
    .unwrap();
    let got = all(s.as_ref(), Kind::Turn, &Query::default());
    let enr: Vec<String> = got
        .iter()
        .map(|t| t.get("enrichment").unwrap().to_json())
        .collect();
    assert_eq!(
        enr,
        [
            r#"{"team":"late","x":"1"}"#,
            r#"{"team":"late","x":"1","sprint":"9"}"#,
            r#"{"team":"m"}"#,
        ]
    );
    let q = Query {
        enrichment: vec![("sprint".into(), "9".into())],
        ..Query::default()
    };
    assert_eq!(messages(&all(s.as_ref(), Kind::Turn, &q)), ["m2"]);
    // A selector needs a field.
    assert!(s.stamp(parse("{}").unwrap(), parse("{}").unwrap()).is_err());

    // The spawn-env rule: one relationship, however often stamped.
    let spawn = r#"{"parentAgentId":"parent-1","agentId":"agent-9"}"#;
    s.append_stamp(&stamp("2026-03-01", r#"{"sessionId":"s2"}"#, spawn))
        .unwrap();
    s.append_stamp(&stamp("2026-03-01", r#"{"sessionId":"s2"}"#, spawn))
        .unwrap();
    let rels = all(s.as_ref(), Kind::Relationship, &Query::default());
    assert_eq!(rels.len(), 1);
    assert_eq!(
        rels[0].to_json(),
        r#"{"v":1,"source":"spawn-env","sessionId":"s2","relatedSessionId":"parent-1","relationshipType":"subagent","ts":"2026-03-01","agentId":"agent-9"}"#
    );
}

fn content_is_kept_per_session_and_pruned(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let rec = |sid: &str, mid: &str, text: &str| {
        parse(&format!(
            r#"{{"v":1,"source":"codex","sessionId":"{sid}","messageId":"{mid}","ts":"t","role":"user","kind":"text","text":"{text}"}}"#
        ))
        .unwrap()
    };
    let sum = s
        .append_content(vec![
            rec("s-a", "m1", "one"),
            rec("s-a", "m2", "two"),
            rec("s-a", "m1", "one"),
            rec("s-b", "m1", "b"),
            rec("../escape", "m", "no"),
            parse(r#"{"text":"no session"}"#).unwrap(),
        ])
        .unwrap();
    assert_eq!(
        (sum.appended, sum.duplicates, sum.missing_session),
        (3, 1, 1)
    );
    assert_eq!(sum.invalid_session_ids, [r#""../escape""#]);
    assert_eq!(
        s.append_content(vec![rec("s-a", "m2", "two")])
            .unwrap()
            .appended,
        0
    );
    assert_eq!(s.read_content("s-a", None).unwrap().len(), 2);
    let m1 = s.read_content("s-a", Some("m1")).unwrap();
    assert_eq!(m1, [rec("s-a", "m1", "one")]);
    assert!(s.read_content("s-c", None).unwrap().is_empty());
    assert_eq!(s.list_content_session_ids().unwrap(), ["s-a", "s-b"]);

    // Nothing is an hour old yet.
    let hour = Duration::from_secs(3600);
    assert!(s.prune_candidates(hour).unwrap().is_empty());
    assert_eq!(s.prune_content(hour, None).unwrap().files_deleted, 0);
    let keep_b = |sid: &str| Ok(sid == "s-b");
    let r = s.prune_content(Duration::ZERO, Some(&keep_b)).unwrap();
    assert_eq!((r.files_deleted, r.skipped_recoverable), (1, 1));
    assert_eq!(s.list_content_session_ids().unwrap(), ["s-b"]);
    assert!(s.read_content("s-a", None).unwrap().is_empty());
}

fn locks_are_reentrant_and_exclusive(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let s: Arc<dyn Store> = Arc::from(open(dir.path()));
    let other: Arc<dyn Store> = Arc::from(open(dir.path()));
    let depth = s
        .with_lock("test-serialize", || s.with_lock("test-serialize", || Ok(2)))
        .unwrap();
    assert_eq!(depth, 2);
    for waiter in [Arc::clone(&s), other] {
        let entered = Arc::new(AtomicBool::new(false));
        let (held_tx, held_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let holder = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.with_lock("test-serialize", || {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok(())
                })
                .unwrap()
            })
        };
        held_rx.recv().unwrap();
        let w = {
            let entered = Arc::clone(&entered);
            std::thread::spawn(move || {
                waiter
                    .with_lock("test-serialize", || {
                        entered.store(true, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap()
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!entered.load(Ordering::SeqCst), "entered while held");
        go_tx.send(()).unwrap();
        holder.join().unwrap();
        w.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }
    // A failing body releases the lock.
    let r: relayburn_ledger::Result<()> = s.with_lock("test-serialize", || {
        Err(relayburn_ledger::Error::Internal("boom".into()))
    });
    assert!(r.is_err());
    s.with_lock("test-serialize", || Ok(())).unwrap();
}

/// One module per backend, each running every behaviour above.
macro_rules! backends {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            #[test]
            fn appends_dedup_on_ids() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::appends_dedup_on_ids(super::$backend)
            }
            #[test]
            fn turns_skip_a_known_fingerprint_but_not_within_a_batch() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::turns_skip_a_known_fingerprint_but_not_within_a_batch(super::$backend)
            }
            #[test]
            fn a_fingerprint_another_handle_wrote_is_seen() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::a_fingerprint_another_handle_wrote_is_seen(super::$backend)
            }
            #[test]
            fn queries_apply_the_reference_filters() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::queries_apply_the_reference_filters(super::$backend)
            }
            #[test]
            fn stamps_fold_in_ts_order() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::stamps_fold_in_ts_order(super::$backend)
            }
            #[test]
            fn content_is_kept_per_session_and_pruned() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::content_is_kept_per_session_and_pruned(super::$backend)
            }
            #[test]
            fn locks_are_reentrant_and_exclusive() {
                if !super::available(stringify!($backend)) {
                    return;
                }
                super::locks_are_reentrant_and_exclusive(super::$backend)
            }
        }
    )*};
}

backends!(file, sqlite, postgres);

#[test]
fn reserved_backends_are_refused_and_archives_need_file_storage() {
    use relayburn_ledger::{Storage, StorageKind};
    let dir = tempfile::tempdir().unwrap();
    let st = Storage {
        kind: StorageKind::Http,
        ..Storage::file(LedgerHome::new(dir.path()))
    };
    let e = relayburn_ledger::store::open(&st).unwrap_err().to_string();
    assert_eq!(e, "RELAYBURN_STORAGE=http is not supported in this build");
    let s = sqlite(dir.path());
    assert_eq!(
        s.require_file().unwrap_err().to_string(),
        "archive operations require RELAYBURN_STORAGE=file (got sqlite)"
    );
    assert!(file(dir.path()).require_file().is_ok());
    // PostgreSQL storage without a server to use.
    let st = Storage {
        kind: StorageKind::Postgres,
        ..Storage::file(LedgerHome::new(dir.path()))
    };
    assert_eq!(
        relayburn_ledger::store::open(&st).unwrap_err().to_string(),
        "RELAYBURN_STORAGE=postgres needs RELAYBURN_POSTGRES_URL (postgres://user@host/db)"
    );
}
