//! The store's schema: its migrations and the record tables.

use std::sync::LazyLock;

use super::*;
use crate::store::tables::RECORD_TABLES;

/// Migration 1 before the record tables. `sqlite_master` keeps each
/// statement's text, so the layout here is the reference's, space for
/// space.
const MIGRATION_1_HEAD: &str = "
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

";

/// Migration 1 after the record tables.
const MIGRATION_1_TAIL: &str = "CREATE TABLE IF NOT EXISTS stamps (
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

/// Migration 1: the record tables come from their shared description.
static MIGRATION_1: LazyLock<String> = LazyLock::new(|| {
    let tables: Vec<String> = RECORD_TABLES.iter().map(|t| t.sqlite_ddl()).collect();
    format!(
        "{MIGRATION_1_HEAD}{}\n{MIGRATION_1_TAIL}",
        tables.join("\n")
    )
});

/// Every migration, in order: `(version, sql)`.
pub(super) static MIGRATIONS: LazyLock<[(i64, &'static str); 1]> =
    LazyLock::new(|| [(1, MIGRATION_1.as_str())]);

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
    /// The parameters of [`Table::insert_sql`] for record `r`: its id,
    /// its content fingerprint (turns), the copied columns, its JSON.
    pub(super) fn row(&self, id: String, fp: Option<String>, r: &Value) -> Result<Vec<SqlValue>> {
        let mut params = vec![SqlValue::Text(id)];
        params.extend(fp.map(SqlValue::Text));
        for (col, field) in self.columns {
            params.push(bind(r.get(field), col)?);
        }
        params.push(SqlValue::Text(r.to_json()));
        Ok(params)
    }

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
