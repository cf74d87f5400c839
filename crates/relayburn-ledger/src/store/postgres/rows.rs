//! Records as rows: the columns derived from each record kind, values
//! bound as the SQLite store binds them, and a batch inserted as one
//! statement.

use postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::index::Hash16;
use crate::json::{format_number, Value};
use crate::records::Kind;

/// How a derived column is bound.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ty {
    Text,
    Int,
}

/// A record table: columns copied out of the record after `id_hash` (and
/// `content_fp` for turns), and which the reference declares `NOT NULL`.
pub(super) struct Table {
    pub(super) name: &'static str,
    pub(super) columns: &'static [(&'static str, &'static str, Ty, bool)],
}

pub(super) fn table(kind: Kind) -> Option<Table> {
    use Ty::{Int, Text};
    const SST: &[(&str, &str, Ty, bool)] = &[
        ("source", "source", Text, true),
        ("session_id", "sessionId", Text, true),
        ("ts", "ts", Text, true),
    ];
    Some(match kind {
        Kind::Turn => Table {
            name: "turns",
            columns: &[
                ("source", "source", Text, true),
                ("session_id", "sessionId", Text, true),
                ("message_id", "messageId", Text, true),
                ("turn_index", "turnIndex", Int, true),
                ("ts", "ts", Text, true),
                ("project", "project", Text, false),
                ("project_key", "projectKey", Text, false),
            ],
        },
        Kind::Compaction => Table {
            name: "compactions",
            columns: SST,
        },
        Kind::Relationship => Table {
            name: "relationships",
            columns: &[
                ("source", "source", Text, true),
                ("session_id", "sessionId", Text, true),
                ("related_session_id", "relatedSessionId", Text, false),
                ("ts", "ts", Text, false),
            ],
        },
        Kind::ToolResultEvent => Table {
            name: "tool_result_events",
            columns: &[
                ("source", "source", Text, true),
                ("session_id", "sessionId", Text, true),
                ("ts", "ts", Text, false),
            ],
        },
        Kind::UserTurn => Table {
            name: "user_turns",
            columns: SST,
        },
        Kind::Stamp => return None,
    })
}

/// One column's values for a batch, bound as one array parameter.
pub(super) enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

impl Column {
    pub(super) fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(v) => v,
            Column::Int(v) => v,
        }
    }
}

/// Rows of one table ready to insert, column by column.
pub(super) struct Batch {
    names: Vec<&'static str>,
    pub(super) columns: Vec<Column>,
    pub(super) len: usize,
}

impl Batch {
    pub(super) fn new(t: &Table, with_fp: bool) -> Batch {
        let mut names = vec!["id_hash"];
        let mut columns = vec![Column::Text(Vec::new())];
        if with_fp {
            names.push("content_fp");
            columns.push(Column::Text(Vec::new()));
        }
        for (col, _, ty, _) in t.columns {
            names.push(col);
            columns.push(match ty {
                Ty::Text => Column::Text(Vec::new()),
                Ty::Int => Column::Int(Vec::new()),
            });
        }
        names.push("record_json");
        columns.push(Column::Text(Vec::new()));
        Batch {
            names,
            columns,
            len: 0,
        }
    }

    /// Add a row made by [`row_values`].
    pub(super) fn push(&mut self, values: Vec<Bound>) -> Result<()> {
        for (c, v) in self.columns.iter_mut().zip(values) {
            match (c, v) {
                (Column::Text(c), Bound::Text(v)) => c.push(v),
                (Column::Int(c), Bound::Int(v)) => c.push(v),
                _ => return Err(Error::Internal("column type mismatch".into())),
            }
        }
        self.len += 1;
        Ok(())
    }

    /// `INSERT … SELECT … FROM unnest(…)`: every row in one statement,
    /// numbered `after + 1, after + 2, …` in batch order.
    pub(super) fn insert_sql(&self, table: &str) -> String {
        let n = self.names.len();
        let arrays: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Column::Text(_) => format!("${}::text[]", i + 1),
                Column::Int(_) => format!("${}::bigint[]", i + 1),
            })
            .collect();
        format!(
            "INSERT INTO {table} ({cols}, machine_id, ledger_offset, ledger_part) \
             SELECT {cols}, ${m}, ${b}::bigint + u.n, 0 \
             FROM unnest({arrays}) WITH ORDINALITY AS u({cols}, n) \
             ON CONFLICT DO NOTHING",
            cols = self.names.join(", "),
            arrays = arrays.join(", "),
            m = n + 1,
            b = n + 2,
        )
    }
}

/// A record's row in [`Batch`] column order; `fp` for turns. A value that
/// cannot be bound, or a missing required one, is an error.
pub(super) fn row_values(
    t: &Table,
    id: Hash16,
    fp: Option<Hash16>,
    r: &Value,
) -> Result<Vec<Bound>> {
    let mut values: Vec<Bound> = vec![Bound::Text(Some(id.hex()))];
    if let Some(fp) = fp {
        values.push(Bound::Text(Some(fp.hex())));
    }
    for (col, field, ty, required) in t.columns {
        let v = bind(r.get(field), col, *ty)?;
        if *required && v.is_null() {
            return Err(Error::invalid(
                *field,
                format!("{}.{col} is NOT NULL: the record has no {field}", t.name),
            ));
        }
        values.push(v);
    }
    values.push(Bound::Text(Some(r.to_json())));
    Ok(values)
}

/// A value bound to a column.
pub(super) enum Bound {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Bound {
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Bound::Text(None) | Bound::Int(None))
    }
}

/// A JavaScript value for a derived column, as the SQLite store binds
/// it: strings as text, numbers as JavaScript prints them (an integer
/// column takes integral numbers; others are stored as NULL, the record
/// JSON keeps them), null and absent as NULL; booleans, objects and arrays
/// are refused as `node:sqlite` refuses them.
pub(super) fn bind(v: Option<&Value>, column: &str, ty: Ty) -> Result<Bound> {
    let refused = |other: &Value| {
        Err(Error::invalid(
            column,
            format!(
                "{column}: {} cannot be bound to a parameter",
                other.to_json()
            ),
        ))
    };
    Ok(match (ty, v) {
        (Ty::Text, None | Some(Value::Null)) => Bound::Text(None),
        (Ty::Int, None | Some(Value::Null)) => Bound::Int(None),
        (Ty::Text, Some(Value::String(s))) => Bound::Text(Some(s.to_lossy().into_owned())),
        (Ty::Text, Some(Value::Number(n))) => Bound::Text(Some(format_number(*n))),
        (Ty::Int, Some(Value::Number(n))) => {
            Bound::Int((n.fract() == 0.0 && n.abs() < 9.0e15).then_some(*n as i64))
        }
        (Ty::Int, Some(Value::String(s))) => Bound::Int(s.to_lossy().parse().ok()),
        (_, Some(other)) => return refused(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json;

    #[test]
    fn values_bind_as_the_sqlite_store_binds_them() {
        assert!(bind(None, "c", Ty::Text).unwrap().is_null());
        match bind(Some(&Value::Number(2.0)), "c", Ty::Text).unwrap() {
            Bound::Text(Some(s)) => assert_eq!(s, "2"),
            _ => panic!("text"),
        }
        match bind(Some(&Value::Number(2.5)), "c", Ty::Int).unwrap() {
            Bound::Int(v) => assert_eq!(v, None),
            _ => panic!("int"),
        }
        assert!(bind(Some(&Value::Bool(true)), "c", Ty::Text).is_err());
        assert!(bind(Some(&json::parse("{}").unwrap()), "c", Ty::Int).is_err());
    }

    #[test]
    fn the_insert_numbers_rows_after_the_last() {
        let t = table(Kind::Compaction).unwrap();
        let b = Batch::new(&t, false);
        assert_eq!(
            b.insert_sql("compactions"),
            "INSERT INTO compactions (id_hash, source, session_id, ts, record_json, machine_id, \
             ledger_offset, ledger_part) SELECT id_hash, source, session_id, ts, record_json, $6, \
             $7::bigint + u.n, 0 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[]) WITH ORDINALITY AS u(id_hash, source, session_id, ts, record_json, n) \
             ON CONFLICT DO NOTHING"
        );
    }
}
