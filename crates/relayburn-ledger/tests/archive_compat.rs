//! Archives written by the reference (1.10.0 and older releases) open and
//! answer here without a rebuild; reading never changes them; a build
//! migrates an older shape and replaces an archive of an older version.

mod support;

use std::path::Path;

use relayburn_ledger::archive::{
    archive_status, open_archive, query_all_from_archive, ARCHIVE_VERSION,
};
use relayburn_ledger::json::Value;
use relayburn_ledger::query::Query;
use support::archive::*;

/// Run every turn query of a fixture list (`[{query, archive}]`) against
/// the home's archive and compare line for line.
fn check_queries(h: &TempHome, list: &Value, what: &str) -> usize {
    let mut checked = 0;
    for (i, entry) in list.as_array().unwrap().iter().enumerate() {
        let q = Query::from_json(entry.get("query").unwrap());
        let got = query_all_from_archive(&h.home, &q).unwrap();
        if let Some(err) = entry
            .get("archiveError")
            .filter(|e| !matches!(e, Value::Null))
        {
            // The reference failed here; we must answer with rows.
            assert!(!got.is_empty(), "{what} query {i}: {err:?}");
            continue;
        }
        let want = entry.get("archive").and_then(Value::as_array).unwrap();
        assert_eq!(got.len(), want.len(), "{what} query {i}: row count");
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_json(), w.to_json(), "{what} query {i} row {j}");
        }
        checked += 1;
    }
    checked
}

#[test]
fn the_reference_archive_answers_every_query_without_a_rebuild() {
    let r = reference_or_skip!();
    let h = TempHome::new();
    copy_into(&r.join("home/archive.sqlite"), &h, "archive.sqlite");
    let before = dump(&h.archive());
    let n = check_queries(&h, &read_json(&r.join("home/queries.json")), "home");
    assert_eq!(n, 13);
    // Nothing was rebuilt or rewritten by opening it.
    assert_dumps_equal(&dump(&h.archive()), &before, "home after queries");
    assert_dumps_equal(
        &before,
        &normalise_dump(read_json(&r.join("home/archive-dump.json"))),
        "home archive",
    );
}

#[test]
fn a_1_0_0_archive_gains_the_new_columns_and_keeps_its_rows() {
    let r = reference_or_skip!();
    let legacy = r.join("legacy");
    let h = TempHome::new();
    copy_into(
        &legacy.join("archive-ts-1.0.0.sqlite"),
        &h,
        "archive.sqlite",
    );
    let untouched = dump(&h.archive());
    let n = check_queries(
        &h,
        &read_json(&legacy.join("queries-ts-1.0.0-after-open.json")),
        "1.0.0",
    );
    assert_eq!(n, 13);
    // Reading adds nothing; the build's open adds the columns.
    assert_dumps_equal(&dump(&h.archive()), &untouched, "1.0.0 after reads");
    drop(open_archive(&h.archive()).unwrap());

    // The rows are the old ones, with the two added tool_calls columns
    // present and NULL.
    let mut want = read_json(&legacy.join("archive-ts-1.0.0.dump.json"))
        .into_object()
        .unwrap();
    let calls = want.remove("tool_calls").unwrap().into_array().unwrap();
    let calls: Vec<Value> = calls
        .into_iter()
        .map(|c| {
            let mut o = c.into_object().unwrap();
            o.insert("replaced_tools", Value::Null);
            o.insert("collapsed_calls", Value::Null);
            Value::Object(o)
        })
        .collect();
    assert_eq!(calls.len(), 1340);
    want.insert("tool_calls", Value::Array(calls));
    let want = normalise_dump(Value::Object(want));
    assert_dumps_equal(&dump(&h.archive()), &want, "1.0.0 after open");

    let conn = h.db();
    let cols: Vec<String> = conn
        .prepare("PRAGMA table_info(tool_calls)")
        .unwrap()
        .query_map([], |r| r.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(&cols[9..], ["replaced_tools", "collapsed_calls"]);
}

fn table_count(path: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_version_2_archive_is_replaced_by_a_fresh_one() {
    let r = reference_or_skip!();
    let h = TempHome::new();
    copy_into(
        &r.join("legacy/archive-ts-0.20.0-v2.sqlite"),
        &h,
        "archive.sqlite",
    );
    assert_eq!(table_count(&h.archive(), "turns"), 1589);
    // A read reports it and leaves it.
    let status = archive_status(&h.home).unwrap();
    assert!(status.exists);
    assert_eq!(status.archive_version, 2);
    assert!(status.problem.unwrap().contains("older"));
    assert_eq!(table_count(&h.archive(), "turns"), 1589);
    // A build replaces it.
    drop(open_archive(&h.archive()).unwrap());
    let status = archive_status(&h.home).unwrap();
    assert!(status.exists);
    assert_eq!(status.archive_version, ARCHIVE_VERSION);
    assert_eq!(status.ledger_offset_bytes, 0);
    assert_eq!(status.row_counts.turns, 0);
    assert_eq!(status.last_built_at, None);
    for table in relayburn_ledger::archive::schema::TABLES {
        let n = table_count(&h.archive(), table);
        assert_eq!(n, i64::from(*table == "archive_state"), "{table}");
    }
    // The new file has the current schema, e.g. the fidelity columns.
    let conn = h.db();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('turns') WHERE name = 'attribution_fidelity'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}
