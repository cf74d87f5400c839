//! The team ledger against a real PostgreSQL server: push, resume after
//! kill -9 at seeded points, concurrent pushers with overlapping records,
//! team queries against the reference's outputs, hostile servers.

mod support;
mod team_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use relayburn_ledger::team::push::{Phase, PushObserver, Quiet};
use relayburn_ledger::team::query::TeamLedger;
use relayburn_ledger::team::{PushOptions, Target};
use relayburn_ledger::{json, Kind, Ledger, LedgerHome, Query, Value};

/// The restart test stops the server under everyone else's feet: it runs
/// alone, the other tests share.
static SERVER: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_server() -> std::sync::RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|p| p.into_inner())
}

fn load(path: &Path) -> Value {
    json::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A temporary home holding a copy of the reference fixture ledger.
fn fixture_home(reference: &Path) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference.join("home/ledger.jsonl"),
        dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    (dir, ledger)
}

fn opts(machine: &str, batch_rows: usize) -> PushOptions {
    PushOptions {
        machine_id: Some(machine.into()),
        batch_rows,
        ..PushOptions::default()
    }
}

fn team_query(url: &str, kind: Kind, q: &Query, machine: Option<&str>) -> Vec<Value> {
    let mut team = TeamLedger::open(&Target::parse(url).unwrap()).unwrap();
    let mut out = Vec::new();
    team.query(kind, q, machine, |v| {
        out.push(v);
        Ok(())
    })
    .unwrap();
    out
}

/// The reference's ledger output with repeated records (same turn id,
/// `source|sessionId|messageId`) kept once, at their first place: a keyed
/// store holds a record once, as the reference's SQLite backend does.
fn first_of_each_turn(want: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    want.iter()
        .filter(|t| {
            let k = ["source", "sessionId", "messageId"].map(|f| t.get(f).map(Value::to_json));
            seen.insert(k)
        })
        .cloned()
        .collect()
}

fn assert_same(what: &str, want: &[Value], got: &[Value]) {
    assert_eq!(got.len(), want.len(), "{what}: result count");
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(g.to_json(), w.to_json(), "{what}: item {i}");
    }
}

#[test]
fn fixture_push_answers_every_query_as_the_reference() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let reference = reference_or_skip!();
    let url = team_support::fresh_db(&admin, "fixture");
    let (dir, ledger) = fixture_home(&reference);
    let before = team_support::home_snapshot(dir.path());
    let s = ledger
        .push_to(&Target::parse(&url).unwrap(), &opts("m1", 500), &mut Quiet)
        .unwrap();
    assert_eq!(team_support::home_snapshot(dir.path()), before);
    // 1,597 turn lines of which 8 repeat an earlier one; the torn last
    // line is left for a later push, and every other line parses.
    assert_eq!(s.tables["turns"].read, 1597);
    assert_eq!(s.tables["turns"].inserted, 1589);
    assert_eq!(s.tables["stamps"].inserted, 15);
    assert_eq!(s.skipped, 0, "{:?}", s.skipped_first);

    let home = reference.join("home");
    let inputs = load(&home.join("queries-in.json"));
    let expected = load(&home.join("queries.json"));
    let turn_queries = inputs.get("turns").and_then(Value::as_array).unwrap();
    for (q, e) in turn_queries.iter().zip(expected.as_array().unwrap()) {
        assert_eq!(e.get("query"), Some(q));
        let want = first_of_each_turn(e.get("ledger").and_then(Value::as_array).unwrap());
        for machine in [None, Some("m1")] {
            let got = team_query(&url, Kind::Turn, &Query::from_json(q), machine);
            assert_same(&format!("turns {} {machine:?}", q.to_json()), &want, &got);
        }
    }
    assert!(team_query(&url, Kind::Turn, &Query::default(), Some("other")).is_empty());
    let aux = load(&home.join("aux-queries.json"));
    for e in aux.as_array().unwrap() {
        let q = Query::from_json(e.get("query").unwrap());
        for (kind, key) in [
            (Kind::Compaction, "compactions"),
            (Kind::Relationship, "relationships"),
            (Kind::ToolResultEvent, "toolResultEvents"),
            (Kind::UserTurn, "userTurns"),
        ] {
            let want = e.get(key).and_then(Value::as_array).unwrap();
            assert_same(key, want, &team_query(&url, kind, &q, None));
        }
    }
}

// --- kill -9 at seeded points ---------------------------------------------

/// Set in a child process: push, and at the given batch and phase create
/// a marker file and wait to be killed.
const CHILD: &str = "RELAYBURN_TEST_TEAM_CHILD";

struct StallAt {
    batch: u64,
    phase: Phase,
    marker: PathBuf,
    go: PathBuf,
}

impl PushObserver for StallAt {
    fn phase(&mut self, batch: u64, phase: Phase) {
        if batch == self.batch && phase == self.phase {
            std::fs::write(&self.marker, b"").unwrap();
            // Until killed, or told to go on.
            while !self.go.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Staged => "staged",
        Phase::Inserted => "inserted",
        Phase::Committed => "committed",
        Phase::Recorded => "recorded",
    }
}

/// Not a test on its own: the body of a child process of the tests below.
#[test]
fn child_push() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\t').collect();
    let [home, url, batch, phase, marker, go] = parts[..] else {
        panic!("bad child spec");
    };
    let phase = [
        Phase::Staged,
        Phase::Inserted,
        Phase::Committed,
        Phase::Recorded,
    ]
    .into_iter()
    .find(|p| phase_name(*p) == phase)
    .unwrap();
    let ledger = Ledger::open(LedgerHome::new(home)).unwrap();
    let mut stall = StallAt {
        batch: batch.parse().unwrap(),
        phase,
        marker: marker.into(),
        go: go.into(),
    };
    match ledger.push_to(&Target::parse(url).unwrap(), &opts("m1", 100), &mut stall) {
        Ok(_) => {}
        Err(e) => {
            eprintln!("CHILD-ERROR {e}");
            std::process::exit(1);
        }
    }
}

/// Start a child that stalls at (batch, phase); returns it once stalled.
fn stalled_child(
    home: &Path,
    url: &str,
    batch: u64,
    phase: Phase,
    work: &Path,
) -> (std::process::Child, PathBuf) {
    let marker = work.join("stalled");
    let go = work.join("go");
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_file(&go);
    let spec = [
        home.to_str().unwrap(),
        url,
        &batch.to_string(),
        phase_name(phase),
        marker.to_str().unwrap(),
        go.to_str().unwrap(),
    ]
    .join("\t");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_push", "--nocapture", "--test-threads=1"])
        .env(CHILD, spec)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the stall (or for the child to end without reaching it).
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child ended before batch {batch} {phase:?}: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, go)
}

/// Every record of the fixture is on the server exactly once, and the
/// machine's cursor sits at the end of the last complete line.
fn assert_complete(url: &str, ledger_len: u64) {
    let mut c = team_support::client(url);
    for (table, n) in [
        ("turns", 1589),
        ("tool_result_events", 1340),
        ("user_turns", 732),
        ("compactions", 18),
        ("relationships", 7),
        ("stamps", 15),
    ] {
        let got = team_support::count(&mut c, &format!("SELECT count(*) FROM {table}"));
        assert_eq!(got, n, "{table}");
    }
    let offset: i64 = c
        .query_one(
            "SELECT ledger_offset FROM push_cursors WHERE machine_id = 'm1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(offset as u64 <= ledger_len && offset as u64 > ledger_len - 2048);
}

#[test]
fn kill_9_at_twenty_seeded_points_then_a_retry_completes() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let reference = reference_or_skip!();
    let (dir, ledger) = fixture_home(&reference);
    let len = std::fs::metadata(ledger.home().ledger()).unwrap().len();
    let before = team_support::home_snapshot(dir.path());
    let work = tempfile::tempdir().unwrap();
    // A fixed-seed LCG picks (batch, phase); 3,709 lines make 37 batches.
    let mut seed: u64 = 0x5eed_0014;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let phases = [
        Phase::Staged,
        Phase::Inserted,
        Phase::Committed,
        Phase::Recorded,
    ];
    for point in 0..20 {
        // Every fifth point is the first push into an empty database.
        let url = if point % 5 == 0 {
            team_support::fresh_db(&admin, &format!("kill{point}"))
        } else {
            team_support::fresh_db(&admin, "kill")
        };
        let batch = next(37);
        let phase = phases[next(4) as usize];
        let (mut child, _go) = stalled_child(dir.path(), &url, batch, phase, work.path());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            team_support::home_snapshot(dir.path()),
            before,
            "point {point}"
        );
        let committed: i64 = team_support::count(
            &mut team_support::client(&url),
            "SELECT coalesce(max(ledger_offset), 0) FROM push_cursors",
        );
        let expect_committed = matches!(phase, Phase::Committed | Phase::Recorded);
        assert_eq!(
            committed > 0,
            batch > 0 || expect_committed,
            "point {point}: batch {batch} {phase:?}"
        );
        let s = ledger
            .push_to(&Target::parse(&url).unwrap(), &opts("m1", 100), &mut Quiet)
            .unwrap();
        assert_eq!(s.from_offset, committed as u64, "resumes at the commit");
        assert_complete(&url, len);
        assert_eq!(team_support::home_snapshot(dir.path()), before);
    }
}

// --- concurrency ------------------------------------------------------------

/// A turn record for session `s`, message `m`; the model varies with both
/// so that no two differ only by id (the content-fingerprint dedup would
/// drop them at append).
fn turn(s: &str, m: &str) -> Value {
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{s}","messageId":"{m}","turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"{s}/{m}","usage":{{"input":1,"output":2}},"toolCalls":[]}}"#
    ))
    .unwrap()
}

#[test]
fn eight_homes_pushing_at_once_store_every_record_once() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let url = team_support::fresh_db(&admin, "eight");
    const HOMES: usize = 8;
    const OWN: usize = 400;
    const SHARED: usize = 300;
    let dirs: Vec<tempfile::TempDir> = (0..HOMES).map(|_| tempfile::tempdir().unwrap()).collect();
    for (h, dir) in dirs.iter().enumerate() {
        let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        // Shared records first in some homes, last in others.
        let own: Vec<Value> = (0..OWN)
            .map(|i| turn(&format!("own-{h}"), &format!("m{i}")))
            .collect();
        let shared: Vec<Value> = (0..SHARED)
            .map(|i| turn("shared", &format!("m{i}")))
            .collect();
        if h % 2 == 0 {
            ledger.append_turns(shared).unwrap();
            ledger.append_turns(own).unwrap();
        } else {
            ledger.append_turns(own).unwrap();
            ledger.append_turns(shared).unwrap();
        }
    }
    let target = Target::parse(&url).unwrap();
    std::thread::scope(|scope| {
        for (h, dir) in dirs.iter().enumerate() {
            let target = &target;
            scope.spawn(move || {
                let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
                ledger
                    .push_to(target, &opts(&format!("home-{h}"), 97), &mut Quiet)
                    .unwrap();
            });
        }
    });
    let mut c = team_support::client(&url);
    assert_eq!(
        team_support::count(&mut c, "SELECT count(*) FROM turns"),
        (HOMES * OWN + SHARED) as i64
    );
    for h in 0..HOMES {
        let own = team_support::count(
            &mut c,
            &format!("SELECT count(*) FROM turns WHERE session_id = 'own-{h}' AND machine_id = 'home-{h}'"),
        );
        assert_eq!(own, OWN as i64, "home {h} owns its own records");
    }
    // Each shared record belongs to exactly one of the machines.
    assert_eq!(
        team_support::count(
            &mut c,
            "SELECT count(*) FROM turns WHERE session_id = 'shared' AND machine_id LIKE 'home-%'"
        ),
        SHARED as i64
    );
    let sum: i64 = c
        .query_one("SELECT sum(rows_inserted)::bigint FROM push_cursors", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        sum,
        (HOMES * OWN + SHARED) as i64,
        "per-machine counts add up"
    );
    assert_eq!(
        team_support::count(&mut c, "SELECT count(*) FROM push_cursors"),
        HOMES as i64
    );
}

// --- hostile servers ----------------------------------------------------------

fn push_err(ledger: &Ledger, url: &str) -> String {
    let e = ledger
        .push_to(&Target::parse(url).unwrap(), &opts("m1", 100), &mut Quiet)
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn wrong_password_and_missing_database_are_named_without_the_password() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let (_d, ledger) = {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        l.append_turns(vec![turn("s", "m")]).unwrap();
        (dir, l)
    };
    let pw = team_support::password(&admin);
    let wrong = admin.replacen(&format!(":{pw}@"), ":Wr0ngPassw0rd@", 1);
    let e = push_err(&ledger, &wrong);
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("Wr0ngPassw0rd") && !e.contains(&pw), "{e}");
    let missing = team_support::with_db(&admin, "no_such_db_here");
    let e = push_err(&ledger, &missing);
    assert!(e.contains("\"no_such_db_here\" does not exist"), "{e}");
    assert!(!e.contains(&pw), "{e}");
    // Refused connection: a port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = format!("postgres://burn:{pw}@127.0.0.1:{port}/x");
    let e = push_err(&ledger, &refused);
    assert!(e.contains("connect"), "{e}");
    assert!(!e.contains(&pw), "{e}");
    assert!(
        ledger.push_records().unwrap().is_empty(),
        "no push recorded"
    );
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let url = team_support::fresh_db(&admin, "newer");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    ledger.append_turns(vec![turn("s", "m1")]).unwrap();
    ledger
        .push_to(&Target::parse(&url).unwrap(), &opts("m1", 100), &mut Quiet)
        .unwrap();
    let mut c = team_support::client(&url);
    c.batch_execute("UPDATE schema_state SET version = 2")
        .unwrap();
    ledger.append_turns(vec![turn("s", "m2")]).unwrap();
    let e = push_err(&ledger, &url);
    assert!(
        e.contains("version 2, newer than this burn supports (1)"),
        "{e}"
    );
    assert_eq!(team_support::count(&mut c, "SELECT count(*) FROM turns"), 1);
    assert_eq!(
        team_support::count(&mut c, "SELECT version::bigint FROM schema_state"),
        2
    );
}

#[test]
fn a_table_dropped_by_hand_is_named_and_nothing_is_lost() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let url = team_support::fresh_db(&admin, "dropped");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    ledger.append_turns(vec![turn("s", "m1")]).unwrap();
    let target = Target::parse(&url).unwrap();
    ledger
        .push_to(&target, &opts("m1", 100), &mut Quiet)
        .unwrap();
    let mut c = team_support::client(&url);
    c.batch_execute("DROP TABLE user_turns").unwrap();
    ledger.append_turns(vec![turn("s", "m2")]).unwrap();
    let before = team_support::home_snapshot(dir.path());
    let e = push_err(&ledger, &url);
    assert!(e.contains("table user_turns missing"), "{e}");
    assert_eq!(team_support::count(&mut c, "SELECT count(*) FROM turns"), 1);
    assert_eq!(team_support::home_snapshot(dir.path()), before);
    // Once the table is back (here: the schema recreated), the push
    // picks up where the last commit left off.
    c.batch_execute("DELETE FROM schema_state").unwrap();
    let s = ledger
        .push_to(&target, &opts("m1", 100), &mut Quiet)
        .unwrap();
    assert_eq!(s.rows_inserted(), 1);
    assert_eq!(team_support::count(&mut c, "SELECT count(*) FROM turns"), 2);
}

#[test]
fn a_rewritten_ledger_is_pushed_again_from_the_start() {
    let admin = server_or_skip!();
    let _server = shared_server();
    let url = team_support::fresh_db(&admin, "rewritten");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    ledger
        .append_turns(vec![turn("s", "m1"), turn("s", "m2")])
        .unwrap();
    let target = Target::parse(&url).unwrap();
    ledger
        .push_to(&target, &opts("m1", 100), &mut Quiet)
        .unwrap();
    // Replace the ledger with a different history of the same length.
    let text = std::fs::read_to_string(ledger.home().ledger()).unwrap();
    std::fs::write(ledger.home().ledger(), text.replace("\"m1\"", "\"m9\"")).unwrap();
    let s = ledger
        .push_to(&target, &opts("m1", 100), &mut Quiet)
        .unwrap();
    assert_eq!(s.from_offset, 0);
    assert!(s.restarted.is_some());
    assert_eq!((s.rows_read(), s.rows_inserted()), (2, 1));
}

#[test]
fn a_server_restart_mid_push_fails_in_one_line_and_a_retry_completes() {
    let admin = server_or_skip!();
    let reference = reference_or_skip!();
    let (Ok(bin), Ok(data)) = (
        std::env::var("RELAYBURN_TEST_POSTGRES_BIN"),
        std::env::var("RELAYBURN_TEST_POSTGRES_DATA"),
    ) else {
        eprintln!(
            "notice: RELAYBURN_TEST_POSTGRES_BIN/DATA not set; cannot restart the server, skipping"
        );
        return;
    };
    let owner = std::env::var("RELAYBURN_TEST_POSTGRES_OWNER").unwrap_or_default();
    let _alone = SERVER.write().unwrap_or_else(|p| p.into_inner());
    let url = team_support::fresh_db(&admin, "restart");
    let (dir, ledger) = fixture_home(&reference);
    let len = std::fs::metadata(ledger.home().ledger()).unwrap().len();
    let before = team_support::home_snapshot(dir.path());
    let work = tempfile::tempdir().unwrap();
    let (child, go) = stalled_child(dir.path(), &url, 5, Phase::Staged, work.path());
    let pg_ctl = format!("{bin}/pg_ctl");
    let mut restart = if owner.is_empty() || unsafe { libc::geteuid() } != 0 {
        Command::new(&pg_ctl)
    } else {
        let mut c = Command::new("runuser");
        c.args(["-u", &owner, "--", &pg_ctl]);
        c
    };
    let status = restart
        .args(["-D", &data, "-m", "fast", "-w", "restart"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(&go, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("CHILD-ERROR "))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(line.contains("postgres burn@127.0.0.1"), "{line}");
    assert!(!stderr.contains(&team_support::password(&admin)));
    assert_eq!(team_support::home_snapshot(dir.path()), before);
    let s = ledger
        .push_to(&Target::parse(&url).unwrap(), &opts("m1", 100), &mut Quiet)
        .unwrap();
    assert!(s.from_offset > 0, "batches 0..5 were committed");
    assert_complete(&url, len);
}
