//! The PostgreSQL storage backend with real processes: two processes
//! appending overlapping batches while eight homes push into the same
//! database, a process killed while it holds a named lock, and errors
//! that never carry the password. Needs a server (see `team_support`).

mod support;
mod team_support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use relayburn_ledger::lock::LockOptions;
use relayburn_ledger::store::Store;
use relayburn_ledger::team::push::Quiet;
use relayburn_ledger::team::{PushOptions, Target};
use relayburn_ledger::{json, Kind, Ledger, LedgerHome, PostgresStore, Query, Value};

const ENTRY: &str = "child_process_entry";

/// Short lock waits: 5 × 10 ms then 2 × 50 ms.
fn short_waits() -> LockOptions {
    LockOptions {
        fast_retries: 5,
        fast_retry_delay: Duration::from_millis(10),
        slow_retries: 2,
        slow_retry_delay: Duration::from_millis(50),
        ..LockOptions::default()
    }
}

/// A turn whose content fingerprint depends on `fp` only (model, ts and
/// usage), whatever its id.
fn turn(session: &str, message: &str, fp: &str) -> Value {
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{session}","messageId":"{message}","turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"{fp}","usage":{{"input":1,"output":2}},"toolCalls":[]}}"#
    ))
    .unwrap()
}

/// The records appender `who` (0 or 1) offers: `SHARED` turns both offer,
/// in opposite orders and different batch sizes, and one twin per pair
/// `k` (same fingerprint, an id of its own).
const SHARED: usize = 600;
const TWINS: usize = 200;

fn appender_batches(who: usize) -> Vec<Vec<Value>> {
    let mut shared: Vec<Value> = (0..SHARED)
        .map(|i| turn("shared", &format!("m{i}"), &format!("shared-{i}")))
        .collect();
    if who == 1 {
        shared.reverse();
    }
    let twins: Vec<Value> = (0..TWINS)
        .map(|k| {
            turn(
                &format!("twin-{who}"),
                &format!("t{k}"),
                &format!("twin-{k}"),
            )
        })
        .collect();
    let size = if who == 0 { 25 } else { 40 };
    // Shared and twin batches alternate so both processes are in the
    // middle of their work at once.
    let mut out = Vec::new();
    let (mut s, mut t) = (shared.chunks(size), twins.chunks(10));
    loop {
        let (a, b) = (s.next(), t.next());
        if a.is_none() && b.is_none() {
            break;
        }
        out.extend(a.map(<[Value]>::to_vec));
        out.extend(b.map(<[Value]>::to_vec));
    }
    out
}

#[test]
#[ignore = "child process role, started by the other tests"]
fn child_process_entry() {
    let Some((role, args)) = support::role::current() else {
        return;
    };
    match role.as_str() {
        // <url> <who>: append this appender's batches.
        "append" => {
            let s = PostgresStore::open(&args[0]).unwrap();
            for batch in appender_batches(args[1].parse().unwrap()) {
                s.append_turns(batch).unwrap();
            }
        }
        // <url> <lock name>: take the lock, say so, and wait to be killed.
        "hold" => {
            let s = PostgresStore::open(&args[0]).unwrap();
            let st: &dyn Store = &s;
            st.with_lock(&args[1], || {
                println!("held");
                std::thread::sleep(Duration::from_secs(600));
                Ok(())
            })
            .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

/// A turn for the pushing homes: own records and ones the appenders offer.
fn home_turns(h: usize) -> Vec<Value> {
    let mut out: Vec<Value> = (0..150)
        .map(|i| {
            turn(
                &format!("home-{h}"),
                &format!("m{i}"),
                &format!("home-{h}-{i}"),
            )
        })
        .collect();
    // Every home also holds a slice of the appenders' shared turns.
    out.extend(
        (h * 50..h * 50 + 100).map(|i| turn("shared", &format!("m{i}"), &format!("shared-{i}"))),
    );
    out
}

#[test]
fn two_appending_processes_and_eight_pushing_homes_store_every_id_once() {
    let admin = server_or_skip!();
    let key = tempfile::tempdir().unwrap();
    let url = team_support::store_url(&admin, key.path());
    // Migrate once before the crowd arrives.
    let store = PostgresStore::open(&url).unwrap();
    let homes: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    for (h, dir) in homes.iter().enumerate() {
        let l = Ledger::open(LedgerHome::new(dir.path())).unwrap();
        l.append_turns(home_turns(h)).unwrap();
    }
    let mut children: Vec<_> = (0..2)
        .map(|who| {
            support::role::command(ENTRY, "append", &[url.as_str(), &who.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let target = Target::parse(&url).unwrap();
    std::thread::scope(|scope| {
        for (h, dir) in homes.iter().enumerate() {
            let target = &target;
            scope.spawn(move || {
                let l = Ledger::open(LedgerHome::new(dir.path())).unwrap();
                let opts = PushOptions {
                    machine_id: Some(format!("home-{h}")),
                    batch_rows: 37,
                    ..PushOptions::default()
                };
                l.push_to(target, &opts, &mut Quiet).unwrap();
            });
        }
    });
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }

    let mut c = team_support::client(&url);
    let count = |c: &mut postgres::Client, sql: &str| team_support::count(c, sql);
    // 600 shared + 8 × 150 own + one of each of the 200 twin pairs.
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM turns"),
        (SHARED + 8 * 150 + TWINS) as i64
    );
    for h in 0..8 {
        assert_eq!(
            count(
                &mut c,
                &format!("SELECT count(*) FROM turns WHERE session_id = 'home-{h}' AND machine_id = 'home-{h}'")
            ),
            150,
            "home {h}"
        );
    }
    // Each twin pair is stored once: the second appender saw the first's
    // fingerprint, whichever came first.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT record_json::json->>'model') FROM turns WHERE session_id LIKE 'twin-%'"
        ),
        TWINS as i64
    );
    // The store numbered its rows without a gap in ordering: no number
    // given twice.
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM (SELECT ledger_offset FROM turns WHERE machine_id = '#store' \
             GROUP BY ledger_offset HAVING count(*) > 1) d"
        ),
        0
    );
    // Through the store: every turn once.
    let got: Vec<Value> = store
        .query_records(Kind::Turn, &Query::default())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), SHARED + 8 * 150 + TWINS);
    let ids: std::collections::HashSet<String> = got
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t.get("sessionId").and_then(Value::as_str).unwrap(),
                t.get("messageId").and_then(Value::as_str).unwrap()
            )
        })
        .collect();
    assert_eq!(ids.len(), got.len());
}

#[test]
fn a_process_killed_holding_a_named_lock_frees_it_at_once() {
    let admin = server_or_skip!();
    let key = tempfile::tempdir().unwrap();
    let url = team_support::store_url(&admin, key.path());
    let store = PostgresStore::open_with_lock_options(&url, short_waits()).unwrap();
    let st: &dyn Store = &store;
    let mut child = support::role::command(ENTRY, "hold", &[url.as_str(), "ingest"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The test harness prints lines of its own; kept open until the kill.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder ended");
    }

    // Held: the wait runs out with a clear error naming lock and budget.
    let e = st.with_lock("ingest", || Ok(())).unwrap_err().to_string();
    let name = Target::parse(&url).unwrap().name().to_string();
    assert_eq!(
        e,
        format!(
            "postgres {name}: could not acquire lock 'ingest' after 8 attempts (~150ms): another process holds it"
        )
    );
    assert!(!e.contains(&team_support::password(&admin)), "{e}");
    // Another name is free meanwhile.
    st.with_lock("other", || Ok(())).unwrap();

    child.kill().unwrap();
    child.wait().unwrap();
    drop(out);
    let start = Instant::now();
    // Generous waits: the first attempt should already succeed.
    let patient = PostgresStore::open_with_lock_options(&url, LockOptions::default()).unwrap();
    let p: &dyn Store = &patient;
    p.with_lock("ingest", || Ok(())).unwrap();
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "acquired {waited:?} after the holder died"
    );
}

#[test]
fn the_password_never_appears_in_an_error() {
    let admin = server_or_skip!();
    let password = team_support::password(&admin);
    let wrong = admin.replacen(&format!(":{password}@"), ":Wrong-Pass-4417@", 1);
    let e = PostgresStore::open(&wrong).unwrap_err().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(
        !e.contains("Wrong-Pass-4417") && !e.contains(&password),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    let missing = team_support::with_db(&admin, "no_such_database_here");
    let e = PostgresStore::open(&missing).unwrap_err().to_string();
    assert!(e.contains("no_such_database_here"), "{e}");
    assert!(!e.contains(&password), "{e}");

    // Through the storage selection, and in the store's Debug form.
    let dir = tempfile::tempdir().unwrap();
    let st = relayburn_ledger::Storage::postgres(LedgerHome::new(dir.path()), wrong.clone());
    let e = relayburn_ledger::store::open(&st).unwrap_err().to_string();
    assert!(!e.contains("Wrong-Pass-4417"), "{e}");
    assert!(!format!("{st:?}").contains("Wrong-Pass-4417"));
    let url = team_support::store_url(&admin, dir.path());
    let s = PostgresStore::open(&url).unwrap();
    assert!(!format!("{s:?}").contains(&password));
    // A record the server refuses: the message names the table, not the URL.
    let bad = json::parse(r#"{"source":"x","sessionId":"s","ts":true}"#).unwrap();
    let e = s.append_records(Kind::Compaction, vec![bad]).unwrap_err();
    assert!(!e.to_string().contains(&password), "{e}");
}
