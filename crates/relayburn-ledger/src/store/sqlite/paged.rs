//! Reading records: one session through its index, or a whole table in
//! rowid order a page at a time.

use super::*;

/// Records streamed out of the store, owning or borrowing it (`S`).
pub type SharedRecords<'a> = Box<dyn Iterator<Item = Result<Value>> + Send + 'a>;

/// The records of `kind` passing `q`, turns with their stamps folded.
pub(super) fn records<'a, S>(store: S, kind: Kind, q: &Query) -> Result<SharedRecords<'a>>
where
    S: Deref<Target = SqliteStore> + Send + 'a,
{
    let t = table(kind).ok_or_else(|| Error::invalid("kind", "stamps are not queried"))?;
    let filters = Filters::new(q);
    if kind == Kind::Turn {
        let stamps = store.stamps()?;
        let rows = rows(store, t, q)?;
        return Ok(Box::new(rows.filter_map(move |r| match r {
            Ok(rec) => enrich_turn(rec, &stamps, &filters).map(Ok),
            Err(e) => Some(Err(e)),
        })));
    }
    let rows = rows(store, t, q)?;
    Ok(Box::new(rows.filter(move |r| match r {
        Ok(rec) => passes(kind, rec, &filters),
        Err(_) => true,
    })))
}

/// A table's records in rowid order: one session's through its index,
/// all of them a page at a time.
pub(super) fn rows<'a, S>(store: S, t: &Table, q: &Query) -> Result<SharedRecords<'a>>
where
    S: Deref<Target = SqliteStore> + Send + 'a,
{
    let session = q.session_id.as_deref().filter(|s| !s.is_empty());
    if let (true, Some(sid)) = (t.by_session, session) {
        let source = q.source.as_deref().filter(|s| !s.is_empty());
        let rows = store.session_rows(t.name, sid, source)?;
        return Ok(Box::new(
            rows.into_iter()
                .filter_map(|j| crate::store::parse_record(&j))
                .map(Ok),
        ));
    }
    Ok(Box::new(Paged {
        store,
        sql: format!(
            "SELECT rowid, record_json FROM {} WHERE rowid > ?1 ORDER BY rowid LIMIT {PAGE}",
            t.name
        ),
        after: i64::MIN,
        buf: VecDeque::new(),
        done: false,
    }))
}

/// Rows of a table in rowid order, a page at a time, so a query holds
/// neither the table in memory nor the connection between pages.
pub(super) struct Paged<S> {
    store: S,
    sql: String,
    after: i64,
    buf: VecDeque<String>,
    done: bool,
}

impl<S: Deref<Target = SqliteStore>> Paged<S> {
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

impl<S: Deref<Target = SqliteStore>> Iterator for Paged<S> {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        crate::store::next_record(self)
    }
}

impl<S: Deref<Target = SqliteStore>> crate::store::Pages for Paged<S> {
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
