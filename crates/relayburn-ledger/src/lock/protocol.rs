//! One acquire as the protocol says: exclusive create, judging an
//! existing lockfile, and taking a stale one away safely.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::held::Owned;
use super::holder::MAX_HOLDER_BYTES;
use super::holder::{read_holder, Liveness, LockHolder};
use super::{LockOptions, Waiting, MAX_IMMEDIATE_RETRIES};
use crate::error::{Error, Result};

/// Why the last round did not get the lock (for the timeout message).
pub(super) enum Reason {
    Live(Option<LockHolder>),
    StaleUnlinkFailed(io::Error),
    Uninspectable(io::Error),
}

impl Reason {
    pub(super) fn detail(&self) -> String {
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
pub(super) fn acquire_loop(
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
        let delay = o.delay(sleeps);
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
pub(super) fn create(path: &Path) -> io::Result<Owned> {
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
pub(super) fn create_published(path: &Path, body: &[u8]) -> Option<io::Result<File>> {
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
pub(super) fn create_published(_path: &Path, _body: &[u8]) -> Option<io::Result<File>> {
    None
}

/// What an existing lockfile looks like to an acquirer.
pub(super) enum Seen {
    Vanished,
    Directory,
    Fresh(Option<LockHolder>),
    Stale,
    Uninspectable(io::Error),
}

pub(super) fn inspect(path: &Path, stale: Duration) -> Seen {
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

pub(super) enum TakeAway {
    /// Removed, or someone else removed it first.
    Gone,
    /// It was no longer stale once we had it in hand: put back.
    Live(Option<LockHolder>),
    Failed(io::Error),
}

pub(super) static ASIDE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Remove a lockfile judged stale, without the risk of removing a fresh
/// one that replaced it in the meantime: move it aside, judge the moved
/// file again, delete it or put it back.
pub(super) fn take_away(path: &Path, stale: Duration) -> TakeAway {
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
pub(super) fn put_back(aside: &Path, path: &Path) {
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
