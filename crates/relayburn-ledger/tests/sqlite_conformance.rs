//! SQLite store conformance: every script under
//! `fixtures/reference/sqlite/` (the `ops/` scripts, replayed by the
//! reference with `RELAYBURN_STORAGE=sqlite`) is replayed on a fresh
//! `burn.sqlite` through the storage seam; the store's tables, the step
//! results and the content warnings must equal what the reference left.

mod support;

use std::path::Path;

use relayburn_ledger::store::{self, Store};
use relayburn_ledger::{json, LedgerHome, Query, Storage, Value};
use rusqlite::types::ValueRef;
use support::ops::{compare_result, records};

/// Steps that only exist for file storage, reported as the reference's
/// harness reported them.
const FILE_ONLY: &[&str] = &[
    "rawAppend",
    "truncateLedger",
    "rebuildIndex",
    "invalidateIndexCache",
];

fn is_archive_step(step: &Value) -> bool {
    match step.get("op").and_then(Value::as_str) {
        Some("buildArchive" | "rebuildArchive") => true,
        Some("query") => step.get("from").and_then(Value::as_str) == Some("archive"),
        _ => false,
    }
}

fn error_value(e: relayburn_ledger::Error) -> Value {
    relayburn_ledger::records::obj([("error", Value::str(&e.to_string()))])
}

fn collect(it: relayburn_ledger::Result<store::Records<'_>>) -> Value {
    match it.and_then(|it| it.collect::<Result<Vec<_>, _>>()) {
        Ok(v) => Value::Array(v),
        Err(e) => error_value(e),
    }
}

/// Run one step; content warnings go to `stderr`.
fn run_step(s: &dyn Store, step: &Value, stderr: &mut String) -> Value {
    let op = step.get("op").and_then(Value::as_str).unwrap_or("");
    if FILE_ONLY.contains(&op) {
        return relayburn_ledger::records::obj([("skipped", Value::str("file storage only"))]);
    }
    if is_archive_step(step) {
        return match s.require_file() {
            Ok(_) => panic!("a sqlite store offered the archive"),
            Err(e) => error_value(e),
        };
    }
    let done = |r: relayburn_ledger::Result<usize>| match r {
        Ok(_) => Value::Null,
        Err(e) => error_value(e),
    };
    match op {
        "appendTurns" => done(s.append_turns(records(step))),
        "appendCompactions" => done(s.append_compactions(records(step))),
        "appendRelationships" => done(s.append_relationships(records(step))),
        "appendToolResultEvents" => done(s.append_tool_result_events(records(step))),
        "appendUserTurns" => done(s.append_user_turns(records(step))),
        "appendContent" => done(s.append_content(records(step)).map(|sum| {
            for w in sum.warnings() {
                stderr.push_str(&w);
                stderr.push('\n');
            }
            sum.appended
        })),
        "appendStamp" => done(
            s.append_stamp(step.get("line").unwrap_or(&Value::Null))
                .map(|()| 0),
        ),
        "query" => {
            let q = step.get("query").cloned().unwrap_or(Value::Null);
            let query = Query::from_json(&q);
            match step.get("kind").and_then(Value::as_str).unwrap_or("") {
                "turns" => collect(s.query_turns(&query)),
                "compactions" => {
                    collect(s.query_records(relayburn_ledger::Kind::Compaction, &query))
                }
                "relationships" => {
                    collect(s.query_records(relayburn_ledger::Kind::Relationship, &query))
                }
                "toolResultEvents" => {
                    collect(s.query_records(relayburn_ledger::Kind::ToolResultEvent, &query))
                }
                "userTurns" => collect(s.query_records(relayburn_ledger::Kind::UserTurn, &query)),
                "content" => {
                    let sid = q.get("sessionId").and_then(Value::as_str).unwrap_or("");
                    let mid = q.get("messageId").and_then(Value::as_str);
                    match s.read_content(sid, mid) {
                        Ok(v) => Value::Array(v),
                        Err(e) => error_value(e),
                    }
                }
                other => panic!("unknown query kind {other}"),
            }
        }
        other => panic!("unknown op {other}"),
    }
}

fn cell(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Number(i as f64),
        ValueRef::Real(f) => Value::Number(f),
        ValueRef::Text(t) => Value::str(&String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => Value::str(&format!("<blob {} bytes>", b.len())),
    }
}

/// The fixture's dump format: every table but `locks` and
/// `sqlite_sequence`, rows in rowid order with `_rowid`; `content.mtime_ms`
/// nulled; `_schema` = every `sqlite_master.sql`, sorted by type and name.
fn dump(path: &Path) -> Value {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out = relayburn_ledger::Object::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .filter(|n: &String| n != "locks" && n != "sqlite_sequence")
        .collect();
    for t in tables {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT rowid AS _rowid, * FROM {t} ORDER BY rowid"
            ))
            .unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let rows: Vec<Value> = stmt
            .query_map([], |r| {
                let mut o = relayburn_ledger::Object::new();
                for (i, n) in names.iter().enumerate() {
                    let v = if t == "content" && n == "mtime_ms" {
                        Value::Null
                    } else {
                        cell(r.get_ref(i)?)
                    };
                    o.insert(n.as_str(), v);
                }
                Ok(Value::Object(o))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(t.as_str(), Value::Array(rows));
    }
    let schema: Vec<Value> = conn
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|s| Value::str(&s.unwrap()))
        .collect();
    out.insert("_schema", Value::Array(schema));
    Value::Object(out)
}

fn compare_dump(want: &Value, got: &Value) -> Vec<String> {
    let (Some(w), Some(g)) = (want.as_object(), got.as_object()) else {
        return vec!["dump is not an object".into()];
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = w
        .iter()
        .chain(g.iter())
        .map(|(k, _)| k.to_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    for n in names {
        let (a, b) = (w.get(&n), g.get(&n));
        if a == b {
            continue;
        }
        match (a.and_then(Value::as_array), b.and_then(Value::as_array)) {
            (Some(a), Some(b)) => {
                if a.len() != b.len() {
                    out.push(format!("{n}: {} rows, reference has {}", b.len(), a.len()));
                }
                if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
                    out.push(format!(
                        "{n} row {i} differs\n  want: {}\n  got:  {}",
                        support::ops::short(&a[i].to_json()),
                        support::ops::short(&b[i].to_json())
                    ));
                }
            }
            _ => out.push(format!("{n}: present on one side only")),
        }
    }
    out
}

fn read_json(p: &Path) -> Value {
    json::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn check(case: &str) {
    let reference = reference_or_skip!();
    let ops = read_json(&reference.join("ops").join(case).join("ops.json"));
    let expected = reference.join("sqlite").join(case).join("expected");
    let results = read_json(&expected.join("results.json"));
    let (steps, results) = (ops.as_array().unwrap(), results.as_array().unwrap());
    assert_eq!(steps.len(), results.len(), "one result per step");
    let home = tempfile::tempdir().unwrap();
    let storage = Storage::sqlite(LedgerHome::new(home.path()));
    let s = store::open(&storage).unwrap();
    let mut failures = Vec::new();
    let mut stderr = String::new();
    for (i, step) in steps.iter().enumerate() {
        let op = step.get("op").and_then(Value::as_str).unwrap_or("?");
        let got = run_step(s.as_ref(), step, &mut stderr);
        let null = Value::Null;
        let want = results[i].get("result").unwrap_or(&null);
        failures.extend(compare_result(i, op, want, &got));
    }
    drop(s);
    let got = dump(&storage.sqlite_path);
    failures.extend(compare_dump(
        &read_json(&expected.join("burn-dump.json")),
        &got,
    ));
    let want_stderr = std::fs::read_to_string(expected.join("stderr.txt")).unwrap_or_default();
    if stderr != want_stderr {
        failures.push(format!("stderr: want {want_stderr:?}, got {stderr:?}"));
    }
    // Nothing of file storage is written beside the store.
    for name in ["ledger.jsonl", "ledger.idx", "content", "ledger.lock"] {
        if home.path().join(name).exists() {
            failures.push(format!("{name} written under sqlite storage"));
        }
    }
    support::fixtures::assert_no_mismatches(case, &failures);
}

const CASES: &[&str] = &[
    "basic",
    "content",
    "fingerprint",
    "numbers",
    "stamps",
    "tool-result-events",
    "window",
];

#[test]
fn every_sqlite_case_is_replayed() {
    let reference = reference_or_skip!();
    support::fixtures::assert_cases_listed(&reference.join("sqlite"), CASES);
}

#[test]
fn sqlite_basic() {
    check("basic");
}

#[test]
fn sqlite_content() {
    check("content");
}

#[test]
fn sqlite_fingerprint() {
    check("fingerprint");
}

#[test]
fn sqlite_numbers() {
    check("numbers");
}

#[test]
fn sqlite_stamps() {
    check("stamps");
}

#[test]
fn sqlite_tool_result_events() {
    check("tool-result-events");
}

#[test]
fn sqlite_window() {
    check("window");
}
