//! The storage seam (SPEC §8): every operation the reference's
//! `StorageAdapter` offers, behind one trait, so callers work the same on
//! file storage (`ledger.jsonl` and its sidecars, [`Ledger`]) and on the
//! SQLite store (`burn.sqlite`, [`SqliteStore`]) and on a PostgreSQL
//! server ([`PostgresStore`]).
//!
//! [`open`] picks the backend a [`Storage`] selection names (see
//! [`crate::Env::storage`]); a backend is added by implementing [`Store`]
//! and naming it there.

pub mod copy;
pub mod postgres;
pub mod sqlite;
pub(crate) mod tables;

use std::time::Duration;

use crate::content::{ContentAppendSummary, IsRecoverable, PruneResult};
use crate::error::{Error, Result};
use crate::home::{Storage, StorageKind};
use crate::json::Value;
use crate::ledger::Ledger;
use crate::query::Query;
use crate::records::{line_kind, Kind};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Records streamed out of a store, in the store's order.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Value>> + 'a>;

/// One storage backend: the reference's `StorageAdapter`, synchronous.
///
/// Appends dedup on the SPEC §4 id hashes; queries apply the §5 filters
/// and fold stamps onto turns; content is kept per session. A store is
/// shared between threads, and other processes (TypeScript ones included)
/// may work on the same data at the same time.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> StorageKind;

    /// Append records of one kind (not stamps); returns how many were new.
    fn append_records(&self, kind: Kind, records: Vec<Value>) -> Result<usize>;

    /// Append a stamp line exactly as given, with the spawn-env
    /// relationship it implies (SPEC §4).
    fn append_stamp(&self, line: &Value) -> Result<()>;

    /// Append content records, each to its session.
    fn append_content(&self, records: Vec<Value>) -> Result<ContentAppendSummary>;

    /// Turns passing `q`, each with its folded `enrichment`.
    fn query_turns(&self, q: &Query) -> Result<Records<'_>>;

    /// Records of `kind` passing `q`; turns come with their enrichment.
    fn query_records(&self, kind: Kind, q: &Query) -> Result<Records<'_>>;

    /// Every record and stamp as a ledger line (`{"v":1,"kind":K,"record":…}`,
    /// stamps as written), in the store's order: the ledger's for file
    /// storage; for SQLite each table in rowid order, then the stamps in
    /// the order they were written.
    fn entries(&self) -> Result<Records<'_>>;

    /// A session's content records, optionally one message's.
    fn read_content(&self, session_id: &str, message_id: Option<&str>) -> Result<Vec<Value>>;

    /// Sessions that hold content, sorted.
    fn list_content_session_ids(&self) -> Result<Vec<String>>;

    /// What [`prune_content`](Store::prune_content) would delete now, as
    /// `(sessionId, size)`, sorted; reads only.
    fn prune_candidates(&self, older_than: Duration) -> Result<Vec<(String, u64)>>;

    /// Delete the content of sessions last written at or before
    /// `now - older_than`, keeping those `is_recoverable` vouches for.
    fn prune_content(
        &self,
        older_than: Duration,
        is_recoverable: Option<IsRecoverable<'_>>,
    ) -> Result<PruneResult>;

    /// Run `f` holding the named cross-process lock (re-entrant per
    /// thread). Use [`with_lock`](trait.Store.html#method.with_lock) for a
    /// typed result.
    fn with_lock_dyn(&self, name: &str, f: &mut dyn FnMut() -> Result<()>) -> Result<()>;

    /// The file ledger behind this store, for what only file storage has
    /// (index files, the archive, rewrites).
    fn as_file(&self) -> Option<&Ledger> {
        None
    }

    /// The SQLite store behind this store, for its status and checks.
    fn as_sqlite(&self) -> Option<&SqliteStore> {
        None
    }

    /// The PostgreSQL store behind this store, for its status.
    fn as_postgres(&self) -> Option<&PostgresStore> {
        None
    }

    /// Record enrichment for the turns `selector` picks, stamped now.
    fn stamp(&self, selector: Value, enrichment: Value) -> Result<Value> {
        let line = crate::writer::stamp_line(selector, enrichment)?;
        self.append_stamp(&line)?;
        Ok(line)
    }

    fn append_turns(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Turn, records)
    }
    fn append_compactions(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Compaction, records)
    }
    fn append_relationships(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Relationship, records)
    }
    fn append_tool_result_events(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::ToolResultEvent, records)
    }
    fn append_user_turns(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::UserTurn, records)
    }
}

impl dyn Store + '_ {
    /// Run `f` holding lock `name`, returning its result.
    pub fn with_lock<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        self.with_lock_dyn(name, &mut || {
            if let Some(f) = f.take() {
                out = Some(f()?);
            }
            Ok(())
        })?;
        out.ok_or_else(|| Error::Internal(format!("lock {name}: the body did not run")))
    }

    /// `what` works on `files` that only file storage keeps.
    pub fn require_file_for(&self, what: &'static str, files: &'static str) -> Result<&Ledger> {
        self.as_file().ok_or(Error::NeedsFileStorage {
            what,
            kind: self.kind().as_str(),
            files,
        })
    }

    /// Archive operations need file storage; the reference's error otherwise.
    pub fn require_file(&self) -> Result<&Ledger> {
        self.as_file()
            .ok_or(Error::ArchiveNeedsFileStorage(self.kind().as_str()))
    }
}

/// Open the backend `storage` selects. `http` is refused as the
/// reference refuses it; `postgres` needs `RELAYBURN_POSTGRES_URL`.
pub fn open(storage: &Storage) -> Result<Box<dyn Store>> {
    open_observed(storage, None)
}

/// [`open`], reporting the waits for a lockfile to `on_lock_wait` (file
/// storage; the SQLite store's locks are rows).
pub fn open_observed(
    storage: &Storage,
    on_lock_wait: Option<crate::lock::WaitObserver>,
) -> Result<Box<dyn Store>> {
    match storage.kind {
        StorageKind::File => {
            let ledger = Ledger::open(storage.home.clone())?;
            Ok(Box::new(match on_lock_wait {
                Some(f) => ledger.on_lock_wait(f),
                None => ledger,
            }))
        }
        StorageKind::Sqlite => Ok(Box::new(SqliteStore::open(&storage.sqlite_path)?)),
        StorageKind::Postgres => match &storage.postgres_url {
            Some(url) => Ok(Box::new(PostgresStore::open(&url.0)?)),
            None => Err(Error::PostgresUrlMissing),
        },
        k @ StorageKind::Http => Err(Error::StorageNotSupported(k.as_str())),
    }
}

impl Store for Ledger {
    fn kind(&self) -> StorageKind {
        StorageKind::File
    }

    fn append_records(&self, kind: Kind, records: Vec<Value>) -> Result<usize> {
        Ledger::append_records(self, kind, records)
    }

    fn append_stamp(&self, line: &Value) -> Result<()> {
        Ledger::append_stamp(self, line)
    }

    fn append_content(&self, records: Vec<Value>) -> Result<ContentAppendSummary> {
        Ledger::append_content(self, records)
    }

    fn query_turns(&self, q: &Query) -> Result<Records<'_>> {
        Ok(Box::new(Ledger::query_turns(self, q)?))
    }

    fn query_records(&self, kind: Kind, q: &Query) -> Result<Records<'_>> {
        Ok(match kind {
            Kind::Turn => Box::new(Ledger::query_turns(self, q)?),
            Kind::Compaction => Box::new(self.query_compactions(q)?),
            Kind::Relationship => Box::new(self.query_relationships(q)?),
            Kind::ToolResultEvent => Box::new(self.query_tool_result_events(q)?),
            Kind::UserTurn => Box::new(self.query_user_turns(q)?),
            Kind::Stamp => return Err(Error::invalid("kind", "stamps are not queried")),
        })
    }

    fn entries(&self) -> Result<Records<'_>> {
        Ok(Box::new(self.lines()?.filter(|l| match l {
            Ok(line) => match line_kind(line) {
                Some(Kind::Stamp) => true,
                Some(_) => line.get("record").is_some_and(|r| r.as_object().is_some()),
                None => false,
            },
            Err(_) => true,
        })))
    }

    fn read_content(&self, session_id: &str, message_id: Option<&str>) -> Result<Vec<Value>> {
        Ledger::read_content(self, session_id, message_id)
    }

    fn list_content_session_ids(&self) -> Result<Vec<String>> {
        Ledger::list_content_session_ids(self)
    }

    fn prune_candidates(&self, older_than: Duration) -> Result<Vec<(String, u64)>> {
        Ledger::prune_candidates(self, older_than)
    }

    fn prune_content(
        &self,
        older_than: Duration,
        is_recoverable: Option<IsRecoverable<'_>>,
    ) -> Result<PruneResult> {
        Ledger::prune_content(self, older_than, is_recoverable)
    }

    fn with_lock_dyn(&self, name: &str, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        Ledger::with_lock(self, name, f)
    }

    fn as_file(&self) -> Option<&Ledger> {
        Some(self)
    }
}

/// What the prune of a store keeping content in a table (SQLite,
/// PostgreSQL) needs of it.
pub(crate) trait ContentTable: Store {
    /// Sessions (or only `only`) whose content rows are all older than
    /// `cutoff` (ms since the epoch), with their bytes.
    fn prunable(&self, cutoff: i64, only: Option<&str>) -> Result<Vec<(String, u64)>>;

    /// Delete a session's content rows.
    fn delete_content(&self, session_id: &str) -> Result<()>;
}

/// `Date.now() - olderThan`, in whole milliseconds as the reference.
fn cutoff(older_than: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    now.saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX))
}

/// Sessions old enough to prune; ids that are not safe file names never are.
pub(crate) fn table_prune_candidates<S: ContentTable>(
    store: &S,
    older_than: Duration,
) -> Result<Vec<(String, u64)>> {
    let mut rows = store.prunable(cutoff(older_than), None)?;
    rows.retain(|(s, _)| crate::home::is_valid_session_id(s));
    Ok(rows)
}

/// The reference's prune over a content table: each candidate session
/// under its `content.<id>` lock, judged again there (a write meanwhile
/// keeps it), kept when `is_recoverable` says so.
pub(crate) fn prune_table_content<S: ContentTable>(
    store: &S,
    older_than: Duration,
    is_recoverable: Option<IsRecoverable<'_>>,
) -> Result<PruneResult> {
    let cutoff = cutoff(older_than);
    let mut result = PruneResult::default();
    for (sid, _) in table_prune_candidates(store, older_than)? {
        let locked: &dyn Store = store;
        let outcome = locked.with_lock(&format!("content.{sid}"), || {
            let Some((_, bytes)) = store.prunable(cutoff, Some(&sid))?.into_iter().next() else {
                return Ok(None);
            };
            if let Some(pred) = is_recoverable {
                if let Ok(true) = pred(&sid) {
                    return Ok(Some(None));
                }
            }
            store.delete_content(&sid)?;
            Ok(Some(Some(bytes)))
        })?;
        result.tally(outcome);
    }
    Ok(result)
}

/// A stored record; unparsable JSON and non-objects are skipped.
pub(crate) fn parse_record(j: &str) -> Option<Value> {
    crate::json::parse(j)
        .ok()
        .filter(|v| v.as_object().is_some())
}

/// A table read a page of `record_json` texts at a time (the SQLite and
/// PostgreSQL stores' paged queries).
pub(crate) trait Pages {
    /// Texts fetched and not yet handed out.
    fn buffered(&mut self) -> &mut std::collections::VecDeque<String>;
    /// Whether the last page has been fetched (or a fetch failed).
    fn exhausted(&self) -> bool;
    fn set_exhausted(&mut self);
    /// Fetch the next page into the buffer, marking the last one.
    fn fetch(&mut self) -> Result<()>;
}

/// The next record of `pages`, fetching as needed; after an error, none.
pub(crate) fn next_record<P: Pages>(pages: &mut P) -> Option<Result<Value>> {
    loop {
        if let Some(j) = pages.buffered().pop_front() {
            match parse_record(&j) {
                Some(v) => return Some(Ok(v)),
                None => continue,
            }
        }
        if pages.exhausted() {
            return None;
        }
        if let Err(e) = pages.fetch() {
            pages.set_exhausted();
            return Some(Err(e));
        }
    }
}

/// Lock names held by threads of one store handle. A second thread of the
/// same handle waits here: the backend's lock (a row, an advisory lock) is
/// per process or per session, so it would not keep that thread out.
#[derive(Debug, Default)]
pub(crate) struct LocalClaims {
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    freed: std::sync::Condvar,
}

impl LocalClaims {
    /// Wait until no other thread holds `name`, then claim it until the
    /// guard drops.
    pub(crate) fn claim(&self, name: &str) -> LocalClaim<'_> {
        self.wait_and_claim(name);
        LocalClaim {
            claims: self,
            name: name.to_string(),
        }
    }

    /// [`LocalClaims::claim`] for a holder that releases with
    /// [`LocalClaims::unclaim`] itself.
    pub(crate) fn wait_and_claim(&self, name: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        while held.contains(name) {
            held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        held.insert(name.to_string());
    }

    pub(crate) fn unclaim(&self, name: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(name);
        self.freed.notify_all();
    }
}

/// A claim of [`LocalClaims::claim`].
pub(crate) struct LocalClaim<'a> {
    claims: &'a LocalClaims,
    name: String,
}

impl Drop for LocalClaim<'_> {
    fn drop(&mut self) {
        self.claims.unclaim(&self.name);
    }
}
