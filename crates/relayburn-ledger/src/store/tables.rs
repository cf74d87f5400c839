//! The five record tables and the content table of the reference's
//! storage migration 1, described once. The SQLite store's migration and
//! inserts and the team ledger's PostgreSQL schema are all written from
//! this description, so they cannot drift apart column by column.

use crate::records::Kind;

/// One column of a table.
pub(crate) struct Column {
    pub name: &'static str,
    /// The record field the column copies, if it copies one.
    pub field: Option<&'static str>,
    /// The declaration in the SQLite store (the reference's text).
    pub sqlite: &'static str,
    /// The declaration in the team ledger.
    pub postgres: &'static str,
}

/// A record table: its columns in order and its secondary indexes.
pub(crate) struct RecordTable {
    pub kind: Kind,
    pub name: &'static str,
    /// Has a `(source, session_id)` index and a `sessionId`-only filter.
    pub by_session: bool,
    pub columns: &'static [Column],
    /// `(index name suffix, indexed columns)`, in creation order.
    pub indexes: &'static [(&'static str, &'static str)],
}

/// A column declared alike in both dialects.
const fn col(name: &'static str, sqlite: &'static str) -> Column {
    Column {
        name,
        field: None,
        sqlite,
        postgres: sqlite,
    }
}

/// A column copied from record field `field`.
const fn copied(name: &'static str, field: &'static str, sqlite: &'static str) -> Column {
    Column {
        field: Some(field),
        ..col(name, sqlite)
    }
}

const ID_HASH: Column = col("id_hash", "TEXT PRIMARY KEY");
const CONTENT_FP: Column = col("content_fp", "TEXT NOT NULL");
const SOURCE: Column = copied("source", "source", "TEXT NOT NULL");
const SESSION_ID: Column = copied("session_id", "sessionId", "TEXT NOT NULL");
const MESSAGE_ID: Column = copied("message_id", "messageId", "TEXT NOT NULL");
const TS: Column = copied("ts", "ts", "TEXT NOT NULL");
const TS_OPTIONAL: Column = copied("ts", "ts", "TEXT");
const RECORD_JSON: Column = col("record_json", "TEXT NOT NULL");

/// The record tables, in the order the migration creates them.
pub(crate) const RECORD_TABLES: [RecordTable; 5] = [
    RecordTable {
        kind: Kind::Turn,
        name: "turns",
        by_session: true,
        columns: &[
            ID_HASH,
            CONTENT_FP,
            SOURCE,
            SESSION_ID,
            MESSAGE_ID,
            // The team ledger accepts a turn without an index.
            Column {
                postgres: "BIGINT",
                ..copied("turn_index", "turnIndex", "INTEGER NOT NULL")
            },
            TS,
            copied("project", "project", "TEXT"),
            copied("project_key", "projectKey", "TEXT"),
            RECORD_JSON,
        ],
        indexes: &[
            ("session", "source, session_id"),
            ("ts", "ts"),
            ("session_index", "source, session_id, turn_index"),
            ("project_key", "project_key"),
        ],
    },
    RecordTable {
        kind: Kind::Compaction,
        name: "compactions",
        by_session: true,
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
    RecordTable {
        kind: Kind::Relationship,
        name: "relationships",
        // `sessionId` also matches `relatedSessionId`.
        by_session: false,
        columns: &[
            ID_HASH,
            SOURCE,
            SESSION_ID,
            copied("related_session_id", "relatedSessionId", "TEXT"),
            TS_OPTIONAL,
            RECORD_JSON,
        ],
        indexes: &[
            ("session", "source, session_id"),
            ("related", "related_session_id"),
        ],
    },
    RecordTable {
        kind: Kind::ToolResultEvent,
        name: "tool_result_events",
        by_session: true,
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS_OPTIONAL, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
    RecordTable {
        kind: Kind::UserTurn,
        name: "user_turns",
        by_session: true,
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
];

/// The content table's columns (message text of the content sidecars).
pub(crate) const CONTENT_COLUMNS: &[Column] = &[
    Column {
        postgres: "BIGSERIAL PRIMARY KEY",
        ..col("seq", "INTEGER PRIMARY KEY AUTOINCREMENT")
    },
    SOURCE,
    SESSION_ID,
    MESSAGE_ID,
    TS,
    CONTENT_FP,
    RECORD_JSON,
    Column {
        postgres: "BIGINT NOT NULL",
        ..col("mtime_ms", "INTEGER NOT NULL")
    },
];

/// The content table's constraint, after its columns.
pub(crate) const CONTENT_UNIQUE: &str = "UNIQUE (session_id, content_fp)";

/// The content table's indexes.
pub(crate) const CONTENT_INDEXES: &[(&str, &str)] = &[
    ("session", "session_id"),
    ("session_message", "session_id, message_id"),
    ("mtime", "mtime_ms"),
];

/// `CREATE TABLE IF NOT EXISTS` for `name` with `(column, declaration)`
/// pairs, the names padded to one column as the reference lays them out,
/// then the table `constraints`.
pub(crate) fn create_table(name: &str, columns: &[(&str, &str)], constraints: &[&str]) -> String {
    let width = columns.iter().map(|(c, _)| c.len()).max().unwrap_or(0) + 2;
    let body: Vec<String> = columns
        .iter()
        .map(|(c, decl)| format!("  {c:<width$}{decl}"))
        .chain(constraints.iter().map(|c| format!("  {c}")))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {name} (\n{}\n);\n",
        body.join(",\n")
    )
}

/// `CREATE INDEX IF NOT EXISTS idx_<table>_<suffix> ON <table>(<columns>);`
pub(crate) fn create_index(table: &str, suffix: &str, columns: &str) -> String {
    format!("CREATE INDEX IF NOT EXISTS idx_{table}_{suffix} ON {table}({columns});\n")
}

impl RecordTable {
    /// The table and its indexes as the SQLite store creates them, each
    /// statement's text exactly the reference's (`sqlite_master` keeps it).
    pub(crate) fn sqlite_ddl(&self) -> String {
        let columns: Vec<(&str, &str)> = self.columns.iter().map(|c| (c.name, c.sqlite)).collect();
        sqlite_table(self.name, &columns, &[], self.indexes)
    }
}

/// The content table as the SQLite store creates it.
pub(crate) fn sqlite_content_ddl() -> String {
    let columns: Vec<(&str, &str)> = CONTENT_COLUMNS.iter().map(|c| (c.name, c.sqlite)).collect();
    sqlite_table("content", &columns, &[CONTENT_UNIQUE], CONTENT_INDEXES)
}

/// A table, a blank line, its indexes: the reference's SQLite layout.
fn sqlite_table(
    name: &str,
    columns: &[(&str, &str)],
    constraints: &[&str],
    indexes: &[(&str, &str)],
) -> String {
    let mut out = create_table(name, columns, constraints);
    out.push('\n');
    for (suffix, cols) in indexes {
        out.push_str(&create_index(name, suffix, cols));
    }
    out
}
