//! Full rebuild over a matrix of ledger shapes, each beside its own
//! SQLite floor, so that a ratio tuned to one shape shows up.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::rebuild::{floor_once, rebuild_once, work_dir};
use super::{generate, loadavg, mb, mib, parse_size, secs, OutArgs, Section};
use crate::gen::{Order, Shape, StampMix};

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// Ledger size of every shape.
    #[arg(long, value_parser = parse_size, default_value = "150MB")]
    pub size: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rebuilds per shape; the fastest counts.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Only these shapes of the matrix (names as printed), default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Directory for the generated homes (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Use a home already generated in the work directory for a shape.
    #[arg(long)]
    pub reuse: bool,
    /// Skip the SQLite floor.
    #[arg(long)]
    pub no_floor: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// The shapes: the default profile, then layouts and mixes that move the
/// rebuild's costs (session count per byte, sequential writing, subagent
/// share, tool calls per turn).
pub fn shapes() -> Vec<(&'static str, Shape)> {
    let s = |order, n, share, calls| Shape {
        order,
        sessions_per_100mb: n,
        subagent_share: share,
        calls_per_turn: calls,
    };
    use Order::{Interleaved as I, Sequential as S};
    vec![
        ("default", s(I, None, None, None)),
        ("seq-1250-sub15", s(S, Some(1250.0), Some(0.15), None)),
        ("seq-500", s(S, Some(500.0), None, None)),
        ("int-2000", s(I, Some(2000.0), None, None)),
        ("seq-2000-sub30", s(S, Some(2000.0), Some(0.3), None)),
        ("int-calls2.5", s(I, None, None, Some(2.5))),
        ("seq-calls0.3", s(S, None, None, Some(0.3))),
    ]
}

pub fn run_matrix(a: MatrixArgs) -> Result<()> {
    let (dir, _temp) = work_dir(&a.work_dir)?;
    let mut s = Section::new("Full rebuild over ledger shapes");
    s.note(format!(
        "every shape generated at {} with seed {}, no stamps; the floor is measured on each shape's own rows in the same run",
        mb(a.size),
        a.seed
    ));
    let mut worst: Option<(&str, f64)> = None;
    for (name, shape) in shapes() {
        if !a.only.is_empty() && !a.only.iter().any(|o| o == name) {
            continue;
        }
        let home = dir.join(format!("shape-{name}-{}", a.size));
        let mut described = String::new();
        if !(a.reuse && home.join("ledger.jsonl").exists()) {
            let (r, _) = generate(&home, a.size, a.seed, StampMix::None, shape)?;
            let turns = r.stats_of(relayburn_ledger::Kind::Turn).lines.max(1) as f64;
            described = format!(
                "{:.0} sessions/100 MB, {:.1} % subagent turns, {:.2} events/turn",
                (r.main_sessions + r.subagent_sessions) as f64 * 1e8 / r.total_bytes as f64,
                r.subagent_turns as f64 * 100.0 / turns,
                r.stats_of(relayburn_ledger::Kind::ToolResultEvent).lines as f64 / turns
            );
        }
        let mut best = None;
        let mut all = Vec::new();
        for _ in 0..a.reps.max(1) {
            eprintln!("matrix {name}: rebuild …");
            let r = rebuild_once(&home)?;
            all.push(secs(r.secs));
            if best
                .as_ref()
                .is_none_or(|b: &super::rebuild::RebuildRun| r.secs < b.secs)
            {
                best = Some(r);
            }
        }
        let Some(b) = best else { continue };
        let floor = if a.no_floor {
            String::from("floor skipped")
        } else {
            eprintln!("matrix {name}: floor …");
            let load = loadavg();
            let f = floor_once(&home, None, Default::default())?;
            let total = f.f64("total")?;
            let ratio = b.secs / total;
            if worst.is_none_or(|(_, w)| ratio > w) {
                worst = Some((name, ratio));
            }
            format!(
                "floor {} (load {load}; inserts {} · indexes {} · sessions {} · commit {}) → **{ratio:.2}×** the floor",
                secs(total),
                secs(f.f64("inserts")?),
                secs(f.f64("indexes")?),
                secs(f.f64("session_rows")?),
                secs(f.f64("commit")?),
            )
        };
        s.row(
            format!("{name} ({shape})"),
            format!(
                "{described}{}rebuild {} (CPU {}; runs {}; load {}) · {:.1} s/GB · peak RSS {} · {floor}",
                if described.is_empty() { "" } else { " · " },
                secs(b.secs),
                secs(b.cpu),
                all.join(", "),
                b.load,
                b.secs / (b.ledger_bytes as f64 / 1e9),
                mib(b.max_rss),
            ),
        );
    }
    if let Some((name, r)) = worst {
        s.row(
            "worst rebuild / floor",
            format!("{name}: {r:.2}× (goal ≤ 1.15×)"),
        );
    }
    s.emit(&a.out)
}
