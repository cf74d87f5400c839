//! The SQLite storage backend (`burn.sqlite`) at scale: appends of
//! 100-turn batches into a store already holding a million turns, and the
//! turn query by session on it.
//!
//! The store is filled through the store's own writer (`append_turns`) with
//! synthetic turns of realistic size (≈ 900 B of JSON, 70 turns per
//! session, three sources), plus a few session stamps so that queries fold
//! stamps as they would on a real store.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use relayburn_ledger::json::{parse, Value};
use relayburn_ledger::store::Store;
use relayburn_ledger::time::iso_from_millis;
use relayburn_ledger::{Query, SqliteStore};

use super::{count, loadavg, mb, secs, OutArgs, Section, Summary};

#[derive(Args, Debug)]
pub struct SqliteStoreArgs {
    /// Store to use; filled up to --turns when it holds fewer (default: a
    /// temporary one).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Turns the store holds before the timed appends.
    #[arg(long, default_value_t = 1_000_000)]
    pub turns: u64,
    /// Turns per session.
    #[arg(long, default_value_t = 70)]
    pub session_turns: u64,
    /// Session stamps written after the fill.
    #[arg(long, default_value_t = 200)]
    pub stamps: u64,
    /// Timed append calls of 100 turns.
    #[arg(long, default_value_t = 300)]
    pub appends: usize,
    /// Timed queries by session.
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub out: OutArgs,
}

const SOURCES: [&str; 3] = ["claude-code", "codex", "opencode"];
const BASE_MS: i64 = 1_760_000_000_000;

fn session_id(n: u64) -> String {
    format!(
        "{:08x}-5e55-4000-8000-{:012x}",
        n as u32,
        n.wrapping_mul(2_654_435_761)
    )
}

/// Turn `i` of the synthetic history: session `i / per_session`.
fn turn(i: u64, per_session: u64, rng: &mut Pcg64Mcg) -> Value {
    let s = i / per_session;
    let source = SOURCES[(s % 3) as usize];
    let ts = iso_from_millis(BASE_MS + i as i64 * 1_000);
    let input: u32 = rng.random_range(1..20_000);
    let output: u32 = rng.random_range(1..4_000);
    let cache: u32 = rng.random_range(0..200_000);
    let args: u64 = rng.random();
    let text = format!(
        r#"{{"v":1,"source":"{source}","sessionId":"{sid}","sessionPath":"/home/dev/.sessions/{sid}.jsonl","messageId":"msg_{i:016x}","turnIndex":{ti},"ts":"{ts}","model":"claude-sonnet-4-5","project":"/home/dev/projects/app-{p}","projectKey":"app-{p}","usage":{{"input":{input},"output":{output},"reasoning":0,"cacheRead":{cache},"cacheCreate5m":{c5},"cacheCreate1h":0}},"toolCalls":[{{"id":"toolu_{i:012x}a","name":"Bash","target":"cargo test --release -p relayburn-ledger","argsHash":"{args:016x}","isError":false}},{{"id":"toolu_{i:012x}b","name":"Read","target":"/home/dev/projects/app-{p}/src/lib.rs","argsHash":"{a2:016x}"}}],"filesTouched":["src/lib.rs","src/store/mod.rs"],"stopReason":"tool_use","activity":"coding","retries":0,"hasEdits":true,"fidelity":{{"granularity":"per-turn","coverage":{{"hasInputTokens":true,"hasOutputTokens":true,"hasReasoningTokens":false,"hasCacheReadTokens":true,"hasCacheCreateTokens":true,"hasToolCalls":true,"hasToolResultEvents":true,"hasSessionRelationships":true,"hasRawContent":false}},"class":"full"}}}}"#,
        sid = session_id(s),
        ti = i % per_session,
        p = s % 40,
        c5 = cache / 7,
        a2 = args.rotate_left(17),
    );
    parse(&text).unwrap_or(Value::Null)
}

/// CPU time this thread has used, in seconds: beside wall time, it shows
/// what a call costs when other work on the machine delays it.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn turns_in(store: &SqliteStore) -> Result<u64> {
    let s = store.status()?;
    Ok(s.rows.iter().find(|r| r.0 == "turns").map_or(0, |r| r.1))
}

pub fn run_sqlite_store(a: SqliteStoreArgs) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("relayburn-bench-sqlite-")
        .tempdir()
        .context("creating a temporary directory")?;
    let path =
        a.db.clone()
            .unwrap_or_else(|| temp.path().join("burn.sqlite"));
    let store = SqliteStore::open(&path)?;
    let s: &dyn Store = &store;
    let mut rng = Pcg64Mcg::seed_from_u64(a.seed);
    let per = a.session_turns.max(1);
    let mut sec = Section::new("SQLite store: appends and session query at scale");

    let have = turns_in(&store)?;
    if have < a.turns {
        eprintln!(
            "filling {} up to {} turns …",
            path.display(),
            count(a.turns)
        );
        let t = Instant::now();
        let mut i = have;
        while i < a.turns {
            let end = (i + 5_000).min(a.turns);
            let batch: Vec<Value> = (i..end).map(|j| turn(j, per, &mut rng)).collect();
            s.append_turns(batch)?;
            i = end;
            if i % 100_000 == 0 {
                eprintln!("  {} turns", count(i));
            }
        }
        let took = t.elapsed().as_secs_f64();
        sec.note(format!(
            "filled from {} to {} turns through `append_turns` (5,000 per call) in {:.1} s ({:.0} turns/s)",
            count(have),
            count(a.turns),
            took,
            (a.turns - have) as f64 / took.max(1e-9)
        ));
        let sessions = a.turns / per;
        for k in 0..a.stamps.min(sessions) {
            let sid = session_id(k * sessions / a.stamps.max(1));
            s.stamp(
                parse(&format!(r#"{{"sessionId":"{sid}"}}"#))?,
                parse(&format!(r#"{{"workflowId":"wf-{k}","persona":"builder"}}"#))?,
            )?;
        }
    }
    let status = store.status()?;
    sec.note(format!(
        "store: {} ({}), {}",
        path.display(),
        mb(status.bytes),
        status
            .rows
            .iter()
            .map(|(t, n)| format!("{} {t}", count(*n)))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // Appends: 100 new turns per call (new ids, new fingerprints), each
    // call one transaction that also reads the 10,000-row window.
    let start = turns_in(&store)?.max(a.turns) + 1_000_000_000;
    let load = loadavg();
    let mut samples = Vec::with_capacity(a.appends);
    let mut cpu = Vec::with_capacity(a.appends);
    for k in 0..a.appends as u64 {
        let batch: Vec<Value> = (0..100)
            .map(|j| turn(start + k * 100 + j, per, &mut rng))
            .collect();
        let (t, c) = (Instant::now(), thread_cpu());
        let added = s.append_turns(batch)?;
        samples.push(t.elapsed().as_secs_f64());
        cpu.push(thread_cpu() - c);
        anyhow::ensure!(added == 100, "call {k} added {added} of 100 turns");
    }
    let app = Summary::of(&samples);
    sec.row(
        "append 100 turns (one call)",
        format!("{} · load average before: {load}", app.line()),
    );
    sec.row(
        "append 100 turns: CPU time of the call",
        Summary::of(&cpu).line(),
    );
    sec.row(
        "append throughput",
        format!("{:.0} turns/s", 100.0 / app.mean.max(1e-12)),
    );

    // Query by session: a random filled session each time, folded with
    // every stamp, collected to the end.
    let sessions = a.turns / per;
    let load = loadavg();
    let mut samples = Vec::with_capacity(a.queries);
    let mut cpu = Vec::with_capacity(a.queries);
    let mut sizes = Vec::new();
    for _ in 0..a.queries {
        let sid = session_id(rng.random_range(0..sessions.max(1)));
        let q = Query {
            session_id: Some(sid),
            ..Query::default()
        };
        let (t, c) = (Instant::now(), thread_cpu());
        let n = s
            .query_turns(&q)?
            .try_fold(0usize, |n, r| r.map(|_| n + 1))?;
        samples.push(t.elapsed().as_secs_f64());
        cpu.push(thread_cpu() - c);
        sizes.push(n);
    }
    sizes.sort_unstable();
    let qs = Summary::of(&samples);
    sec.row(
        format!(
            "turn query by session ({}–{} turns returned)",
            sizes.first().copied().unwrap_or(0),
            sizes.last().copied().unwrap_or(0)
        ),
        format!("{} · load average before: {load}", qs.line()),
    );
    sec.row("turn query by session: CPU time", Summary::of(&cpu).line());
    sec.row(
        "goal: append p99 ≤ 10 ms",
        format!(
            "{} (p99 {})",
            if app.p99 <= 0.010 { "met" } else { "not met" },
            secs(app.p99)
        ),
    );
    sec.row(
        "goal: session query p99 ≤ 5 ms",
        format!(
            "{} (p99 {})",
            if qs.p99 <= 0.005 { "met" } else { "not met" },
            secs(qs.p99)
        ),
    );
    sec.emit(&a.out)
}
