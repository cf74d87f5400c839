//! The PostgreSQL storage backend (`RELAYBURN_STORAGE=postgres`): the
//! SQLite store's semantics on a PostgreSQL server named by
//! `RELAYBURN_POSTGRES_URL`.
//!
//! One schema: the store uses the team ledger's tables
//! ([`crate::team::schema`]), its own rows carrying the machine id
//! [`STORE_MACHINE`]. A team that keeps its storage on the server and
//! another that pushes into it then share one set of migrations, one id
//! space (a record is stored once whichever way it arrived) and one query
//! path; the store reads every row of the database, pushed ones included.
//! `#` cannot start a pushed machine id, so the store's rows are never
//! mistaken for a machine's.
//!
//! Order: rows come back by machine id (the database's collation), each
//! machine's by `(ledger_offset, ledger_part)`. The store numbers its own
//! rows `1, 2, …` per table (the next number is read under the append
//! lock), so they come back in append order, as the SQLite store's rowid
//! order.
//!
//! Writes: one transaction per call, holding a transaction-level advisory
//! lock of the store, so two processes never both miss each other's
//! fingerprints or number rows alike; `INSERT … ON CONFLICT DO NOTHING` on
//! the id hash. Turns also skip a content fingerprint among the store's
//! last 10,000 turns. `record_json` is `TEXT`, byte for byte what
//! [`Value::to_json`] wrote.
//!
//! Locks: named locks are session-level advisory locks on a connection of
//! their own (the `lock` submodule); the server releases them when a
//! client dies.

mod lock;
mod paged;
mod rows;
mod status;
mod window;

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::types::ToSql;
use postgres::{Client, Transaction};
use sha2::{Digest, Sha256};

use super::{Records, Store};
use crate::content::{ContentAppendSummary, IsRecoverable, PruneResult};
use crate::error::{Error, Result};
use crate::home::{is_valid_session_id, StorageKind};
use crate::index::{turn_fingerprint, Hash16, Hash16Set};
use crate::json::{self, Object, Value};
use crate::lock::LockOptions;
use crate::query::{enrich_turn, narrowing, passes, Filters, Query, Stamps};
use crate::records::{wrap_record, Kind};
use crate::team::schema;
use crate::team::Target;
use crate::writer::spawn_env_relationship;

use paged::Paged;
use rows::{bind, row_values, table, Batch, Bound, Column, Table, Ty};
pub use status::PostgresStatus;
use window::Window;

/// The `machine_id` of the rows the store writes.
pub const STORE_MACHINE: &str = "#store";

/// Rows fetched per step of a streaming query.
const PAGE: i64 = 1000;

/// An open PostgreSQL store.
pub struct PostgresStore {
    target: Target,
    /// The schema the tables were found in (`current_schema()`): two
    /// stores in one database are told apart by it.
    schema: String,
    conn: Mutex<Client>,
    /// The advisory lock key every append takes.
    append_key: i64,
    options: LockOptions,
    locks: lock::Locks,
    window: Mutex<Window>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target.name())
            .field("schema", &self.schema)
            .finish()
    }
}

/// A stable 64-bit advisory lock key: the first 8 bytes of SHA-256.
fn advisory_key(parts: &[&str]) -> i64 {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

impl PostgresStore {
    /// Connect to `url` (a `postgres://` URL or libpq key=value string),
    /// bringing the schema up to date, with the reference's lock timings.
    pub fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::open_with_lock_options(url, LockOptions::default())
    }

    /// Open with other named-lock timings (tests shrink them).
    pub fn open_with_lock_options(url: &str, options: LockOptions) -> Result<PostgresStore> {
        let target = Target::parse(url)?;
        let mut client = target.connect()?;
        schema::migrate(&target, &mut client)?;
        let schema: String = client
            .query_one("SELECT current_schema()::text", &[])
            .map_err(|e| target.db_error("read schema", e))?
            .get(0);
        let append_key = advisory_key(&["relayburn store append", &schema]);
        Ok(PostgresStore {
            locks: lock::Locks::new(target.clone(), schema.clone()),
            target,
            schema,
            conn: Mutex::new(client),
            append_key,
            options,
            window: Mutex::new(Window::default()),
        })
    }

    /// The server, as `user@host:port/db` (never the password).
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn db(&self, what: &'static str) -> impl Fn(postgres::Error) -> Error + '_ {
        move |e| self.target.db_error(what, e)
    }

    /// The connection, opened again when the server dropped it.
    fn conn(&self) -> Result<MutexGuard<'_, Client>> {
        let mut g = match self.conn.lock() {
            Ok(g) => g,
            Err(p) => {
                self.conn.clear_poison();
                p.into_inner()
            }
        };
        if g.is_closed() {
            *g = self.target.connect()?;
            g.batch_execute(&format!("SET search_path TO {}", quote_ident(&self.schema)))
                .map_err(self.db("set schema"))?;
        }
        Ok(g)
    }

    /// Run `f` in one transaction holding the store's append lock.
    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(self.db("begin"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.append_key])
            .map_err(self.db("take the append lock"))?;
        let out = f(&mut tx)?;
        tx.commit().map_err(self.db("commit"))?;
        Ok(out)
    }

    /// The last number the store gave a row of `table`.
    fn last_offset(&self, tx: &mut Transaction<'_>, table: &str) -> Result<i64> {
        let row = tx
            .query_one(
                &format!(
                    "SELECT coalesce(max(ledger_offset), 0) FROM {table} WHERE machine_id = $1"
                ),
                &[&STORE_MACHINE],
            )
            .map_err(self.db("number rows"))?;
        Ok(row.get(0))
    }

    fn insert(&self, tx: &mut Transaction<'_>, t: &Table, batch: &Batch) -> Result<usize> {
        if batch.len == 0 {
            return Ok(0);
        }
        let after = self.last_offset(tx, t.name)?;
        let sql = batch.insert_sql(t.name);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            batch.columns.iter().map(Column::param).collect();
        params.push(&STORE_MACHINE);
        params.push(&after);
        let n = tx.execute(&sql, &params).map_err(self.db("insert"))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
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
        // Hashes and bindings first: a record that cannot be hashed fails
        // the whole call before anything is written.
        let mut rows = Vec::with_capacity(records.len());
        let mut ids = HashSet::with_capacity(records.len());
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
            let values = row_values(&t, id, fp, r)?;
            // A repeated id in one batch: the first is the one written.
            if ids.insert(id) {
                rows.push((fp, values));
            }
        }
        self.write(|tx| {
            let window = match kind {
                Kind::Turn => self
                    .window
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refresh(tx, &self.target)?,
                _ => Hash16Set::default(),
            };
            let mut batch = Batch::new(&t, kind == Kind::Turn);
            for (fp, values) in rows {
                if fp.is_some_and(|fp| window.contains(&fp)) {
                    continue;
                }
                batch.push(values)?;
            }
            self.insert(tx, &t, &batch)
        })
    }

    /// Stamps in the reference's application order (`ts`, then the order
    /// written), only those that may apply to `session`'s turns when given.
    fn stamps(&self, session: Option<&str>) -> Result<Stamps> {
        let mut sql = String::from("SELECT selector_json, enrichment_json FROM stamps");
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &session {
            sql.push_str(" WHERE session_id IS NULL OR session_id = $1");
            params.push(s);
        }
        sql.push_str(" ORDER BY ts COLLATE \"C\", machine_id, ledger_offset, ledger_part");
        let rows = self
            .conn()?
            .query(&sql, &params)
            .map_err(self.db("read stamps"))?;
        let found = rows.iter().map(|r| {
            // Unparsable JSON reads as `{}`, as in the reference.
            let selector = json::parse(r.get(0)).unwrap_or_else(|_| Value::Object(Object::new()));
            let enrichment = json::parse(r.get(1))
                .ok()
                .and_then(Value::into_object)
                .unwrap_or_default();
            (selector, enrichment)
        });
        Ok(Stamps::from_ordered(found.collect::<Vec<_>>()))
    }

    /// Every stamp as its ledger line, in the order written.
    fn stamp_lines(&self) -> Result<Vec<Value>> {
        let rows = self
            .conn()?
            .query(
                "SELECT ts, selector_json, enrichment_json FROM stamps \
                 ORDER BY machine_id, ledger_offset, ledger_part",
                &[],
            )
            .map_err(self.db("read stamps"))?;
        let empty = || Value::Object(Object::new());
        Ok(rows
            .iter()
            .map(|r| {
                crate::records::obj([
                    ("v", Value::Number(1.0)),
                    ("kind", Value::str("stamp")),
                    ("ts", Value::str(r.get::<_, &str>(0))),
                    (
                        "selector",
                        json::parse(r.get(1)).unwrap_or_else(|_| empty()),
                    ),
                    (
                        "enrichment",
                        json::parse(r.get(2)).unwrap_or_else(|_| empty()),
                    ),
                ])
            })
            .collect())
    }

    /// Records of `t` in store order: a session's rows at once through
    /// its index, or the whole table (of one source) a page at a time.
    fn rows<'a>(&'a self, t: &Table, q: &Query) -> Result<Records<'a>> {
        let (session, source) = narrowing(q);
        if let Some(sid) = session {
            let mut sql = format!("SELECT record_json FROM {} WHERE ", t.name);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sid];
            sql.push_str(if t.name == "relationships" {
                "(session_id = $1 OR related_session_id = $1)"
            } else {
                "session_id = $1"
            });
            if let Some(src) = &source {
                sql.push_str(" AND source = $2");
                params.push(src);
            }
            sql.push_str(" ORDER BY machine_id, ledger_offset, ledger_part");
            let rows = self
                .conn()?
                .query(&sql, &params)
                .map_err(self.db("query"))?;
            let out: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            return Ok(Box::new(
                out.into_iter()
                    .filter_map(|j| crate::store::parse_record(&j))
                    .map(Ok),
            ));
        }
        let mut sql = format!(
            "SELECT machine_id, ledger_offset, ledger_part, record_json FROM {} \
             WHERE (machine_id, ledger_offset, ledger_part) > ($1, $2, $3)",
            t.name
        );
        if source.is_some() {
            sql.push_str(" AND source = $4");
        }
        sql.push_str(&format!(
            " ORDER BY machine_id, ledger_offset, ledger_part LIMIT {PAGE}"
        ));
        Ok(Box::new(Paged {
            store: self,
            sql,
            source: source.map(str::to_string),
            after: (String::new(), i64::MIN, i32::MIN),
            buf: VecDeque::new(),
            done: false,
        }))
    }

    fn content_rows(&self, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<Vec<String>> {
        let rows = self
            .conn()?
            .query(sql, args)
            .map_err(self.db("read content"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// `(sessionId, size)` of sessions whose last content write is at or
    /// before `cutoff`; size is the record JSON's length in bytes.
    fn prunable(&self, cutoff: i64, only: Option<&str>) -> Result<Vec<(String, u64)>> {
        let mut sql =
            String::from("SELECT session_id, sum(octet_length(record_json))::bigint FROM content");
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&cutoff];
        if let Some(s) = &only {
            sql.push_str(" WHERE session_id = $2");
            params.push(s);
        }
        sql.push_str(
            " GROUP BY session_id HAVING max(mtime_ms) <= $1 ORDER BY session_id COLLATE \"C\"",
        );
        let rows = self
            .conn()?
            .query(&sql, &params)
            .map_err(self.db("read content"))?;
        Ok(rows
            .iter()
            .map(|r| {
                let size: Option<i64> = r.get(1);
                (
                    r.get::<_, String>(0),
                    u64::try_from(size.unwrap_or(0)).unwrap_or(0),
                )
            })
            .collect())
    }
}

/// `"name"` with quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store for PostgresStore {
    fn kind(&self) -> StorageKind {
        StorageKind::Postgres
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
        let ts = match bind(line.get("ts"), "ts", Ty::Text)? {
            Bound::Text(Some(ts)) => ts,
            _ => {
                return Err(Error::invalid(
                    "ts",
                    "stamps.ts is NOT NULL: the stamp has no ts",
                ))
            }
        };
        // What the SQLite store refuses to bind is refused; only string
        // ids are kept, as only they narrow a query's stamps (`stamps`).
        let key = |k: &str| -> Result<Option<String>> {
            bind(selector.get(k), k, Ty::Text)?;
            Ok(selector
                .get(k)
                .and_then(Value::as_js_string)
                .map(|s| s.to_lossy().into_owned()))
        };
        let session = key("sessionId")?;
        let message = key("messageId")?;
        let (selector, enrichment) = (selector.to_json(), enrichment.to_json());
        let rel = match spawn_env_relationship(line) {
            Some(r) => {
                let t = table(Kind::Relationship)
                    .ok_or_else(|| Error::Internal("no relationship table".into()))?;
                let mut b = Batch::new(&t, false);
                let id = crate::writer::id_of(Kind::Relationship, 0, &r)?;
                b.push(row_values(&t, id, None, &r)?)?;
                Some((t, b))
            }
            None => None,
        };
        self.write(|tx| {
            let offset = self.last_offset(tx, "stamps")? + 1;
            // Every stamp is kept, as in the reference; the line hash of a
            // stamp the store wrote is its place, never a pushed line's.
            let line_hash = format!("{STORE_MACHINE}:{offset}");
            tx.execute(
                "INSERT INTO stamps (line_hash, ts, selector_json, enrichment_json, session_id, \
                 message_id, machine_id, ledger_offset, ledger_part) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
                &[
                    &line_hash,
                    &ts,
                    &selector,
                    &enrichment,
                    &session,
                    &message,
                    &STORE_MACHINE,
                    &offset,
                ],
            )
            .map_err(self.db("insert stamp"))?;
            if let Some((t, b)) = &rel {
                self.insert(tx, t, b)?;
            }
            Ok(())
        })
    }

    fn append_content(&self, records: Vec<Value>) -> Result<ContentAppendSummary> {
        let mut summary = ContentAppendSummary::default();
        let mut cols: [Vec<Option<String>>; 6] = Default::default();
        for r in &records {
            let Some(sid) = summary.session_of(r) else {
                continue;
            };
            let j = r.to_json();
            let text = |k: &str| match bind(r.get(k), k, Ty::Text)? {
                Bound::Text(v) => Ok(v),
                Bound::Int(_) => Ok(None),
            };
            let row = [
                text("source")?,
                Some(sid.to_string()),
                text("messageId")?,
                text("ts")?,
                Some(Hash16::of(&j).hex()),
                Some(j),
            ];
            for (c, v) in cols.iter_mut().zip(row) {
                c.push(v);
            }
        }
        let total = cols[0].len();
        if total == 0 {
            return Ok(summary);
        }
        let now = now_ms();
        let mut c = self.conn()?;
        let added = c
            .execute(
                "INSERT INTO content (source, session_id, message_id, ts, content_fp, \
                 record_json, mtime_ms, machine_id) \
                 SELECT s, i, m, t, f, j, $7::bigint, $8 FROM unnest($1::text[], $2::text[], \
                 $3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY \
                 AS u(s, i, m, t, f, j, n) ORDER BY n ON CONFLICT DO NOTHING",
                &[
                    &cols[0],
                    &cols[1],
                    &cols[2],
                    &cols[3],
                    &cols[4],
                    &cols[5],
                    &now,
                    &STORE_MACHINE,
                ],
            )
            .map_err(self.db("insert content"))?;
        let added = usize::try_from(added).unwrap_or(total);
        summary.appended = added;
        summary.duplicates = total - added;
        Ok(summary)
    }

    fn query_turns(&self, q: &Query) -> Result<Records<'_>> {
        self.query_records(Kind::Turn, q)
    }

    fn query_records(&self, kind: Kind, q: &Query) -> Result<Records<'_>> {
        let t = table(kind).ok_or_else(|| Error::invalid("kind", "stamps are not queried"))?;
        let filters = Filters::new(q);
        if kind == Kind::Turn {
            let stamps = self.stamps(narrowing(q).0)?;
            let rows = self.rows(&t, q)?;
            return Ok(Box::new(rows.filter_map(move |r| match r {
                Ok(rec) => enrich_turn(rec, &stamps, &filters).map(Ok),
                Err(e) => Some(Err(e)),
            })));
        }
        let rows = self.rows(&t, q)?;
        Ok(Box::new(rows.filter(move |r| match r {
            Ok(rec) => passes(kind, rec, &filters),
            Err(_) => true,
        })))
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
            let rows = self.rows(&t, &Query::default())?;
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
                "SELECT record_json FROM content WHERE session_id = $1 AND message_id = $2 \
                 ORDER BY seq",
                &[&session_id, &m],
            )?,
            None => self.content_rows(
                "SELECT record_json FROM content WHERE session_id = $1 ORDER BY seq",
                &[&session_id],
            )?,
        };
        Ok(rows.iter().filter_map(|j| json::parse(j).ok()).collect())
    }

    fn list_content_session_ids(&self) -> Result<Vec<String>> {
        let mut ids = self.content_rows(
            "SELECT DISTINCT session_id COLLATE \"C\" AS s FROM content ORDER BY s",
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

    fn with_lock_dyn(&self, name: &str, f: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.locks.with_lock(name, &self.options, f)
    }

    fn as_postgres(&self) -> Option<&PostgresStore> {
        Some(self)
    }
}

impl super::ContentTable for PostgresStore {
    fn prunable(&self, cutoff: i64, only: Option<&str>) -> Result<Vec<(String, u64)>> {
        PostgresStore::prunable(self, cutoff, only)
    }

    fn delete_content(&self, session_id: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM content WHERE session_id = $1", &[&session_id])
            .map(drop)
            .map_err(self.db("delete content"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        // The first 8 bytes of SHA-256("a\0b\0") (sha256sum: 8fb20ef63ced4145…).
        assert_eq!(advisory_key(&["a", "b"]), -8092389129684434619);
        assert_ne!(advisory_key(&["a", "b"]), advisory_key(&["ab", ""]));
    }
}
