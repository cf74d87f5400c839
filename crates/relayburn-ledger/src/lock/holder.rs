//! Who holds a lock: the holder line in the lockfile, and whether the
//! process it names is still alive.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::json::{self, Object, Value};

/// Content longer than this is not a holder record of ours.
pub(super) const MAX_HOLDER_BYTES: u64 = 1024;

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

    pub(super) fn liveness(&self) -> Liveness {
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

pub(super) fn whole_number(v: &Value) -> Option<u64> {
    let n = v.as_f64()?;
    (n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0)
        .then_some(n as u64)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn this_host() -> Option<&'static str> {
    static HOST: OnceLock<Option<String>> = OnceLock::new();
    HOST.get_or_init(crate::sys::host_name).as_deref()
}

pub(super) fn this_pid_ns() -> Option<&'static str> {
    static NS: OnceLock<Option<String>> = OnceLock::new();
    NS.get_or_init(|| {
        fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
    })
    .as_deref()
}

pub(super) fn this_start_ticks() -> Option<u64> {
    static TICKS: OnceLock<Option<u64>> = OnceLock::new();
    *TICKS.get_or_init(|| proc_stat("/proc/self/stat").map(|(_, t)| t))
}

/// State letter and start time from a `/proc/<pid>/stat` file.
pub(super) fn proc_stat(path: &str) -> Option<(char, u64)> {
    parse_proc_stat(&fs::read_to_string(path).ok()?)
}

/// `pid (comm) state ppid …`: the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`. The start time is
/// field 22 overall, the 20th after the name.
pub(super) fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for ms since the epoch.
pub(super) fn iso_utc(ms: u64) -> String {
    crate::time::iso_from_millis(ms as i64)
}
