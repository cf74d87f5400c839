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
    // Ours (not clap's) say why in exactly one line, and never panic.
    for args in [
        vec!["query", "turns", "--since", "yesterday"],
        vec!["query", "turns", "--until", "2026-13-01"],
        vec!["query", "turns", "--enrich", "novalue"],
        vec!["query", "compactions", "--from", "archive"],
        vec!["query", "compactions", "--enrich", "k=v"],
        vec!["state", "prune", "--days", "99999999999999999999"],
        vec!["state", "prune", "--days", "soon"],
    ] {
        let o = burn(d.path(), &args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
    }
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

/// Every file under `dir` with its bytes, sorted.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn reset_keeps_content_unless_asked_and_says_it_cannot_be_undone() {
    let d = demo_home();
    let home = home_of(&d);
    let content = tree(&home.join("content"));
    assert!(!content.is_empty(), "the demo writes content sidecars");
    let o = burn(&home, &["state", "reset", "--force", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(tree(&home.join("content")), content, "content/ untouched");
    assert!(!home.join("archive.sqlite").exists());
    let v = json_out(&o);
    let kept: Vec<&str> = v
        .get("kept")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        kept.iter().any(|k| k.ends_with("content")),
        "kept lists content/: {kept:?}"
    );
    let o = burn(&home, &["state", "reset"]);
    assert!(stdout(&o).contains("--delete-content"), "{}", stdout(&o));

    // Deleting content takes its own flag, and the dry run warns first.
    let o = burn(&home, &["state", "reset", "--delete-content"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("CANNOT BE UNDONE"), "{text}");
    assert_eq!(
        tree(&home.join("content")),
        content,
        "dry run deletes nothing"
    );
    let o = burn(&home, &["state", "reset", "--delete-content", "--force"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(!home.join("content").exists());
    assert!(home.join("ledger.jsonl").exists());
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
    assert_eq!(code(&o), 2);
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
            "2026-01-01T00:00:00Z",
            "--to-ts",
            "2026-01-31",
            "workflowId=wf-9",
        ],
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let line = std::fs::read_to_string(d.path().join("ledger.jsonl")).unwrap();
    let v = parse(line.trim()).unwrap();
    // Both ends in the form the turns' `ts` has, so ranges compare right.
    assert_eq!(
        v.get("selector").unwrap().to_json(),
        r#"{"sessionId":"s1","range":{"fromTs":"2026-01-01T00:00:00.000Z","toTs":"2026-01-31T00:00:00.000Z"}}"#
    );
    assert_eq!(
        v.get("enrichment").unwrap().to_json(),
        r#"{"workflowId":"wf-9"}"#
    );
    let o = burn(d.path(), &["stamp", "--session", "s1", "novalue"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn stamp_refuses_bad_selectors_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let bad: [&[&str]; 7] = [
        &["--from-ts", "garbage", "--to-ts", "2026-01-02"],
        &["--from-ts", "2026-02-01", "--to-ts", "2026-01-01"],
        &["--from-ts", "2026-01-01"],
        &["--to-ts", "2026-01-01"],
        &["--session", ""],
        &["--message", "  "],
        &["--from-ts", "2026-02-30", "--to-ts", "2026-03-01"],
    ];
    for args in bad {
        let mut all = vec!["stamp"];
        all.extend_from_slice(args);
        all.push("k=v");
        let o = burn(d.path(), &all);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(
            !d.path().join("ledger.jsonl").exists(),
            "{args:?} wrote something"
        );
    }
}

#[test]
fn missing_and_unwritable_homes_fail_clearly() {
    let d = tempfile::tempdir().unwrap();
    // A home that does not exist is an error for every command but a
    // write (and demo), and nothing is created.
    let missing = d.path().join("nope");
    for args in [
        vec!["state", "status", "--json"],
        vec!["state", "rebuild", "archive"],
        vec!["state", "rebuild", "archive", "--full"],
        vec!["state", "rebuild", "index"],
        vec!["state", "check", "--repair"],
        vec!["state", "reset", "--force"],
        vec!["state", "prune", "--force"],
        vec!["query", "turns"],
    ] {
        let o = burn(&missing, &args);
        assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("nope"), "{args:?}: {}", stderr(&o));
        assert!(!missing.exists(), "{args:?} created the home");
    }
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

/// Turn lines printed on stdout.
fn rows(o: &Output) -> usize {
    stdout(o).lines().filter(|l| l.starts_with('{')).count()
}

fn set_archive_version(home: &Path, v: i64) {
    let db = rusqlite::Connection::open(home.join("archive.sqlite")).unwrap();
    db.execute("UPDATE archive_state SET archive_version = ?1", [v])
        .unwrap();
}

#[test]
fn from_archive_without_an_archive_says_so_and_creates_nothing() {
    let d = demo_home();
    let home = home_of(&d);
    for f in ["archive.sqlite", "archive.sqlite-wal", "archive.sqlite-shm"] {
        let _ = std::fs::remove_file(home.join(f));
    }
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(rows(&o), 0);
    assert!(stderr(&o).contains("not built yet"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = burn(&home, &["query", "turns"]);
    assert_eq!((code(&o), rows(&o)), (0, 72), "{}", stderr(&o));
    assert!(stderr(&o).contains("from the ledger"), "{}", stderr(&o));
    let o = burn(&home, &["state", "status"]);
    assert_eq!(code(&o), 0);
    assert!(
        !home.join("archive.sqlite").exists(),
        "reads create nothing"
    );

    // Behind the ledger: an explicit archive read warns; auto falls back.
    assert_eq!(code(&burn(&home, &["state", "rebuild", "archive"])), 0);
    assert_eq!(code(&burn(&home, &["stamp", "--session", "s", "k=v"])), 0);
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!((code(&o), rows(&o)), (0, 72), "{}", stderr(&o));
    assert!(stderr(&o).contains("behind the ledger"), "{}", stderr(&o));
    let o = burn(&home, &["--quiet", "query", "turns", "--from", "archive"]);
    assert!(
        stderr(&o).contains("behind the ledger"),
        "warned even with --quiet"
    );
    let o = burn(&home, &["query", "turns"]);
    assert!(stderr(&o).contains("behind"), "{}", stderr(&o));
}

#[test]
fn another_archive_version_is_never_destroyed_by_a_read() {
    let d = demo_home();
    let home = home_of(&d);
    set_archive_version(&home, 4);
    let before = std::fs::read(home.join("archive.sqlite")).unwrap();
    let o = burn(&home, &["state", "status", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let a = json_out(&o).get("archive").unwrap().clone();
    assert_eq!(a.get("archiveVersion").and_then(Value::as_f64), Some(4.0));
    let problem = a
        .get("problem")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    for needle in ["4", "3", "burn state rebuild archive --full"] {
        assert!(problem.contains(needle), "{problem}");
    }
    let o = burn(&home, &["query", "turns"]);
    assert_eq!(
        (code(&o), rows(&o)),
        (0, 72),
        "auto falls back to the ledger"
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!((code(&o), rows(&o)), (1, 0));
    assert!(stderr(&o).contains("newer"), "{}", stderr(&o));
    let o = burn(&home, &["state", "check"]);
    assert_eq!(code(&o), 1, "check reports it: {}", stdout(&o));
    // A plain build refuses too; only --full replaces it.
    let o = burn(&home, &["state", "rebuild", "archive"]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("--full"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(home.join("archive.sqlite")).unwrap(),
        before,
        "no read or refused build changed the archive"
    );
    let o = burn(&home, &["state", "rebuild", "archive", "--full"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!((code(&o), rows(&o)), (0, 72));

    // An older version: a read leaves it; the next build replaces it and says so.
    set_archive_version(&home, 2);
    let o = burn(&home, &["state", "status"]);
    assert!(stdout(&o).contains("older"), "{}", stdout(&o));
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!(code(&o), 1);
    let o = burn(&home, &["state", "rebuild", "archive"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("replaced an archive of older version 2"),
        "{}",
        stdout(&o)
    );
    let o = burn(&home, &["query", "turns", "--from", "archive"]);
    assert_eq!((code(&o), rows(&o)), (0, 72));
}

#[test]
fn a_damaged_archive_falls_back_and_repair_rebuilds_it() {
    let d = demo_home();
    let home = home_of(&d);
    let archive = home.join("archive.sqlite");
    type Damage = (&'static str, fn(&Path));
    let damages: [Damage; 3] = [
        ("cut in half", |p| {
            let len = std::fs::metadata(p).unwrap().len();
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("garbage header", |p| {
            let mut b = std::fs::read(p).unwrap();
            b[..16].copy_from_slice(b"garbage garbage!");
            std::fs::write(p, b).unwrap();
        }),
        ("a directory", |p| {
            std::fs::remove_file(p).unwrap();
            std::fs::create_dir(p).unwrap();
        }),
    ];
    for (what, damage) in damages {
        assert_eq!(
            code(&burn(&home, &["state", "rebuild", "archive", "--full"])),
            0
        );
        for f in ["archive.sqlite-wal", "archive.sqlite-shm"] {
            let _ = std::fs::remove_file(home.join(f));
        }
        damage(&archive);
        let o = burn(&home, &["state", "status"]);
        assert_eq!(code(&o), 0, "{what}: {}", stderr(&o));
        assert!(stdout(&o).contains("damaged"), "{what}: {}", stdout(&o));
        let o = burn(&home, &["query", "turns"]);
        assert_eq!((code(&o), rows(&o)), (0, 72), "{what}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{what}: {}", stderr(&o));
        let o = burn(&home, &["query", "turns", "--from", "archive"]);
        assert_eq!(code(&o), 1, "{what}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{what}: {err}");
        assert_eq!(
            err.matches("damaged").count(),
            1,
            "{what}: cause once: {err}"
        );
        let o = burn(&home, &["state", "check"]);
        assert_eq!(code(&o), 1, "{what}: {}", stdout(&o));
        assert!(stdout(&o).contains("damaged"), "{what}: {}", stdout(&o));
        let o = burn(&home, &["state", "check", "--repair"]);
        assert_eq!(code(&o), 0, "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("rebuild archive --full"), "{what}");
        let o = burn(&home, &["query", "turns", "--from", "archive"]);
        assert_eq!((code(&o), rows(&o)), (0, 72), "{what}: {}", stderr(&o));
    }
    // A full rebuild over a directory holding a file: refused, and no
    // half-built file is left behind.
    std::fs::remove_file(&archive).unwrap();
    std::fs::create_dir(&archive).unwrap();
    std::fs::write(archive.join("keep"), "x").unwrap();
    let o = burn(&home, &["state", "rebuild", "archive", "--full"]);
    assert_eq!(code(&o), 1);
    assert!(archive.join("keep").exists());
    let left: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A ledger of `n` turns of about 1.6 KB each.
fn write_padded_turns(home: &Path, n: u32) {
    // Written line by line: the test process must stay small, since a
    // child's peak RSS starts from its parent's at fork.
    let pad = "p".repeat(1500);
    let file = std::fs::File::create(home.join("ledger.jsonl")).unwrap();
    let mut w = std::io::BufWriter::new(file);
    for i in 0..n {
        use std::io::Write;
        writeln!(
            w,
            r#"{{"v":1,"kind":"turn","record":{{"v":1,"source":"claude-code","sessionId":"s{}","messageId":"m{i}","turnIndex":{i},"ts":"2026-03-01T09:00:{:02}.000Z","model":"claude-sonnet-4-5","project":"/{pad}","usage":{{"input":1,"output":2,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[]}}}}"#,
            i % 50,
            i % 60
        )
        .unwrap();
    }
}

/// Run burn with stdout discarded; its exit code and peak RSS in bytes.
// Reaped by `wait4`, which also gives the rusage `Child::wait` drops.
#[allow(clippy::zombie_processes)]
fn burn_peak_rss(home: &Path, args: &[&str]) -> (i32, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--home")
        .arg(home)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; pid is our unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut ru) }, pid);
    (libc::WEXITSTATUS(status), ru.ru_maxrss as u64 * 1024)
}

#[test]
fn an_archive_query_streams_in_bounded_memory() {
    // 40,000 turns of ~1.6 KB: about 70 MB of output, more than the
    // whole result could take buffered within the bound below.
    let d = tempfile::tempdir().unwrap();
    let home = d.path();
    write_padded_turns(home, 40_000);
    let o = burn(home, &["--quiet", "state", "rebuild", "archive", "--full"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("40,000 turns applied"),
        "{}",
        stdout(&o)
    );
    let (c, archive_rss) = burn_peak_rss(home, &["query", "turns", "--from", "archive"]);
    assert_eq!(c, 0);
    let (c, ledger_rss) = burn_peak_rss(home, &["query", "turns", "--from", "ledger"]);
    assert_eq!(c, 0);
    eprintln!("peak RSS: archive {archive_rss} B, ledger {ledger_rss} B");
    assert!(
        archive_rss < 48 << 20,
        "archive query peaked at {archive_rss} bytes"
    );
}

#[test]
fn repair_handles_what_check_finds_and_a_repaired_line_is_reported_once() {
    let d = demo_home();
    let home = home_of(&d);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(home.join("ledger.jsonl"))
            .unwrap();
        f.write_all(b"{\"v\":1,\"kind\":\"turn\",\"record\":{\"v\":1,\"sour")
            .unwrap();
        let mut idx = std::fs::OpenOptions::new()
            .append(true)
            .open(home.join("ledger.idx"))
            .unwrap();
        idx.write_all(b"\xff\xfe\xfd not utf-8\n").unwrap();
    }
    let o = burn(&home, &["state", "check", "--json"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(
        v.get("index")
            .unwrap()
            .get("badLines")
            .and_then(Value::as_f64),
        Some(1.0)
    );
    assert!(v.get("ledger").unwrap().get("tornTail") != Some(&Value::Null));
    let o = burn(&home, &["state", "check", "--repair"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // Accepted from now on: reported by the repair, not by every check.
    for _ in 0..2 {
        let o = burn(&home, &["state", "check", "--json"]);
        assert_eq!(code(&o), 0, "{}", stdout(&o));
        let l = json_out(&o).get("ledger").unwrap().clone();
        assert_eq!(l.get("repairedCount").and_then(Value::as_f64), Some(1.0));
        assert_eq!(l.get("malformedCount").and_then(Value::as_f64), Some(0.0));
    }
    // A new malformed line is still a problem.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(home.join("ledger.jsonl"))
            .unwrap();
        f.write_all(b"{oops\n").unwrap();
    }
    assert_eq!(code(&burn(&home, &["state", "check"])), 1);
}

fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(r, 0);
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether process `pid` catches signal `sig` (from /proc).
fn catches(pid: u32, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (sig - 1)) != 0)
}

#[test]
fn a_signalled_full_rebuild_cleans_up_and_exits_128_plus_the_signal() {
    for (sig, want) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let d = demo_home();
        let home = home_of(&d);
        let before = std::fs::read(home.join("archive.sqlite")).unwrap();
        // Hold the archive lock as a live holder, so the signal lands
        // while the rebuild is under way (waiting for its lock).
        let lock = home.join("archive.lock");
        std::fs::write(
            &lock,
            format!(
                "{{\"pid\":{},\"host\":\"{}\",\"since\":0}}\n",
                std::process::id(),
                this_host()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_burn"))
            .arg("--home")
            .arg(&home)
            .args(["state", "rebuild", "archive", "--full"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while !catches(child.id(), sig) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        std::fs::remove_file(&lock).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(want), "{}", stderr(&out));
        assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
        let names: Vec<String> = std::fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("rebuild-") || n.ends_with(".lock")),
            "{names:?}"
        );
        assert_eq!(std::fs::read(home.join("archive.sqlite")).unwrap(), before);
    }
}

#[test]
fn check_repair_and_reset_know_a_dead_holders_lock_and_a_killed_rebuilds_file() {
    let d = demo_home();
    let home = home_of(&d);
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    // A fresh lockfile (mtime now) whose holder is gone, and a half-built
    // archive of a rebuild that was killed.
    let lock = home.join("archive.lock");
    std::fs::write(
        &lock,
        format!(
            "{{\"pid\":{dead},\"host\":\"{}\",\"since\":0}}\n",
            this_host()
        ),
    )
    .unwrap();
    let tmp = home.join(format!("archive.sqlite.rebuild-{dead}.tmp"));
    std::fs::write(&tmp, b"half").unwrap();
    let o = burn(&home, &["state", "check", "--json"]);
    assert_eq!(code(&o), 1);
    let v = json_out(&o);
    let locks = v.get("locks").unwrap().as_array().unwrap();
    assert_eq!(locks[0].get("stale").and_then(Value::as_bool), Some(true));
    assert_eq!(
        v.get("rebuildLeftovers").unwrap().as_array().unwrap().len(),
        1
    );
    let o = burn(&home, &["state", "reset"]);
    assert!(
        stdout(&o).contains(&*tmp.to_string_lossy()),
        "{}",
        stdout(&o)
    );
    let o = burn(&home, &["state", "check", "--repair"]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(!lock.exists() && !tmp.exists());
}

#[test]
fn a_rebuild_counts_and_locates_malformed_lines() {
    let d = demo_home();
    let home = home_of(&d);
    let ledger = home.join("ledger.jsonl");
    let at = std::fs::metadata(&ledger).unwrap().len();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&ledger)
            .unwrap();
        f.write_all(b"{not json at all\n").unwrap();
    }
    let o = burn(&home, &["state", "rebuild", "archive"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains("skipped 1 line that is not JSON"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains(&format!("byte {at}:")),
        "{}",
        stdout(&o)
    );
    let o = burn(&home, &["state", "rebuild", "archive", "--full", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v = json_out(&o);
    assert_eq!(v.get("malformedLines").and_then(Value::as_f64), Some(1.0));
    let m = v.get("malformed").unwrap().as_array().unwrap();
    assert_eq!(m[0].get("offset").and_then(Value::as_f64), Some(at as f64));
}

#[test]
fn a_reader_that_stops_early_is_not_a_failure() {
    // More output than a pipe holds, so the writer meets the closed pipe.
    let d = tempfile::tempdir().unwrap();
    let home = d.path();
    write_padded_turns(home, 2_000);
    let o = burn(home, &["--quiet", "state", "rebuild", "archive"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    for from in ["archive", "ledger"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_burn"))
            .arg("--home")
            .arg(home)
            .args(["query", "turns", "--from", from])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe, as `head -1` does.
        {
            use std::io::BufRead;
            let mut first = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            assert!(first.starts_with('{'), "{first}");
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{from}: {}", stderr(&out));
        assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));
    }
}

// --- storage selection --------------------------------------------------

fn burn_with(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_burn"));
    c.arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAYBURN_HOME")
        .env_remove("RELAYBURN_STORAGE")
        .env_remove("RELAYBURN_SQLITE_PATH")
        .env_remove("RELAYBURN_POSTGRES_URL");
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
fn index_and_reset_commands_name_what_other_backends_lack() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["state", "rebuild", "index"][..],
            "burn: state rebuild index requires RELAYBURN_STORAGE=file (got sqlite): \
             the sqlite store keeps no index sidecars\n",
        ),
        (
            &["state", "reset", "--force"],
            "burn: state reset requires RELAYBURN_STORAGE=file (got sqlite): \
             the sqlite store keeps no derived files (index sidecars, archive)\n",
        ),
    ] {
        let o = burn_with(dir.path(), SQLITE, args);
        assert_eq!(code(&o), 1, "{args:?}");
        assert_eq!(stderr(&o), want, "{args:?}");
    }
    assert!(!dir.path().join("ledger.idx").exists());
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
    let o = burn_with(
        dir.path(),
        &[("RELAYBURN_STORAGE", "http")],
        &["state", "status"],
    );
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "burn: RELAYBURN_STORAGE=http is not supported in this build\n"
    );
    let o = burn_with(
        dir.path(),
        &[("RELAYBURN_STORAGE", "postgres")],
        &["state", "status"],
    );
    assert_eq!(code(&o), 1);
    assert_eq!(
        stderr(&o),
        "burn: RELAYBURN_STORAGE=postgres needs RELAYBURN_POSTGRES_URL (postgres://user@host/db)\n"
    );
}

#[test]
fn demo_ends_with_spend_by_model_and_day_and_help_explains_months() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .args(["demo", "--demo-dir"])
        .arg(d.path().join("h"))
        .env("RELAYBURN_HOME", d.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let spend = &out[out.find("what the agents spent").expect("spend table")..];
    // The demo writes 72 turns: 24 per model, 24 per day over three days.
    let row = |label: &str| -> u64 {
        let line = spend
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}: {spend}"));
        line[2 + 24..]
            .split_whitespace()
            .next()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap()
    };
    assert_eq!(row("all turns"), 72);
    for model in ["claude-opus-4-1", "claude-sonnet-4-5", "gpt-5-codex"] {
        assert_eq!(row(model), 24, "{model}");
    }
    for day in ["2026-03-01", "2026-03-02", "2026-03-03"] {
        assert_eq!(row(day), 24, "{day}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .args(["query", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("months"), "{}", stdout(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("does not read agents' session logs"));
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
