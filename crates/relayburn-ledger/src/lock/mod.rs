//! The cross-process lockfile protocol (SPEC §3).
//!
//! A lock is the file `<home>/<name>.lock`. Holding it means the file
//! exists; releasing it means unlinking it. There is no `flock`/`fcntl`:
//! the TypeScript implementation only understands the file's existence and
//! its mtime, and both implementations must be able to share one home.
//!
//! # Acquiring
//!
//! 1. Create the file with `O_CREAT|O_EXCL`. Success means we hold it. Any
//!    error other than "exists" (`EACCES`, `EROFS`, `ENOTDIR`, …) fails at
//!    once with an error naming the lock path.
//! 2. On "exists", look at the file (`lstat`, never following a link):
//!    - gone already → retry the create immediately;
//!    - a directory → fail at once: no holder will ever remove it;
//!    - stale (see below) → remove it and retry immediately;
//!    - otherwise → sleep [`FAST_RETRY_DELAY_MS`] for the first
//!      [`FAST_RETRIES`] rounds, then [`SLOW_RETRY_DELAY_MS`] for the next
//!      [`SLOW_RETRIES`], and give up with [`Error::LockTimeout`], whose
//!      message says whether the holder looked live (and who it is, when
//!      the file names it) or whether a stale file could not be removed.
//!
//!    Immediate retries are bounded ([`MAX_IMMEDIATE_RETRIES`] in a row,
//!    then one ordinary sleep), so a file that keeps vanishing, or keeps
//!    being judged stale and recreated, cannot make an acquirer spin.
//!
//! # When a lockfile is stale
//!
//! - Its mtime is more than the stale window ([`STALE_MS`]) in the past:
//!   the rule both implementations apply.
//! - **Clock skew**: its mtime is more than the stale window in the
//!   *future*. The reference would treat such a file as fresh until the
//!   clock catches up, which could block every writer for as long as the
//!   skew lasts. We take it as stale, unless its content names a holder on
//!   this host that is verifiably alive: a live holder's heartbeat brings
//!   the mtime back into range within one beat, so we simply wait for it.
//!   An mtime less than the window ahead counts as fresh; it turns stale by
//!   the ordinary rule after at most twice the window, inside the retry
//!   budget.
//! - **beyond** — dead holder: the file's content names a process on this
//!   host (same host name and, where known, the same pid namespace) that no
//!   longer exists (`kill(pid, 0)` fails with `ESRCH`), is a zombie, or
//!   whose pid now belongs to a process with a different start time
//!   (`/proc/<pid>/stat`). Such a lock is reclaimed at once, whatever its
//!   mtime. Empty, unreadable or foreign content — which is what the
//!   TypeScript implementation writes: nothing — falls back to the mtime
//!   rules.
//!
//! A stale file is not unlinked blindly: it is first renamed aside to a
//! private name and judged again. Only if the renamed file is still stale
//! is it deleted; otherwise (another acquirer replaced the stale file with
//! its own between our look and our move) it is linked back in place.
//! This closes the classic race where two acquirers see the same orphan
//! and the slower one deletes the lock the faster one just took. The
//! private name is `<name>.lock.stale-<pid>-<n>` beside the lockfile; only
//! a crash between the move and the delete can leave one behind, and
//! nothing reads it.
//!
//! # Holding
//!
//! The file holds one JSON line naming the holder:
//! `{"pid":…,"host":…,"since":<ms since epoch>,"pstart":…,"pidns":…}` —
//! `pstart` (process start time in clock ticks after boot) and `pidns` only
//! where `/proc` tells them. The reference ignores the content.
//!
//! **beyond**: while a lock is held through [`Locks`], a background thread
//! refreshes the file's mtime every fifth of the stale window, so a holder
//! that works for longer than the window is never taken for an orphan by
//! either implementation. It touches the file through the descriptor we
//! created, so it can never recreate a removed lockfile nor refresh
//! someone else's; it stops as soon as the lock is released.
//!
//! # Releasing
//!
//! The lockfile is unlinked only if it is still the file we created (same
//! device and inode; we keep the descriptor open, so the inode number
//! cannot be reused meanwhile). A lock that was taken over is left to its
//! new holder.
//!
//! # Re-entrancy
//!
//! Within one thread, taking a lock the thread already holds succeeds
//! without touching the file, and only the outermost holder releases it.
//! Other threads — even in the same process — wait on the file like any
//! other process. Release also happens when the body panics.

mod held;
mod holder;
mod protocol;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self};

use std::marker::PhantomData;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::home::LedgerHome;
use held::{Heartbeat, Identity, Owned};
pub(crate) use holder::{local_liveness, this_host, Liveness};
pub use holder::{read_holder, LockHolder};
use protocol::{acquire_loop, inspect, take_away, Seen, TakeAway};

pub const FAST_RETRY_DELAY_MS: u64 = 20;
pub const FAST_RETRIES: u32 = 50;
pub const SLOW_RETRY_DELAY_MS: u64 = 250;
pub const SLOW_RETRIES: u32 = 40;
pub const STALE_MS: u64 = 5_000;
/// Default heartbeat period: a fifth of the stale window.
pub const HEARTBEAT_MS: u64 = STALE_MS / 5;
/// Immediate retries allowed in a row before an ordinary sleep.
pub const MAX_IMMEDIATE_RETRIES: u32 = 16;

const TOTAL_RETRY_BUDGET_MS: u64 =
    FAST_RETRY_DELAY_MS * FAST_RETRIES as u64 + SLOW_RETRY_DELAY_MS * SLOW_RETRIES as u64;
// A single acquirer must be able to outwait an orphan and remove it.
const _: () = assert!(TOTAL_RETRY_BUDGET_MS > STALE_MS + SLOW_RETRY_DELAY_MS);
// Several missed beats in a row must still not make a live holder stale.
const _: () = assert!(HEARTBEAT_MS * 3 < STALE_MS);

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

impl LockOptions {
    /// Every pause of the retry schedule together.
    pub fn budget(&self) -> Duration {
        self.fast_retry_delay * self.fast_retries + self.slow_retry_delay * self.slow_retries
    }

    /// [`LockOptions::budget`] in whole milliseconds, as errors report it.
    pub fn budget_ms(&self) -> u64 {
        u64::try_from(self.budget().as_millis()).unwrap_or(u64::MAX)
    }

    /// The pause after failed attempt `attempt` (from 0): fast ones first.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt < self.fast_retries {
            self.fast_retry_delay
        } else {
            self.slow_retry_delay
        }
    }
}

thread_local! {
    /// Lock paths held by the current thread (re-entrancy), with the
    /// identity of the file we created for each.
    /// `None` for a lock held elsewhere on the thread's behalf
    /// ([`Locks::assume_held`]), whose file this thread cannot check.
    static HELD: RefCell<HashMap<PathBuf, Option<Identity>>> = RefCell::new(HashMap::new());
}

/// One wait between two attempts, as an [`on_wait`](Locks::on_wait)
/// observer sees it: before the sleep, so a caller can tell its user who
/// it is waiting for (cargo's "Blocking waiting for file lock").
#[derive(Debug)]
pub struct Waiting<'a> {
    pub path: &'a Path,
    /// Sleeps so far, this one included.
    pub attempt: u32,
    pub delay: Duration,
    /// Time since the first attempt.
    pub waited: Duration,
    /// The holder, when the lockfile names one of ours.
    pub holder: Option<&'a LockHolder>,
}

/// Called before every sleep of an acquire.
pub type WaitObserver = Arc<dyn Fn(&Waiting<'_>) + Send + Sync>;

/// Lock manager for one home.
#[derive(Clone)]
pub struct Locks {
    home: LedgerHome,
    options: LockOptions,
    heartbeat: Option<Duration>,
    on_wait: Option<WaitObserver>,
}

impl fmt::Debug for Locks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locks")
            .field("home", &self.home)
            .field("options", &self.options)
            .field("heartbeat", &self.heartbeat)
            .field("on_wait", &self.on_wait.is_some())
            .finish()
    }
}

impl Locks {
    pub fn new(home: LedgerHome) -> Locks {
        Locks::with_options(home, LockOptions::default())
    }

    /// Custom timings; the heartbeat follows the stale window (a fifth of it).
    pub fn with_options(home: LedgerHome, options: LockOptions) -> Locks {
        let heartbeat = Some(options.stale / 5).filter(|d| !d.is_zero());
        Locks {
            home,
            options,
            heartbeat,
            on_wait: None,
        }
    }

    /// Report every wait of an acquire to `observer`.
    pub fn on_wait(mut self, observer: WaitObserver) -> Locks {
        self.on_wait = Some(observer);
        self
    }

    /// Override the heartbeat period; `None` turns it off (as the reference
    /// behaves), which tests use to show what the heartbeat prevents.
    pub fn heartbeat(mut self, every: Option<Duration>) -> Locks {
        self.heartbeat = every.filter(|d| !d.is_zero());
        self
    }

    pub fn options(&self) -> LockOptions {
        self.options
    }

    /// The lockfile of lock `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.home.lock(name)
    }

    /// Run `f` while holding lock `name`. Re-entrant on the same thread: a
    /// nested call for a held name runs `f` without touching the file.
    pub fn with_lock<T>(&self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.acquire(name)?;
        f()
    }

    /// Create the lockfile at `path` as the protocol says, reporting
    /// every wait, and start its heartbeat, which watches that the file
    /// stays the one we created.
    fn take(&self, path: &Path) -> Result<(Owned, Identity)> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).ctx("create directory", dir)?;
        }
        let observe = |w: &Waiting<'_>| {
            if let Some(f) = &self.on_wait {
                f(w)
            }
        };
        let mut owned = acquire_loop(
            path,
            &self.options,
            &mut |p| inspect(p, self.options.stale),
            &observe,
        )?;
        let identity = Identity {
            dev: owned.dev,
            ino: owned.ino,
            lost: Arc::new(AtomicBool::new(false)),
        };
        if let Some(every) = self.heartbeat {
            owned.beat = Heartbeat::start(
                Arc::clone(&owned.file),
                every,
                path.to_path_buf(),
                identity.clone(),
            );
        }
        Ok((owned, identity))
    }

    /// Take lock `name` until the guard is dropped. Guards of one lock
    /// must be dropped in the reverse order of their creation (as scopes
    /// do); an inner (re-entrant) guard does nothing on drop.
    pub fn acquire(&self, name: &str) -> Result<LockGuard> {
        let path = self.home.lock(name);
        if HELD.with(|h| h.borrow().contains_key(&path)) {
            return Ok(LockGuard {
                path,
                owned: None,
                _same_thread: PhantomData,
            });
        }
        let (owned, identity) = self.take(&path)?;
        HELD.with(|h| h.borrow_mut().insert(path.clone(), Some(identity)));
        Ok(LockGuard {
            path,
            owned: Some(owned),
            _same_thread: PhantomData,
        })
    }
}

impl Locks {
    /// Fail with [`Error::LockLost`] unless this thread still holds lock
    /// `name` exclusively: its lockfile is still the file we created.
    ///
    /// The shared protocol lets another process remove a lockfile it
    /// judges stale, and the reference removes the lockfile at `release`
    /// without looking whose it is; so after taking a lock from a holder
    /// that never refreshes it (the reference), that holder may delete
    /// ours and let a third process in. Work that must be exclusive calls
    /// this just before it makes its effect visible (a commit, a rename,
    /// an append) and gives up instead.
    pub fn ensure_held(&self, name: &str) -> Result<()> {
        let path = self.home.lock(name);
        let held = HELD.with(|h| h.borrow().get(&path).cloned());
        match held {
            Some(Some(id)) if id.still_ours(&path) => Ok(()),
            // Held by a detached holder: its file is its own to watch.
            Some(None) => Ok(()),
            _ => Err(Error::LockLost { path }),
        }
    }

    /// Take lock `name` for a holder that is not a thread: the guard may
    /// move between threads and is never seen as held by any of them. An
    /// event-loop binding needs this, because its callers keep a lock
    /// across asynchronous work that runs on several worker threads.
    /// Work done on the holder's behalf declares it with
    /// [`Locks::assume_held`].
    pub fn acquire_detached(&self, name: &str) -> Result<DetachedLock> {
        let path = self.home.lock(name);
        let (owned, _) = self.take(&path)?;
        Ok(DetachedLock {
            path,
            owned: Some(owned),
        })
    }

    /// Count locks `names` as held by this thread until the marker is
    /// dropped: the caller holds them elsewhere (as [`DetachedLock`]s), so
    /// nested acquisitions here must re-enter instead of waiting on the
    /// caller's own lockfile.
    pub fn assume_held<S: AsRef<str>>(&self, names: &[S]) -> AssumedLocks {
        let mut added = Vec::new();
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            for name in names {
                let path = self.home.lock(name.as_ref());
                if !h.contains_key(&path) {
                    h.insert(path.clone(), None);
                    added.push(path);
                }
            }
        });
        AssumedLocks {
            added,
            _same_thread: PhantomData,
        }
    }
}

/// A lock held by a caller rather than a thread (see
/// [`Locks::acquire_detached`]); dropping it releases the lock.
pub struct DetachedLock {
    path: PathBuf,
    owned: Option<Owned>,
}

impl DetachedLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for DetachedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DetachedLock")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for DetachedLock {
    fn drop(&mut self) {
        if let Some(owned) = self.owned.take() {
            owned.release(&self.path);
        }
    }
}

/// Locks counted as held by this thread for a caller (see
/// [`Locks::assume_held`]); dropping it forgets the ones it added.
#[derive(Debug)]
pub struct AssumedLocks {
    added: Vec<PathBuf>,
    _same_thread: PhantomData<*const ()>,
}

impl Drop for AssumedLocks {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            for p in &self.added {
                h.remove(p);
            }
        });
    }
}

/// A held lock; dropping it releases the lock (unless it is a re-entrant
/// inner guard). Not `Send`: re-entrancy is tracked per thread.
pub struct LockGuard {
    path: PathBuf,
    owned: Option<Owned>,
    _same_thread: PhantomData<*const ()>,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this guard took the file (false for a re-entrant guard).
    pub fn is_outermost(&self) -> bool {
        self.owned.is_some()
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("path", &self.path)
            .field("outermost", &self.owned.is_some())
            .finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(owned) = self.owned.take() {
            owned.release(&self.path);
            HELD.with(|h| h.borrow_mut().remove(&self.path));
        }
    }
}

/// Take the lockfile at `path`, retrying as the protocol says. The file is
/// left in place without a heartbeat: the caller removes it. Meant for
/// tests and tools that drive the protocol directly.
pub fn acquire(path: &Path, o: &LockOptions) -> Result<()> {
    acquire_loop(path, o, &mut |p| inspect(p, o.stale), &|_| {}).map(|_| ())
}

/// Whether the lockfile at `path` is stale under the default window: old,
/// or naming a holder on this host that is gone (judged at once, whatever
/// the file's age).
pub fn is_stale(path: &Path) -> bool {
    matches!(inspect(path, LockOptions::default().stale), Seen::Stale)
}

/// Remove the lockfile at `path` if it is stale, safely against an
/// acquirer replacing it meanwhile; whether it was removed.
pub fn remove_if_stale(path: &Path) -> bool {
    let stale = LockOptions::default().stale;
    matches!(inspect(path, stale), Seen::Stale) && matches!(take_away(path, stale), TakeAway::Gone)
}
