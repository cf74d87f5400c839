//! What `burn state status` reports for a PostgreSQL store.

use super::{PostgresStore, STORE_MACHINE};
use crate::error::Result;
use crate::json::{Object, Value};

impl PostgresStore {
    /// Row counts per table (every row, and the store's own), the schema
    /// version and the sessions holding content; reads only.
    pub fn status(&self) -> Result<PostgresStatus> {
        let mut c = self.conn()?;
        let version: i32 = c
            .query_one("SELECT version FROM schema_state WHERE id = 1", &[])
            .map_err(self.db("read schema version"))?
            .get(0);
        let mut rows = Vec::new();
        for t in COUNTED {
            let r = c
                .query_one(
                    &format!("SELECT count(*), count(*) FILTER (WHERE machine_id = $1) FROM {t}"),
                    &[&STORE_MACHINE],
                )
                .map_err(self.db("count rows"))?;
            let n = |i| u64::try_from(r.get::<_, i64>(i)).unwrap_or(0);
            rows.push((t, n(0), n(1)));
        }
        let sessions: i64 = c
            .query_one("SELECT count(DISTINCT session_id) FROM content", &[])
            .map_err(self.db("count content"))?
            .get(0);
        Ok(PostgresStatus {
            target: self.target.name().to_string(),
            schema: self.schema.clone(),
            schema_version: version,
            rows,
            content_sessions: u64::try_from(sessions).unwrap_or(0),
        })
    }
}

/// Tables counted by [`PostgresStore::status`].
const COUNTED: [&str; 7] = [
    "turns",
    "compactions",
    "relationships",
    "tool_result_events",
    "user_turns",
    "stamps",
    "content",
];

/// What `burn state status` reports for a PostgreSQL store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresStatus {
    /// `user@host:port/db`, never the password.
    pub target: String,
    pub schema: String,
    pub schema_version: i32,
    /// `(table, rows, rows the store wrote)`; the rest were pushed.
    pub rows: Vec<(&'static str, u64, u64)>,
    /// Distinct sessions holding content.
    pub content_sessions: u64,
}

impl PostgresStatus {
    pub fn to_value(&self) -> Value {
        let mut rows = Object::new();
        let mut own = Object::new();
        for (t, n, o) in &self.rows {
            rows.insert(*t, Value::Number(*n as f64));
            own.insert(*t, Value::Number(*o as f64));
        }
        crate::records::obj([
            ("storage", Value::str("postgres")),
            ("target", Value::str(&self.target)),
            ("schema", Value::str(&self.schema)),
            (
                "schemaVersion",
                Value::Number(f64::from(self.schema_version)),
            ),
            ("rows", Value::Object(rows)),
            ("storeRows", Value::Object(own)),
            (
                "contentSessions",
                Value::Number(self.content_sessions as f64),
            ),
        ])
    }
}
