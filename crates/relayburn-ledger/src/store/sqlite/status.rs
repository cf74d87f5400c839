//! `burn state status` and `burn state check` for a SQLite store.

use super::*;
use crate::store::tables::RECORD_TABLES;

/// What `burn state status` reports for a SQLite store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteStatus {
    pub path: PathBuf,
    /// Bytes of the store file and its `-wal`.
    pub bytes: u64,
    pub schema_version: i64,
    /// Rows per table, in schema order (`turns`, …, `stamps`, `content`).
    pub rows: Vec<(&'static str, u64)>,
    /// Distinct sessions holding content.
    pub content_sessions: u64,
    /// `(name, age ms, pid)` of every lock row.
    pub locks: Vec<(String, i64, Option<i64>)>,
}

impl SqliteStatus {
    pub fn to_value(&self) -> Value {
        let mut rows = Object::new();
        for (t, n) in &self.rows {
            rows.insert(*t, Value::Number(*n as f64));
        }
        let locks = self
            .locks
            .iter()
            .map(|(n, age, pid)| {
                crate::records::obj([
                    ("name", Value::str(n)),
                    ("ageMs", Value::Number(*age as f64)),
                    ("pid", pid.map_or(Value::Null, |p| Value::Number(p as f64))),
                ])
            })
            .collect();
        crate::records::obj([
            ("storage", Value::str("sqlite")),
            ("path", Value::str(&self.path.to_string_lossy())),
            ("bytes", Value::Number(self.bytes as f64)),
            ("schemaVersion", Value::Number(self.schema_version as f64)),
            ("rows", Value::Object(rows)),
            (
                "contentSessions",
                Value::Number(self.content_sessions as f64),
            ),
            ("locks", Value::Array(locks)),
        ])
    }
}

impl SqliteStore {
    /// Sizes, row counts and lock rows; reads only.
    pub fn status(&self) -> Result<SqliteStatus> {
        let conn = self.conn();
        let e = |e| self.err(e);
        let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map_err(e);
        let mut rows = Vec::new();
        // Every record table, then stamps and content.
        let counted = RECORD_TABLES
            .iter()
            .map(|t| t.name)
            .chain(["stamps", "content"]);
        for t in counted {
            let n = one(&format!("SELECT count(*) FROM {t}"))?;
            rows.push((t, u64::try_from(n).unwrap_or(0)));
        }
        let now = now_ms();
        let mut stmt = conn
            .prepare("SELECT name, acquired_at_ms, pid FROM locks ORDER BY name")
            .map_err(e)?;
        let locks = stmt
            .query_map([], |r| {
                Ok((
                    text(r.get_ref(0)?),
                    now.saturating_sub(r.get::<_, Option<i64>>(1)?.unwrap_or(0)),
                    r.get::<_, Option<i64>>(2)?,
                ))
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        Ok(SqliteStatus {
            path: self.path.clone(),
            bytes: size(&self.path) + size(Path::new(&wal)),
            schema_version: one("SELECT version FROM schema_state WHERE id = 1")?,
            rows,
            content_sessions: u64::try_from(one("SELECT count(DISTINCT session_id) FROM content")?)
                .unwrap_or(0),
            locks,
        })
    }

    /// Problems found: SQLite's `integrity_check` and lock rows older than
    /// the stale window. Reads only.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn
                .prepare("PRAGMA integrity_check")
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map([], |r| Ok(text(r.get_ref(0)?)))
                .map_err(|e| self.err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            rows.into_iter()
                .filter(|r| r != "ok")
                .map(|r| format!("integrity: {r}"))
                .collect()
        };
        let stale = i64::try_from(self.options.stale.as_millis()).unwrap_or(i64::MAX);
        for (name, age, pid) in self.status()?.locks {
            if age >= stale {
                problems.push(format!(
                    "lock row {name:?} is {age} ms old (pid {}): the next acquirer breaks it",
                    pid.map_or("unknown".to_string(), |p| p.to_string())
                ));
            }
        }
        Ok(problems)
    }
}
