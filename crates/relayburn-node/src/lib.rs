//! The Node addon behind `@relayburn/ledger-native`.
//!
//! Deliberately thin: `index.js` gives the reference's API its shape, and
//! this layer only moves JSON text across the boundary and runs library
//! calls off the JavaScript thread. Records arrive as the text of the
//! caller's `JSON.stringify` and leave as text for `JSON.parse`, so
//! numbers, key order and lone surrogates are what JavaScript would have
//! (the library's `json` module keeps JavaScript's semantics).
//!
//! Every blocking call runs on a worker thread of ours and settles a
//! promise. Not on the libuv pool: a lock wait can last seconds, and a few
//! of them would starve the very callbacks that hold the lock.
//!
//! Locks held by a JavaScript `withLock` belong to an async context, not to
//! a thread: they are taken as [`DetachedLock`]s, and every call names the
//! locks its context holds (`held`) so nested library calls re-enter them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use napi::{Env, JsObject};
use napi_derive::napi;
use relayburn_ledger::archive::query as archive_query;
use relayburn_ledger::content::IsRecoverable;
use relayburn_ledger::json::{self, Object};
use relayburn_ledger::lock::DetachedLock;
use relayburn_ledger::state::Retention;
use relayburn_ledger::store::Store;
use relayburn_ledger::{
    Env as LedgerEnv, Error, Kind, Ledger, LedgerHome, Query, Result, SqliteStore, Value,
};

type Cursor = Box<dyn Iterator<Item = Result<Value>> + Send>;

/// A map from small ids to state that outlives one call.
struct Registry<T> {
    next: AtomicU32,
    items: OnceLock<Mutex<HashMap<u32, T>>>,
}

impl<T> Registry<T> {
    const fn new() -> Self {
        Registry {
            next: AtomicU32::new(1),
            items: OnceLock::new(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<u32, T>> {
        let m = self.items.get_or_init(|| Mutex::new(HashMap::new()));
        // A panic elsewhere cannot leave a half-updated map: every update
        // is a single insert or remove.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, item: T) -> u32 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.map().insert(id, item);
        id
    }

    fn take(&self, id: u32) -> Option<T> {
        self.map().remove(&id)
    }
}

static LEDGERS: OnceLock<Mutex<HashMap<String, Arc<Ledger>>>> = OnceLock::new();
static CURSORS: Registry<Cursor> = Registry::new();
static LOCKS: Registry<HeldLock> = Registry::new();

fn ledgers() -> MutexGuard<'static, HashMap<String, Arc<Ledger>>> {
    let m = LEDGERS.get_or_init(|| Mutex::new(HashMap::new()));
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One handle per home for the life of the process, so its dedup memory
/// lasts as the reference's module-level cache does.
fn ledger(home: &str) -> Result<Arc<Ledger>> {
    if let Some(l) = ledgers().get(home) {
        return Ok(Arc::clone(l));
    }
    let l = Arc::new(Ledger::open(LedgerHome::new(home))?);
    Ok(Arc::clone(ledgers().entry(home.to_string()).or_insert(l)))
}

static SQLITE_STORES: OnceLock<Mutex<HashMap<String, Arc<SqliteStore>>>> = OnceLock::new();

/// One SQLite store per file for the life of the process, as the
/// reference keeps one adapter (and one connection) per process.
fn sqlite_store(path: &str) -> Result<Arc<SqliteStore>> {
    let stores = SQLITE_STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut stores = stores.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = stores.get(path) {
        return Ok(Arc::clone(s));
    }
    let s = Arc::new(SqliteStore::open(std::path::Path::new(path))?);
    stores.insert(path.to_string(), Arc::clone(&s));
    Ok(s)
}

/// Forget the SQLite stores opened so far (tests that choose the storage
/// again); a store still used by a cursor or a held lock closes after it.
#[napi]
pub fn close_sqlite_stores() {
    if let Some(stores) = SQLITE_STORES.get() {
        stores.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The storage a call goes to, as `index.js` selected it from
/// `RELAYBURN_STORAGE` (once per process, as the reference does): file
/// storage in `home`, or the SQLite store at `sqlitePath`.
#[napi(object)]
pub struct Target {
    pub home: String,
    pub storage: String,
    pub sqlite_path: Option<String>,
}

/// An opened [`Target`].
enum Handle {
    File(Arc<Ledger>),
    Sqlite(Arc<SqliteStore>),
}

impl Handle {
    fn open(t: &Target) -> Result<Handle> {
        match (t.storage.as_str(), &t.sqlite_path) {
            ("file", _) => Ok(Handle::File(ledger(&t.home)?)),
            ("sqlite", Some(path)) => Ok(Handle::Sqlite(sqlite_store(path)?)),
            (other, _) => Err(Error::invalid(
                "storage",
                format!("{other:?} is not a storage this addon opens"),
            )),
        }
    }

    fn store(&self) -> &dyn Store {
        match self {
            Handle::File(l) => l.as_ref(),
            Handle::Sqlite(s) => s.as_ref(),
        }
    }
}

/// [`spawn`] with the store `target` names, the caller's locks counted as
/// held for the duration of the job.
fn spawn_in(
    env: &Env,
    target: Target,
    held: Vec<String>,
    job: impl FnOnce(&Handle) -> Result<Value> + Send + 'static,
) -> napi::Result<JsObject> {
    spawn(env, move || {
        let handle = Handle::open(&target)?;
        let out = match &handle {
            Handle::File(l) => {
                let _assumed = l.locks().assume_held(&held);
                job(&handle)
            }
            Handle::Sqlite(s) => {
                let _assumed = s.assume_held(&held);
                job(&handle)
            }
        };
        out.map(|v| v.to_json())
    })
}

type Work = Box<dyn FnOnce() + Send>;

/// Senders of the worker threads waiting for work.
static IDLE: Mutex<Vec<mpsc::Sender<Work>>> = Mutex::new(Vec::new());

/// How long a worker waits for more work before it exits.
const IDLE_WORKER: Duration = Duration::from_secs(30);

/// Run `work` on an idle worker thread, or on a new one when all are busy
/// (a worker may wait seconds on a lock, so the pool is never full). Warm
/// threads save a thread start per call.
fn submit(mut work: Work) -> std::io::Result<()> {
    loop {
        let idle = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(tx) = idle else { break };
        match tx.send(work) {
            Ok(()) => return Ok(()),
            // That worker timed out meanwhile: try the next.
            Err(mpsc::SendError(w)) => work = w,
        }
    }
    std::thread::Builder::new()
        .name("relayburn-node".into())
        .spawn(move || {
            let mut work = work;
            loop {
                work();
                let (tx, rx) = mpsc::channel();
                IDLE.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                match rx.recv_timeout(IDLE_WORKER) {
                    Ok(w) => work = w,
                    Err(_) => return,
                }
            }
        })
        .map(drop)
}

/// Run `job` off the JavaScript thread; the promise resolves to its JSON text.
fn spawn(
    env: &Env,
    job: impl FnOnce() -> Result<String> + Send + 'static,
) -> napi::Result<JsObject> {
    let (deferred, promise) = env.create_deferred()?;
    submit(Box::new(move || {
        // A panic must still settle the promise, or the caller waits forever.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            Ok(Ok(text)) => deferred.resolve(move |_| Ok(text)),
            Ok(Err(e)) => deferred.reject(napi::Error::from_reason(e.to_string())),
            Err(_) => deferred.reject(napi::Error::from_reason(
                "internal error in the relayburn addon (a panic; see stderr)",
            )),
        }
    }))
    .map_err(|e| napi::Error::from_reason(format!("start a worker thread: {e}")))?;
    Ok(promise)
}

/// [`spawn`] with the ledger of `home`, the caller's locks counted as held.
fn spawn_on(
    env: &Env,
    home: String,
    held: Vec<String>,
    job: impl FnOnce(&Ledger) -> Result<Value> + Send + 'static,
) -> napi::Result<JsObject> {
    spawn(env, move || {
        let ledger = ledger(&home)?;
        let _assumed = ledger.locks().assume_held(&held);
        job(&ledger).map(|v| v.to_json())
    })
}

fn parse(text: &str, what: &str) -> Result<Value> {
    json::parse(text).map_err(|e| Error::InvalidInput(format!("{what}: {e}")))
}

fn parse_array(text: &str, what: &str) -> Result<Vec<Value>> {
    parse(text, what)?
        .into_array()
        .ok_or_else(|| Error::InvalidInput(format!("{what} must be an array")))
}

fn parse_object(text: &str, what: &str) -> Result<Object> {
    parse(text, what)?
        .into_object()
        .ok_or_else(|| Error::InvalidInput(format!("{what} must be an object")))
}

fn query(text: &str) -> Result<Query> {
    Ok(Query::from_json(&parse(text, "query")?))
}

fn strings(items: impl IntoIterator<Item = String>) -> Value {
    Value::Array(items.into_iter().map(|s| Value::str(&s)).collect())
}

/// Append records of `kind` (a line kind, or `content` for the content
/// sidecars); resolves to the warnings the reference prints.
#[napi]
pub fn append(
    env: Env,
    target: Target,
    kind: String,
    records: String,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_in(&env, target, held, move |h| {
        let records = parse_array(&records, "records")?;
        if kind == "content" {
            return Ok(strings(h.store().append_content(records)?.warnings()));
        }
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && *k != Kind::Stamp)
            .ok_or_else(|| Error::InvalidInput(format!("unknown record kind {kind:?}")))?;
        h.store().append_records(kind, records)?;
        Ok(Value::Array(Vec::new()))
    })
}

#[napi]
pub fn stamp(
    env: Env,
    target: Target,
    selector: String,
    enrichment: String,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_in(&env, target, held, move |h| {
        h.store().stamp(
            parse(&selector, "selector")?,
            parse(&enrichment, "enrichment")?,
        )?;
        Ok(Value::Null)
    })
}

/// Append a whole stamp line, its `ts` included (the storage layer's
/// entry point; replaying recorded scripts needs it).
#[napi]
pub fn append_stamp_line(
    env: Env,
    target: Target,
    line: String,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_in(&env, target, held, move |h| {
        h.store().append_stamp(&parse(&line, "stamp line")?)?;
        Ok(Value::Null)
    })
}

/// Start a ledger query of `kind`; resolves to a cursor id for
/// [`next_batch`].
#[napi]
pub fn open_query(env: Env, target: Target, kind: String, q: String) -> napi::Result<JsObject> {
    spawn_in(&env, target, Vec::new(), move |h| {
        let q = query(&q)?;
        let record_kind = match kind.as_str() {
            "turns" => Kind::Turn,
            "compactions" => Kind::Compaction,
            "relationships" => Kind::Relationship,
            "toolResultEvents" => Kind::ToolResultEvent,
            "userTurns" => Kind::UserTurn,
            other => return Err(Error::InvalidInput(format!("unknown query kind {other:?}"))),
        };
        let cursor: Cursor = match h {
            Handle::Sqlite(s) => s.query_shared(record_kind, &q)?,
            Handle::File(l) => match record_kind {
                Kind::Turn => Box::new(l.query_turns(&q)?),
                Kind::Compaction => Box::new(l.query_compactions(&q)?),
                Kind::Relationship => Box::new(l.query_relationships(&q)?),
                Kind::ToolResultEvent => Box::new(l.query_tool_result_events(&q)?),
                _ => Box::new(l.query_user_turns(&q)?),
            },
        };
        Ok(Value::Number(f64::from(CURSORS.put(cursor))))
    })
}

/// The next records of a cursor as a JSON array of about `max_bytes` of
/// text; an empty array when it is exhausted (the cursor is then gone).
#[napi]
pub fn next_batch(env: Env, cursor: u32, max_bytes: u32) -> napi::Result<JsObject> {
    spawn(&env, move || {
        let Some(mut it) = CURSORS.take(cursor) else {
            return Ok("[]".into());
        };
        let mut out = String::from("[");
        let mut first = true;
        while out.len() < max_bytes as usize {
            match it.next() {
                None => {
                    out.push(']');
                    return Ok(out);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(v)) => {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    v.write_json(&mut out);
                }
            }
        }
        out.push(']');
        CURSORS.map().insert(cursor, it);
        Ok(out)
    })
}

/// Drop a cursor the caller stopped reading.
#[napi]
pub fn close_query(cursor: u32) {
    drop(CURSORS.take(cursor));
}

#[napi]
pub fn rebuild_index(env: Env, home: String, held: Vec<String>) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, |l| Ok(l.rebuild_index()?.to_json()))
}

/// Forget the dedup memory of every home, as a new process would start.
#[napi]
pub fn invalidate_index_cache() {
    for l in ledgers().values() {
        l.invalidate_index_cache();
    }
}

#[napi]
pub fn build_archive(env: Env, home: String, held: Vec<String>) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, |l| Ok(l.build_archive()?.to_value()))
}

#[napi]
pub fn rebuild_archive(env: Env, home: String, held: Vec<String>) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, |l| Ok(l.rebuild_archive()?.to_value()))
}

#[napi]
pub fn vacuum_archive(env: Env, home: String, held: Vec<String>) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, |l| Ok(l.vacuum_archive()?.to_value()))
}

#[napi]
pub fn archive_status(env: Env, home: String) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), |l| {
        Ok(l.archive_status()?.to_value())
    })
}

#[napi]
pub fn archive_available(env: Env, home: String) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), |l| {
        Ok(Value::Bool(archive_query::archive_available(l.home())))
    })
}

/// Turns from the archive; `with_fidelity` selects `queryAllFromArchive`.
#[napi]
pub fn query_archive(
    env: Env,
    home: String,
    q: String,
    with_fidelity: bool,
) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), move |l| {
        let q = query(&q)?;
        let rows = if with_fidelity {
            archive_query::query_all_from_archive(l.home(), &q)?
        } else {
            archive_query::query_turns_from_archive(l.home(), &q)?
        };
        Ok(Value::Array(rows))
    })
}

#[napi]
pub fn read_content(
    env: Env,
    target: Target,
    session_id: String,
    message_id: Option<String>,
) -> napi::Result<JsObject> {
    spawn_in(&env, target, Vec::new(), move |h| {
        Ok(Value::Array(
            h.store().read_content(&session_id, message_id.as_deref())?,
        ))
    })
}

#[napi]
pub fn list_content_session_ids(env: Env, target: Target) -> napi::Result<JsObject> {
    spawn_in(&env, target, Vec::new(), |h| {
        Ok(strings(h.store().list_content_session_ids()?))
    })
}

/// Negative ages count as zero; an infinite one prunes nothing.
fn age(older_than_ms: f64) -> Duration {
    Duration::try_from_secs_f64(older_than_ms.max(0.0) / 1000.0).unwrap_or(Duration::MAX)
}

/// Session ids of the sidecars old enough to prune now.
#[napi]
pub fn prune_candidates(env: Env, target: Target, older_than_ms: f64) -> napi::Result<JsObject> {
    spawn_in(&env, target, Vec::new(), move |h| {
        let c = h.store().prune_candidates(age(older_than_ms))?;
        Ok(strings(c.into_iter().map(|(sid, _)| sid)))
    })
}

/// Prune sidecars; when `judged` is given, only the sessions in it were
/// asked about recoverability and `recoverable` holds the ones kept. A
/// session nobody asked about (it turned old meanwhile) is kept too.
#[napi]
pub fn prune_content(
    env: Env,
    target: Target,
    older_than_ms: f64,
    judged: Option<Vec<String>>,
    recoverable: Vec<String>,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_in(&env, target, held, move |h| {
        let keep = |sid: &str| -> Result<bool> {
            Ok(recoverable.iter().any(|r| r == sid)
                || judged.as_ref().is_some_and(|j| !j.iter().any(|r| r == sid)))
        };
        let pred: Option<IsRecoverable<'_>> = judged.is_some().then_some(&keep);
        Ok(h.store().prune_content(age(older_than_ms), pred)?.to_json())
    })
}

/// The configuration, read with the environment values the caller passes.
#[napi]
pub fn load_config(
    env: Env,
    home: String,
    content_store: Option<String>,
    content_ttl_days: Option<String>,
) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), move |l| {
        let vars = LedgerEnv {
            content_store,
            content_ttl_days,
            ..LedgerEnv::default()
        };
        let loaded = l.load_config(&vars)?;
        let c = loaded.config.content;
        let retention = match c.retention_days {
            Retention::Days(d) => Value::Number(d),
            Retention::Forever => Value::str("forever"),
        };
        let mut content = Object::new();
        content.insert("store", Value::str(c.store.as_str()));
        content.insert("retentionDays", retention);
        let mut config = Object::new();
        config.insert("content", Value::Object(content));
        let mut out = Object::new();
        out.insert("config", Value::Object(config));
        out.insert("warnings", strings(loaded.warnings));
        Ok(Value::Object(out))
    })
}

#[napi]
pub fn load_hwm(env: Env, home: String) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), |l| Ok(Value::Object(l.load_hwm()?)))
}

#[napi]
pub fn save_hwm(env: Env, home: String, map: String) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), move |l| {
        l.save_hwm(&parse_object(&map, "hwm map")?)?;
        Ok(Value::Null)
    })
}

#[napi]
pub fn load_cursors(env: Env, home: String) -> napi::Result<JsObject> {
    spawn_on(&env, home, Vec::new(), |l| {
        Ok(Value::Object(l.load_cursors()?))
    })
}

#[napi]
pub fn save_cursors(
    env: Env,
    home: String,
    map: String,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, move |l| {
        l.save_cursors(&parse_object(&map, "cursor map")?)?;
        Ok(Value::Null)
    })
}

#[napi]
pub fn save_cursor_changes(
    env: Env,
    home: String,
    before: String,
    after: String,
    held: Vec<String>,
) -> napi::Result<JsObject> {
    spawn_on(&env, home, held, move |l| {
        let before = parse_object(&before, "cursor map")?;
        l.save_cursor_changes(&before, &parse_object(&after, "cursor map")?)?;
        Ok(Value::Null)
    })
}

/// Take lock `name` of `home` for the calling async context; resolves to
/// an id for [`release_lock`].
#[napi]
pub fn acquire_lock(env: Env, target: Target, name: String) -> napi::Result<JsObject> {
    spawn_in(&env, target, Vec::new(), move |h| {
        let lock = match h {
            Handle::File(l) => HeldLock::File(l.locks().acquire_detached(&name)?),
            Handle::Sqlite(s) => HeldLock::Sqlite(s.acquire_detached(&name)?),
        };
        Ok(Value::Number(f64::from(LOCKS.put(lock))))
    })
}

/// A lock held for a JavaScript `withLock`, released when dropped.
#[allow(dead_code)] // held for its `Drop` only
enum HeldLock {
    File(DetachedLock),
    Sqlite(relayburn_ledger::store::sqlite::DetachedRow),
}

/// Release a lock taken by [`acquire_lock`]; false when the id is unknown.
#[napi]
pub fn release_lock(id: u32) -> bool {
    LOCKS.take(id).is_some()
}
