//! A deterministic generator of realistic ledger homes.
//!
//! Benchmarks need ledgers of a given size whose line mix, line sizes and
//! record shapes look like those real session logs produce, and which are
//! identical for the same arguments so that timings can be compared. The
//! generator simulates concurrent sessions of Claude Code, Codex and
//! OpenCode, writes their records through the library's JSON serialiser,
//! and writes the index sidecars an index rebuild would produce.

mod emit;
mod ids;
mod session;
mod vocab;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::fs;
use std::path::Path;

use rand::{RngExt, SeedableRng};
use relayburn_ledger::error::IoContext;
use relayburn_ledger::home::{is_valid_session_id, LedgerHome};
use relayburn_ledger::records::Kind;
use relayburn_ledger::{Error, Result};

pub use emit::{KindStats, DUPLICATE_TURN_RATE};
use ids::{Golden, Rng, STEPS};
use session::Session;

/// Which stamp lines the ledger carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StampMix {
    /// No stamp lines.
    None,
    /// Exactly one `sessionId` stamp per session.
    Session,
    /// Every selector shape: sessionId, messageId, range, sessionId+range.
    Mixed,
}

/// How sessions' lines follow each other in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Order {
    /// Concurrent sessions, a few lines at a time, as live ingest appends.
    #[default]
    Interleaved,
    /// Each session whole, then its subagent sessions, as a bulk import
    /// of session files writes them.
    Sequential,
}

/// The shape of a ledger beyond its size. `None` keeps the realistic
/// profile's value (about 780 sessions per 100 MB, 5 % of turns in
/// subagent sessions, 0.85 tool calls per turn); other values let a
/// benchmark check that a figure does not depend on one shape.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Shape {
    pub order: Order,
    /// Sessions (top-level and subagent) per 100 MB of ledger.
    pub sessions_per_100mb: Option<f64>,
    /// Share of turns written by subagent sessions (a `subagent` block).
    pub subagent_share: Option<f64>,
    /// Mean tool calls per turn.
    pub calls_per_turn: Option<f64>,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<f64>| v.map_or("default".to_string(), |v| format!("{v}"));
        write!(
            f,
            "order {:?}, sessions/100 MB {}, subagent share {}, calls/turn {}",
            self.order,
            opt(self.sessions_per_100mb),
            opt(self.subagent_share),
            opt(self.calls_per_turn)
        )
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Size of the ledger without its stamp lines (which add ~0.2 %).
    pub target_bytes: u64,
    pub seed: u64,
    pub stamps: StampMix,
    pub shape: Shape,
    /// Replace the ledger files of an existing home.
    pub overwrite: bool,
}

/// Sessions per 100 MB, share of subagent turns and tool calls per turn
/// of the default shape (measured on a 100 MB ledger, seed 1).
const BASE_SESSIONS_PER_100MB: f64 = 782.0;
const BASE_SUBAGENT_SHARE: f64 = 0.05;
const BASE_CALLS_PER_TURN: f64 = 0.853;

/// 2025-06-02T00:00:00Z: the generated history starts here.
const HISTORY_START_MS: i64 = 1_748_822_400_000;
/// Sessions arrive over about four months.
const HISTORY_SPAN_MS: i64 = 120 * 86_400_000;
/// Ledger bytes one top-level session brings on average, subagent runs
/// included; spreads arrivals so that any size spans the whole history.
const BYTES_PER_MAIN_SESSION: f64 = 175_000.0;

/// State shared by all sessions of one run.
pub(crate) struct World {
    pub rng: Rng,
    pub seed: u64,
    pub stamps: StampMix,
    pub compaction_acc: f64,
    pub spawn_acc: f64,
    pub main_lengths: Golden,
    pub child_lengths: Golden,
    pub sources: Golden,
    pub fidelities: Golden,
    /// Recent top-level session ids per source, for continuations and forks.
    pub recent: [Vec<String>; 3],
    serial: u64,
    /// Multiplies the mean session lengths (fewer, longer sessions above 1).
    pub length_scale: f64,
    /// Share of spawning tool calls whose subagent run becomes a session.
    pub spawn_rate: f64,
    /// Share of turns that call tools, and the factor on their call count.
    pub p_tool_turn: f64,
    pub calls_scale: f64,
    pub subagent_turns: u64,
}

impl World {
    /// Turn the shape's targets into the simulation's rates, relative to
    /// the default shape's measured figures.
    fn apply_shape(&mut self, shape: &Shape) {
        if let Some(n) = shape.sessions_per_100mb {
            self.length_scale = BASE_SESSIONS_PER_100MB / n.max(1.0);
        }
        let mut calls_factor = 1.0;
        if let Some(c) = shape.calls_per_turn {
            calls_factor = c.max(0.0) / BASE_CALLS_PER_TURN;
            self.p_tool_turn = (session::P_TOOL_TURN * calls_factor).min(1.0);
            self.calls_scale = calls_factor / (self.p_tool_turn / session::P_TOOL_TURN).max(1e-9);
        }
        if let Some(share) = shape.subagent_share {
            // Subagent turns per top-level turn grow with the spawn rate.
            let ratio = |s: f64| s.clamp(0.0, 0.95) / (1.0 - s.clamp(0.0, 0.95));
            self.spawn_rate = (session::P_SPAWN_SESSION * ratio(share)
                / ratio(BASE_SUBAGENT_SHARE)
                / calls_factor.max(1e-9))
            .min(1.0);
        }
    }

    fn next_serial(&mut self) -> u64 {
        let s = self.serial;
        self.serial += 1;
        s
    }
}

/// One row of the realistic-ledger profile (per 100 MB of ledger).
#[derive(Debug, Clone, Copy)]
pub struct KindProfile {
    pub kind: Kind,
    pub per_100mb_min: f64,
    pub per_100mb_max: f64,
    pub mean_bytes: f64,
}

/// The profile of a realistic ledger: a 100 MB ledger holds about 75,000
/// turns, 64,000 tool-result events, 35,000 user turns, 800 relationships,
/// 700 compactions and 1,000–1,300 stamps.
pub const PROFILE: [KindProfile; 6] = [
    KindProfile {
        kind: Kind::Turn,
        per_100mb_min: 75_000.0,
        per_100mb_max: 75_000.0,
        mean_bytes: 900.0,
    },
    KindProfile {
        kind: Kind::ToolResultEvent,
        per_100mb_min: 64_000.0,
        per_100mb_max: 64_000.0,
        mean_bytes: 360.0,
    },
    KindProfile {
        kind: Kind::UserTurn,
        per_100mb_min: 35_000.0,
        per_100mb_max: 35_000.0,
        mean_bytes: 430.0,
    },
    KindProfile {
        kind: Kind::Relationship,
        per_100mb_min: 800.0,
        per_100mb_max: 800.0,
        mean_bytes: 200.0,
    },
    KindProfile {
        kind: Kind::Compaction,
        per_100mb_min: 700.0,
        per_100mb_max: 700.0,
        mean_bytes: 190.0,
    },
    KindProfile {
        kind: Kind::Stamp,
        per_100mb_min: 1_000.0,
        per_100mb_max: 1_300.0,
        mean_bytes: 190.0,
    },
];

/// How one line kind of a generated ledger compares with the profile.
#[derive(Debug, Clone, Copy)]
pub struct KindMix {
    pub profile: KindProfile,
    pub stats: KindStats,
    pub per_100mb: f64,
    pub mean_bytes: f64,
    /// Relative distance of `per_100mb` from the profile's range (0 inside).
    pub count_dev: f64,
    pub bytes_dev: f64,
}

/// What a run wrote.
#[derive(Debug, Clone)]
pub struct GenReport {
    pub options: GenOptions,
    pub total_bytes: u64,
    pub stats: [KindStats; 6],
    pub duplicate_turns: u64,
    pub main_sessions: u64,
    pub subagent_sessions: u64,
    /// Turns written by subagent sessions.
    pub subagent_turns: u64,
    pub content_files: u64,
    pub content_lines: u64,
    pub ids: usize,
    pub fingerprints: usize,
}

impl GenReport {
    pub fn stats_of(&self, kind: Kind) -> KindStats {
        self.stats[emit::slot(kind)]
    }

    /// The line mix against [`PROFILE`].
    pub fn mix(&self) -> Vec<KindMix> {
        let scale = 100e6 / self.total_bytes.max(1) as f64;
        PROFILE
            .iter()
            .map(|p| {
                let stats = self.stats_of(p.kind);
                let per_100mb = stats.lines as f64 * scale;
                let mean_bytes = if stats.lines == 0 {
                    0.0
                } else {
                    stats.bytes as f64 / stats.lines as f64
                };
                let count_dev = if per_100mb < p.per_100mb_min {
                    per_100mb / p.per_100mb_min - 1.0
                } else if per_100mb > p.per_100mb_max {
                    per_100mb / p.per_100mb_max - 1.0
                } else {
                    0.0
                };
                KindMix {
                    profile: *p,
                    stats,
                    per_100mb,
                    mean_bytes,
                    count_dev,
                    bytes_dev: mean_bytes / p.mean_bytes - 1.0,
                }
            })
            .collect()
    }
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

impl fmt::Display for GenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:>10} {:>8} {:>11} {:>15} {:>8} {:>8} {:>8}",
            "kind", "lines", "mean B", "per 100 MB", "profile", "prof B", "Δ count", "Δ bytes"
        )?;
        for m in self.mix() {
            let p = m.profile;
            let range = if p.per_100mb_min == p.per_100mb_max {
                thousands(p.per_100mb_min)
            } else {
                format!(
                    "{}–{}",
                    thousands(p.per_100mb_min),
                    thousands(p.per_100mb_max)
                )
            };
            writeln!(
                f,
                "{:<18} {:>10} {:>8.0} {:>11} {:>15} {:>8.0} {:>+7.1}% {:>+7.1}%",
                p.kind.as_str(),
                thousands(m.stats.lines as f64),
                m.mean_bytes,
                thousands(m.per_100mb),
                range,
                p.mean_bytes,
                m.count_dev * 100.0,
                m.bytes_dev * 100.0
            )?;
        }
        if self.options.stamps != StampMix::Mixed {
            writeln!(
                f,
                "(the stamp profile describes --stamps mixed; this run used {:?})",
                self.options.stamps
            )?;
        }
        let turns = self.stats_of(Kind::Turn).lines.max(1);
        writeln!(
            f,
            "duplicate turn lines: {} ({:.2} %)",
            thousands(self.duplicate_turns as f64),
            self.duplicate_turns as f64 * 100.0 / turns as f64
        )?;
        let sessions = (self.main_sessions + self.subagent_sessions) as f64;
        let turns_f = self.stats_of(Kind::Turn).lines as f64;
        let calls = self.stats_of(Kind::ToolResultEvent).lines as f64;
        writeln!(
            f,
            "sessions: {} top-level + {} subagent ({:.0} per 100 MB); content sidecars: {} files, {} lines",
            thousands(self.main_sessions as f64),
            thousands(self.subagent_sessions as f64),
            sessions * 100e6 / self.total_bytes.max(1) as f64,
            self.content_files,
            thousands(self.content_lines as f64)
        )?;
        writeln!(
            f,
            "shape: {}; subagent turns {:.1} %; tool-result events per turn {:.2}",
            self.options.shape,
            self.subagent_turns as f64 * 100.0 / turns_f.max(1.0),
            calls / turns_f.max(1.0)
        )?;
        write!(
            f,
            "ledger.jsonl: {} bytes; ledger.idx: {} ids; ledger.content.idx: {} of {} fingerprints",
            thousands(self.total_bytes as f64),
            thousands(self.ids as f64),
            thousands(
                self.fingerprints
                    .min(relayburn_ledger::index::CONTENT_WINDOW) as f64
            ),
            thousands(self.fingerprints as f64)
        )
    }
}

/// Parse a size such as `150MB`, `1.5GB`, `200MiB` or `4096` (bytes).
/// Decimal units are powers of 1000, binary ones powers of 1024.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(
            "size",
            format!("invalid size {text:?} (try 150MB, 1.5GB, 200MiB)"),
        )
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (n * mult).round();
    if !(1.0..=1e15).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// Write a generated home under `home`: `ledger.jsonl`, `ledger.idx`,
/// `ledger.content.idx` and a few `content/<sessionId>.jsonl` sidecars.
pub fn generate(home: &Path, opts: &GenOptions) -> Result<GenReport> {
    let home = LedgerHome::new(home);
    fs::create_dir_all(home.root()).ctx("create directory", home.root())?;
    prepare(&home, opts.overwrite)?;

    let mut world = World {
        rng: Rng::seed_from_u64(opts.seed),
        seed: opts.seed,
        stamps: opts.stamps,
        compaction_acc: 0.0,
        spawn_acc: 0.0,
        main_lengths: Golden::new(0.0, STEPS[0]),
        child_lengths: Golden::new(0.0, STEPS[1]),
        sources: Golden::new(0.0, STEPS[2]),
        fidelities: Golden::new(0.0, STEPS[3]),
        recent: Default::default(),
        serial: 0,
        length_scale: 1.0,
        spawn_rate: session::P_SPAWN_SESSION,
        p_tool_turn: session::P_TOOL_TURN,
        calls_scale: 1.0,
        subagent_turns: 0,
    };
    world.apply_shape(&opts.shape);
    world.main_lengths = Golden::new(world.rng.random(), STEPS[0]);
    world.child_lengths = Golden::new(world.rng.random(), STEPS[1]);
    world.sources = Golden::new(world.rng.random(), STEPS[2]);
    world.fidelities = Golden::new(world.rng.random(), STEPS[3]);
    let expected_sessions =
        (opts.target_bytes as f64 / (BYTES_PER_MAIN_SESSION * world.length_scale)).max(1.0);
    let mean_gap = HISTORY_SPAN_MS as f64 / expected_sessions;

    let mut em = emit::Emitter::create(&home.ledger())?;
    let mut report = GenReport {
        options: opts.clone(),
        total_bytes: 0,
        stats: Default::default(),
        duplicate_turns: 0,
        main_sessions: 0,
        subagent_sessions: 0,
        subagent_turns: 0,
        content_files: 0,
        content_lines: 0,
        ids: 0,
        fingerprints: 0,
    };

    if opts.shape.order == Order::Sequential {
        sequential(&home, opts, &mut world, &mut em, &mut report, mean_gap)?;
    } else {
        interleaved(&home, opts, &mut world, &mut em, &mut report, mean_gap)?;
    }
    report.subagent_turns = world.subagent_turns;
    report.stats = em.stats();
    report.duplicate_turns = em.duplicates;
    report.ids = em.id_count();
    report.fingerprints = em.fingerprint_count();
    report.total_bytes = report.stats.iter().map(|s| s.bytes).sum();
    em.finish(&home.ledger_index(), &home.ledger_content_index())?;
    Ok(report)
}

/// A discrete-event simulation: the session whose next turn is earliest
/// writes a small batch, as incremental ingest appends it.
fn interleaved(
    home: &LedgerHome,
    opts: &GenOptions,
    world: &mut World,
    em: &mut emit::Emitter,
    report: &mut GenReport,
    mean_gap: f64,
) -> Result<()> {
    let mut pool = Pool::default();
    let mut next_arrival = HISTORY_START_MS;
    while em.budget_bytes < opts.target_bytes {
        if pool.earliest().is_none_or(|t| next_arrival <= t) {
            let s = Session::new_main(world, next_arrival);
            report.main_sessions += 1;
            let u: f64 = world.rng.random();
            next_arrival += (-(1.0 - u).ln() * mean_gap).max(1_000.0) as i64;
            pool.park(s);
            continue;
        }
        let Some(mut s) = pool.pop() else {
            break;
        };
        let batch = world.rng.random_range(1..=4);
        for _ in 0..batch {
            if s.done() || em.budget_bytes >= opts.target_bytes {
                break;
            }
            for child in s.step(world, em)? {
                report.subagent_sessions += 1;
                pool.park(child);
            }
        }
        if s.done() {
            finish_session(home, &mut s, report)?;
        } else {
            pool.park(s);
        }
    }
    for s in pool.active.iter_mut().flatten() {
        finish_session(home, s, report)?;
    }

    Ok(())
}

/// Sessions written whole, one after another; a session's subagent
/// sessions follow it.
fn sequential(
    home: &LedgerHome,
    opts: &GenOptions,
    world: &mut World,
    em: &mut emit::Emitter,
    report: &mut GenReport,
    mean_gap: f64,
) -> Result<()> {
    let mut next_arrival = HISTORY_START_MS;
    let mut queue: std::collections::VecDeque<Session> = Default::default();
    while em.budget_bytes < opts.target_bytes {
        let mut s = match queue.pop_front() {
            Some(s) => s,
            None => {
                let s = Session::new_main(world, next_arrival);
                report.main_sessions += 1;
                let u: f64 = world.rng.random();
                next_arrival += (-(1.0 - u).ln() * mean_gap).max(1_000.0) as i64;
                s
            }
        };
        while !s.done() && em.budget_bytes < opts.target_bytes {
            for child in s.step(world, em)? {
                report.subagent_sessions += 1;
                queue.push_back(child);
            }
        }
        finish_session(home, &mut s, report)?;
    }
    for s in queue.iter_mut() {
        finish_session(home, s, report)?;
    }
    Ok(())
}

/// Sessions in progress, ordered by the time of their next turn (ties by
/// creation order, so the run is deterministic).
#[derive(Default)]
struct Pool {
    active: Vec<Option<Session>>,
    free: Vec<usize>,
    queue: BinaryHeap<Reverse<(i64, u64, usize)>>,
}

impl Pool {
    fn earliest(&self) -> Option<i64> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    fn park(&mut self, s: Session) {
        let key = (s.clock, s.serial);
        let slot = match self.free.pop() {
            Some(i) => {
                self.active[i] = Some(s);
                i
            }
            None => {
                self.active.push(Some(s));
                self.active.len() - 1
            }
        };
        self.queue.push(Reverse((key.0, key.1, slot)));
    }

    fn pop(&mut self) -> Option<Session> {
        let Reverse((_, _, slot)) = self.queue.pop()?;
        self.free.push(slot);
        self.active[slot].take()
    }
}

/// Refuse to mix generated data into an existing ledger unless asked to
/// replace it; replacing also drops derived files that would be stale.
fn prepare(home: &LedgerHome, overwrite: bool) -> Result<()> {
    let ledger = home.ledger();
    if ledger.exists() && !overwrite {
        return Err(Error::invalid(
            "home",
            format!(
                "{} already exists; pass --force to replace the generated files",
                ledger.display()
            ),
        ));
    }
    for p in [
        ledger,
        home.ledger_index(),
        home.ledger_content_index(),
        home.archive(),
        home.root().join("archive.sqlite-wal"),
        home.root().join("archive.sqlite-shm"),
    ] {
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io("remove", p, e));
            }
            _ => {}
        }
    }
    let content = home.content_dir();
    if content.exists() {
        fs::remove_dir_all(&content).ctx("remove", &content)?;
    }
    Ok(())
}

fn finish_session(home: &LedgerHome, s: &mut Session, report: &mut GenReport) -> Result<()> {
    let Some((text, lines)) = s.take_content() else {
        return Ok(());
    };
    if !is_valid_session_id(&s.id) {
        return Ok(());
    }
    let dir = home.content_dir();
    fs::create_dir_all(&dir).ctx("create directory", &dir)?;
    let path = home.content_file(&s.id)?;
    fs::write(&path, text).ctx("write", &path)?;
    report.content_files += 1;
    report.content_lines += lines;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("150MB").unwrap(), 150_000_000);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("500mb").unwrap(), 500_000_000);
        assert_eq!(parse_size("200MiB").unwrap(), 200 * 1024 * 1024);
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("64KiB").unwrap(), 65_536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 5 MB ").unwrap(), 5_000_000);
        for bad in ["", "MB", "abc", "-5MB", "1.5XB", "0", "1.2.3MB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }
}
