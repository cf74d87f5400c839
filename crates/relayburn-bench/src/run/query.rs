//! Query latency: the ledger query and the archive query, by session and
//! by a 7-day window.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use relayburn_ledger::archive::archive_status;
use relayburn_ledger::{Ledger, Query};
use rusqlite::{Connection, OpenFlags};

use super::{count, loadavg, secs, BenchHome, HomeArgs, OutArgs, Section, Summary};

#[derive(Args, Debug)]
pub struct QueryArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Runs of each ledger query (each reads the whole ledger).
    #[arg(long, default_value_t = 5)]
    pub ledger_reps: usize,
    /// Runs of each archive query by session.
    #[arg(long, default_value_t = 300)]
    pub archive_reps: usize,
    /// Runs of the archive query over the window.
    #[arg(long, default_value_t = 20)]
    pub window_reps: usize,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Time `f` `n` times; returns the samples and the last result count.
fn time_n(n: usize, mut f: impl FnMut() -> Result<usize>) -> Result<(Vec<f64>, usize)> {
    let mut samples = Vec::with_capacity(n);
    let mut last = 0;
    for _ in 0..n.max(1) {
        let t = Instant::now();
        last = f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok((samples, last))
}

pub fn run_query(a: QueryArgs) -> Result<()> {
    let home = BenchHome::prepare(&a.home)?;
    let lh = home.ledger_home();
    let ledger = Ledger::open(lh.clone())?;
    let mut s = Section::new("Query latency");
    s.note(home.describe(&a.home));
    let status = archive_status(&lh)?;
    if !status.exists || !status.up_to_date || status.row_counts.turns == 0 {
        eprintln!("building the archive …");
        let t = Instant::now();
        ledger.rebuild_archive()?;
        s.note(format!(
            "archive rebuilt first ({:.1} s)",
            t.elapsed().as_secs_f64()
        ));
    }

    let conn = Connection::open_with_flags(lh.archive(), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .context("opening the archive")?;
    let mut sessions: Vec<(String, i64)> = conn
        .prepare(
            "SELECT session_id, turn_count FROM sessions ORDER BY turn_count DESC, session_id",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let (since, until): (String, String) = conn.query_row(
        "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', (julianday(MIN(ts)) + julianday(MAX(ts))) / 2 - 3.5),
                strftime('%Y-%m-%dT%H:%M:%fZ', (julianday(MIN(ts)) + julianday(MAX(ts))) / 2 + 3.5)
         FROM turns",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    drop(conn);
    if sessions.is_empty() {
        anyhow::bail!("the archive has no sessions");
    }
    let largest = sessions[0].clone();
    let median = sessions.swap_remove(sessions.len() / 2);
    s.note(format!(
        "sessions: the largest ({} turns) and the median one ({} turns) of {}; window: {since} to {until} (7 days around the middle of the history)",
        largest.1,
        median.1,
        count(status.row_counts.sessions)
    ));

    let by_session = |sid: &str| Query {
        session_id: Some(sid.to_string()),
        ..Query::default()
    };
    let window = Query {
        since: Some(since.clone()),
        until: Some(until.clone()),
        ..Query::default()
    };
    let ledger_count = |q: &Query| -> Result<usize> {
        let mut n = 0;
        for t in ledger.query_turns(q)? {
            t?;
            n += 1;
        }
        Ok(n)
    };
    let archive_count =
        |q: &Query| -> Result<usize> { Ok(ledger.query_turns_from_archive(q)?.len()) };

    let mut goal = None;
    let cases: [(&str, &Query, bool, usize); 5] = [
        (
            "ledger query, largest session",
            &by_session(&largest.0),
            false,
            a.ledger_reps,
        ),
        ("ledger query, 7-day window", &window, false, a.ledger_reps),
        (
            "archive query, largest session",
            &by_session(&largest.0),
            true,
            a.archive_reps,
        ),
        (
            "archive query, median session",
            &by_session(&median.0),
            true,
            a.archive_reps,
        ),
        ("archive query, 7-day window", &window, true, a.window_reps),
    ];
    for (label, q, from_archive, reps) in cases {
        eprintln!("{label} ×{reps} …");
        let load = loadavg();
        let (samples, n) = if from_archive {
            time_n(reps, || archive_count(q))?
        } else {
            time_n(reps, || ledger_count(q))?
        };
        let sum = Summary::of(&samples);
        if label == "archive query, largest session" {
            goal = Some(sum.p99);
        }
        s.row(
            label,
            format!(
                "{} turns · {} · load average before: {load}",
                count(n as u64),
                sum.line()
            ),
        );
    }
    if let Some(p99) = goal {
        s.row(
            "goal: archive query by session ≤ 5 ms p99",
            format!(
                "{} for the largest session (p99 {})",
                if p99 <= 0.005 { "met" } else { "not met" },
                secs(p99)
            ),
        );
    }
    s.emit(&a.out)
}
