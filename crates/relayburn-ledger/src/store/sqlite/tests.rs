use super::checkpoint::LOG_FRAMES_CAP;
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

/// Checkpoints run once the log reaches `CHECKPOINT_FRAMES`, and reset
/// it past `LOG_FRAMES_CAP` when commits come back to back: the log
/// stays near that cap while far more is written.
#[test]
fn the_log_is_checkpointed_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("burn.sqlite");
    let s = SqliteStore::open(&path).unwrap();
    let page: i64 = s
        .conn()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // The cap plus what commits add while the reset waits for a core on
    // a busy machine (up to twice the cap); without checkpoints the log
    // passes it by batch 150 or so, and 400 batches are written.
    let cap = 3 * LOG_FRAMES_CAP * (page + 24) + 32;
    let wal = dir.path().join("burn.sqlite-wal");
    let filler = "x".repeat(400);
    let (mut written, mut resets, mut last) = (0, 0, 0);
    for b in 0..400 {
        let turns = (0..100)
            .map(|i| {
                let n = b * 100 + i;
                crate::json::parse(&format!(
                    r#"{{"v":1,"source":"codex","sessionId":"s{b}","messageId":"m{n}","turnIndex":{i},"ts":"2026-01-01T00:00:00.000Z","model":"{filler}","usage":{{"input":{n},"output":1,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[]}}"#
                ))
                .unwrap()
            })
            .collect();
        written += s.append_turns(turns).unwrap();
        let frames = s.log_frames.load(Ordering::Relaxed);
        resets += usize::from(frames < last);
        last = frames;
        let len = std::fs::metadata(&wal).unwrap().len() as i64;
        assert!(len <= cap, "log of {len} bytes after batch {b} (cap {cap})");
    }
    assert_eq!(written, 40_000);
    assert!(resets >= 2, "the log started over {resets} times");
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
