//! The five record tables of the reference's storage migration 1,
//! described once. The SQLite store's migration and the team ledger's
//! PostgreSQL schema are both written from this description, so the two
//! cannot drift apart column by column.

/// One column of a record table.
pub(crate) struct Column {
    pub name: &'static str,
    /// The declaration in the SQLite store (the reference's text).
    pub sqlite: &'static str,
    /// The declaration in the team ledger.
    pub postgres: &'static str,
}

/// A record table: its columns in order and its secondary indexes.
pub(crate) struct RecordTable {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// `(index name suffix, indexed columns)`, in creation order.
    pub indexes: &'static [(&'static str, &'static str)],
}

const fn col(name: &'static str, sqlite: &'static str) -> Column {
    Column {
        name,
        sqlite,
        postgres: sqlite,
    }
}

const ID_HASH: Column = col("id_hash", "TEXT PRIMARY KEY");
const SOURCE: Column = col("source", "TEXT NOT NULL");
const SESSION_ID: Column = col("session_id", "TEXT NOT NULL");
const TS: Column = col("ts", "TEXT NOT NULL");
const TS_OPTIONAL: Column = col("ts", "TEXT");
const RECORD_JSON: Column = col("record_json", "TEXT NOT NULL");

/// The record tables, in the order the migration creates them.
pub(crate) const RECORD_TABLES: [RecordTable; 5] = [
    RecordTable {
        name: "turns",
        columns: &[
            ID_HASH,
            col("content_fp", "TEXT NOT NULL"),
            SOURCE,
            SESSION_ID,
            col("message_id", "TEXT NOT NULL"),
            // The team ledger accepts a turn without an index.
            Column {
                name: "turn_index",
                sqlite: "INTEGER NOT NULL",
                postgres: "BIGINT",
            },
            TS,
            col("project", "TEXT"),
            col("project_key", "TEXT"),
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
        name: "compactions",
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
    RecordTable {
        name: "relationships",
        columns: &[
            ID_HASH,
            SOURCE,
            SESSION_ID,
            col("related_session_id", "TEXT"),
            TS_OPTIONAL,
            RECORD_JSON,
        ],
        indexes: &[
            ("session", "source, session_id"),
            ("related", "related_session_id"),
        ],
    },
    RecordTable {
        name: "tool_result_events",
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS_OPTIONAL, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
    RecordTable {
        name: "user_turns",
        columns: &[ID_HASH, SOURCE, SESSION_ID, TS, RECORD_JSON],
        indexes: &[("session", "source, session_id"), ("ts", "ts")],
    },
];

/// `CREATE TABLE IF NOT EXISTS` for `name` with `(column, declaration)`
/// pairs, the names padded to one column as the reference lays them out.
pub(crate) fn create_table(name: &str, columns: &[(&str, &str)]) -> String {
    let width = columns.iter().map(|(c, _)| c.len()).max().unwrap_or(0) + 2;
    let body: Vec<String> = columns
        .iter()
        .map(|(c, decl)| format!("  {c:<width$}{decl}"))
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
        let mut out = create_table(self.name, &columns);
        out.push('\n');
        for (suffix, cols) in self.indexes {
            out.push_str(&create_index(self.name, suffix, cols));
        }
        out
    }
}
