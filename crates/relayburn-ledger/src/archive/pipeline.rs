//! Applying a stretch of the ledger to an archive (SPEC §6).
//!
//! Two streaming passes over the stretch, so memory follows the stamps,
//! not the ledger:
//!
//! 1. stamp lines only (found by a substring search, then parsed), which
//!    go to the `stamps` table; all stamps are then read back in the
//!    reference's fold order and indexed;
//! 2. every line, parsed and folded on this thread and written by a
//!    second thread that owns the SQLite connection, through a bounded
//!    channel.
//!
//! Then come the refold of turns hit by new stamps ([`super::refold`]) and
//! the re-derivation of touched sessions ([`super::sessions`]), both with
//! the reference's SQL semantics.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rusqlite::{Connection, Statement};

use crate::error::{Error, IoContext, Result};
use crate::json::{self, Object, Value};
use crate::jsonl::{parse_line, LineScanner, Parsed};
use crate::records::{line_kind, Kind};

use super::fold::{FoldCache, FoldStamp, Folded, StampIndex};
use super::refold::refold;
use super::rows::{
    bindable, compaction_row, record_mut, tool_result_event_row, turn_keys, turn_row, TurnRow,
};
use super::schema::{self, sql_err, STAMP_WILDCARD};
use super::sessions::{rebuild_sessions, text_col, SCAN_SESSIONS};
use super::sql::{
    insert_tool_calls_sql, upsert_tool_result_events_sql, upsert_turns_sql, Sv, CALL_ROWS,
    DELETE_TOOL_CALLS, EVENT_ROWS, INSERT_STAMP, LOAD_STAMPS, TOOL_CALL_COLUMNS, TURN_ROWS,
    UPSERT_COMPACTION,
};
use super::SkippedRecord;

/// How the target archive relates to the stretch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A live archive that already holds everything before `start`.
    Incremental,
    /// An empty archive without secondary indexes, filled from byte 0.
    Fresh,
}

/// What one application did; the counters are the reference's.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    pub scanned_bytes: u64,
    /// End of the last line that parsed as JSON (the next cursor).
    pub safe_offset: u64,
    pub turns: u64,
    pub stamps: u64,
    pub compactions: u64,
    pub tool_result_events: u64,
    pub sessions_touched: u64,
    pub skipped: Vec<SkippedRecord>,
    /// Lines that are not JSON (or too long to read): (offset, why).
    pub malformed: Vec<(u64, String)>,
}

/// Rows handed from the parsing thread to the writing one.
enum Item {
    /// The row, and whether its key may already have tool calls.
    Turn(Box<TurnRow>, bool),
    Compaction([Sv; 5]),
    ToolResultEvent(Box<[Sv; 14]>),
}

const BATCH: usize = 256;
/// Bytes between two progress reports.
const PROGRESS_STEP: u64 = 4 << 20;
const CHANNEL_BATCHES: usize = 8;

/// A stamp line of the stretch that the archive accepts.
pub(super) struct NewStamp {
    pub(super) selector: Value,
    /// session bucket, ts, selector_json, enrichment_json, offset.
    pub(super) params: [Sv; 5],
}

/// Could this line be a stamp? `stamp` can only be spelled in JSON as
/// those bytes or with a `\u` escape.
///
/// The searchers are built once: building one per line cost as much as
/// the search itself.
fn maybe_stamp(bytes: &[u8]) -> bool {
    use memchr::memmem::Finder;
    static FINDERS: std::sync::OnceLock<(Finder<'static>, Finder<'static>)> =
        std::sync::OnceLock::new();
    let (word, escape) = FINDERS.get_or_init(|| (Finder::new(b"stamp"), Finder::new(b"\\u")));
    word.find(bytes).is_some() || escape.find(bytes).is_some()
}

/// The parameters of a stamp row; fails where the reference's build
/// would throw on this stamp.
fn stamp_params(line: &Value) -> std::result::Result<(Value, [Sv; 4]), String> {
    let selector = match line.get("selector") {
        None | Some(Value::Null) => return Err("stamp selector is missing".into()),
        Some(s) => s,
    };
    let sid = selector.get("sessionId");
    let bucket = match sid {
        None | Some(Value::Null) => Sv::Text(STAMP_WILDCARD.into()),
        Some(v) => bindable(v).ok_or("stamp selector.sessionId is not a string")?,
    };
    let ts = match line.get("ts").map(|v| (v, bindable(v))) {
        None => return Err("stamp ts is missing".into()),
        Some((_, None)) => return Err("stamp ts is not a string".into()),
        Some((_, Some(Sv::Null))) => return Err("stamp ts is null".into()),
        Some((_, Some(ts))) => ts,
    };
    let enrichment = match line.get("enrichment") {
        None => return Err("stamp enrichment is missing".into()),
        Some(Value::Null) => return Err("stamp enrichment is null".into()),
        Some(e) => e,
    };
    // The refold looks turns up by these fields, binding them.
    if sid.is_none() {
        if let Some(m) = selector.get("messageId") {
            bindable(m).ok_or("stamp selector.messageId is not a string")?;
        } else if let Some(r) = selector.get("range").filter(|r| r.is_truthy()) {
            for k in ["fromTs", "toTs"] {
                if let Some(b) = r.get(k).filter(|b| b.is_truthy()) {
                    bindable(b)
                        .ok_or_else(|| format!("stamp selector.range.{k} is not a string"))?;
                }
            }
        }
    }
    let mut alone = Folded::default();
    alone.apply(enrichment);
    alone.columns()?;
    Ok((
        selector.clone(),
        [
            bucket,
            ts,
            Sv::Text(selector.to_json()),
            Sv::Text(enrichment.to_json()),
        ],
    ))
}

/// Below this many bytes pass 1 runs on one thread.
const SPLIT_STAMP_SCAN: u64 = 64 << 20;

/// Pass 1: the stamps of `[start, EOF)` and the end of its last complete
/// line, which bounds pass 2 so both passes see the same lines. A long
/// stretch is searched in two halves on two threads (the search reads
/// every byte of the ledger once, before anything else can start).
fn scan_stamps(
    ledger: &Path,
    start: u64,
    skipped: &mut Vec<SkippedRecord>,
) -> Result<(Vec<NewStamp>, u64)> {
    scan_stamps_split(ledger, start, skipped, SPLIT_STAMP_SCAN)
}

fn scan_stamps_split(
    ledger: &Path,
    start: u64,
    skipped: &mut Vec<SkippedRecord>,
    split_above: u64,
) -> Result<(Vec<NewStamp>, u64)> {
    let len = std::fs::metadata(ledger).ctx("stat", ledger)?.len();
    let split = if len.saturating_sub(start) >= split_above {
        line_start_after(ledger, start + (len - start) / 2)?
    } else {
        len
    };
    if split >= len {
        let (stamps, skips, limit) = scan_stamps_in(ledger, start, u64::MAX)?;
        skipped.extend(skips);
        return Ok((stamps, limit));
    }
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| scan_stamps_in(ledger, split, u64::MAX));
        let first = scan_stamps_in(ledger, start, split);
        let second = second
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("stamp scan thread panicked".into())));
        (first, second)
    });
    let (mut stamps, mut skips, first_limit) = first?;
    let (more, more_skips, limit) = second?;
    // The first half ends on a line boundary, so only a torn line there
    // (which cannot be: `split` follows a newline) would stop it early.
    debug_assert_eq!(first_limit, split);
    stamps.extend(more);
    skips.extend(more_skips);
    skipped.extend(skips);
    Ok((stamps, limit))
}

/// The first line start at or after `at`: just past the next `\n` from
/// `at - 1` on, or EOF.
fn line_start_after(ledger: &Path, at: u64) -> Result<u64> {
    let mut sc = LineScanner::open_at(ledger, at.saturating_sub(1)).ctx("read", ledger)?;
    let terminated = sc
        .next_line()
        .ctx("read", ledger)?
        .is_some_and(|line| line.terminated);
    Ok(if terminated { sc.position() } else { u64::MAX })
}

/// Stamps (and refused stamps) of the lines starting in `[from, until)`,
/// and the end of the last complete line seen.
fn scan_stamps_in(
    ledger: &Path,
    from: u64,
    until: u64,
) -> Result<(Vec<NewStamp>, Vec<SkippedRecord>, u64)> {
    let mut sc = LineScanner::open_at(ledger, from).ctx("read", ledger)?;
    let mut stamps = Vec::new();
    let mut skipped = Vec::new();
    let mut limit = from;
    loop {
        let Some(line) = sc.next_line().ctx("read", ledger)? else {
            break;
        };
        if line.offset >= until || !line.terminated {
            break;
        }
        let offset = line.offset;
        let found = if line.oversized || !maybe_stamp(line.bytes) {
            None
        } else {
            match parse_line(line.bytes) {
                Parsed::Value(v) if line_kind(&v) == Some(Kind::Stamp) => Some(v),
                _ => None,
            }
        };
        // An over-long line has no bytes: its end is the scanner's place.
        limit = sc.position();
        let Some(v) = found else {
            continue;
        };
        match stamp_params(&v) {
            Ok((selector, [bucket, ts, sel_json, enr_json])) => stamps.push(NewStamp {
                selector,
                params: [bucket, ts, sel_json, enr_json, Sv::Int(offset as i64)],
            }),
            Err(reason) => skipped.push(SkippedRecord {
                offset,
                kind: Kind::Stamp,
                reason,
            }),
        }
    }
    Ok((stamps, skipped, limit))
}

/// Every stamp of the archive in the reference's fold order.
fn load_stamps(conn: &Connection, path: &Path) -> Result<StampIndex> {
    let e = sql_err(path);
    let mut stmt = conn.prepare(LOAD_STAMPS).map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut out = Vec::new();
    let parse_or_empty = |t: Option<String>| {
        t.filter(|t| !t.is_empty())
            .and_then(|t| json::parse(&t).ok())
            .unwrap_or_else(|| Value::Object(Object::new()))
    };
    while let Some(r) = rows.next().map_err(&e)? {
        let sel = text_col(r, 0).map_err(&e)?;
        let enr = text_col(r, 1).map_err(&e)?;
        out.push(FoldStamp {
            selector: parse_or_empty(sel),
            enrichment: parse_or_empty(enr),
        });
    }
    Ok(StampIndex::new(out))
}

/// Phase timings on stderr when `RELAYBURN_ARCHIVE_TRACE` is set, for
/// tuning builds on real ledgers.
pub(crate) struct Trace {
    on: bool,
    last: std::time::Instant,
}

impl Trace {
    pub(crate) fn new() -> Trace {
        Trace {
            on: std::env::var_os("RELAYBURN_ARCHIVE_TRACE").is_some(),
            last: std::time::Instant::now(),
        }
    }

    /// CPU time of the calling thread so far.
    pub(crate) fn thread_cpu() -> std::time::Duration {
        crate::sys::thread_cpu()
    }

    pub(crate) fn mark(&mut self, phase: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!("archive: {phase}: {:.3?}", now - self.last);
            self.last = now;
        }
    }
}

/// Apply `[start, EOF)` of `ledger` to `conn`, inside the caller's
/// transaction. The caller owns the cursor and timestamps.
pub(crate) fn apply_range(
    conn: &mut Connection,
    db_path: &Path,
    ledger: &Path,
    start: u64,
    mode: Mode,
    progress: super::Progress<'_>,
) -> Result<Applied> {
    let mut trace = Trace::new();
    let mut out = Applied {
        safe_offset: start,
        ..Applied::default()
    };
    let (new_stamps, limit) = scan_stamps(ledger, start, &mut out.skipped)?;
    trace.mark("stamp pass");
    out.stamps = new_stamps.len() as u64;
    {
        let mut ins = conn
            .prepare_cached(INSERT_STAMP)
            .map_err(sql_err(db_path))?;
        for s in &new_stamps {
            ins.execute(rusqlite::params_from_iter(s.params.iter()))
                .map_err(sql_err(db_path))?;
        }
    }
    let index = load_stamps(conn, db_path)?;
    trace.mark("stamp index");

    let mut sessions: HashSet<String> = HashSet::new();
    for s in &new_stamps {
        if let Some(sid) = s.selector.get("sessionId") {
            sessions.insert(format!("*|{}", sid.js_to_string()));
        }
    }

    let (tx, rx) = sync_channel::<Vec<Item>>(CHANNEL_BATCHES);
    let mut pass = ParsePass {
        index: &index,
        mode,
        out: &mut out,
        sessions: &mut sessions,
        exotic_turns: false,
        cache: FoldCache::default(),
        last_session_key: String::new(),
    };
    let (parsed, written) = std::thread::scope(|scope| {
        let conn_ref: &mut Connection = conn;
        let writer = scope.spawn(move || write_items(conn_ref, db_path, rx, mode));
        let parsed = pass.run(ledger, start, limit, tx, progress);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("archive writer thread panicked".into())));
        (parsed, written)
    });
    let exotic_turns = pass.exotic_turns;
    // A write error explains a failed send, so it is reported first.
    written?;
    parsed?;
    trace.mark("row pass");

    if mode == Mode::Fresh {
        schema::create_secondary_indexes(conn, db_path)?;
        schema::create_fidelity_index(conn, db_path)?;
        trace.mark("indexes");
    }

    // Refold turns hit by new stamps. A fresh build already folded every
    // turn with every stamp; only turns whose key fields are not plain
    // strings can fold differently from their stored copy, so only then
    // is the reference's refold replayed.
    let refold_needed = match mode {
        Mode::Incremental => !new_stamps.is_empty(),
        Mode::Fresh => exotic_turns && !new_stamps.is_empty(),
    };
    if refold_needed {
        refold(conn, db_path, &index, &new_stamps, &mut sessions)?;
    }
    trace.mark("refold");
    // A fresh archive's sessions, or very many touched ones, are derived
    // from one sequential scan; odd key values take the reference's
    // per-session statement.
    let scan = (mode == Mode::Fresh && !exotic_turns) || sessions.len() > SCAN_SESSIONS;
    out.sessions_touched = rebuild_sessions(conn, db_path, &sessions, scan)?;
    trace.mark("sessions");
    out.skipped.sort_by_key(|s| s.offset);
    Ok(out)
}

/// Pass 2's parsing side: what it reads (the stamp index, the mode) and
/// what it gathers (counters, skips, touched sessions) while it sends rows
/// to the writer.
struct ParsePass<'a> {
    index: &'a StampIndex,
    mode: Mode,
    out: &'a mut Applied,
    sessions: &'a mut HashSet<String>,
    /// Some turn has a key field that is not a plain string.
    exotic_turns: bool,
    cache: FoldCache,
    /// Consecutive turns mostly share a session: skip the set lookup then.
    last_session_key: String,
}

impl ParsePass<'_> {
    /// Parse `[start, limit)` and send its rows through `tx`.
    fn run(
        &mut self,
        ledger: &Path,
        start: u64,
        limit: u64,
        tx: SyncSender<Vec<Item>>,
        progress: super::Progress<'_>,
    ) -> Result<()> {
        let total = limit.saturating_sub(start);
        let mut next_report = start;
        let mut sc = LineScanner::open_at(ledger, start).ctx("read", ledger)?;
        let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
        let closed = || Error::Internal("archive writer stopped".into());
        while let Some(line) = sc.next_line().ctx("read", ledger)? {
            if line.offset >= limit || !line.terminated {
                break;
            }
            if line.offset >= next_report {
                progress(line.offset - start, total);
                next_report = line.offset + PROGRESS_STEP;
                crate::interrupt::check()?;
            }
            if line.oversized {
                self.out
                    .malformed
                    .push((line.offset, "line too long".into()));
                continue;
            }
            let len = line.bytes.len() as u64 + 1;
            let offset = line.offset;
            let mut v = match parse_line(line.bytes) {
                Parsed::Value(v) => v,
                Parsed::Malformed(why) => {
                    self.out.malformed.push((offset, why));
                    continue;
                }
                Parsed::Blank => continue,
            };
            self.out.scanned_bytes += len;
            self.out.safe_offset = offset + len;
            if let Some(item) = self.item(&mut v, offset) {
                batch.push(item);
                if batch.len() >= BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    tx.send(full).map_err(|_| closed())?;
                }
            }
        }
        if !batch.is_empty() {
            tx.send(batch).map_err(|_| closed())?;
        }
        progress(total, total);
        if std::env::var_os("RELAYBURN_ARCHIVE_TRACE").is_some() {
            eprintln!("archive: parser cpu {:.3?}", Trace::thread_cpu());
        }
        Ok(())
    }

    /// The row of one parsed line, counted; a line the archive refuses is
    /// recorded as skipped.
    fn item(&mut self, v: &mut Value, offset: u64) -> Option<Item> {
        let kind = line_kind(v)?;
        let made = match kind {
            Kind::Turn => self.turn_item(v),
            Kind::Compaction => record_mut(v, "compaction")
                .and_then(compaction_row)
                .map(Item::Compaction),
            Kind::ToolResultEvent => record_mut(v, "tool_result_event")
                .and_then(tool_result_event_row)
                .map(|row| Item::ToolResultEvent(Box::new(row))),
            _ => return None,
        };
        match made {
            Ok(item) => {
                let counter = match kind {
                    Kind::Turn => &mut self.out.turns,
                    Kind::Compaction => &mut self.out.compactions,
                    _ => &mut self.out.tool_result_events,
                };
                *counter += 1;
                Some(item)
            }
            Err(reason) => {
                self.out.skipped.push(SkippedRecord {
                    offset,
                    kind,
                    reason,
                });
                None
            }
        }
    }

    fn turn_item(&mut self, line: &mut Value) -> std::result::Result<Item, String> {
        let rec = match line.get("record") {
            Some(r @ Value::Object(_)) => r,
            _ => return Err("turn line has no record object".into()),
        };
        let cols = self.cache.columns(self.index, rec)?;
        let exotic = ["source", "sessionId", "messageId", "ts"]
            .iter()
            .any(|k| rec.get(k).and_then(Value::as_str).is_none());
        let keys = turn_keys(rec.as_object().map_or(&Object::new(), |o| o));
        let rec = record_mut(line, "turn")?;
        let row = turn_row(rec, cols)?;
        if keys.session_key != self.last_session_key {
            if !self.sessions.contains(&keys.session_key) {
                self.sessions.insert(keys.session_key.clone());
            }
            self.last_session_key = keys.session_key;
        }
        if exotic {
            self.exotic_turns = true;
        }
        let may_have_calls = self.mode == Mode::Incremental || exotic;
        Ok(Item::Turn(Box::new(row), may_have_calls))
    }
}

struct Writer<'c> {
    conn: &'c Connection,
    /// Index n upserts n + 1 turns.
    turns: Vec<Statement<'c>>,
    delete_calls: Statement<'c>,
    /// Index n inserts n + 1 tool calls.
    insert_calls: Vec<Statement<'c>>,
    compaction: Statement<'c>,
    /// Index n upserts n + 1 events.
    events: Vec<Option<Statement<'c>>>,
    /// Turns not yet written, each with whether its old tool calls must go.
    pending_turns: Vec<(Box<TurnRow>, bool)>,
    /// Boxed as they arrive, to keep the channel's items small.
    #[allow(clippy::vec_box)]
    pending_events: Vec<Box<[Sv; 14]>>,
}

impl Writer<'_> {
    fn flush_events(&mut self, e: &impl Fn(rusqlite::Error) -> Error) -> Result<()> {
        let mut start = 0;
        while start < self.pending_events.len() {
            let n = (self.pending_events.len() - start).min(EVENT_ROWS);
            if self.events[n - 1].is_none() {
                let sql = upsert_tool_result_events_sql(n);
                self.events[n - 1] = Some(self.conn.prepare(&sql).map_err(e)?);
            }
            let rows = &self.pending_events[start..start + n];
            if let Some(stmt) = self.events[n - 1].as_mut() {
                stmt.execute(rusqlite::params_from_iter(
                    rows.iter().flat_map(|r| r.iter()),
                ))
                .map_err(e)?;
            }
            start += n;
        }
        self.pending_events.clear();
        Ok(())
    }

    /// Write the pending turns, then, turn by turn, drop replaced tool
    /// calls and insert the new ones (several turns' calls per statement
    /// when no delete comes between).
    fn flush_turns(&mut self, e: &impl Fn(rusqlite::Error) -> Error) -> Result<()> {
        let turns = std::mem::take(&mut self.pending_turns);
        let mut start = 0;
        while start < turns.len() {
            let n = (turns.len() - start).min(TURN_ROWS);
            let params = turns[start..start + n]
                .iter()
                .flat_map(|(row, _)| row.cols.iter());
            self.turns[n - 1]
                .execute(rusqlite::params_from_iter(params))
                .map_err(e)?;
            start += n;
        }
        let mut calls: Vec<(&[Sv], Sv, &[Sv; TOOL_CALL_COLUMNS])> = Vec::new();
        for (row, must_delete) in &turns {
            let key = &row.cols[..3];
            if *must_delete {
                self.insert_calls(&mut calls, e)?;
                self.delete_calls
                    .execute(rusqlite::params_from_iter(key.iter()))
                    .map_err(e)?;
            }
            for (i, tc) in row.tool_calls.iter().enumerate() {
                calls.push((key, Sv::Int(i as i64), tc));
            }
        }
        self.insert_calls(&mut calls, e)?;
        Ok(())
    }

    fn insert_calls(
        &mut self,
        calls: &mut Vec<(&[Sv], Sv, &[Sv; TOOL_CALL_COLUMNS])>,
        e: &impl Fn(rusqlite::Error) -> Error,
    ) -> Result<()> {
        let mut start = 0;
        while start < calls.len() {
            let n = (calls.len() - start).min(CALL_ROWS);
            let params = calls[start..start + n]
                .iter()
                .flat_map(|(key, idx, tc)| key.iter().chain(std::iter::once(idx)).chain(tc.iter()));
            self.insert_calls[n - 1]
                .execute(rusqlite::params_from_iter(params))
                .map_err(e)?;
            start += n;
        }
        calls.clear();
        Ok(())
    }
}

fn key_hash(cols: &[Sv]) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for c in cols {
        match c {
            Sv::Text(s) => s.hash(&mut h),
            _ => return None,
        }
    }
    Some(h.finish())
}

fn write_items(
    conn: &mut Connection,
    path: &Path,
    rx: Receiver<Vec<Item>>,
    mode: Mode,
) -> Result<()> {
    let e = sql_err(path);
    let conn: &Connection = conn;
    let mut w = Writer {
        conn,
        turns: (1..=TURN_ROWS)
            .map(|n| {
                let sql = upsert_turns_sql(n);
                conn.prepare(&sql)
            })
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?,
        delete_calls: conn.prepare(DELETE_TOOL_CALLS).map_err(&e)?,
        insert_calls: (1..=CALL_ROWS)
            .map(|n| conn.prepare(&insert_tool_calls_sql(n)))
            .collect::<rusqlite::Result<_>>()
            .map_err(&e)?,
        compaction: conn.prepare(UPSERT_COMPACTION).map_err(&e)?,
        events: (0..EVENT_ROWS).map(|_| None).collect(),
        pending_turns: Vec::with_capacity(TURN_ROWS),
        pending_events: Vec::with_capacity(EVENT_ROWS),
    };
    // In a fresh archive a key seen for the first time has no tool calls
    // to delete; hashes only skip deletes, so a collision costs a delete.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut busy = std::time::Duration::ZERO;
    let trace = Trace::new();
    for batch in rx {
        let t0 = std::time::Instant::now();
        for item in batch {
            match item {
                Item::Turn(row, may_have_calls) => {
                    let must_delete = may_have_calls
                        || mode == Mode::Incremental
                        || match key_hash(&row.cols[..3]) {
                            Some(h) => !seen.insert(h),
                            None => true,
                        };
                    w.pending_turns.push((row, must_delete));
                    if w.pending_turns.len() == TURN_ROWS {
                        w.flush_turns(&e)?;
                    }
                }
                Item::Compaction(row) => {
                    w.compaction
                        .execute(rusqlite::params_from_iter(row.iter()))
                        .map_err(&e)?;
                }
                Item::ToolResultEvent(row) => {
                    w.pending_events.push(row);
                    if w.pending_events.len() == EVENT_ROWS {
                        w.flush_turns(&e)?;
                        w.flush_events(&e)?;
                    }
                }
            }
        }
        busy += t0.elapsed();
    }
    w.flush_turns(&e)?;
    w.flush_events(&e)?;
    if trace.on {
        eprintln!(
            "archive: writer busy: {busy:.3?}, cpu {:.3?}",
            Trace::thread_cpu()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pass 1 in two halves finds what one pass finds, wherever the
    /// stretch starts and whether or not the last line is torn.
    #[test]
    fn split_stamp_scan_equals_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut text = String::new();
        for i in 0..40 {
            match i % 5 {
                0 => text.push_str(&format!(
                    r#"{{"v":1,"kind":"stamp","ts":"2026-01-01T00:00:{i:02}.000Z","selector":{{"sessionId":"s{i}"}},"enrichment":{{"workflowId":"w{i}"}}}}"#
                )),
                1 => text.push_str(r#"{"v":1,"kind":"stamp","ts":"t","enrichment":{}}"#),
                2 => text.push_str(r"not json, no st\u0061mp"),
                3 => {}
                _ => text.push_str(&format!(
                    r#"{{"v":1,"kind":"turn","record":{{"messageId":"m{i}"}}}}"#
                )),
            }
            text.push('\n');
        }
        let whole = text.len();
        text.push_str(r#"{"v":1,"kind":"stamp","ts":"torn""#);
        for len in [whole, text.len()] {
            std::fs::write(&path, &text[..len]).unwrap();
            for start in [0, 1, 57, 300, whole as u64 / 2, whole as u64] {
                let start = text[..len]
                    .char_indices()
                    .map(|(i, _)| i as u64)
                    .filter(|&i| i == 0 || text.as_bytes()[i as usize - 1] == b'\n')
                    .find(|&i| i >= start)
                    .unwrap_or(len as u64);
                let run = |split_above| {
                    let mut skipped = Vec::new();
                    let (stamps, limit) =
                        scan_stamps_split(&path, start, &mut skipped, split_above).unwrap();
                    let params: Vec<[Sv; 5]> = stamps.into_iter().map(|s| s.params).collect();
                    let skips: Vec<u64> = skipped.iter().map(|s| s.offset).collect();
                    (params, skips, limit)
                };
                let one = run(u64::MAX);
                assert_eq!(run(0), one, "start {start}, length {len}");
                assert_eq!(one.2, whole as u64, "the torn line is not in the stretch");
                if start == 0 {
                    assert_eq!(one.0.len(), 8);
                    assert_eq!(one.1.len(), 8);
                }
            }
        }
    }
}
