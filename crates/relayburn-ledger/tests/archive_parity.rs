//! The archive built here equals, row for row, the one the reference
//! built from the same ledger.

mod support;

use relayburn_ledger::archive::{build_archive, rebuild_archive};
use rusqlite::Connection;
use support::archive::*;

fn rebuild_and_compare(ledger: &std::path::Path, dump_path: &std::path::Path, what: &str) {
    let h = TempHome::new();
    copy_into(ledger, &h, "ledger.jsonl");
    let r = rebuild_archive(&h.home, &h.locks).unwrap();
    assert!(r.rebuilt_from_zero);
    assert_eq!(r.skipped_count, 0, "{what}: {:?}", r.skipped);
    let got = dump(&h.archive());
    let want = normalise_dump(read_json(dump_path));
    assert_dumps_equal(&got, &want, what);
}

#[test]
fn full_rebuild_of_the_home_ledger_matches_the_reference_dump() {
    let r = reference_or_skip!();
    rebuild_and_compare(
        &r.join("home/ledger.jsonl"),
        &r.join("home/archive-dump.json"),
        "home",
    );
}

#[test]
fn full_rebuild_of_each_ops_case_matches_its_dump() {
    let r = reference_or_skip!();
    for case in [
        "numbers",
        "stamps",
        "tool-result-events",
        "archive-incremental",
    ] {
        let dir = r.join("ops").join(case).join("expected");
        rebuild_and_compare(
            &dir.join("ledger.jsonl"),
            &dir.join("archive-dump.json"),
            case,
        );
    }
}

#[test]
fn incremental_builds_over_slices_end_equal_to_the_full_rebuild() {
    let r = reference_or_skip!();
    let full = std::fs::read(r.join("home/ledger.jsonl")).unwrap();
    // A few line boundaries and one point inside a line.
    let newlines: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let cuts = [
        newlines[10],
        newlines[newlines.len() / 3] + 17,
        newlines[newlines.len() / 2],
        newlines[newlines.len() * 4 / 5],
        full.len(),
    ];
    let h = TempHome::new();
    let mut written = 0;
    for cut in cuts {
        h.append(std::str::from_utf8(&full[written..cut]).unwrap());
        written = cut;
        build_archive(&h.home, &h.locks).unwrap();
    }
    let got = dump(&h.archive());
    let want = normalise_dump(read_json(&r.join("home/archive-dump.json")));
    assert_dumps_equal(&got, &want, "slices");
}

fn pragma_rows(conn: &Connection, sql: &str) -> Vec<Vec<String>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        out.push(
            (0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect(),
        );
    }
    out
}

#[test]
fn fresh_schema_equals_the_reference_schema() {
    let r = reference_or_skip!();
    let h = TempHome::new();
    h.append(&format!(
        "{}\n",
        relayburn_ledger::records::wrap_record(
            relayburn_ledger::Kind::Turn,
            relayburn_ledger::json::parse(&turn("s", "m", 0, "2026-01-01T00:00:00.000Z", ""))
                .unwrap()
        )
        .to_json()
    ));
    for rebuild in [false, true] {
        if rebuild {
            rebuild_archive(&h.home, &h.locks).unwrap();
        } else {
            build_archive(&h.home, &h.locks).unwrap();
        }
        let ours = Connection::open(h.archive()).unwrap();
        let theirs_copy = TempHome::new();
        let theirs_path = copy_into(&r.join("home/archive.sqlite"), &theirs_copy, "ref.sqlite");
        let theirs = Connection::open(theirs_path).unwrap();
        for table in relayburn_ledger::archive::schema::TABLES {
            for sql in [
                format!("PRAGMA table_info({table})"),
                format!("PRAGMA index_list({table})"),
            ] {
                assert_eq!(
                    pragma_rows(&ours, &sql),
                    pragma_rows(&theirs, &sql),
                    "{sql} (rebuild: {rebuild})"
                );
            }
            let indexes = pragma_rows(&theirs, &format!("PRAGMA index_list({table})"));
            for idx in indexes {
                let name = &idx[1];
                let sql = format!("PRAGMA index_xinfo('{name}')");
                assert_eq!(
                    pragma_rows(&ours, &sql),
                    pragma_rows(&theirs, &sql),
                    "{sql}"
                );
            }
        }
        let mode: String = ours
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
