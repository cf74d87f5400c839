//! Crash at any point: a process appending turns, appending content, or
//! building the archive is killed with SIGKILL at a random moment, over and
//! over on the same home. After each kill the files must hold only complete
//! records (plus at most the torn piece of the interrupted write, which no
//! reader takes for a record), the index must not promise a record the
//! ledger lacks, the dead writer's locks must be taken back at once, and a
//! fresh process must append exactly what the crash left out.
//!
//! Each test runs `RELAYBURN_CRASH_TRIALS` trials (default 50, or 300 with
//! `RELAYBURN_RELIABILITY_LONG=1`) from the seed `RELAYBURN_CRASH_SEED`; the
//! seed is printed so a failure can be replayed.
//! Child processes are this test binary run again with
//! `--exact crash_child --ignored` and a role in the environment.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use relayburn_ledger::check;
use relayburn_ledger::index::Hash16;
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::lock::Locks;
use relayburn_ledger::time::iso_from_millis;
use relayburn_ledger::{Ledger, LedgerHome, Query};

use support::reliability::*;

const ENTRY: &str = "crash_child";

/// A dead writer's lock must never block longer than the stale window
/// (plus one slow poll and scheduling slack).
const RECLAIM_BOUND: Duration = Duration::from_millis(5_000 + 1_000);

fn trials() -> u64 {
    env_u64("RELAYBURN_CRASH_TRIALS", if long_run() { 300 } else { 50 })
}

fn seed(salt: u64) -> u64 {
    env_u64("RELAYBURN_CRASH_SEED", 0x7e11_ab1e) ^ salt
}

// ---------------------------------------------------------------------------
// plans: what a writer child appends, reproducible from its seed
// ---------------------------------------------------------------------------

/// Consecutive batches of `lo..=hi` items each, starting at `start`.
fn plan(seed: u64, start: usize, batches: usize, lo: u64, hi: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed);
    let mut next = start;
    (0..batches)
        .map(|_| {
            let n = rng.range(lo, hi) as usize;
            let b: Vec<usize> = (next..next + n).collect();
            next += n;
            b
        })
        .collect()
}

const TURN_BATCHES: usize = 60;

fn turn_plan(seed: u64, start: usize) -> Vec<Vec<usize>> {
    plan(seed, start, TURN_BATCHES, 5, 60)
}

const CONTENT_BATCHES: usize = 30;

fn content_plan(seed: u64, start: usize) -> Vec<Vec<usize>> {
    plan(seed, start, CONTENT_BATCHES, 4, 40)
}

/// The batches a recovery re-appends: every batch up to the first one of
/// which nothing is on disk (the writer had not reached it yet).
fn batches_to_recover(plan: &[Vec<usize>], present: &dyn Fn(usize) -> bool) -> usize {
    let last_touched = plan
        .iter()
        .rposition(|b| b.iter().any(|&i| present(i)))
        .map_or(0, |k| k + 1);
    (last_touched + 1).min(plan.len())
}

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    args[i].parse().unwrap()
}

/// Entry point of the child processes; does nothing in a normal run.
#[test]
#[ignore = "child process role, started by the other tests"]
fn crash_child() {
    let Some((role, args)) = support::role::current() else {
        return;
    };
    let home = LedgerHome::new(&args[0]);
    match role.as_str() {
        // <home> <seed> <start>: append the plan's batches with short pauses.
        "turns" => {
            let l = Ledger::open(home).unwrap();
            let (seed, start) = (arg::<u64>(&args, 1), arg::<usize>(&args, 2));
            let mut pause = Rng::new(seed ^ 0x9a05e);
            mark("ready", "");
            for b in turn_plan(seed, start) {
                l.append_turns(b.into_iter().map(turn).collect()).unwrap();
                sleep_us(pause.range(0, 2_000));
            }
            mark("done", "");
        }
        "content" => {
            let l = Ledger::open(home).unwrap();
            let (seed, start) = (arg::<u64>(&args, 1), arg::<usize>(&args, 2));
            let mut pause = Rng::new(seed ^ 0x9a05e);
            mark("ready", "");
            for b in content_plan(seed, start) {
                l.append_content(b.into_iter().map(content).collect())
                    .unwrap();
                sleep_us(pause.range(0, 2_000));
            }
            mark("done", "");
        }
        // <home> <seed> <start> <batches> <lock names…>: what a process started
        // after the crash sees: how long each lock takes, then the re-append.
        "recover-turns" | "recover-content" => {
            let l = Ledger::open(home.clone()).unwrap();
            let locks = Locks::new(home.clone());
            for name in &args[4..] {
                let existed = home.lock(name).exists();
                if existed {
                    let body = std::fs::read(home.lock(name)).unwrap_or_default();
                    let body = String::from_utf8_lossy(&body);
                    mark("holder", format!("{name} {:?}", body.trim()));
                }
                let t = Instant::now();
                drop(locks.acquire(name).unwrap());
                mark(
                    "lock",
                    format!("{name} {existed} {}", t.elapsed().as_micros()),
                );
            }
            let (seed, start, n) = (
                arg::<u64>(&args, 1),
                arg::<usize>(&args, 2),
                arg::<usize>(&args, 3),
            );
            let t = Instant::now();
            let appended = if role == "recover-turns" {
                let p = turn_plan(seed, start);
                let recs = p[..n].iter().flatten().map(|&i| turn(i)).collect();
                l.append_turns(recs).unwrap()
            } else {
                let p = content_plan(seed, start);
                let recs = p[..n].iter().flatten().map(|&i| content(i)).collect();
                l.append_content(recs).unwrap().appended
            };
            mark(
                "appended",
                format!("{appended} {}", t.elapsed().as_micros()),
            );
        }
        // <home> <seed> <mode>: build the archive until killed.
        "build" => {
            let l = Ledger::open(home).unwrap();
            let mode = args[2].as_str();
            let mut pause = Rng::new(arg::<u64>(&args, 1));
            mark("ready", "");
            for _ in 0..10_000 {
                match mode {
                    "once" => {
                        l.build_archive().unwrap();
                        break;
                    }
                    "loop" => {
                        l.build_archive().unwrap();
                    }
                    "rebuild" => {
                        l.rebuild_archive().unwrap();
                    }
                    other => panic!("unknown build mode {other}"),
                }
                sleep_us(pause.range(0, 1_500));
            }
            mark("done", "");
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, home: &Path, args: &[String]) -> std::process::Child {
    let mut all = vec![home.display().to_string()];
    all.extend_from_slice(args);
    child(ENTRY, role, &all).spawn().unwrap()
}

/// Run a recovery child and return ((lock name, existed, µs)…, appended).
fn recover(
    role: &str,
    home: &Path,
    seed: u64,
    start: usize,
    batches: usize,
    locks: &[String],
) -> (Vec<(String, bool, u64)>, usize) {
    let mut args = vec![seed.to_string(), start.to_string(), batches.to_string()];
    args.extend(locks.iter().cloned());
    let mut c = spawn(role, home, &args);
    let marks = Marks::of(&mut c).rest();
    assert!(c.wait().unwrap().success(), "{role} child failed");
    let mut lock_times = Vec::new();
    let mut appended = None;
    let mut holders = Vec::new();
    for (name, detail) in marks {
        let parts: Vec<&str> = detail.split(' ').collect();
        match name.as_str() {
            "lock" => lock_times.push((
                parts[0].to_string(),
                parts[1] == "true",
                parts[2].parse().unwrap(),
            )),
            "appended" => appended = Some(parts[0].parse().unwrap()),
            "holder" => holders.push(detail),
            _ => {}
        }
    }
    for (name, _, us) in &lock_times {
        if *us > 100_000 {
            eprintln!("slow lock {name}: {us} µs; lockfiles found: {holders:?}");
        }
    }
    (lock_times, appended.expect("no appended marker"))
}

/// Judge a line that is not a record. A complete one must be a piece an
/// earlier crash tore off (recorded in `known` when it was the file's
/// unterminated tail); an unterminated one must be that, a prefix of a
/// line the killed writer was writing, or nothing a reader accepts.
fn judge_fragment(
    what: &str,
    known: &mut HashMap<u64, Vec<u8>>,
    offset: u64,
    bytes: &[u8],
    terminated: bool,
    planned: &[String],
) -> bool {
    if known.get(&offset).is_some_and(|k| k == bytes) {
        return false;
    }
    assert!(
        !terminated,
        "{what}: complete line at byte {offset} is neither a record nor an earlier torn tail: {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
    );
    assert!(
        planned.iter().any(|l| l.as_bytes().starts_with(bytes)),
        "{what}: torn tail at byte {offset} is not a prefix of a line being written"
    );
    assert!(
        parsed(bytes).is_none(),
        "{what}: a torn tail parses as JSON"
    );
    known.insert(offset, bytes.to_vec());
    true
}

/// Check how long each lock took; returns the names of those a dead
/// writer had left behind.
fn reclaim_check(what: &str, times: &[(String, bool, u64)], out: &mut Vec<f64>) -> Vec<String> {
    let mut left = Vec::new();
    for (name, existed, us) in times {
        let d = Duration::from_micros(*us);
        assert!(
            d < RECLAIM_BOUND,
            "{what}: lock {name} blocked a fresh process for {d:?}"
        );
        if *existed {
            left.push(name.clone());
            out.push(*us as f64 / 1000.0);
        }
    }
    left
}

// ---------------------------------------------------------------------------
// turns
// ---------------------------------------------------------------------------

#[test]
fn killed_turn_writers_leave_whole_records_and_a_consistent_index() {
    let trials = trials();
    let seed = seed(1);
    eprintln!("turn crash test: {trials} trials, seed {seed:#x}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let started = Instant::now();

    let mut prev: Vec<u8> = Vec::new();
    let mut checked = 0u64;
    let mut base = LedgerAudit::default();
    let mut known: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut known_idx: HashSet<String> = HashSet::new();
    let mut next_new = 0usize;
    let (mut finished, mut torn, mut unindexed_trials, mut torn_idx) = (0, 0, 0, 0);
    let mut locks_left: HashMap<String, usize> = HashMap::new();
    let mut unindexed_records = 0;
    let mut reclaim_ms = Vec::new();
    let mut recover_ms = Vec::new();

    for t in 0..trials {
        let what = format!("trial {t} (seed {seed:#x})");
        let start = next_new.saturating_sub(rng.range(0, 80) as usize);
        let child_seed = rng.next_u64();
        let delay = rng.range(0, 50_000);
        let p = turn_plan(child_seed, start);
        let planned: Vec<String> = p.iter().flatten().map(|&i| turn_line(i)).collect();

        let mut c = spawn(
            "turns",
            dir.path(),
            &[child_seed.to_string(), start.to_string()],
        );
        // Kept open until the kill, so a child that finishes first can
        // still print.
        let mut marks = Marks::of(&mut c);
        marks.expect("ready");
        sleep_us(delay);
        if kill9(&mut c) {
            finished += 1;
        }
        drop(marks);

        // The ledger: append-only, whole records, one torn piece at most.
        let data = std::fs::read(home.ledger()).unwrap_or_default();
        assert!(data.starts_with(&prev), "{what}: earlier bytes changed");
        // Lines before `checked` were audited in earlier trials and the
        // bytes are unchanged; the rest is audited now.
        let audit = base.joined(LedgerAudit::of_from(&data, checked));
        audit.assert_no_duplicates();
        for (off, bytes, terminated) in &audit.fragments {
            if judge_fragment(&what, &mut known, *off, bytes, *terminated, &planned) {
                torn += 1;
            }
        }

        // The index before any repair: every id it holds is in the ledger
        // (otherwise a record that was never written would be refused as a
        // duplicate); ids it lacks are the last records, which a fresh
        // process learns from the ledger's tail.
        let ids: Vec<Hash16> = audit.records.iter().map(|(_, i)| turn_hash(*i)).collect();
        let in_ledger: HashSet<Hash16> = ids.iter().copied().collect();
        let idx = IndexAudit::of(&home.ledger_index());
        for b in &idx.bad {
            assert!(known_idx.contains(b), "{what}: bad index line {b:?}");
        }
        if let Some(tail) = &idx.torn_tail {
            torn_idx += 1;
            known_idx.insert(tail.clone());
        }
        assert_eq!(
            idx.hashes.len(),
            idx.set().len(),
            "{what}: an id is in ledger.idx twice"
        );
        let extra: Vec<_> = idx.set().difference(&in_ledger).map(Hash16::hex).collect();
        assert!(
            extra.is_empty(),
            "{what}: ledger.idx holds ids with no record: {extra:?}"
        );
        let idx_set = idx.set();
        let first_missing = ids.iter().position(|h| !idx_set.contains(h));
        if let Some(k) = first_missing {
            unindexed_trials += 1;
            unindexed_records += ids.len() - k;
            assert!(
                ids[k..].iter().all(|h| !idx_set.contains(h)),
                "{what}: records missing from ledger.idx are not the ledger's last ones"
            );
        }
        let fps: HashSet<Hash16> = audit.records.iter().map(|(_, i)| turn_fp(*i)).collect();
        let window = IndexAudit::of(&home.ledger_content_index());
        for b in &window.bad {
            assert!(known_idx.contains(b), "{what}: bad window line {b:?}");
        }
        if let Some(tail) = &window.torn_tail {
            known_idx.insert(tail.clone());
        }
        assert!(
            window.set().is_subset(&fps),
            "{what}: ledger.content.idx holds a fingerprint of no ledger turn"
        );

        // A process started now: locks at once, then exactly the missing turns.
        let present = audit.present();
        let n = batches_to_recover(&p, &|i| present.contains(&i));
        let want: usize = p[..n]
            .iter()
            .flatten()
            .filter(|i| !present.contains(i))
            .count();
        let (times, appended) = recover(
            "recover-turns",
            dir.path(),
            child_seed,
            start,
            n,
            &["ledger".into(), "ledger-index".into()],
        );
        for name in reclaim_check(&what, &times, &mut reclaim_ms) {
            *locks_left.entry(name).or_insert(0) += 1;
        }
        assert_eq!(
            appended, want,
            "{what}: a fresh process must append exactly the turns the crash left out"
        );
        let t0 = Instant::now();
        let l = Ledger::open(home.clone()).unwrap();
        let data = std::fs::read(home.ledger()).unwrap();
        let after = base.joined(LedgerAudit::of_from(&data, checked));
        after.assert_no_duplicates();
        let all = after.present();
        for i in p[..n].iter().flatten() {
            assert!(all.contains(i), "{what}: turn {i} lost");
        }
        let read = l.query_turns(&Query::default()).unwrap().count();
        assert_eq!(
            read,
            after.records.len(),
            "{what}: readers see every record"
        );
        next_new = next_new.max(all.iter().max().map_or(0, |m| m + 1));

        // After a rebuild the index is exactly the ledger's ids.
        let r = l.rebuild_index().unwrap();
        let order: Vec<Hash16> = after.records.iter().map(|(_, i)| turn_hash(*i)).collect();
        assert_eq!(r.ids, order.len());
        assert_eq!(IndexAudit::of(&home.ledger_index()).hashes, order);
        let fp_order: Vec<Hash16> = after.records.iter().map(|(_, i)| turn_fp(*i)).collect();
        let tail = &fp_order[fp_order.len().saturating_sub(WINDOW)..];
        assert_eq!(IndexAudit::of(&home.ledger_content_index()).hashes, tail);
        let report = check::check(&home, &mut |_, _| {}).unwrap();
        assert_eq!(
            (
                report.index_missing_count,
                report.index_extra_count,
                report.content_extra_count,
                report.content_missing_count,
                report.unhashable_count,
            ),
            (0, 0, 0, 0, 0),
            "{what}: {:?}",
            report.problems()
        );
        let terminated_fragments = after.fragments.iter().filter(|f| f.2).count() as u64;
        assert_eq!(report.malformed_count, terminated_fragments, "{what}");
        assert!(report.locks.is_empty(), "{what}: {:?}", report.locks);
        recover_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        checked = data
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p as u64 + 1);
        base = after.before(checked);
        prev = data;
    }
    assert!(
        leftovers(dir.path(), &[".lock"]).is_empty(),
        "{:?}",
        leftovers(dir.path(), &[".lock"])
    );
    let (n, med, p95, max) = summary(&reclaim_ms);
    eprintln!(
        "turn crash test: {trials} kills in {:.1}s; {finished} writers finished first; \
         {torn} torn ledger tails; {unindexed_trials} kills left {unindexed_records} records \
         without index lines; {torn_idx} torn index tails; lockfiles left behind {locks_left:?}, \
         taken back in median {med:.2} ms, p95 {p95:.2} ms, max {max:.2} ms ({n}); ledger {} \
         bytes, {} turns",
        started.elapsed().as_secs_f64(),
        prev.len(),
        base.records.len(),
    );
    let (_, med, _, max) = summary(&recover_ms);
    eprintln!("turn crash test: audit+rebuild+check per trial median {med:.0} ms, max {max:.0} ms");
}

// ---------------------------------------------------------------------------
// content sidecars
// ---------------------------------------------------------------------------

#[test]
fn killed_content_writers_leave_whole_records() {
    let trials = trials();
    let seed = seed(2);
    eprintln!("content crash test: {trials} trials, seed {seed:#x}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let started = Instant::now();
    let sessions: Vec<String> = (0..CONTENT_SESSIONS).map(content_session).collect();
    let lock_names: Vec<String> = sessions.iter().map(|s| format!("content.{s}")).collect();

    let mut prev: HashMap<String, Vec<u8>> = HashMap::new();
    let mut known: HashMap<String, HashMap<u64, Vec<u8>>> = HashMap::new();
    let mut next_new = 0usize;
    let (mut finished, mut torn, mut locks_left) = (0, 0, 0);
    let mut reclaim_ms = Vec::new();

    for t in 0..trials {
        let what = format!("trial {t} (seed {seed:#x})");
        let start = next_new.saturating_sub(rng.range(0, 30) as usize);
        let child_seed = rng.next_u64();
        let delay = rng.range(0, 25_000);
        let p = content_plan(child_seed, start);
        let planned: Vec<String> = p.iter().flatten().map(|&i| content_line(i)).collect();

        let mut c = spawn(
            "content",
            dir.path(),
            &[child_seed.to_string(), start.to_string()],
        );
        // Kept open until the kill, so a child that finishes first can
        // still print.
        let mut marks = Marks::of(&mut c);
        marks.expect("ready");
        sleep_us(delay);
        if kill9(&mut c) {
            finished += 1;
        }
        drop(marks);

        let mut present = HashSet::new();
        for sid in &sessions {
            let path = home.content_file(sid).unwrap();
            let data = std::fs::read(&path).unwrap_or_default();
            let before = prev.get(sid).map(Vec::as_slice).unwrap_or(&[]);
            assert!(
                data.starts_with(before),
                "{what}: {sid}: earlier bytes changed"
            );
            let known = known.entry(sid.clone()).or_default();
            for l in lines_of(&data) {
                let rec = parsed(l.bytes).filter(|v| v.get("sessionId").is_some());
                match rec.as_ref().and_then(index_of) {
                    Some(i) => {
                        assert_eq!(l.bytes, content_line(i).as_bytes(), "{what}: {sid}");
                        assert_eq!(content_session(i), *sid, "{what}");
                        assert!(present.insert(i), "{what}: content {i} twice");
                    }
                    None => {
                        if judge_fragment(&what, known, l.offset, l.bytes, l.terminated, &planned) {
                            torn += 1;
                        }
                    }
                }
            }
        }

        let n = batches_to_recover(&p, &|i| present.contains(&i));
        let want = p[..n]
            .iter()
            .flatten()
            .filter(|i| !present.contains(i))
            .count();
        let (times, appended) = recover(
            "recover-content",
            dir.path(),
            child_seed,
            start,
            n,
            &lock_names,
        );
        locks_left += reclaim_check(&what, &times, &mut reclaim_ms).len();
        assert_eq!(
            appended, want,
            "{what}: a fresh process must append exactly the records the crash left out"
        );
        let l = Ledger::open(home.clone()).unwrap();
        let mut seen = HashSet::new();
        for sid in &sessions {
            for rec in l.read_content(sid, None).unwrap() {
                let i = index_of(&rec).unwrap();
                assert_eq!(rec, content(i), "{what}");
                assert!(seen.insert(i), "{what}: content {i} read twice");
            }
            prev.insert(
                sid.clone(),
                std::fs::read(home.content_file(sid).unwrap()).unwrap_or_default(),
            );
        }
        for i in p[..n].iter().flatten() {
            assert!(seen.contains(i), "{what}: content {i} lost");
        }
        next_new = next_new.max(seen.iter().max().map_or(0, |m| m + 1));
    }
    assert!(leftovers(dir.path(), &[".lock"]).is_empty());
    let (n, med, p95, max) = summary(&reclaim_ms);
    let bytes: usize = prev.values().map(Vec::len).sum();
    eprintln!(
        "content crash test: {trials} kills in {:.1}s; {finished} writers finished first; \
         {torn} torn sidecar tails; {locks_left} lockfiles left behind, taken back in median \
         {med:.2} ms, p95 {p95:.2} ms, max {max:.2} ms ({n}); {bytes} bytes in {} sidecars",
        started.elapsed().as_secs_f64(),
        sessions.len(),
    );
}

// ---------------------------------------------------------------------------
// torn at every byte, deterministically
// ---------------------------------------------------------------------------

/// A kill lands between two bytes of a write: try every one of them for a
/// three-record batch, and every byte of its index lines.
#[test]
fn a_write_torn_at_any_byte_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let base_dir = dir.path().join("base");
    let base = Ledger::open(LedgerHome::new(&base_dir)).unwrap();
    base.append_turns((0..10).map(turn).collect()).unwrap();
    let base_ledger = std::fs::read(base.home().ledger()).unwrap();
    let base_idx = std::fs::read(base.home().ledger_index()).unwrap();
    let base_win = std::fs::read(base.home().ledger_content_index()).unwrap();
    let batch = [10usize, 11, 12];
    let lines: Vec<String> = batch.iter().map(|&i| turn_line(i)).collect();
    let payload: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let mut ends = Vec::new();
    let mut at = 0;
    for l in &lines {
        ends.push(at + l.len());
        at += l.len() + 1;
    }
    let case = dir.path().join("case");
    std::fs::create_dir(&case).unwrap();
    // Files are overwritten in place: creating and deleting thousands of
    // files in one directory is what would cost time here.
    let setup = |ledger_tail: &[u8], idx_tail: &[u8]| -> Ledger {
        let mut led = base_ledger.clone();
        led.extend_from_slice(ledger_tail);
        std::fs::write(case.join("ledger.jsonl"), led).unwrap();
        let mut idx = base_idx.clone();
        idx.extend_from_slice(idx_tail);
        std::fs::write(case.join("ledger.idx"), idx).unwrap();
        std::fs::write(case.join("ledger.content.idx"), &base_win).unwrap();
        Ledger::open(LedgerHome::new(&case)).unwrap()
    };

    // The ledger write torn after `cut` bytes, its index lines never written.
    // Every byte of the first line and the bytes around each line end (every
    // byte of all three in the long run): each case takes two locks, and a
    // lock costs a heartbeat thread, so the cases are not free.
    let cuts: Vec<usize> = (0..=payload.len())
        .filter(|&c| long_run() || c <= ends[0] + 1 || ends.iter().any(|&e| e.abs_diff(c) <= 2))
        .collect();
    let started = Instant::now();
    for &cut in &cuts {
        let l = setup(&payload.as_bytes()[..cut], b"");
        let whole = ends.iter().filter(|&&e| cut >= e).count();
        let n = l
            .append_turns(batch.iter().chain([&13]).map(|&i| turn(i)).collect())
            .unwrap();
        assert_eq!(n, 4 - whole, "cut {cut}");
        let data = std::fs::read(l.home().ledger()).unwrap();
        let a = LedgerAudit::of(&data);
        a.assert_no_duplicates();
        assert_eq!(a.records.len(), 14, "cut {cut}");
        // Nothing, whole lines, or a whole line short of its newline leave
        // no fragment; any other cut leaves one.
        let torn_piece = cut > 0 && !ends.contains(&cut) && payload.as_bytes()[cut - 1] != b'\n';
        assert_eq!(a.fragments.len(), usize::from(torn_piece), "cut {cut}");
        for (_, bytes, terminated) in &a.fragments {
            assert!(terminated);
            assert!(lines.iter().any(|l| l.as_bytes().starts_with(bytes)));
        }
        if cut % 8 == 0 || ends.iter().any(|&e| e.abs_diff(cut) <= 1) {
            assert_eq!(
                l.query_turns(&Query::default()).unwrap().count(),
                14,
                "cut {cut}"
            );
            l.rebuild_index().unwrap();
            let r = check::check(l.home(), &mut |_, _| {}).unwrap();
            assert_eq!(r.malformed_count, u64::from(torn_piece), "cut {cut}");
            assert_eq!(r.index_missing_count + r.index_extra_count, 0, "cut {cut}");
        }
    }

    eprintln!(
        "torn-write sweep: {} cuts of a {}-byte batch in {:.1}s",
        cuts.len(),
        payload.len(),
        started.elapsed().as_secs_f64()
    );

    // The ledger write complete, its index lines torn after `cut` bytes.
    let idx_payload: String = batch
        .iter()
        .map(|&i| format!("{}\n", turn_hash(i).hex()))
        .collect();
    for cut in 0..=idx_payload.len() {
        let l = setup(payload.as_bytes(), &idx_payload.as_bytes()[..cut]);
        assert_eq!(
            l.append_turns(batch.iter().map(|&i| turn(i)).collect())
                .unwrap(),
            0,
            "cut {cut}"
        );
        assert_eq!(l.append_turns(vec![turn(13)]).unwrap(), 1, "cut {cut}");
        let a = LedgerAudit::of(&std::fs::read(l.home().ledger()).unwrap());
        assert_eq!(a.records.len(), 14);
        assert!(a.fragments.is_empty());
        let idx = IndexAudit::of(&l.home().ledger_index());
        assert!(idx.torn_tail.is_none(), "cut {cut}");
        let in_ledger: HashSet<Hash16> = (0..14).map(turn_hash).collect();
        assert!(idx.set().is_subset(&in_ledger), "cut {cut}");
        assert!(idx.set().contains(&turn_hash(13)), "cut {cut}");
    }
}

// ---------------------------------------------------------------------------
// the archive
// ---------------------------------------------------------------------------

const BASE_MS: i64 = 1_767_225_600_000;

/// One write of an archive trial: a batch of turns, a stamp, or a batch of
/// compactions or tool results.
enum Op {
    Turns(Vec<Value>),
    Stamp(Value),
    Compactions(Vec<Value>),
    Results(Vec<Value>),
}

fn iso(ms: i64) -> String {
    iso_from_millis(ms)
}

/// The writes of one archive trial: new turns, and around them stamps
/// (some dated before turns they hit, some naming a parent agent),
/// compactions and tool results of earlier turns.
fn archive_ops(rng: &mut Rng, next_turn: &mut usize) -> Vec<Op> {
    let mut ops = Vec::new();
    for _ in 0..rng.range(2, 4) {
        let n = rng.range(5, 20) as usize;
        ops.push(Op::Turns((*next_turn..*next_turn + n).map(turn).collect()));
        *next_turn += n;
    }
    let upto = *next_turn as u64;
    for _ in 0..rng.range(1, 3) {
        let j = rng.below(upto) as i64;
        let selector = match rng.below(3) {
            0 => format!(r#"{{"messageId":"m-{j}"}}"#),
            _ => format!(r#"{{"sessionId":"{}"}}"#, turn_session(j as usize)),
        };
        let parent = if rng.chance(4) {
            format!(r#","parentAgentId":"pa-{}""#, rng.below(5))
        } else {
            String::new()
        };
        ops.push(Op::Stamp(
            json::parse(&format!(
                r#"{{"v":1,"kind":"stamp","ts":"{}","selector":{selector},"enrichment":{{"workflowId":"wf-{}","agentId":"ag-{}"{parent}}}}}"#,
                iso(BASE_MS + j * 1000 + 1),
                rng.below(9),
                rng.below(4),
            ))
            .unwrap(),
        ));
    }
    let mut compactions = Vec::new();
    let mut results = Vec::new();
    for _ in 0..rng.range(1, 3) {
        let j = rng.below(upto) as i64;
        compactions.push(
            json::parse(&format!(
                r#"{{"v":1,"source":"codex","sessionId":"{}","ts":"{}","precedingMessageId":"m-{j}","tokensBeforeCompact":{}}}"#,
                turn_session(j as usize),
                iso(BASE_MS + j * 1000 + 500),
                j * 10,
            ))
            .unwrap(),
        );
        results.push(
            json::parse(&format!(
                r#"{{"v":1,"source":"codex","sessionId":"{}","messageId":"m-{j}","toolUseId":"t{j}","eventIndex":{},"status":"completed","eventSource":"tool_result","ts":"{}"}}"#,
                turn_session(j as usize),
                rng.below(3),
                iso(BASE_MS + j * 1000 + 250),
            ))
            .unwrap(),
        );
    }
    ops.push(Op::Compactions(compactions));
    ops.push(Op::Results(results));
    // Interleave the kinds as a real ingest would.
    for k in (1..ops.len()).rev() {
        ops.swap(k, rng.below(k as u64 + 1) as usize);
    }
    ops
}

fn apply(l: &Ledger, op: Op) {
    match op {
        Op::Turns(v) => drop(l.append_turns(v).unwrap()),
        Op::Stamp(s) => l.append_stamp(&s).unwrap(),
        Op::Compactions(v) => drop(l.append_compactions(v).unwrap()),
        Op::Results(v) => drop(l.append_tool_result_events(v).unwrap()),
    }
}

fn ledger_len(home: &LedgerHome) -> u64 {
    std::fs::metadata(home.ledger()).map_or(0, |m| m.len())
}

fn archive_cursor(home: &LedgerHome) -> u64 {
    let conn = rusqlite::Connection::open(home.archive()).unwrap();
    conn.query_row(
        "SELECT ledger_offset_bytes FROM archive_state WHERE id = 1",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// Table dumps of a full rebuild of the ledger's first `n` bytes, cached
/// (only for the cursor in force: dumps are big).
struct Expected {
    ledger: PathBuf,
    scratch: PathBuf,
    cache: HashMap<u64, Value>,
    rebuilds: usize,
}

impl Expected {
    fn at(&mut self, n: u64) -> &Value {
        if !self.cache.contains_key(&n) {
            let data = std::fs::read(&self.ledger).unwrap();
            let dir = self.scratch.join(format!("at-{n}"));
            std::fs::create_dir_all(&dir).unwrap();
            let home = LedgerHome::new(&dir);
            std::fs::write(home.ledger(), &data[..n as usize]).unwrap();
            relayburn_ledger::archive::rebuild_archive(&home, &Locks::new(home.clone())).unwrap();
            let d = support::archive::dump(&home.archive());
            std::fs::remove_dir_all(&dir).unwrap();
            self.rebuilds += 1;
            self.cache.insert(n, d);
        }
        &self.cache[&n]
    }
}

#[test]
fn killed_archive_builds_leave_the_old_or_the_new_archive() {
    let trials = trials();
    let seed = seed(3);
    eprintln!("archive crash test: {trials} trials, seed {seed:#x}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    let home = LedgerHome::new(&root);
    let l = Ledger::open(home.clone()).unwrap();
    let started = Instant::now();
    let mut next_turn = 0;
    for _ in 0..4 {
        for op in archive_ops(&mut rng, &mut next_turn) {
            apply(&l, op);
        }
    }
    l.build_archive().unwrap();
    let mut expected = Expected {
        ledger: home.ledger(),
        scratch: dir.path().join("scratch"),
        cache: HashMap::new(),
        rebuilds: 0,
    };
    let mut cursor = archive_cursor(&home);
    assert_eq!(cursor, ledger_len(&home));
    support::archive::assert_dumps_equal(
        &support::archive::dump(&home.archive()),
        expected.at(cursor),
        "first build",
    );

    // (mode, outcome) → trials; outcomes: old, new, between (loop only).
    let mut outcomes: HashMap<(&str, &str), usize> = HashMap::new();
    let mut reclaim_ms = Vec::new();
    let mut stale_rebuild_files = 0;
    for t in 0..trials {
        let what = format!("trial {t} (seed {seed:#x})");
        let mode = ["once", "loop", "once", "loop", "rebuild"][t as usize % 5];
        let old = cursor;
        let mut ops = archive_ops(&mut rng, &mut next_turn);
        let delay = match mode {
            "once" => rng.range(0, 12_000),
            "loop" => rng.range(5_000, 40_000),
            _ => rng.range(0, 60_000),
        };
        // Ledger sizes a completed build could have stopped at.
        let mut ends = vec![ledger_len(&home)];
        if mode != "loop" {
            for op in ops.drain(..) {
                apply(&l, op);
            }
            ends = vec![ledger_len(&home)];
        }
        let mut c = spawn("build", &root, &[rng.next_u64().to_string(), mode.into()]);
        // Kept open until the kill, so a child that finishes first can
        // still print.
        let mut marks = Marks::of(&mut c);
        marks.expect("ready");
        if mode == "loop" {
            // The ledger grows while the child builds.
            let grown = Mutex::new(Vec::new());
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for op in ops {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        apply(&l, op);
                        grown.lock().unwrap().push(ledger_len(&home));
                        sleep_us(1_000);
                    }
                });
                sleep_us(delay);
                kill9(&mut c);
                stop.store(true, Ordering::Relaxed);
            });
            ends.extend(grown.into_inner().unwrap());
        } else {
            sleep_us(delay);
            kill9(&mut c);
        }
        drop(marks);

        cursor = archive_cursor(&home);
        let len = ledger_len(&home);
        let outcome = if cursor == old {
            "old"
        } else if ends.contains(&cursor) {
            "new"
        } else {
            "between"
        };
        assert!(
            cursor >= old,
            "{what}: the cursor went back from {old} to {cursor}"
        );
        assert!(
            cursor <= len,
            "{what}: cursor {cursor} past the ledger end {len}"
        );
        if mode == "loop" {
            // A build may see part of an append in progress: any line end
            // it read is a place a completed build could stop.
            let data = std::fs::read(home.ledger()).unwrap();
            assert_eq!(
                data[cursor as usize - 1],
                b'\n',
                "{what}: cursor {cursor} is not at a line start"
            );
        } else {
            assert_ne!(
                outcome, "between",
                "{what}: cursor {cursor} is neither the old {old} nor the end {ends:?}"
            );
        }
        *outcomes.entry((mode, outcome)).or_insert(0) += 1;
        let got = support::archive::dump(&home.archive());
        support::archive::assert_dumps_equal(&got, expected.at(cursor), &what);
        expected.cache.retain(|&k, _| k == cursor);

        stale_rebuild_files += leftovers(&root, &[".tmp"])
            .iter()
            .filter(|p| p.to_string_lossy().contains("rebuild-"))
            .count();
        let locks = Locks::new(home.clone());
        let existed = home.lock("archive").exists();
        let t0 = Instant::now();
        drop(locks.acquire("archive").unwrap());
        let took = t0.elapsed();
        assert!(
            took < RECLAIM_BOUND,
            "{what}: archive lock blocked for {took:?}"
        );
        if existed {
            reclaim_ms.push(took.as_secs_f64() * 1000.0);
        }
    }

    // A build after all this resumes from the cursor and catches up.
    l.build_archive().unwrap();
    let len = ledger_len(&home);
    assert_eq!(archive_cursor(&home), len);
    support::archive::assert_dumps_equal(
        &support::archive::dump(&home.archive()),
        expected.at(len),
        "final build",
    );
    let left = leftovers(&root, &[".lock", ".tmp"]);
    assert!(left.is_empty(), "{left:?}");
    let report = check::check(&home, &mut |_, _| {}).unwrap();
    assert!(report.problems().is_empty(), "{:?}", report.problems());

    let mut o: Vec<_> = outcomes.into_iter().collect();
    o.sort();
    let (n, med, p95, max) = summary(&reclaim_ms);
    eprintln!(
        "archive crash test: {trials} kills in {:.1}s; outcomes {o:?}; {stale_rebuild_files} \
         half-built rebuild files seen after kills (removed by the next build); archive lock \
         left {n} times, taken back in median {med:.2} ms, p95 {p95:.2} ms, max {max:.2} ms; \
         {} reference rebuilds; ledger {len} bytes, {next_turn} turns",
        started.elapsed().as_secs_f64(),
        expected.rebuilds,
    );
}
