//! Work done in a child process of the bench binary, so that its peak
//! memory is its own (not the generator's nor an earlier run's) and so
//! that lock contention involves real processes.
//!
//! A child prints `RESULT <key> <value>` lines; the parent collects them
//! and takes the child's peak RSS from `wait4`.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use relayburn_ledger::home::lock_name;
use relayburn_ledger::lock::Locks;
use relayburn_ledger::{Ledger, LedgerHome};

use super::vm_hwm;
use crate::floor;

#[derive(Subcommand, Debug)]
pub enum ChildCommand {
    /// One full rebuild of the archive.
    Rebuild(ChildHome),
    /// One incremental build of the archive (for profiling).
    Build(ChildHome),
    /// Collect the rows of the archive, then load them into a new file.
    Floor(ChildFloor),
    /// Take and release a lock in a loop from a common start time.
    Lock(ChildLock),
    /// Every turn, from the archive or the ledger, written as JSON Lines.
    Stream(ChildStream),
}

#[derive(Args, Debug)]
pub struct ChildStream {
    #[arg(long)]
    pub home: PathBuf,
    /// `archive` or `ledger`.
    #[arg(long)]
    pub from: String,
}

#[derive(Args, Debug)]
pub struct ChildHome {
    #[arg(long)]
    pub home: PathBuf,
}

#[derive(Args, Debug)]
pub struct ChildFloor {
    #[arg(long)]
    pub home: PathBuf,
    #[arg(long)]
    pub db: PathBuf,
    /// Page cache in KiB instead of the rebuild's.
    #[arg(long)]
    pub cache_kib: Option<i64>,
    /// Row order of the load.
    #[arg(long, value_enum, default_value_t = floor::FloorOrder::Ledger)]
    pub order: floor::FloorOrder,
}

#[derive(Args, Debug)]
pub struct ChildLock {
    #[arg(long)]
    pub home: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub iterations: usize,
    /// Start at this time (ms since the epoch), so all children race.
    #[arg(long)]
    pub start_at_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub hold_us: u64,
}

fn result(key: &str, value: impl std::fmt::Display) {
    println!("RESULT {key} {value}");
}

pub fn run(cmd: ChildCommand) -> Result<()> {
    match cmd {
        ChildCommand::Rebuild(a) => {
            let ledger = Ledger::open(LedgerHome::new(&a.home))?;
            // Taken first (the lock is re-entrant on this thread), so that
            // waiting for another process's build is not timed as ours.
            let t = Instant::now();
            let _guard = ledger.locks().acquire(lock_name::ARCHIVE)?;
            result("lock_wait", t.elapsed().as_secs_f64());
            let t = Instant::now();
            let r = ledger.rebuild_archive()?;
            result("secs", t.elapsed().as_secs_f64());
            result("scanned_bytes", r.scanned_bytes);
            result("turns", r.turns_applied);
            result("stamps", r.stamps_applied);
            result("compactions", r.compactions_applied);
            result("tool_result_events", r.tool_result_events_applied);
            result("sessions_touched", r.sessions_touched);
            result("skipped", r.skipped_count);
            result("vm_hwm", vm_hwm().unwrap_or(0));
        }
        ChildCommand::Build(a) => {
            let ledger = Ledger::open(LedgerHome::new(&a.home))?;
            let t = Instant::now();
            let _guard = ledger.locks().acquire(lock_name::ARCHIVE)?;
            result("lock_wait", t.elapsed().as_secs_f64());
            let t = Instant::now();
            let r = ledger.build_archive()?;
            result("secs", t.elapsed().as_secs_f64());
            result("scanned_bytes", r.scanned_bytes);
            result("turns", r.turns_applied);
            result("sessions_touched", r.sessions_touched);
            result("vm_hwm", vm_hwm().unwrap_or(0));
        }
        ChildCommand::Floor(a) => {
            let t = Instant::now();
            let rows = floor::collect(&LedgerHome::new(&a.home))?;
            result("collect_secs", t.elapsed().as_secs_f64());
            let c = rows.counts();
            result("statements", c.statements());
            result("turn_statements", c.turn_statements);
            result("tool_call_statements", c.tool_call_statements);
            result("tool_call_deletes", c.tool_call_deletes);
            result("event_statements", c.event_statements);
            result("compaction_statements", c.compaction_statements);
            result("stamp_statements", c.stamp_statements);
            result("sessions", c.sessions);
            let f = floor::load_with_cache(&rows, &a.db, a.cache_kib, a.order)?;
            result("setup", f.setup);
            result("inserts", f.inserts);
            result("indexes", f.indexes);
            result("session_rows", f.sessions);
            result("commit", f.commit);
            result("finish", f.finish);
            result("total", f.total);
            result("vm_hwm", vm_hwm().unwrap_or(0));
        }
        ChildCommand::Stream(a) => {
            use std::io::Write;
            let ledger = Ledger::open(LedgerHome::new(&a.home))?;
            let q = relayburn_ledger::Query::default();
            let mut out = std::io::BufWriter::new(std::fs::File::create("/dev/null")?);
            let t = Instant::now();
            let mut first = None;
            let mut rows = 0u64;
            let mut emit = |v: relayburn_ledger::Value| -> Result<()> {
                first.get_or_insert_with(|| t.elapsed().as_secs_f64());
                rows += 1;
                let mut line = v.to_json();
                line.push('\n');
                out.write_all(line.as_bytes())?;
                Ok(())
            };
            if a.from == "archive" {
                ledger
                    .archive_reader()?
                    .for_each_turn(&q, true, &mut emit)?;
            } else {
                for v in ledger.query_turns(&q)? {
                    emit(v?)?;
                }
            }
            result("secs", t.elapsed().as_secs_f64());
            result("first_row", first.unwrap_or(0.0));
            result("rows", rows);
        }
        ChildCommand::Lock(a) => {
            let locks = Locks::new(LedgerHome::new(&a.home));
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64;
            if a.start_at_ms > now {
                std::thread::sleep(Duration::from_millis(a.start_at_ms - now));
            }
            let hold = Duration::from_micros(a.hold_us);
            let mut waits = Vec::with_capacity(a.iterations);
            let mut failures = 0u64;
            let start = Instant::now();
            for _ in 0..a.iterations {
                let t = Instant::now();
                match locks.acquire(&a.name) {
                    Ok(guard) => {
                        waits.push(t.elapsed().as_secs_f64());
                        if !hold.is_zero() {
                            std::thread::sleep(hold);
                        }
                        drop(guard);
                    }
                    Err(_) => failures += 1,
                }
            }
            result("wall", start.elapsed().as_secs_f64());
            result("failures", failures);
            let list: Vec<String> = waits.iter().map(|w| format!("{w:.7}")).collect();
            result("waits", list.join(","));
        }
    }
    Ok(())
}

/// What a child reported, and its peak resident set.
#[derive(Debug, Default)]
pub struct ChildOutcome {
    pub fields: HashMap<String, String>,
    /// `ru_maxrss` of the child, in bytes.
    pub max_rss: u64,
    /// Wall time from spawn to exit, seconds.
    pub wall: f64,
    /// User + system CPU of the child, seconds: steadier than wall time
    /// when other work shares the machine.
    pub cpu: f64,
}

impl ChildOutcome {
    pub fn f64(&self, key: &str) -> Result<f64> {
        self.fields
            .get(key)
            .ok_or_else(|| anyhow!("child reported no {key}"))?
            .parse()
            .with_context(|| format!("child's {key}"))
    }

    pub fn u64(&self, key: &str) -> Result<u64> {
        Ok(self.f64(key)? as u64)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// A started child of this binary: `relayburn-bench child <args…>`.
pub struct Spawned {
    child: std::process::Child,
    started: Instant,
}

pub fn spawn(args: &[String]) -> Result<Spawned> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let child = Command::new(exe)
        .arg("child")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning a bench child")?;
    Ok(Spawned {
        child,
        started: Instant::now(),
    })
}

impl Spawned {
    /// Read the child's report and reap it with `wait4` for its rusage.
    pub fn finish(mut self) -> Result<ChildOutcome> {
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)
                .context("reading a child's output")?;
        }
        let pid = self.child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value to be overwritten.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own unreaped child; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        let wall = self.started.elapsed().as_secs_f64();
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            bail!("bench child failed (status {status}); its output:\n{out}");
        }
        let mut fields = HashMap::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("RESULT ") {
                if let Some((k, v)) = rest.split_once(' ') {
                    fields.insert(k.to_string(), v.to_string());
                }
            }
        }
        Ok(ChildOutcome {
            fields,
            max_rss: ru.ru_maxrss as u64 * 1024,
            wall,
            cpu: [ru.ru_utime, ru.ru_stime]
                .iter()
                .map(|t| t.tv_sec as f64 + t.tv_usec as f64 / 1e6)
                .sum(),
        })
    }
}

/// Spawn a child and wait for it.
pub fn run_child(args: &[String]) -> Result<ChildOutcome> {
    spawn(args)?.finish()
}
