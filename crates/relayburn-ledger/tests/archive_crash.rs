//! A full rebuild killed with SIGKILL at any point leaves the previous
//! archive complete and queryable (or the finished new one), and nothing
//! that stops the next build.
//!
//! The rebuild runs in a child process (`support::role`), running only
//! [`crash_child_rebuilds`].

mod support;

use std::path::Path;

use std::time::{Duration, Instant, SystemTime};

use relayburn_ledger::archive::{build_archive, query_all_from_archive, rebuild_archive};
use relayburn_ledger::json::Value;
use relayburn_ledger::lock::Locks;
use relayburn_ledger::query::Query;
use relayburn_ledger::{Kind, LedgerHome};
use support::archive::*;

/// The child's side: rebuild the home named by the environment.
#[test]
#[ignore = "run by archive_crash as a child process"]
fn crash_child_rebuilds() {
    let Some((_, args)) = support::role::current() else {
        return;
    };
    let home = LedgerHome::new(&args[0]);
    let locks = Locks::new(home.clone());
    rebuild_archive(&home, &locks).unwrap();
}

fn write_ledger(h: &TempHome, sessions: u32, turns_per_session: u32, skip: u32) {
    let mut text = String::new();
    for t in skip..skip + turns_per_session {
        for s in 0..sessions {
            let ts = format!(
                "2026-04-{:02}T{:02}:{:02}:{:02}.000Z",
                1 + t / 3600 % 28,
                t / 60 % 60,
                t % 60,
                s % 60
            );
            let rec = turn(
                &format!("sess-{s}"),
                &format!("m-{s}-{t}"),
                t,
                &ts,
                &format!(
                    r#"{{"toolCalls":[{{"id":"tu-{s}-{t}","name":"Read","target":"src/{s}.rs","argsHash":"{t:016x}"}}]}}"#
                ),
            );
            let line = relayburn_ledger::records::wrap_record(
                Kind::Turn,
                relayburn_ledger::json::parse(&rec).unwrap(),
            );
            text.push_str(&line.to_json());
            text.push('\n');
            let ev = format!(
                r#"{{"v":1,"kind":"tool_result_event","record":{{"v":1,"source":"claude-code","sessionId":"sess-{s}","messageId":"m-{s}-{t}","toolUseId":"tu-{s}-{t}","callIndex":0,"eventIndex":0,"status":"completed","eventSource":"tool_result","ts":"{ts}","contentLength":{t},"contentHash":"h"}}}}"#
            );
            text.push_str(&ev);
            text.push('\n');
        }
        if t % 50 == 0 {
            text.push_str(&format!(
                "{{\"v\":1,\"kind\":\"stamp\",\"ts\":\"2026-05-01T00:00:{:02}.000Z\",\"selector\":{{\"sessionId\":\"sess-{}\"}},\"enrichment\":{{\"workflowId\":\"wf-{t}\"}}}}\n",
                t % 60,
                t % sessions
            ));
        }
    }
    h.append(&text);
}

/// A child process rebuilding `h`'s archive.
fn spawn_rebuild(h: &TempHome) -> std::process::Child {
    support::role::command(
        "crash_child_rebuilds",
        "rebuild",
        &[h.dir.path().to_str().unwrap()],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap()
}

fn raw_state(path: &Path) -> Option<String> {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT last_rebuild_at FROM archive_state", [], |r| {
            r.get(0)
        })
        .unwrap()
}

fn backdate_lock(home: &Path) {
    let lock = home.join("archive.lock");
    if let Ok(f) = std::fs::File::options().write(true).open(&lock) {
        f.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
    }
}

#[test]
fn a_rebuild_killed_at_any_point_leaves_a_complete_archive() {
    // The archive before: built from the first part of the ledger.
    let base = TempHome::new();
    write_ledger(&base, 40, 300, 0);
    build_archive(&base.home, &base.locks).unwrap();
    let old_dump = dump(&base.archive());
    let old_archive = std::fs::read(base.archive()).unwrap();
    assert!(!base.dir.path().join("archive.sqlite-wal").exists());

    // The full ledger and what a rebuild of it gives.
    write_ledger(&base, 40, 300, 300);
    let full_ledger = std::fs::read(base.ledger()).unwrap();
    let reference = TempHome::new();
    std::fs::write(reference.ledger(), &full_ledger).unwrap();
    let started = Instant::now();
    rebuild_archive(&reference.home, &reference.locks).unwrap();
    let rebuild_time = started.elapsed();
    let new_dump = dump(&reference.archive());
    assert_ne!(old_dump, new_dump);

    let mut killed_mid_rebuild = 0;
    let steps = 8u32;
    for i in 0..steps {
        let h = TempHome::new();
        std::fs::write(h.ledger(), &full_ledger).unwrap();
        std::fs::write(h.archive(), &old_archive).unwrap();
        let mut child = spawn_rebuild(&h);
        // Spread the kills over the rebuild, from before it starts to
        // after it would have finished.
        let delay =
            rebuild_time.mul_f64(f64::from(i) / f64::from(steps - 2)) + Duration::from_millis(15);
        std::thread::sleep(delay);
        let temp = h
            .dir
            .path()
            .join(format!("archive.sqlite.rebuild-{}.tmp", child.id()));
        let mid = temp.exists();
        if mid {
            killed_mid_rebuild += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Old archive intact, or the finished new one: never a partial one.
        let got = dump(&h.archive());
        let swapped = raw_state(&h.archive()).is_some();
        eprintln!("kill {i} after {delay:?}: inside rebuild {mid}, swapped {swapped}");
        let want = if swapped { &new_dump } else { &old_dump };
        assert_dumps_equal(&got, want, &format!("after kill {i} (swapped: {swapped})"));
        let rows = query_all_from_archive(&h.home, &Query::default()).unwrap();
        let turns = want.get("turns").and_then(Value::as_array).unwrap().len();
        assert_eq!(rows.len(), turns);

        // The dead child's lock and temp file do not stop the next builds.
        backdate_lock(h.dir.path());
        build_archive(&h.home, &h.locks).unwrap();
        assert!(!temp.exists(), "leftover {}", temp.display());
        assert_dumps_equal(&dump(&h.archive()), &new_dump, "incremental after kill");
        rebuild_archive(&h.home, &h.locks).unwrap();
        assert_dumps_equal(&dump(&h.archive()), &new_dump, "rebuild after kill");
        let leftovers: Vec<String> = std::fs::read_dir(h.dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("rebuild"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    assert!(
        killed_mid_rebuild >= 2,
        "only {killed_mid_rebuild} kills landed inside a rebuild (rebuild took {rebuild_time:?})"
    );
}

#[test]
fn after_a_killed_rebuild_the_archive_ends_equal_to_the_references() {
    // The comparison above is with this crate's own rebuild, which proves
    // atomicity; this one is with the reference's dump of the fixture
    // ledger, so a build that is atomic but wrong fails too.
    let reference = reference_or_skip!();
    let fixture = reference.join("home");
    let want = normalise_dump(read_json(&fixture.join("archive-dump.json")));
    let ledger = std::fs::read(fixture.join("ledger.jsonl")).unwrap();
    // The archive before: ours, of the first third of the ledger.
    let cut = ledger[..ledger.len() / 3]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let base = TempHome::new();
    std::fs::write(base.ledger(), &ledger[..cut]).unwrap();
    build_archive(&base.home, &base.locks).unwrap();
    let old_archive = std::fs::read(base.archive()).unwrap();
    let started = Instant::now();
    rebuild_archive(&base.home, &base.locks).unwrap();
    let rebuild_time = started.elapsed() * 3;
    for i in 0..4u32 {
        let h = TempHome::new();
        std::fs::write(h.ledger(), &ledger).unwrap();
        std::fs::write(h.archive(), &old_archive).unwrap();
        let mut child = spawn_rebuild(&h);
        std::thread::sleep(rebuild_time.mul_f64(f64::from(i) / 3.0) + Duration::from_millis(10));
        child.kill().unwrap();
        child.wait().unwrap();
        backdate_lock(h.dir.path());
        build_archive(&h.home, &h.locks).unwrap();
        assert_dumps_equal(&dump(&h.archive()), &want, &format!("build after kill {i}"));
        rebuild_archive(&h.home, &h.locks).unwrap();
        assert_dumps_equal(
            &dump(&h.archive()),
            &want,
            &format!("rebuild after kill {i}"),
        );
    }
}
