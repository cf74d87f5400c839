//! Lock acquire and release, alone and with contending processes.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use relayburn_ledger::lock::Locks;
use relayburn_ledger::LedgerHome;

use super::child::spawn;
use super::{count, loadavg, secs, OutArgs, Section, Summary};

#[derive(Args, Debug)]
pub struct LockArgs {
    /// Home whose lockfiles are used (default: a temporary one).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Uncontended acquire+release pairs.
    #[arg(long, default_value_t = 2000)]
    pub iterations: usize,
    /// Contending processes.
    #[arg(long, default_value_t = 4)]
    pub contenders: usize,
    /// Acquire+release pairs per contending process.
    #[arg(long, default_value_t = 100)]
    pub contended_iterations: usize,
    /// How long each contender holds the lock, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub hold_us: u64,
    #[command(flatten)]
    pub out: OutArgs,
}

pub fn run_lock(a: LockArgs) -> Result<()> {
    let (path, _temp) = match &a.home {
        Some(p) => (p.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("relayburn-bench-")
                .tempdir()
                .context("creating a temporary home")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    std::fs::create_dir_all(&path)?;
    let home = LedgerHome::new(&path);
    let mut s = Section::new("Lock acquire and release");

    for (label, locks) in [
        (
            "uncontended acquire+release (heartbeat on, as the ledger uses it)",
            Locks::new(home.clone()),
        ),
        (
            "uncontended acquire+release (heartbeat off)",
            Locks::new(home.clone()).heartbeat(None),
        ),
    ] {
        let load = loadavg();
        let mut samples = Vec::with_capacity(a.iterations);
        for _ in 0..a.iterations.max(1) {
            let t = Instant::now();
            let g = locks.acquire("bench-alone")?;
            drop(g);
            samples.push(t.elapsed().as_secs_f64());
        }
        s.row(
            label,
            format!(
                "{} · load average before: {load}",
                Summary::of(&samples).line()
            ),
        );
    }

    let start_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
        + 500;
    let load = loadavg();
    let t = Instant::now();
    let mut kids = Vec::new();
    for _ in 0..a.contenders.max(1) {
        kids.push(spawn(&[
            "lock".into(),
            "--home".into(),
            path.display().to_string(),
            "--name".into(),
            "bench-contended".into(),
            "--iterations".into(),
            a.contended_iterations.to_string(),
            "--start-at-ms".into(),
            start_at.to_string(),
            "--hold-us".into(),
            a.hold_us.to_string(),
        ])?);
    }
    let mut waits = Vec::new();
    let mut failures = 0u64;
    let mut walls = Vec::new();
    for k in kids {
        let o = k.finish()?;
        failures += o.u64("failures")?;
        walls.push(o.f64("wall")?);
        if let Some(list) = o.get("waits") {
            for w in list.split(',').filter(|w| !w.is_empty()) {
                waits.push(w.parse::<f64>().context("a child's wait")?);
            }
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let longest = walls.iter().cloned().fold(0.0, f64::max);
    let total = waits.len() as u64;
    s.row(
        format!(
            "{} processes × {} acquisitions, holding {} each: wait to acquire",
            a.contenders,
            a.contended_iterations,
            secs(a.hold_us as f64 / 1e6)
        ),
        format!(
            "{} · {} failures · load average before: {load}",
            Summary::of(&waits).line(),
            failures
        ),
    );
    s.row(
        "contended throughput",
        format!(
            "{} acquisitions in {} (slowest process) = {:.0}/s; lock busy {:.0} % of the time (spawn to exit: {})",
            count(total),
            secs(longest),
            total as f64 / longest,
            total as f64 * a.hold_us as f64 / 1e6 / longest * 100.0,
            secs(elapsed)
        ),
    );
    s.note(format!(
        "a waiting process sleeps {} ms between tries for its first {} tries, then {} ms",
        relayburn_ledger::lock::FAST_RETRY_DELAY_MS,
        relayburn_ledger::lock::FAST_RETRIES,
        relayburn_ledger::lock::SLOW_RETRY_DELAY_MS
    ));
    s.emit(&a.out)
}
