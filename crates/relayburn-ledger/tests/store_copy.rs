//! `store::copy`: the reference-made fixture home (file storage) copied
//! into a SQLite store and from there into a new file home answers every
//! query of `queries-in.json` as the original does, for every query kind;
//! running a copy again adds nothing; the source is never modified.

mod support;
mod team_support;

use std::collections::HashSet;
use std::path::Path;

use relayburn_ledger::index::record_id;
use relayburn_ledger::json::parse;
use relayburn_ledger::store::{copy::copy, Store};
use relayburn_ledger::{Kind, Ledger, LedgerHome, PostgresStore, Query, SqliteStore, Value};

fn answers(s: &dyn Store, kind: Kind, q: &Query) -> Vec<Value> {
    s.query_records(kind, q)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// The ledger query yields every line, also a re-appended duplicate; a
/// store keeps one record per id, the first. This is what it must answer.
fn first_per_id(kind: Kind, records: Vec<Value>) -> Vec<Value> {
    let mut seen = HashSet::new();
    records
        .into_iter()
        .filter(|r| seen.insert(record_id(kind, r).unwrap().unwrap()))
        .collect()
}

fn content(sid: &str, mid: &str, text: &str) -> Value {
    parse(&format!(
        r#"{{"v":1,"source":"claude-code","sessionId":"{sid}","messageId":"{mid}","ts":"2025-10-09T08:00:00.000Z","role":"assistant","kind":"text","text":"{text}"}}"#
    ))
    .unwrap()
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn fixture_home_survives_file_to_sqlite_to_file() {
    let reference = reference_or_skip!();
    let home = reference.join("home");
    let src_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        home.join("ledger.jsonl"),
        src_dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let src = Ledger::open(LedgerHome::new(src_dir.path())).unwrap();
    src.append_content(vec![
        content("s-1", "m-1", "one"),
        content("s-1", "m-2", "two \u{1f680}"),
        content("s-2", "m-1", "other"),
    ])
    .unwrap();
    let before = tree(src_dir.path());

    let mid_dir = tempfile::tempdir().unwrap();
    let mid = SqliteStore::open(&mid_dir.path().join("burn.sqlite")).unwrap();
    let r = copy(&src, &mid, &mut |_, _| {}).unwrap();
    assert!(r.is_complete(), "{:?}", r.missing);
    assert_eq!(r.refused, 0, "{:?}", r.refused_reasons);
    // 15 stamp lines in the fixture ledger (its README).
    assert_eq!((r.stamps_read, r.stamps_added), (15, 15));
    assert_eq!((r.content_read, r.content_added), (3, 3));
    let turns = r.records.iter().find(|e| e.0 == Kind::Turn).unwrap();
    assert_eq!(turns.1, 1_597, "turn lines read");
    assert_eq!(tree(src_dir.path()), before, "the source was modified");

    // Again: nothing new.
    let again = copy(&src, &mid, &mut |_, _| {}).unwrap();
    assert!(
        again.records.iter().all(|e| e.2 == 0),
        "{:?}",
        again.records
    );
    assert_eq!((again.stamps_added, again.content_added), (0, 0));

    let back_dir = tempfile::tempdir().unwrap();
    let back = Ledger::open(LedgerHome::new(back_dir.path())).unwrap();
    let r = copy(&mid, &back, &mut |_, _| {}).unwrap();
    assert!(r.is_complete(), "{:?}", r.missing);
    let again = copy(&mid, &back, &mut |_, _| {}).unwrap();
    assert!(again.records.iter().all(|e| e.2 == 0));
    assert_eq!(again.stamps_added, 0);

    let queries = parse(&std::fs::read_to_string(home.join("queries-in.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut run = |kind: Kind, q: &Value| {
        let q = Query::from_json(q);
        let want = first_per_id(kind, answers(&src, kind, &q));
        for (name, s) in [("sqlite", &mid as &dyn Store), ("file again", &back)] {
            let got = answers(s, kind, &q);
            assert_eq!(got.len(), want.len(), "{name} {kind:?} {q:?}");
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(a.to_json(), b.to_json(), "{name} {kind:?} {q:?}");
            }
        }
        checked += 1;
    };
    for q in queries.get("turns").unwrap().as_array().unwrap() {
        run(Kind::Turn, q);
    }
    for q in queries.get("aux").unwrap().as_array().unwrap() {
        for kind in [
            Kind::Compaction,
            Kind::Relationship,
            Kind::ToolResultEvent,
            Kind::UserTurn,
        ] {
            run(kind, q);
        }
    }
    assert_eq!(checked, 13 + 3 * 4);
    for s in [&src as &dyn Store, &mid, &back] {
        assert_eq!(s.list_content_session_ids().unwrap(), ["s-1", "s-2"]);
        assert_eq!(
            s.read_content("s-1", None).unwrap(),
            [
                content("s-1", "m-1", "one"),
                content("s-1", "m-2", "two \u{1f680}")
            ]
        );
    }
}

/// The fixture home copied into the PostgreSQL store answers every query
/// of `queries-in.json` as the file home does (one record per id), and
/// lists its entries byte for byte as the SQLite store holding the same
/// copy: same records, same order, same stamps.
#[test]
fn fixture_home_in_postgres_answers_as_file_and_sqlite() {
    let reference = reference_or_skip!();
    let Some(admin) = team_support::server() else {
        return;
    };
    let home = reference.join("home");
    let src_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        home.join("ledger.jsonl"),
        src_dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let src = Ledger::open(LedgerHome::new(src_dir.path())).unwrap();
    src.append_content(vec![
        content("s-1", "m-1", "one"),
        content("s-1", "m-2", "two \u{1f680}"),
        content("s-2", "m-1", "other"),
    ])
    .unwrap();
    let pg = PostgresStore::open(&team_support::store_url(&admin, src_dir.path())).unwrap();
    let r = copy(&src, &pg, &mut |_, _| {}).unwrap();
    assert!(r.is_complete(), "{:?}", r.missing);
    assert_eq!(r.refused, 0, "{:?}", r.refused_reasons);
    assert_eq!((r.stamps_read, r.stamps_added), (15, 15));
    assert_eq!((r.content_read, r.content_added), (3, 3));
    let again = copy(&src, &pg, &mut |_, _| {}).unwrap();
    assert!(
        again.records.iter().all(|e| e.2 == 0),
        "{:?}",
        again.records
    );
    assert_eq!((again.stamps_added, again.content_added), (0, 0));

    let sq_dir = tempfile::tempdir().unwrap();
    let sq = SqliteStore::open(&sq_dir.path().join("burn.sqlite")).unwrap();
    copy(&src, &sq, &mut |_, _| {}).unwrap();
    let lines = |s: &dyn Store| -> Vec<String> {
        s.entries().unwrap().map(|v| v.unwrap().to_json()).collect()
    };
    let (want, got) = (lines(&sq), lines(&pg));
    // 1,589 distinct turns, 18 + 7 + 1,340 + 732 other records, 15 stamps.
    assert_eq!(got.len(), 1_589 + 18 + 7 + 1_340 + 732 + 15);
    assert!(want == got, "entries differ from the sqlite store's");

    let queries = parse(&std::fs::read_to_string(home.join("queries-in.json")).unwrap()).unwrap();
    let mut checked = 0;
    let mut run = |kind: Kind, q: &Value| {
        let q = Query::from_json(q);
        let want = first_per_id(kind, answers(&src, kind, &q));
        let got = answers(&pg, kind, &q);
        assert_eq!(got.len(), want.len(), "{kind:?} {q:?}");
        for (a, b) in want.iter().zip(&got) {
            assert_eq!(a.to_json(), b.to_json(), "{kind:?} {q:?}");
        }
        checked += 1;
    };
    for q in queries.get("turns").unwrap().as_array().unwrap() {
        run(Kind::Turn, q);
    }
    for q in queries.get("aux").unwrap().as_array().unwrap() {
        for kind in [
            Kind::Compaction,
            Kind::Relationship,
            Kind::ToolResultEvent,
            Kind::UserTurn,
        ] {
            run(kind, q);
        }
    }
    assert_eq!(checked, 13 + 3 * 4);
    assert_eq!(pg.list_content_session_ids().unwrap(), ["s-1", "s-2"]);
    assert_eq!(
        pg.read_content("s-1", None).unwrap(),
        [
            content("s-1", "m-1", "one"),
            content("s-1", "m-2", "two \u{1f680}")
        ]
    );
}
