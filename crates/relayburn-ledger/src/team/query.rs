//! Team queries: the local query's filters, stamp folding and output
//! over the records every machine pushed. The session, source and machine
//! are looked up by index; everything else is decided by the same code
//! that filters the ledger file ([`RecordFilter`]), so both answer alike.

use postgres::types::ToSql;
use postgres::Client;

use crate::error::Result;
use crate::json::{self, Object, Value};
use crate::query::{narrowing, Query, RecordFilter};
use crate::records::Kind;

use super::schema;
use super::target::Target;

/// A connected team ledger.
pub struct TeamLedger {
    target: Target,
    client: Client,
    /// Statements prepared on this connection, by SQL text: a repeated
    /// query then costs one round trip instead of two.
    prepared: std::collections::HashMap<String, postgres::Statement>,
}

/// A machine's last push as the server recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinePush {
    pub machine_id: String,
    pub ledger_offset: i64,
    pub rows_inserted: i64,
    pub pushes: i64,
    /// ISO 8601, UTC, milliseconds.
    pub last_push_at: String,
}

impl MachinePush {
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("machineId", Value::str(&self.machine_id));
        o.insert("lastPushAt", Value::str(&self.last_push_at));
        o.insert("ledgerOffset", Value::Number(self.ledger_offset as f64));
        o.insert("rowsInserted", Value::Number(self.rows_inserted as f64));
        o.insert("pushes", Value::Number(self.pushes as f64));
        Value::Object(o)
    }
}

fn table(kind: Kind) -> &'static str {
    match kind {
        Kind::Turn => "turns",
        Kind::Compaction => "compactions",
        Kind::Relationship => "relationships",
        Kind::ToolResultEvent => "tool_result_events",
        Kind::UserTurn => "user_turns",
        Kind::Stamp => "stamps",
    }
}

/// Parse stored JSON; a row that does not parse is a damaged database.
fn parse_stored(target: &Target, what: &str, text: &str) -> Result<Value> {
    json::parse(text).map_err(|e| target.error(format_args!("stored {what} is not JSON: {e}")))
}

impl TeamLedger {
    /// Connect, bringing the schema up to date (or refusing a newer one).
    pub fn open(target: &Target) -> Result<TeamLedger> {
        let mut client = target.connect()?;
        schema::migrate(target, &mut client)?;
        Ok(TeamLedger {
            target: target.clone(),
            client,
            prepared: std::collections::HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare(sql)
            .map_err(|e| self.target.db_error("prepare", e))?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The last push of every machine, by machine id.
    pub fn machines(&mut self) -> Result<Vec<MachinePush>> {
        let rows = self
            .client
            .query(
                "SELECT machine_id, ledger_offset, rows_inserted, pushes,
                        to_char(last_push_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
                 FROM push_cursors ORDER BY machine_id",
                &[],
            )
            .map_err(|e| self.target.db_error("read push cursors", e))?;
        Ok(rows
            .iter()
            .map(|r| MachinePush {
                machine_id: r.get(0),
                ledger_offset: r.get(1),
                rows_inserted: r.get(2),
                pushes: r.get(3),
                last_push_at: r.get(4),
            })
            .collect())
    }

    /// Stamp lines that may apply to turns of the query's session (all of
    /// them without a session), in the order they were pushed.
    fn stamp_lines(&mut self, session: Option<&str>) -> Result<Vec<Value>> {
        let mut sql = String::from("SELECT ts, selector_json, enrichment_json FROM stamps");
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(s) = &session {
            sql.push_str(" WHERE session_id IS NULL OR session_id = $1");
            params.push(s);
        }
        sql.push_str(" ORDER BY machine_id, ledger_offset, ledger_part");
        let stmt = self.statement(&sql)?;
        let rows = self
            .client
            .query(&stmt, &params)
            .map_err(|e| self.target.db_error("read stamps", e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut line = Object::new();
            line.insert("v", Value::Number(1.0));
            line.insert("kind", Value::str("stamp"));
            line.insert("ts", Value::str(r.get::<_, &str>(0)));
            line.insert("selector", parse_stored(&self.target, "stamp", r.get(1))?);
            line.insert("enrichment", parse_stored(&self.target, "stamp", r.get(2))?);
            out.push(Value::Object(line));
        }
        Ok(out)
    }

    /// Records of `kind` matching `q` (from one machine when given), in
    /// each machine's ledger order, machines by id; turns enriched from the
    /// stamps every machine pushed.
    pub fn query(
        &mut self,
        kind: Kind,
        q: &Query,
        machine: Option<&str>,
        mut emit: impl FnMut(Value) -> Result<()>,
    ) -> Result<()> {
        if kind == Kind::Stamp {
            return Err(crate::Error::invalid(
                "kind",
                "stamps are not queried as records",
            ));
        }
        let (session, source) = narrowing(q);
        let stamps = if kind == Kind::Turn {
            self.stamp_lines(session)?
        } else {
            Vec::new()
        };
        let filter = RecordFilter::new(kind, q, stamps.into_iter().map(Ok))?;
        let mut sql = format!("SELECT record_json FROM {}", table(kind));
        let mut clauses: Vec<String> = Vec::new();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(m) = &machine {
            params.push(m);
            clauses.push(format!("machine_id = ${}", params.len()));
        }
        if let Some(s) = &session {
            params.push(s);
            let n = params.len();
            clauses.push(if kind == Kind::Relationship {
                format!("(session_id = ${n} OR related_session_id = ${n})")
            } else {
                format!("session_id = ${n}")
            });
        }
        if let Some(s) = &source {
            params.push(s);
            clauses.push(format!("source = ${}", params.len()));
        }
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(" ORDER BY machine_id, ledger_offset, ledger_part");
        let target = self.target.clone();
        let stmt = self.statement(&sql)?;
        let rows = self
            .client
            .query_raw(&stmt, params.iter().copied())
            .map_err(|e| target.db_error("query", e))?;
        use postgres::fallible_iterator::FallibleIterator;
        let mut rows = rows;
        while let Some(row) = rows.next().map_err(|e| target.db_error("query", e))? {
            let rec = parse_stored(&target, "record", row.get(0))?;
            if let Some(v) = filter.apply(rec) {
                emit(v)?;
            }
        }
        Ok(())
    }
}
