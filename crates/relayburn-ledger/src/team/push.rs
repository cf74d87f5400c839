//! `burn push`: copy what is new in a local ledger into the team database.
//!
//! Lines are parsed on one thread and staged with `COPY` into temporary
//! tables on the other, then moved with `INSERT … SELECT … ON CONFLICT DO
//! NOTHING`, a batch per transaction. Each transaction also moves this
//! machine's server-side cursor, so a push killed at any point resumes
//! from the last committed batch, and rows are keyed by their id hashes,
//! so anything sent twice is stored once. Rows are inserted in key order:
//! concurrent pushers with overlapping records then take row locks in the
//! same order and cannot deadlock.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

use postgres::{Client, Transaction};
use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::index::{record_id, turn_fingerprint};
use crate::json::{format_number, Value};
use crate::ledger::Ledger;
use crate::records::Kind;

use super::schema;
use super::source::{Entry, LedgerFile, PushSource, Skip};
use super::target::Target;

/// Skips listed one by one in a summary; the rest are only counted.
const SKIPS_LISTED: usize = 20;

/// A staging table: where rows are copied, its columns, and the key that
/// orders the insert.
struct Table {
    name: &'static str,
    columns: &'static str,
    key: &'static str,
}

const TURNS: usize = 0;
const STAMPS: usize = 5;

const TABLES: [Table; 6] = [
    Table {
        name: "turns",
        columns: "id_hash, content_fp, source, session_id, message_id, turn_index, ts, project, project_key, record_json, machine_id, ledger_offset, ledger_part",
        key: "id_hash",
    },
    Table {
        name: "compactions",
        columns: "id_hash, source, session_id, ts, record_json, machine_id, ledger_offset, ledger_part",
        key: "id_hash",
    },
    Table {
        name: "relationships",
        columns: "id_hash, source, session_id, related_session_id, ts, record_json, machine_id, ledger_offset, ledger_part",
        key: "id_hash",
    },
    Table {
        name: "tool_result_events",
        columns: "id_hash, source, session_id, ts, record_json, machine_id, ledger_offset, ledger_part",
        key: "id_hash",
    },
    Table {
        name: "user_turns",
        columns: "id_hash, source, session_id, ts, record_json, machine_id, ledger_offset, ledger_part",
        key: "id_hash",
    },
    Table {
        name: "stamps",
        columns: "line_hash, ts, selector_json, enrichment_json, session_id, message_id, machine_id, ledger_offset, ledger_part",
        key: "line_hash",
    },
];

fn table_of(kind: Kind) -> usize {
    match kind {
        Kind::Turn => TURNS,
        Kind::Compaction => 1,
        Kind::Relationship => 2,
        Kind::ToolResultEvent => 3,
        Kind::UserTurn => 4,
        Kind::Stamp => STAMPS,
    }
}

/// Batch sizes. Larger batches mean fewer transactions; smaller ones
/// lose less work to an interruption and hold less memory.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Use this machine id instead of the home's own.
    pub machine_id: Option<String>,
    /// Records per transaction, at most.
    pub batch_rows: usize,
    /// Bytes of staged rows per transaction, at most (approximately).
    pub batch_bytes: usize,
}

impl Default for PushOptions {
    fn default() -> PushOptions {
        PushOptions {
            machine_id: None,
            batch_rows: 50_000,
            batch_bytes: 32 << 20,
        }
    }
}

/// The points of a batch's life an observer sees, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Rows copied into the staging tables, transaction open.
    Staged,
    /// Rows moved into the record tables, transaction open.
    Inserted,
    /// Transaction committed.
    Committed,
    /// The home's push record written.
    Recorded,
}

/// Where a push is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushProgress {
    pub done_bytes: u64,
    pub total_bytes: u64,
    pub rows_read: u64,
    pub rows_inserted: u64,
}

/// Watches a push: progress for a display, phases for tests that stop a
/// push at a chosen point.
pub trait PushObserver {
    fn progress(&mut self, _p: &PushProgress) {}
    fn phase(&mut self, _batch: u64, _phase: Phase) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl PushObserver for Quiet {}

/// Rows read and newly stored, for one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCount {
    pub read: u64,
    pub inserted: u64,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushSummary {
    /// The server, without its password.
    pub target: String,
    pub machine_id: String,
    pub from_offset: u64,
    pub to_offset: u64,
    /// Why the push started from the beginning although the server had a
    /// cursor for this machine (the ledger was rewritten or replaced).
    pub restarted: Option<String>,
    pub batches: u64,
    pub tables: BTreeMap<&'static str, TableCount>,
    pub skipped: u64,
    pub skipped_first: Vec<Skip>,
    pub elapsed: Duration,
}

impl PushSummary {
    pub fn rows_read(&self) -> u64 {
        self.tables.values().map(|c| c.read).sum()
    }
    pub fn rows_inserted(&self) -> u64 {
        self.tables.values().map(|c| c.inserted).sum()
    }

    pub fn to_value(&self) -> Value {
        let mut o = crate::json::Object::new();
        let num = |n: u64| Value::Number(n as f64);
        o.insert("target", Value::str(&self.target));
        o.insert("machineId", Value::str(&self.machine_id));
        o.insert("fromOffset", num(self.from_offset));
        o.insert("toOffset", num(self.to_offset));
        o.insert(
            "restarted",
            self.restarted.as_deref().map_or(Value::Null, Value::str),
        );
        o.insert("batches", num(self.batches));
        let mut tables = crate::json::Object::new();
        for (name, c) in &self.tables {
            let mut t = crate::json::Object::new();
            t.insert("read", num(c.read));
            t.insert("inserted", num(c.inserted));
            tables.insert(*name, Value::Object(t));
        }
        o.insert("tables", Value::Object(tables));
        o.insert("rowsRead", num(self.rows_read()));
        o.insert("rowsInserted", num(self.rows_inserted()));
        o.insert("skipped", num(self.skipped));
        let first = self
            .skipped_first
            .iter()
            .map(|s| {
                let mut e = crate::json::Object::new();
                e.insert("offset", num(s.offset));
                e.insert("reason", Value::str(&s.reason));
                Value::Object(e)
            })
            .collect();
        o.insert("skippedFirst", Value::Array(first));
        o.insert("elapsedMs", num(self.elapsed.as_millis() as u64));
        Value::Object(o)
    }
}

/// One transaction's worth of encoded rows.
#[derive(Default)]
struct Batch {
    bufs: [Vec<u8>; 6],
    rows: [u64; 6],
    /// Where the next push resumes once this batch is committed.
    end: u64,
    skipped: Vec<Skip>,
}

impl Batch {
    fn rows(&self) -> u64 {
        self.rows.iter().sum()
    }
    fn bytes(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }
}

/// A row of PostgreSQL's COPY text format.
struct CopyRow<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> CopyRow<'a> {
    fn new(out: &'a mut Vec<u8>) -> CopyRow<'a> {
        CopyRow { out, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.out.push(b'\t');
        }
        self.first = false;
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        for c in s.chars() {
            match c {
                '\\' => self.out.extend_from_slice(b"\\\\"),
                '\t' => self.out.extend_from_slice(b"\\t"),
                '\n' => self.out.extend_from_slice(b"\\n"),
                '\r' => self.out.extend_from_slice(b"\\r"),
                // PostgreSQL text cannot hold NUL; the record JSON keeps it
                // escaped, so only a derived column loses it.
                '\0' => self.out.extend_from_slice("\u{fffd}".as_bytes()),
                c => {
                    let mut b = [0u8; 4];
                    self.out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        self
    }

    fn opt(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => {
                self.sep();
                self.out.extend_from_slice(b"\\N");
                self
            }
        }
    }

    fn int(&mut self, n: Option<i64>) -> &mut Self {
        match n {
            Some(n) => self.text(&n.to_string()),
            None => self.opt(None),
        }
    }

    fn end(&mut self) {
        self.out.push(b'\n');
    }
}

/// A derived column's text: strings as they are, other scalars as
/// JavaScript prints them, objects and arrays as JSON, null and absent as
/// NULL. The record JSON beside it is what queries return.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.to_lossy().into_owned()),
        Value::Number(n) => Some(format_number(*n)),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_json()),
    }
}

fn integer_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Some(*n as i64),
        _ => None,
    }
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_js_string)
        .map(|s| s.to_lossy().into_owned())
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Encode one entry into its staging buffer; a reason when it cannot be.
fn encode(
    entry: &Entry,
    machine: &str,
    offset: u64,
    part: i64,
    batch: &mut Batch,
) -> std::result::Result<(), String> {
    let pos = offset as i64;
    match entry {
        Entry::Stamp(line) => {
            let json = line.to_json();
            let selector = line.get("selector");
            let out = &mut batch.bufs[STAMPS];
            CopyRow::new(out)
                .text(&sha256_hex(&json))
                .text(&str_field(line, "ts").unwrap_or_default())
                .text(&selector.map_or_else(|| "null".into(), Value::to_json))
                .text(
                    &line
                        .get("enrichment")
                        .map_or_else(|| "null".into(), Value::to_json),
                )
                .opt(selector.and_then(|s| str_field(s, "sessionId")).as_deref())
                .opt(selector.and_then(|s| str_field(s, "messageId")).as_deref())
                .text(machine)
                .int(Some(pos))
                .int(Some(part))
                .end();
            batch.rows[STAMPS] += 1;
        }
        Entry::Record { kind, record: r } => {
            let id = match record_id(*kind, r) {
                Some(Ok(h)) => h.hex(),
                Some(Err(e)) => return Err(e.0.to_string()),
                None => return Err("record kind without an id".into()),
            };
            let t = |k: &str| text_of(r.get(k));
            let req = |k: &str| text_of(r.get(k)).unwrap_or_default();
            let i = table_of(*kind);
            let mut row = CopyRow::new(&mut batch.bufs[i]);
            row.text(&id);
            match kind {
                Kind::Turn => {
                    let fp = turn_fingerprint(r).map(|h| h.hex()).unwrap_or_default();
                    row.text(&fp)
                        .text(&req("source"))
                        .text(&req("sessionId"))
                        .text(&req("messageId"))
                        .int(integer_of(r.get("turnIndex")))
                        .text(&req("ts"))
                        .opt(t("project").as_deref())
                        .opt(t("projectKey").as_deref());
                }
                Kind::Relationship => {
                    row.text(&req("source"))
                        .text(&req("sessionId"))
                        .opt(t("relatedSessionId").as_deref())
                        .opt(t("ts").as_deref());
                }
                Kind::ToolResultEvent => {
                    row.text(&req("source"))
                        .text(&req("sessionId"))
                        .opt(t("ts").as_deref());
                }
                _ => {
                    row.text(&req("source"))
                        .text(&req("sessionId"))
                        .text(&req("ts"));
                }
            }
            row.text(&r.to_json())
                .text(machine)
                .int(Some(pos))
                .int(Some(part))
                .end();
            batch.rows[i] += 1;
        }
    }
    Ok(())
}

/// Read lines from `start` to `limit` into batches, on the caller's
/// thread; stops when the receiver goes away.
fn produce(
    source: &dyn PushSource,
    machine: &str,
    start: u64,
    limit: u64,
    opts: &PushOptions,
    tx: std::sync::mpsc::SyncSender<Result<Batch>>,
) {
    let lines = match source.lines(start, limit) {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let mut batch = Batch {
        end: start,
        ..Batch::default()
    };
    for line in lines {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for (part, entry) in line.entries.iter().enumerate() {
            if let Err(reason) = encode(entry, machine, line.offset, part as i64, &mut batch) {
                batch.skipped.push(Skip {
                    offset: line.offset,
                    reason,
                });
            }
        }
        batch.skipped.extend(line.skipped);
        batch.end = line.end;
        if batch.rows() as usize >= opts.batch_rows || batch.bytes() >= opts.batch_bytes {
            let next = Batch {
                end: batch.end,
                ..Batch::default()
            };
            if tx.send(Ok(std::mem::replace(&mut batch, next))).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Ok(batch));
}

fn advisory_key(machine: &str) -> i64 {
    let d = Sha256::digest(format!("relayburn push {machine}").as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}

/// Push `source` as `machine` into the database of `target`.
pub fn push_source(
    source: &(dyn PushSource + Sync),
    target: &Target,
    machine: &str,
    opts: &PushOptions,
    observer: &mut dyn PushObserver,
    mut on_commit: impl FnMut(&PushSummary) -> Result<()>,
) -> Result<PushSummary> {
    let started = Instant::now();
    let mut client = target.connect()?;
    schema::migrate(target, &mut client)?;
    let e = |what: &'static str| move |err| target.db_error(what, err);
    // One pusher per machine id at a time; the server drops the lock
    // with the session, so a killed pusher never leaves it behind.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&advisory_key(machine)])
        .map_err(e("lock machine"))?;
    for t in &TABLES {
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS burn_stage_{name} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {name} WITH NO DATA",
                name = t.name,
                cols = t.columns
            ))
            .map_err(e("create staging table"))?;
    }
    let cursor = client
        .query_opt(
            "SELECT ledger_offset, check_hash FROM push_cursors WHERE machine_id = $1",
            &[&machine],
        )
        .map_err(e("read push cursor"))?
        .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, String>(1)));
    let (start, restarted) = match cursor {
        None => (0, None),
        Some((offset, check)) => match source.checkpoint(offset)? {
            Some(now) if now == check => (offset, None),
            _ => (
                0,
                Some(format!(
                    "the ledger no longer matches the server's cursor at byte {offset}; pushing it all again (stored records are kept once)"
                )),
            ),
        },
    };
    let limit = source.size()?;
    let mut summary = PushSummary {
        target: target.name().to_string(),
        machine_id: machine.to_string(),
        from_offset: start,
        to_offset: start,
        restarted,
        batches: 0,
        tables: TABLES
            .iter()
            .map(|t| (t.name, TableCount::default()))
            .collect(),
        skipped: 0,
        skipped_first: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let (tx, rx) = sync_channel::<Result<Batch>>(1);
    let result = std::thread::scope(|scope| {
        scope.spawn(|| produce(source, machine, start, limit, opts, tx));
        let r = consume(
            &mut client,
            target,
            source,
            machine,
            limit,
            &rx,
            &mut summary,
            observer,
            &mut on_commit,
        );
        // Let the reader stop if the push failed part way.
        drop(rx);
        r
    });
    summary.elapsed = started.elapsed();
    result.map(|()| summary)
}

#[allow(clippy::too_many_arguments)]
fn consume(
    client: &mut Client,
    target: &Target,
    source: &(dyn PushSource + Sync),
    machine: &str,
    limit: u64,
    rx: &Receiver<Result<Batch>>,
    summary: &mut PushSummary,
    observer: &mut dyn PushObserver,
    on_commit: &mut dyn FnMut(&PushSummary) -> Result<()>,
) -> Result<()> {
    for batch in rx.iter() {
        let batch = batch?;
        let n = summary.batches;
        let mut tx = client
            .transaction()
            .map_err(|err| target.db_error("begin", err))?;
        stage(&mut tx, target, &batch)?;
        observer.phase(n, Phase::Staged);
        let inserted = insert(&mut tx, target, &batch)?;
        let total_inserted: u64 = inserted.iter().sum();
        let check = source.checkpoint(batch.end)?.ok_or_else(|| {
            target.error(
                "the local ledger shrank during the push; nothing after the last commit was stored",
            )
        })?;
        tx.execute(
            "INSERT INTO push_cursors (machine_id, ledger_offset, check_hash, rows_inserted, pushes, last_push_at)
             VALUES ($1, $2, $3, $4, 1, now())
             ON CONFLICT (machine_id) DO UPDATE SET
               ledger_offset = EXCLUDED.ledger_offset,
               check_hash = EXCLUDED.check_hash,
               rows_inserted = push_cursors.rows_inserted + EXCLUDED.rows_inserted,
               pushes = push_cursors.pushes + $5,
               last_push_at = now()",
            &[
                &machine,
                &(batch.end as i64),
                &check,
                &(total_inserted as i64),
                &i64::from(n == 0),
            ],
        )
        .map_err(|err| target.db_error("move push cursor", err))?;
        observer.phase(n, Phase::Inserted);
        tx.commit().map_err(|err| target.db_error("commit", err))?;
        observer.phase(n, Phase::Committed);
        for (i, t) in TABLES.iter().enumerate() {
            if let Some(c) = summary.tables.get_mut(t.name) {
                c.read += batch.rows[i];
                c.inserted += inserted[i];
            }
        }
        summary.skipped += batch.skipped.len() as u64;
        let room = SKIPS_LISTED.saturating_sub(summary.skipped_first.len());
        summary
            .skipped_first
            .extend(batch.skipped.into_iter().take(room));
        summary.to_offset = batch.end;
        summary.batches += 1;
        on_commit(summary)?;
        observer.phase(n, Phase::Recorded);
        observer.progress(&PushProgress {
            done_bytes: batch.end,
            total_bytes: limit,
            rows_read: summary.rows_read(),
            rows_inserted: summary.rows_inserted(),
        });
    }
    Ok(())
}

fn stage(tx: &mut Transaction<'_>, target: &Target, batch: &Batch) -> Result<()> {
    use std::io::Write;
    for (i, t) in TABLES.iter().enumerate() {
        if batch.rows[i] == 0 {
            continue;
        }
        let sql = format!("COPY burn_stage_{} ({}) FROM STDIN", t.name, t.columns);
        let mut w = tx
            .copy_in(sql.as_str())
            .map_err(|err| target.db_error("start copy", err))?;
        w.write_all(&batch.bufs[i])
            .map_err(|err| target.error(format_args!("copy {}: {err}", t.name)))?;
        w.finish()
            .map_err(|err| target.db_error("finish copy", err))?;
    }
    Ok(())
}

fn insert(tx: &mut Transaction<'_>, target: &Target, batch: &Batch) -> Result<[u64; 6]> {
    let mut inserted = [0u64; 6];
    for (i, t) in TABLES.iter().enumerate() {
        if batch.rows[i] == 0 {
            continue;
        }
        let sql = format!(
            "INSERT INTO {name} ({cols}) SELECT {cols} FROM burn_stage_{name}
             ORDER BY {key}, ledger_offset, ledger_part ON CONFLICT DO NOTHING",
            name = t.name,
            cols = t.columns,
            key = t.key
        );
        inserted[i] = tx
            .execute(sql.as_str(), &[])
            .map_err(|err| target.db_error("insert", err))?;
    }
    Ok(inserted)
}

impl Ledger {
    /// Push what is new in this home's ledger to `target`, recording the
    /// push in `push.json` after each committed batch.
    pub fn push_to(
        &self,
        target: &Target,
        opts: &PushOptions,
        observer: &mut dyn PushObserver,
    ) -> Result<PushSummary> {
        let machine = self.machine_id(opts.machine_id.as_deref())?;
        let source = LedgerFile::new(self.home().ledger());
        push_source(&source, target, &machine, opts, observer, |s| {
            let mut entry = crate::json::Object::new();
            entry.insert("machineId", Value::str(&s.machine_id));
            entry.insert("offset", Value::Number(s.to_offset as f64));
            entry.insert("pushedAt", Value::str(&crate::time::now_iso()));
            self.record_push(target.name(), Value::Object(entry))
        })
    }
}
