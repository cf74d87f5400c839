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
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
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

mod checkpoint;
mod locks;
mod paged;
mod schema;
mod status;
impl super::ContentTable for SqliteStore {
    fn prunable(&self, cutoff: i64, only: Option<&str>) -> Result<Vec<(String, u64)>> {
        SqliteStore::prunable(self, cutoff, only)
    }

    fn delete_content(&self, session_id: &str) -> Result<()> {
        self.write(|conn| {
            conn.execute("DELETE FROM content WHERE session_id = ?1", [session_id])
                .map(drop)
                .map_err(|e| self.err(e))
        })
    }
}

#[cfg(test)]
mod tests;
mod window;

use checkpoint::{no_checkpoint_on_close, watch_log, Checkpointer, CHECKPOINT_FRAMES};
use locks::RowGuard;
pub use locks::{AssumedHeld, DetachedRow};
pub use paged::SharedRecords;
use paged::{records, rows};
use schema::{table, Table, MIGRATIONS};
pub use status::SqliteStatus;
use window::Window;

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
    local: super::LocalClaims,
    window: Mutex<Window>,
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Frames in the log after this handle's last commit (SQLite's WAL
    /// hook); declared after `conn`, which points at it, so it outlives it.
    log_frames: Arc<AtomicI64>,
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
            local: super::LocalClaims::default(),
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
            let params = t.row(id.hex(), fp.map(|fp| fp.hex()), r)?;
            rows.push((fp, params));
        }
        let sql = t.insert_sql();
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

    /// [`Store::query_records`] for a caller that keeps the cursor past
    /// a borrow of the store (the Node addon's query cursors).
    pub fn query_shared(self: &Arc<Self>, kind: Kind, q: &Query) -> Result<SharedRecords<'static>> {
        records(Arc::clone(self), kind, q)
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

/// A JavaScript value bound as `node:sqlite` binds it: strings as text
/// (a lone surrogate becomes U+FFFD), numbers as doubles (column affinity
/// then stores an integral one as an integer), `null`/absent as NULL.
fn bind(v: Option<&Value>, column: &str) -> Result<SqlValue> {
    Ok(match v {
        None | Some(Value::Null) => SqlValue::Null,
        Some(Value::Number(n)) => SqlValue::Real(*n),
        Some(Value::String(s)) => SqlValue::Text(s.to_lossy().into_owned()),
        Some(other) => {
            return Err(Error::invalid(
                column,
                format!(
                    "{column}: {} cannot be bound to a SQLite parameter",
                    other.to_json()
                ),
            ))
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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
            .ok_or_else(|| Error::invalid("selector", "stamp has no selector"))?;
        let enrichment = line
            .get("enrichment")
            .ok_or_else(|| Error::invalid("enrichment", "stamp has no enrichment"))?;
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
                    .ok_or_else(|| Error::Internal("no relationship table".into()))?;
                let id = crate::writer::id_of(Kind::Relationship, 0, &r)?;
                Some((t.insert_sql(), t.row(id.hex(), None, &r)?))
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
            let t = table(kind).ok_or_else(|| Error::Internal("no table".into()))?;
            let rows = rows(self, t, &Query::default())?;
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
        super::table_prune_candidates(self, older_than)
    }

    fn prune_content(
        &self,
        older_than: Duration,
        is_recoverable: Option<IsRecoverable<'_>>,
    ) -> Result<PruneResult> {
        super::prune_table_content(self, older_than, is_recoverable)
    }

    fn as_sqlite(&self) -> Option<&SqliteStore> {
        Some(self)
    }

    fn with_lock_dyn(&self, name: &str, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let key = (self.path.clone(), name.to_string());
        if HELD.with(|h| h.borrow().contains(&key)) {
            return f();
        }
        let _claim = self.local.claim(name);
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
