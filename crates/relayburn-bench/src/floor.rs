//! The SQLite floor of a full rebuild: the rows a rebuild writes, already
//! in memory, inserted with the rebuild's statements and settings into a
//! fresh database of the same schema, in one transaction.
//!
//! No rebuild can be faster than this, so it tells how much of a
//! rebuild's time is SQLite's and how much is ours (reading, parsing,
//! folding, handing rows over).
//!
//! The archive's row builders are private to it, so the rows are taken
//! from an archive the rebuild wrote: each table read back, then replayed
//! in ledger order (a pre-pass over the ledger finds which row each line
//! produced, duplicates included), bound with the types the rebuild binds
//! (JSON numbers as doubles, flags as integers). The schema is the
//! archive's own (`sqlite_master`), so it cannot drift; the statements and
//! pragmas below are those of `src/archive/` and a test checks that the
//! floor's database equals the rebuild's table for table.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};

use relayburn_ledger::json::Value;
use relayburn_ledger::jsonl::{parse_line, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};
use relayburn_ledger::LedgerHome;

/// The rebuild's settings for the file it builds aside, and the statements
/// the floor runs exactly as the build does, taken from the archive's SQL
/// module itself, with the build's multi-row statement sizes.
pub use relayburn_ledger::archive::sql::{
    insert_tool_calls_sql, upsert_tool_result_events_sql, upsert_turns_sql, Sv, BULK_PRAGMAS,
    CALL_ROWS, DELETE_TOOL_CALLS, EVENT_ROWS, INSERT_STAMP, LOAD_STAMPS, TURN_ROWS,
    UPSERT_COMPACTION, UPSERT_SESSION,
};

const TURN_COLUMNS: &str = "source, session_id, message_id, turn_index, ts, model, project,
  project_key, activity, stop_reason, has_edits, retries, is_sidechain, subagent_id,
  parent_subagent_id, parent_tool_use_id, subagent_type, subagent_description,
  input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
  cache_create_5m_tokens, cache_create_1h_tokens, workflow_id, agent_id, persona, tier,
  enrichment_json, attribution_fidelity, tokens_present, cost_present";
/// Turn columns the rebuild binds from JSON numbers (so as doubles).
const TURN_NUMBERS: &[usize] = &[3, 11, 18, 19, 20, 21, 22, 23];

const CALL_COLUMNS: &str = "source, session_id, message_id, call_index, tool_use_id,
  tool_name, target, args_hash, is_error, replaced_tools, collapsed_calls";
/// Of the seven columns after the key and call_index: collapsed_calls.
const CALL_NUMBERS: &[usize] = &[6];

const EVENT_COLUMNS: &str = "source, session_id, message_id, tool_use_id, call_index,
  event_index, status, content_length, content_hash, is_error, subagent_session_id,
  agent_id, event_source, ts";
const EVENT_NUMBERS: &[usize] = &[4, 5, 7];

const COMPACTION_COLUMNS: &str =
    "source, session_id, ts, preceding_message_id, tokens_before_compact";
const COMPACTION_NUMBERS: &[usize] = &[4];

/// Key text of a stored value, written the way [`key_of`] writes the
/// ledger's value, so that the two meet.
fn key_part(v: &Sv, out: &mut String) {
    use std::fmt::Write;
    match v {
        Sv::Null => out.push_str("\u{0}null"),
        Sv::Int(i) => {
            let _ = write!(out, "{}", *i as f64);
        }
        Sv::Real(f) => {
            let _ = write!(out, "{f}");
        }
        Sv::Text(s) => out.push_str(s),
    }
    out.push('\u{1}');
}

/// The key text of a ledger value.
fn key_of(v: Option<&Value>, out: &mut String) {
    match v {
        Some(Value::String(s)) => out.push_str(&s.to_lossy()),
        Some(Value::Number(n)) => {
            use std::fmt::Write;
            let _ = write!(out, "{n}");
        }
        _ => out.push_str("\u{0}null"),
    }
    out.push('\u{1}');
}

/// One ledger line that produced rows, by index into the row tables.
#[derive(Debug, Clone, Copy)]
enum Item {
    Turn(u32),
    Compaction(u32),
    ToolResultEvent(u32),
}

/// Everything the floor inserts, in the order the rebuild inserts it.
#[derive(Debug, Default)]
pub struct FloorRows {
    tables: Vec<String>,
    indexes: Vec<String>,
    stamps: Vec<[Sv; 5]>,
    turns: Vec<Box<[Sv]>>,
    /// Tool-call columns after the key, per turn, in call_index order.
    calls: Vec<Vec<[Sv; 7]>>,
    events: Vec<Box<[Sv]>>,
    compactions: Vec<Box<[Sv]>>,
    items: Vec<Item>,
    sessions: Vec<(String, String)>,
}

/// What the floor inserted.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloorCounts {
    pub turn_statements: u64,
    pub tool_call_statements: u64,
    pub tool_call_deletes: u64,
    pub event_statements: u64,
    pub compaction_statements: u64,
    pub stamp_statements: u64,
    pub sessions: u64,
}

impl FloorCounts {
    /// Every insert, upsert and delete statement executed.
    pub fn statements(&self) -> u64 {
        self.turn_statements
            + self.tool_call_statements
            + self.tool_call_deletes
            + self.event_statements
            + self.compaction_statements
            + self.stamp_statements
            + self.sessions
    }
}

impl FloorRows {
    pub fn counts(&self) -> FloorCounts {
        let mut c = FloorCounts {
            stamp_statements: self.stamps.len() as u64,
            sessions: self.sessions.len() as u64,
            ..FloorCounts::default()
        };
        let mut seen = HashSet::new();
        for item in &self.items {
            match *item {
                Item::Turn(i) => {
                    c.turn_statements += 1;
                    if !seen.insert(i) {
                        c.tool_call_deletes += 1;
                    }
                    c.tool_call_statements += self.calls[i as usize].len() as u64;
                }
                Item::Compaction(_) => c.compaction_statements += 1,
                Item::ToolResultEvent(_) => c.event_statements += 1,
            }
        }
        c
    }
}

fn read_table(
    conn: &Connection,
    sql: &str,
    numbers: &[usize],
    mut each: impl FnMut(Vec<Sv>),
) -> Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let mut cols = Vec::with_capacity(n);
        for i in 0..n {
            let mut v = Sv::from_stored(r.get_ref(i)?);
            if numbers.contains(&i) {
                if let Sv::Int(x) = v {
                    v = Sv::Real(x as f64);
                }
            }
            cols.push(v);
        }
        each(cols);
    }
    Ok(())
}

fn key_text(cols: &[Sv], n: usize) -> String {
    let mut k = String::new();
    for c in &cols[..n] {
        key_part(c, &mut k);
    }
    k
}

/// Collect the rows of `home`'s archive (which a full rebuild must have
/// written) in the order a rebuild of its ledger inserts them.
pub fn collect(home: &LedgerHome) -> Result<FloorRows> {
    let archive = home.archive();
    let conn = Connection::open_with_flags(&archive, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", archive.display()))?;
    let mut rows = FloorRows::default();

    let mut stmt = conn.prepare(
        "SELECT type, sql FROM sqlite_master
         WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid",
    )?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        let kind: String = r.get(0)?;
        let sql: String = r.get(1)?;
        match kind.as_str() {
            "table" => rows.tables.push(sql),
            "index" => rows.indexes.push(sql),
            _ => {}
        }
    }
    drop(q);
    drop(stmt);
    if !rows.tables.iter().any(|t| t.contains("turns")) {
        bail!("{} has no turns table", archive.display());
    }

    read_table(
        &conn,
        "SELECT session_id, ts, selector_json, enrichment_json, ledger_offset_bytes
         FROM stamps ORDER BY ledger_offset_bytes",
        &[],
        |c| {
            if let Ok(arr) = <[Sv; 5]>::try_from(c) {
                rows.stamps.push(arr);
            }
        },
    )?;

    let mut turn_at: HashMap<String, u32> = HashMap::new();
    read_table(
        &conn,
        &format!("SELECT {TURN_COLUMNS} FROM turns ORDER BY rowid"),
        TURN_NUMBERS,
        |c| {
            turn_at.insert(key_text(&c, 3), rows.turns.len() as u32);
            rows.turns.push(c.into_boxed_slice());
        },
    )?;
    rows.calls = vec![Vec::new(); rows.turns.len()];
    let mut orphan_calls = 0u64;
    read_table(
        &conn,
        &format!(
            "SELECT {CALL_COLUMNS} FROM tool_calls
             ORDER BY source, session_id, message_id, call_index"
        ),
        &[],
        |c| {
            let key = key_text(&c, 3);
            let mut rest: [Sv; 7] = Default::default();
            for (slot, v) in rest.iter_mut().zip(c.into_iter().skip(4)) {
                *slot = v;
            }
            for &i in CALL_NUMBERS {
                if let Sv::Int(x) = rest[i] {
                    rest[i] = Sv::Real(x as f64);
                }
            }
            match turn_at.get(&key) {
                Some(&t) => rows.calls[t as usize].push(rest),
                None => orphan_calls += 1,
            }
        },
    )?;
    if orphan_calls > 0 {
        bail!("{orphan_calls} tool calls have no turn");
    }

    let mut event_at: HashMap<String, u32> = HashMap::new();
    read_table(
        &conn,
        &format!("SELECT {EVENT_COLUMNS} FROM tool_result_events ORDER BY rowid"),
        EVENT_NUMBERS,
        |c| {
            let mut k = key_text(&c, 4);
            key_part(&c[5], &mut k);
            event_at.insert(k, rows.events.len() as u32);
            rows.events.push(c.into_boxed_slice());
        },
    )?;
    let mut compaction_at: HashMap<String, u32> = HashMap::new();
    read_table(
        &conn,
        &format!("SELECT {COMPACTION_COLUMNS} FROM compactions ORDER BY rowid"),
        COMPACTION_NUMBERS,
        |c| {
            compaction_at.insert(key_text(&c, 3), rows.compactions.len() as u32);
            rows.compactions.push(c.into_boxed_slice());
        },
    )?;
    let mut stmt = conn.prepare("SELECT source, session_id FROM sessions ORDER BY rowid")?;
    let mut q = stmt.query([])?;
    while let Some(r) = q.next()? {
        rows.sessions.push((r.get(0)?, r.get(1)?));
    }
    drop(q);
    drop(stmt);

    // The ledger pre-pass: which row each line produced, in file order.
    let ledger = home.ledger();
    let mut sc = LineScanner::open_at(&ledger, 0)
        .with_context(|| format!("reading {}", ledger.display()))?;
    let mut key = String::new();
    while let Some(line) = sc.next_line()? {
        if !line.terminated {
            break;
        }
        if line.oversized {
            continue;
        }
        let Parsed::Value(v) = parse_line(line.bytes) else {
            continue;
        };
        let Some(kind) = line_kind(&v) else { continue };
        let Some(rec) = v.get("record") else { continue };
        key.clear();
        let item = match kind {
            Kind::Turn => {
                for f in ["source", "sessionId", "messageId"] {
                    key_of(rec.get(f), &mut key);
                }
                turn_at.get(&key).map(|&i| Item::Turn(i))
            }
            Kind::ToolResultEvent => {
                key_of(rec.get("source"), &mut key);
                key_of(rec.get("sessionId"), &mut key);
                match rec.get("messageId") {
                    None | Some(Value::Null) => key.push('\u{1}'),
                    m => key_of(m, &mut key),
                }
                key_of(rec.get("toolUseId"), &mut key);
                key_of(rec.get("eventIndex"), &mut key);
                event_at.get(&key).map(|&i| Item::ToolResultEvent(i))
            }
            Kind::Compaction => {
                for f in ["source", "sessionId", "ts"] {
                    key_of(rec.get(f), &mut key);
                }
                compaction_at.get(&key).map(|&i| Item::Compaction(i))
            }
            _ => None,
        };
        if let Some(item) = item {
            rows.items.push(item);
        }
    }
    Ok(rows)
}

/// The stamps, then every row-producing line in ledger order, with the
/// rebuild's statements. `always_delete` is the incremental build's rule
/// (a live archive may hold tool calls for any key); a fresh build only
/// deletes for a key it has seen before.
/// The order the floor inserts its rows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FloorOrder {
    /// Ledger order, as the rebuild inserts them.
    #[default]
    Ledger,
    /// Each table's rows sorted by its primary key (ties in ledger order,
    /// so upserts end the same), turns with their calls first: every
    /// primary-key insert becomes an append. Rowids then follow the key,
    /// not the ledger, which is why the rebuild cannot simply do this.
    PrimaryKey,
}

/// Rows bound into the multi-row statements of the rebuild, `max` rows
/// per statement; a shorter statement takes what is left at a flush.
struct Multi<'c, 'r> {
    stmts: Vec<rusqlite::Statement<'c>>,
    pending: Vec<&'r Sv>,
    rows: usize,
}

impl<'c, 'r> Multi<'c, 'r> {
    fn new(conn: &'c Connection, max: usize, sql: impl Fn(usize) -> String) -> Result<Self> {
        Ok(Multi {
            stmts: (1..=max)
                .map(|n| conn.prepare(&sql(n)))
                .collect::<rusqlite::Result<_>>()?,
            pending: Vec::new(),
            rows: 0,
        })
    }

    fn push(&mut self, row: impl IntoIterator<Item = &'r Sv>) -> Result<()> {
        self.pending.extend(row);
        self.rows += 1;
        if self.rows == self.stmts.len() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows > 0 {
            self.stmts[self.rows - 1].execute(rusqlite::params_from_iter(self.pending.iter()))?;
            self.pending.clear();
            self.rows = 0;
        }
        Ok(())
    }
}

/// Call indexes bound as the rebuild binds them.
static CALL_INDEX: std::sync::LazyLock<Vec<Sv>> =
    std::sync::LazyLock::new(|| (0..64).map(Sv::Int).collect());

fn insert_items(
    conn: &Connection,
    rows: &FloorRows,
    always_delete: bool,
    order: FloorOrder,
) -> Result<()> {
    {
        let mut ins = conn.prepare_cached(INSERT_STAMP)?;
        for s in &rows.stamps {
            ins.execute(rusqlite::params_from_iter(s.iter()))?;
        }
        let mut read = conn.prepare(LOAD_STAMPS)?;
        let mut q = read.query([])?;
        while let Some(r) = q.next()? {
            std::hint::black_box((r.get_ref(0)?, r.get_ref(1)?));
        }
    }
    let owned_indexes: Vec<Sv>;
    let call_index: &[Sv] = if rows.calls.iter().all(|c| c.len() <= CALL_INDEX.len()) {
        &CALL_INDEX
    } else {
        let most = rows.calls.iter().map(Vec::len).max().unwrap_or(0);
        owned_indexes = (0..most as i64).map(Sv::Int).collect();
        &owned_indexes
    };
    let mut turns = Multi::new(conn, TURN_ROWS, upsert_turns_sql)?;
    let mut calls = Multi::new(conn, CALL_ROWS, insert_tool_calls_sql)?;
    let mut events = Multi::new(conn, EVENT_ROWS, upsert_tool_result_events_sql)?;
    let mut delete_calls = conn.prepare(DELETE_TOOL_CALLS)?;
    let mut compaction = conn.prepare(UPSERT_COMPACTION)?;
    let mut seen: HashSet<u64> = HashSet::new();
    let items: Vec<&Item> = match order {
        FloorOrder::Ledger => rows.items.iter().collect(),
        FloorOrder::PrimaryKey => {
            let key = |item: &Item| match *item {
                Item::Turn(i) => (0, key_text(&rows.turns[i as usize], 3)),
                Item::ToolResultEvent(i) => {
                    let e = &rows.events[i as usize];
                    let mut k = key_text(e, 4);
                    key_part(&e[5], &mut k);
                    (1, k)
                }
                Item::Compaction(i) => (2, key_text(&rows.compactions[i as usize], 3)),
            };
            let mut keyed: Vec<((u8, String), &Item)> =
                rows.items.iter().map(|it| (key(it), it)).collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            keyed.into_iter().map(|(_, it)| it).collect()
        }
    };
    // Multi-row statements of the rebuild's sizes; a delete flushes the
    // pending turns and calls first so that it sees every earlier row.
    for item in items {
        match *item {
            Item::Turn(i) => {
                let cols = &rows.turns[i as usize];
                let key = &cols[..3];
                let must_delete = always_delete
                    || match hash_key(key) {
                        Some(h) => !seen.insert(h),
                        None => true,
                    };
                turns.push(cols.iter())?;
                if must_delete {
                    turns.flush()?;
                    calls.flush()?;
                    delete_calls.execute(rusqlite::params_from_iter(key.iter()))?;
                }
                for (n, tc) in rows.calls[i as usize].iter().enumerate() {
                    calls.push(
                        key.iter()
                            .chain(std::iter::once(&call_index[n]))
                            .chain(tc.iter()),
                    )?;
                }
            }
            Item::Compaction(i) => {
                compaction.execute(rusqlite::params_from_iter(
                    rows.compactions[i as usize].iter(),
                ))?;
            }
            Item::ToolResultEvent(i) => {
                events.push(rows.events[i as usize].iter())?;
            }
        }
    }
    turns.flush()?;
    calls.flush()?;
    events.flush()?;
    Ok(())
}

/// Collect the rows that the ledger lines from byte `from` on produced in
/// `home`'s archive (built past them), in ledger order, with the sessions
/// they touch: what an incremental build of that tail writes.
pub fn collect_tail(home: &LedgerHome, from: u64) -> Result<FloorRows> {
    let archive = home.archive();
    let conn = Connection::open_with_flags(&archive, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", archive.display()))?;
    let mut rows = FloorRows::default();
    read_table(
        &conn,
        &format!(
            "SELECT session_id, ts, selector_json, enrichment_json, ledger_offset_bytes
             FROM stamps WHERE ledger_offset_bytes >= {from} ORDER BY ledger_offset_bytes"
        ),
        &[],
        |c| {
            if let Ok(arr) = <[Sv; 5]>::try_from(c) {
                rows.stamps.push(arr);
            }
        },
    )?;
    let mut turn_q = conn.prepare(&format!(
        "SELECT {TURN_COLUMNS} FROM turns WHERE source = ?1 AND session_id = ?2 AND message_id = ?3"
    ))?;
    let mut calls_q = conn.prepare(&format!(
        "SELECT {CALL_COLUMNS} FROM tool_calls
         WHERE source = ?1 AND session_id = ?2 AND message_id = ?3 ORDER BY call_index"
    ))?;
    let mut event_q = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM tool_result_events WHERE source = ?1 AND session_id = ?2
         AND message_id = ?3 AND tool_use_id = ?4 AND event_index = ?5"
    ))?;
    let mut compaction_q = conn.prepare(&format!(
        "SELECT {COMPACTION_COLUMNS} FROM compactions
         WHERE source = ?1 AND session_id = ?2 AND ts = ?3"
    ))?;
    let fetch = |stmt: &mut rusqlite::Statement<'_>,
                 key: &[Sv],
                 numbers: &[usize]|
     -> Result<Vec<Vec<Sv>>> {
        let mut out = Vec::new();
        let mut q = stmt.query(rusqlite::params_from_iter(key.iter()))?;
        while let Some(r) = q.next()? {
            let mut cols = Vec::new();
            for i in 0..r.as_ref().column_count() {
                let mut v = Sv::from_stored(r.get_ref(i)?);
                if numbers.contains(&i) {
                    if let Sv::Int(x) = v {
                        v = Sv::Real(x as f64);
                    }
                }
                cols.push(v);
            }
            out.push(cols);
        }
        Ok(out)
    };
    let bind = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Sv::Text(s.to_lossy().into_owned()),
        Some(Value::Number(n)) => Sv::Real(*n),
        _ => Sv::Null,
    };
    let mut turn_at: HashMap<String, u32> = HashMap::new();
    let mut sessions: Vec<(String, String)> = Vec::new();
    let mut session_seen: HashSet<(String, String)> = HashSet::new();
    let ledger = home.ledger();
    let mut sc = LineScanner::open_at(&ledger, from)
        .with_context(|| format!("reading {}", ledger.display()))?;
    let mut key = String::new();
    while let Some(line) = sc.next_line()? {
        if !line.terminated {
            break;
        }
        if line.oversized {
            continue;
        }
        let Parsed::Value(v) = parse_line(line.bytes) else {
            continue;
        };
        let Some(kind) = line_kind(&v) else { continue };
        let Some(rec) = v.get("record") else { continue };
        key.clear();
        match kind {
            Kind::Turn => {
                let k: Vec<Sv> = ["source", "sessionId", "messageId"]
                    .iter()
                    .map(|f| bind(rec.get(f)))
                    .collect();
                let text = key_text(&k, 3);
                let at = match turn_at.get(&text) {
                    Some(&i) => Some(i),
                    None => {
                        let found = fetch(&mut turn_q, &k, TURN_NUMBERS)?;
                        match found.into_iter().next() {
                            Some(row) => {
                                let i = rows.turns.len() as u32;
                                rows.turns.push(row.into_boxed_slice());
                                let mut calls = Vec::new();
                                for c in fetch(&mut calls_q, &k, &[])? {
                                    let mut rest: [Sv; 7] = Default::default();
                                    for (slot, v) in rest.iter_mut().zip(c.into_iter().skip(4)) {
                                        *slot = v;
                                    }
                                    for &n in CALL_NUMBERS {
                                        if let Sv::Int(x) = rest[n] {
                                            rest[n] = Sv::Real(x as f64);
                                        }
                                    }
                                    calls.push(rest);
                                }
                                rows.calls.push(calls);
                                turn_at.insert(text, i);
                                Some(i)
                            }
                            None => None,
                        }
                    }
                };
                if let Some(i) = at {
                    rows.items.push(Item::Turn(i));
                    if let (Sv::Text(src), Sv::Text(sid)) = (&k[0], &k[1]) {
                        let pair = (src.to_string(), sid.to_string());
                        if session_seen.insert(pair.clone()) {
                            sessions.push(pair);
                        }
                    }
                }
            }
            Kind::ToolResultEvent => {
                let mut k = vec![bind(rec.get("source")), bind(rec.get("sessionId"))];
                k.push(match rec.get("messageId") {
                    None | Some(Value::Null) => Sv::Text("".into()),
                    m => bind(m),
                });
                k.push(bind(rec.get("toolUseId")));
                k.push(bind(rec.get("eventIndex")));
                if let Some(row) = fetch(&mut event_q, &k, EVENT_NUMBERS)?.into_iter().next() {
                    rows.items
                        .push(Item::ToolResultEvent(rows.events.len() as u32));
                    rows.events.push(row.into_boxed_slice());
                }
            }
            Kind::Compaction => {
                let k: Vec<Sv> = ["source", "sessionId", "ts"]
                    .iter()
                    .map(|f| bind(rec.get(f)))
                    .collect();
                if let Some(row) = fetch(&mut compaction_q, &k, COMPACTION_NUMBERS)?
                    .into_iter()
                    .next()
                {
                    rows.items
                        .push(Item::Compaction(rows.compactions.len() as u32));
                    rows.compactions.push(row.into_boxed_slice());
                }
            }
            _ => {}
        }
    }
    rows.sessions = sessions;
    Ok(rows)
}

/// Seconds spent in each step of an incremental floor.
#[derive(Debug, Clone, Copy, Default)]
pub struct TailTimes {
    /// Open with the live archive's pragmas.
    pub open: f64,
    pub inserts: f64,
    pub sessions: f64,
    pub commit: f64,
    /// Close (which checkpoints the WAL into the file).
    pub close: f64,
    pub total: f64,
}

/// Apply `rows` (from [`collect_tail`]) to the live archive at `db` as an
/// incremental build does: WAL, one `BEGIN IMMEDIATE` transaction, every
/// turn's tool calls deleted first, touched sessions re-derived.
/// `cache_kib` sets `PRAGMA cache_size` (SQLite's default when `None`).
pub fn load_tail(rows: &FloorRows, db: &Path, cache_kib: Option<i64>) -> Result<TailTimes> {
    let mut t = TailTimes::default();
    let start = Instant::now();
    let mut lap = Instant::now();
    let mut split = |slot: &mut f64| {
        *slot = lap.elapsed().as_secs_f64();
        lap = Instant::now();
    };
    let conn = Connection::open(db)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA foreign_keys = ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if let Some(kib) = cache_kib {
        conn.execute_batch(&format!("PRAGMA cache_size = -{kib}"))?;
    }
    split(&mut t.open);
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let _cursor: i64 = conn.query_row(
        "SELECT ledger_offset_bytes FROM archive_state WHERE id = 1",
        [],
        |r| r.get(0),
    )?;
    insert_items(&conn, rows, true, FloorOrder::Ledger)?;
    split(&mut t.inserts);
    {
        let mut upsert = conn.prepare(UPSERT_SESSION)?;
        for (source, sid) in &rows.sessions {
            upsert.execute([source, sid])?;
        }
    }
    conn.execute(
        "UPDATE archive_state SET last_built_at = ?1 WHERE id = 1",
        ["bench"],
    )?;
    split(&mut t.sessions);
    conn.execute_batch("COMMIT")?;
    split(&mut t.commit);
    conn.close().map_err(|(_, e)| e)?;
    split(&mut t.close);
    t.total = start.elapsed().as_secs_f64();
    Ok(t)
}

/// Seconds spent in each step of a floor load.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloorTimes {
    /// Open, pragmas, tables.
    pub setup: f64,
    /// Stamps, then turns, tool calls, events and compactions in ledger
    /// order.
    pub inserts: f64,
    pub indexes: f64,
    pub sessions: f64,
    pub commit: f64,
    /// Switch to WAL, close, fsync.
    pub finish: f64,
    pub total: f64,
}

fn hash_key(cols: &[Sv]) -> Option<u64> {
    let mut h = DefaultHasher::new();
    for c in cols {
        match c {
            Sv::Text(s) => s.hash(&mut h),
            _ => return None,
        }
    }
    Some(h.finish())
}

/// Insert `rows` into a new database at `db` (replacing any), timing each
/// step.
pub fn load(rows: &FloorRows, db: &Path) -> Result<FloorTimes> {
    load_with_cache(rows, db, None, FloorOrder::Ledger)
}

/// As [`load`], with `PRAGMA cache_size = -cache_kib` after the rebuild's
/// pragmas when given: what another page cache would change.
pub fn load_with_cache(
    rows: &FloorRows,
    db: &Path,
    cache_kib: Option<i64>,
    order: FloorOrder,
) -> Result<FloorTimes> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    let mut t = FloorTimes::default();
    let start = Instant::now();
    let mut lap = Instant::now();
    let mut split = |slot: &mut f64| {
        *slot = lap.elapsed().as_secs_f64();
        lap = Instant::now();
    };

    let mut conn = Connection::open(db)?;
    conn.execute_batch(BULK_PRAGMAS)?;
    if let Some(kib) = cache_kib {
        conn.execute_batch(&format!("PRAGMA cache_size = -{kib}"))?;
    }
    for sql in &rows.tables {
        conn.execute_batch(sql)?;
    }
    conn.execute(
        "INSERT INTO archive_state (id, ledger_offset_bytes, ledger_mtime_ms, archive_version)
         VALUES (1, 0, 0, ?1)",
        [relayburn_ledger::archive::ARCHIVE_VERSION],
    )?;
    split(&mut t.setup);

    let tx = conn.transaction()?;
    insert_items(&tx, rows, false, order)?;
    split(&mut t.inserts);
    for sql in &rows.indexes {
        tx.execute_batch(sql)?;
    }
    split(&mut t.indexes);
    {
        let mut upsert = tx.prepare(UPSERT_SESSION)?;
        for (source, sid) in &rows.sessions {
            upsert.execute([source, sid])?;
        }
    }
    split(&mut t.sessions);
    tx.commit()?;
    split(&mut t.commit);
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| e)?;
    std::fs::File::open(db)?.sync_all()?;
    split(&mut t.finish);
    t.total = start.elapsed().as_secs_f64();
    Ok(t)
}
