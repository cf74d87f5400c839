//! The [`Ledger`] handle: one home, its locks and this process's dedup
//! memory. Writers, queries, content sidecars, state files and the rewrite
//! primitive are methods on it (see `writer.rs`, `query.rs`, `content.rs`,
//! `state.rs`, `rewrite.rs`).

use std::sync::{Mutex, MutexGuard};

use crate::error::Result;
use crate::home::LedgerHome;
use crate::index::sidecar::IndexState;
use crate::lock::{LockOptions, Locks, WaitObserver};

/// An open ledger home.
///
/// Cheap to open and safe to share between threads (`Send + Sync`).
/// Several handles, in this process or in others (TypeScript ones
/// included), may work on one home at the same time: every write goes
/// through the lockfiles of SPEC §3, and dedup is checked under the
/// `ledger` lock against what is on disk.
///
/// ```
/// use relayburn_ledger::{Ledger, LedgerHome};
///
/// let dir = tempfile::tempdir()?;
/// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
/// assert_eq!(ledger.home().ledger(), dir.path().join("ledger.jsonl"));
/// // Nothing is created until something is written.
/// assert!(!ledger.home().ledger().exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Ledger {
    home: LedgerHome,
    locks: Locks,
    index: Mutex<IndexState>,
}

impl Ledger {
    /// Open the ledger at `home` with the reference's lock timings.
    pub fn open(home: LedgerHome) -> Result<Ledger> {
        Ledger::open_with_lock_options(home, LockOptions::default())
    }

    /// Open with other lock timings (tests shrink them).
    pub fn open_with_lock_options(home: LedgerHome, options: LockOptions) -> Result<Ledger> {
        if let Ok(m) = std::fs::metadata(home.root()) {
            if !m.is_dir() {
                return Err(crate::Error::invalid(
                    "home",
                    format!("ledger home {} is not a directory", home.root().display()),
                ));
            }
        }
        Ok(Ledger {
            locks: Locks::with_options(home.clone(), options),
            home,
            index: Mutex::new(IndexState::default()),
        })
    }

    /// The home this handle works on.
    pub fn home(&self) -> &LedgerHome {
        &self.home
    }

    /// The lockfiles of this home, for callers that coordinate with the
    /// ledger (the archive, ingest cursors).
    pub fn locks(&self) -> &Locks {
        &self.locks
    }

    /// Report every wait for a lock of this home to `observer`, so a
    /// command line can tell its user whom it is waiting for.
    pub fn on_lock_wait(mut self, observer: WaitObserver) -> Ledger {
        self.locks = self.locks.on_wait(observer);
        self
    }

    /// Run `f` while holding lock `name` of this home.
    pub fn with_lock<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.locks.with_lock(name, f)
    }

    /// Forget the in-memory dedup state, as a new process would start.
    /// Needed after the index files were deleted or reset behind our back
    /// with the ledger itself left in place.
    pub fn invalidate_index_cache(&self) {
        self.index_state().reset();
    }

    /// The dedup state. Lock order: the `ledger` lockfile first, then this
    /// mutex, then the `ledger-index` lockfile.
    pub(crate) fn index_state(&self) -> MutexGuard<'_, IndexState> {
        match self.index.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                // A panic mid-update may have left it half-written: start over.
                let mut g = poisoned.into_inner();
                g.reset();
                self.index.clear_poison();
                g
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ledger>();
    }

    #[test]
    fn a_file_is_not_a_home() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        assert!(matches!(
            Ledger::open(LedgerHome::new(&f)),
            Err(crate::Error::Invalid { field, .. }) if field == "home"
        ));
    }
}
