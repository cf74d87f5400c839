use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::holder::{iso_utc, parse_proc_stat, proc_stat, this_start_ticks};
use super::protocol::{acquire_loop, take_away, Reason, Seen, TakeAway};
use super::*;

fn fast() -> LockOptions {
    LockOptions {
        fast_retries: 2,
        fast_retry_delay: Duration::from_millis(5),
        slow_retries: 0,
        slow_retry_delay: Duration::from_millis(5),
        stale: Duration::from_secs(60),
    }
}

#[test]
fn detached_lock_moves_between_threads_and_is_released_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::with_options(LedgerHome::new(dir.path()), fast());
    let held = std::thread::scope(|s| s.spawn(|| locks.acquire_detached("x")).join())
        .unwrap()
        .unwrap();
    assert!(dir.path().join("x.lock").exists());
    // Not held by this thread: a plain acquire waits on the file and times out.
    assert!(matches!(locks.acquire("x"), Err(Error::LockTimeout { .. })));
    std::thread::spawn(move || drop(held)).join().unwrap();
    assert!(!dir.path().join("x.lock").exists());
}

#[test]
fn assumed_locks_re_enter_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let locks = Locks::with_options(LedgerHome::new(dir.path()), fast());
    let held = locks.acquire_detached("x").unwrap();
    {
        let _assumed = locks.assume_held(&["x"]);
        let inner = locks.acquire("x").unwrap();
        assert!(!inner.is_outermost());
    }
    assert!(locks.acquire("x").is_err(), "the marker is gone after drop");
    drop(held);
    // A lock the thread really holds stays held when a marker for it ends.
    let own = locks.acquire("y").unwrap();
    drop(locks.assume_held(&["y"]));
    assert!(!locks.acquire("y").unwrap().is_outermost());
    drop(own);
    assert!(!dir.path().join("y.lock").exists());
}

#[test]
fn iso_dates_by_hand() {
    assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
    // 2000-02-29 is a leap day: 10957 days + 59 days after 1970.
    assert_eq!(
        iso_utc((10_957 + 59) * 86_400_000),
        "2000-02-29T00:00:00.000Z"
    );
    // 2024-03-01T12:34:56.789Z = 19783 days + 45296.789 s.
    assert_eq!(
        iso_utc(19_783 * 86_400_000 + 45_296_789),
        "2024-03-01T12:34:56.789Z"
    );
    assert_eq!(iso_utc(86_399_999), "1970-01-01T23:59:59.999Z");
}

#[test]
fn proc_stat_fields_counted_after_the_name() {
    // A command name with spaces and a closing parenthesis inside.
    let line = "4242 (we ird) (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 19 20";
    assert_eq!(parse_proc_stat(line), Some(('S', 987_654)));
    assert_eq!(parse_proc_stat("1 (short) Z 1 2"), None);
    assert_eq!(parse_proc_stat("no parens"), None);
}

#[test]
fn own_start_time_is_readable_here() {
    if Path::new("/proc/self/stat").exists() {
        let ticks = this_start_ticks().unwrap();
        let again = proc_stat(&format!("/proc/{}/stat", std::process::id()));
        assert_eq!(again.map(|(_, t)| t), Some(ticks));
    }
}

#[test]
fn holder_line_round_trips_and_rejects_foreign_content() {
    let h = LockHolder {
        pid: 77,
        host: Some("box-1".into()),
        since_ms: Some(1_700_000_000_123),
        start_ticks: Some(5),
        pid_ns: Some("pid:[4026531836]".into()),
    };
    let line = h.to_line();
    assert_eq!(
        line,
        "{\"pid\":77,\"host\":\"box-1\",\"since\":1700000000123,\"pstart\":5,\"pidns\":\"pid:[4026531836]\"}\n"
    );
    assert_eq!(LockHolder::parse(&line), Some(h));
    for bad in [
        "",
        "\n",
        "garbage",
        "{}",
        "{\"pid\":0}",
        "{\"pid\":-5}",
        "{\"pid\":1.5}",
        "{\"pid\":\"12\"}",
        "{\"pid\":4294967296}",
        "[1]",
    ] {
        assert_eq!(LockHolder::parse(bad), None, "{bad:?}");
    }
    // Only the pid is required; other fields are best effort.
    assert_eq!(
        LockHolder::parse("{\"pid\":9,\"host\":3}"),
        Some(LockHolder {
            pid: 9,
            host: None,
            since_ms: None,
            start_ticks: None,
            pid_ns: None
        })
    );
}

#[test]
fn holder_names_itself_in_messages() {
    let h = LockHolder {
        pid: 12,
        host: Some("h".into()),
        since_ms: Some(0),
        start_ticks: None,
        pid_ns: None,
    };
    assert_eq!(h.to_string(), "pid 12 on h since 1970-01-01T00:00:00.000Z");
    assert_eq!(
        Reason::Live(Some(h)).detail(),
        "held by live process (pid 12 on h since 1970-01-01T00:00:00.000Z)"
    );
}

#[test]
fn a_holder_on_another_host_is_never_judged_dead() {
    let mut h = LockHolder::current();
    h.host = Some(format!("{}-elsewhere", this_host().unwrap_or("x")));
    h.pid = i32::MAX as u32; // almost certainly no such process
    assert_eq!(h.liveness(), Liveness::Unknown);
}

#[test]
fn this_process_is_alive_and_a_wrong_start_time_means_reuse() {
    if this_host().is_none() {
        return;
    }
    let me = LockHolder::current();
    assert_eq!(me.liveness(), Liveness::Alive);
    if let Some(t) = me.start_ticks {
        let reused = LockHolder {
            start_ticks: Some(t + 1),
            ..me
        };
        assert_eq!(reused.liveness(), Liveness::Dead);
    }
}

#[test]
fn a_lockfile_that_keeps_vanishing_cannot_make_an_acquirer_spin() {
    // The file exists (create says "exists") but every look says it is
    // gone: without a bound this loops forever.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spin.lock");
    fs::write(&path, "").unwrap();
    let (looks, err) = looks_until_timeout(&path, &retries(2, 2, 60_000), || Seen::Vanished);
    // 4 sleeps, 5 rounds; each round is 16 immediate retries plus the
    // look that falls through to a sleep (or to the end).
    assert_eq!(looks, 5 * (16 + 1));
    assert!(
        matches!(err, Error::LockTimeout { attempts: 4, .. }),
        "{err}"
    );
}

#[test]
fn a_lockfile_that_cannot_be_inspected_times_out_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.lock");
    fs::write(&path, "").unwrap();
    let (looks, err) = looks_until_timeout(&path, &retries(1, 1, 60_000), || {
        Seen::Uninspectable(io::Error::from_raw_os_error(libc::EIO))
    });
    assert_eq!(looks, 3);
    let msg = err.to_string();
    assert!(msg.contains("could not be inspected"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

/// Options with 1 ms sleeps: `fast` then `slow` of them.
fn retries(fast: u32, slow: u32, stale_ms: u64) -> LockOptions {
    LockOptions {
        fast_retries: fast,
        fast_retry_delay: Duration::from_millis(1),
        slow_retries: slow,
        slow_retry_delay: Duration::from_millis(1),
        stale: Duration::from_millis(stale_ms),
    }
}

fn quick(stale: Duration) -> LockOptions {
    retries(2, 1, u64::try_from(stale.as_millis()).unwrap())
}

/// Run the retry loop on `path` with every look answering `seen()`;
/// how many looks it took, and the error it gave up with.
fn looks_until_timeout(path: &Path, o: &LockOptions, seen: impl Fn() -> Seen) -> (u32, Error) {
    let mut looks = 0u32;
    let err = acquire_loop(
        path,
        o,
        &mut |_| {
            looks += 1;
            seen()
        },
        &|_| {},
    )
    .err()
    .unwrap();
    (looks, err)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_fresh_file_moved_aside_by_mistake_is_put_back_unchanged() {
    // The race this guards against: we judged an orphan stale, but by
    // the time we move it, a new holder has replaced it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.lock");
    fs::write(&path, "theirs").unwrap();
    let ino = fs::metadata(&path).unwrap().ino();
    assert!(matches!(
        take_away(&path, Duration::from_secs(60)),
        TakeAway::Live(None)
    ));
    let m = fs::metadata(&path).unwrap();
    assert_eq!(m.ino(), ino);
    assert_eq!(fs::read_to_string(&path).unwrap(), "theirs");
    assert_eq!(names_in(dir.path()), ["x.lock"]);
}

#[test]
fn a_stale_file_taken_away_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.lock");
    let f = File::create(&path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    drop(f);
    assert!(matches!(
        take_away(&path, Duration::from_secs(5)),
        TakeAway::Gone
    ));
    assert!(names_in(dir.path()).is_empty());
    // Nothing there at all: reported as gone, not as a failure.
    assert!(matches!(
        take_away(&path, Duration::from_secs(5)),
        TakeAway::Gone
    ));
}

#[test]
fn acquire_writes_our_holder_line_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("y.lock");
    acquire(&path, &quick(Duration::from_secs(60))).unwrap();
    let h = read_holder(&path).unwrap();
    assert_eq!(h.pid, std::process::id());
    assert_eq!(h.host.as_deref(), this_host());
    // Held: a second acquire times out.
    let err = acquire(&path, &quick(Duration::from_secs(60))).unwrap_err();
    assert!(
        err.to_string().contains("held by live process (pid "),
        "{err}"
    );
}
