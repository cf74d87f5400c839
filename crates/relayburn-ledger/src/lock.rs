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

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::home::LedgerHome;
use crate::json::{self, Object, Value};

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

/// Content longer than this is not a holder record of ours.
const MAX_HOLDER_BYTES: u64 = 1024;

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
    fn budget(&self) -> Duration {
        self.fast_retry_delay * self.fast_retries + self.slow_retry_delay * self.slow_retries
    }
}

thread_local! {
    /// Lock paths held by the current thread (re-entrancy), with the
    /// identity of the file we created for each.
    /// `None` for a lock held elsewhere on the thread's behalf
    /// ([`Locks::assume_held`]), whose file this thread cannot check.
    static HELD: RefCell<HashMap<PathBuf, Option<Identity>>> = RefCell::new(HashMap::new());
}

/// Which file is ours, and whether the heartbeat saw it go.
#[derive(Clone)]
struct Identity {
    dev: u64,
    ino: u64,
    lost: Arc<AtomicBool>,
}

impl Identity {
    /// Is the file at `path` still the one we created?
    fn still_ours(&self, path: &Path) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && fs::symlink_metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
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

/// The file we created, kept open so its inode stays ours.
struct Owned {
    file: Arc<File>,
    dev: u64,
    ino: u64,
    beat: Option<Heartbeat>,
}

impl Owned {
    fn release(mut self, path: &Path) {
        if let Some(beat) = self.beat.take() {
            beat.stop();
        }
        if let Ok(m) = fs::symlink_metadata(path) {
            if m.dev() == self.dev && m.ino() == self.ino {
                // A failed unlink leaves an orphan that goes stale; the
                // reference ignores this too.
                let _ = fs::remove_file(path);
            }
        }
        // `self.file` closes here, after the comparison.
    }
}

/// The mtime refresher of one held lock.
struct Heartbeat {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    /// `None` when no thread can be started: the lock still works, just
    /// without protection for holds longer than the stale window.
    ///
    /// Each beat also checks that the lockfile is still ours and records
    /// when it is not (see [`Locks::ensure_held`]).
    fn start(file: Arc<File>, every: Duration, path: PathBuf, id: Identity) -> Option<Heartbeat> {
        let (stop, wake) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("relayburn-lock-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = wake.recv_timeout(every) {
                    if !id.still_ours(&path) {
                        id.lost.store(true, Ordering::SeqCst);
                    }
                    // futimens on our own descriptor: never creates a file
                    // and never touches a lockfile that replaced ours.
                    let _ = file.set_modified(SystemTime::now());
                }
            })
            .ok()?;
        Some(Heartbeat { stop, thread })
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// Why the last round did not get the lock (for the timeout message).
enum Reason {
    Live(Option<LockHolder>),
    StaleUnlinkFailed(io::Error),
    Uninspectable(io::Error),
}

impl Reason {
    fn detail(&self) -> String {
        match self {
            Reason::Live(None) => "held by live process".to_string(),
            Reason::Live(Some(h)) => format!("held by live process ({h})"),
            Reason::StaleUnlinkFailed(e) => {
                format!("lock appears stale but unlink kept failing ({e})")
            }
            Reason::Uninspectable(e) => format!("lockfile could not be inspected ({e})"),
        }
    }
}

/// The retry loop, with the way an existing lockfile is judged passed in
/// so tests can feed it conditions that are hard to produce on disk.
fn acquire_loop(
    path: &Path,
    o: &LockOptions,
    look: &mut dyn FnMut(&Path) -> Seen,
    observe: &dyn Fn(&Waiting<'_>),
) -> Result<Owned> {
    let started = std::time::Instant::now();
    let total = o.fast_retries.saturating_add(o.slow_retries);
    let mut sleeps = 0u32;
    let mut immediate = 0u32;
    let mut last = Reason::Live(None);
    loop {
        match create(path) {
            Ok(owned) => return Ok(owned),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create lockfile", path, e)),
        }
        let retry_now = match look(path) {
            Seen::Vanished => true,
            Seen::Directory => {
                return Err(Error::io(
                    "create lockfile",
                    path,
                    io::Error::new(
                        ErrorKind::IsADirectory,
                        "a directory stands where the lockfile should be",
                    ),
                ))
            }
            Seen::Fresh(holder) => {
                last = Reason::Live(holder);
                false
            }
            Seen::Uninspectable(e) => {
                last = Reason::Uninspectable(e);
                false
            }
            Seen::Stale => match take_away(path, o.stale) {
                TakeAway::Gone => true,
                TakeAway::Live(holder) => {
                    last = Reason::Live(holder);
                    false
                }
                TakeAway::Failed(e) => {
                    last = Reason::StaleUnlinkFailed(e);
                    false
                }
            },
        };
        if retry_now && immediate < MAX_IMMEDIATE_RETRIES {
            immediate += 1;
            continue;
        }
        immediate = 0;
        if sleeps >= total {
            break;
        }
        let delay = if sleeps < o.fast_retries {
            o.fast_retry_delay
        } else {
            o.slow_retry_delay
        };
        sleeps += 1;
        observe(&Waiting {
            path,
            attempt: sleeps,
            delay,
            waited: started.elapsed(),
            holder: match &last {
                Reason::Live(h) => h.as_ref(),
                _ => None,
            },
        });
        std::thread::sleep(delay);
    }
    Err(Error::LockTimeout {
        path: path.to_path_buf(),
        attempts: total,
        budget_ms: u64::try_from(o.budget().as_millis()).unwrap_or(u64::MAX),
        detail: last.detail(),
    })
}

/// Exclusive create, with who we are already in the file.
///
/// A lockfile that exists without its holder line can only be judged by
/// its mtime, so a process killed between creating it and writing to it
/// would block every writer for the whole stale window. Where the system
/// allows it the file is therefore written unnamed and linked into place
/// (an atomic create-if-absent like `O_EXCL`); elsewhere the line is
/// prepared first so that the gap is a single system call.
fn create(path: &Path) -> io::Result<Owned> {
    let line = LockHolder::current().to_line();
    let file = match create_published(path, line.as_bytes()) {
        Some(done) => done?,
        None => {
            let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
            // An empty lockfile is still a valid lock (it is what the
            // reference writes), so a failed write only costs the diagnostics.
            let _ = file.write_all(line.as_bytes());
            file
        }
    };
    match file.metadata() {
        Ok(m) => Ok(Owned {
            file: Arc::new(file),
            dev: m.dev(),
            ino: m.ino(),
            beat: None,
        }),
        Err(e) => {
            // Without its identity we could never release it safely.
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// Write `body` into an unnamed file in the lock's directory (`O_TMPFILE`)
/// and link it in as `path`; `linkat` fails with `EEXIST` when the lock is
/// held, exactly like an exclusive create. `None` when this cannot be done
/// here (no `O_TMPFILE` support, no `/proc`, or any error that the plain
/// exclusive create will report in its own words).
#[cfg(target_os = "linux")]
fn create_published(path: &Path, body: &[u8]) -> Option<io::Result<File>> {
    use std::os::unix::io::AsRawFd;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o666)
        .open(dir)
        .ok()?;
    file.write_all(body).ok()?;
    let from = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    match crate::sys::link_following(&from, path) {
        Ok(()) => Some(Ok(file)),
        Err(err) => (err.kind() == ErrorKind::AlreadyExists).then_some(Err(err)),
    }
}

#[cfg(not(target_os = "linux"))]
fn create_published(_path: &Path, _body: &[u8]) -> Option<io::Result<File>> {
    None
}

/// What an existing lockfile looks like to an acquirer.
enum Seen {
    Vanished,
    Directory,
    Fresh(Option<LockHolder>),
    Stale,
    Uninspectable(io::Error),
}

fn inspect(path: &Path, stale: Duration) -> Seen {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Seen::Vanished,
        Err(e) => return Seen::Uninspectable(e),
    };
    if meta.is_dir() {
        return Seen::Directory;
    }
    let holder = if meta.is_file() && meta.len() <= MAX_HOLDER_BYTES {
        read_holder(path)
    } else {
        None
    };
    let liveness = holder
        .as_ref()
        .map(LockHolder::liveness)
        .unwrap_or(Liveness::Unknown);
    if liveness == Liveness::Dead {
        return Seen::Stale;
    }
    let mtime = match meta.modified() {
        Ok(t) => t,
        Err(e) => return Seen::Uninspectable(e),
    };
    match SystemTime::now().duration_since(mtime) {
        Ok(age) if age > stale => Seen::Stale,
        Err(ahead) if ahead.duration() > stale && liveness != Liveness::Alive => Seen::Stale,
        _ => Seen::Fresh(holder),
    }
}

enum TakeAway {
    /// Removed, or someone else removed it first.
    Gone,
    /// It was no longer stale once we had it in hand: put back.
    Live(Option<LockHolder>),
    Failed(io::Error),
}

static ASIDE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Remove a lockfile judged stale, without the risk of removing a fresh
/// one that replaced it in the meantime: move it aside, judge the moved
/// file again, delete it or put it back.
fn take_away(path: &Path, stale: Duration) -> TakeAway {
    let Some(name) = path.file_name() else {
        return TakeAway::Failed(io::Error::new(
            ErrorKind::InvalidInput,
            "lock path has no file name",
        ));
    };
    let aside = path.with_file_name(format!(
        "{}.stale-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        ASIDE_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return TakeAway::Gone,
        Err(e) => return TakeAway::Failed(e),
    }
    match inspect(&aside, stale) {
        Seen::Stale | Seen::Vanished => match fs::remove_file(&aside) {
            Ok(()) => TakeAway::Gone,
            Err(e) if e.kind() == ErrorKind::NotFound => TakeAway::Gone,
            Err(e) => {
                put_back(&aside, path);
                TakeAway::Failed(e)
            }
        },
        Seen::Fresh(holder) => {
            put_back(&aside, path);
            TakeAway::Live(holder)
        }
        Seen::Directory | Seen::Uninspectable(_) => {
            put_back(&aside, path);
            TakeAway::Live(None)
        }
    }
}

/// Return a file we moved aside to its place, unless a newer lockfile has
/// taken that place.
fn put_back(aside: &Path, path: &Path) {
    match fs::hard_link(aside, path) {
        Ok(()) => {
            let _ = fs::remove_file(aside);
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(aside);
        }
        // A file system without hard links: a plain rename is the best
        // remaining way back.
        Err(_) => {
            let _ = fs::rename(aside, path);
        }
    }
}

/// Who holds a lock, as recorded in the lockfile by this implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    pub host: Option<String>,
    /// When the lock was taken, ms since the epoch.
    pub since_ms: Option<u64>,
    /// Process start time, clock ticks after boot (`/proc/<pid>/stat`).
    pub start_ticks: Option<u64>,
    /// The pid namespace (`/proc/self/ns/pid` link text).
    pub pid_ns: Option<String>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {}", self.pid)?;
        if let Some(host) = &self.host {
            write!(f, " on {host}")?;
        }
        if let Some(ms) = self.since_ms {
            write!(f, " since {}", iso_utc(ms))?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    Alive,
    Dead,
    /// Another host or pid namespace, or nothing to go by.
    Unknown,
}

impl LockHolder {
    /// This process, holding a lock from now.
    pub fn current() -> LockHolder {
        LockHolder {
            pid: std::process::id(),
            host: this_host().map(str::to_string),
            since_ms: Some(now_ms()),
            start_ticks: this_start_ticks(),
            pid_ns: this_pid_ns().map(str::to_string),
        }
    }

    /// The lockfile content: one JSON line.
    pub fn to_line(&self) -> String {
        let mut o = Object::new();
        o.insert("pid", Value::from(f64::from(self.pid)));
        if let Some(h) = &self.host {
            o.insert("host", Value::str(h));
        }
        if let Some(ms) = self.since_ms {
            o.insert("since", Value::from(ms as f64));
        }
        if let Some(t) = self.start_ticks {
            o.insert("pstart", Value::from(t as f64));
        }
        if let Some(ns) = &self.pid_ns {
            o.insert("pidns", Value::str(ns));
        }
        let mut line = Value::from(o).to_json();
        line.push('\n');
        line
    }

    /// Read back a line written by [`LockHolder::to_line`]; anything else
    /// (empty, foreign, malformed) is `None`.
    pub fn parse(text: &str) -> Option<LockHolder> {
        let v = json::parse(crate::js::trim(text)).ok()?;
        let pid = whole_number(v.get("pid")?)?;
        let pid = u32::try_from(pid)
            .ok()
            .filter(|&p| p > 0 && p <= i32::MAX as u32)?;
        let text_field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(LockHolder {
            pid,
            host: text_field("host"),
            since_ms: v.get("since").and_then(whole_number),
            start_ticks: v.get("pstart").and_then(whole_number),
            pid_ns: text_field("pidns"),
        })
    }

    fn liveness(&self) -> Liveness {
        match (self.host.as_deref(), this_host()) {
            (Some(theirs), Some(ours)) if theirs == ours => {}
            _ => return Liveness::Unknown,
        }
        if let (Some(theirs), Some(ours)) = (self.pid_ns.as_deref(), this_pid_ns()) {
            if theirs != ours {
                return Liveness::Unknown;
            }
        }
        local_liveness(self.pid, self.start_ticks)
    }
}

/// The liveness of process `pid` of this host and pid namespace: gone, a
/// zombie, or (when `start_ticks` is known) a different process under a
/// reused pid means dead.
pub(crate) fn local_liveness(pid: u32, start_ticks: Option<u64>) -> Liveness {
    match crate::sys::probe(pid) {
        crate::sys::Probe::Gone => return Liveness::Dead,
        crate::sys::Probe::Unknown => return Liveness::Unknown,
        crate::sys::Probe::Exists | crate::sys::Probe::NotPermitted => {}
    }
    let Some((state, ticks)) = proc_stat(&format!("/proc/{pid}/stat")) else {
        return Liveness::Alive;
    };
    if state == 'Z' || state == 'X' {
        return Liveness::Dead;
    }
    match start_ticks {
        Some(recorded) if recorded != ticks => Liveness::Dead,
        _ => Liveness::Alive,
    }
}

/// The holder recorded in the lockfile at `path`, if it is one of ours.
pub fn read_holder(path: &Path) -> Option<LockHolder> {
    let file = OpenOptions::new()
        .read(true)
        // Never block on a FIFO, never follow a link.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut buf = Vec::new();
    file.take(MAX_HOLDER_BYTES + 1).read_to_end(&mut buf).ok()?;
    if buf.len() as u64 > MAX_HOLDER_BYTES {
        return None;
    }
    LockHolder::parse(std::str::from_utf8(&buf).ok()?)
}

fn whole_number(v: &Value) -> Option<u64> {
    let n = v.as_f64()?;
    (n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0)
        .then_some(n as u64)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn this_host() -> Option<&'static str> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(crate::sys::host_name).as_deref()
}

fn this_pid_ns() -> Option<&'static str> {
    static NS: OnceLock<Option<String>> = OnceLock::new();
    NS.get_or_init(|| {
        fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
    })
    .as_deref()
}

fn this_start_ticks() -> Option<u64> {
    static TICKS: OnceLock<Option<u64>> = OnceLock::new();
    *TICKS.get_or_init(|| proc_stat("/proc/self/stat").map(|(_, t)| t))
}

/// State letter and start time from a `/proc/<pid>/stat` file.
fn proc_stat(path: &str) -> Option<(char, u64)> {
    parse_proc_stat(&fs::read_to_string(path).ok()?)
}

/// `pid (comm) state ppid …`: the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`. The start time is
/// field 22 overall, the 20th after the name.
fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch.
fn iso_utc(ms: u64) -> String {
    crate::time::iso_from_millis(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> LockOptions {
        LockOptions {
            fast_retries: 2,
            fast_retry_delay: Duration::from_millis(5),
            slow_retries: 0,
            slow_retry_delay: Duration::from_millis(5),
            stale: Duration::from_secs(60),
        }
    }

    #[test]
    fn detached_lock_moves_between_threads_and_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Locks::with_options(LedgerHome::new(dir.path()), fast());
        let held = std::thread::scope(|s| s.spawn(|| locks.acquire_detached("x")).join())
            .unwrap()
            .unwrap();
        assert!(dir.path().join("x.lock").exists());
        // Not held by this thread: a plain acquire waits on the file and times out.
        assert!(matches!(locks.acquire("x"), Err(Error::LockTimeout { .. })));
        std::thread::spawn(move || drop(held)).join().unwrap();
        assert!(!dir.path().join("x.lock").exists());
    }

    #[test]
    fn assumed_locks_re_enter_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let locks = Locks::with_options(LedgerHome::new(dir.path()), fast());
        let held = locks.acquire_detached("x").unwrap();
        {
            let _assumed = locks.assume_held(&["x"]);
            let inner = locks.acquire("x").unwrap();
            assert!(!inner.is_outermost());
        }
        assert!(locks.acquire("x").is_err(), "the marker is gone after drop");
        drop(held);
        // A lock the thread really holds stays held when a marker for it ends.
        let own = locks.acquire("y").unwrap();
        drop(locks.assume_held(&["y"]));
        assert!(!locks.acquire("y").unwrap().is_outermost());
        drop(own);
        assert!(!dir.path().join("y.lock").exists());
    }

    #[test]
    fn iso_dates_by_hand() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 is a leap day: 10957 days + 59 days after 1970.
        assert_eq!(
            iso_utc((10_957 + 59) * 86_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        // 2024-03-01T12:34:56.789Z = 19783 days + 45296.789 s.
        assert_eq!(
            iso_utc(19_783 * 86_400_000 + 45_296_789),
            "2024-03-01T12:34:56.789Z"
        );
        assert_eq!(iso_utc(86_399_999), "1970-01-01T23:59:59.999Z");
    }

    #[test]
    fn proc_stat_fields_counted_after_the_name() {
        // A command name with spaces and a closing parenthesis inside.
        let line = "4242 (we ird) (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 19 20";
        assert_eq!(parse_proc_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_proc_stat("1 (short) Z 1 2"), None);
        assert_eq!(parse_proc_stat("no parens"), None);
    }

    #[test]
    fn own_start_time_is_readable_here() {
        if Path::new("/proc/self/stat").exists() {
            let ticks = this_start_ticks().unwrap();
            let again = proc_stat(&format!("/proc/{}/stat", std::process::id()));
            assert_eq!(again.map(|(_, t)| t), Some(ticks));
        }
    }

    #[test]
    fn holder_line_round_trips_and_rejects_foreign_content() {
        let h = LockHolder {
            pid: 77,
            host: Some("box-1".into()),
            since_ms: Some(1_700_000_000_123),
            start_ticks: Some(5),
            pid_ns: Some("pid:[4026531836]".into()),
        };
        let line = h.to_line();
        assert_eq!(
            line,
            "{\"pid\":77,\"host\":\"box-1\",\"since\":1700000000123,\"pstart\":5,\"pidns\":\"pid:[4026531836]\"}\n"
        );
        assert_eq!(LockHolder::parse(&line), Some(h));
        for bad in [
            "",
            "\n",
            "garbage",
            "{}",
            "{\"pid\":0}",
            "{\"pid\":-5}",
            "{\"pid\":1.5}",
            "{\"pid\":\"12\"}",
            "{\"pid\":4294967296}",
            "[1]",
        ] {
            assert_eq!(LockHolder::parse(bad), None, "{bad:?}");
        }
        // Only the pid is required; other fields are best effort.
        assert_eq!(
            LockHolder::parse("{\"pid\":9,\"host\":3}"),
            Some(LockHolder {
                pid: 9,
                host: None,
                since_ms: None,
                start_ticks: None,
                pid_ns: None
            })
        );
    }

    #[test]
    fn holder_names_itself_in_messages() {
        let h = LockHolder {
            pid: 12,
            host: Some("h".into()),
            since_ms: Some(0),
            start_ticks: None,
            pid_ns: None,
        };
        assert_eq!(h.to_string(), "pid 12 on h since 1970-01-01T00:00:00.000Z");
        assert_eq!(
            Reason::Live(Some(h)).detail(),
            "held by live process (pid 12 on h since 1970-01-01T00:00:00.000Z)"
        );
    }

    #[test]
    fn a_holder_on_another_host_is_never_judged_dead() {
        let mut h = LockHolder::current();
        h.host = Some(format!("{}-elsewhere", this_host().unwrap_or("x")));
        h.pid = i32::MAX as u32; // almost certainly no such process
        assert_eq!(h.liveness(), Liveness::Unknown);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_means_reuse() {
        if this_host().is_none() {
            return;
        }
        let me = LockHolder::current();
        assert_eq!(me.liveness(), Liveness::Alive);
        if let Some(t) = me.start_ticks {
            let reused = LockHolder {
                start_ticks: Some(t + 1),
                ..me
            };
            assert_eq!(reused.liveness(), Liveness::Dead);
        }
    }

    #[test]
    fn a_lockfile_that_keeps_vanishing_cannot_make_an_acquirer_spin() {
        // The file exists (create says "exists") but every look says it is
        // gone: without a bound this loops forever.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spin.lock");
        fs::write(&path, "").unwrap();
        let o = LockOptions {
            fast_retries: 2,
            fast_retry_delay: Duration::from_millis(1),
            slow_retries: 2,
            slow_retry_delay: Duration::from_millis(1),
            stale: Duration::from_secs(60),
        };
        let mut looks = 0u32;
        let err = acquire_loop(
            &path,
            &o,
            &mut |_| {
                looks += 1;
                Seen::Vanished
            },
            &|_| {},
        )
        .err()
        .unwrap();
        // 4 sleeps, 5 rounds; each round is 16 immediate retries plus the
        // look that falls through to a sleep (or to the end).
        assert_eq!(looks, 5 * (16 + 1));
        assert!(
            matches!(err, Error::LockTimeout { attempts: 4, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_lockfile_that_cannot_be_inspected_times_out_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.lock");
        fs::write(&path, "").unwrap();
        let o = LockOptions {
            fast_retries: 1,
            fast_retry_delay: Duration::from_millis(1),
            slow_retries: 1,
            slow_retry_delay: Duration::from_millis(1),
            stale: Duration::from_secs(60),
        };
        let mut looks = 0u32;
        let err = acquire_loop(
            &path,
            &o,
            &mut |_| {
                looks += 1;
                Seen::Uninspectable(io::Error::from_raw_os_error(libc::EIO))
            },
            &|_| {},
        )
        .err()
        .unwrap();
        assert_eq!(looks, 3);
        let msg = err.to_string();
        assert!(msg.contains("could not be inspected"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    fn quick(stale: Duration) -> LockOptions {
        LockOptions {
            fast_retries: 2,
            fast_retry_delay: Duration::from_millis(1),
            slow_retries: 1,
            slow_retry_delay: Duration::from_millis(1),
            stale,
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_fresh_file_moved_aside_by_mistake_is_put_back_unchanged() {
        // The race this guards against: we judged an orphan stale, but by
        // the time we move it, a new holder has replaced it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        fs::write(&path, "theirs").unwrap();
        let ino = fs::metadata(&path).unwrap().ino();
        assert!(matches!(
            take_away(&path, Duration::from_secs(60)),
            TakeAway::Live(None)
        ));
        let m = fs::metadata(&path).unwrap();
        assert_eq!(m.ino(), ino);
        assert_eq!(fs::read_to_string(&path).unwrap(), "theirs");
        assert_eq!(names_in(dir.path()), ["x.lock"]);
    }

    #[test]
    fn a_stale_file_taken_away_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let f = File::create(&path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(600))
            .unwrap();
        drop(f);
        assert!(matches!(
            take_away(&path, Duration::from_secs(5)),
            TakeAway::Gone
        ));
        assert!(names_in(dir.path()).is_empty());
        // Nothing there at all: reported as gone, not as a failure.
        assert!(matches!(
            take_away(&path, Duration::from_secs(5)),
            TakeAway::Gone
        ));
    }

    #[test]
    fn acquire_writes_our_holder_line_and_leaves_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("y.lock");
        acquire(&path, &quick(Duration::from_secs(60))).unwrap();
        let h = read_holder(&path).unwrap();
        assert_eq!(h.pid, std::process::id());
        assert_eq!(h.host.as_deref(), this_host());
        // Held: a second acquire times out.
        let err = acquire(&path, &quick(Duration::from_secs(60))).unwrap_err();
        assert!(
            err.to_string().contains("held by live process (pid "),
            "{err}"
        );
    }
}
