//! Stopping long work cleanly on SIGINT or SIGTERM.
//!
//! While a [`SignalGuard`] lives, the first SIGINT or SIGTERM is only
//! recorded; a build checks [`requested`] as it goes and fails with
//! [`Error::Interrupted`](crate::Error::Interrupted), so its usual error
//! path runs: the half-built file is removed, the transaction rolled back
//! and the lock released. A second signal acts as if no handler were set
//! (the process dies at once).

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// The signal received, or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
    // SAFETY: signal() is async-signal-safe; the next one takes its default action.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
    }
}

/// Records SIGINT/SIGTERM while it lives; restores the previous
/// dispositions when dropped.
pub struct SignalGuard {
    previous: [libc::sighandler_t; 2],
}

/// Catch SIGINT and SIGTERM until the guard is dropped.
pub fn catch_signals() -> SignalGuard {
    RECEIVED.store(0, Ordering::SeqCst);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic and calls signal().
    let previous = SIGNALS.map(|s| unsafe { libc::signal(s, handler) });
    SignalGuard { previous }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (s, prev) in SIGNALS.iter().zip(self.previous) {
            // SAFETY: restoring the disposition that was there before.
            unsafe {
                libc::signal(*s, prev);
            }
        }
    }
}

/// The signal received since [`catch_signals`], if any.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// `Err(Interrupted)` once a signal was received.
pub fn check() -> Result<()> {
    match requested() {
        Some(signal) => Err(Error::Interrupted { signal }),
        None => Ok(()),
    }
}
