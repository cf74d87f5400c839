//! Incremental build of a ledger tail appended after a full build.
//!
//! The home's ledger is cut at a line boundary, the head rebuilt, then
//! the cut-off tail appended again byte for byte and the incremental
//! build timed. The archive after the full build is kept aside so every
//! repetition starts from the same state. The ledger ends as it began.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use relayburn_ledger::home::lock_name;
use relayburn_ledger::Ledger;

use crate::floor;

use super::{count, loadavg, mb, secs, BenchHome, HomeArgs, OutArgs, Section, Summary};

#[derive(Args, Debug)]
pub struct IncrementalArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Size of the tail, in percent of the ledger.
    #[arg(long, default_value_t = 1.0)]
    pub tail_percent: f64,
    /// Timed incremental builds (each from the same full build).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Skip the SQLite floor of the incremental build.
    #[arg(long)]
    pub no_floor: bool,
    /// `cache_size` values (KiB) to run the floor with; 0 is SQLite's
    /// default, which the live archive uses.
    #[arg(long, value_delimiter = ',', default_value = "0,65536")]
    pub floor_cache_kib: Vec<i64>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Puts the tail back if the benchmark stops half-way.
struct Restore<'a> {
    ledger: PathBuf,
    cut: u64,
    tail: &'a [u8],
}

impl Restore<'_> {
    fn put_back(&self) -> Result<()> {
        let len = std::fs::metadata(&self.ledger)?.len();
        if len == self.cut {
            let mut f = OpenOptions::new().append(true).open(&self.ledger)?;
            f.write_all(self.tail)?;
        }
        Ok(())
    }

    fn cut(&self) -> Result<()> {
        let f = OpenOptions::new().write(true).open(&self.ledger)?;
        f.set_len(self.cut)?;
        Ok(())
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            eprintln!(
                "could not restore the tail of {}: {e}",
                self.ledger.display()
            );
        }
    }
}

/// The first line start at or after `at`.
fn line_start_after(path: &Path, at: u64) -> Result<u64> {
    let mut f = File::open(path)?;
    if at == 0 {
        return Ok(0);
    }
    f.seek(SeekFrom::Start(at - 1))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = at - 1;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            bail!("no line boundary after byte {at}");
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        pos += n as u64;
    }
}

fn copy_db(from: &Path, to: &Path) -> Result<()> {
    for suffix in ["-wal", "-shm"] {
        let mut p = to.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

pub fn run_incremental(a: IncrementalArgs) -> Result<()> {
    if !(a.tail_percent > 0.0 && a.tail_percent < 100.0) {
        bail!("--tail-percent must be between 0 and 100");
    }
    let home = BenchHome::prepare(&a.home)?;
    let lh = home.ledger_home();
    let ledger_path = lh.ledger();
    let archive = lh.archive();
    let base_copy = home.path.join("archive.sqlite.bench-base");
    let len = home.ledger_bytes();
    let cut = line_start_after(
        &ledger_path,
        (len as f64 * (1.0 - a.tail_percent / 100.0)) as u64,
    )?;
    let mut tail = Vec::with_capacity((len - cut) as usize);
    {
        let mut f = File::open(&ledger_path)?;
        f.seek(SeekFrom::Start(cut))?;
        f.read_to_end(&mut tail)?;
    }
    let tail_lines = tail.iter().filter(|&&b| b == b'\n').count() as u64;

    let mut s = Section::new("Incremental build of a ledger tail");
    s.note(home.describe(&a.home));
    s.note(format!(
        "tail: the last {} % of the ledger = {} bytes, {} lines, appended after a full build of the first {}",
        a.tail_percent,
        count(tail.len() as u64),
        count(tail_lines),
        mb(cut)
    ));
    let restore = Restore {
        ledger: ledger_path.clone(),
        cut,
        tail: &tail,
    };
    restore.cut()?;
    eprintln!("full build of the head ({}) …", mb(cut));
    let t = Instant::now();
    Ledger::open(lh.clone())?.rebuild_archive()?;
    let full = t.elapsed().as_secs_f64();
    s.row("full build of the head (in process)", secs(full));
    copy_db(&archive, &base_copy)?;

    let mut samples = Vec::new();
    let mut last = None;
    for i in 0..a.reps.max(1) {
        if i > 0 {
            restore.cut()?;
            copy_db(&base_copy, &archive)?;
        }
        restore.put_back()?;
        let load = loadavg();
        let ledger = Ledger::open(lh.clone())?;
        // Held around the timed build (re-entrant on this thread), so that
        // another process's build cannot be timed as ours.
        let guard = ledger.locks().acquire(lock_name::ARCHIVE)?;
        let t = Instant::now();
        let r = ledger.build_archive()?;
        let dt = t.elapsed().as_secs_f64();
        drop(guard);
        eprintln!("incremental build {}: {}", i + 1, secs(dt));
        s.row(
            format!("incremental build {}", i + 1),
            format!("{} (load average before: {load})", secs(dt)),
        );
        samples.push(dt);
        last = Some(r);
    }
    let sum = Summary::of(&samples);
    if !a.no_floor {
        eprintln!("SQLite floor of the incremental build …");
        let rows = floor::collect_tail(&lh, cut)?;
        let c = rows.counts();
        s.row(
            "incremental SQLite floor: statements",
            format!(
                "{} turn upserts (each with a tool-call delete), {} tool-call inserts, {} event upserts, {} compaction upserts, {} session upserts",
                count(c.turn_statements),
                count(c.tool_call_statements),
                count(c.event_statements),
                count(c.compaction_statements),
                count(c.sessions)
            ),
        );
        let scratch = home.path.join("bench-tail-floor.sqlite");
        for &kib in &a.floor_cache_kib {
            let mut totals = Vec::new();
            let mut last = floor::TailTimes::default();
            for _ in 0..a.reps.clamp(1, 3) {
                copy_db(&base_copy, &scratch)?;
                last = floor::load_tail(&rows, &scratch, (kib > 0).then_some(kib))?;
                totals.push(last.total);
            }
            s.row(
                format!(
                    "incremental SQLite floor, cache_size {}",
                    if kib > 0 {
                        format!("{} MiB", kib / 1024)
                    } else {
                        "default (as the live archive)".into()
                    }
                ),
                format!(
                    "{} · last run: open {} · inserts {} · sessions {} · commit {} · close+checkpoint {}",
                    Summary::of(&totals).line(),
                    secs(last.open),
                    secs(last.inserts),
                    secs(last.sessions),
                    secs(last.commit),
                    secs(last.close)
                ),
            );
        }
        for suffix in ["", "-wal", "-shm"] {
            let mut p = scratch.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
    let _ = std::fs::remove_file(&base_copy);
    s.row("incremental build of the tail", sum.line());
    if let Some(r) = last {
        s.row(
            "what it applied",
            format!(
                "{} bytes, {} turns, {} events, {} compactions, {} stamps, {} sessions touched",
                count(r.scanned_bytes),
                count(r.turns_applied),
                count(r.tool_result_events_applied),
                count(r.compactions_applied),
                count(r.stamps_applied),
                count(r.sessions_touched)
            ),
        );
        s.row(
            "tail throughput (median run)",
            format!("{:.1} MB/s", r.scanned_bytes as f64 / 1e6 / sum.p50),
        );
    }
    let ledger = Ledger::open(lh.clone())?;
    let t = Instant::now();
    ledger.build_archive()?;
    s.row(
        "incremental build with nothing new",
        secs(t.elapsed().as_secs_f64()),
    );
    s.row(
        "goal: 1 % tail ≤ 0.5 s",
        if sum.p50 <= 0.5 && a.tail_percent >= 1.0 {
            format!("met (median {})", secs(sum.p50))
        } else {
            format!("not met (median {})", secs(sum.p50))
        },
    );
    drop(restore);
    s.emit(&a.out)
}
