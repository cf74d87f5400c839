//! Several processes on one home: concurrent appenders never duplicate a
//! record, readers never see a partial record, and a rewrite never loses a
//! line appended meanwhile.
//!
//! Child processes are this test binary run again in a role
//! (`support::role`), running only [`child_process`].

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use relayburn_ledger::index::{turn_fingerprint, turn_id};
use relayburn_ledger::lock::LockOptions;
use relayburn_ledger::time::iso_from_millis;
use relayburn_ledger::{json, Ledger, LedgerHome, Query, Value};

const TURNS: usize = 10_000;

/// Turn `i` of the shared workload; every turn has its own id and content.
fn nth_turn(i: usize) -> Value {
    let ts = iso_from_millis(1_767_225_600_000 + i as i64 * 1000);
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"s-{}","messageId":"m-{i}","turnIndex":{i},"ts":"{ts}","model":"gpt-5","usage":{{"input":{i},"output":7,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[{{"id":"t{i}","name":"Bash","argsHash":"{:016x}"}}],"project":"/p"}}"#,
        i % 16,
        i * 7919
    ))
    .unwrap()
}

/// Patient lock timings: under a loaded machine, a writer that keeps
/// losing the race must not give up before the others are done.
fn patient() -> LockOptions {
    LockOptions {
        slow_retries: 2_000,
        ..LockOptions::default()
    }
}

fn open(home: &Path) -> Ledger {
    Ledger::open_with_lock_options(LedgerHome::new(home), patient()).unwrap()
}

fn spawn(role: &str, home: &Path, args: &str) -> Child {
    support::role::command("child_process", role, &[home.to_str().unwrap(), args])
        .spawn()
        .unwrap()
}

fn wait_ok(mut c: Child, what: &str) {
    let status = c.wait().unwrap();
    assert!(status.success(), "{what} failed: {status}");
}

/// Entry point of the child processes; does nothing in a normal run.
#[test]
#[ignore = "child process role, started by the other tests"]
fn child_process() {
    let Some((role, a)) = support::role::current() else {
        return;
    };
    let home = PathBuf::from(&a[0]);
    let args: Vec<usize> = a[1]
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    match role.as_str() {
        "writer" => writer(&home, args[0], args[1]),
        "reader" => reader(&home),
        "appender" => appender(&home, args[0], args[1]),
        other => panic!("unknown role {other}"),
    }
}

/// Append all turns, `batch` at a time, starting at `start` and wrapping.
fn writer(home: &Path, batch: usize, start: usize) {
    let l = open(home);
    let order: Vec<usize> = (0..TURNS).map(|k| (start + k) % TURNS).collect();
    for (n, chunk) in order.chunks(batch).enumerate() {
        l.append_turns(chunk.iter().map(|&i| nth_turn(i)).collect())
            .unwrap();
        // Work between batches, as an ingest would do.
        std::thread::sleep(Duration::from_millis((n % 4) as u64));
    }
}

/// Query and scan the ledger until told to stop; fail on any partial or
/// duplicated record.
fn reader(home: &Path) {
    let l = open(home);
    let stop = home.join("stop-readers");
    let mut last = 0;
    let mut rounds = 0;
    loop {
        let done = stop.exists();
        let mut seen = HashSet::new();
        for t in l.query_turns(&Query::default()).unwrap() {
            let t = t.unwrap();
            let m = t
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
            let i: usize = m.strip_prefix("m-").unwrap().parse().unwrap();
            assert_eq!(t.get("usage"), nth_turn(i).get("usage"), "{m} is whole");
            assert!(seen.insert(m.clone()), "{m} read twice");
        }
        assert!(
            seen.len() >= last,
            "the ledger shrank: {} < {last}",
            seen.len()
        );
        last = seen.len();
        if let Ok(bytes) = std::fs::read(l.home().ledger()) {
            let complete = match bytes.iter().rposition(|&b| b == b'\n') {
                Some(p) => &bytes[..p],
                None => &bytes[..0],
            };
            for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v = json::parse(std::str::from_utf8(line).unwrap())
                    .unwrap_or_else(|e| panic!("a complete line is not JSON: {e}"));
                assert_eq!(v.get("kind").and_then(Value::as_str), Some("turn"));
            }
        }
        rounds += 1;
        if done {
            break;
        }
    }
    eprintln!("reader: {rounds} rounds, last saw {last} turns");
}

/// Append turns `from..to` in small batches.
fn appender(home: &Path, from: usize, to: usize) {
    let l = open(home);
    let ids: Vec<usize> = (from..to).collect();
    for chunk in ids.chunks(10) {
        let n = l
            .append_turns(chunk.iter().map(|&i| nth_turn(i)).collect())
            .unwrap();
        assert_eq!(n, chunk.len());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn turn_lines(home: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(home.join("ledger.jsonl")).unwrap();
    assert!(text.ends_with('\n'));
    text.lines().map(|l| json::parse(l).unwrap()).collect()
}

fn index_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn four_writer_processes_append_each_turn_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let readers = [spawn("reader", home, ""), spawn("reader", home, "")];
    let started = Instant::now();
    let writers: Vec<Child> = [(50, 0), (127, 2_500), (500, 5_000), (2_000, 7_500)]
        .iter()
        .map(|(batch, start)| spawn("writer", home, &format!("{batch},{start}")))
        .collect();
    for w in writers {
        wait_ok(w, "writer");
    }
    eprintln!("writers done in {:?}", started.elapsed());
    std::fs::write(home.join("stop-readers"), "").unwrap();
    for r in readers {
        wait_ok(r, "reader");
    }

    let lines = turn_lines(home);
    assert_eq!(lines.len(), TURNS, "one line per turn");
    let mut seen = HashSet::new();
    for line in &lines {
        let rec = line.get("record").unwrap();
        let m = rec.get("messageId").and_then(Value::as_str).unwrap();
        let i: usize = m.strip_prefix("m-").unwrap().parse().unwrap();
        assert_eq!(rec, &nth_turn(i), "{m} is intact");
        assert!(seen.insert(i), "{m} appended twice");
    }
    let want_ids: HashSet<String> = (0..TURNS)
        .map(|i| turn_id(&nth_turn(i)).unwrap().hex())
        .collect();
    let ids = index_lines(&home.join("ledger.idx"));
    assert_eq!(ids.len(), TURNS, "one index line per turn");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), want_ids);
    let want_fps: HashSet<String> = (0..TURNS)
        .map(|i| turn_fingerprint(&nth_turn(i)).unwrap().hex())
        .collect();
    let fps = index_lines(&home.join("ledger.content.idx"));
    assert_eq!(fps.len(), TURNS);
    assert_eq!(fps.iter().cloned().collect::<HashSet<_>>(), want_fps);
    let leftovers: Vec<_> = std::fs::read_dir(home)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_rewrite_racing_with_appends_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let l = open(home);
    l.append_turns((0..1_000).map(nth_turn).collect()).unwrap();
    let mut procs = vec![
        spawn("appender", home, "1000,1300"),
        spawn("appender", home, "1300,1600"),
    ];
    let mut rewrites = 0;
    let mut overlapping = 0;
    std::thread::scope(|sc| {
        let threads: Vec<_> = [(1_600, 1_700), (1_700, 1_800)]
            .into_iter()
            .map(|(from, to)| {
                let l = &l;
                sc.spawn(move || {
                    for i in from..to {
                        assert_eq!(l.append_turns(vec![nth_turn(i)]).unwrap(), 1);
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        let running = |procs: &mut Vec<Child>| {
            procs
                .iter_mut()
                .map(|p| p.try_wait().unwrap().is_none())
                .filter(|alive| *alive)
                .count()
        };
        while rewrites < 3 || !threads.iter().all(|t| t.is_finished()) || running(&mut procs) > 0 {
            let others = running(&mut procs) > 0;
            assert!(Instant::now() < deadline, "appenders did not finish");
            let r = l
                .rewrite_turns(|rec, _| {
                    let n = rec.get("rewrites").and_then(Value::as_f64).unwrap_or(0.0);
                    rec.insert("rewrites", Value::Number(n + 1.0));
                    Ok(true)
                })
                .unwrap();
            assert!(r.turns >= 1_000);
            rewrites += 1;
            if others && running(&mut procs) > 0 {
                overlapping += 1;
            }
            // Let the appenders in: lockfiles are polled, not queued.
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    for p in procs {
        wait_ok(p, "appender");
    }
    assert!(
        overlapping >= 1,
        "no rewrite ran while the processes appended"
    );
    let lines = turn_lines(home);
    assert_eq!(lines.len(), 1_800);
    let mut seen = HashSet::new();
    for line in &lines {
        let rec = line.get("record").unwrap();
        let m = rec.get("messageId").and_then(Value::as_str).unwrap();
        assert!(seen.insert(m.to_string()), "{m} twice");
    }
    for i in 0..1_800 {
        assert!(seen.contains(&format!("m-{i}")), "m-{i} lost");
    }
    assert_eq!(index_lines(&home.join("ledger.idx")).len(), 1_800);
    eprintln!("{rewrites} rewrites, {overlapping} while other processes appended");
}
