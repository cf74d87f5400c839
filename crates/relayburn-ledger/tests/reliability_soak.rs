//! Soak under load: nine processes on one home for `RELAYBURN_SOAK_SECS`
//! seconds (default 60, 600 with `RELAYBURN_RELIABILITY_LONG=1`):
//!
//! - 3 append turns in overlapping windows (most turns are offered by
//!   several writers, often at the same moment),
//! - 2 append content records, also overlapping,
//! - 1 stamps sessions and messages (some stamps imply a relationship),
//! - 1 builds the archive incrementally, again and again,
//! - 2 query the ledger and check every turn they read.
//!
//! Writers pause a few milliseconds between operations, as hooks do:
//! lockfiles are polled, not queued, so a writer in a tight loop could
//! starve the others. A lock timeout anywhere fails the test.
//!
//! At the end every turn some writer appended is in the ledger exactly
//! once, every content record once in its sidecar, every stamp once; the
//! consistency check finds nothing; and the archive the builder kept up
//! equals a full rebuild of the same ledger. Each role prints what it
//! achieved per second. Child processes are this test binary run again
//! with `--exact soak_child --ignored`.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Child;
use std::time::{Duration, Instant};

use relayburn_ledger::check;
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::{Error, Ledger, LedgerHome, Query};

use support::reliability::*;

const ENTRY: &str = "soak_child";

/// Upper bound on any role's iterations, so every loop ends.
const MAX_ITERATIONS: u64 = 5_000_000;

fn soak_secs() -> u64 {
    env_u64("RELAYBURN_SOAK_SECS", if long_run() { 600 } else { 60 })
}

// ---------------------------------------------------------------------------
// plans: reproducible from (seed, writer), so the parent knows what each
// writer appended from the number of batches it reports
// ---------------------------------------------------------------------------

/// Windows over a slowly advancing position: every writer starts at 0 and
/// moves at the same average pace, so they keep offering the same items.
struct Windows {
    rng: Rng,
    pos: usize,
    max_len: u64,
    back: u64,
    step: u64,
}

impl Windows {
    fn turns(seed: u64, writer: u64) -> Windows {
        Windows {
            rng: Rng::new(seed ^ (writer + 1).wrapping_mul(0x51_7cc1_b727_220a)),
            pos: 0,
            max_len: 40,
            back: 120,
            step: 12,
        }
    }

    fn content(seed: u64, writer: u64) -> Windows {
        Windows {
            rng: Rng::new(seed ^ (writer + 101).wrapping_mul(0x51_7cc1_b727_220a)),
            pos: 0,
            max_len: 8,
            back: 20,
            step: 3,
        }
    }

    fn next_batch(&mut self) -> std::ops::Range<usize> {
        let len = self.rng.range(1, self.max_len) as usize;
        let start = self
            .pos
            .saturating_sub(self.rng.range(0, self.back) as usize);
        self.pos += self.rng.range(0, self.step) as usize;
        start..start + len
    }
}

/// A rough guess of how many turns the writers have appended after
/// `secs` seconds; stamps aim at turns and sessions around there (a stamp
/// may also come before its turns, which is allowed).
fn turns_by(secs: f64) -> u64 {
    100 + (secs * 300.0) as u64
}

fn stamp_line(k: u64, rng: &mut Rng, newest_turn: u64) -> Value {
    let j = rng.below(newest_turn) as usize;
    let selector = if rng.chance(4) {
        format!(r#"{{"messageId":"m-{j}"}}"#)
    } else {
        format!(r#"{{"sessionId":"{}"}}"#, turn_session(j))
    };
    let parent = if rng.chance(10) {
        format!(r#","parentAgentId":"pa-{}""#, rng.below(5))
    } else {
        String::new()
    };
    json::parse(&format!(
        r#"{{"v":1,"kind":"stamp","ts":"{}","selector":{selector},"enrichment":{{"workflowId":"wf-{}","seq":{k}{parent}}}}}"#,
        relayburn_ledger::time::now_iso(),
        rng.below(20),
    ))
    .unwrap()
}

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

/// What a role did, printed as `MARK stats <ops> <items> <secs>`.
struct Stats {
    ops: u64,
    items: u64,
    started: Instant,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            ops: 0,
            items: 0,
            started: Instant::now(),
        }
    }

    fn print(&self) {
        mark(
            "stats",
            format!(
                "{} {} {:.3}",
                self.ops,
                self.items,
                self.started.elapsed().as_secs_f64()
            ),
        );
    }
}

/// Fail loudly, naming a lock timeout as such.
fn ok<T>(r: relayburn_ledger::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e @ Error::LockTimeout { .. }) => {
            mark("lock-timeout", format!("{what}: {e}"));
            panic!("lock timeout in {what}: {e}");
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Entry point of the child processes; does nothing in a normal run.
#[test]
#[ignore = "child process role, started by the other tests"]
fn soak_child() {
    let Some((role, args)) = support::role::current() else {
        return;
    };
    let home = LedgerHome::new(&args[0]);
    let seed: u64 = args[1].parse().unwrap();
    let id: u64 = args[2].parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs_f64(args[3].parse().unwrap());
    let stop = home.root().join("stop");
    let running = || Instant::now() < deadline && !stop.exists();
    let l = Ledger::open(home.clone()).unwrap();
    let mut pause = Rng::new(seed ^ 0xfeed ^ id.wrapping_mul(7919));
    let mut s = Stats::new();
    mark("ready", "");
    match role.as_str() {
        "turns" => {
            let mut plan = Windows::turns(seed, id);
            while running() && s.ops < MAX_ITERATIONS {
                let b = plan.next_batch();
                s.items += ok(l.append_turns(b.map(turn).collect()), "append_turns") as u64;
                s.ops += 1;
                sleep_us(pause.range(2_000, 10_000));
            }
        }
        "content" => {
            let mut plan = Windows::content(seed, id);
            while running() && s.ops < MAX_ITERATIONS {
                let b = plan.next_batch();
                let r = ok(l.append_content(b.map(content).collect()), "append_content");
                s.items += r.appended as u64;
                s.ops += 1;
                sleep_us(pause.range(2_000, 10_000));
            }
        }
        "stamps" => {
            let mut rng = Rng::new(seed ^ 0x57a4);
            while running() && s.ops < MAX_ITERATIONS {
                let newest = turns_by(s.started.elapsed().as_secs_f64());
                let line = stamp_line(s.ops, &mut rng, newest);
                ok(l.append_stamp(&line), "append_stamp");
                s.ops += 1;
                s.items += 1;
                sleep_us(pause.range(5_000, 20_000));
            }
        }
        "archive" => {
            while running() && s.ops < MAX_ITERATIONS {
                let r = ok(l.build_archive(), "build_archive");
                s.ops += 1;
                s.items += r.turns_applied;
                sleep_us(pause.range(20_000, 100_000));
            }
        }
        "reader" => {
            let mut last = 0;
            while running() && s.ops < MAX_ITERATIONS {
                // Reader 0 reads everything, reader 1 one session at a time.
                let q = if id == 0 {
                    Query::default()
                } else {
                    Query {
                        session_id: Some(turn_session(
                            pause.below(turns_by(s.started.elapsed().as_secs_f64())) as usize,
                        )),
                        ..Query::default()
                    }
                };
                let mut seen = HashSet::new();
                for t in ok(l.query_turns(&q), "query_turns") {
                    let t = ok(t, "query_turns");
                    let i = index_of(&t).expect("a turn without its message id");
                    let want = turn(i);
                    for key in ["sessionId", "ts", "usage", "toolCalls", "note"] {
                        assert_eq!(t.get(key), want.get(key), "turn {i}: {key}");
                    }
                    assert!(t.get("enrichment").is_some(), "turn {i}: no enrichment");
                    assert!(seen.insert(i), "turn {i} read twice in one query");
                }
                if id == 0 {
                    assert!(
                        seen.len() >= last,
                        "the ledger shrank: {} < {last}",
                        seen.len()
                    );
                    last = seen.len();
                }
                s.ops += 1;
                s.items += seen.len() as u64;
                sleep_us(pause.range(5_000, 20_000));
            }
        }
        other => panic!("unknown role {other}"),
    }
    s.print();
}

// ---------------------------------------------------------------------------
// the test
// ---------------------------------------------------------------------------

struct Proc {
    role: &'static str,
    id: u64,
    child: Child,
    marks: Marks,
}

#[test]
fn nine_processes_for_a_minute_lose_and_duplicate_nothing() {
    let secs = soak_secs();
    let seed = env_u64("RELAYBURN_SOAK_SEED", 0x50a6_2026);
    eprintln!("soak: {secs} s, seed {seed:#x}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir(&root).unwrap();
    let home = LedgerHome::new(&root);

    let roles: [(&str, u64); 9] = [
        ("turns", 0),
        ("turns", 1),
        ("turns", 2),
        ("content", 0),
        ("content", 1),
        ("stamps", 0),
        ("archive", 0),
        ("reader", 0),
        ("reader", 1),
    ];
    let mut procs: Vec<Proc> = roles
        .iter()
        .map(|&(role, id)| {
            let args = [
                root.display().to_string(),
                seed.to_string(),
                id.to_string(),
                secs.to_string(),
            ];
            let mut child = child(ENTRY, role, &args).spawn().unwrap();
            let marks = Marks::of(&mut child);
            Proc {
                role,
                id,
                child,
                marks,
            }
        })
        .collect();
    for p in &mut procs {
        p.marks.expect("ready");
    }
    let started = Instant::now();
    // The children stop at their deadline; the stop file is a backstop.
    let limit = Duration::from_secs(secs + 120);
    while procs
        .iter_mut()
        .any(|p| p.child.try_wait().unwrap().is_none())
    {
        if started.elapsed() > Duration::from_secs(secs + 5) {
            std::fs::write(root.join("stop"), "").unwrap();
        }
        if started.elapsed() > limit {
            for p in &mut procs {
                kill9(&mut p.child);
            }
            panic!("children still running {limit:?} after the start");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(root.join("stop"));

    // Each role's numbers.
    let mut stats: HashMap<(&str, u64), (u64, u64, f64)> = HashMap::new();
    let mut failed = Vec::new();
    for p in procs {
        let Proc {
            role,
            id,
            mut child,
            marks,
        } = p;
        let rest = marks.rest();
        let status = child.wait().unwrap();
        for (name, detail) in &rest {
            if name == "lock-timeout" {
                failed.push(format!("{role} {id}: LOCK TIMEOUT {detail}"));
            }
        }
        if !status.success() {
            failed.push(format!("{role} {id} failed: {status}"));
            continue;
        }
        let d = rest
            .iter()
            .find(|(n, _)| n == "stats")
            .map(|(_, d)| d.clone())
            .unwrap_or_else(|| panic!("{role} {id}: no stats"));
        let v: Vec<&str> = d.split(' ').collect();
        stats.insert(
            (role, id),
            (
                v[0].parse().unwrap(),
                v[1].parse().unwrap(),
                v[2].parse().unwrap(),
            ),
        );
    }
    assert!(failed.is_empty(), "{failed:?}");
    let mut per_role: BTreeMap<&str, (u64, u64, f64)> = BTreeMap::new();
    for ((role, _), (ops, items, secs)) in &stats {
        let e = per_role.entry(role).or_insert((0, 0, 0.0));
        e.0 += ops;
        e.1 += items;
        e.2 = e.2.max(*secs);
    }
    let unit = |role: &str| match role {
        "turns" => ("appends", "new turns"),
        "content" => ("appends", "new records"),
        "stamps" => ("stamps", "stamps"),
        "archive" => ("builds", "turns applied"),
        _ => ("queries", "turns read"),
    };
    for (role, (ops, items, secs)) in &per_role {
        let (o, i) = unit(role);
        eprintln!(
            "soak: {role:8} {ops:7} {o} ({:.1}/s), {items:9} {i} ({:.1}/s) over {secs:.1} s",
            *ops as f64 / secs,
            *items as f64 / secs,
        );
    }

    // What the writers appended, from their plans.
    let mut want_turns = HashSet::new();
    for w in 0..3 {
        let (n, _, _) = stats[&("turns", w)];
        let mut plan = Windows::turns(seed, w);
        for _ in 0..n {
            want_turns.extend(plan.next_batch());
        }
    }
    let mut want_content = HashSet::new();
    for w in 0..2 {
        let (n, _, _) = stats[&("content", w)];
        let mut plan = Windows::content(seed, w);
        for _ in 0..n {
            want_content.extend(plan.next_batch());
        }
    }
    let new_turns: u64 = (0..3).map(|w| stats[&("turns", w)].1).sum();
    let new_content: u64 = (0..2).map(|w| stats[&("content", w)].1).sum();
    let stamps = stats[&("stamps", 0)].0;

    let verify = Instant::now();
    let data = std::fs::read(home.ledger()).unwrap();
    let audit = LedgerAudit::of(&data);
    assert!(audit.fragments.is_empty(), "the ledger holds non-records");
    audit.assert_no_duplicates();
    assert_eq!(
        audit.present(),
        want_turns,
        "the ledger's turns are those appended"
    );
    assert_eq!(
        audit.records.len() as u64,
        new_turns,
        "the writers' counts of new turns add up to the ledger's"
    );
    let mut seqs = HashSet::new();
    for l in lines_of(&data) {
        let v = parsed(l.bytes).unwrap();
        if v.get("kind").and_then(Value::as_str) == Some("stamp") {
            let k = v
                .get("enrichment")
                .and_then(|e| e.get("seq"))
                .and_then(Value::as_f64)
                .unwrap() as u64;
            assert!(seqs.insert(k), "stamp {k} twice");
        }
    }
    assert_eq!(seqs, (0..stamps).collect(), "every stamp once");
    let mut seen_content = HashSet::new();
    for k in 0..CONTENT_SESSIONS {
        let sidecar = std::fs::read(home.content_file(&content_session(k)).unwrap()).unwrap();
        for l in lines_of(&sidecar) {
            assert!(l.terminated);
            let i = parsed(l.bytes).as_ref().and_then(index_of).unwrap();
            assert_eq!(l.bytes, content_line(i).as_bytes());
            assert!(seen_content.insert(i), "content {i} twice");
        }
    }
    assert_eq!(seen_content, want_content, "every content record once");
    assert_eq!(seen_content.len() as u64, new_content);

    let report = check::check(&home, &mut |_, _| {}).unwrap();
    assert!(report.problems().is_empty(), "{:?}", report.problems());

    // The archive kept up incrementally equals a full rebuild.
    let l = Ledger::open(home.clone()).unwrap();
    l.build_archive().unwrap();
    let scratch = LedgerHome::new(dir.path().join("scratch"));
    std::fs::create_dir(scratch.root()).unwrap();
    std::fs::copy(home.ledger(), scratch.ledger()).unwrap();
    let full = Ledger::open(scratch.clone())
        .unwrap()
        .rebuild_archive()
        .unwrap();
    support::archive::assert_dumps_equal(
        &support::archive::dump(&home.archive()),
        &support::archive::dump(&scratch.archive()),
        "incremental archive against a full rebuild",
    );
    eprintln!(
        "soak: {} bytes of ledger, {} turns, {} stamps, {} content records; verified in {:.1} s \
         (full rebuild {} turns)",
        data.len(),
        audit.records.len(),
        stamps,
        seen_content.len(),
        verify.elapsed().as_secs_f64(),
        full.turns_applied,
    );
    assert!(leftovers(&root, &[".lock", ".tmp"]).is_empty());
}
