//! Streaming a table in rowid order, a page at a time.

use super::*;

/// Rows of a table in rowid order, a page at a time, so a query holds
/// neither the table in memory nor the connection between pages.
pub(super) struct Paged<'a> {
    pub(super) store: &'a SqliteStore,
    pub(super) sql: String,
    pub(super) after: i64,
    pub(super) buf: VecDeque<String>,
    pub(super) done: bool,
}

impl Paged<'_> {
    pub(super) fn fill(&mut self) -> Result<()> {
        let conn = self.store.conn();
        let mut stmt = conn
            .prepare_cached(&self.sql)
            .map_err(|e| self.store.err(e))?;
        let rows = stmt
            .query_map([self.after], |r| {
                Ok((r.get::<_, i64>(0)?, text(r.get_ref(1)?)))
            })
            .map_err(|e| self.store.err(e))?;
        let mut n = 0;
        for row in rows {
            let (rowid, j) = row.map_err(|e| self.store.err(e))?;
            self.after = rowid;
            self.buf.push_back(j);
            n += 1;
        }
        self.done = n < PAGE;
        Ok(())
    }
}

impl Iterator for Paged<'_> {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        loop {
            if let Some(j) = self.buf.pop_front() {
                match parse_record(&j) {
                    Some(v) => return Some(Ok(v)),
                    None => continue,
                }
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
