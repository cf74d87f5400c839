//! Append throughput with dedup into a ledger whose index already holds
//! many ids.
//!
//! The home is a small generated ledger whose `ledger.idx` is padded with
//! random ids up to the requested count: dedup cost depends on the id set
//! and the ledger's last megabyte (read on a first load), not on the
//! ledger's size. The turns appended are real generated turns given fresh
//! message ids and timestamps, so none is a duplicate by id or by content
//! fingerprint.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use relayburn_ledger::json::Value;
use relayburn_ledger::jsonl::{parse_line, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};
use relayburn_ledger::time::iso_from_millis;
use relayburn_ledger::{Ledger, LedgerHome};

use super::{count, generate, loadavg, mb, parse_size, secs, OutArgs, Section, Summary};
use crate::gen::StampMix;

#[derive(Args, Debug)]
pub struct AppendArgs {
    /// Scratch home (default: a temporary one). Generated and padded
    /// when it has no ledger; appended to either way.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Ids `ledger.idx` holds before the first append.
    #[arg(long, default_value_t = 1_000_000)]
    pub ids: u64,
    /// Size of the generated ledger under the padded index.
    #[arg(long, value_parser = parse_size, default_value = "20MB")]
    pub ledger_size: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Batch sizes to time.
    #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
    pub batches: Vec<usize>,
    /// First calls to time, each on a newly opened handle (index load).
    #[arg(long, default_value_t = 5)]
    pub first_calls: usize,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Calls timed per batch size: enough for a p99 where calls are cheap.
fn calls_for(batch: usize) -> usize {
    match batch {
        0..=1 => 1000,
        2..=100 => 300,
        b => (50_000 / b).max(3),
    }
}

/// Fresh turns from templates: a new message id and timestamp each.
struct TurnSource {
    templates: Vec<Value>,
    tag: String,
    next: u64,
    base_ms: i64,
}

impl TurnSource {
    fn batch(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|_| {
                let i = self.next;
                self.next += 1;
                let mut t = self.templates[(i as usize) % self.templates.len()].clone();
                if let Some(o) = t.as_object_mut() {
                    o.insert("messageId", Value::from(format!("{}-{i}", self.tag)));
                    o.insert("ts", Value::from(iso_from_millis(self.base_ms + i as i64)));
                }
                t
            })
            .collect()
    }
}

fn read_templates(home: &LedgerHome, n: usize) -> Result<Vec<Value>> {
    let path = home.ledger();
    let mut sc = LineScanner::open_at(&path, 0)?;
    let mut out = Vec::new();
    while let Some(line) = sc.next_line()? {
        if out.len() >= n {
            break;
        }
        if let Parsed::Value(v) = parse_line(line.bytes) {
            if line_kind(&v) == Some(Kind::Turn) {
                if let Some(r) = v.get("record") {
                    out.push(r.clone());
                }
            }
        }
    }
    if out.is_empty() {
        bail!("no turns in {}", path.display());
    }
    Ok(out)
}

fn index_lines(home: &LedgerHome) -> u64 {
    std::fs::read(home.ledger_index())
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// Pad `ledger.idx` with random ids up to `target` lines.
fn pad_index(home: &LedgerHome, target: u64, seed: u64) -> Result<u64> {
    let have = index_lines(home);
    if have >= target {
        return Ok(0);
    }
    let path = home.ledger_index();
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut w = BufWriter::new(f);
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x1d5_0000_0000);
    for _ in have..target {
        writeln!(w, "{:016x}", rng.random::<u64>())?;
    }
    w.flush()?;
    Ok(target - have)
}

pub fn run_append(a: AppendArgs) -> Result<()> {
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
    let home = LedgerHome::new(&path);
    let mut s = Section::new("Append throughput with dedup");
    if !home.ledger().exists() {
        let (r, gen_secs) = generate(
            &path,
            a.ledger_size,
            a.seed,
            StampMix::None,
            Default::default(),
        )?;
        s.note(format!(
            "ledger generated for this run: {} ({} ids) in {gen_secs:.1} s",
            mb(r.total_bytes),
            count(r.ids as u64)
        ));
    }
    let padded = pad_index(&home, a.ids, a.seed)?;
    let ids_now = index_lines(&home);
    s.note(format!(
        "ledger.idx holds {} ids before the first append ({} random ids added)",
        count(ids_now),
        count(padded)
    ));
    let templates = read_templates(&home, 5_000)?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut src = TurnSource {
        templates,
        tag: format!("bench-{now_ms}"),
        next: 0,
        // A time after every generated turn, distinct per run.
        base_ms: 4_102_444_800_000 + (now_ms % 1_000_000_000) * 1000,
    };
    s.note(format!(
        "turns: generated turns with fresh messageId and ts (mean line {} bytes)",
        {
            let sample = src.batch(100);
            let bytes: usize = sample.iter().map(|t| t.to_json().len()).sum();
            src.next = 0;
            bytes / 100 + 30
        }
    ));

    // First call of a process: a new handle has no index in memory.
    let mut firsts = Vec::new();
    let load_first = loadavg();
    for _ in 0..a.first_calls.max(1) {
        let ledger = Ledger::open(home.clone())?;
        let batch = src.batch(100);
        let t = Instant::now();
        let n = ledger.append_turns(batch)?;
        firsts.push(t.elapsed().as_secs_f64());
        if n != 100 {
            bail!("first call wrote {n} of 100 turns");
        }
    }
    s.row(
        "first call of a handle (index load + 100-turn batch)",
        format!(
            "{} (load average before: {load_first})",
            Summary::of(&firsts).line()
        ),
    );

    let ledger = Ledger::open(home.clone())?;
    ledger.append_turns(src.batch(1))?;
    let mut goal_p99 = None;
    for &b in &a.batches {
        if b == 0 {
            continue;
        }
        let calls = calls_for(b);
        let load = loadavg();
        let mut times = Vec::with_capacity(calls);
        let mut last = Vec::new();
        for _ in 0..calls {
            let batch = src.batch(b);
            last = batch.clone();
            let t = Instant::now();
            let n = ledger.append_turns(batch)?;
            times.push(t.elapsed().as_secs_f64());
            if n != b {
                bail!("a batch of {b} wrote {n}");
            }
        }
        let sum = Summary::of(&times);
        if b == 100 {
            goal_p99 = Some(sum.p99);
        }
        s.row(
            format!("steady state, batches of {}", count(b as u64)),
            format!(
                "{} per call · {} turns/s (mean) · load average before: {load}",
                sum.line(),
                count((b as f64 / sum.mean) as u64)
            ),
        );
        if b == 100 {
            let mut dup = Vec::new();
            for _ in 0..100 {
                let batch = last.clone();
                let t = Instant::now();
                let n = ledger.append_turns(batch)?;
                dup.push(t.elapsed().as_secs_f64());
                if n != 0 {
                    bail!("a duplicate batch wrote {n}");
                }
            }
            s.row(
                "steady state, 100 turns that are all duplicates",
                Summary::of(&dup).line(),
            );
        }
    }
    s.row("ids in ledger.idx at the end", count(index_lines(&home)));
    if let Some(p99) = goal_p99 {
        s.row(
            "goal: 100-turn batch ≤ 5 ms after the first call",
            format!(
                "{} (p99 {})",
                if p99 <= 0.005 { "met" } else { "not met" },
                secs(p99)
            ),
        );
    }
    s.emit(&a.out)
}
