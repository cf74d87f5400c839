//! The store's schema: its migrations and the record tables.

use super::*;

/// Migration 1. `sqlite_master` keeps each statement's text, so the
/// layout here is the reference's, space for space.
pub(super) const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS schema_state (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL
);

INSERT OR IGNORE INTO schema_state (id, version) VALUES (1, 1);

CREATE TABLE IF NOT EXISTS locks (
  name           TEXT PRIMARY KEY,
  acquired_at_ms INTEGER NOT NULL,
  pid            INTEGER
);

CREATE TABLE IF NOT EXISTS turns (
  id_hash      TEXT PRIMARY KEY,
  content_fp   TEXT NOT NULL,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  turn_index   INTEGER NOT NULL,
  ts           TEXT NOT NULL,
  project      TEXT,
  project_key  TEXT,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_turns_session ON turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_turns_ts ON turns(ts);
CREATE INDEX IF NOT EXISTS idx_turns_session_index ON turns(source, session_id, turn_index);
CREATE INDEX IF NOT EXISTS idx_turns_project_key ON turns(project_key);

CREATE TABLE IF NOT EXISTS compactions (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_compactions_session ON compactions(source, session_id);
CREATE INDEX IF NOT EXISTS idx_compactions_ts ON compactions(ts);

CREATE TABLE IF NOT EXISTS relationships (
  id_hash             TEXT PRIMARY KEY,
  source              TEXT NOT NULL,
  session_id          TEXT NOT NULL,
  related_session_id  TEXT,
  ts                  TEXT,
  record_json         TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_relationships_session ON relationships(source, session_id);
CREATE INDEX IF NOT EXISTS idx_relationships_related ON relationships(related_session_id);

CREATE TABLE IF NOT EXISTS tool_result_events (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_tool_result_events_session ON tool_result_events(source, session_id);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_ts ON tool_result_events(ts);

CREATE TABLE IF NOT EXISTS user_turns (
  id_hash      TEXT PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  record_json  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS idx_user_turns_session ON user_turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_user_turns_ts ON user_turns(ts);

CREATE TABLE IF NOT EXISTS stamps (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  ts              TEXT NOT NULL,
  selector_json   TEXT NOT NULL,
  enrichment_json TEXT NOT NULL,
  session_id      TEXT,
  message_id      TEXT
);

CREATE INDEX IF NOT EXISTS idx_stamps_session ON stamps(session_id);
CREATE INDEX IF NOT EXISTS idx_stamps_message ON stamps(message_id);
CREATE INDEX IF NOT EXISTS idx_stamps_ts ON stamps(ts);

CREATE TABLE IF NOT EXISTS content (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  content_fp   TEXT NOT NULL,
  record_json  TEXT NOT NULL,
  mtime_ms     INTEGER NOT NULL,
  UNIQUE (session_id, content_fp)
);

CREATE INDEX IF NOT EXISTS idx_content_session ON content(session_id);
CREATE INDEX IF NOT EXISTS idx_content_session_message ON content(session_id, message_id);
CREATE INDEX IF NOT EXISTS idx_content_mtime ON content(mtime_ms);
";

/// Every migration, in order: `(version, sql)`.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[(1, MIGRATION_1)];

/// The record table of a kind and the columns copied out of the record
/// (after `id_hash` and, for turns, `content_fp`).
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) columns: &'static [(&'static str, &'static str)],
    /// Has a `(source, session_id)` index and a `sessionId`-only filter.
    pub(super) by_session: bool,
}

pub(super) fn table(kind: Kind) -> Option<Table> {
    const SST: &[(&str, &str)] = &[
        ("source", "source"),
        ("session_id", "sessionId"),
        ("ts", "ts"),
    ];
    Some(match kind {
        Kind::Turn => Table {
            name: "turns",
            columns: &[
                ("source", "source"),
                ("session_id", "sessionId"),
                ("message_id", "messageId"),
                ("turn_index", "turnIndex"),
                ("ts", "ts"),
                ("project", "project"),
                ("project_key", "projectKey"),
            ],
            by_session: true,
        },
        Kind::Compaction => Table {
            name: "compactions",
            columns: SST,
            by_session: true,
        },
        Kind::Relationship => Table {
            name: "relationships",
            columns: &[
                ("source", "source"),
                ("session_id", "sessionId"),
                ("related_session_id", "relatedSessionId"),
                ("ts", "ts"),
            ],
            // `sessionId` also matches `relatedSessionId`.
            by_session: false,
        },
        Kind::ToolResultEvent => Table {
            name: "tool_result_events",
            columns: SST,
            by_session: true,
        },
        Kind::UserTurn => Table {
            name: "user_turns",
            columns: SST,
            by_session: true,
        },
        Kind::Stamp => return None,
    })
}

impl Table {
    pub(super) fn insert_sql(&self, with_fp: bool) -> String {
        let mut cols = vec!["id_hash"];
        if with_fp {
            cols.push("content_fp");
        }
        cols.extend(self.columns.iter().map(|(c, _)| *c));
        cols.push("record_json");
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT OR IGNORE INTO {} ({}) VALUES ({marks})",
            self.name,
            cols.join(", ")
        )
    }
}
