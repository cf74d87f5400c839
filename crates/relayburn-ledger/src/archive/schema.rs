//! The archive's tables and indexes, and opening (with migration).
//!
//! Table shapes, column order, types, defaults, primary keys and index
//! names are those of the reference's `archive.ts`, so that either
//! implementation can open the other's archive. Columns that the
//! reference adds with `ALTER TABLE` after the fact are listed here as
//! [`ADDITIVE_COLUMNS`]; a fresh archive gets them the same way, so that
//! `PRAGMA table_info` is identical column for column.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, IoContext, Result};

use super::read::{header_problem, Unavailable};

/// `archive_state.archive_version` this code reads and writes.
pub const ARCHIVE_VERSION: i64 = 3;

/// The bucket of stamps that are not tied to one session (and the source
/// of every stamp row).
pub const STAMP_WILDCARD: &str = "*";

/// Every table of the archive.
pub const TABLES: &[&str] = &[
    "sessions",
    "turns",
    "tool_calls",
    "tool_result_events",
    "stamps",
    "compactions",
    "archive_state",
];

/// Tables in creation order, without their secondary indexes.
const CREATE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
  source              TEXT NOT NULL,
  session_id          TEXT NOT NULL,
  project             TEXT,
  project_key         TEXT,
  started_at          TEXT,
  ended_at            TEXT,
  turn_count          INTEGER NOT NULL DEFAULT 0,
  model_set_json      TEXT,
  workflow_id         TEXT,
  agent_id            TEXT,
  parent_agent_id     TEXT,
  has_subagent        INTEGER NOT NULL DEFAULT 0,
  min_fidelity        TEXT,
  has_full_attribution INTEGER,
  PRIMARY KEY (source, session_id)
)",
    "CREATE TABLE IF NOT EXISTS turns (
  source                TEXT NOT NULL,
  session_id            TEXT NOT NULL,
  message_id            TEXT NOT NULL,
  turn_index            INTEGER NOT NULL,
  ts                    TEXT NOT NULL,
  model                 TEXT NOT NULL,
  project               TEXT,
  project_key           TEXT,
  activity              TEXT,
  stop_reason           TEXT,
  has_edits             INTEGER,
  retries               INTEGER,
  is_sidechain          INTEGER,
  subagent_id           TEXT,
  parent_subagent_id    TEXT,
  parent_tool_use_id    TEXT,
  subagent_type         TEXT,
  subagent_description  TEXT,
  input_tokens          INTEGER NOT NULL DEFAULT 0,
  output_tokens         INTEGER NOT NULL DEFAULT 0,
  reasoning_tokens      INTEGER NOT NULL DEFAULT 0,
  cache_read_tokens     INTEGER NOT NULL DEFAULT 0,
  cache_create_5m_tokens INTEGER NOT NULL DEFAULT 0,
  cache_create_1h_tokens INTEGER NOT NULL DEFAULT 0,
  workflow_id           TEXT,
  agent_id              TEXT,
  persona               TEXT,
  tier                  TEXT,
  enrichment_json       TEXT,
  attribution_fidelity  TEXT,
  tokens_present        INTEGER,
  cost_present          INTEGER,
  PRIMARY KEY (source, session_id, message_id)
)",
    "CREATE TABLE IF NOT EXISTS tool_calls (
  source         TEXT NOT NULL,
  session_id     TEXT NOT NULL,
  message_id     TEXT NOT NULL,
  call_index     INTEGER NOT NULL,
  tool_use_id    TEXT,
  tool_name      TEXT NOT NULL,
  target         TEXT,
  args_hash      TEXT,
  is_error       INTEGER,
  PRIMARY KEY (source, session_id, message_id, call_index)
)",
    "CREATE TABLE IF NOT EXISTS tool_result_events (
  source              TEXT NOT NULL,
  session_id          TEXT NOT NULL,
  message_id          TEXT NOT NULL,
  tool_use_id         TEXT NOT NULL,
  call_index          INTEGER NOT NULL,
  event_index         INTEGER NOT NULL,
  status              TEXT,
  content_length      INTEGER,
  content_hash        TEXT,
  is_error            INTEGER,
  subagent_session_id TEXT,
  agent_id            TEXT,
  event_source        TEXT,
  ts                  TEXT,
  PRIMARY KEY (source, session_id, message_id, tool_use_id, event_index)
)",
    "CREATE TABLE IF NOT EXISTS stamps (
  source                TEXT NOT NULL,
  session_id            TEXT NOT NULL,
  ts                    TEXT NOT NULL,
  selector_json         TEXT,
  enrichment_json       TEXT NOT NULL,
  ledger_offset_bytes   INTEGER NOT NULL,
  PRIMARY KEY (source, session_id, ts, ledger_offset_bytes)
)",
    "CREATE TABLE IF NOT EXISTS compactions (
  source                TEXT NOT NULL,
  session_id            TEXT NOT NULL,
  ts                    TEXT NOT NULL,
  preceding_message_id  TEXT,
  tokens_before_compact INTEGER,
  PRIMARY KEY (source, session_id, ts)
)",
    "CREATE TABLE IF NOT EXISTS archive_state (
  id                    INTEGER PRIMARY KEY CHECK (id = 1),
  ledger_offset_bytes   INTEGER NOT NULL DEFAULT 0,
  ledger_mtime_ms       INTEGER NOT NULL DEFAULT 0,
  archive_version       INTEGER NOT NULL,
  last_built_at         TEXT,
  last_rebuild_at       TEXT
)",
];

/// Secondary indexes in the order the reference creates them (per table
/// this order is what `PRAGMA index_list` reflects).
const CREATE_INDEXES: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_sessions_started_at ON sessions(started_at)",
    "CREATE INDEX IF NOT EXISTS idx_sessions_project_key ON sessions(project_key)",
    "CREATE INDEX IF NOT EXISTS idx_sessions_workflow_id ON sessions(workflow_id)",
    "CREATE INDEX IF NOT EXISTS idx_turns_ts ON turns(ts)",
    "CREATE INDEX IF NOT EXISTS idx_turns_session ON turns(source, session_id, turn_index)",
    "CREATE INDEX IF NOT EXISTS idx_turns_model ON turns(model)",
    "CREATE INDEX IF NOT EXISTS idx_turns_activity ON turns(activity)",
    "CREATE INDEX IF NOT EXISTS idx_turns_project_key ON turns(project_key)",
    "CREATE INDEX IF NOT EXISTS idx_turns_workflow ON turns(workflow_id)",
    "CREATE INDEX IF NOT EXISTS idx_tool_calls_name ON tool_calls(tool_name)",
    "CREATE INDEX IF NOT EXISTS idx_tool_calls_use_id ON tool_calls(tool_use_id)",
    "CREATE INDEX IF NOT EXISTS idx_tool_result_events_use_id ON tool_result_events(tool_use_id)",
    "CREATE INDEX IF NOT EXISTS idx_tool_result_events_session ON tool_result_events(source, session_id)",
    "CREATE INDEX IF NOT EXISTS idx_tool_result_events_subagent ON tool_result_events(subagent_session_id)",
    "CREATE INDEX IF NOT EXISTS idx_stamps_session ON stamps(source, session_id)",
];

/// Created after the additive columns exist, since it covers one of them.
const FIDELITY_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS idx_turns_attribution_fidelity ON turns(attribution_fidelity)";

/// Columns added to archives of the same version after the fact:
/// (table, column, declared type). Present in [`CREATE_TABLES`] except the
/// last two, which the reference only ever adds by `ALTER TABLE`.
const ADDITIVE_COLUMNS: &[(&str, &str, &str)] = &[
    ("turns", "attribution_fidelity", "TEXT"),
    ("turns", "tokens_present", "INTEGER"),
    ("turns", "cost_present", "INTEGER"),
    ("turns", "subagent_description", "TEXT"),
    ("sessions", "min_fidelity", "TEXT"),
    ("sessions", "has_full_attribution", "INTEGER"),
    ("tool_calls", "replaced_tools", "TEXT"),
    ("tool_calls", "collapsed_calls", "INTEGER"),
];

pub(crate) fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Create every table and index that is missing, then add missing
/// additive columns and the index over one of them.
pub(crate) fn ensure_schema(conn: &Connection, path: &Path, with_indexes: bool) -> Result<()> {
    let e = sql_err(path);
    for sql in CREATE_TABLES {
        conn.execute_batch(sql).map_err(&e)?;
    }
    if with_indexes {
        create_secondary_indexes(conn, path)?;
    }
    for (table, column, decl) in ADDITIVE_COLUMNS {
        ensure_column(conn, path, table, column, decl)?;
    }
    if with_indexes {
        conn.execute_batch(FIDELITY_INDEX).map_err(&e)?;
    }
    Ok(())
}

/// The secondary indexes, without the fidelity one. A bulk load creates
/// them once the rows are in: one sort each costs less than keeping them
/// up to date row by row.
pub(crate) fn create_secondary_indexes(conn: &Connection, path: &Path) -> Result<()> {
    let e = sql_err(path);
    for sql in CREATE_INDEXES {
        conn.execute_batch(sql).map_err(&e)?;
    }
    Ok(())
}

pub(crate) fn create_fidelity_index(conn: &Connection, path: &Path) -> Result<()> {
    conn.execute_batch(FIDELITY_INDEX).map_err(sql_err(path))
}

fn ensure_column(
    conn: &Connection,
    path: &Path,
    table: &str,
    column: &str,
    decl: &str,
) -> Result<()> {
    let e = sql_err(path);
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(&e)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .map_err(&e)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(&e)?;
    if names.iter().any(|n| n == column) {
        return Ok(());
    }
    conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))
        .map_err(&e)
}

/// Pragmas every connection to the live archive uses.
fn live_pragmas(conn: &Connection, path: &Path) -> Result<()> {
    let e = sql_err(path);
    // WAL: readers never block the builder. `journal_mode` returns a row,
    // so it is read rather than executed.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(&e)?;
    conn.execute_batch("PRAGMA foreign_keys = ON").map_err(&e)?;
    // A reader arriving during a checkpoint waits briefly instead of failing.
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(&e)?;
    Ok(())
}

fn stored_version(conn: &Connection, path: &Path) -> Result<Option<i64>> {
    conn.query_row(
        "SELECT archive_version FROM archive_state WHERE id = 1",
        [],
        |r| r.get::<_, rusqlite::types::Value>(0),
    )
    .optional()
    .map_err(sql_err(path))
    .map(|v| {
        v.map(|v| match v {
            rusqlite::types::Value::Integer(i) => i,
            rusqlite::types::Value::Real(f) => f as i64,
            // A version that is not a number is not ours.
            _ => -1,
        })
    })
}

pub(crate) fn insert_initial_state(conn: &Connection, path: &Path) -> Result<()> {
    conn.execute(
        "INSERT INTO archive_state (id, ledger_offset_bytes, ledger_mtime_ms, archive_version)
         VALUES (1, 0, 0, ?1)",
        [ARCHIVE_VERSION],
    )
    .map(|_| ())
    .map_err(sql_err(path))
}

/// Remove a database file and its journal, WAL and shared-memory files.
pub(crate) fn remove_database_files(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::PathBuf::from(p);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io("remove", &p, err)),
        }
    }
    Ok(())
}

/// Open the archive at `path` to build on it, creating it when missing;
/// an archive of an older version is deleted and recreated, one lacking
/// later additive columns gets them without losing rows. A newer or
/// damaged archive is refused
/// ([`Error::ArchiveUnavailable`]): only a full rebuild replaces it.
pub fn open_archive(path: &Path) -> Result<Connection> {
    open_for_build(path).map(|(conn, _)| conn)
}

/// [`open_archive`], and the version of an older archive it replaced.
pub(crate) fn open_for_build(path: &Path) -> Result<(Connection, Option<i64>)> {
    let refuse = |why| Error::ArchiveUnavailable {
        path: path.to_path_buf(),
        why,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).ctx("create directory", dir)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(refuse(Unavailable::Damaged("not a regular file".into())))
        }
        // An empty file is a database not yet written: built on as new.
        Ok(m) if m.len() > 0 => {
            if let Some(why) = header_problem(path).ctx("read", path)? {
                return Err(refuse(Unavailable::Damaged(why)));
            }
        }
        _ => {}
    }
    let damaged = |e: Error| match e {
        Error::Sqlite { source, .. }
            if matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
            ) =>
        {
            refuse(Unavailable::Damaged(source.to_string()))
        }
        other => other,
    };
    let conn = open_with_pragmas(path).map_err(damaged)?;
    // The version is checked before touching the schema, so that an
    // archive of an older shape is never half-migrated.
    let version = if has_table(&conn, path, "archive_state").map_err(damaged)? {
        stored_version(&conn, path).map_err(damaged)?
    } else {
        None
    };
    match version {
        Some(v) if v > ARCHIVE_VERSION => Err(refuse(Unavailable::Newer { found: v })),
        Some(v) if v != ARCHIVE_VERSION => {
            // Derived state: an archive of an older version is thrown away.
            drop(conn);
            remove_database_files(path)?;
            let conn = open_with_pragmas(path)?;
            ensure_schema(&conn, path, true)?;
            insert_initial_state(&conn, path)?;
            Ok((conn, Some(v)))
        }
        Some(_) => {
            ensure_schema(&conn, path, true).map_err(damaged)?;
            Ok((conn, None))
        }
        None => {
            ensure_schema(&conn, path, true).map_err(damaged)?;
            if stored_version(&conn, path)?.is_none() {
                insert_initial_state(&conn, path)?;
            }
            Ok((conn, None))
        }
    }
}

fn has_table(conn: &Connection, path: &Path, name: &str) -> Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(sql_err(path))
}

fn open_with_pragmas(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(sql_err(path))?;
    live_pragmas(&conn, path)?;
    Ok(conn)
}
