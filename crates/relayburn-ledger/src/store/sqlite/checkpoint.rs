//! The checkpoint thread, the WAL hook that tells it when to run, and
//! closing without SQLite's own checkpoint.

use super::*;

/// Log size, in frames (pages), at which a commit wakes the checkpoint
/// thread: SQLite's own automatic checkpoint threshold. Checkpointing after
/// every commit instead would copy and sync the same hot index pages once
/// per append call.
pub(super) const CHECKPOINT_FRAMES: i64 = 1000;

/// Log size at which the checkpoint thread makes writers wait until the
/// log is copied and starts over.
pub(super) const LOG_FRAMES_CAP: i64 = 4 * CHECKPOINT_FRAMES;

/// SQLite's WAL hook: runs on the committing thread after each commit of
/// the connection it is registered on.
pub(super) extern "C" fn note_log_frames(
    frames_out: *mut std::ffi::c_void,
    _db: *mut rusqlite::ffi::sqlite3,
    _schema: *const std::ffi::c_char,
    frames: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: `frames_out` is the `AtomicI64` of the store's `log_frames`,
    // registered in `watch_log` and alive as long as the connection is.
    let out = unsafe { &*(frames_out as *const AtomicI64) };
    out.store(i64::from(frames), Ordering::Relaxed);
    rusqlite::ffi::SQLITE_OK
}

/// Register `note_log_frames` on `conn`, writing into `out`.
pub(super) fn watch_log(conn: &Connection, out: &Arc<AtomicI64>) {
    // SAFETY: the handle is `conn`'s own, used on this thread while we hold
    // it; the pointer handed over stays valid for the connection's life
    // (see `SqliteStore::log_frames`), and the hook only stores into it.
    unsafe {
        rusqlite::ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(note_log_frames),
            Arc::as_ptr(out) as *mut std::ffi::c_void,
        );
    }
}

/// Checkpoints the WAL from a thread of its own, so an append call does
/// not pay for copying the log into the database (SQLite's automatic
/// checkpoint, off on our connection, would run inside the committing
/// call). Other processes keep their own automatic checkpoints.
pub(super) struct Checkpointer {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// `None` when the thread or its connection cannot be had; SQLite then
    /// checkpoints when the last connection closes, and a checkpoint of
    /// another connection (a reference process) still applies.
    pub(super) fn start(path: &Path, log_frames: Arc<AtomicI64>) -> Option<Checkpointer> {
        let conn = Connection::open(path).ok()?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))
            .ok()?;
        no_checkpoint_on_close(&conn).ok()?;
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("burn-sqlite-checkpoint".into())
            .spawn(move || {
                // A busy or failed checkpoint is simply tried again after
                // the next commit.
                while rx.recv().is_ok() {
                    // Back to back commits outrun a passive checkpoint (the
                    // log starts over only when a transaction begins with
                    // every frame copied): past the cap, writers wait while
                    // the log is copied and reset.
                    let mode = if log_frames.load(Ordering::Relaxed) >= LOG_FRAMES_CAP {
                        "RESTART"
                    } else {
                        "PASSIVE"
                    };
                    let _ =
                        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
                }
                // The store is closing: copy the rest and empty the log, so
                // the file alone holds every commit and the next first
                // opener has nothing to recover. A writer of another
                // process gets priority: a busy log is left as it is.
                let _ = conn.busy_timeout(Duration::from_millis(CLOSE_CHECKPOINT_WAIT_MS));
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            })
            .ok()?;
        Some(Checkpointer {
            wake: Some(tx),
            thread: Some(thread),
        })
    }

    pub(super) fn poke(&self) {
        if let Some(tx) = &self.wake {
            // Full means a checkpoint is already due: nothing to add.
            let _ = tx.try_send(());
        }
    }
}

/// SQLite's last connection to close checkpoints while holding the
/// database file's exclusive lock, and the reference sets `busy_timeout`
/// only after its first statement (`PRAGMA journal_mode`), so a reference
/// process opening at that moment fails with "database is locked". Our
/// connections leave that checkpoint out: the checkpoint thread copies the
/// log after commits and empties it as the store closes, neither of which
/// takes a lock on the database file that an opening reader waits on.
pub(super) fn no_checkpoint_on_close(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map(|_| ())
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
