//! The SQLite storage backend (SPEC §8): one `burn.sqlite` holding every
//! record kind, stamps, content and named locks, interoperable with the
//! reference's `SqliteAdapter` on the same file.
//!
//! Writes: one `BEGIN IMMEDIATE` transaction per call, `INSERT OR IGNORE`
//! on the id hash, so dedup holds across processes by the primary key.
//! Turns also skip a content fingerprint among the last 10,000 `turns`
//! rows by rowid, read inside the transaction. `record_json` is the
//! record as `JSON.stringify` writes it ([`Value::to_json`]).
//!
//! Reads: rows in rowid order, stamps folded in `ORDER BY ts, seq` order.
//! A query by session walks the `(source, session_id)` index once per
//! source instead of the whole table, then restores rowid order.
//!
//! Locks: a row of `locks` per held name, taken under `BEGIN IMMEDIATE`,
//! broken when older than the stale window, retried with the §3 budget.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, OptionalExtension};

use super::{Records, Store};
use crate::content::{ContentAppendSummary, IsRecoverable, PruneResult};
use crate::error::{Error, Result};
use crate::home::{is_valid_session_id, StorageKind};
use crate::index::{turn_fingerprint, Hash16, Hash16Set, CONTENT_WINDOW};
use crate::json::{self, Object, Value};
use crate::lock::LockOptions;
use crate::query::{enrich_turn, passes, Filters, Query, Stamps};
use crate::records::{wrap_record, Kind};
use crate::writer::spawn_env_relationship;

/// The schema version this build writes (`schema_state.version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How long the closing checkpoint waits for other processes' readers
/// and writers before it leaves the log for them to copy.
const CLOSE_CHECKPOINT_WAIT_MS: u64 = 100;

/// `PRAGMA busy_timeout`: how long a writer waits for another's
/// transaction before `SQLITE_BUSY`.
pub const BUSY_TIMEOUT_MS: u64 = 30_000;

/// Page cache per connection, KiB.
const CACHE_KIB: u32 = 64 * 1024;

/// Migration 1. `sqlite_master` keeps each statement's text, so the
/// layout here is the reference's, space for space.
const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS schema_state (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL
);

INSERT OR IGNORE INTO schema_state (id, version) VALUES (1, 1);

CREATE TABLE IF NOT EXISTS locks (
  name           TEXT PRIMARY KEY,
  acquired_at_ms INTEGER NOT NULL,
  pid            INTEGER
);

CREATE TABLE IF NOT EXISTS turns (
  id_hash      TEXT PRIMARY KEY,
  content_fp   TEXT NOT NULL,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  turn_index   INTEGER NOT NULL,
  ts           TEXT NOT NULL,
  project      TEXT,
  project_key  TEXT,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_turns_session ON turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_turns_ts ON turns(ts);
CREATE INDEX IF NOT EXISTS idx_turns_session_index ON turns(source, session_id, turn_index);
CREATE INDEX IF NOT EXISTS idx_turns_project_key ON turns(project_key);

CREATE TABLE IF NOT EXISTS compactions (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_compactions_session ON compactions(source, session_id);
CREATE INDEX IF NOT EXISTS idx_compactions_ts ON compactions(ts);

CREATE TABLE IF NOT EXISTS relationships (
  id_hash             TEXT PRIMARY KEY,
  source              TEXT NOT NULL,
  session_id          TEXT NOT NULL,
  related_session_id  TEXT,
  ts                  TEXT,
  record_json         TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_relationships_session ON relationships(source, session_id);
CREATE INDEX IF NOT EXISTS idx_relationships_related ON relationships(related_session_id);

CREATE TABLE IF NOT EXISTS tool_result_events (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_tool_result_events_session ON tool_result_events(source, session_id);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_ts ON tool_result_events(ts);

CREATE TABLE IF NOT EXISTS user_turns (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_user_turns_session ON user_turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_user_turns_ts ON user_turns(ts);

CREATE TABLE IF NOT EXISTS stamps (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  ts              TEXT NOT NULL,
  selector_json   TEXT NOT NULL,
  enrichment_json TEXT NOT NULL,
  session_id      TEXT,
  message_id      TEXT
);

CREATE INDEX IF NOT EXISTS idx_stamps_session ON stamps(session_id);
CREATE INDEX IF NOT EXISTS idx_stamps_message ON stamps(message_id);
CREATE INDEX IF NOT EXISTS idx_stamps_ts ON stamps(ts);

CREATE TABLE IF NOT EXISTS content (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  content_fp   TEXT NOT NULL,
  record_json  TEXT NOT NULL,
  mtime_ms     INTEGER NOT NULL,
  UNIQUE (session_id, content_fp)
);

CREATE INDEX IF NOT EXISTS idx_content_session ON content(session_id);
CREATE INDEX IF NOT EXISTS idx_content_session_message ON content(session_id, message_id);
CREATE INDEX IF NOT EXISTS idx_content_mtime ON content(mtime_ms);
";

/// Every migration, in order: `(version, sql)`.
const MIGRATIONS: &[(i64, &str)] = &[(1, MIGRATION_1)];

/// The record table of a kind and the columns copied out of the record
/// (after `id_hash` and, for turns, `content_fp`).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
    /// Has a `(source, session_id)` index and a `sessionId`-only filter.
    by_session: bool,
}

fn table(kind: Kind) -> Option<Table> {
    const SST: &[(&str, &str)] = &[
        ("source", "source"),
        ("session_id", "sessionId"),
        ("ts", "ts"),
    ];
    Some(match kind {
        Kind::Turn => Table {
            name: "turns",
            columns: &[
                ("source", "source"),
                ("session_id", "sessionId"),
                ("message_id", "messageId"),
                ("turn_index", "turnIndex"),
                ("ts", "ts"),
                ("project", "project"),
                ("project_key", "projectKey"),
            ],
            by_session: true,
        },
        Kind::Compaction => Table {
            name: "compactions",
            columns: SST,
            by_session: true,
        },
        Kind::Relationship => Table {
            name: "relationships",
            columns: &[
                ("source", "source"),
                ("session_id", "sessionId"),
                ("related_session_id", "relatedSessionId"),
                ("ts", "ts"),
            ],
            // `sessionId` also matches `relatedSessionId`.
            by_session: false,
        },
        Kind::ToolResultEvent => Table {
            name: "tool_result_events",
            columns: SST,
            by_session: true,
        },
        Kind::UserTurn => Table {
            name: "user_turns",
            columns: SST,
            by_session: true,
        },
        Kind::Stamp => return None,
    })
}

impl Table {
    fn insert_sql(&self, with_fp: bool) -> String {
        let mut cols = vec!["id_hash"];
        if with_fp {
            cols.push("content_fp");
        }
        cols.extend(self.columns.iter().map(|(c, _)| *c));
        cols.push("record_json");
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT OR IGNORE INTO {} ({}) VALUES ({marks})",
            self.name,
            cols.join(", ")
        )
    }
}

thread_local! {
    /// `(store path, lock name)` held by this thread (re-entrancy).
    static HELD: RefCell<HashSet<(PathBuf, String)>> = RefCell::new(HashSet::new());
}

/// Rows fetched per step of a streaming query.
const PAGE: i64 = 512;

/// An open `burn.sqlite`.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    options: LockOptions,
    /// Lock names held by a thread of this handle: other threads wait here
    /// rather than take each other's row for an orphan.
    local: Mutex<HashSet<String>>,
    local_freed: Condvar,
    window: Mutex<Window>,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Frames in the log after this handle's last commit (SQLite's WAL
    /// hook); declared after `conn`, which points at it, so it outlives it.
    log_frames: Arc<AtomicI64>,
}

/// Log size, in frames (pages), at which a commit wakes the checkpoint
/// thread: SQLite's own automatic checkpoint threshold. Checkpointing after
/// every commit instead would copy and sync the same hot index pages once
/// per append call.
const CHECKPOINT_FRAMES: i64 = 1000;

/// Log size at which the checkpoint thread makes writers wait until the
/// log is copied and starts over.
const LOG_FRAMES_CAP: i64 = 4 * CHECKPOINT_FRAMES;

/// SQLite's WAL hook: runs on the committing thread after each commit of
/// the connection it is registered on.
extern "C" fn note_log_frames(
    frames_out: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _schema: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: `frames_out` is the `AtomicI64` of the store's `log_frames`,
    // registered in `watch_log` and alive as long as the connection is.
    let out = unsafe { &*(frames_out as *const AtomicI64) };
    out.store(i64::from(frames), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
}

/// Register `note_log_frames` on `conn`, writing into `out`.
fn watch_log(conn: &Connection, out: &Arc<AtomicI64>) {
    // SAFETY: the handle is `conn`'s own, used on this thread while we hold
    // it; the pointer handed over stays valid for the connection's life
    // (see `SqliteStore::log_frames`), and the hook only stores into it.
    unsafe {
        rusqlite::ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(note_log_frames),
            Arc::as_ptr(out) as *mut std::ffi::c_void,
        );
    }
}

/// Checkpoints the WAL from a thread of its own, so an append call does
/// not pay for copying the log into the database (SQLite's automatic
/// checkpoint, off on our connection, would run inside the committing
/// call). Other processes keep their own automatic checkpoints.
struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// `None` when the thread or its connection cannot be had; SQLite then
    /// checkpoints when the last connection closes, and a checkpoint of
    /// another connection (a reference process) still applies.
    fn start(path: &Path, log_frames: Arc<AtomicI64>) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .ok()?;
        no_checkpoint_on_close(&conn).ok()?;
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("burn-sqlite-checkpoint".into())
            .spawn(move || {
                // A busy or failed checkpoint is simply tried again after
                // the next commit.
                while rx.recv().is_ok() {
                    // Back to back commits outrun a passive checkpoint (the
                    // log starts over only when a transaction begins with
                    // every frame copied): past the cap, writers wait while
                    // the log is copied and reset.
                    let mode = if log_frames.load(Ordering::Relaxed) >= LOG_FRAMES_CAP {
                        "RESTART"
                    } else {
                        "PASSIVE"
                    };
                    let _ =
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
                }
                // The store is closing: copy the rest and empty the log, so
                // the file alone holds every commit and the next first
                // opener has nothing to recover. A writer of another
                // process gets priority: a busy log is left as it is.
                let _ = conn.busy_timeout(Duration::from_millis(CLOSE_CHECKPOINT_WAIT_MS));
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .ok()?;
        Some(Checkpointer {
            wake: Some(tx),
            thread: Some(thread),
        })
    }

    fn poke(&self) {
        if let Some(tx) = &self.wake {
            // Full means a checkpoint is already due: nothing to add.
            let _ = tx.try_send(());
        }
    }
}

/// SQLite's last connection to close checkpoints while holding the
/// database file's exclusive lock, and the reference sets `busy_timeout`
/// only after its first statement (`PRAGMA journal_mode`), so a reference
/// process opening at that moment fails with "database is locked". Our
/// connections leave that checkpoint out: the checkpoint thread copies the
/// log after commits and empties it as the store closes, neither of which
/// takes a lock on the database file that an opening reader waits on.
fn no_checkpoint_on_close(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map(|_| ())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Open (creating and migrating as needed) the store at `path`, with
    /// the reference's lock timings.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with_lock_options(path, LockOptions::default())
    }

    /// Open with other named-lock timings (tests shrink them).
    pub fn open_with_lock_options(path: &Path, options: LockOptions) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        let sql = |e| Error::Store {
            path: path.to_path_buf(),
            source: e,
        };
        let conn = Connection::open(path).map_err(sql)?;
        // WAL lets readers go on while a writer holds BEGIN IMMEDIATE; the
        // busy timeout turns a concurrent writer into a wait.
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .map_err(sql)?;
        // The page cache is this connection's alone (not a property of the
        // file): larger than SQLite's 2 MiB default so the upper levels of
        // the id, session and time indexes stay in memory between calls.
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}; PRAGMA cache_size = -{CACHE_KIB}; PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(sql)?;
        let store = SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            options,
            local: Mutex::new(HashSet::new()),
            local_freed: Condvar::new(),
            window: Mutex::new(Window::default()),
            checkpointer: Mutex::new(None),
            log_frames: Arc::new(AtomicI64::new(0)),
        };
        store.migrate()?;
        let checkpointer = Checkpointer::start(path, Arc::clone(&store.log_frames));
        {
            let conn = store.conn();
            match checkpointer {
                Some(_) => {
                    no_checkpoint_on_close(&conn).map_err(sql)?;
                    watch_log(&conn, &store.log_frames);
                }
                // Without the thread, SQLite's own checkpoints stay on.
                None => conn
                    .execute_batch("PRAGMA wal_autocheckpoint = 1000;")
                    .map_err(sql)?,
            }
        }
        *store.checkpointer.lock().unwrap_or_else(|p| p.into_inner()) = checkpointer;
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            source: e,
        }
    }

    /// The connection; one left mid-transaction by a panic is rolled back.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        let g = match self.conn.lock() {
            Ok(g) => g,
            Err(p) => {
                self.conn.clear_poison();
                p.into_inner()
            }
        };
        if !g.is_autocommit() {
            let _ = g.execute_batch("ROLLBACK");
        }
        g
    }

    fn migrate(&self) -> Result<()> {
        let conn = self.conn();
        // No `schema_state` yet: a new file, version 0.
        let on_disk: i64 = conn
            .query_row("SELECT version FROM schema_state WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .unwrap_or(None)
            .unwrap_or(0);
        if on_disk > SCHEMA_VERSION {
            return Err(Error::StoreSchemaTooNew {
                found: on_disk,
                known: SCHEMA_VERSION,
            });
        }
        for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > on_disk) {
            let step = || -> rusqlite::Result<()> {
                conn.execute_batch(sql)?;
                conn.execute(
                    "INSERT INTO schema_state (id, version) VALUES (1, ?1) \
                     ON CONFLICT(id) DO UPDATE SET version = excluded.version",
                    [version],
                )?;
                Ok(())
            };
            transaction(&conn, |_| step().map_err(|e| self.err(e)), |e| self.err(e))?;
        }
        Ok(())
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.conn();
        let out = transaction(&conn, f, |e| self.err(e));
        drop(conn);
        if out.is_ok() && self.log_frames.load(Ordering::Relaxed) >= CHECKPOINT_FRAMES {
            if let Some(c) = self
                .checkpointer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                c.poke();
            }
        }
        out
    }

    fn append_kind(&self, kind: Kind, records: Vec<Value>) -> Result<usize> {
        let Some(t) = table(kind) else {
            return Err(Error::invalid(
                "kind",
                "stamps are appended with stamp() or append_stamp()",
            ));
        };
        if records.is_empty() {
            return Ok(0);
        }
        // Hashes first: a record that cannot be hashed fails the whole
        // call before anything is written, as the reference's throw does.
        let mut rows = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let fp = match kind {
                Kind::Turn => Some(turn_fingerprint(r).map_err(|e| {
                    Error::invalid(
                        format!("records[{i}]"),
                        format!("{} record {i}: {e}", kind.as_str()),
                    )
                })?),
                _ => None,
            };
            let id = crate::writer::id_of(kind, i, r)?;
            let mut params = vec![SqlValue::Text(id.hex())];
            if let Some(fp) = fp {
                params.push(SqlValue::Text(fp.hex()));
            }
            for (col, field) in t.columns {
                params.push(bind(r.get(field), col)?);
            }
            params.push(SqlValue::Text(r.to_json()));
            rows.push((fp, params));
        }
        let sql = t.insert_sql(kind == Kind::Turn);
        self.write(|conn| {
            let window = match kind {
                Kind::Turn => self
                    .window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refresh(conn)
                    .map_err(|e| self.err(e))?,
                _ => Hash16Set::default(),
            };
            let mut insert = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
            let mut added = 0;
            for (fp, params) in rows {
                if fp.is_some_and(|fp| window.contains(&fp)) {
                    continue;
                }
                added += insert
                    .execute(rusqlite::params_from_iter(params))
                    .map_err(|e| self.err(e))?;
            }
            Ok(added)
        })
    }

    fn stamps(&self) -> Result<Stamps> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT selector_json, enrichment_json FROM stamps ORDER BY ts, seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((text(r.get_ref(0)?), text(r.get_ref(1)?))))
            .map_err(|e| self.err(e))?;
        let mut found = Vec::new();
        for row in rows {
            let (sel, enr) = row.map_err(|e| self.err(e))?;
            // Unparsable JSON reads as `{}`, as in the reference.
            let selector = json::parse(&sel).unwrap_or_else(|_| Value::Object(Object::new()));
            let enrichment = json::parse(&enr)
                .ok()
                .and_then(Value::into_object)
                .unwrap_or_default();
            found.push((selector, enrichment));
        }
        Ok(Stamps::from_ordered(found))
    }

    /// Every stamp as its ledger line, in the order written (`seq`).
    fn stamp_lines(&self) -> Result<Vec<Value>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT ts, selector_json, enrichment_json FROM stamps ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    text(r.get_ref(0)?),
                    text(r.get_ref(1)?),
                    text(r.get_ref(2)?),
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (ts, sel, enr) = row.map_err(|e| self.err(e))?;
            let empty = || Value::Object(Object::new());
            out.push(crate::records::obj([
                ("v", Value::Number(1.0)),
                ("kind", Value::str("stamp")),
                ("ts", Value::str(&ts)),
                ("selector", json::parse(&sel).unwrap_or_else(|_| empty())),
                ("enrichment", json::parse(&enr).unwrap_or_else(|_| empty())),
            ]));
        }
        Ok(out)
    }

    /// Records of `t` in rowid order: paged over the whole table, or,
    /// for a session, through the `(source, session_id)` index.
    /// `record_json` of a session's rows, in rowid order. Sources are
    /// found by seeking the index from one distinct value to the next.
    fn session_rows(&self, table: &str, sid: &str, source: Option<&str>) -> Result<Vec<String>> {
        let conn = self.conn();
        let e = |e| self.err(e);
        let mut sources = Vec::new();
        match source {
            Some(s) => sources.push(s.to_string()),
            None => {
                let mut next = conn
                    .prepare_cached(&format!(
                        "SELECT source FROM {table} WHERE source > ?1 ORDER BY source LIMIT 1"
                    ))
                    .map_err(e)?;
                let mut first = conn
                    .prepare_cached(&format!("SELECT min(source) FROM {table}"))
                    .map_err(e)?;
                let mut cur: Option<String> = first
                    .query_row([], |r| r.get::<_, Option<String>>(0))
                    .map_err(e)?;
                while let Some(s) = cur {
                    cur = next.query_row([&s], |r| r.get(0)).optional().map_err(e)?;
                    sources.push(s);
                }
            }
        }
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT rowid, record_json FROM {table} WHERE source = ?1 AND session_id = ?2"
            ))
            .map_err(e)?;
        let mut rows: Vec<(i64, String)> = Vec::new();
        for s in &sources {
            let found = stmt
                .query_map(params![s, sid], |r| Ok((r.get(0)?, text(r.get_ref(1)?))))
                .map_err(e)?;
            for row in found {
                rows.push(row.map_err(e)?);
            }
        }
        rows.sort_unstable_by_key(|r| r.0);
        Ok(rows.into_iter().map(|r| r.1).collect())
    }

    /// Take the row of lock `name`, waiting out a live holder.
    fn acquire_row(&self, name: &str) -> Result<i64> {
        let o = &self.options;
        let total = o.fast_retries + o.slow_retries;
        for attempt in 0..total {
            if let Some(at) = self.try_acquire_row(name)? {
                return Ok(at);
            }
            std::thread::sleep(if attempt < o.fast_retries {
                o.fast_retry_delay
            } else {
                o.slow_retry_delay
            });
        }
        let budget = o.fast_retry_delay * o.fast_retries + o.slow_retry_delay * o.slow_retries;
        Err(Error::StoreLockTimeout {
            name: name.to_string(),
            attempts: total,
            budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// One attempt: `Some(acquired_at_ms)` when the row is ours.
    fn try_acquire_row(&self, name: &str) -> Result<Option<i64>> {
        let now = now_ms();
        let stale = i64::try_from(self.options.stale.as_millis()).unwrap_or(i64::MAX);
        let pid = i64::from(std::process::id());
        let r = self.write(|conn| {
            let held: Option<i64> = conn
                .query_row(
                    "SELECT acquired_at_ms FROM locks WHERE name = ?1",
                    [name],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
                .map_err(|e| self.err(e))?
                .map(|at| at.unwrap_or(0));
            if let Some(at) = held {
                if now.saturating_sub(at) < stale {
                    return Ok(None);
                }
                // An orphan: its holder crashed or stalled past the window.
                conn.execute("DELETE FROM locks WHERE name = ?1", [name])
                    .map_err(|e| self.err(e))?;
            }
            conn.execute(
                "INSERT INTO locks (name, acquired_at_ms, pid) VALUES (?1, ?2, ?3)",
                params![name, now, pid],
            )
            .map_err(|e| self.err(e))?;
            Ok(Some(now))
        });
        match r {
            Err(Error::Store {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            }) if f.code == rusqlite::ErrorCode::ConstraintViolation => Ok(None),
            other => other,
        }
    }

    /// Delete our row; one a stale-break gave to another holder is left.
    fn release_row(&self, name: &str, acquired_at: i64) {
        let conn = self.conn();
        let _ = conn.execute(
            "DELETE FROM locks WHERE name = ?1 AND acquired_at_ms = ?2 AND pid = ?3",
            params![name, acquired_at, i64::from(std::process::id())],
        );
    }

    /// Wait until no other thread of this handle holds `name`, then claim it.
    fn claim_local(&self, name: &str) -> LocalClaim<'_> {
        self.wait_and_claim(name);
        LocalClaim {
            store: self,
            name: name.to_string(),
        }
    }

    fn wait_and_claim(&self, name: &str) {
        let mut held = self.local.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(name) {
            held = self
                .local_freed
                .wait(held)
                .unwrap_or_else(|p| p.into_inner());
        }
        held.insert(name.to_string());
    }

    fn unclaim(&self, name: &str) {
        let mut held = self.local.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(name);
        self.local_freed.notify_all();
    }

    /// [`Store::query_records`] for a caller that keeps the cursor past
    /// a borrow of the store (the Node addon's query cursors).
    pub fn query_shared(self: &Arc<Self>, kind: Kind, q: &Query) -> Result<SharedRecords<'static>> {
        records(Arc::clone(self), kind, q)
    }

    /// Take lock `name` for a holder that is not a closure on one thread
    /// (a JavaScript `withLock` whose body awaits): the same row protocol
    /// and in-process queue as [`Store::with_lock`], held until the
    /// returned guard is dropped.
    pub fn acquire_detached(self: &Arc<Self>, name: &str) -> Result<DetachedRow> {
        self.wait_and_claim(name);
        match self.acquire_row(name) {
            Ok(acquired_at) => Ok(DetachedRow {
                store: Arc::clone(self),
                name: name.to_string(),
                acquired_at,
            }),
            Err(e) => {
                self.unclaim(name);
                Err(e)
            }
        }
    }

    /// Count `names` as held by the calling thread until the guard drops,
    /// so library calls made on behalf of a detached holder re-enter its
    /// locks instead of waiting for them.
    pub fn assume_held(&self, names: &[String]) -> AssumedHeld {
        let keys: Vec<(PathBuf, String)> = names
            .iter()
            .map(|n| (self.path.clone(), n.clone()))
            .filter(|k| HELD.with(|h| h.borrow_mut().insert(k.clone())))
            .collect();
        AssumedHeld { keys }
    }

    fn content_rows(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| Ok(text(r.get_ref(0)?)))
            .map_err(|e| self.err(e))?;
        rows.map(|r| r.map_err(|e| self.err(e))).collect()
    }

    /// `(sessionId, max mtime, size)` of sessions whose last content write
    /// is at or before `cutoff`; size is `SUM(LENGTH(record_json))`.
    fn prunable(&self, cutoff: i64, only: Option<&str>) -> Result<Vec<(String, u64)>> {
        let conn = self.conn();
        let sql = match only {
            None => {
                "SELECT session_id, SUM(LENGTH(record_json)) FROM content \
                     GROUP BY session_id HAVING MAX(mtime_ms) <= ?1 ORDER BY session_id"
            }
            Some(_) => {
                "SELECT session_id, SUM(LENGTH(record_json)) FROM content \
                        WHERE session_id = ?2 GROUP BY session_id HAVING MAX(mtime_ms) <= ?1"
            }
        };
        let mut stmt = conn.prepare_cached(sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| {
            Ok((
                text(r.get_ref(0)?),
                u64::try_from(r.get::<_, Option<i64>>(1)?.unwrap_or(0)).unwrap_or(0),
            ))
        };
        let rows = match only {
            None => stmt.query_map(params![cutoff], map),
            Some(sid) => stmt.query_map(params![cutoff, sid], map),
        }
        .map_err(|e| self.err(e))?;
        rows.map(|r| r.map_err(|e| self.err(e))).collect()
    }
}

/// What `burn state status` reports for a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStatus {
    pub path: PathBuf,
    /// Bytes of the store file and its `-wal`.
    pub bytes: u64,
    pub schema_version: i64,
    /// Rows per table, in schema order (`turns`, …, `stamps`, `content`).
    pub rows: Vec<(&'static str, u64)>,
    /// Distinct sessions holding content.
    pub content_sessions: u64,
    /// `(name, age ms, pid)` of every lock row.
    pub locks: Vec<(String, i64, Option<i64>)>,
}

impl SqliteStatus {
    pub fn to_value(&self) -> Value {
        let mut rows = Object::new();
        for (t, n) in &self.rows {
            rows.insert(*t, Value::Number(*n as f64));
        }
        let locks = self
            .locks
            .iter()
            .map(|(n, age, pid)| {
                crate::records::obj([
                    ("name", Value::str(n)),
                    ("ageMs", Value::Number(*age as f64)),
                    ("pid", pid.map_or(Value::Null, |p| Value::Number(p as f64))),
                ])
            })
            .collect();
        crate::records::obj([
            ("storage", Value::str("sqlite")),
            ("path", Value::str(&self.path.to_string_lossy())),
            ("bytes", Value::Number(self.bytes as f64)),
            ("schemaVersion", Value::Number(self.schema_version as f64)),
            ("rows", Value::Object(rows)),
            (
                "contentSessions",
                Value::Number(self.content_sessions as f64),
            ),
            ("locks", Value::Array(locks)),
        ])
    }
}

/// Tables counted by [`SqliteStore::status`].
const COUNTED: [&str; 7] = [
    "turns",
    "compactions",
    "relationships",
    "tool_result_events",
    "user_turns",
    "stamps",
    "content",
];

impl SqliteStore {
    /// Sizes, row counts and lock rows; reads only.
    pub fn status(&self) -> Result<SqliteStatus> {
        let conn = self.conn();
        let e = |e| self.err(e);
        let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(e);
        let mut rows = Vec::new();
        for t in COUNTED {
            let n = one(&format!("SELECT count(*) FROM {t}"))?;
            rows.push((t, u64::try_from(n).unwrap_or(0)));
        }
        let now = now_ms();
        let mut stmt = conn
            .prepare("SELECT name, acquired_at_ms, pid FROM locks ORDER BY name")
            .map_err(e)?;
        let locks = stmt
            .query_map([], |r| {
                Ok((
                    text(r.get_ref(0)?),
                    now.saturating_sub(r.get::<_, Option<i64>>(1)?.unwrap_or(0)),
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(SqliteStatus {
            path: self.path.clone(),
            bytes: size(&self.path) + size(Path::new(&wal)),
            schema_version: one("SELECT version FROM schema_state WHERE id = 1")?,
            rows,
            content_sessions: u64::try_from(one("SELECT count(DISTINCT session_id) FROM content")?)
                .unwrap_or(0),
            locks,
        })
    }

    /// Problems found: SQLite's `integrity_check` and lock rows older than
    /// the stale window. Reads only.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok(text(r.get_ref(0)?)))
                .map_err(|e| self.err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .filter(|r| r != "ok")
                .map(|r| format!("integrity: {r}"))
                .collect()
        };
        let stale = i64::try_from(self.options.stale.as_millis()).unwrap_or(i64::MAX);
        for (name, age, pid) in self.status()?.locks {
            if age >= stale {
                problems.push(format!(
                    "lock row {name:?} is {age} ms old (pid {}): the next acquirer breaks it",
                    pid.map_or("unknown".to_string(), |p| p.to_string())
                ));
            }
        }
        Ok(problems)
    }
}

/// Run `f` in a `BEGIN IMMEDIATE` transaction on `conn`: committed when it
/// succeeds, rolled back when it (or the commit) fails.
fn transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
    err: impl Fn(rusqlite::Error) -> Error,
) -> Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(&err)?;
    let out = f(conn).and_then(|v| conn.execute_batch("COMMIT").map_err(&err).map(|()| v));
    if out.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out
}

/// The content fingerprints of the last [`CONTENT_WINDOW`] turns by
/// rowid, kept between calls so an append reads only the rows written
/// since (by anyone) instead of the whole window.
///
/// Turns are only ever inserted (by either implementation), and a new row
/// gets a rowid above every existing one, so the rows past the last one
/// seen are exactly what changed. The last row seen is checked each time;
/// if it is gone or differs (the store was replaced), the window is read
/// again in full, as the reference reads it on every call.
#[derive(Debug, Default)]
struct Window {
    rows: VecDeque<(i64, Option<Hash16>)>,
}

impl Window {
    /// Bring the window up to date; must run inside the write transaction.
    fn refresh(&mut self, conn: &Connection) -> rusqlite::Result<Hash16Set> {
        let valid = match self.rows.back() {
            None => false,
            Some(&(rowid, fp)) => conn
                .prepare_cached("SELECT content_fp FROM turns WHERE rowid = ?1")?
                .query_row([rowid], |r| Ok(Hash16::parse_hex(&text(r.get_ref(0)?))))
                .optional()?
                .is_some_and(|now| now == fp),
        };
        if valid {
            let after = self.rows.back().map_or(i64::MIN, |r| r.0);
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, content_fp FROM turns WHERE rowid > ?1 ORDER BY rowid",
            )?;
            let fresh = stmt.query_map([after], |r| {
                Ok((r.get::<_, i64>(0)?, Hash16::parse_hex(&text(r.get_ref(1)?))))
            })?;
            for row in fresh {
                self.rows.push_back(row?);
            }
            while self.rows.len() > CONTENT_WINDOW {
                self.rows.pop_front();
            }
        } else {
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, content_fp FROM turns ORDER BY rowid DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([CONTENT_WINDOW as i64], |r| {
                Ok((r.get::<_, i64>(0)?, Hash16::parse_hex(&text(r.get_ref(1)?))))
            })?;
            let mut fresh = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            fresh.reverse();
            self.rows = fresh.into();
        }
        // A value that is not 16 hex digits matches no fingerprint of ours.
        Ok(self.rows.iter().filter_map(|r| r.1).collect())
    }
}

/// A JavaScript value bound as `node:sqlite` binds it: strings as text
/// (a lone surrogate becomes U+FFFD), numbers as doubles (column affinity
/// then stores an integral one as an integer), `null`/absent as NULL.
fn bind(v: Option<&Value>, column: &str) -> Result<SqlValue> {
    Ok(match v {
        None | Some(Value::Null) => SqlValue::Null,
        Some(Value::Number(n)) => SqlValue::Real(*n),
        Some(Value::String(s)) => SqlValue::Text(s.to_lossy().into_owned()),
        Some(other) => {
            return Err(Error::InvalidInput(format!(
                "{column}: {} cannot be bound to a SQLite parameter",
                other.to_json()
            )))
        }
    })
}

/// A text column as a string; other storage classes as their text form.
fn text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => json::format_number(f),
        ValueRef::Null => String::new(),
    }
}

/// A stored record; unparsable JSON and non-objects are skipped.
fn parse_record(j: &str) -> Option<Value> {
    json::parse(j).ok().filter(|v| v.as_object().is_some())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Records streamed out of the store, owning or borrowing it (`S`).
pub type SharedRecords<'a> = Box<dyn Iterator<Item = Result<Value>> + Send + 'a>;

/// The records of `kind` passing `q`, turns with their stamps folded.
fn records<'a, S>(store: S, kind: Kind, q: &Query) -> Result<SharedRecords<'a>>
where
    S: Deref<Target = SqliteStore> + Send + 'a,
{
    let t = table(kind).ok_or_else(|| Error::InvalidInput("stamps are not queried".into()))?;
    let filters = Filters::new(q);
    if kind == Kind::Turn {
        let stamps = store.stamps()?;
        let rows = rows(store, &t, q)?;
        return Ok(Box::new(rows.filter_map(move |r| match r {
            Ok(rec) => enrich_turn(rec, &stamps, &filters).map(Ok),
            Err(e) => Some(Err(e)),
        })));
    }
    let rows = rows(store, &t, q)?;
    Ok(Box::new(rows.filter(move |r| match r {
        Ok(rec) => passes(kind, rec, &filters),
        Err(_) => true,
    })))
}

/// A table's records in rowid order: one session's through its index,
/// all of them a page at a time.
fn rows<'a, S>(store: S, t: &Table, q: &Query) -> Result<SharedRecords<'a>>
where
    S: Deref<Target = SqliteStore> + Send + 'a,
{
    let session = q.session_id.as_deref().filter(|s| !s.is_empty());
    if let (true, Some(sid)) = (t.by_session, session) {
        let source = q.source.as_deref().filter(|s| !s.is_empty());
        let rows = store.session_rows(t.name, sid, source)?;
        return Ok(Box::new(
            rows.into_iter().filter_map(|j| parse_record(&j)).map(Ok),
        ));
    }
    Ok(Box::new(Paged {
        store,
        sql: format!(
            "SELECT rowid, record_json FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT {PAGE}",
            t.name
        ),
        after: i64::MIN,
        buf: VecDeque::new(),
        done: false,
    }))
}

/// Rows of a table in rowid order, a page at a time, so a query holds
/// neither the table in memory nor the connection between pages.
struct Paged<S> {
    store: S,
    sql: String,
    after: i64,
    buf: VecDeque<String>,
    done: bool,
}

impl<S: Deref<Target = SqliteStore>> Paged<S> {
    fn fill(&mut self) -> Result<()> {
        let conn = self.store.conn();
        let mut stmt = conn
            .prepare_cached(&self.sql)
            .map_err(|e| self.store.err(e))?;
        let rows = stmt
            .query_map([self.after], |r| {
                Ok((r.get::<_, i64>(0)?, text(r.get_ref(1)?)))
            })
            .map_err(|e| self.store.err(e))?;
        let mut n = 0;
        for row in rows {
            let (rowid, j) = row.map_err(|e| self.store.err(e))?;
            self.after = rowid;
            self.buf.push_back(j);
            n += 1;
        }
        self.done = n < PAGE;
        Ok(())
    }
}

impl<S: Deref<Target = SqliteStore>> Iterator for Paged<S> {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        loop {
            if let Some(j) = self.buf.pop_front() {
                match parse_record(&j) {
                    Some(v) => return Some(Ok(v)),
                    None => continue,
                }
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// This handle's in-process claim on a lock name.
struct LocalClaim<'a> {
    store: &'a SqliteStore,
    name: String,
}

impl Drop for LocalClaim<'_> {
    fn drop(&mut self) {
        self.store.unclaim(&self.name);
    }
}

/// A lock taken by [`SqliteStore::acquire_detached`]; dropping it deletes
/// the row and lets the next holder of this process in.
#[derive(Debug)]
pub struct DetachedRow {
    store: Arc<SqliteStore>,
    name: String,
    acquired_at: i64,
}

impl Drop for DetachedRow {
    fn drop(&mut self) {
        self.store.release_row(&self.name, self.acquired_at);
        self.store.unclaim(&self.name);
    }
}

/// Marks of [`SqliteStore::assume_held`]; removes only the ones it added.
#[derive(Debug)]
pub struct AssumedHeld {
    keys: Vec<(PathBuf, String)>,
}

impl Drop for AssumedHeld {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            for k in &self.keys {
                h.remove(k);
            }
        });
    }
}

/// The lock row and this thread's re-entrancy mark; dropped (also on a
/// panic in the body) it releases both.
struct RowGuard<'a> {
    store: &'a SqliteStore,
    name: String,
    acquired_at: i64,
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        HELD.with(|h| {
            h.borrow_mut()
                .remove(&(self.store.path.clone(), self.name.clone()))
        });
        self.store.release_row(&self.name, self.acquired_at);
    }
}

impl Store for SqliteStore {
    fn kind(&self) -> StorageKind {
        StorageKind::Sqlite
    }

    fn append_records(&self, kind: Kind, records: Vec<Value>) -> Result<usize> {
        self.append_kind(kind, records)
    }

    fn append_stamp(&self, line: &Value) -> Result<()> {
        let selector = line
            .get("selector")
            .ok_or_else(|| Error::InvalidInput("stamp has no selector".into()))?;
        let enrichment = line
            .get("enrichment")
            .ok_or_else(|| Error::InvalidInput("stamp has no enrichment".into()))?;
        let stamp = [
            bind(line.get("ts"), "ts")?,
            SqlValue::Text(selector.to_json()),
            SqlValue::Text(enrichment.to_json()),
            bind(selector.get("sessionId"), "session_id")?,
            bind(selector.get("messageId"), "message_id")?,
        ];
        let rel = match spawn_env_relationship(line) {
            Some(r) => {
                let t = table(Kind::Relationship)
                    .ok_or_else(|| Error::InvalidInput("no relationship table".into()))?;
                let id = crate::writer::id_of(Kind::Relationship, 0, &r)?;
                let mut p = vec![SqlValue::Text(id.hex())];
                for (col, field) in t.columns {
                    p.push(bind(r.get(field), col)?);
                }
                p.push(SqlValue::Text(r.to_json()));
                Some((t.insert_sql(false), p))
            }
            None => None,
        };
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO stamps (ts, selector_json, enrichment_json, session_id, message_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(stamp)))
            .map_err(|e| self.err(e))?;
            if let Some((sql, p)) = rel {
                conn.prepare_cached(&sql)
                    .and_then(|mut s| s.execute(rusqlite::params_from_iter(p)))
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })
    }

    fn append_content(&self, records: Vec<Value>) -> Result<ContentAppendSummary> {
        let mut summary = ContentAppendSummary::default();
        let mut rows = Vec::new();
        for r in &records {
            let Some(sid) = summary.session_of(r) else {
                continue;
            };
            let j = r.to_json();
            rows.push([
                bind(r.get("source"), "source")?,
                SqlValue::Text(sid.to_string()),
                bind(r.get("messageId"), "message_id")?,
                bind(r.get("ts"), "ts")?,
                SqlValue::Text(Hash16::of(&j).hex()),
                SqlValue::Text(j),
            ]);
        }
        if rows.is_empty() {
            return Ok(summary);
        }
        let now = now_ms();
        let total = rows.len();
        let added = self.write(|conn| {
            let mut insert = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO content (source, session_id, message_id, ts, \
                     content_fp, record_json, mtime_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| self.err(e))?;
            let mut added = 0;
            for [a, b, c, d, e, f] in rows {
                added += insert
                    .execute(params![a, b, c, d, e, f, now])
                    .map_err(|e| self.err(e))?;
            }
            Ok(added)
        })?;
        summary.appended = added;
        summary.duplicates = total - added;
        Ok(summary)
    }

    fn query_turns(&self, q: &Query) -> Result<Records<'_>> {
        self.query_records(Kind::Turn, q)
    }

    fn query_records(&self, kind: Kind, q: &Query) -> Result<Records<'_>> {
        Ok(records(self, kind, q)?)
    }

    fn entries(&self) -> Result<Records<'_>> {
        let mut parts: Vec<Records<'_>> = Vec::new();
        for kind in [
            Kind::Turn,
            Kind::Compaction,
            Kind::Relationship,
            Kind::ToolResultEvent,
            Kind::UserTurn,
        ] {
            let t = table(kind).ok_or_else(|| Error::InvalidInput("no table".into()))?;
            let rows = rows(self, &t, &Query::default())?;
            parts.push(Box::new(
                rows.map(move |r| r.map(|rec| wrap_record(kind, rec))),
            ));
        }
        parts.push(Box::new(self.stamp_lines()?.into_iter().map(Ok)));
        Ok(Box::new(parts.into_iter().flatten()))
    }

    fn read_content(&self, session_id: &str, message_id: Option<&str>) -> Result<Vec<Value>> {
        let rows = match message_id {
            Some(m) => self.content_rows(
                "SELECT record_json FROM content WHERE session_id = ?1 AND message_id = ?2 \
                 ORDER BY seq",
                &[&session_id, &m],
            )?,
            None => self.content_rows(
                "SELECT record_json FROM content WHERE session_id = ?1 ORDER BY seq",
                &[&session_id],
            )?,
        };
        Ok(rows.iter().filter_map(|j| json::parse(j).ok()).collect())
    }

    fn list_content_session_ids(&self) -> Result<Vec<String>> {
        let mut ids = self.content_rows(
            "SELECT DISTINCT session_id FROM content ORDER BY session_id",
            &[],
        )?;
        ids.retain(|s| is_valid_session_id(s));
        Ok(ids)
    }

    fn prune_candidates(&self, older_than: Duration) -> Result<Vec<(String, u64)>> {
        let mut rows = self.prunable(cutoff(older_than), None)?;
        rows.retain(|(s, _)| is_valid_session_id(s));
        Ok(rows)
    }

    fn prune_content(
        &self,
        older_than: Duration,
        is_recoverable: Option<IsRecoverable<'_>>,
    ) -> Result<PruneResult> {
        let cutoff = cutoff(older_than);
        let mut result = PruneResult::default();
        for (sid, _) in self.prune_candidates(older_than)? {
            let store: &dyn Store = self;
            let outcome = store.with_lock(&format!("content.{sid}"), || {
                // Judged again under the lock: a write meanwhile keeps it.
                let Some((_, bytes)) = self.prunable(cutoff, Some(&sid))?.into_iter().next() else {
                    return Ok(None);
                };
                if let Some(pred) = is_recoverable {
                    if let Ok(true) = pred(&sid) {
                        return Ok(Some(None));
                    }
                }
                self.write(|conn| {
                    conn.execute("DELETE FROM content WHERE session_id = ?1", [&sid])
                        .map_err(|e| self.err(e))
                })?;
                Ok(Some(Some(bytes)))
            })?;
            result.tally(outcome);
        }
        Ok(result)
    }

    fn as_sqlite(&self) -> Option<&SqliteStore> {
        Some(self)
    }

    fn with_lock_dyn(&self, name: &str, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let key = (self.path.clone(), name.to_string());
        if HELD.with(|h| h.borrow().contains(&key)) {
            return f();
        }
        let _claim = self.claim_local(name);
        let acquired_at = self.acquire_row(name)?;
        HELD.with(|h| h.borrow_mut().insert(key));
        let _row = RowGuard {
            store: self,
            name: name.to_string(),
            acquired_at,
        };
        f()
    }
}

/// `Date.now() - olderThan`, in whole milliseconds as the reference.
fn cutoff(older_than: Duration) -> i64 {
    now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
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
        // The cap plus what commits add while the reset waits its turn on
        // a busy machine; without checkpoints the log passes it by batch
        // 120 or so.
        let cap = 2 * LOG_FRAMES_CAP * (page + 24) + 32;
        let wal = dir.path().join("burn.sqlite-wal");
        let filler = "x".repeat(400);
        let (mut written, mut resets, mut last) = (0, 0, 0);
        for b in 0..200 {
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
        assert_eq!(written, 20_000);
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
}
