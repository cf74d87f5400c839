//! Byte-exact writer conformance: every script under
//! `fixtures/reference/ops/` is replayed in a fresh home with one `Ledger`
//! handle (the reference ran each script in one process), and the files
//! and step results must equal what the reference left.

mod support;

use support::ops::{compare_result, records, short};

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use relayburn_ledger::{json, Ledger, LedgerHome, Query, Value};

/// Archive steps run against the same home, after the writer steps
/// before them, exactly as the reference's script did.
fn archive_step(ledger: &Ledger, step: &Value) -> Option<Result<Value, String>> {
    let e = |e: relayburn_ledger::Error| e.to_string();
    Some(match step.get("op").and_then(Value::as_str) {
        Some("buildArchive") => ledger.build_archive().map(|r| r.to_value()).map_err(e),
        Some("rebuildArchive") => ledger.rebuild_archive().map(|r| r.to_value()).map_err(e),
        _ => {
            let q = Query::from_json(step.get("query").unwrap_or(&Value::Null));
            ledger
                .query_turns_from_archive(&q)
                .map(Value::Array)
                .map_err(e)
        }
    })
}

fn is_archive_step(step: &Value) -> bool {
    match step.get("op").and_then(Value::as_str) {
        Some("buildArchive" | "rebuildArchive") => true,
        Some("query") => step.get("from").and_then(Value::as_str) == Some("archive"),
        _ => false,
    }
}

fn collect(it: impl Iterator<Item = relayburn_ledger::Result<Value>>) -> Result<Value, String> {
    it.collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
        .map_err(|e| e.to_string())
}

/// Run one step; `None` when its result is not compared here.
fn run_step(ledger: &Ledger, step: &Value) -> Option<Result<Value, String>> {
    if is_archive_step(step) {
        return archive_step(ledger, step);
    }
    let op = step.get("op").and_then(Value::as_str).unwrap_or("");
    let e = |e: relayburn_ledger::Error| e.to_string();
    let null = |r: relayburn_ledger::Result<()>| r.map(|()| Value::Null).map_err(e);
    let path = ledger.home().ledger();
    Some(match op {
        "appendTurns" => null(ledger.append_turns(records(step)).map(drop)),
        "appendCompactions" => null(ledger.append_compactions(records(step)).map(drop)),
        "appendRelationships" => null(ledger.append_relationships(records(step)).map(drop)),
        "appendToolResultEvents" => null(ledger.append_tool_result_events(records(step)).map(drop)),
        "appendUserTurns" => null(ledger.append_user_turns(records(step)).map(drop)),
        "appendContent" => null(ledger.append_content(records(step)).map(|s| {
            for w in s.warnings() {
                eprintln!("{w}");
            }
        })),
        "appendStamp" => null(ledger.append_stamp(step.get("line").unwrap_or(&Value::Null))),
        "rebuildIndex" => ledger.rebuild_index().map(|r| r.to_json()).map_err(e),
        "invalidateIndexCache" => {
            ledger.invalidate_index_cache();
            Ok(Value::Null)
        }
        "rawAppend" => {
            let text = step.get("text").and_then(Value::as_js_string).unwrap();
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(text.to_lossy().as_bytes()).unwrap();
            Ok(Value::Null)
        }
        "truncateLedger" => {
            let bytes = step.get("bytes").and_then(Value::as_f64).unwrap() as u64;
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(bytes).unwrap();
            Ok(Value::Null)
        }
        "query" => {
            let q = step.get("query").cloned().unwrap_or(Value::Null);
            let query = Query::from_json(&q);
            match step.get("kind").and_then(Value::as_str).unwrap_or("") {
                "turns" => ledger.query_turns(&query).map_err(e).and_then(collect),
                "compactions" => ledger
                    .query_compactions(&query)
                    .map_err(e)
                    .and_then(collect),
                "relationships" => ledger
                    .query_relationships(&query)
                    .map_err(e)
                    .and_then(collect),
                "toolResultEvents" => ledger
                    .query_tool_result_events(&query)
                    .map_err(e)
                    .and_then(collect),
                "userTurns" => ledger.query_user_turns(&query).map_err(e).and_then(collect),
                "content" => {
                    let sid = q.get("sessionId").and_then(Value::as_str).unwrap_or("");
                    let mid = q.get("messageId").and_then(Value::as_str);
                    ledger.read_content(sid, mid).map(Value::Array).map_err(e)
                }
                other => panic!("unknown query kind {other}"),
            }
        }
        other => panic!("unknown op {other}"),
    })
}

/// Compare two files byte for byte; describe the first differing line.
fn compare_file(name: &str, want: Option<Vec<u8>>, got: Option<Vec<u8>>) -> Option<String> {
    match (want, got) {
        (None, None) => None,
        (Some(_), None) => Some(format!("{name}: expected the file, it was not written")),
        (None, Some(g)) => Some(format!(
            "{name}: written ({} bytes) but the reference left no such file",
            g.len()
        )),
        (Some(w), Some(g)) if w == g => None,
        (Some(w), Some(g)) => {
            let wl: Vec<&[u8]> = w.split(|&b| b == b'\n').collect();
            let gl: Vec<&[u8]> = g.split(|&b| b == b'\n').collect();
            let i = (0..wl.len().max(gl.len()))
                .find(|&i| wl.get(i) != gl.get(i))
                .unwrap_or(0);
            let show = |l: Option<&&[u8]>| {
                l.map(|b| short(&String::from_utf8_lossy(b)))
                    .unwrap_or_else(|| "<no line>".into())
            };
            Some(format!(
                "{name}: differs at line {} ({} vs {} bytes)\n  want: {}\n  got:  {}",
                i + 1,
                w.len(),
                g.len(),
                show(wl.get(i)),
                show(gl.get(i))
            ))
        }
    }
}

fn read_opt(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

fn run_case(case_dir: &Path) -> Vec<String> {
    let ops = json::parse(&std::fs::read_to_string(case_dir.join("ops.json")).unwrap()).unwrap();
    let expected_dir = case_dir.join("expected");
    let results =
        json::parse(&std::fs::read_to_string(expected_dir.join("results.json")).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    let home = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(LedgerHome::new(home.path())).unwrap();
    let mut failures = Vec::new();
    let steps = ops.as_array().unwrap();
    assert_eq!(
        steps.len(),
        results.len(),
        "results.json has one entry per step"
    );
    for (i, step) in steps.iter().enumerate() {
        let op = step.get("op").and_then(Value::as_str).unwrap_or("?");
        let null = Value::Null;
        let want = results[i].get("result").unwrap_or(&null);
        match run_step(&ledger, step) {
            None => {}
            Some(Err(e)) => failures.push(format!("step {i} ({op}) failed: {e}")),
            Some(Ok(got)) => failures.extend(compare_result(i, op, want, &got)),
        }
    }
    for name in ["ledger.jsonl", "ledger.idx", "ledger.content.idx"] {
        failures.extend(compare_file(
            name,
            read_opt(&expected_dir.join(name)),
            read_opt(&home.path().join(name)),
        ));
    }
    let list = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let dump_path = expected_dir.join("archive-dump.json");
    if dump_path.exists() {
        let got = support::archive::dump(&home.path().join("archive.sqlite"));
        let want = support::archive::normalise_dump(support::archive::read_json(&dump_path));
        support::archive::assert_dumps_equal(&got, &want, &case_dir.display().to_string());
    }
    let want_content = list(&expected_dir.join("content"));
    let got_content = list(&home.path().join("content"));
    let mut names = want_content.clone();
    names.extend(got_content.iter().cloned());
    names.sort();
    names.dedup();
    for n in names {
        failures.extend(compare_file(
            &format!("content/{n}"),
            read_opt(&expected_dir.join("content").join(&n)),
            read_opt(&home.path().join("content").join(&n)),
        ));
    }
    let leftovers: Vec<String> = list(home.path())
        .into_iter()
        .filter(|n| n.ends_with(".lock") || n.ends_with(".tmp"))
        .collect();
    if !leftovers.is_empty() {
        failures.push(format!("left behind: {leftovers:?}"));
    }
    failures
}

const CASES: &[&str] = &[
    "archive-incremental",
    "basic",
    "content",
    "fingerprint",
    "numbers",
    "stamps",
    "tool-result-events",
    "window",
];

fn check(case: &str) {
    let reference = reference_or_skip!();
    let failures = run_case(&reference.join("ops").join(case));
    support::fixtures::assert_no_mismatches(case, &failures);
}

#[test]
fn every_case_is_replayed() {
    let reference = reference_or_skip!();
    support::fixtures::assert_cases_listed(&reference.join("ops"), CASES);
}

#[test]
fn ops_archive_incremental() {
    check("archive-incremental");
}

#[test]
fn ops_basic() {
    check("basic");
}

#[test]
fn ops_content() {
    check("content");
}

#[test]
fn ops_fingerprint() {
    check("fingerprint");
}

#[test]
fn ops_numbers() {
    check("numbers");
}

#[test]
fn ops_stamps() {
    check("stamps");
}

#[test]
fn ops_tool_result_events() {
    check("tool-result-events");
}

#[test]
fn ops_window() {
    check("window");
}
