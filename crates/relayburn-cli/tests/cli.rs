//! End-to-end tests: the built `burn` binary run as a subprocess against
//! temporary homes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relayburn_ledger::json::{parse, Value};

fn burn(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAYBURN_HOME")
        .output()
        .expect("run burn")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_out(o: &Output) -> Value {
    parse(&stdout(o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// The keys of an object, in order.
fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v:?}"))
        .iter()
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect()
}

fn shared_reference() -> Option<PathBuf> {
    let dir = match std::env::var_os("RELAYBURN_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let r = dir.join("fixtures/reference");
    if r.is_dir() {
        return Some(r);
    }
    if std::env::var_os("RELAYBURN_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        panic!("reference fixtures missing at {}", r.display());
    }
    eprintln!(
        "notice: reference fixtures not found at {}; skipping",
        r.display()
    );
    None
}

/// A home holding the small built-in demo ledger.
fn demo_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .args(["demo", "--demo-dir"])
        .arg(&home)
        .env("RELAYBURN_HOME", dir.path().join("no-such-home"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("wrote a demo ledger"), "{out}");
    assert!(out.contains("72 turns applied"), "{out}");
    assert!(out.contains("(up to date)"), "{out}");
    std::fs::rename(&home, dir.path().join("home")).unwrap();
    dir
}

fn home_of(d: &tempfile::TempDir) -> PathBuf {
    d.path().join("home")
}

#[test]
fn version_and_help() {
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).starts_with("burn "), "{}", stdout(&o));
    for args in [
        vec!["help"],
        vec!["state", "--help"],
        vec!["query", "--help"],
        vec!["stamp", "--help"],
        vec!["state", "check", "--help"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_burn"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{args:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .args(["query", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("Examples:"));
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        vec!["state", "bogus"],
        vec!["state", "rebuild"],
        vec!["state", "rebuild", "archive", "--full", "--vacuum"],
        vec!["query", "nothing"],
        vec!["query", "turns", "--from", "elsewhere"],
        vec!["stamp", "k=v"],
        vec!["--no-such-flag"],
        vec!["state", "prune", "--days", "soon"],
        vec!["state", "rebuild", "classify"],
        vec!["state", "rebuild", "content"],
    ] {
        let o = burn(d.path(), &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty(), "{args:?} says why");
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
    let o = burn(d.path(), &["state", "rebuild", "classify"]);
    assert!(stderr(&o).contains("session-log readers"), "{}", stderr(&o));
}

#[test]
fn status_text_and_json_shapes() {
    let d = demo_home();
    let home = home_of(&d);
    let o = burn(&home, &["state", "status"]);
    assert_eq!(code(&o), 0);
    let t = stdout(&o);
    assert!(t.contains("id index: 256 hashes"), "{t}");
    assert!(
        t.contains(
            "72 turn, 4 stamp, 3 compaction, 1 relationship, 108 tool_result_event, 72 user_turn"
        ),
        "{t}"
    );
    assert!(t.contains("turns:              72"), "{t}");

    let o = burn(&home, &["state", "status", "--json"]);
    assert_eq!(code(&o), 0);
    let v = json_out(&o);
    assert_eq!(
        keys(&v),
        ["index", "content", "classifier", "archive", "ledger"]
    );
    assert_eq!(keys(v.get("index").unwrap()), ["ids", "content"]);
    assert_eq!(
        keys(v.get("index").unwrap().get("ids").unwrap()),
        ["path", "exists", "bytes", "entries"]
    );
    assert_eq!(
        keys(v.get("content").unwrap()),
        ["path", "exists", "files", "sessions", "bytes", "userTurns"]
    );
    assert_eq!(
        keys(v.get("classifier").unwrap()),
        ["turns", "classified", "missing"]
    );
    // The reference's ArchiveStatus, field for field.
    let a = v.get("archive").unwrap();
    assert_eq!(
        keys(a),
        [
            "archivePath",
            "exists",
            "archiveVersion",
            "ledgerOffsetBytes",
            "ledgerMtimeMs",
            "ledgerSizeBytes",
            "ledgerMtimeMsCurrent",
            "upToDate",
            "lastBuiltAt",
            "lastRebuildAt",
            "rowCounts",
            "fidelityHistogram"
        ]
    );
    assert_eq!(
        keys(a.get("rowCounts").unwrap()),
        [
            "sessions",
            "turns",
            "toolCalls",
            "toolResultEvents",
            "compactions"
        ]
    );
    assert_eq!(a.get("upToDate").and_then(Value::as_bool), Some(true));
    assert_eq!(
        v.get("ledger")
            .unwrap()
            .get("lines")
            .unwrap()
            .get("turn")
            .and_then(Value::as_f64),
        Some(72.0)
    );
    // --json output is exactly one JSON document: no progress mixed in.
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn rebuild_and_vacuum_json_shapes() {
    let d = demo_home();
    let home = home_of(&d);
    let o = burn(&home, &["state", "rebuild", "archive", "--full", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(
        keys(&v),
        [
            "scannedBytes",
            "turnsApplied",
            "sessionsTouched",
            "stampsApplied",
            "compactionsApplied",
            "toolResultEventsApplied",
            "rebuiltFromZero"
        ]
    );
    assert_eq!(
        v.get("rebuiltFromZero").and_then(Value::as_bool),
        Some(true)
    );
    assert_eq!(v.get("turnsApplied").and_then(Value::as_f64), Some(72.0));
    // Nothing new: an incremental build scans nothing.
    let v = json_out(&burn(&home, &["state", "rebuild", "archive", "--json"]));
    assert_eq!(v.get("scannedBytes").and_then(Value::as_f64), Some(0.0));
    assert_eq!(
        v.get("rebuiltFromZero").and_then(Value::as_bool),
        Some(false)
    );
    for args in [
        vec!["state", "rebuild", "archive", "vacuum", "--json"],
        vec!["state", "rebuild", "archive", "--vacuum", "--json"],
    ] {
        let o = burn(&home, &args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let v = json_out(&o);
        assert_eq!(
            keys(&v),
            [
                "archivePath",
                "existed",
                "beforeBytes",
                "afterBytes",
                "reclaimedBytes"
            ]
        );
        assert_eq!(v.get("existed").and_then(Value::as_bool), Some(true));
    }
    let empty = tempfile::tempdir().unwrap();
    let v = json_out(&burn(
        empty.path(),
        &["state", "rebuild", "archive", "vacuum", "--json"],
    ));
    assert_eq!(v.get("existed").and_then(Value::as_bool), Some(false));
    let o = burn(&home, &["state", "rebuild", "index"]);
    assert_eq!(code(&o), 0);
    assert!(stdout(&o).contains("rebuilt ledger index: 256 id hashes, 72 content fingerprints"));
    let o = burn(&home, &["state", "rebuild", "all"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("archive build complete"));
}

#[test]
fn reset_dry_run_then_force() {
    let d = demo_home();
    let home = home_of(&d);
    std::fs::write(home.join("config.json"), "{}").unwrap();
    std::fs::write(home.join("cursors.json"), "{\"files\":{}}").unwrap();
    let ledger_before = std::fs::read(home.join("ledger.jsonl")).unwrap();
    let o = burn(&home, &["state", "reset", "--json"]);
    assert_eq!(code(&o), 0);
    let v = json_out(&o);
    assert_eq!(v.get("dryRun").and_then(Value::as_bool), Some(true));
    assert!(home.join("ledger.idx").exists() && home.join("archive.sqlite").exists());
    let o = burn(&home, &["state", "reset", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("reset derived state under"));
    for gone in ["ledger.idx", "ledger.content.idx", "archive.sqlite"] {
        assert!(!home.join(gone).exists(), "{gone} removed");
    }
    for kept in ["ledger.jsonl", "config.json", "cursors.json"] {
        assert!(home.join(kept).exists(), "{kept} kept");
    }
    assert_eq!(
        std::fs::read(home.join("ledger.jsonl")).unwrap(),
        ledger_before
    );
    // Everything derived comes back.
    assert_eq!(code(&burn(&home, &["state", "rebuild", "all"])), 0);
    let o = burn(&home, &["state", "check"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
}

#[test]
fn check_reports_offsets_and_repair_fixes_what_it_says() {
    let d = demo_home();
    let home = home_of(&d);
    let o = burn(&home, &["state", "check", "--json"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let ledger = home.join("ledger.jsonl");
    let clean_len = std::fs::metadata(&ledger).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger)
            .unwrap();
        f.write_all(b"{not json at all\n").unwrap();
        f.write_all(b"{\"v\":1,\"kind\":\"turn\",\"record\":{\"v\":1,\"sour")
            .unwrap();
    }
    let o = burn(&home, &["state", "check", "--json"]);
    assert_eq!(code(&o), 1);
    let v = json_out(&o);
    let l = v.get("ledger").unwrap();
    let malformed = l.get("malformed").unwrap().as_array().unwrap();
    assert_eq!(malformed.len(), 1);
    assert_eq!(
        malformed[0].get("offset").and_then(Value::as_f64),
        Some(clean_len as f64)
    );
    let torn = l.get("tornTail").unwrap();
    let torn_at = clean_len + "{not json at all\n".len() as u64;
    assert_eq!(
        torn.get("offset").and_then(Value::as_f64),
        Some(torn_at as f64)
    );
    let text = stdout(&burn(&home, &["state", "check"]));
    assert!(
        text.contains(&format!("malformed line at byte {clean_len}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("torn last line at byte {torn_at}")),
        "{text}"
    );

    let o = burn(&home, &["state", "check", "--repair"]);
    let text = stdout(&o);
    assert!(
        text.contains(&format!("terminate the torn last line at byte {torn_at}")),
        "{text}"
    );
    let bytes = std::fs::read(&ledger).unwrap();
    assert_eq!(bytes.last(), Some(&b'\n'), "torn line terminated");
    // The torn fragment is kept as a (malformed) line; nothing else changed.
    assert_eq!(
        bytes.len() as u64,
        std::fs::metadata(&ledger).unwrap().len()
    );
    let v = json_out(&burn(&home, &["state", "check", "--json"]));
    assert_eq!(v.get("ledger").unwrap().get("tornTail"), Some(&Value::Null));
    assert_eq!(
        v.get("index")
            .unwrap()
            .get("missingCount")
            .and_then(Value::as_f64),
        Some(0.0)
    );
    // An append after repair is a clean new line.
    let o = burn(&home, &["stamp", "--session", "abc", "k=v"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let last = std::fs::read_to_string(&ledger).unwrap();
    let last = last.lines().last().unwrap().to_string();
    assert!(last.starts_with("{\"v\":1,\"kind\":\"stamp\""), "{last}");
}

#[test]
fn check_finds_index_gaps_and_stale_locks() {
    let d = demo_home();
    let home = home_of(&d);
    let idx = std::fs::read_to_string(home.join("ledger.idx")).unwrap();
    let mut lines: Vec<&str> = idx.lines().collect();
    let dropped = lines.remove(3).to_string();
    std::fs::write(home.join("ledger.idx"), lines.join("\n") + "\n").unwrap();
    let lock = home.join("archive.lock");
    std::fs::write(&lock, "").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&lock)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let o = burn(&home, &["state", "check", "--json"]);
    assert_eq!(code(&o), 1);
    let v = json_out(&o);
    let idx = v.get("index").unwrap();
    assert_eq!(idx.get("missingCount").and_then(Value::as_f64), Some(1.0));
    assert_eq!(
        idx.get("missing").unwrap().as_array().unwrap()[0].as_str(),
        Some(dropped.as_str())
    );
    let locks = v.get("locks").unwrap().as_array().unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].get("stale").and_then(Value::as_bool), Some(true));
}

#[test]
fn query_matches_the_reference_on_the_fixture_home() {
    let Some(reference) = shared_reference() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    // The fixture ends with a torn line (not JSON, so no query sees it);
    // without it an archive can be fully up to date.
    let mut bytes = std::fs::read(reference.join("home/ledger.jsonl")).unwrap();
    let end = bytes.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    assert!(end < bytes.len(), "the fixture has a torn tail");
    bytes.truncate(end);
    std::fs::write(d.path().join("ledger.jsonl"), bytes).unwrap();
    let queries =
        parse(&std::fs::read_to_string(reference.join("home/queries.json")).unwrap()).unwrap();
    let first = &queries.as_array().unwrap()[0];
    assert_eq!(
        first.get("query").map(|q| q.to_json()).as_deref(),
        Some("{}")
    );
    let want = first.get("ledger").unwrap().as_array().unwrap();
    let o = burn(d.path(), &["query", "turns", "--from", "ledger"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let got: Vec<Value> = stdout(&o).lines().map(|l| parse(l).unwrap()).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.to_json(), w.to_json());
    }
    // auto: no archive yet, so the ledger, and it says so.
    let o = burn(
        d.path(),
        &[
            "query",
            "turns",
            "--session",
            "386d2eed-4dc4-4713-8b11-2b159099393f",
        ],
    );
    assert!(stderr(&o).contains("from the ledger"), "{}", stderr(&o));
    let ledger_rows = stdout(&o).lines().count();
    assert!(ledger_rows > 0);
    assert_eq!(
        code(&burn(d.path(), &["state", "rebuild", "archive", "--full"])),
        0
    );
    let o = burn(
        d.path(),
        &[
            "query",
            "turns",
            "--session",
            "386d2eed-4dc4-4713-8b11-2b159099393f",
        ],
    );
    assert!(stderr(&o).contains("from the archive"), "{}", stderr(&o));
    assert!(stdout(&o).lines().count() > 0);
    // Other kinds, and a relative --since that selects nothing from 2025.
    let o = burn(
        d.path(),
        &["query", "tool-result-events", "--source", "codex"],
    );
    assert_eq!(code(&o), 0);
    assert!(stdout(&o)
        .lines()
        .all(|l| l.contains("\"source\":\"codex\"")));
    let o = burn(
        d.path(),
        &["query", "turns", "--from", "ledger", "--since", "7d"],
    );
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o), "");
    let o = burn(d.path(), &["query", "turns", "--since", "last tuesday"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--since"), "{}", stderr(&o));
}

#[test]
fn stamp_appends_a_stamp_and_refuses_bad_pairs() {
    let d = tempfile::tempdir().unwrap();
    let o = burn(
        d.path(),
        &[
            "stamp",
            "--session",
            "s1",
            "--from-ts",
            "2026-01-01T00:00:00.000Z",
            "workflowId=wf-9",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let line = std::fs::read_to_string(d.path().join("ledger.jsonl")).unwrap();
    let v = parse(line.trim()).unwrap();
    assert_eq!(
        v.get("selector").unwrap().to_json(),
        r#"{"sessionId":"s1","range":{"fromTs":"2026-01-01T00:00:00.000Z"}}"#
    );
    assert_eq!(
        v.get("enrichment").unwrap().to_json(),
        r#"{"workflowId":"wf-9"}"#
    );
    let o = burn(d.path(), &["stamp", "--session", "s1", "novalue"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn missing_and_unwritable_homes_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    // A home that does not exist reads as empty.
    let missing = d.path().join("nope");
    let o = burn(&missing, &["state", "status", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json_out(&o)
            .get("archive")
            .unwrap()
            .get("exists")
            .and_then(Value::as_bool),
        Some(false)
    );
    assert!(!missing.exists(), "status creates nothing");
    // A home below a regular file cannot be written (this also holds as
    // root, which ignores permission bits).
    let file = d.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("home");
    let o = burn(&bad, &["stamp", "--session", "s", "k=v"]);
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&*file.to_string_lossy()),
        "names the path: {err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn a_held_lock_is_named_in_the_error() {
    let d = tempfile::tempdir().unwrap();
    // A live holder on this host: this test process.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let lock = d.path().join("ledger.lock");
    std::fs::write(
        &lock,
        format!(
            "{{\"pid\":{},\"host\":\"{host}\",\"since\":0}}\n",
            std::process::id()
        ),
    )
    .unwrap();
    // Keep it fresh for the whole retry budget.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let l2 = lock.clone();
    let toucher = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::File::options()
                .write(true)
                .open(&l2)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let o = burn(d.path(), &["stamp", "--session", "s", "k=v"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    toucher.join().unwrap();
    assert_eq!(code(&o), 1);
    let err = stderr(&o);
    assert!(err.contains(&*lock.to_string_lossy()), "{err}");
    assert!(err.contains("held by live process"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    // After a second of waiting, once, before the error.
    let waiting = format!(
        "waiting for lock `ledger` held by pid {} on host {host}…\n",
        std::process::id()
    );
    assert!(err.starts_with(&waiting), "{err}");
    assert_eq!(err.matches("waiting for lock").count(), 1, "{err}");
    assert!(!d.path().join("ledger.jsonl").exists(), "nothing written");
}

// --- storage selection --------------------------------------------------

fn burn_with(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_burn"));
    c.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAYBURN_HOME")
        .env_remove("RELAYBURN_STORAGE")
        .env_remove("RELAYBURN_SQLITE_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run burn")
}

const SQLITE: &[(&str, &str)] = &[("RELAYBURN_STORAGE", "sqlite")];

fn sqlite_turn(session: &str, message: &str) -> Value {
    parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{session}","messageId":"{message}","turnIndex":0,
        "ts":"2026-04-20T00:00:0{}.000Z","model":"gpt-5","usage":{{"input":1,"output":2,"reasoning":0,
        "cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[]}}"#,
        message.len() % 10
    ))
    .unwrap()
}

#[test]
fn sqlite_storage_serves_query_stamp_status_check_and_prune() {
    use relayburn_ledger::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let store = relayburn_ledger::SqliteStore::open(&dir.path().join("burn.sqlite")).unwrap();
    store
        .append_turns(vec![sqlite_turn("s1", "m1"), sqlite_turn("s2", "m22")])
        .unwrap();
    let content = parse(
        r#"{"v":1,"source":"codex","sessionId":"s1","messageId":"m1","ts":"t","role":"user","kind":"text","text":"hi"}"#,
    )
    .unwrap();
    store.append_content(vec![content]).unwrap();
    drop(store);

    let o = burn_with(
        dir.path(),
        SQLITE,
        &["stamp", "--session", "s1", "team=blue"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = burn_with(
        dir.path(),
        SQLITE,
        &["query", "turns", "--enrich", "team=blue"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("reading turns from the sqlite store"),
        "{}",
        stderr(&o)
    );
    let lines: Vec<Value> = stdout(&o).lines().map(|l| parse(l).unwrap()).collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].get("messageId").unwrap().as_str(), Some("m1"));
    let o = burn_with(dir.path(), SQLITE, &["query", "turns", "--from", "ledger"]);
    assert_eq!(stdout(&o).lines().count(), 2);

    let o = burn_with(dir.path(), SQLITE, &["state", "status", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let rows = json_out(&o).get("rows").unwrap().clone();
    assert_eq!(rows.get("turns").unwrap().as_f64(), Some(2.0));
    assert_eq!(rows.get("stamps").unwrap().as_f64(), Some(1.0));
    assert_eq!(rows.get("content").unwrap().as_f64(), Some(1.0));

    let o = burn_with(dir.path(), SQLITE, &["state", "check"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    let o = burn_with(
        dir.path(),
        SQLITE,
        &["state", "prune", "--days", "0", "--force", "--json"],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        json_out(&o).get("filesDeleted").unwrap().as_f64(),
        Some(1.0)
    );

    // File storage was never touched.
    assert!(!dir.path().join("ledger.jsonl").exists());
    let o = burn_with(dir.path(), &[], &["query", "turns", "--from", "ledger"]);
    assert_eq!(stdout(&o), "");
}

#[test]
fn archive_commands_refuse_other_backends() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["state", "rebuild", "archive"][..],
        &["state", "rebuild", "archive", "--full"],
        &["query", "turns", "--from", "archive"],
    ] {
        let o = burn_with(dir.path(), SQLITE, args);
        assert_eq!(code(&o), 1, "{args:?}");
        assert_eq!(
            stderr(&o),
            "burn: archive operations require RELAYBURN_STORAGE=file (got sqlite)\n",
            "{args:?}"
        );
    }
    assert!(!dir.path().join("archive.sqlite").exists());
}

#[test]
fn unknown_and_reserved_backends_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = burn_with(
        dir.path(),
        &[("RELAYBURN_STORAGE", "mysql")],
        &["query", "turns"],
    );
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "burn: unsupported RELAYBURN_STORAGE=\"mysql\" (expected file, sqlite, postgres, or http)\n"
    );
    for kind in ["postgres", "http"] {
        let o = burn_with(
            dir.path(),
            &[("RELAYBURN_STORAGE", kind)],
            &["state", "status"],
        );
        assert_eq!(code(&o), 1);
        assert_eq!(
            stderr(&o),
            format!("burn: RELAYBURN_STORAGE={kind} is not supported in this build\n")
        );
    }
}

#[test]
fn sqlite_path_variable_moves_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere/x.sqlite");
    let env = [
        ("RELAYBURN_STORAGE", "sqlite"),
        ("RELAYBURN_SQLITE_PATH", db.to_str().unwrap()),
    ];
    let o = burn_with(dir.path(), &env, &["stamp", "--session", "s", "k=v"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(db.exists());
    assert!(!dir.path().join("burn.sqlite").exists());
}

#[test]
fn state_copy_moves_a_home_into_sqlite_and_is_idempotent() {
    let dir = demo_home();
    let home = dir.path().join("home");
    let file_turns = stdout(&burn_with(
        &home,
        &[],
        &["query", "turns", "--from", "ledger"],
    ));
    assert!(file_turns.lines().count() > 10);
    let o = burn_with(&home, &[], &["state", "copy", "--to", "sqlite", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let r = json_out(&o);
    assert_eq!(r.get("complete").unwrap().as_bool(), Some(true));
    let added = |r: &Value| -> f64 {
        r.get("records")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.get("added").unwrap().as_f64().unwrap())
            .sum()
    };
    assert!(added(&r) > 10.0);
    let sqlite_turns = stdout(&burn_with(&home, SQLITE, &["query", "turns"]));
    assert_eq!(sqlite_turns, file_turns);
    // Again: nothing added, still complete.
    let o = burn_with(&home, &[], &["state", "copy", "--to", "sqlite", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(added(&json_out(&o)), 0.0);
    // Copying a backend onto itself is refused.
    let o = burn_with(&home, SQLITE, &["state", "copy", "--to", "sqlite"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("already sqlite storage"),
        "{}",
        stderr(&o)
    );
}
