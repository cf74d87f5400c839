//! Rows of a table in store order, streamed a page at a time.

use std::collections::VecDeque;

use postgres::types::ToSql;

use super::{PostgresStore, PAGE};
use crate::error::Result;
use crate::json::Value;

/// Rows of a table in store order, a page at a time (keyset paging on the
/// order key), holding neither the table in memory nor the connection
/// between pages.
pub(super) struct Paged<'a> {
    pub(super) store: &'a PostgresStore,
    pub(super) sql: String,
    pub(super) source: Option<String>,
    pub(super) after: (String, i64, i32),
    pub(super) buf: VecDeque<String>,
    pub(super) done: bool,
}

impl Paged<'_> {
    fn fill(&mut self) -> Result<()> {
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&self.after.0, &self.after.1, &self.after.2];
        if let Some(s) = &self.source {
            params.push(s);
        }
        let rows = self
            .store
            .conn()?
            .query(&self.sql, &params)
            .map_err(self.store.db("query"))?;
        self.done = (rows.len() as i64) < PAGE;
        if let Some(last) = rows.last() {
            self.after = (last.get(0), last.get(1), last.get(2));
        }
        self.buf.extend(rows.iter().map(|r| r.get::<_, String>(3)));
        Ok(())
    }
}

impl Iterator for Paged<'_> {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        crate::store::next_record(self)
    }
}

impl crate::store::Pages for Paged<'_> {
    fn buffered(&mut self) -> &mut VecDeque<String> {
        &mut self.buf
    }

    fn exhausted(&self) -> bool {
        self.done
    }

    fn set_exhausted(&mut self) {
        self.done = true;
    }

    fn fetch(&mut self) -> Result<()> {
        self.fill()
    }
}
