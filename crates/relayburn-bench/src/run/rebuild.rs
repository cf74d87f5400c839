//! Full rebuild: one home, stamp variants, and scaling with size.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use relayburn_ledger::archive::archive_status;
use relayburn_ledger::LedgerHome;

use super::child::{run_child, ChildOutcome};
use super::{
    count, generate, loadavg, mb, mib, parse_size, secs, BenchHome, HomeArgs, OutArgs, Section,
    REFERENCE_REBUILD_100MB,
};
use crate::gen::StampMix;

#[derive(Args, Debug)]
pub struct RebuildArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Rebuilds to time, each in a new child process.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Skip the SQLite floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Also run the floor with these page cache sizes (KiB), to see what
    /// the rebuild's 384 MiB cap costs.
    #[arg(long, value_delimiter = ',')]
    pub floor_cache_kib: Vec<i64>,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct StampsArgs {
    /// Ledger size (without stamp lines) of every variant.
    #[arg(long, value_parser = parse_size, default_value = "1.5GB")]
    pub size: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The variants, compared with the first.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,session,mixed"
    )]
    pub mixes: Vec<StampMix>,
    /// Rebuilds per variant.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Directory for the generated homes (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the generated homes.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

#[derive(Args, Debug)]
pub struct ScalingArgs {
    #[arg(long, value_parser = parse_size, value_delimiter = ',', default_value = "150MB,500MB,1.5GB")]
    pub sizes: Vec<u64>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = StampMix::None)]
    pub stamps: StampMix,
    /// Rebuilds per size; the fastest counts.
    #[arg(long, default_value_t = 1)]
    pub reps: usize,
    /// Directory for the generated homes (default: a temporary one).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Keep the generated homes.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub out: OutArgs,
}

/// One timed rebuild.
#[derive(Debug, Clone)]
pub struct RebuildRun {
    pub secs: f64,
    pub max_rss: u64,
    pub ledger_bytes: u64,
    pub records: u64,
    pub rows: u64,
    pub load: String,
    pub outcome_turns: u64,
    pub stamps: u64,
    /// Time spent waiting for another process's archive lock (not timed).
    pub lock_wait: f64,
    /// CPU seconds of the whole child (its setup included).
    pub cpu: f64,
}

/// Rebuild `home` in a child process and count what it wrote.
pub fn rebuild_once(home: &Path) -> Result<RebuildRun> {
    let load = loadavg();
    let o = run_child(&[
        "rebuild".into(),
        "--home".into(),
        home.display().to_string(),
    ])?;
    let status = archive_status(&LedgerHome::new(home)).context("reading archive status")?;
    let c = &status.row_counts;
    let stamps = o.u64("stamps")?;
    let records = o.u64("turns")? + o.u64("compactions")? + o.u64("tool_result_events")? + stamps;
    Ok(RebuildRun {
        secs: o.f64("secs")?,
        max_rss: o.max_rss,
        ledger_bytes: std::fs::metadata(home.join("ledger.jsonl"))?.len(),
        records,
        rows: c.sessions + c.turns + c.tool_calls + c.tool_result_events + c.compactions + stamps,
        load,
        outcome_turns: o.u64("turns")?,
        stamps,
        lock_wait: o.f64("lock_wait").unwrap_or(0.0),
        cpu: o.cpu,
    })
}

fn add_run_rows(s: &mut Section, label: &str, r: &RebuildRun) {
    let waited = if r.lock_wait > 0.001 {
        format!(
            "; waited {} for another process's archive lock first, not counted",
            secs(r.lock_wait)
        )
    } else {
        String::new()
    };
    s.row(
        format!("{label}wall (rebuild_archive call)"),
        format!("{} (load average before: {}{waited})", secs(r.secs), r.load),
    );
    s.row(
        format!("{label}throughput"),
        format!(
            "{:.1} MB/s · {} records/s · {} archive rows/s",
            r.ledger_bytes as f64 / 1e6 / r.secs,
            count((r.records as f64 / r.secs) as u64),
            count((r.rows as f64 / r.secs) as u64)
        ),
    );
    s.row(
        format!("{label}peak RSS (child, wait4 ru_maxrss)"),
        mib(r.max_rss),
    );
}

fn reference_row(s: &mut Section, mix: StampMix, r: &RebuildRun) {
    if let Some((_, ref_secs, ref_rss)) = REFERENCE_REBUILD_100MB.iter().find(|x| x.0 == mix) {
        let per_100 = r.secs / (r.ledger_bytes as f64 / 1e8);
        s.row(
            "per 100 MB, beside the reference (Node, 100 MB)",
            format!(
                "{} per 100 MB here vs {ref_secs} s and {ref_rss} MB peak RSS for the reference with stamps {mix:?}",
                secs(per_100)
            ),
        );
    }
}

pub fn run_rebuild(a: RebuildArgs) -> Result<()> {
    let home = BenchHome::prepare(&a.home)?;
    let mut s = Section::new("Full rebuild");
    s.note(home.describe(&a.home));
    s.note("ledger read from the page cache (warm); each rebuild runs in a new child process");
    let mut runs = Vec::new();
    for i in 0..a.reps.max(1) {
        eprintln!("rebuild {} of {} …", i + 1, a.reps.max(1));
        let r = rebuild_once(&home.path)?;
        add_run_rows(
            &mut s,
            &if a.reps > 1 {
                format!("run {}: ", i + 1)
            } else {
                String::new()
            },
            &r,
        );
        runs.push(r);
    }
    let best = runs
        .iter()
        .min_by(|x, y| x.secs.total_cmp(&y.secs))
        .cloned()
        .context("no run")?;
    s.row(
        "ledger",
        format!(
            "{} · {} records applied ({} turns, {} stamps) · {} archive rows",
            mb(best.ledger_bytes),
            count(best.records),
            count(best.outcome_turns),
            count(best.stamps),
            count(best.rows)
        ),
    );
    if home.generated.is_some() || a.home.home.is_none() {
        reference_row(&mut s, a.home.stamps, &best);
    }
    if !a.no_floor {
        eprintln!("SQLite floor …");
        let load = loadavg();
        let f = floor_once(&home.path, None, Default::default())?;
        let total = f.f64("total")?;
        s.row(
            "SQLite floor: total (same rows in memory in ledger order, same multi-row statements and pragmas, secondary indexes after the load, one transaction)",
            format!(
                "{} (load average before: {load}) = {:.0} % of the best rebuild ({})",
                secs(total),
                total / best.secs * 100.0,
                secs(best.secs)
            ),
        );
        s.row(
            "SQLite floor: steps",
            format!(
                "setup {} · inserts {} · indexes {} · sessions {} · commit {} · WAL+close+fsync {}",
                secs(f.f64("setup")?),
                secs(f.f64("inserts")?),
                secs(f.f64("indexes")?),
                secs(f.f64("session_rows")?),
                secs(f.f64("commit")?),
                secs(f.f64("finish")?)
            ),
        );
        s.row(
            "SQLite floor: statements",
            format!(
                "{} rows ({} turn upserts, {} tool-call inserts, {} tool-call deletes, {} event upserts, {} compaction upserts, {} stamp inserts, {} session upserts) → {} rows/s",
                count(f.u64("statements")?),
                count(f.u64("turn_statements")?),
                count(f.u64("tool_call_statements")?),
                count(f.u64("tool_call_deletes")?),
                count(f.u64("event_statements")?),
                count(f.u64("compaction_statements")?),
                count(f.u64("stamp_statements")?),
                count(f.u64("sessions")?),
                count((f.f64("statements")? / f.f64("inserts")?.max(1e-9)) as u64),
            ),
        );
        s.row(
            "SQLite floor: time above the floor",
            format!(
                "{} ({:.2}× the floor)",
                secs(best.secs - total),
                best.secs / total
            ),
        );
        eprintln!("SQLite floor, rows sorted by primary key …");
        let load = loadavg();
        let p = floor_once(&home.path, None, crate::floor::FloorOrder::PrimaryKey)?;
        s.row(
            "SQLite floor with rows sorted by primary key (rowids then differ from the reference's)",
            format!(
                "{} (load average before: {load}): inserts {} · indexes {} · sessions {} · commit {} = {:.2}× the ledger-order floor",
                secs(p.f64("total")?),
                secs(p.f64("inserts")?),
                secs(p.f64("indexes")?),
                secs(p.f64("session_rows")?),
                secs(p.f64("commit")?),
                p.f64("total")? / total
            ),
        );
    }
    for &kib in &a.floor_cache_kib {
        eprintln!("SQLite floor with cache_size {kib} KiB …");
        let load = loadavg();
        let f = floor_once(&home.path, Some(kib), Default::default())?;
        s.row(
            format!("SQLite floor with cache_size {} MiB", kib / 1024),
            format!(
                "{} (load average before: {load}): inserts {} · indexes {} · sessions {} · commit {} · peak RSS {}",
                secs(f.f64("total")?),
                secs(f.f64("inserts")?),
                secs(f.f64("indexes")?),
                secs(f.f64("session_rows")?),
                secs(f.f64("commit")?),
                mib(f.max_rss)
            ),
        );
    }
    s.note("reference (Node 22, 100 MB ledger, same machine class): 4.7 s with no stamps, 42.8 s with one sessionId stamp per session, 101 s with mixed selectors");
    s.emit(&a.out)
}

/// Collect the archive's rows and load them into a scratch file in a child.
pub fn floor_once(
    home: &Path,
    cache_kib: Option<i64>,
    order: crate::floor::FloorOrder,
) -> Result<ChildOutcome> {
    let db = home.join("bench-floor.sqlite");
    let mut args = vec![
        "floor".to_string(),
        "--home".into(),
        home.display().to_string(),
        "--db".into(),
        db.display().to_string(),
    ];
    if let Some(kib) = cache_kib {
        args.push("--cache-kib".into());
        args.push(kib.to_string());
    }
    if order == crate::floor::FloorOrder::PrimaryKey {
        args.extend(["--order".into(), "primary-key".into()]);
    }
    let o = run_child(&args);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    o
}

/// A directory for generated homes: the one given, or a temporary one.
pub(crate) fn work_dir(given: &Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match given {
        Some(p) => {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
            Ok((p.clone(), None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("relayburn-bench-")
                .tempdir()
                .context("creating a temporary directory")?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

fn remove_home(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        eprintln!("could not remove {}: {e}", p.display());
    }
}

pub fn run_stamps(a: StampsArgs) -> Result<()> {
    let (dir, _temp) = work_dir(&a.work_dir)?;
    let mut s = Section::new("Full rebuild by stamp mix");
    s.note(format!(
        "every variant generated with size {} and seed {}: the same non-stamp lines, only the stamp lines differ",
        mb(a.size),
        a.seed
    ));
    let mut results: Vec<(StampMix, RebuildRun)> = Vec::new();
    for &mix in &a.mixes {
        let home = dir.join(format!("stamps-{mix:?}").to_lowercase());
        let (report, gen_secs) = generate(&home, a.size, a.seed, mix, Default::default())?;
        s.note(format!(
            "{mix:?}: {} bytes, {} stamp lines (generated in {gen_secs:.1} s)",
            report.total_bytes,
            report.stats_of(relayburn_ledger::Kind::Stamp).lines
        ));
        let mut best: Option<RebuildRun> = None;
        for i in 0..a.reps.max(1) {
            eprintln!("stamps {mix:?}: rebuild {} of {} …", i + 1, a.reps.max(1));
            let r = rebuild_once(&home)?;
            add_run_rows(&mut s, &format!("{mix:?} run {}: ", i + 1), &r);
            if best.as_ref().is_none_or(|b| r.secs < b.secs) {
                best = Some(r);
            }
        }
        if !a.keep {
            remove_home(&home);
        }
        if let Some(b) = best {
            results.push((mix, b));
        }
    }
    if let Some((base_mix, base)) = results.first().cloned() {
        for (mix, r) in &results {
            let ratio = r.secs / base.secs;
            let goal = if *mix == StampMix::Session && base_mix == StampMix::None {
                format!(
                    " — goal ≤ 1.1×: {}",
                    if ratio <= 1.1 { "met" } else { "not met" }
                )
            } else {
                String::new()
            };
            s.row(
                format!("{mix:?}: best wall / {base_mix:?}"),
                format!("{} / {} = {ratio:.3}×{goal}", secs(r.secs), secs(base.secs)),
            );
            reference_row(&mut s, *mix, r);
        }
    }
    s.emit(&a.out)
}

pub fn run_scaling(a: ScalingArgs) -> Result<()> {
    let (dir, _temp) = work_dir(&a.work_dir)?;
    let mut s = Section::new("Full rebuild scaling");
    s.note(format!("seed {}, stamps {:?}", a.seed, a.stamps));
    let mut points: Vec<RebuildRun> = Vec::new();
    for &size in &a.sizes {
        let home = dir.join(format!("scale-{size}"));
        generate(&home, size, a.seed, a.stamps, Default::default())?;
        let mut all = Vec::new();
        for i in 0..a.reps.max(1) {
            eprintln!(
                "scaling: rebuild {} of {} at {} …",
                i + 1,
                a.reps.max(1),
                mb(size)
            );
            all.push(rebuild_once(&home)?);
        }
        let times: Vec<String> = all.iter().map(|r| secs(r.secs)).collect();
        let r = all
            .into_iter()
            .min_by(|x, y| x.secs.total_cmp(&y.secs))
            .context("no run")?;
        s.row(
            mb(r.ledger_bytes),
            format!(
                "{} (runs: {}) · {:.1} MB/s · peak RSS {} · {} records (load average before the fastest: {})",
                secs(r.secs),
                times.join(", "),
                r.ledger_bytes as f64 / 1e6 / r.secs,
                mib(r.max_rss),
                count(r.records),
                r.load
            ),
        );
        if !a.keep {
            remove_home(&home);
        }
        points.push(r);
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        if points.len() > 1 {
            let per_gb = |r: &RebuildRun| r.secs / (r.ledger_bytes as f64 / 1e9);
            let size_ratio = last.ledger_bytes as f64 / first.ledger_bytes as f64;
            let time_ratio = last.secs / first.secs;
            let mem_ratio = last.max_rss as f64 / first.max_rss.max(1) as f64;
            s.row(
                "time per GB, smallest → largest",
                format!(
                    "{} → {} ({:.2}× per byte)",
                    secs(per_gb(first)),
                    secs(per_gb(last)),
                    per_gb(last) / per_gb(first)
                ),
            );
            s.row(
                "growth",
                format!(
                    "size ×{size_ratio:.1}, time ×{time_ratio:.1}, peak RSS ×{mem_ratio:.2}; time {} (linear means ×{size_ratio:.1} ± 20 %)",
                    if (time_ratio / size_ratio - 1.0).abs() <= 0.2 {
                        "grows linearly"
                    } else if time_ratio > size_ratio {
                        "grows faster than linearly"
                    } else {
                        "grows slower than linearly"
                    }
                ),
            );
        }
    }
    s.emit(&a.out)
}
