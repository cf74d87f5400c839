//! Turn queries answered from the archive instead of the ledger, with the
//! reference's filters, order and output shape (`queryAllFromArchive`).
//!
//! Extension: an integer stored beyond 2^53 comes back as the nearest
//! double instead of failing the query.

use std::collections::{HashMap, HashSet};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::error::Result;
use crate::home::LedgerHome;
use crate::json::{self, Object, Value};
use crate::query::Query;

use super::read::ArchiveReader;
use super::schema::sql_err;

/// Enrichment keys that have their own column.
const ENRICHMENT_COLUMNS: &[(&str, &str)] = &[
    ("workflowId", "workflow_id"),
    ("agentId", "agent_id"),
    ("persona", "persona"),
    ("tier", "tier"),
];

/// Keys per tool-call lookup (three parameters each).
const TOOL_CALL_CHUNK: usize = 250;

/// Is there an archive file to query?
pub fn archive_available(home: &LedgerHome) -> bool {
    std::fs::metadata(home.archive()).is_ok_and(|m| m.is_file())
}

/// Enriched turns matching `q`, ordered by `ts, turn_index`, each with
/// its tool calls and a fidelity synthesised from the stored columns.
/// Unlike the reference, a missing archive is not created: it is an
/// [`Error::ArchiveUnavailable`](crate::Error::ArchiveUnavailable), as is
/// every archive this version cannot read.
pub fn query_all_from_archive(home: &LedgerHome, q: &Query) -> Result<Vec<Value>> {
    collect(home, q, true)
}

/// As [`query_all_from_archive`] without the synthesised fidelity (the
/// reference's `queryTurnsFromArchive`).
pub fn query_turns_from_archive(home: &LedgerHome, q: &Query) -> Result<Vec<Value>> {
    collect(home, q, false)
}

fn collect(home: &LedgerHome, q: &Query, with_fidelity: bool) -> Result<Vec<Value>> {
    let reader = ArchiveReader::open(home)?;
    let mut out = Vec::new();
    reader.for_each_turn(q, with_fidelity, |v| -> Result<()> {
        out.push(v);
        Ok(())
    })?;
    Ok(out)
}

/// Turns read per round of tool-call lookups: memory stays bounded by
/// this many turns whatever the result size.
const TURN_BATCH: usize = TOOL_CALL_CHUNK;

impl ArchiveReader {
    /// Hand each turn matching `q` to `emit` as soon as its batch's tool
    /// calls are read, in `ts, turn_index` order; the number of turns.
    /// One read transaction covers the whole query, so a concurrent build
    /// is seen entirely or not at all.
    pub fn for_each_turn<E: From<crate::Error>>(
        &self,
        q: &Query,
        with_fidelity: bool,
        mut emit: impl FnMut(Value) -> std::result::Result<(), E>,
    ) -> std::result::Result<u64, E> {
        let e = self.sql_err();
        let (sql, params) = select_sql(q);
        let mut stmt = self.conn.prepare(&sql).map_err(&e)?;
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let idx = TurnColumns::new(&names);
        let calls_sql = self.tool_calls_sql()?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(&e)?;
        let mut batch: Vec<Vec<Value>> = Vec::with_capacity(TURN_BATCH);
        let mut count = 0u64;
        loop {
            let row = rows.next().map_err(&e)?;
            if let Some(r) = row {
                let mut vals = Vec::with_capacity(names.len());
                for i in 0..names.len() {
                    vals.push(cell(r.get_ref(i).map_err(&e)?));
                }
                batch.push(vals);
            }
            if batch.len() == TURN_BATCH || (row.is_none() && !batch.is_empty()) {
                count += batch.len() as u64;
                let turns = std::mem::take(&mut batch);
                self.emit_batch(&calls_sql, &idx, turns, with_fidelity, &mut emit)?;
            }
            if row.is_none() {
                return Ok(count);
            }
        }
    }

    fn emit_batch<E: From<crate::Error>>(
        &self,
        calls_sql: &str,
        idx: &TurnColumns,
        turns: Vec<Vec<Value>>,
        with_fidelity: bool,
        emit: &mut impl FnMut(Value) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let text = |v: &[Value], i: Option<usize>| -> String {
            i.and_then(|i| v.get(i))
                .map(|x| x.js_to_string().into_owned())
                .unwrap_or_default()
        };
        let keys: Vec<[String; 3]> = turns
            .iter()
            .map(|t| {
                [
                    text(t, idx.source),
                    text(t, idx.session_id),
                    text(t, idx.message_id),
                ]
            })
            .collect();
        let mut calls = load_tool_calls(&self.conn, &self.path, calls_sql, &keys)?;
        for (t, key) in turns.into_iter().zip(keys) {
            let tool_calls = calls.remove(&key).unwrap_or_default();
            emit(turn_value(&t, idx, tool_calls, with_fidelity))?;
        }
        Ok(())
    }

    /// The tool-call columns, with NULL for additive ones an archive of an
    /// older shape lacks.
    fn tool_calls_sql(&self) -> Result<String> {
        let mut cols = String::from(
            "source, session_id, message_id, call_index, tool_use_id, tool_name, target, args_hash, is_error",
        );
        for c in ["replaced_tools", "collapsed_calls"] {
            cols.push_str(", ");
            cols.push_str(if self.has_column("tool_calls", c)? {
                c
            } else {
                "NULL"
            });
        }
        Ok(cols)
    }
}

/// The statement and its parameters for `q`.
fn select_sql(q: &Query) -> (String, Vec<String>) {
    let mut wheres: Vec<&str> = Vec::new();
    let mut owned_wheres: Vec<String> = Vec::new();
    let mut params = Vec::new();
    // A session alone has no index of its own, so the source is bound
    // too: the archive's few distinct sources are enumerated through the
    // (source, …) index by a loose index scan (`sources` below). The rows
    // are the same; the plan becomes index lookups instead of a scan of
    // every turn.
    for (value, clause, binds) in [
        (&q.since, "ts >= ?", 1),
        (&q.until, "ts <= ?", 1),
        (&q.project, "(project = ? OR project_key = ?)", 2),
        (
            &q.session_id,
            "source IN (SELECT s FROM sources) AND session_id = ?",
            1,
        ),
        (&q.source, "source = ?", 1),
    ] {
        if let Some(v) = value {
            wheres.push(clause);
            params.extend(std::iter::repeat_n(v.clone(), binds));
        }
    }
    let mut clauses: Vec<String> = wheres.iter().map(|w| w.to_string()).collect();
    for (k, v) in &q.enrichment {
        match ENRICHMENT_COLUMNS.iter().find(|(key, _)| key == k) {
            Some((_, column)) => {
                owned_wheres.push(format!("{column} = ?"));
                params.push(v.clone());
            }
            None => {
                // Keys without a column are matched inside the JSON.
                owned_wheres.push("json_extract(enrichment_json, '$.' || ?) = ?".into());
                params.push(k.clone());
                params.push(v.clone());
            }
        }
        if let Some(w) = owned_wheres.pop() {
            clauses.push(w);
        }
    }
    let mut sql = String::new();
    if q.session_id.is_some() {
        sql.push_str(
            "WITH RECURSIVE sources(s) AS (\
             SELECT (SELECT MIN(source) FROM turns) \
             UNION ALL \
             SELECT (SELECT MIN(source) FROM turns WHERE source > sources.s) \
             FROM sources WHERE sources.s IS NOT NULL) ",
        );
    }
    sql.push_str("SELECT * FROM turns");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    sql.push_str(" ORDER BY ts, turn_index");
    (sql, params)
}

struct TurnColumns {
    source: Option<usize>,
    session_id: Option<usize>,
    message_id: Option<usize>,
    turn_index: Option<usize>,
    ts: Option<usize>,
    model: Option<usize>,
    project: Option<usize>,
    project_key: Option<usize>,
    activity: Option<usize>,
    stop_reason: Option<usize>,
    has_edits: Option<usize>,
    retries: Option<usize>,
    is_sidechain: Option<usize>,
    subagent_id: Option<usize>,
    parent_subagent_id: Option<usize>,
    parent_tool_use_id: Option<usize>,
    subagent_type: Option<usize>,
    subagent_description: Option<usize>,
    usage: [Option<usize>; 6],
    enrichment_json: Option<usize>,
    attribution_fidelity: Option<usize>,
    tokens_present: Option<usize>,
    cost_present: Option<usize>,
}

impl TurnColumns {
    fn new(names: &[String]) -> TurnColumns {
        let col = |name: &str| names.iter().position(|n| n == name);
        TurnColumns {
            source: col("source"),
            session_id: col("session_id"),
            message_id: col("message_id"),
            turn_index: col("turn_index"),
            ts: col("ts"),
            model: col("model"),
            project: col("project"),
            project_key: col("project_key"),
            activity: col("activity"),
            stop_reason: col("stop_reason"),
            has_edits: col("has_edits"),
            retries: col("retries"),
            is_sidechain: col("is_sidechain"),
            subagent_id: col("subagent_id"),
            parent_subagent_id: col("parent_subagent_id"),
            parent_tool_use_id: col("parent_tool_use_id"),
            subagent_type: col("subagent_type"),
            subagent_description: col("subagent_description"),
            usage: [
                col("input_tokens"),
                col("output_tokens"),
                col("reasoning_tokens"),
                col("cache_read_tokens"),
                col("cache_create_5m_tokens"),
                col("cache_create_1h_tokens"),
            ],
            enrichment_json: col("enrichment_json"),
            attribution_fidelity: col("attribution_fidelity"),
            tokens_present: col("tokens_present"),
            cost_present: col("cost_present"),
        }
    }
}

/// A stored value as the reference's driver returns it; integers beyond
/// 2^53 become the nearest double instead of an error.
fn cell(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Number(i as f64),
        ValueRef::Real(f) => Value::Number(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            Value::from(String::from_utf8_lossy(t).into_owned())
        }
    }
}

/// `Number(x)` for a stored value.
fn number(v: &Value) -> Value {
    Value::Number(crate::js::to_number(v))
}

fn is_one(v: &Value) -> bool {
    matches!(number(v), Value::Number(n) if n == 1.0)
}

fn turn_value(t: &[Value], c: &TurnColumns, tool_calls: Vec<Value>, with_fidelity: bool) -> Value {
    const NULL: &Value = &Value::Null;
    let get = |i: Option<usize>| i.and_then(|i| t.get(i)).unwrap_or(NULL);
    let present = |i: Option<usize>| !matches!(get(i), Value::Null);
    let mut o = Object::new();
    o.insert("v", Value::Number(1.0));
    o.insert("source", get(c.source).clone());
    o.insert("sessionId", get(c.session_id).clone());
    o.insert("messageId", get(c.message_id).clone());
    o.insert("turnIndex", number(get(c.turn_index)));
    o.insert("ts", get(c.ts).clone());
    o.insert("model", get(c.model).clone());
    let mut usage = Object::new();
    for (key, i) in super::rows::USAGE_KEYS.iter().zip(c.usage) {
        usage.insert(*key, number(get(i)));
    }
    o.insert("usage", Value::Object(usage));
    o.insert("toolCalls", Value::Array(tool_calls));
    for (key, i) in [
        ("project", c.project),
        ("projectKey", c.project_key),
        ("activity", c.activity),
        ("stopReason", c.stop_reason),
    ] {
        if present(i) {
            o.insert(key, get(i).clone());
        }
    }
    if present(c.has_edits) {
        o.insert("hasEdits", Value::Bool(is_one(get(c.has_edits))));
    }
    if present(c.retries) {
        o.insert("retries", number(get(c.retries)));
    }
    let sub_cols = [
        ("agentId", c.subagent_id),
        ("parentAgentId", c.parent_subagent_id),
        ("parentToolUseId", c.parent_tool_use_id),
        ("subagentType", c.subagent_type),
        ("description", c.subagent_description),
    ];
    if present(c.is_sidechain) || sub_cols.iter().any(|(_, i)| present(*i)) {
        let mut s = Object::new();
        s.insert("isSidechain", Value::Bool(is_one(get(c.is_sidechain))));
        for (key, i) in sub_cols {
            if present(i) {
                s.insert(key, get(i).clone());
            }
        }
        o.insert("subagent", Value::Object(s));
    }
    if with_fidelity {
        if let Some(f) = synthesize_fidelity(
            get(c.attribution_fidelity),
            get(c.tokens_present),
            get(c.cost_present),
        ) {
            o.insert("fidelity", f);
        }
    }
    o.insert("enrichment", parse_enrichment(get(c.enrichment_json)));
    Value::Object(o)
}

/// The string entries of the stored enrichment object; anything else
/// (bad JSON, not an object) reads as empty.
fn parse_enrichment(v: &Value) -> Value {
    let mut out = Object::new();
    if let Some(text) = v.as_js_string().map(|s| s.to_lossy()) {
        if let Some(o) = json::parse(&text).ok().and_then(Value::into_object) {
            for (k, val) in o.iter() {
                if matches!(val, Value::String(_)) && *k != *"__proto__" {
                    out.insert(k.clone(), val.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// The keys of a `Fidelity`'s `coverage`, in the order the reference
/// writes them.
pub const COVERAGE_KEYS: [&str; 9] = [
    "hasInputTokens",
    "hasOutputTokens",
    "hasReasoningTokens",
    "hasCacheReadTokens",
    "hasCacheCreateTokens",
    "hasToolCalls",
    "hasToolResultEvents",
    "hasSessionRelationships",
    "hasRawContent",
];

/// A `Fidelity` rebuilt from the three stored columns: the class is kept,
/// the granularity follows `cost_present`, the coverage is the class's
/// typical one.
fn synthesize_fidelity(class: &Value, tokens: &Value, cost: &Value) -> Option<Value> {
    if matches!(class, Value::Null) {
        return None;
    }
    let tokens_present = is_one(tokens);
    let granularity = if is_one(cost) {
        "cost-only"
    } else {
        "per-turn"
    };
    let cls = class.as_str().unwrap_or("");
    // Order: input, output, reasoning, cacheRead, cacheCreate, toolCalls,
    // toolResultEvents, sessionRelationships, rawContent.
    let flags: [bool; 9] = match cls {
        "full" => [true; 9],
        "usage-only" => [
            tokens_present,
            tokens_present,
            false,
            tokens_present,
            tokens_present,
            false,
            false,
            false,
            false,
        ],
        "partial" => [
            tokens_present,
            tokens_present,
            false,
            false,
            false,
            false,
            false,
            false,
            false,
        ],
        _ => [false; 9],
    };
    let mut coverage = Object::new();
    for (key, flag) in COVERAGE_KEYS.iter().zip(flags) {
        coverage.insert(*key, Value::Bool(flag));
    }
    let mut f = Object::new();
    f.insert("class", class.clone());
    f.insert("granularity", Value::str(granularity));
    f.insert("coverage", Value::Object(coverage));
    Some(Value::Object(f))
}

/// Tool calls of the given turns, by key, in `call_index` order.
fn load_tool_calls(
    conn: &Connection,
    path: &std::path::Path,
    columns: &str,
    keys: &[[String; 3]],
) -> Result<HashMap<[String; 3], Vec<Value>>> {
    let e = sql_err(path);
    let mut out: HashMap<[String; 3], Vec<Value>> = HashMap::new();
    let mut seen: HashSet<&[String; 3]> = HashSet::new();
    let distinct: Vec<&[String; 3]> = keys.iter().filter(|k| seen.insert(*k)).collect();
    for chunk in distinct.chunks(TOOL_CALL_CHUNK) {
        let placeholders = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "SELECT {columns}
             FROM tool_calls
             WHERE (source, session_id, message_id) IN ({placeholders})
             ORDER BY source, session_id, message_id, call_index"
        );
        let mut stmt = conn.prepare(&sql).map_err(&e)?;
        let params = chunk.iter().flat_map(|k| k.iter());
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            let v: Vec<Value> = (0..11)
                .map(|i| r.get_ref(i).map(cell))
                .collect::<rusqlite::Result<_>>()
                .map_err(&e)?;
            let key = [
                v[0].js_to_string().into_owned(),
                v[1].js_to_string().into_owned(),
                v[2].js_to_string().into_owned(),
            ];
            out.entry(key).or_default().push(tool_call_value(&v));
        }
    }
    Ok(out)
}

fn tool_call_value(v: &[Value]) -> Value {
    let or_empty = |x: &Value| match x {
        Value::Null => Value::str(""),
        other => other.clone(),
    };
    let mut tc = Object::new();
    tc.insert("id", or_empty(&v[4]));
    tc.insert("name", v[5].clone());
    tc.insert("argsHash", or_empty(&v[7]));
    if !matches!(v[6], Value::Null) {
        tc.insert("target", v[6].clone());
    }
    if !matches!(v[8], Value::Null) {
        tc.insert("isError", Value::Bool(is_one(&v[8])));
    }
    if let Some(text) = v[9].as_js_string() {
        if let Some(items) = json::parse(&text.to_lossy())
            .ok()
            .and_then(Value::into_array)
        {
            let names: Vec<Value> = items
                .iter()
                .filter(|x| x.as_js_string().is_some_and(|s| s.utf16_len() > 0))
                .cloned()
                .collect();
            if !names.is_empty() {
                tc.insert("replacedTools", Value::Array(names));
            }
        }
    }
    if !matches!(v[10], Value::Null) {
        if let Value::Number(n) = number(&v[10]) {
            if n.is_finite() && n > 0.0 {
                tc.insert("collapsedCalls", Value::Number(n));
            }
        }
    }
    Value::Object(tc)
}
