//! The content fingerprints of the store's last [`CONTENT_WINDOW`] turns,
//! kept between appends so an append reads only the turns written since
//! (by any process) instead of the whole window.
//!
//! The store numbers its turns upwards under the append lock and never
//! deletes one, so the turns numbered past the last one seen are exactly
//! what changed. The last one seen is checked each time; when it is gone
//! or differs (the database was replaced), the window is read in full.

use std::collections::VecDeque;

use postgres::Transaction;

use super::STORE_MACHINE;
use crate::error::Result;
use crate::index::{Hash16, Hash16Set, CONTENT_WINDOW};
use crate::team::Target;

#[derive(Debug, Default)]
pub(super) struct Window {
    rows: VecDeque<(i64, Option<Hash16>)>,
}

impl Window {
    /// Bring the window up to date; runs inside the append transaction,
    /// after its lock is taken.
    pub(super) fn refresh(
        &mut self,
        tx: &mut Transaction<'_>,
        target: &Target,
    ) -> Result<Hash16Set> {
        let db = |what: &'static str| move |e| target.db_error(what, e);
        let valid = match self.rows.back() {
            None => false,
            Some(&(offset, fp)) => tx
                .query_opt(
                    "SELECT content_fp FROM turns WHERE machine_id = $1 AND ledger_offset = $2",
                    &[&STORE_MACHINE, &offset],
                )
                .map_err(db("read fingerprints"))?
                .is_some_and(|r| Hash16::parse_hex(r.get(0)) == fp),
        };
        if valid {
            let after = self.rows.back().map_or(0, |r| r.0);
            let fresh = tx
                .query(
                    "SELECT ledger_offset, content_fp FROM turns \
                     WHERE machine_id = $1 AND ledger_offset > $2 ORDER BY ledger_offset",
                    &[&STORE_MACHINE, &after],
                )
                .map_err(db("read fingerprints"))?;
            for r in fresh {
                self.rows.push_back((r.get(0), Hash16::parse_hex(r.get(1))));
            }
            while self.rows.len() > CONTENT_WINDOW {
                self.rows.pop_front();
            }
        } else {
            let rows = tx
                .query(
                    "SELECT ledger_offset, content_fp FROM turns WHERE machine_id = $1 \
                     ORDER BY ledger_offset DESC LIMIT $2",
                    &[&STORE_MACHINE, &(CONTENT_WINDOW as i64)],
                )
                .map_err(db("read fingerprints"))?;
            self.rows = rows
                .iter()
                .rev()
                .map(|r| (r.get(0), Hash16::parse_hex(r.get(1))))
                .collect();
        }
        // A value that is not 16 hex digits matches no fingerprint of ours.
        Ok(self.rows.iter().filter_map(|r| r.1).collect())
    }
}
