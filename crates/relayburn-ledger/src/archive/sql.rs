//! Every SQL statement and pragma of an archive build, in one place.
//!
//! The build's passes and the benchmark's SQLite floor both run these, so
//! the floor measures exactly the statements the build pays for. Multi-row
//! forms come from builders: one statement per several rows saves most of
//! SQLite's per-statement overhead, and the rows of one statement apply in
//! order, as separate statements would, so upserts keep their meaning.

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

/// Parameters of a turn row.
pub const TURN_COLUMNS: usize = 32;
/// Parameters of a tool call after its key and `call_index`.
pub const TOOL_CALL_COLUMNS: usize = 7;

/// One bound parameter, or one stored value read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Sv {
    #[default]
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl ToSql for Sv {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Sv::Null => ValueRef::Null,
            Sv::Int(i) => ValueRef::Integer(*i),
            Sv::Real(f) => ValueRef::Real(*f),
            Sv::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl Sv {
    /// A stored value; blobs (which the archive never writes) read as text.
    pub fn from_stored(v: ValueRef<'_>) -> Sv {
        match v {
            ValueRef::Null => Sv::Null,
            ValueRef::Integer(i) => Sv::Int(i),
            ValueRef::Real(f) => Sv::Real(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Sv::Text(String::from_utf8_lossy(t).into_owned())
            }
        }
    }
}

/// Settings of a connection that builds: a page cache for the index pages
/// a tail touches all over a big archive (the default is 2 MB), and WAL
/// commits without a sync (the archive is derived: a commit lost to a power
/// cut takes its cursor with it and is simply redone).
pub const BUILD_CACHE: &str = "PRAGMA cache_size = -262144; PRAGMA synchronous = NORMAL";

/// Bulk-load settings for the file a full rebuild builds aside, which
/// nobody else opens: large pages (fewer, shallower b-tree nodes to split
/// and cache; it must come before the first table), no journal, no syncs
/// (the file is synced once before the swap), a big page cache, and a
/// helper thread for the sorts that build the indexes.
pub const BULK_PRAGMAS: &str = "PRAGMA page_size = 65536;
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA locking_mode = EXCLUSIVE;
PRAGMA cache_size = -524288;
PRAGMA threads = 2;
PRAGMA foreign_keys = ON;";

/// Every stamp in the reference's fold order.
pub const LOAD_STAMPS: &str =
    "SELECT selector_json, enrichment_json FROM stamps ORDER BY ts, ledger_offset_bytes";

pub const INSERT_STAMP: &str = "INSERT OR REPLACE INTO stamps
  (source, session_id, ts, selector_json, enrichment_json, ledger_offset_bytes)
  VALUES ('*', ?1, ?2, ?3, ?4, ?5)";

pub const UPSERT_TURNS: &str = "INSERT INTO turns (
  source, session_id, message_id, turn_index, ts, model, project, project_key,
  activity, stop_reason, has_edits, retries, is_sidechain, subagent_id,
  parent_subagent_id, parent_tool_use_id, subagent_type, subagent_description,
  input_tokens, output_tokens, reasoning_tokens, cache_read_tokens,
  cache_create_5m_tokens, cache_create_1h_tokens, workflow_id, agent_id,
  persona, tier, enrichment_json, attribution_fidelity, tokens_present, cost_present
) VALUES ";

pub const UPSERT_TURN_TAIL: &str = "
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

pub const DELETE_TOOL_CALLS: &str =
    "DELETE FROM tool_calls WHERE source = ?1 AND session_id = ?2 AND message_id = ?3";

pub const INSERT_TOOL_CALLS: &str = "INSERT INTO tool_calls (
  source, session_id, message_id, call_index, tool_use_id, tool_name, target,
  args_hash, is_error, replaced_tools, collapsed_calls
) VALUES ";

pub const UPSERT_COMPACTION: &str = "INSERT OR REPLACE INTO compactions
  (source, session_id, ts, preceding_message_id, tokens_before_compact)
  VALUES (?1, ?2, ?3, ?4, ?5)";

pub const UPSERT_TOOL_RESULT_EVENTS: &str = "INSERT OR REPLACE INTO tool_result_events (
  source, session_id, message_id, tool_use_id, call_index, event_index, status,
  content_length, content_hash, is_error, subagent_session_id, agent_id,
  event_source, ts
) VALUES ";

/// `INSERT … VALUES` head followed by `rows` groups of `width` parameters:
/// one statement per several rows saves most of the per-row overhead, and
/// rows of one statement apply in order, as separate statements would.
pub fn multi_row(head: &str, width: usize, rows: usize) -> String {
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
pub fn upsert_turns_sql(rows: usize) -> String {
    multi_row(UPSERT_TURNS, TURN_COLUMNS, rows) + UPSERT_TURN_TAIL
}

/// The tool-call insert for `rows` rows.
pub fn insert_tool_calls_sql(rows: usize) -> String {
    multi_row(INSERT_TOOL_CALLS, TOOL_CALL_COLUMNS + 4, rows)
}

/// The tool-result-event upsert for `rows` rows.
pub fn upsert_tool_result_events_sql(rows: usize) -> String {
    multi_row(UPSERT_TOOL_RESULT_EVENTS, 14, rows)
}

/// Tool-result events per multi-row insert.
pub const EVENT_ROWS: usize = 32;
/// Tool calls per multi-row insert.
pub const CALL_ROWS: usize = 16;
/// Turns per multi-row upsert.
pub const TURN_ROWS: usize = 8;

/// By rowid: the row was just read, so the key lookup is not needed.
pub const REFOLD_TURN: &str = "UPDATE turns
  SET workflow_id = ?1, agent_id = ?2, persona = ?3, tier = ?4, enrichment_json = ?5
  WHERE rowid = ?6";

/// Re-derives one session from its turns. The aggregate is the
/// reference's: worst fidelity by rank (NULL classes ignored), "all full"
/// only when some turn carries a class, models in first-seen order of the
/// scan.
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

/// The aggregate of [`UPSERT_SESSION`] computed outside SQLite, written
/// as it is (see `sessions.rs`).
pub const INSERT_SESSION: &str = "INSERT OR REPLACE INTO sessions (
  source, session_id, project, project_key, started_at, ended_at, turn_count,
  model_set_json, workflow_id, agent_id, parent_agent_id, has_subagent,
  min_fidelity, has_full_attribution
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

/// The columns of `turns` the session aggregate reads, in one scan.
pub const SCAN_TURNS_FOR_SESSIONS: &str =
    "SELECT rowid, source, session_id, turn_index, ts, model, project, project_key,
        workflow_id, agent_id, parent_subagent_id, is_sidechain, attribution_fidelity
 FROM turns";

/// Does a session have turns from this source?
pub const SESSION_HAS_TURNS: &str =
    "SELECT 1 FROM turns WHERE source = ?1 AND session_id = ?2 LIMIT 1";

/// The smallest source, then the next one after `?1`: the distinct sources
/// by stepping through an index whose first column is `source`.
pub const FIRST_SOURCE: &str = "SELECT MIN(source) FROM turns";
pub const NEXT_SOURCE: &str = "SELECT MIN(source) FROM turns WHERE source > ?1";

/// Candidate turns of a refold are collected as rowids first (memory stays
/// small even when a stamp reaches most turns), then read back one by one;
/// the `WHERE` clause is the stamp selector's.
pub const TURN_ROWIDS: &str = "SELECT rowid FROM turns";

/// A refold candidate: its key fields and its enrichment columns.
pub const REFOLD_READ: &str = "SELECT source, session_id, message_id, ts,
  workflow_id, agent_id, persona, tier, enrichment_json FROM turns WHERE rowid = ?1";
