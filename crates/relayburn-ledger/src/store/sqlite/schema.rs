//! The store's schema: its migrations and the record tables.

use std::sync::LazyLock;

use super::*;
use crate::store::tables::{sqlite_content_ddl, RecordTable, RECORD_TABLES};

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

/// Migration 1 after the record tables, before the content table.
const MIGRATION_1_STAMPS: &str = "CREATE TABLE IF NOT EXISTS stamps (
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

";

/// Migration 1: the record and content tables come from their shared
/// description.
static MIGRATION_1: LazyLock<String> = LazyLock::new(|| {
    let tables: Vec<String> = RECORD_TABLES.iter().map(|t| t.sqlite_ddl()).collect();
    format!(
        "{MIGRATION_1_HEAD}{}\n{MIGRATION_1_STAMPS}{}",
        tables.join("\n"),
        sqlite_content_ddl()
    )
});

/// Every migration, in order: `(version, sql)`.
pub(super) static MIGRATIONS: LazyLock<[(i64, &'static str); 1]> =
    LazyLock::new(|| [(1, MIGRATION_1.as_str())]);

/// A record table of the store.
pub(super) type Table = RecordTable;

/// The record table of `kind`; stamps have their own.
pub(super) fn table(kind: Kind) -> Option<&'static Table> {
    RECORD_TABLES.iter().find(|t| t.kind == kind)
}

impl Table {
    /// The parameters of [`Table::insert_sql`] for record `r`: its id,
    /// its content fingerprint (turns only), the copied columns, its JSON.
    pub(super) fn row(&self, id: String, fp: Option<String>, r: &Value) -> Result<Vec<SqlValue>> {
        let mut params = vec![SqlValue::Text(id)];
        params.extend(fp.map(SqlValue::Text));
        for c in self.columns {
            if let Some(field) = c.field {
                params.push(bind(r.get(field), c.name)?);
            }
        }
        params.push(SqlValue::Text(r.to_json()));
        Ok(params)
    }

    /// `INSERT OR IGNORE` of every column.
    pub(super) fn insert_sql(&self) -> String {
        let cols: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        let marks = vec!["?"; cols.len()].join(", ");
        format!(
            "INSERT OR IGNORE INTO {} ({}) VALUES ({marks})",
            self.name,
            cols.join(", ")
        )
    }
}
