use super::*;

#[test]
fn a_newer_schema_is_refused_with_an_upgrade_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burn.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute("UPDATE schema_state SET version = 7", [])
        .unwrap();
    drop(conn);
    let e = SqliteStore::open(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        "sqlite store is at schema version 7 but this build only knows up to 1; \
         please upgrade @relayburn/ledger"
    );
}

/// Closing leaves the log empty but in place: SQLite's close-time
/// checkpoint (which deletes the log under an exclusive lock on the
/// database file) did not run, and the database file alone, read
/// without the log, holds every row.
#[test]
fn closing_empties_the_log_without_the_exclusive_close_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burn.sqlite");
    let s = SqliteStore::open(&path).unwrap();
    let turns = (0..300)
        .map(|i| {
            crate::json::parse(&format!(
                r#"{{"v":1,"source":"codex","sessionId":"s","messageId":"m{i}","turnIndex":{i},"ts":"2026-01-01T00:00:00.000Z","model":"gpt","usage":{{"input":{i},"output":1,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[]}}"#
            ))
            .unwrap()
        })
        .collect();
    s.append_turns(turns).unwrap();
    let wal = dir.path().join("burn.sqlite-wal");
    assert!(wal.exists());
    drop(s);
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).ok(), Some(0));
    let uri = format!("file:{}?immutable=1", path.display());
    let ro = Connection::open_with_flags(
        uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let n: i64 = ro
        .query_row("SELECT count(*) FROM turns", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 300);
}

#[test]
fn an_unmigrated_file_is_migrated_and_reopening_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/burn.sqlite");
    let s = SqliteStore::open(&path).unwrap();
    let rec = json::parse(r#"{"source":"x","sessionId":"s","ts":"t"}"#).unwrap();
    assert_eq!(s.append_records(Kind::Compaction, vec![rec]).unwrap(), 1);
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    let conn = s.conn();
    let v: i64 = conn
        .query_row("SELECT version FROM schema_state", [], |r| r.get(0))
        .unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM compactions", [], |r| r.get(0))
        .unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!((v, n, mode.as_str()), (1, 1, "wal"));
}

#[test]
fn values_bind_as_node_sqlite_binds_them() {
    assert_eq!(bind(None, "c").unwrap(), SqlValue::Null);
    assert_eq!(
        bind(Some(&Value::Number(2.0)), "c").unwrap(),
        SqlValue::Real(2.0)
    );
    assert!(bind(Some(&Value::Bool(true)), "c").is_err());
    assert!(bind(Some(&json::parse("{}").unwrap()), "c").is_err());
}
