//! "waiting for lock …" on stderr once a lock has been waited on for a
//! second, as cargo says "Blocking waiting for file lock": a wait of up to
//! eleven seconds should not look like a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use relayburn_ledger::lock::{WaitObserver, Waiting};

/// How long a wait goes unannounced.
const QUIET_FOR: Duration = Duration::from_secs(1);

/// An observer that prints [`message`] once per acquire, at the first
/// wait that starts a second or more after the first attempt.
pub fn announcer() -> WaitObserver {
    // Per lockfile, the attempt at which the last message was printed; an
    // attempt number not above it means a new acquire.
    let printed: Mutex<HashMap<PathBuf, u32>> = Mutex::new(HashMap::new());
    Arc::new(move |w: &Waiting<'_>| {
        if w.waited < QUIET_FOR {
            return;
        }
        let mut printed = printed.lock().unwrap_or_else(|e| e.into_inner());
        if printed.get(w.path).is_some_and(|&at| w.attempt > at) {
            return;
        }
        printed.insert(w.path.to_path_buf(), w.attempt);
        eprintln!("{}", message(w));
    })
}

/// "waiting for lock `NAME` held by pid N on host H…"; the holder part
/// only when the lockfile names one (the TypeScript tool writes nothing).
pub fn message(w: &Waiting<'_>) -> String {
    let name = w
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".lock").unwrap_or(n))
        .unwrap_or("?");
    match w.holder {
        Some(h) => match &h.host {
            Some(host) => format!(
                "waiting for lock `{name}` held by pid {} on host {host}…",
                h.pid
            ),
            None => format!("waiting for lock `{name}` held by pid {}…", h.pid),
        },
        None => format!("waiting for lock `{name}`…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relayburn_ledger::lock::LockHolder;
    use std::path::Path;

    #[test]
    fn messages_name_the_lock_and_its_holder() {
        let holder = LockHolder {
            pid: 42,
            host: Some("box".into()),
            since_ms: None,
            start_ticks: None,
            pid_ns: None,
        };
        let w = |holder| Waiting {
            path: Path::new("/h/archive.lock"),
            attempt: 51,
            delay: Duration::from_millis(250),
            waited: Duration::from_millis(1_000),
            holder,
        };
        assert_eq!(
            message(&w(Some(&holder))),
            "waiting for lock `archive` held by pid 42 on host box…"
        );
        assert_eq!(message(&w(None)), "waiting for lock `archive`…");
    }
}
