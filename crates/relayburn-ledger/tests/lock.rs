//! The lock protocol (SPEC §3): threads, processes, crashed holders, clock
//! skew, faults, and a Node peer that follows the protocol the way the
//! TypeScript ledger does.
//!
//! Child processes are this test binary run again with
//! `--exact child_process_entry --ignored` and a role in an environment
//! variable. `long_holder_is_never_stolen` takes about 12 s.

mod support;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use relayburn_ledger::lock::{self, LockOptions, Locks, Waiting};
use relayburn_ledger::{Error, LedgerHome};
use support::node_or_skip;

/// SPEC §3's stale window, written here rather than taken from the code
/// under test.
const STALE_MS: u64 = 5_000;
/// The heartbeat period this project promises: a fifth of the window.
const HEARTBEAT_MS: u64 = 1_000;

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn home() -> (tempfile::TempDir, LedgerHome) {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    (dir, home)
}

/// Timings that give up within a few tens of milliseconds.
fn tiny(stale: Duration) -> LockOptions {
    LockOptions {
        fast_retries: 3,
        fast_retry_delay: Duration::from_millis(5),
        slow_retries: 3,
        slow_retry_delay: Duration::from_millis(15),
        stale,
    }
}

/// This host's name, read without the library under test.
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// Start time (field 22) of `/proc/<pid>/stat`.
fn start_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Set the mtime of any kind of file (a FIFO cannot be opened to do it).
fn set_mtime_by_path(path: &Path, t: SystemTime) {
    use std::os::unix::ffi::OsStrExt;
    let since = t.duration_since(UNIX_EPOCH).unwrap();
    let ts = libc::timespec {
        tv_sec: since.as_secs() as libc::time_t,
        tv_nsec: since.subsec_nanos() as libc::c_long,
    };
    let times = [ts, ts];
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and two valid timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn long_ago() -> SystemTime {
    SystemTime::now() - Duration::from_millis(STALE_MS + 5_000)
}

/// A pid that existed a moment ago and is now gone (reaped).
fn dead_pid() -> u32 {
    let mut c = child("noop", &[]).spawn().unwrap();
    let pid = c.id();
    assert!(c.wait().unwrap().success());
    pid
}

fn assert_timeout_naming(err: &Error, path: &Path, detail: &str) {
    assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(detail), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

// ---------------------------------------------------------------------------
// child processes: this binary run again in a role
// ---------------------------------------------------------------------------

fn child(role: &str, args: &[&str]) -> Command {
    let mut c = support::role::command("child_process_entry", role, args);
    c.stdout(Stdio::null());
    c
}

/// Lines `EVENT <name> <ms> …` printed by a child or by the Node peer
/// (which prints `<name> <ms> …`), read as they come.
struct Events {
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    prefix: &'static str,
    seen: Vec<(String, u64, String)>,
}

impl Events {
    fn of(c: &mut Child, prefix: &'static str) -> Events {
        Events {
            lines: BufReader::new(c.stdout.take().unwrap()).lines(),
            prefix,
            seen: Vec::new(),
        }
    }

    /// Next event (name, time, rest); `None` at the end of the output.
    fn next(&mut self) -> Option<(String, u64, String)> {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            let Some(body) = line.strip_prefix(self.prefix) else {
                continue;
            };
            let mut parts = body.splitn(3, ' ');
            let name = parts.next().unwrap().to_string();
            let Some(t) = parts.next().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let rest = parts.next().unwrap_or("").to_string();
            self.seen.push((name.clone(), t, rest.clone()));
            return Some((name, t, rest));
        }
        None
    }

    fn expect(&mut self, name: &str) -> (u64, String) {
        match self.next() {
            Some((n, t, rest)) if n == name => (t, rest),
            other => panic!("expected event {name}, got {other:?} after {:?}", self.seen),
        }
    }

    fn rest(mut self) -> Vec<(String, u64, String)> {
        while self.next().is_some() {}
        self.seen
    }
}

fn event(name: &str, detail: impl std::fmt::Display) {
    println!("EVENT {name} {} {detail}", now_ms());
}

/// Entry point of the child processes; does nothing in a normal run.
#[test]
#[ignore = "child process role, started by the other tests"]
fn child_process_entry() {
    let Some((role, args)) = support::role::current() else {
        return;
    };
    match role.as_str() {
        "noop" => {}
        "sleep" => std::thread::sleep(Duration::from_millis(args[0].parse().unwrap())),
        // <home> <lock name> <counter file> <times>
        "increment" => {
            let locks = Locks::new(LedgerHome::new(&args[0]));
            let counter = PathBuf::from(&args[2]);
            for _ in 0..args[3].parse::<u32>().unwrap() {
                locks
                    .with_lock(&args[1], || {
                        let n: u64 = match fs::read_to_string(&counter) {
                            Ok(s) => s.trim().parse().unwrap(),
                            Err(_) => 0,
                        };
                        fs::write(&counter, format!("{}\n", n + 1)).unwrap();
                        Ok(())
                    })
                    .unwrap();
            }
            event("done", "");
        }
        // <home> <lock name> <hold ms>
        "hold" => {
            let locks = Locks::new(LedgerHome::new(&args[0]));
            let guard = locks.acquire(&args[1]).unwrap();
            event("acquired", std::process::id());
            std::thread::sleep(Duration::from_millis(args[2].parse().unwrap()));
            event("releasing", "");
            drop(guard);
            event("released", "");
        }
        // <lock path>: one quick acquire attempt, reporting the outcome.
        "try-acquire" => {
            let start = Instant::now();
            match lock::acquire(Path::new(&args[0]), &tiny(Duration::from_secs(60))) {
                Ok(()) => event("ok", start.elapsed().as_millis()),
                Err(e) => event("err", format!("{} {e}", start.elapsed().as_millis())),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// the Node peer
// ---------------------------------------------------------------------------

fn peer(node: &str, args: &[&str]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/lock-peer.mjs");
    let mut c = Command::new(node);
    c.arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    c
}

// ---------------------------------------------------------------------------
// basic behaviour
// ---------------------------------------------------------------------------

#[test]
fn fresh_acquire_creates_and_removes_the_lockfile() {
    let (_d, home) = home();
    let path = home.lock("fresh");
    let ran = Locks::new(home.clone())
        .with_lock("fresh", || {
            // Our identity, as one JSON line.
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with(&format!("{{\"pid\":{},", std::process::id())));
            assert!(text.contains(&format!("\"host\":\"{}\"", hostname())));
            assert!(text.ends_with("}\n") && text.lines().count() == 1);
            Ok(true)
        })
        .unwrap();
    assert!(ran);
    assert!(!path.exists());

    // Release does not wait for the next heartbeat (1 s away) to stop it.
    let guard = Locks::new(home.clone()).acquire("fresh").unwrap();
    assert!(guard.is_outermost() && path.exists());
    let start = Instant::now();
    drop(guard);
    assert!(
        start.elapsed() < Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
    assert!(!path.exists());
}

#[test]
fn a_hundred_threads_never_overlap() {
    let (_d, home) = home();
    let locks = Locks::new(home.clone());
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(AtomicUsize::new(0));
    // Read-modify-write with a pause in between: any overlap loses updates.
    let counter = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let (locks, inside, max_inside, bodies, counter, start) = (
                locks.clone(),
                inside.clone(),
                max_inside.clone(),
                bodies.clone(),
                counter.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                locks
                    .with_lock("archive", || {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        max_inside.fetch_max(now, Ordering::SeqCst);
                        let seen = counter.load(Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(500));
                        counter.store(seen + 1, Ordering::SeqCst);
                        bodies.fetch_add(1, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(max_inside.load(Ordering::SeqCst), 1);
    assert_eq!(bodies.load(Ordering::SeqCst), 100);
    assert_eq!(counter.load(Ordering::SeqCst), 100);
    assert!(!home.lock("archive").exists());
}

#[test]
fn eight_processes_fifty_increments_each() {
    let (d, home) = home();
    let counter = d.path().join("counter");
    let root = home.root().to_str().unwrap().to_string();
    let children: Vec<Child> = (0..8)
        .map(|_| {
            child(
                "increment",
                &[&root, "ledger", counter.to_str().unwrap(), "50"],
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(fs::read_to_string(&counter).unwrap(), "400\n");
    assert!(!home.lock("ledger").exists());
}

#[test]
fn an_orphan_with_an_old_mtime_is_recovered_at_once() {
    let (_d, home) = home();
    let path = home.lock("orphan");
    fs::write(&path, "").unwrap();
    set_mtime(&path, long_ago());
    let start = Instant::now();
    let mut ran = false;
    Locks::new(home)
        .with_lock("orphan", || {
            ran = true;
            Ok(())
        })
        .unwrap();
    assert!(ran);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(!path.exists());
}

#[test]
fn a_dead_holder_on_this_host_is_reclaimed_at_once() {
    let (_d, home) = home();
    let path = home.lock("dead");
    let pid = dead_pid();
    // Written by hand, as a crashed holder would have left it; fresh mtime.
    fs::write(
        &path,
        format!(
            "{{\"pid\":{pid},\"host\":\"{}\",\"since\":{}}}\n",
            hostname(),
            now_ms()
        ),
    )
    .unwrap();
    let start = Instant::now();
    Locks::new(home)
        .with_lock("dead", || {
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with(&format!("{{\"pid\":{},", std::process::id())));
            Ok(())
        })
        .unwrap();
    // The mtime rule alone would wait out the 5 s window.
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn dead_holder_rules_need_this_host_and_a_matching_start_time() {
    let (_d, home) = home();
    let stale = Duration::from_secs(60);

    // A dead pid on another host: nothing to judge by but the mtime.
    let path = home.lock("elsewhere");
    let pid = dead_pid();
    fs::write(
        &path,
        format!("{{\"pid\":{pid},\"host\":\"{}-other\"}}", hostname()),
    )
    .unwrap();
    let err = lock::acquire(&path, &tiny(stale)).unwrap_err();
    assert_timeout_naming(&err, &path, &format!("held by live process (pid {pid} on "));

    // A live process under the recorded pid.
    let mut sleeper = child("sleep", &["5000"]).spawn().unwrap();
    let pid = sleeper.id();
    let path = home.lock("alive");
    let ticks = start_ticks(pid);
    let line = |t: Option<u64>| match t {
        Some(t) => format!(
            "{{\"pid\":{pid},\"host\":\"{}\",\"pstart\":{t}}}",
            hostname()
        ),
        None => format!("{{\"pid\":{pid},\"host\":\"{}\"}}", hostname()),
    };
    fs::write(&path, line(ticks)).unwrap();
    let err = lock::acquire(&path, &tiny(stale)).unwrap_err();
    assert_timeout_naming(&err, &path, &format!("held by live process (pid {pid} on "));

    // The same pid but another start time: the pid was reused, the
    // holder is gone.
    if let Some(t) = ticks {
        fs::write(&path, line(Some(t + 1))).unwrap();
        lock::acquire(&path, &tiny(stale)).unwrap();
        assert!(fs::read_to_string(&path)
            .unwrap()
            .starts_with(&format!("{{\"pid\":{},", std::process::id())));
    }
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn long_holder_is_never_stolen() {
    // About 12 s: a holder in another process keeps the lock for 12 s,
    // more than twice the stale window, while this process (and a Node
    // peer, when available) tries to take it with the real timings.
    let (_d, home) = home();
    let path = home.lock("long");
    let root = home.root().to_str().unwrap().to_string();
    let mut holder = child("hold", &[&root, "long", "12000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut events = Events::of(&mut holder, "EVENT ");
    let (acquired_at, who) = events.expect("acquired");
    assert_eq!(who.trim(), holder.id().to_string());

    let node = node_or_skip();
    let mut node_peer = node.map(|n| {
        peer(n, &["acquire-once", path.to_str().unwrap()])
            .spawn()
            .unwrap()
    });

    let locks = Locks::new(home.clone());
    let first = locks.acquire("long");
    let first_at = now_ms();
    let mut refreshed_late = None;
    if first.is_err() && first_at < acquired_at + 11_900 {
        // Still held, long after the window: the heartbeat must have
        // kept the mtime young.
        let age = SystemTime::now()
            .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap_or_default();
        refreshed_late = Some((first_at - acquired_at, age));
    }
    let (guard, got_at) = match first {
        Ok(g) => (g, first_at),
        Err(e) => {
            assert_timeout_naming(
                &e,
                &path,
                &format!("held by live process (pid {} on ", holder.id()),
            );
            let g = locks.acquire("long").unwrap();
            (g, now_ms())
        }
    };
    let holder_events = events.rest();
    assert!(holder.wait().unwrap().success());
    let releasing = holder_events
        .iter()
        .find(|e| e.0 == "releasing")
        .map(|e| e.1)
        .unwrap();
    assert!(
        got_at >= releasing,
        "acquired at {got_at} while the holder held it until {releasing}"
    );
    if let Some((after, age)) = refreshed_late {
        assert!(after > STALE_MS);
        assert!(age < Duration::from_millis(3 * HEARTBEAT_MS), "{age:?}");
    }
    drop(guard);

    if let Some(mut p) = node_peer.take() {
        let mut out = String::new();
        p.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        p.wait().unwrap();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("acquired ") {
                let t: u64 = rest.split(' ').next().unwrap().parse().unwrap();
                assert!(
                    t >= releasing,
                    "node acquired at {t}, held until {releasing}"
                );
            }
        }
        assert!(
            out.lines()
                .any(|l| l.starts_with("acquired ") || l.starts_with("timeout ")),
            "{out}"
        );
    }
}

#[test]
fn the_heartbeat_is_what_keeps_a_long_holder() {
    // Small timings: stale 300 ms. With the heartbeat a 900 ms hold keeps
    // the lock; without it another acquirer takes it over.
    let o = LockOptions {
        fast_retries: 40,
        fast_retry_delay: Duration::from_millis(10),
        slow_retries: 20,
        slow_retry_delay: Duration::from_millis(50),
        stale: Duration::from_millis(300),
    };
    for beating in [true, false] {
        let (_d, home) = home();
        let path = home.lock("beat");
        let mut locks = Locks::with_options(home.clone(), o);
        if !beating {
            locks = locks.heartbeat(None);
        }
        let guard = locks.acquire("beat").unwrap();
        let other = std::thread::spawn({
            let path = path.clone();
            move || {
                let start = Instant::now();
                let got = lock::acquire(&path, &o).is_ok();
                (got, start.elapsed())
            }
        });
        std::thread::sleep(Duration::from_millis(900));
        let age = SystemTime::now()
            .duration_since(fs::metadata(&path).unwrap().modified().unwrap())
            .unwrap_or_default();
        drop(guard);
        let (got, waited) = other.join().unwrap();
        if beating {
            assert!(age < Duration::from_millis(200), "{age:?}");
            assert!(
                got && waited >= Duration::from_millis(850),
                "{got} {waited:?}"
            );
        } else {
            // Stolen once the mtime aged past 300 ms, while still held.
            assert!(
                got && waited < Duration::from_millis(800),
                "{got} {waited:?}"
            );
        }
        let _ = fs::remove_file(&path);
    }
}

#[test]
fn the_heartbeat_never_recreates_a_removed_lockfile() {
    let (_d, home) = home();
    let path = home.lock("gone");
    let o = LockOptions {
        stale: Duration::from_millis(100),
        ..LockOptions::default()
    };
    let locks = Locks::with_options(home, o);
    let guard = locks.acquire("gone").unwrap();
    fs::remove_file(&path).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert!(!path.exists());
    drop(guard);
    assert!(!path.exists());
}

#[test]
fn release_leaves_a_lockfile_someone_else_created() {
    let (_d, home) = home();
    let path = home.lock("taken");
    let locks = Locks::new(home);
    let guard = locks.acquire("taken").unwrap();
    // Our lock was taken over: the file was replaced by another holder's.
    fs::remove_file(&path).unwrap();
    fs::write(&path, "theirs").unwrap();
    drop(guard);
    assert_eq!(fs::read_to_string(&path).unwrap(), "theirs");
}

#[test]
fn the_default_schedule_is_the_references() {
    // About 11 s. SPEC §3: 20 ms for the first 50 attempts, then 250 ms
    // for the next 40; the timeout names 90 attempts and ~11000 ms.
    let (_d, home) = home();
    let path = home.lock("schedule");
    let _held = Locks::new(home.clone()).acquire("schedule").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = {
        let seen = Arc::clone(&seen);
        Locks::new(home).on_wait(Arc::new(move |w: &Waiting<'_>| {
            seen.lock()
                .unwrap()
                .push((w.attempt, w.delay, w.waited, w.holder.map(|h| h.pid)));
        }))
    };
    let start = Instant::now();
    let err = std::thread::spawn(move || waiter.acquire("schedule").unwrap_err())
        .join()
        .unwrap();
    let elapsed = start.elapsed();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "could not acquire lock after 90 attempts (~11000ms) - held by live process (pid "
        ),
        "{msg}"
    );
    assert!(msg.ends_with(&format!(": {}", path.display())), "{msg}");
    assert!(
        matches!(
            err,
            Error::LockTimeout {
                attempts: 90,
                budget_ms: 11_000,
                ..
            }
        ),
        "{err:?}"
    );
    let seen = seen.lock().unwrap();
    let delays: Vec<u64> = seen.iter().map(|s| s.1.as_millis() as u64).collect();
    let mut want = vec![20; 50];
    want.extend([250; 40]);
    assert_eq!(delays, want);
    let attempts: Vec<u32> = seen.iter().map(|s| s.0).collect();
    assert_eq!(attempts, (1..=90).collect::<Vec<_>>());
    assert!(seen.iter().all(|s| s.3 == Some(std::process::id())));
    // Observed: about 50 polls in the first second. Sleeps can only
    // overrun, so a loaded machine sees fewer, never more.
    let first_second = seen.iter().filter(|s| s.2 < Duration::from_secs(1)).count();
    assert!((35..=51).contains(&first_second), "{first_second} polls");
    assert!(elapsed >= Duration::from_millis(11_000), "{elapsed:?}");
}

#[test]
fn the_default_timings_are_the_references() {
    assert_eq!(
        LockOptions::default(),
        LockOptions {
            fast_retries: 50,
            fast_retry_delay: Duration::from_millis(20),
            slow_retries: 40,
            slow_retry_delay: Duration::from_millis(250),
            stale: Duration::from_millis(5_000),
        }
    );
}

#[test]
fn the_default_stale_window_is_five_seconds() {
    let (_d, home) = home();
    let o = LockOptions {
        stale: LockOptions::default().stale,
        ..tiny(Duration::ZERO)
    };
    // 4.5 s old, no holder named: fresh, so the acquire times out.
    let path = home.lock("young");
    fs::write(&path, "").unwrap();
    set_mtime(&path, SystemTime::now() - Duration::from_millis(4_500));
    let err = lock::acquire(&path, &o).unwrap_err();
    assert_timeout_naming(&err, &path, "held by live process");
    // 5.5 s old: stale, taken at once.
    let path = home.lock("old");
    fs::write(&path, "").unwrap();
    set_mtime(&path, SystemTime::now() - Duration::from_millis(5_500));
    lock::acquire(&path, &o).unwrap();
}

#[test]
fn a_holder_refreshes_its_lockfile_every_second() {
    // About 3.5 s: beats at 1, 2 and 3 s (HEARTBEAT_MS), none at 0.5 s
    // intervals and none skipped.
    let (_d, home) = home();
    let path = home.lock("beats");
    let guard = Locks::new(home).acquire("beats").unwrap();
    let start = Instant::now();
    let mut last = fs::metadata(&path).unwrap().modified().unwrap();
    let mut beats = Vec::new();
    while start.elapsed() < Duration::from_millis(3 * HEARTBEAT_MS + 500) {
        std::thread::sleep(Duration::from_millis(20));
        let m = fs::metadata(&path).unwrap().modified().unwrap();
        if m != last {
            beats.push(start.elapsed());
            last = m;
        }
    }
    drop(guard);
    assert_eq!(beats.len(), 3, "{beats:?}");
    assert!(
        beats[0] >= Duration::from_millis(HEARTBEAT_MS - 100),
        "{beats:?}"
    );
}

#[test]
fn timeout_names_the_path_and_the_holder() {
    let (_d, home) = home();
    let path = home.lock("busy");
    let _guard = Locks::new(home).acquire("busy").unwrap();
    let start = Instant::now();
    let err = lock::acquire(&path, &tiny(Duration::from_secs(60))).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "could not acquire lock after 6 attempts (~60ms) - held by live process (pid "
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "pid {} on {} since ",
            std::process::id(),
            hostname()
        )),
        "{msg}"
    );
    assert!(msg.ends_with(&format!(": {}", path.display())), "{msg}");
}

#[test]
fn nested_acquisition_leaves_the_file_alone_and_other_threads_wait() {
    let (_d, home) = home();
    let path = home.lock("nested");
    let locks = Locks::new(home);
    let snapshot = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.ino(), m.modified().unwrap(), fs::read(p).unwrap())
    };
    locks
        .with_lock("nested", || {
            let before = snapshot(&path);
            locks.with_lock("nested", || {
                assert_eq!(snapshot(&path), before);
                let inner = locks.acquire("nested").unwrap();
                assert!(!inner.is_outermost());
                drop(inner);
                Ok(())
            })?;
            // The inner calls released nothing.
            assert_eq!(snapshot(&path), before);
            // Re-entrancy is per thread: another thread must wait.
            let p = path.clone();
            let other = std::thread::spawn(move || {
                lock::acquire(&p, &tiny(Duration::from_secs(60))).unwrap_err()
            })
            .join()
            .unwrap();
            assert_timeout_naming(&other, &path, "held by live process");
            Ok(())
        })
        .unwrap();
    assert!(!path.exists());
}

#[test]
fn a_panicking_body_releases_the_lock() {
    let (_d, home) = home();
    let path = home.lock("boom");
    let locks = Locks::new(home);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = locks.with_lock("boom", || -> relayburn_ledger::Result<()> {
            panic!("body failed");
        });
    }));
    assert!(r.is_err());
    assert!(!path.exists());
    // Not still marked as held by this thread: the next call takes the file.
    locks
        .with_lock("boom", || {
            assert!(path.exists());
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// clock skew and odd lockfiles
// ---------------------------------------------------------------------------

#[test]
fn a_lockfile_from_the_future() {
    let (_d, home) = home();
    let future = |ms: u64| SystemTime::now() + Duration::from_millis(ms);

    // Far ahead (more than the stale window), no live holder named:
    // stale, taken at once.
    let path = home.lock("far");
    fs::write(&path, "").unwrap();
    set_mtime(&path, future(3_600_000));
    let start = Instant::now();
    Locks::new(home.clone())
        .with_lock("far", || Ok(()))
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));

    // A little ahead (inside the window): fresh.
    let path = home.lock("near");
    fs::write(&path, "").unwrap();
    set_mtime(&path, future(2_000));
    let err = lock::acquire(&path, &tiny(Duration::from_millis(STALE_MS))).unwrap_err();
    assert_timeout_naming(&err, &path, "held by live process");

    // Far ahead but naming a live holder on this host: wait for it.
    let path = home.lock("far-live");
    fs::write(
        &path,
        format!(
            "{{\"pid\":{},\"host\":\"{}\"}}",
            std::process::id(),
            hostname()
        ),
    )
    .unwrap();
    set_mtime(&path, future(3_600_000));
    let err = lock::acquire(&path, &tiny(Duration::from_millis(STALE_MS))).unwrap_err();
    assert_timeout_naming(
        &err,
        &path,
        &format!("held by live process (pid {} on ", std::process::id()),
    );
}

#[test]
fn odd_content_falls_back_to_the_mtime_rule() {
    let (_d, home) = home();
    let dead = dead_pid();
    let contents: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"{\"pid\":\"12\"}".to_vec(),
        // A dead pid without a host cannot be judged.
        format!("{{\"pid\":{dead}}}").into_bytes(),
        // Too long to be ours, even though it starts like a dead holder.
        format!(
            "{{\"pid\":{dead},\"host\":\"{}\",\"pad\":\"{}\"}}",
            hostname(),
            "x".repeat(4000)
        )
        .into_bytes(),
    ];
    for (i, content) in contents.iter().enumerate() {
        let name = format!("odd{i}");
        let path = home.lock(&name);
        fs::write(&path, content).unwrap();
        let err = lock::acquire(&path, &tiny(Duration::from_secs(60))).unwrap_err();
        assert_timeout_naming(&err, &path, "held by live process");
        set_mtime(&path, long_ago());
        let start = Instant::now();
        Locks::new(home.clone())
            .with_lock(&name, || Ok(()))
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(1), "content #{i}");
        assert!(!path.exists());
    }
}

#[test]
fn unreadable_lockfiles_fall_back_to_the_mtime_rule() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, home) = home();
    // Mode 000 (root can read it anyway; its content is foreign either way).
    let path = home.lock("noread");
    fs::write(&path, "not ours").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
    let err = lock::acquire(&path, &tiny(Duration::from_secs(60))).unwrap_err();
    assert_timeout_naming(&err, &path, "held by live process");
    set_mtime_by_path(&path, long_ago());
    Locks::new(home.clone())
        .with_lock("noread", || Ok(()))
        .unwrap();

    // A FIFO: reading it would block; it must not hang the acquirer.
    let path = home.lock("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let start = Instant::now();
    let err = lock::acquire(&path, &tiny(Duration::from_secs(60))).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_timeout_naming(&err, &path, "held by live process");
    set_mtime_by_path(&path, long_ago());
    Locks::new(home.clone())
        .with_lock("fifo", || Ok(()))
        .unwrap();
    assert!(!path.exists());

    // A dangling symlink: exclusive create says "exists", while following
    // the link finds nothing; judged by the link itself, never followed.
    let path = home.lock("link");
    std::os::unix::fs::symlink(home.root().join("nowhere"), &path).unwrap();
    let start = Instant::now();
    let err = lock::acquire(&path, &tiny(Duration::from_secs(60))).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_timeout_naming(&err, &path, "held by live process");
    assert!(!home.root().join("nowhere").exists());
}

// ---------------------------------------------------------------------------
// faults: fail at once, naming the path
// ---------------------------------------------------------------------------

#[test]
fn a_directory_in_place_of_the_lockfile_fails_at_once() {
    let (_d, home) = home();
    let path = home.lock("dir");
    fs::create_dir(&path).unwrap();
    let start = Instant::now();
    let err = Locks::new(home).with_lock("dir", || Ok(())).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(500));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("directory"), "{msg}");
    assert!(path.is_dir());
}

/// The home sits under a regular file, so creating anything in it fails
/// with ENOTDIR: the stand-in for a home we may not write to when a
/// read-only mount cannot be made (`a_read_only_home_fails_at_once`).
#[test]
fn a_home_below_a_regular_file_fails_at_once() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("file"), "").unwrap();
    let home = LedgerHome::new(d.path().join("file/home"));
    let path = home.lock("x");
    let start = Instant::now();
    let err = lock::acquire(&path, &LockOptions::default()).unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(500));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("Not a directory"), "{msg}");
    // Through the manager, creating the home already fails, naming it.
    let err = Locks::new(home.clone())
        .with_lock("x", || Ok(()))
        .unwrap_err();
    assert!(
        err.to_string().contains(&home.root().display().to_string()),
        "{err}"
    );
}

/// A read-only bind mount of the home, made in a child process's private
/// mount namespace (needs CAP_SYS_ADMIN; where that is missing the test
/// says so and relies on `a_home_below_a_regular_file_fails_at_once`).
#[test]
fn a_read_only_home_fails_at_once() {
    let (_d, home) = home();
    let path = home.lock("ro");
    let mut cmd = child("try-acquire", &[path.to_str().unwrap()]);
    cmd.stdout(Stdio::piped());
    support::role::private_mounts(&mut cmd, Some(home.root()), true);
    let mut c = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("notice: cannot make a read-only mount here ({e}); covered by ENOTDIR");
            return;
        }
    };
    let mut events = Events::of(&mut c, "EVENT ");
    let (_, rest) = events.expect("err");
    assert!(c.wait().unwrap().success());
    let (ms, msg) = rest.split_once(' ').unwrap();
    assert!(ms.parse::<u64>().unwrap() < 500, "{rest}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("Read-only file system"), "{msg}");
    assert!(!path.exists());
}

/// A home we lack write permission for. Root ignores mode bits, so as root
/// the attempt runs in a child process with the uid and gid of `nobody`.
#[test]
fn a_home_without_write_permission_fails_at_once() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let d = tempfile::tempdir().unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let root = d.path().join("home");
    fs::create_dir(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o555)).unwrap();
    let path = LedgerHome::new(&root).lock("perm");
    // SAFETY: geteuid takes nothing and cannot fail.
    let msg = if unsafe { libc::geteuid() } == 0 {
        let mut cmd = child("try-acquire", &[path.to_str().unwrap()]);
        cmd.uid(65534).gid(65534).stdout(Stdio::piped());
        let mut c = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("notice: cannot run as nobody here ({e}); skipping");
                return;
            }
        };
        let mut events = Events::of(&mut c, "EVENT ");
        let (_, rest) = events.expect("err");
        assert!(c.wait().unwrap().success());
        let (ms, msg) = rest.split_once(' ').unwrap();
        assert!(ms.parse::<u64>().unwrap() < 500, "{rest}");
        msg.to_string()
    } else {
        let start = Instant::now();
        let err = lock::acquire(&path, &LockOptions::default()).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(500));
        err.to_string()
    };
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("Permission denied"), "{msg}");
}

// ---------------------------------------------------------------------------
// with the Node peer
// ---------------------------------------------------------------------------

#[test]
fn node_waits_while_rust_holds() {
    let Some(node) = node_or_skip() else { return };
    let (_d, home) = home();
    let path = home.lock("ledger");
    let guard = Locks::new(home).acquire("ledger").unwrap();
    let mut p = peer(node, &["acquire-once", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    let mut events = Events::of(&mut p, "");
    let (trying, _) = events.expect("trying");
    std::thread::sleep(Duration::from_millis(400));
    let releasing = now_ms();
    drop(guard);
    let (acquired, _) = events.expect("acquired");
    assert!(p.wait().unwrap().success());
    assert!(
        acquired >= releasing,
        "node acquired at {acquired}, released at {releasing}"
    );
    assert!(
        acquired - trying >= 350,
        "node waited only {} ms",
        acquired - trying
    );
    assert!(!path.exists());
}

#[test]
fn rust_waits_while_node_holds() {
    let Some(node) = node_or_skip() else { return };
    let (_d, home) = home();
    let path = home.lock("ledger");
    let mut p = peer(node, &["hold", path.to_str().unwrap(), "600"])
        .spawn()
        .unwrap();
    let mut events = Events::of(&mut p, "");
    events.expect("acquired");
    // The Node peer's lockfile is empty: judged by its mtime only.
    assert_eq!(fs::read(&path).unwrap(), b"");
    let got = Locks::new(home)
        .with_lock("ledger", || Ok(now_ms()))
        .unwrap();
    let (releasing, _) = events.expect("releasing");
    assert!(p.wait().unwrap().success());
    assert!(
        got >= releasing,
        "rust acquired at {got}, node released at {releasing}"
    );
}

#[test]
fn rust_recovers_a_stale_lock_left_by_node() {
    let Some(node) = node_or_skip() else { return };
    let (_d, home) = home();
    let path = home.lock("cursors");
    let age = (STALE_MS + 5_000).to_string();
    let out = peer(node, &["leave-stale", path.to_str().unwrap(), &age])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(path.exists());
    let start = Instant::now();
    Locks::new(home).with_lock("cursors", || Ok(())).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(!path.exists());
}

#[test]
fn node_recovers_a_stale_lock_left_by_rust() {
    let Some(node) = node_or_skip() else { return };
    let (_d, home) = home();
    let path = home.lock("archive");
    // A crashed holder: our lockfile, never released, gone quiet.
    lock::acquire(&path, &LockOptions::default()).unwrap();
    assert!(fs::read_to_string(&path).unwrap().contains("\"pid\":"));
    set_mtime(&path, long_ago());
    let mut p = peer(node, &["acquire-once", path.to_str().unwrap()])
        .spawn()
        .unwrap();
    let mut events = Events::of(&mut p, "");
    events.expect("trying");
    let (_, waited) = events.expect("acquired");
    assert!(p.wait().unwrap().success());
    let waited: u64 = waited.trim_start_matches("waited ").parse().unwrap();
    assert!(waited < 1_000, "node took {waited} ms");
    assert!(!path.exists());
}

#[test]
fn node_and_rust_processes_share_a_counter() {
    let Some(node) = node_or_skip() else { return };
    let (d, home) = home();
    let counter = d.path().join("counter");
    let path = home.lock("ledger");
    let root = home.root().to_str().unwrap().to_string();
    let c = counter.to_str().unwrap();
    let mut rust: Vec<Child> = (0..2)
        .map(|_| {
            child("increment", &[&root, "ledger", c, "30"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut js: Vec<Child> = (0..2)
        .map(|_| {
            peer(node, &["increment", path.to_str().unwrap(), c, "30"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for p in rust.iter_mut().chain(js.iter_mut()) {
        assert!(p.wait().unwrap().success());
    }
    assert_eq!(fs::read_to_string(&counter).unwrap(), "120\n");
    assert!(!path.exists());
}
