//! The dedup window of recent turn fingerprints.

use super::*;

/// The content fingerprints of the last [`CONTENT_WINDOW`] turns by
/// rowid, kept between calls so an append reads only the rows written
/// since (by anyone) instead of the whole window.
///
/// Turns are only ever inserted (by either implementation), and a new row
/// gets a rowid above every existing one, so the rows past the last one
/// seen are exactly what changed. The last row seen is checked each time;
/// if it is gone or differs (the store was replaced), the window is read
/// again in full, as the reference reads it on every call.
#[derive(Debug, Default)]
pub(super) struct Window {
    rows: VecDeque<(i64, Option<Hash16>)>,
}

impl Window {
    /// Bring the window up to date; must run inside the write transaction.
    pub(super) fn refresh(&mut self, conn: &Connection) -> rusqlite::Result<Hash16Set> {
        let valid = match self.rows.back() {
            None => false,
            Some(&(rowid, fp)) => conn
                .prepare_cached("SELECT content_fp FROM turns WHERE rowid = ?1")?
                .query_row([rowid], |r| Ok(Hash16::parse_hex(&text(r.get_ref(0)?))))
                .optional()?
                .is_some_and(|now| now == fp),
        };
        if valid {
            let after = self.rows.back().map_or(i64::MIN, |r| r.0);
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, content_fp FROM turns WHERE rowid > ?1 ORDER BY rowid",
            )?;
            let fresh = stmt.query_map([after], |r| {
                Ok((r.get::<_, i64>(0)?, Hash16::parse_hex(&text(r.get_ref(1)?))))
            })?;
            for row in fresh {
                self.rows.push_back(row?);
            }
            while self.rows.len() > CONTENT_WINDOW {
                self.rows.pop_front();
            }
        } else {
            let mut stmt = conn.prepare_cached(
                "SELECT rowid, content_fp FROM turns ORDER BY rowid DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([CONTENT_WINDOW as i64], |r| {
                Ok((r.get::<_, i64>(0)?, Hash16::parse_hex(&text(r.get_ref(1)?))))
            })?;
            let mut fresh = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            fresh.reverse();
            self.rows = fresh.into();
        }
        // A value that is not 16 hex digits matches no fingerprint of ours.
        Ok(self.rows.iter().filter_map(|r| r.1).collect())
    }
}
