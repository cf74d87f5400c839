//! A query over every turn, as `burn query turns` runs it: time to the
//! first row, total time and peak memory, from the archive and from the
//! ledger, each in a child process so the peak is the query's alone.

use anyhow::Result;
use clap::Args;
use relayburn_ledger::archive::archive_status;
use relayburn_ledger::Ledger;

use super::child::run_child;
use super::{count, loadavg, mib, secs, BenchHome, HomeArgs, OutArgs, Section};

#[derive(Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Runs of each query.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[command(flatten)]
    pub out: OutArgs,
}

pub fn run_stream(a: StreamArgs) -> Result<()> {
    let home = BenchHome::prepare(&a.home)?;
    let lh = home.ledger_home();
    let mut s = Section::new("Whole-history turn query: first row and peak memory");
    s.note(home.describe(&a.home));
    let status = archive_status(&lh)?;
    if !status.up_to_date {
        eprintln!("building the archive …");
        Ledger::open(lh.clone())?.rebuild_archive()?;
    }
    s.note("every turn, serialised to JSON Lines and written to /dev/null, in a child process; best of the runs");
    let mut first = [f64::MAX; 2];
    let mut rss = [u64::MAX; 2];
    for (i, from) in ["archive", "ledger"].into_iter().enumerate() {
        let load = loadavg();
        let mut best = (f64::MAX, f64::MAX, u64::MAX, 0u64);
        for _ in 0..a.reps.max(1) {
            eprintln!("{from} query …");
            let o = run_child(&[
                "stream".into(),
                "--home".into(),
                home.path.display().to_string(),
                "--from".into(),
                from.into(),
            ])?;
            best.0 = best.0.min(o.f64("first_row")?);
            best.1 = best.1.min(o.f64("secs")?);
            best.2 = best.2.min(o.max_rss);
            best.3 = o.u64("rows")?;
        }
        first[i] = best.0;
        rss[i] = best.2;
        s.row(
            format!("{from}: first row / all rows / peak RSS"),
            format!(
                "{} / {} / {} · {} turns · load average before: {load}",
                secs(best.0),
                secs(best.1),
                mib(best.2),
                count(best.3)
            ),
        );
    }
    let met = first[0] <= 0.050 && rss[0] <= 64 << 20;
    s.row(
        "goal: archive query first row ≤ 50 ms, peak RSS ≤ 64 MiB",
        format!(
            "{} (first row {}, peak {})",
            if met { "met" } else { "not met" },
            secs(first[0]),
            mib(rss[0])
        ),
    );
    s.emit(&a.out)
}
