//! The floor loader inserts exactly what a full rebuild writes: every
//! table of its database equals the rebuilt archive's, row for row.

use relayburn_bench::floor;
use relayburn_bench::gen::{generate, GenOptions, StampMix};
use relayburn_ledger::{Ledger, LedgerHome};
use rusqlite::Connection;

const TABLES: &[&str] = &[
    "sessions",
    "turns",
    "tool_calls",
    "tool_result_events",
    "stamps",
    "compactions",
];

fn rows_only_in(conn: &Connection, a: &str, b: &str, table: &str) -> i64 {
    conn.query_row(
        &format!(
            "SELECT COUNT(*) FROM (SELECT * FROM {a}.{table} EXCEPT SELECT * FROM {b}.{table})"
        ),
        [],
        |r| r.get(0),
    )
    .unwrap()
}

fn count(conn: &Connection, db: &str, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {db}.{table}"), [], |r| {
        r.get(0)
    })
    .unwrap()
}

fn assert_same_tables(db: &std::path::Path, other: &std::path::Path) {
    let conn = Connection::open(db).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS other", [other.to_str().unwrap()])
        .unwrap();
    for table in TABLES {
        assert_eq!(
            count(&conn, "main", table),
            count(&conn, "other", table),
            "{table}: row count"
        );
        assert_eq!(rows_only_in(&conn, "main", "other", table), 0, "{table}");
        assert_eq!(rows_only_in(&conn, "other", "main", table), 0, "{table}");
    }
}

fn check(stamps: StampMix) {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    generate(
        dir.path(),
        &GenOptions {
            target_bytes: 3_000_000,
            seed: 7,
            stamps,
            shape: Default::default(),
            overwrite: false,
        },
    )
    .unwrap();
    let built = Ledger::open(home.clone())
        .unwrap()
        .rebuild_archive()
        .unwrap();
    assert!(built.turns_applied > 1000);

    let rows = floor::collect(&home).unwrap();
    let c = rows.counts();
    // Every turn line is replayed, re-appended ones included.
    assert_eq!(c.turn_statements, built.turns_applied);
    assert_eq!(c.event_statements, built.tool_result_events_applied);
    assert_eq!(c.compaction_statements, built.compactions_applied);
    assert_eq!(c.stamp_statements, built.stamps_applied);
    assert!(
        c.tool_call_deletes > 0,
        "the generator re-appends some turns"
    );

    let db = dir.path().join("floor.sqlite");
    let t = floor::load(&rows, &db).unwrap();
    assert!(t.total >= t.inserts);

    let conn = Connection::open(&db).unwrap();
    conn.execute(
        "ATTACH DATABASE ?1 AS rebuilt",
        [home.archive().to_str().unwrap()],
    )
    .unwrap();
    for table in TABLES {
        let n = count(&conn, "main", table);
        assert_eq!(n, count(&conn, "rebuilt", table), "{table}: row count");
        assert_eq!(rows_only_in(&conn, "main", "rebuilt", table), 0, "{table}");
        assert_eq!(rows_only_in(&conn, "rebuilt", "main", table), 0, "{table}");
    }
    assert!(count(&conn, "main", "tool_calls") > 0);
    if stamps != StampMix::None {
        assert!(count(&conn, "main", "stamps") > 0);
    }
    // Same indexes, same definitions.
    let schema = |db: &str| -> Vec<(String, String)> {
        conn.prepare(&format!(
            "SELECT name, sql FROM {db}.sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(schema("main"), schema("rebuilt"));
    drop(conn);

    // Sorted by primary key, ties in ledger order: the same rows.
    let sorted = dir.path().join("floor-pk.sqlite");
    floor::load_with_cache(&rows, &sorted, None, floor::FloorOrder::PrimaryKey).unwrap();
    assert_same_tables(&sorted, &home.archive());
}

#[test]
fn floor_rows_equal_the_rebuilt_archive_without_stamps() {
    check(StampMix::None);
}

#[test]
fn floor_rows_equal_the_rebuilt_archive_with_mixed_stamps() {
    check(StampMix::Mixed);
}

/// The incremental floor applies a tail exactly as an incremental build.
#[test]
fn tail_floor_equals_an_incremental_build() {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    generate(
        dir.path(),
        &GenOptions {
            target_bytes: 3_000_000,
            seed: 11,
            stamps: StampMix::None,
            shape: Default::default(),
            overwrite: false,
        },
    )
    .unwrap();
    let full = std::fs::read(home.ledger()).unwrap();
    let mut cut = full.len() * 9 / 10;
    while full[cut - 1] != b'\n' {
        cut += 1;
    }
    std::fs::write(home.ledger(), &full[..cut]).unwrap();
    let ledger = Ledger::open(home.clone()).unwrap();
    ledger.rebuild_archive().unwrap();
    let base = dir.path().join("base.sqlite");
    std::fs::copy(home.archive(), &base).unwrap();
    std::fs::write(home.ledger(), &full).unwrap();
    let built = ledger.build_archive().unwrap();
    assert!(built.turns_applied > 100);

    let rows = floor::collect_tail(&home, cut as u64).unwrap();
    let c = rows.counts();
    assert_eq!(c.turn_statements, built.turns_applied);
    assert_eq!(c.event_statements, built.tool_result_events_applied);
    assert_eq!(c.stamp_statements, built.stamps_applied);
    let scratch = dir.path().join("tail.sqlite");
    std::fs::copy(&base, &scratch).unwrap();
    floor::load_tail(&rows, &scratch, None).unwrap();
    assert_same_tables(&scratch, &home.archive());
}
