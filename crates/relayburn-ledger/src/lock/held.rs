//! The file a holder created, its identity, and the heartbeat that keeps
//! its mtime fresh while the lock is held.

use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Which file is ours, and whether the heartbeat saw it go.
#[derive(Clone)]
pub(super) struct Identity {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) lost: Arc<AtomicBool>,
}

impl Identity {
    /// Is the file at `path` still the one we created?
    pub(super) fn still_ours(&self, path: &Path) -> bool {
        !self.lost.load(Ordering::SeqCst)
            && fs::symlink_metadata(path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }
}

/// The file we created, kept open so its inode stays ours.
pub(super) struct Owned {
    pub(super) file: Arc<File>,
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) beat: Option<Heartbeat>,
}

impl Owned {
    pub(super) fn release(mut self, path: &Path) {
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
pub(super) struct Heartbeat {
    pub(super) stop: mpsc::Sender<()>,
    pub(super) thread: JoinHandle<()>,
}

impl Heartbeat {
    /// `None` when no thread can be started: the lock still works, just
    /// without protection for holds longer than the stale window.
    ///
    /// Each beat also checks that the lockfile is still ours and records
    /// when it is not (see [`Locks::ensure_held`]).
    pub(super) fn start(
        file: Arc<File>,
        every: Duration,
        path: PathBuf,
        id: Identity,
    ) -> Option<Heartbeat> {
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

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
