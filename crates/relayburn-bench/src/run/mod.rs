//! `relayburn-bench run <name>`: the benchmarks of the performance goals.
//!
//! Each benchmark prints a section: the exact command line, the machine,
//! the load average when it started (other work on the machine skews
//! timings), then its figures; `--results FILE` appends the same section
//! to a Markdown file.

pub mod append;
pub mod child;
pub mod incremental;
pub mod lock;
pub mod matrix;
pub mod query;
pub mod rebuild;
pub mod sqlite_store;
pub mod team;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::gen::{self, GenOptions, GenReport, Order, Shape, StampMix};

/// Where a benchmark's home comes from.
#[derive(Args, Debug, Clone)]
pub struct HomeArgs {
    /// Home to benchmark. A home without `ledger.jsonl` is generated first
    /// (with --size, --seed, --stamps); without --home a temporary one is
    /// generated and deleted at the end.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Ledger size when generating: 150MB, 1.5GB, 200MiB, or bytes.
    #[arg(long, value_parser = parse_size, default_value = "1.5GB")]
    pub size: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Stamp lines of a generated ledger.
    #[arg(long, value_enum, default_value_t = StampMix::None)]
    pub stamps: StampMix,
    #[command(flatten)]
    pub shape: ShapeArgs,
}

/// The shape of a generated ledger (defaults: the realistic profile).
#[derive(Args, Debug, Clone, Default)]
pub struct ShapeArgs {
    /// Sessions interleaved (live ingest) or one after another (import).
    #[arg(long, value_enum, default_value_t = Order::Interleaved)]
    pub order: Order,
    /// Sessions per 100 MB (default about 780).
    #[arg(long)]
    pub sessions_per_100mb: Option<f64>,
    /// Share of turns in subagent sessions, 0 to 0.9 (default about 0.05).
    #[arg(long)]
    pub subagent_share: Option<f64>,
    /// Mean tool calls per turn (default about 0.85).
    #[arg(long)]
    pub calls_per_turn: Option<f64>,
}

impl ShapeArgs {
    pub fn shape(&self) -> Shape {
        Shape {
            order: self.order,
            sessions_per_100mb: self.sessions_per_100mb,
            subagent_share: self.subagent_share,
            calls_per_turn: self.calls_per_turn,
        }
    }
}

/// Where the figures go besides stdout.
#[derive(Args, Debug, Clone)]
pub struct OutArgs {
    /// Append the section to this Markdown file.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    gen::parse_size(s).map_err(|e| e.to_string())
}

/// A home to run against; a temporary one is deleted on drop.
pub struct BenchHome {
    pub path: PathBuf,
    pub generated: Option<(GenReport, f64)>,
    _temp: Option<tempfile::TempDir>,
}

impl BenchHome {
    /// Use `a.home` as it is, or generate a ledger there (or in a
    /// temporary directory) first.
    pub fn prepare(a: &HomeArgs) -> Result<BenchHome> {
        let (path, temp) = match &a.home {
            Some(p) => (p.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("relayburn-bench-")
                    .tempdir()
                    .context("creating a temporary home")?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut home = BenchHome {
            path,
            generated: None,
            _temp: temp,
        };
        if !home.path.join("ledger.jsonl").exists() {
            home.generated = Some(generate(
                &home.path,
                a.size,
                a.seed,
                a.stamps,
                a.shape.shape(),
            )?);
        }
        Ok(home)
    }

    pub fn ledger_home(&self) -> relayburn_ledger::LedgerHome {
        relayburn_ledger::LedgerHome::new(&self.path)
    }

    pub fn ledger_bytes(&self) -> u64 {
        std::fs::metadata(self.path.join("ledger.jsonl")).map_or(0, |m| m.len())
    }

    /// A line saying where the ledger came from, for the section.
    pub fn describe(&self, a: &HomeArgs) -> String {
        match &self.generated {
            Some((r, secs)) => format!(
                "generated for this run (size {}, seed {}, stamps {:?}) in {:.1} s: {} bytes, {} turns, {} ids",
                mb(a.size),
                a.seed,
                a.stamps,
                secs,
                r.total_bytes,
                r.stats_of(relayburn_ledger::Kind::Turn).lines,
                r.ids
            ),
            None => format!("existing home: ledger.jsonl of {} bytes", self.ledger_bytes()),
        }
    }
}

/// Generate a home, returning the report and the seconds it took.
pub fn generate(
    path: &Path,
    size: u64,
    seed: u64,
    stamps: StampMix,
    shape: Shape,
) -> Result<(GenReport, f64)> {
    eprintln!(
        "generating {} ledger (seed {seed}, stamps {stamps:?}) in {} …",
        mb(size),
        path.display()
    );
    let t = Instant::now();
    let r = gen::generate(
        path,
        &GenOptions {
            target_bytes: size,
            seed,
            stamps,
            shape,
            overwrite: true,
        },
    )
    .with_context(|| format!("generating a ledger in {}", path.display()))?;
    Ok((r, t.elapsed().as_secs_f64()))
}

/// The command line of this process, quoted for a POSIX shell.
pub fn command_line() -> String {
    let mut args = std::env::args();
    let mut out = String::from("relayburn-bench");
    args.next();
    for a in args {
        out.push(' ');
        out.push_str(&shell_quote(&a));
    }
    out
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+%@".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Peak resident set of this process (`VmHWM`), in bytes.
pub fn vm_hwm() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU count, model and memory, for the section header.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    format!("{cpus} CPUs ({model}), {mem} RAM")
}

/// Percentiles of a set of samples (seconds).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles.
    pub fn of(samples: &[f64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let r = (p / 100.0 * s.len() as f64).ceil() as usize;
            s[r.clamp(1, s.len()) - 1]
        };
        Summary {
            n: s.len(),
            min: s[0],
            p50: rank(50.0),
            p99: rank(99.0),
            max: s[s.len() - 1],
            mean: s.iter().sum::<f64>() / s.len() as f64,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {} · p99 {} · min {} · max {} · mean {} (n = {})",
            secs(self.p50),
            secs(self.p99),
            secs(self.min),
            secs(self.max),
            secs(self.mean),
            self.n
        )
    }
}

/// A duration in a readable unit.
pub fn secs(s: f64) -> String {
    if s < 0.0 {
        return format!("-{}", secs(-s));
    }
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// Bytes as decimal MB or GB, as sizes are given.
pub fn mb(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// Bytes in MiB (memory).
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)
}

/// A count with thousands separators.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The printed result of one benchmark.
pub struct Section {
    title: String,
    command: String,
    notes: Vec<String>,
    rows: Vec<(String, String)>,
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            command: command_line(),
            notes: vec![format!("machine: {}", machine())],
            rows: Vec::new(),
        }
    }

    /// Replace a secret (a password in a URL) in the printed command line.
    pub fn redact(&mut self, secret: &str) {
        if !secret.is_empty() {
            self.command = self.command.replace(secret, "***");
        }
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    pub fn row(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push((figure.into(), value.into()));
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n", self.title);
        let _ = writeln!(s, "```sh\n{}\n```\n", self.command);
        for n in &self.notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s, "\n| figure | value |\n| --- | --- |");
        for (f, v) in &self.rows {
            let _ = writeln!(s, "| {f} | {v} |");
        }
        s
    }

    /// Print, and append to the results file when asked.
    pub fn emit(&self, out: &OutArgs) -> Result<()> {
        let md = self.markdown();
        println!("\n{md}");
        if let Some(p) = &out.results {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))?;
            writeln!(f, "{md}").with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

/// The reference's full-rebuild timings for 100 MB (shared fixtures).
pub const REFERENCE_REBUILD_100MB: [(StampMix, f64, u64); 3] = [
    (StampMix::None, 4.7, 196),
    (StampMix::Session, 42.8, 255),
    (StampMix::Mixed, 101.0, 834),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=200).map(f64::from).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.n, 200);
        assert_eq!(s.min, 1.0);
        // ceil(0.5 × 200) = 100th value, ceil(0.99 × 200) = 198th.
        assert_eq!(s.p50, 100.0);
        assert_eq!(s.p99, 198.0);
        assert_eq!(s.max, 200.0);
        assert_eq!(s.mean, 100.5);
        let one = Summary::of(&[3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
    }

    #[test]
    fn arguments_are_quoted_for_a_shell() {
        assert_eq!(shell_quote("--size"), "--size");
        assert_eq!(shell_quote("1.5GB"), "1.5GB");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn units() {
        assert_eq!(secs(12.34), "12.3 s");
        assert_eq!(secs(0.0042), "4.200 ms");
        assert_eq!(secs(0.000_012), "12.0 µs");
        assert_eq!(secs(-2.5), "-2.50 s");
        assert_eq!(mb(150_000_000), "150.0 MB");
        assert_eq!(mb(1_500_000_000), "1.50 GB");
        assert_eq!(count(1_234_567), "1,234,567");
    }
}
