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
//! Then come the refold of turns hit by new stamps and the re-derivation
//! of touched sessions, both with the reference's SQL semantics.

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
use super::rows::{
    bindable, compaction_row, record_mut, tool_result_event_row, turn_keys, turn_row, Sv, TurnRow,
    TOOL_CALL_COLUMNS, TURN_COLUMNS,
};
use super::schema::{self, sql_err, STAMP_WILDCARD};
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

#[doc(hidden)]
pub const INSERT_STAMP: &str = "INSERT OR REPLACE INTO stamps
  (source, session_id, ts, selector_json, enrichment_json, ledger_offset_bytes)
  VALUES ('*', ?1, ?2, ?3, ?4, ?5)";

const UPSERT_TURNS: &str = "INSERT INTO turns (
  source, session_id, message_id, turn_index, ts, model, project, project_key,
  activity, stop_reason, has_edits, retries, is_sidechain, subagent_id,
  parent_subagent_id, parent_tool_use_id, subagent_type, subagent_description,
  input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
  cache_create_5m_tokens, cache_create_1h_tokens, workflow_id, agent_id,
  persona, tier, enrichment_json, attribution_fidelity, tokens_present, cost_present
) VALUES ";

const UPSERT_TURN_TAIL: &str = "
ON CONFLICT (source, session_id, message_id) DO UPDATE SET
  turn_index = excluded.turn_index, ts = excluded.ts, model = excluded.model,
  project = excluded.project, project_key = excluded.project_key,
  activity = excluded.activity, stop_reason = excluded.stop_reason,
  has_edits = excluded.has_edits, retries = excluded.retries,
  is_sidechain = excluded.is_sidechain, subagent_id = excluded.subagent_id,
  parent_subagent_id = excluded.parent_subagent_id,
  parent_tool_use_id = excluded.parent_tool_use_id,
  subagent_type = excluded.subagent_type,
  subagent_description = excluded.subagent_description,
  input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
  reasoning_tokens = excluded.reasoning_tokens,
  cache_read_tokens = excluded.cache_read_tokens,
  cache_create_5m_tokens = excluded.cache_create_5m_tokens,
  cache_create_1h_tokens = excluded.cache_create_1h_tokens,
  workflow_id = excluded.workflow_id, agent_id = excluded.agent_id,
  persona = excluded.persona, tier = excluded.tier,
  enrichment_json = excluded.enrichment_json,
  attribution_fidelity = excluded.attribution_fidelity,
  tokens_present = excluded.tokens_present, cost_present = excluded.cost_present";

#[doc(hidden)]
pub const DELETE_TOOL_CALLS: &str =
    "DELETE FROM tool_calls WHERE source = ?1 AND session_id = ?2 AND message_id = ?3";

const INSERT_TOOL_CALLS: &str = "INSERT INTO tool_calls (
  source, session_id, message_id, call_index, tool_use_id, tool_name, target,
  args_hash, is_error, replaced_tools, collapsed_calls
) VALUES ";

#[doc(hidden)]
pub const UPSERT_COMPACTION: &str = "INSERT OR REPLACE INTO compactions
  (source, session_id, ts, preceding_message_id, tokens_before_compact)
  VALUES (?1, ?2, ?3, ?4, ?5)";

const UPSERT_TOOL_RESULT_EVENTS: &str = "INSERT OR REPLACE INTO tool_result_events (
  source, session_id, message_id, tool_use_id, call_index, event_index, status,
  content_length, content_hash, is_error, subagent_session_id, agent_id,
  event_source, ts
) VALUES ";

/// `INSERT … VALUES` head followed by `rows` groups of `width` parameters:
/// one statement per several rows saves most of the per-row overhead, and
/// rows of one statement apply in order, as separate statements would.
fn multi_row(head: &str, width: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..width {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// The turn upsert for `rows` rows (the benchmark's floor runs it with 1).
#[doc(hidden)]
pub fn upsert_turns_sql(rows: usize) -> String {
    multi_row(UPSERT_TURNS, TURN_COLUMNS, rows) + UPSERT_TURN_TAIL
}

/// The tool-call insert for `rows` rows.
#[doc(hidden)]
pub fn insert_tool_calls_sql(rows: usize) -> String {
    multi_row(INSERT_TOOL_CALLS, 11, rows)
}

/// The tool-result-event upsert for `rows` rows.
#[doc(hidden)]
pub fn upsert_tool_result_events_sql(rows: usize) -> String {
    multi_row(UPSERT_TOOL_RESULT_EVENTS, 14, rows)
}

/// Tool-result events per multi-row insert.
const EVENT_ROWS: usize = 32;
/// Tool calls per multi-row insert.
const CALL_ROWS: usize = 16;
/// Turns per multi-row upsert.
const TURN_ROWS: usize = 8;

/// By rowid: the row was just read, so the key lookup is not needed.
const REFOLD_TURN: &str = "UPDATE turns
  SET workflow_id = ?1, agent_id = ?2, persona = ?3, tier = ?4, enrichment_json = ?5
  WHERE rowid = ?6";

/// Re-derives one session from its turns. The aggregate is the
/// reference's: worst fidelity by rank (NULL classes ignored), "all full"
/// only when some turn carries a class, models in first-seen order of the
/// scan.
#[doc(hidden)]
pub const UPSERT_SESSION: &str = "INSERT INTO sessions (
  source, session_id, project, project_key, started_at, ended_at, turn_count,
  model_set_json, workflow_id, agent_id, parent_agent_id, has_subagent,
  min_fidelity, has_full_attribution
)
SELECT source, session_id, MIN(project), MIN(project_key), MIN(ts), MAX(ts),
  COUNT(*), json_group_array(DISTINCT model), MIN(workflow_id), MIN(agent_id),
  MIN(parent_subagent_id), COALESCE(MAX(is_sidechain), 0),
  CASE MIN(CASE attribution_fidelity
             WHEN 'cost-only' THEN 1 WHEN 'aggregate-only' THEN 2
             WHEN 'partial' THEN 3 WHEN 'usage-only' THEN 4 WHEN 'full' THEN 5
             ELSE NULL END)
    WHEN 1 THEN 'cost-only' WHEN 2 THEN 'aggregate-only' WHEN 3 THEN 'partial'
    WHEN 4 THEN 'usage-only' WHEN 5 THEN 'full' ELSE NULL END,
  CASE
    WHEN SUM(CASE WHEN attribution_fidelity IS NOT NULL THEN 1 ELSE 0 END) = 0 THEN NULL
    WHEN SUM(CASE WHEN attribution_fidelity IS NOT NULL AND attribution_fidelity <> 'full'
                  THEN 1 ELSE 0 END) = 0 THEN 1
    ELSE 0
  END
FROM turns
WHERE source = ?1 AND session_id = ?2
GROUP BY source, session_id
ON CONFLICT (source, session_id) DO UPDATE SET
  project = excluded.project, project_key = excluded.project_key,
  started_at = excluded.started_at, ended_at = excluded.ended_at,
  turn_count = excluded.turn_count, model_set_json = excluded.model_set_json,
  workflow_id = excluded.workflow_id, agent_id = excluded.agent_id,
  parent_agent_id = excluded.parent_agent_id, has_subagent = excluded.has_subagent,
  min_fidelity = excluded.min_fidelity,
  has_full_attribution = excluded.has_full_attribution";

/// Above this many touched sessions one scan of `turns` beats one index
/// walk per session.
const SCAN_SESSIONS: usize = 2000;

/// A stamp line of the stretch that the archive accepts.
struct NewStamp {
    selector: Value,
    /// session bucket, ts, selector_json, enrichment_json, offset.
    params: [Sv; 5],
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

fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    sql_err(path)
}

/// Pass 1: the stamps of `[start, EOF)` and the end of its last complete
/// line, which bounds pass 2 so both passes see the same lines.
fn scan_stamps(
    ledger: &Path,
    start: u64,
    skipped: &mut Vec<SkippedRecord>,
) -> Result<(Vec<NewStamp>, u64)> {
    let mut sc = LineScanner::open_at(ledger, start).ctx("read", ledger)?;
    let mut stamps = Vec::new();
    let mut limit = start;
    while let Some(line) = sc.next_line().ctx("read", ledger)? {
        if !line.terminated {
            break;
        }
        limit = line.offset + line.bytes.len() as u64 + 1;
        if line.oversized || !maybe_stamp(line.bytes) {
            continue;
        }
        let Parsed::Value(v) = parse_line(line.bytes) else {
            continue;
        };
        if line_kind(&v) != Some(Kind::Stamp) {
            continue;
        }
        match stamp_params(&v) {
            Ok((selector, [bucket, ts, sel_json, enr_json])) => stamps.push(NewStamp {
                selector,
                params: [bucket, ts, sel_json, enr_json, Sv::Int(line.offset as i64)],
            }),
            Err(reason) => skipped.push(SkippedRecord {
                offset: line.offset,
                kind: Kind::Stamp,
                reason,
            }),
        }
    }
    Ok((stamps, limit))
}

/// Every stamp of the archive in the reference's fold order.
fn load_stamps(conn: &Connection, path: &Path) -> Result<StampIndex> {
    let e = db_err(path);
    let mut stmt = conn
        .prepare(
            "SELECT selector_json, enrichment_json FROM stamps ORDER BY ts, ledger_offset_bytes",
        )
        .map_err(&e)?;
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

/// A column read as text, whatever its storage class.
fn text_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
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
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage fills the struct it is given.
        let ok = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) } == 0;
        if !ok {
            return std::time::Duration::ZERO;
        }
        // SAFETY: initialised by the successful call above.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| {
            std::time::Duration::from_secs(t.tv_sec as u64)
                + std::time::Duration::from_micros(t.tv_usec as u64)
        };
        tv(ru.ru_utime) + tv(ru.ru_stime)
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
        let mut ins = conn.prepare_cached(INSERT_STAMP).map_err(db_err(db_path))?;
        for s in &new_stamps {
            ins.execute(rusqlite::params_from_iter(s.params.iter()))
                .map_err(db_err(db_path))?;
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
    let mut exotic_turns = false;
    let (parsed, written) = std::thread::scope(|scope| {
        let conn_ref: &mut Connection = conn;
        let writer = scope.spawn(move || write_items(conn_ref, db_path, rx, mode));
        let parsed = parse_pass(
            ledger,
            start,
            limit,
            &index,
            mode,
            tx,
            &mut out,
            &mut sessions,
            &mut exotic_turns,
            progress,
        );
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(Error::InvalidInput("archive writer thread panicked".into())));
        (parsed, written)
    });
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

#[allow(clippy::too_many_arguments)]
fn parse_pass(
    ledger: &Path,
    start: u64,
    limit: u64,
    index: &StampIndex,
    mode: Mode,
    tx: SyncSender<Vec<Item>>,
    out: &mut Applied,
    sessions: &mut HashSet<String>,
    exotic_turns: &mut bool,
    progress: super::Progress<'_>,
) -> Result<()> {
    let total = limit.saturating_sub(start);
    let mut next_report = start;
    let mut sc = LineScanner::open_at(ledger, start).ctx("read", ledger)?;
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    let mut last_session_key = String::new();
    let mut cache = FoldCache::default();
    let closed = || Error::InvalidInput("archive writer stopped".into());
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
            out.malformed.push((line.offset, "line too long".into()));
            continue;
        }
        let len = line.bytes.len() as u64 + 1;
        let offset = line.offset;
        let mut v = match parse_line(line.bytes) {
            Parsed::Value(v) => v,
            Parsed::Malformed(why) => {
                out.malformed.push((offset, why));
                continue;
            }
            Parsed::Blank => continue,
        };
        out.scanned_bytes += len;
        out.safe_offset = offset + len;
        let kind = line_kind(&v);
        let item = match kind {
            Some(Kind::Turn) => {
                match turn_item(
                    &mut v,
                    index,
                    &mut cache,
                    mode,
                    &mut last_session_key,
                    sessions,
                    exotic_turns,
                ) {
                    Ok(item) => {
                        out.turns += 1;
                        Some(item)
                    }
                    Err(reason) => {
                        out.skipped.push(SkippedRecord {
                            offset,
                            kind: Kind::Turn,
                            reason,
                        });
                        None
                    }
                }
            }
            Some(Kind::Compaction) => {
                match record_mut(&mut v, "compaction").and_then(compaction_row) {
                    Ok(row) => {
                        out.compactions += 1;
                        Some(Item::Compaction(row))
                    }
                    Err(reason) => {
                        out.skipped.push(SkippedRecord {
                            offset,
                            kind: Kind::Compaction,
                            reason,
                        });
                        None
                    }
                }
            }
            Some(Kind::ToolResultEvent) => {
                match record_mut(&mut v, "tool_result_event").and_then(tool_result_event_row) {
                    Ok(row) => {
                        out.tool_result_events += 1;
                        Some(Item::ToolResultEvent(Box::new(row)))
                    }
                    Err(reason) => {
                        out.skipped.push(SkippedRecord {
                            offset,
                            kind: Kind::ToolResultEvent,
                            reason,
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(item) = item {
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

fn turn_item(
    line: &mut Value,
    index: &StampIndex,
    cache: &mut FoldCache,
    mode: Mode,
    last_session_key: &mut String,
    sessions: &mut HashSet<String>,
    exotic_turns: &mut bool,
) -> std::result::Result<Item, String> {
    let rec = match line.get("record") {
        Some(r @ Value::Object(_)) => r,
        _ => return Err("turn line has no record object".into()),
    };
    let cols = cache.columns(index, rec)?;
    let exotic = ["source", "sessionId", "messageId", "ts"]
        .iter()
        .any(|k| rec.get(k).and_then(Value::as_str).is_none());
    let keys = turn_keys(rec.as_object().map_or(&Object::new(), |o| o));
    let rec = record_mut(line, "turn")?;
    let row = turn_row(rec, cols)?;
    if keys.session_key != *last_session_key {
        if !sessions.contains(&keys.session_key) {
            sessions.insert(keys.session_key.clone());
        }
        *last_session_key = keys.session_key;
    }
    if exotic {
        *exotic_turns = true;
    }
    let may_have_calls = mode == Mode::Incremental || exotic;
    Ok(Item::Turn(Box::new(row), may_have_calls))
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
    let e = db_err(path);
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

/// Distinct values of `turns.source`, stepping through an index whose
/// first column is `source` instead of scanning the table.
fn distinct_sources(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    let e = db_err(path);
    let mut first = conn.prepare("SELECT MIN(source) FROM turns").map_err(&e)?;
    let mut next = conn
        .prepare("SELECT MIN(source) FROM turns WHERE source > ?1")
        .map_err(&e)?;
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<String> = first.query_row([], |r| text_col(r, 0)).map_err(&e)?;
    while let Some(s) = cur {
        cur = next.query_row([&s], |r| text_col(r, 0)).map_err(&e)?;
        out.push(s);
    }
    Ok(out)
}

/// Candidate turns are collected as rowids first (memory stays small even
/// when a stamp reaches most turns), then read back one by one.
const TURN_KEY_COLS: &str = "SELECT rowid FROM turns";

const REFOLD_READ: &str = "SELECT source, session_id, message_id, ts,
  workflow_id, agent_id, persona, tier, enrichment_json FROM turns WHERE rowid = ?1";

fn stored(v: rusqlite::types::ValueRef<'_>) -> Sv {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Sv::Null,
        ValueRef::Integer(i) => Sv::Int(i),
        ValueRef::Real(f) => Sv::Real(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => Sv::Text(String::from_utf8_lossy(t).into_owned()),
    }
}

/// Would binding `new` store exactly `old`? Text compares as bytes; a
/// double bound to a text column is stored as text, so it never counts as
/// equal (the row is rewritten, which is always correct).
fn same_stored(new: &Sv, old: &Sv) -> bool {
    match (new, old) {
        (Sv::Null, Sv::Null) => true,
        (Sv::Text(a), Sv::Text(b)) => a == b,
        _ => false,
    }
}

/// Parameters per `IN (…)` lookup.
const IN_CHUNK: usize = 500;

/// Turns a stamp may apply to, found as the reference finds them: by the
/// first selector field present among sessionId, messageId and range.
/// The set is the reference's; the lookups use indexes where it scans
/// (sessionId per source, all messageIds in one pass).
fn refold(
    conn: &Connection,
    path: &Path,
    index: &StampIndex,
    stamps: &[NewStamp],
    sessions: &mut HashSet<String>,
) -> Result<()> {
    let e = db_err(path);
    let mut targets: HashSet<i64> = HashSet::new();
    let mut collect = |stmt: &mut Statement<'_>, params: &[&Sv]| -> Result<()> {
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            targets.insert(r.get(0).map_err(&e)?);
        }
        Ok(())
    };
    let sources: Vec<Sv> = distinct_sources(conn, path)?
        .into_iter()
        .map(Sv::Text)
        .collect();
    let mut by_session = conn
        .prepare(&format!(
            "{TURN_KEY_COLS} WHERE source = ?1 AND session_id = ?2"
        ))
        .map_err(&e)?;
    let mut message_ids: Vec<Sv> = Vec::new();
    for s in stamps {
        let sel = &s.selector;
        if let Some(sid) = sel.get("sessionId") {
            let p = bindable(sid).unwrap_or(Sv::Null);
            for src in &sources {
                collect(&mut by_session, &[src, &p])?;
            }
        } else if let Some(mid) = sel.get("messageId") {
            message_ids.push(bindable(mid).unwrap_or(Sv::Null));
        } else if let Some(range) = sel.get("range").filter(|r| r.is_truthy()) {
            let mut wheres = Vec::new();
            let mut params = Vec::new();
            for (k, op) in [("fromTs", ">="), ("toTs", "<=")] {
                if let Some(b) = range.get(k).filter(|b| b.is_truthy()) {
                    params.push(bindable(b).unwrap_or(Sv::Null));
                    wheres.push(format!("ts {op} ?{}", params.len()));
                }
            }
            let sql = if wheres.is_empty() {
                TURN_KEY_COLS.to_string()
            } else {
                format!("{TURN_KEY_COLS} WHERE {}", wheres.join(" AND "))
            };
            let mut stmt = conn.prepare(&sql).map_err(&e)?;
            let refs: Vec<&Sv> = params.iter().collect();
            collect(&mut stmt, &refs)?;
        }
    }
    for chunk in message_ids.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut stmt = conn
            .prepare(&format!("{TURN_KEY_COLS} WHERE message_id IN ({marks})"))
            .map_err(&e)?;
        let refs: Vec<&Sv> = chunk.iter().collect();
        collect(&mut stmt, &refs)?;
    }
    let mut rowids: Vec<i64> = targets.into_iter().collect();
    rowids.sort_unstable();
    let mut read = conn.prepare(REFOLD_READ).map_err(&e)?;
    let mut update = conn.prepare(REFOLD_TURN).map_err(&e)?;
    let mut cache = FoldCache::default();
    for rowid in rowids {
        let (key, current) = read
            .query_row([rowid], |r| {
                let mut key: [String; 4] = Default::default();
                for (i, slot) in key.iter_mut().enumerate() {
                    *slot = text_col(r, i)?.unwrap_or_default();
                }
                let mut current: [Sv; 5] = [Sv::Null, Sv::Null, Sv::Null, Sv::Null, Sv::Null];
                for (i, slot) in current.iter_mut().enumerate() {
                    *slot = stored(r.get_ref(4 + i)?);
                }
                Ok((key, current))
            })
            .map_err(&e)?;
        let [source, session_id, message_id, ts] = key;
        let mut fake = Object::new();
        fake.insert("source", Value::from(source.as_str()));
        fake.insert("sessionId", Value::from(session_id.as_str()));
        fake.insert("messageId", Value::from(message_id));
        fake.insert("ts", Value::from(ts));
        let fake = Value::Object(fake);
        // Values that cannot be bound were refused with their stamp.
        let c = cache.columns(index, &fake).map_err(Error::InvalidInput)?;
        let new = [
            c.workflow_id,
            c.agent_id,
            c.persona,
            c.tier,
            Sv::Text(c.json),
        ];
        // Rewriting a row with the values it holds changes nothing.
        if !new.iter().zip(&current).all(|(n, o)| same_stored(n, o)) {
            let [w, a, p, t, j] = new;
            update
                .execute(rusqlite::params![w, a, p, t, j, rowid])
                .map_err(&e)?;
        }
        sessions.insert(format!("{source}|{session_id}"));
    }
    Ok(())
}

/// Re-derive the touched sessions; returns how many distinct session ids
/// were touched (the reference's count, which ignores the source).
fn rebuild_sessions(
    conn: &Connection,
    path: &Path,
    keys: &HashSet<String>,
    scan: bool,
) -> Result<u64> {
    let e = db_err(path);
    let mut distinct: HashSet<&str> = HashSet::new();
    for k in keys {
        distinct.insert(k.split_once('|').map_or(k.as_str(), |(_, s)| s));
    }
    let aggregates = if scan {
        session_scan::scan(conn, path)?
    } else {
        None
    };
    let mut resolved: HashSet<String> = HashSet::new();
    let mut sources: Option<Vec<String>> = None;
    let mut exists = conn
        .prepare("SELECT 1 FROM turns WHERE source = ?1 AND session_id = ?2 LIMIT 1")
        .map_err(&e)?;
    for k in keys {
        if let Some(sid) = k.strip_prefix("*|") {
            // A stamp's session: every source that has turns in it.
            if sources.is_none() {
                sources = Some(distinct_sources(conn, path)?);
            }
            for src in sources.iter().flatten() {
                if exists.exists([src.as_str(), sid]).map_err(&e)? {
                    resolved.insert(format!("{src}|{sid}"));
                }
            }
        } else {
            resolved.insert(k.clone());
        }
    }
    match aggregates {
        Some(mut agg) => {
            let mut insert = conn.prepare(session_scan::INSERT_SESSION).map_err(&e)?;
            for k in &resolved {
                let (source, sid) = k.split_once('|').unwrap_or((k.as_str(), ""));
                let key = (source.as_bytes().to_vec(), sid.as_bytes().to_vec());
                if let Some(a) = agg.remove(&key) {
                    insert
                        .execute(rusqlite::params_from_iter(a.row(source, sid).iter()))
                        .map_err(&e)?;
                }
            }
        }
        None => {
            let mut upsert = conn.prepare(UPSERT_SESSION).map_err(&e)?;
            for k in &resolved {
                let (source, sid) = k.split_once('|').unwrap_or((k.as_str(), ""));
                upsert.execute([source, sid]).map_err(&e)?;
            }
        }
    }
    Ok(distinct.len() as u64)
}

/// The session aggregate of [`UPSERT_SESSION`] computed in one pass over
/// the `turns` table instead of one index walk per session, with SQLite's
/// semantics: MIN/MAX of text by bytes, NULLs ignored, models in the order
/// of `idx_turns_session` (turn_index as SQLite orders mixed types, then
/// rowid).
mod session_scan {
    use std::cmp::Ordering;
    use std::collections::HashMap;
    use std::path::Path;

    use rusqlite::types::ValueRef;
    use rusqlite::Connection;

    use super::{db_err, Sv};
    use crate::error::Result;

    pub(super) const INSERT_SESSION: &str = "INSERT OR REPLACE INTO sessions (
  source, session_id, project, project_key, started_at, ended_at, turn_count,
  model_set_json, workflow_id, agent_id, parent_agent_id, has_subagent,
  min_fidelity, has_full_attribution
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

    /// An index key value: NULL < numbers < text (< blob, not stored here).
    #[derive(Debug, Clone)]
    enum Key {
        Int(i64),
        Real(f64),
        Text(Vec<u8>),
    }

    fn cmp_int_real(i: i64, r: f64) -> Ordering {
        let f = i as f64;
        match f.partial_cmp(&r) {
            Some(Ordering::Equal) => {
                // Equal as doubles: decide on the exact integer value.
                if r >= 9_223_372_036_854_775_808.0 {
                    Ordering::Less
                } else if r < -9_223_372_036_854_775_808.0 {
                    Ordering::Greater
                } else {
                    i.cmp(&(r as i64))
                }
            }
            Some(o) => o,
            None => Ordering::Greater,
        }
    }

    fn cmp_key(a: &Key, b: &Key) -> Ordering {
        match (a, b) {
            (Key::Int(x), Key::Int(y)) => x.cmp(y),
            (Key::Real(x), Key::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (Key::Int(x), Key::Real(y)) => cmp_int_real(*x, *y),
            (Key::Real(x), Key::Int(y)) => cmp_int_real(*y, *x).reverse(),
            (Key::Text(x), Key::Text(y)) => x.cmp(y),
            (Key::Text(_), _) => Ordering::Greater,
            (_, Key::Text(_)) => Ordering::Less,
        }
    }

    #[derive(Default)]
    pub(super) struct Agg {
        count: i64,
        min_ts: Option<Vec<u8>>,
        max_ts: Option<Vec<u8>>,
        /// project, project_key, workflow_id, agent_id, parent_subagent_id.
        mins: [Option<Vec<u8>>; 5],
        max_sidechain: Option<Key>,
        min_rank: Option<u8>,
        known: i64,
        not_full: i64,
        /// Each distinct model with the first index position it has.
        models: Vec<(Vec<u8>, Key, i64)>,
    }

    fn text(v: ValueRef<'_>) -> Option<Option<Vec<u8>>> {
        match v {
            ValueRef::Null => Some(None),
            ValueRef::Text(t) => Some(Some(t.to_vec())),
            _ => None,
        }
    }

    fn min_into(slot: &mut Option<Vec<u8>>, v: Option<Vec<u8>>, want_min: bool) {
        if let Some(v) = v {
            let replace = match slot {
                None => true,
                Some(cur) => {
                    if want_min {
                        v < *cur
                    } else {
                        v > *cur
                    }
                }
            };
            if replace {
                *slot = Some(v);
            }
        }
    }

    const RANKS: [&str; 5] = [
        "cost-only",
        "aggregate-only",
        "partial",
        "usage-only",
        "full",
    ];

    impl Agg {
        pub(super) fn row(self, source: &str, sid: &str) -> [Sv; 14] {
            let t = |v: Option<Vec<u8>>| match v {
                Some(b) => Sv::Text(String::from_utf8_lossy(&b).into_owned()),
                None => Sv::Null,
            };
            let mut models = self.models;
            models.sort_by(|a, b| cmp_key(&a.1, &b.1).then(a.2.cmp(&b.2)));
            let mut json = String::from("[");
            for (i, (m, _, _)) in models.iter().enumerate() {
                if i > 0 {
                    json.push(',');
                }
                crate::json::write_str(&mut json, &String::from_utf8_lossy(m));
            }
            json.push(']');
            let has_subagent = match self.max_sidechain {
                None => Sv::Int(0),
                Some(Key::Int(i)) => Sv::Int(i),
                Some(Key::Real(r)) => Sv::Real(r),
                Some(Key::Text(b)) => Sv::Text(String::from_utf8_lossy(&b).into_owned()),
            };
            let min_fidelity = match self.min_rank {
                Some(r) => Sv::Text(RANKS[r as usize - 1].to_string()),
                None => Sv::Null,
            };
            let full = if self.known == 0 {
                Sv::Null
            } else {
                Sv::Int(i64::from(self.not_full == 0))
            };
            let [project, project_key, workflow, agent, parent] = self.mins;
            [
                Sv::Text(source.to_string()),
                Sv::Text(sid.to_string()),
                t(project),
                t(project_key),
                t(self.min_ts),
                t(self.max_ts),
                Sv::Int(self.count),
                Sv::Text(json),
                t(workflow),
                t(agent),
                t(parent),
                has_subagent,
                min_fidelity,
                full,
            ]
        }
    }

    pub(super) type Aggregates = HashMap<(Vec<u8>, Vec<u8>), Agg>;

    /// Aggregate every session of `turns`; `None` when a value has a type
    /// this pass does not model (the caller then uses the SQL statement).
    pub(super) fn scan(conn: &Connection, path: &Path) -> Result<Option<Aggregates>> {
        let e = db_err(path);
        let mut stmt = conn
            .prepare(
                "SELECT rowid, source, session_id, turn_index, ts, model, project, project_key,
                        workflow_id, agent_id, parent_subagent_id, is_sidechain,
                        attribution_fidelity
                 FROM turns",
            )
            .map_err(&e)?;
        let mut rows = stmt.query([]).map_err(&e)?;
        let mut out: Aggregates = HashMap::new();
        while let Some(r) = rows.next().map_err(&e)? {
            let rowid: i64 = r.get(0).map_err(&e)?;
            let (Some(Some(source)), Some(Some(sid))) = (
                text(r.get_ref(1).map_err(&e)?),
                text(r.get_ref(2).map_err(&e)?),
            ) else {
                return Ok(None);
            };
            let key = match r.get_ref(3).map_err(&e)? {
                ValueRef::Integer(i) => Key::Int(i),
                ValueRef::Real(f) => Key::Real(f),
                ValueRef::Text(t) => Key::Text(t.to_vec()),
                _ => return Ok(None),
            };
            let (Some(Some(ts)), Some(Some(model))) = (
                text(r.get_ref(4).map_err(&e)?),
                text(r.get_ref(5).map_err(&e)?),
            ) else {
                return Ok(None);
            };
            let mut mins: [Option<Vec<u8>>; 5] = Default::default();
            for (i, slot) in mins.iter_mut().enumerate() {
                match text(r.get_ref(6 + i).map_err(&e)?) {
                    Some(v) => *slot = v,
                    None => return Ok(None),
                }
            }
            let side = match r.get_ref(11).map_err(&e)? {
                ValueRef::Null => None,
                ValueRef::Integer(i) => Some(Key::Int(i)),
                ValueRef::Real(f) => Some(Key::Real(f)),
                _ => return Ok(None),
            };
            let fid = match text(r.get_ref(12).map_err(&e)?) {
                Some(v) => v,
                None => return Ok(None),
            };
            let a = out.entry((source, sid)).or_default();
            a.count += 1;
            min_into(&mut a.min_ts, Some(ts.clone()), true);
            min_into(&mut a.max_ts, Some(ts), false);
            for (slot, v) in a.mins.iter_mut().zip(mins) {
                min_into(slot, v, true);
            }
            if let Some(sv) = side {
                let bigger = match &a.max_sidechain {
                    None => true,
                    Some(cur) => cmp_key(&sv, cur) == Ordering::Greater,
                };
                if bigger {
                    a.max_sidechain = Some(sv);
                }
            }
            if let Some(f) = fid {
                a.known += 1;
                if f != b"full" {
                    a.not_full += 1;
                }
                if let Some(rank) = RANKS.iter().position(|r| r.as_bytes() == f.as_slice()) {
                    let rank = rank as u8 + 1;
                    a.min_rank = Some(a.min_rank.map_or(rank, |m| m.min(rank)));
                }
            }
            match a.models.iter_mut().find(|(m, _, _)| *m == model) {
                Some(entry) => {
                    let earlier = cmp_key(&key, &entry.1).then(rowid.cmp(&entry.2));
                    if earlier == Ordering::Less {
                        entry.1 = key;
                        entry.2 = rowid;
                    }
                }
                None => a.models.push((model, key, rowid)),
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions_of(scan: bool) -> Vec<Vec<String>> {
        let conn = Connection::open_in_memory().unwrap();
        let p = Path::new(":memory:");
        schema::ensure_schema(&conn, p, true).unwrap();
        // Mixed turn_index types, repeated models out of order, NULL and
        // known fidelity, sidechain flags, text minima with shared prefixes.
        conn.execute_batch(
            "INSERT INTO turns (source, session_id, message_id, turn_index, ts, model, project,
               project_key, is_sidechain, workflow_id, agent_id, parent_subagent_id,
               attribution_fidelity)
             VALUES
             ('a','s1','m1',3,'2026-01-03','zeta','/p/b',NULL,NULL,'wf2',NULL,NULL,'full'),
             ('a','s1','m2',1,'2026-01-01','beta','/p/a','k',0,'wf1','g',NULL,NULL),
             ('a','s1','m3',1.5,'2026-01-02','gamma','/p/ab','j',1,NULL,NULL,'pp','partial'),
             ('a','s1','m4','x','2026-01-05','omega',NULL,NULL,NULL,NULL,NULL,NULL,'full'),
             ('a','s1','m5',1,'2026-01-04','beta',NULL,NULL,NULL,NULL,NULL,NULL,'usage-only'),
             ('b','s1','m1',0,'2026-02-01','m',NULL,NULL,NULL,NULL,NULL,NULL,NULL),
             ('b','s2','m1',0,'2026-02-01','m\"q',NULL,NULL,0,NULL,NULL,NULL,'full'),
             ('b','s2','m2',0,'2026-02-02','m\"q',NULL,NULL,0,NULL,NULL,NULL,'odd');",
        )
        .unwrap();
        let keys: HashSet<String> = ["a|s1", "*|s1", "b|s2", "c|none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(rebuild_sessions(&conn, p, &keys, scan).unwrap(), 3);
        let mut stmt = conn
            .prepare("SELECT * FROM sessions ORDER BY source, session_id")
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>())
            })
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn session_scan_equals_the_per_session_statement() {
        let by_sql = sessions_of(false);
        assert_eq!(by_sql.len(), 3);
        // Worked by hand for (a, s1): models by (turn_index, rowid) are
        // beta(1), beta(1), gamma(1.5), zeta(3), omega('x'); the smallest
        // project is '/p/a'; the worst class is partial.
        assert_eq!(by_sql[0][7], r#"["beta","gamma","zeta","omega"]"#);
        assert_eq!(by_sql[0][2], "/p/a");
        assert_eq!(by_sql[0][12], "partial");
        assert_eq!(by_sql[0][11], "Integer(1)");
        assert_eq!(by_sql[2][7], r#"["m\"q"]"#);
        assert_eq!(sessions_of(true), by_sql);
    }
}
