//! Named locks: a row of `locks` per held name, and the in-process
//! claim that keeps threads of one handle from racing each other.

use super::*;

impl SqliteStore {
    /// Take the row of lock `name`, waiting out a live holder.
    pub(super) fn acquire_row(&self, name: &str) -> Result<i64> {
        let o = &self.options;
        let total = o.fast_retries + o.slow_retries;
        for attempt in 0..total {
            if let Some(at) = self.try_acquire_row(name)? {
                return Ok(at);
            }
            std::thread::sleep(o.delay(attempt));
        }
        Err(Error::StoreLockTimeout {
            name: name.to_string(),
            attempts: total,
            budget_ms: o.budget_ms(),
        })
    }

    /// One attempt: `Some(acquired_at_ms)` when the row is ours.
    pub(super) fn try_acquire_row(&self, name: &str) -> Result<Option<i64>> {
        let now = now_ms();
        let stale = i64::try_from(self.options.stale.as_millis()).unwrap_or(i64::MAX);
        let pid = i64::from(std::process::id());
        let r = self.write(|conn| {
            let held: Option<i64> = conn
                .query_row(
                    "SELECT acquired_at_ms FROM locks WHERE name = ?1",
                    [name],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .optional()
                .map_err(|e| self.err(e))?
                .map(|at| at.unwrap_or(0));
            if let Some(at) = held {
                if now.saturating_sub(at) < stale {
                    return Ok(None);
                }
                // An orphan: its holder crashed or stalled past the window.
                conn.execute("DELETE FROM locks WHERE name = ?1", [name])
                    .map_err(|e| self.err(e))?;
            }
            conn.execute(
                "INSERT INTO locks (name, acquired_at_ms, pid) VALUES (?1, ?2, ?3)",
                params![name, now, pid],
            )
            .map_err(|e| self.err(e))?;
            Ok(Some(now))
        });
        match r {
            Err(Error::Store {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            }) if f.code == rusqlite::ErrorCode::ConstraintViolation => Ok(None),
            other => other,
        }
    }

    /// Delete our row; one a stale-break gave to another holder is left.
    pub(super) fn release_row(&self, name: &str, acquired_at: i64) {
        let conn = self.conn();
        let _ = conn.execute(
            "DELETE FROM locks WHERE name = ?1 AND acquired_at_ms = ?2 AND pid = ?3",
            params![name, acquired_at, i64::from(std::process::id())],
        );
    }

    /// Take lock `name` for a holder that is not a closure on one thread
    /// (a JavaScript `withLock` whose body awaits): the same row protocol
    /// and in-process queue as [`Store::with_lock`], held until the
    /// returned guard is dropped.
    pub fn acquire_detached(self: &Arc<Self>, name: &str) -> Result<DetachedRow> {
        self.local.wait_and_claim(name);
        match self.acquire_row(name) {
            Ok(acquired_at) => Ok(DetachedRow {
                store: Arc::clone(self),
                name: name.to_string(),
                acquired_at,
            }),
            Err(e) => {
                self.local.unclaim(name);
                Err(e)
            }
        }
    }

    /// Count `names` as held by the calling thread until the guard drops,
    /// so library calls made on behalf of a detached holder re-enter its
    /// locks instead of waiting for them.
    pub fn assume_held(&self, names: &[String]) -> AssumedHeld {
        let keys: Vec<(PathBuf, String)> = names
            .iter()
            .map(|n| (self.path.clone(), n.clone()))
            .filter(|k| HELD.with(|h| h.borrow_mut().insert(k.clone())))
            .collect();
        AssumedHeld { keys }
    }
}

/// A lock taken by [`SqliteStore::acquire_detached`]; dropping it deletes
/// the row and lets the next holder of this process in.
#[derive(Debug)]
pub struct DetachedRow {
    store: Arc<SqliteStore>,
    name: String,
    acquired_at: i64,
}

impl Drop for DetachedRow {
    fn drop(&mut self) {
        self.store.release_row(&self.name, self.acquired_at);
        self.store.local.unclaim(&self.name);
    }
}

/// Marks of [`SqliteStore::assume_held`]; removes only the ones it added.
#[derive(Debug)]
pub struct AssumedHeld {
    keys: Vec<(PathBuf, String)>,
}

impl Drop for AssumedHeld {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            for k in &self.keys {
                h.remove(k);
            }
        });
    }
}

/// The lock row and this thread's re-entrancy mark; dropped (also on a
/// panic in the body) it releases both.
pub(super) struct RowGuard<'a> {
    pub(super) store: &'a SqliteStore,
    pub(super) name: String,
    pub(super) acquired_at: i64,
}

impl Drop for RowGuard<'_> {
    fn drop(&mut self) {
        HELD.with(|h| {
            h.borrow_mut()
                .remove(&(self.store.path.clone(), self.name.clone()))
        });
        self.store.release_row(&self.name, self.acquired_at);
    }
}
