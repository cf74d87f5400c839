//! The cross-process lockfile protocol (SPEC §3).
//!
//! A lock is the file `<home>/<name>.lock`, created with `O_CREAT|O_EXCL`;
//! holding it means the file exists, releasing it means unlinking it. No
//! `flock`: the TypeScript reference only understands the file's existence
//! and mtime.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, IoContext, Result};
use crate::home::LedgerHome;

pub const FAST_RETRY_DELAY_MS: u64 = 20;
pub const FAST_RETRIES: u32 = 50;
pub const SLOW_RETRY_DELAY_MS: u64 = 250;
pub const SLOW_RETRIES: u32 = 40;
pub const STALE_MS: u64 = 5_000;

const TOTAL_RETRY_BUDGET_MS: u64 =
    FAST_RETRY_DELAY_MS * FAST_RETRIES as u64 + SLOW_RETRY_DELAY_MS * SLOW_RETRIES as u64;
// A single acquirer must be able to outwait an orphan and remove it.
const _: () = assert!(TOTAL_RETRY_BUDGET_MS > STALE_MS + SLOW_RETRY_DELAY_MS);

/// Retry and staleness timings; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockOptions {
    pub fast_retries: u32,
    pub fast_retry_delay: Duration,
    pub slow_retries: u32,
    pub slow_retry_delay: Duration,
    pub stale: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            fast_retries: FAST_RETRIES,
            fast_retry_delay: Duration::from_millis(FAST_RETRY_DELAY_MS),
            slow_retries: SLOW_RETRIES,
            slow_retry_delay: Duration::from_millis(SLOW_RETRY_DELAY_MS),
            stale: Duration::from_millis(STALE_MS),
        }
    }
}

thread_local! {
    /// Lock paths held by the current thread's flow (re-entrancy).
    static HELD: RefCell<HashSet<PathBuf>> = RefCell::new(HashSet::new());
}

/// Lock manager for one home.
#[derive(Debug, Clone)]
pub struct Locks {
    home: LedgerHome,
    options: LockOptions,
}

impl Locks {
    pub fn new(home: LedgerHome) -> Locks {
        Locks::with_options(home, LockOptions::default())
    }

    pub fn with_options(home: LedgerHome, options: LockOptions) -> Locks {
        Locks { home, options }
    }

    pub fn options(&self) -> LockOptions {
        self.options
    }

    /// Run `f` while holding lock `name`. Re-entrant on the same thread: a
    /// nested call for a held name runs `f` without touching the file.
    pub fn with_lock<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let path = self.home.lock(name);
        if HELD.with(|h| h.borrow().contains(&path)) {
            return f();
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).ctx("create directory", dir)?;
        }
        acquire(&path, &self.options)?;
        HELD.with(|h| h.borrow_mut().insert(path.clone()));
        let out = f();
        HELD.with(|h| h.borrow_mut().remove(&path));
        let _ = std::fs::remove_file(&path);
        out
    }
}

/// Try to take the lockfile at `path`, retrying as the protocol says.
pub fn acquire(path: &Path, o: &LockOptions) -> Result<()> {
    let total = o.fast_retries + o.slow_retries;
    let budget = o.fast_retry_delay * o.fast_retries + o.slow_retry_delay * o.slow_retries;
    let mut stale_unlink_failed = false;
    let mut attempt = 0;
    while attempt < total {
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create lockfile", path, e)),
        }
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .map(|m| SystemTime::now().duration_since(m).unwrap_or_default());
        match age {
            None => continue,
            Some(age) if age > o.stale => match std::fs::remove_file(path) {
                Ok(()) => continue,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(_) => stale_unlink_failed = true,
            },
            Some(_) => stale_unlink_failed = false,
        }
        let delay = if attempt < o.fast_retries {
            o.fast_retry_delay
        } else {
            o.slow_retry_delay
        };
        std::thread::sleep(delay);
        attempt += 1;
    }
    Err(Error::LockTimeout {
        path: path.to_path_buf(),
        attempts: total,
        budget_ms: budget.as_millis() as u64,
        detail: if stale_unlink_failed {
            "lock appears stale but unlink kept failing".into()
        } else {
            "held by live process".into()
        },
    })
}
