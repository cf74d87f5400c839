//! The generator writes deterministic, realistic homes whose index
//! sidecars equal what an index rebuild of the ledger produces.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use relayburn_bench::gen::{generate, GenOptions, GenReport, StampMix};
use relayburn_ledger::index::{record_id, turn_fingerprint, CONTENT_WINDOW};
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::jsonl::{parse_line, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, stamp_matches, Kind};
use sha2::{Digest, Sha256};

fn gen(dir: &Path, bytes: u64, seed: u64, stamps: StampMix) -> GenReport {
    generate(
        dir,
        &GenOptions {
            target_bytes: bytes,
            seed,
            stamps,
            shape: Default::default(),
            overwrite: false,
        },
    )
    .unwrap()
}

/// Every line of the ledger, parsed, with its kind and raw text.
fn lines(dir: &Path) -> Vec<(Kind, Value, String)> {
    let text = fs::read_to_string(dir.join("ledger.jsonl")).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|l| {
            let v = json::parse(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let k = line_kind(&v).unwrap_or_else(|| panic!("no kind: {l}"));
            (k, v, l.to_owned())
        })
        .collect()
}

/// A digest of every file of a home, names included.
fn digest_home(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let h = Sha256::digest(fs::read(&p).unwrap());
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((name, format!("{h:x}")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn same_arguments_give_identical_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    gen(a.path(), 3_000_000, 42, StampMix::Mixed);
    gen(b.path(), 3_000_000, 42, StampMix::Mixed);
    gen(c.path(), 3_000_000, 43, StampMix::Mixed);
    let da = digest_home(a.path());
    let db = digest_home(b.path());
    let dc = digest_home(c.path());
    let names: Vec<&str> = da.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"ledger.jsonl"));
    assert!(names.contains(&"ledger.idx"));
    assert!(names.contains(&"ledger.content.idx"));
    assert!(names.iter().any(|n| n.starts_with("content/")), "{names:?}");
    assert_eq!(da, db);
    let ledger = |d: &[(String, String)]| d.iter().find(|(n, _)| n == "ledger.jsonl").cloned();
    assert_ne!(
        ledger(&da),
        ledger(&dc),
        "another seed gives another ledger"
    );
}

/// The profile of a realistic ledger (fixtures README): lines per 100 MB
/// and mean bytes per line.
const PROFILE: [(&str, f64, f64, f64); 6] = [
    ("turn", 75_000.0, 75_000.0, 900.0),
    ("tool_result_event", 64_000.0, 64_000.0, 360.0),
    ("user_turn", 35_000.0, 35_000.0, 430.0),
    ("relationship", 800.0, 800.0, 200.0),
    ("compaction", 700.0, 700.0, 190.0),
    ("stamp", 1_000.0, 1_300.0, 190.0),
];

/// Big enough for a few hundred sessions, so the rare kinds
/// (relationships, compactions, stamps) are counted in hundreds.
#[test]
fn line_mix_follows_the_profile() {
    for seed in [1, 7] {
        let dir = tempfile::tempdir().unwrap();
        let report = gen(dir.path(), 20_000_000, seed, StampMix::Mixed);
        let all = lines(dir.path());
        let total: u64 = all.iter().map(|(_, _, l)| l.len() as u64 + 1).sum();
        assert_eq!(
            total,
            fs::metadata(dir.path().join("ledger.jsonl")).unwrap().len()
        );
        assert_eq!(total, report.total_bytes);
        for (name, lo, hi, mean) in PROFILE {
            let kind = Kind::parse(name).unwrap();
            let (n, bytes) = all
                .iter()
                .filter(|(k, _, _)| *k == kind)
                .fold((0u64, 0u64), |(n, b), (_, _, l)| {
                    (n + 1, b + l.len() as u64 + 1)
                });
            let s = report.stats_of(kind);
            assert_eq!((s.lines, s.bytes), (n, bytes), "report of {name}");
            let per_100mb = n as f64 * 100e6 / total as f64;
            assert!(
                per_100mb >= lo * 0.8 && per_100mb <= hi * 1.2,
                "seed {seed}: {name}: {per_100mb:.0} lines per 100 MB, want {lo}-{hi} ±20 %"
            );
            let m = bytes as f64 / n as f64;
            assert!(
                (m / mean - 1.0).abs() <= 0.2,
                "seed {seed}: {name}: mean {m:.0} B, want {mean} ±20 %"
            );
        }
        // The report's own deviations agree with the hand-made check.
        for m in report.mix() {
            assert!(
                m.count_dev.abs() <= 0.2 && m.bytes_dev.abs() <= 0.2,
                "{m:?}"
            );
        }
    }
}

/// What `rebuildIndex` computes: every id once in first-seen order, and
/// the last 10,000 distinct turn fingerprints in first-seen order.
#[test]
fn index_sidecars_match_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let report = gen(dir.path(), 16_000_000, 5, StampMix::Mixed);
    let mut scanner = LineScanner::open_at(&dir.path().join("ledger.jsonl"), 0).unwrap();
    let mut ids = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut fps = Vec::new();
    let mut seen_fps = HashSet::new();
    while let Some(line) = scanner.next_line().unwrap() {
        let Parsed::Value(v) = parse_line(line.bytes) else {
            panic!("unparsable line at {}", line.offset);
        };
        let Some(kind) = line_kind(&v) else { continue };
        let Some(rec) = v.get("record") else { continue };
        if let Some(id) = record_id(kind, rec) {
            let id = id.unwrap();
            if seen_ids.insert(id) {
                ids.push(id);
            }
        }
        if kind == Kind::Turn {
            let fp = turn_fingerprint(rec).unwrap();
            if seen_fps.insert(fp) {
                fps.push(fp);
            }
        }
    }
    assert!(fps.len() > CONTENT_WINDOW, "the window must be trimmed");
    let want_ids: String = ids.iter().map(|h| format!("{h}\n")).collect();
    let want_fps: String = fps[fps.len() - CONTENT_WINDOW..]
        .iter()
        .map(|h| format!("{h}\n"))
        .collect();
    assert_eq!(
        fs::read_to_string(dir.path().join("ledger.idx")).unwrap(),
        want_ids
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("ledger.content.idx")).unwrap(),
        want_fps
    );
    assert_eq!(report.ids, ids.len());
    assert_eq!(report.fingerprints, fps.len());
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} missing in {v:?}"))
}

fn is_hex16(x: &str) -> bool {
    x.len() == 16
        && x.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[test]
fn records_look_like_the_readers_output() {
    let dir = tempfile::tempdir().unwrap();
    let report = gen(dir.path(), 12_000_000, 3, StampMix::Mixed);
    let all = lines(dir.path());

    let mut seen_turns: HashMap<(String, String), String> = HashMap::new();
    let mut duplicates = 0u64;
    let mut last_turn: HashMap<String, (f64, String)> = HashMap::new();
    let mut calls: HashMap<(String, String), String> = HashMap::new();
    let mut sources = HashSet::new();
    let mut tools = HashSet::new();
    let mut rel_types = HashSet::new();
    let (mut with_fidelity, mut with_subagent, mut with_path, mut turns) = (0, 0, 0, 0);
    let (mut edit_hashes, mut call_errors, mut event_usage, mut spawn_links) = (0, 0, 0, 0);
    for (kind, v, raw) in &all {
        // Byte-identical to the library's serialisation of the same value.
        assert_eq!(&v.to_json(), raw);
        if *kind == Kind::Stamp {
            continue;
        }
        let r = v.get("record").unwrap();
        let sid = s(r, "sessionId").to_owned();
        match kind {
            Kind::Turn => {
                let key = (sid.clone(), s(r, "messageId").to_owned());
                if let Some(first) = seen_turns.get(&key) {
                    assert_eq!(first, raw, "a re-appended turn is the same line");
                    duplicates += 1;
                    continue;
                }
                seen_turns.insert(key, raw.clone());
                turns += 1;
                let source = s(r, "source");
                sources.insert(source.to_owned());
                let mid = s(r, "messageId");
                match source {
                    "claude-code" => {
                        assert!(mid.starts_with("msg_01") && mid.len() == 28, "{mid}");
                        assert_eq!(sid.len(), 36);
                    }
                    "codex" => {
                        let idx = r.get("turnIndex").unwrap().as_f64().unwrap();
                        assert!(mid.starts_with(&format!("turn_{idx}_")), "{mid}");
                        assert_eq!(sid.len(), 36);
                    }
                    "opencode" => {
                        assert!(sid.starts_with("ses_"), "{sid}");
                        assert!(mid.starts_with("msg_"), "{mid}");
                    }
                    other => panic!("source {other}"),
                }
                // Ascending turns and timestamps per session.
                let idx = r.get("turnIndex").unwrap().as_f64().unwrap();
                let ts = s(r, "ts").to_owned();
                if let Some((pidx, pts)) = last_turn.get(&sid) {
                    assert!(idx == pidx + 1.0, "{sid}: turn {idx} after {pidx}");
                    assert!(ts > *pts, "{sid}: {ts} after {pts}");
                } else {
                    assert_eq!(idx, 0.0);
                }
                last_turn.insert(sid.clone(), (idx, ts));
                let tc = r.get("toolCalls").unwrap().as_array().unwrap();
                assert!(tc.len() <= 6);
                for c in tc {
                    assert!(is_hex16(s(c, "argsHash")));
                    let name = s(c, "name");
                    tools.insert(name.to_owned());
                    if c.get("editPreHash").is_some() || c.get("editPostHash").is_some() {
                        assert!(matches!(name, "Edit" | "Write" | "NotebookEdit"));
                        edit_hashes += 1;
                    }
                    if c.get("isError").is_some() {
                        call_errors += 1;
                    }
                    calls.insert((sid.clone(), s(c, "id").to_owned()), name.to_owned());
                }
                for key in ["usage", "toolCalls", "stopReason", "model"] {
                    assert!(r.get(key).is_some(), "{key}");
                }
                with_fidelity += usize::from(r.get("fidelity").is_some());
                with_subagent += usize::from(r.get("subagent").is_some());
                with_path += usize::from(r.get("sessionPath").is_some());
            }
            Kind::ToolResultEvent => {
                let tool = calls
                    .get(&(sid.clone(), s(r, "toolUseId").to_owned()))
                    .unwrap_or_else(|| panic!("event before or without its call: {raw}"));
                assert!(is_hex16(s(r, "contentHash")));
                event_usage += usize::from(r.get("usage").is_some());
                if r.get("agentId").is_some() {
                    assert!(matches!(
                        tool.as_str(),
                        "Task" | "Agent" | "spawn_agent" | "task"
                    ));
                    spawn_links += 1;
                }
            }
            Kind::UserTurn => {
                for b in r.get("blocks").unwrap().as_array().unwrap() {
                    if s(b, "kind") == "tool_result" {
                        assert!(calls.contains_key(&(sid.clone(), s(b, "toolUseId").to_owned())));
                    }
                }
            }
            Kind::Relationship => {
                rel_types.insert(s(r, "relationshipType").to_owned());
            }
            Kind::Compaction | Kind::Stamp => {}
        }
    }
    assert_eq!(duplicates, report.duplicate_turns);
    let share = duplicates as f64 / turns as f64;
    assert!((0.002..0.01).contains(&share), "duplicate share {share}");
    let events = report.stats_of(Kind::ToolResultEvent).lines as usize;
    assert_eq!(events, calls.len(), "one result event per tool call");
    assert_eq!(sources.len(), 3, "{sources:?}");
    for t in [
        "Read",
        "Edit",
        "Write",
        "Bash",
        "Grep",
        "Glob",
        "Task",
        "TodoWrite",
        "WebFetch",
    ] {
        assert!(tools.contains(t), "no {t} calls");
    }
    for t in ["root", "subagent", "continuation", "fork"] {
        assert!(rel_types.contains(t), "no {t} relationship");
    }
    assert!(
        with_fidelity > turns / 2 && with_fidelity < turns,
        "{with_fidelity}/{turns}"
    );
    assert!(
        with_subagent > 0 && with_subagent < turns / 4,
        "{with_subagent}/{turns}"
    );
    assert!(with_path > 0 && with_path < turns, "{with_path}/{turns}");
    assert!(edit_hashes > 0 && call_errors > 0 && event_usage > 0 && spawn_links > 0);
    assert!(report.stats_of(Kind::Compaction).lines > 0);
}

fn selector_shape(sel: &Value) -> String {
    let o = sel.as_object().unwrap();
    o.iter()
        .map(|(k, _)| k.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("+")
}

#[test]
fn stamp_mixes() {
    let mixed = tempfile::tempdir().unwrap();
    let session = tempfile::tempdir().unwrap();
    let none = tempfile::tempdir().unwrap();
    gen(mixed.path(), 6_000_000, 9, StampMix::Mixed);
    gen(session.path(), 6_000_000, 9, StampMix::Session);
    gen(none.path(), 6_000_000, 9, StampMix::None);
    let mixed = lines(mixed.path());
    let session = lines(session.path());
    let none = lines(none.path());

    // Stamps (and the rows they bring) are the only difference.
    let others = |ls: &[(Kind, Value, String)]| -> Vec<String> {
        ls.iter()
            .filter(|(k, v, _)| {
                *k != Kind::Stamp
                    && v.get("record")
                        .and_then(|r| r.get("source"))
                        .and_then(Value::as_str)
                        != Some("spawn-env")
            })
            .map(|(_, _, l)| l.clone())
            .collect()
    };
    assert_eq!(others(&mixed), others(&none));
    assert_eq!(others(&session), others(&none));
    assert!(none.iter().all(|(k, _, _)| *k != Kind::Stamp));
    assert_eq!(
        others(&none).len(),
        none.len(),
        "no spawn-env rows without stamps"
    );

    let turns: Vec<&Value> = mixed
        .iter()
        .filter(|(k, _, _)| *k == Kind::Turn)
        .map(|(_, v, _)| v.get("record").unwrap())
        .collect();
    let mut shapes = HashSet::new();
    let mut parent_stamps = 0;
    for (k, v, _) in &mixed {
        if *k != Kind::Stamp {
            continue;
        }
        let sel = v.get("selector").unwrap();
        shapes.insert(selector_shape(sel));
        assert!(
            turns.iter().any(|t| stamp_matches(sel, t)),
            "stamp matches no turn: {v:?}"
        );
        let e = v.get("enrichment").unwrap();
        if let Some(parent) = e.get("parentAgentId").and_then(Value::as_str) {
            parent_stamps += 1;
            let sid = s(sel, "sessionId");
            assert!(mixed.iter().any(|(k, l, _)| *k == Kind::Relationship
                && l.get("record")
                    .is_some_and(|r| s(r, "source") == "spawn-env"
                        && s(r, "sessionId") == sid
                        && s(r, "relatedSessionId") == parent)));
        }
    }
    for shape in ["sessionId", "messageId", "range", "sessionId+range"] {
        assert!(shapes.contains(shape), "no {shape} stamp in {shapes:?}");
    }
    assert!(parent_stamps > 0);
    for key in ["workflowId", "persona", "tier", "ticket", "sprint"] {
        assert!(
            mixed
                .iter()
                .any(|(k, v, _)| *k == Kind::Stamp
                    && v.get("enrichment").unwrap().get(key).is_some()),
            "no stamp sets {key}"
        );
    }

    // One sessionId stamp for every session that wrote a line.
    let mut sessions = HashSet::new();
    let mut stamped = HashMap::new();
    for (k, v, _) in &session {
        if *k == Kind::Stamp {
            let sel = v.get("selector").unwrap();
            assert_eq!(selector_shape(sel), "sessionId");
            *stamped.entry(s(sel, "sessionId").to_owned()).or_insert(0) += 1;
        } else if *k == Kind::Turn {
            sessions.insert(s(v.get("record").unwrap(), "sessionId").to_owned());
        }
    }
    assert!(stamped.values().all(|n| *n == 1));
    let stamped: HashSet<String> = stamped.into_keys().collect();
    assert_eq!(stamped, sessions);
}

#[test]
fn content_sidecars_hold_content_records() {
    let dir = tempfile::tempdir().unwrap();
    let report = gen(dir.path(), 8_000_000, 11, StampMix::Mixed);
    let sessions: HashSet<String> = lines(dir.path())
        .iter()
        .filter(|(k, _, _)| *k == Kind::Turn)
        .map(|(_, v, _)| s(v.get("record").unwrap(), "sessionId").to_owned())
        .collect();
    let mut files = 0;
    let mut total = 0;
    for e in fs::read_dir(dir.path().join("content")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        let sid = name.strip_suffix(".jsonl").unwrap();
        assert!(relayburn_ledger::home::is_valid_session_id(sid));
        assert!(
            sessions.contains(sid),
            "sidecar of an unknown session {sid}"
        );
        let text = fs::read_to_string(&p).unwrap();
        let mut distinct = HashSet::new();
        for l in text.lines() {
            let v = json::parse(l).unwrap();
            assert_eq!(v.to_json(), l);
            assert_eq!(s(&v, "sessionId"), sid);
            let role = s(&v, "role");
            let kind = s(&v, "kind");
            let body = match kind {
                "text" | "thinking" => "text",
                "tool_use" => "toolUse",
                "tool_result" => "toolResult",
                other => panic!("content kind {other}"),
            };
            assert!(matches!(role, "user" | "assistant" | "tool_result"));
            assert!(v.get(body).is_some(), "{l}");
            for key in ["source", "messageId", "ts"] {
                assert!(v.get(key).is_some());
            }
            assert!(distinct.insert(l.to_owned()), "repeated content line");
            total += 1;
        }
        files += 1;
    }
    assert!(files > 0);
    assert_eq!(files, report.content_files);
    assert_eq!(total, report.content_lines);
}

#[test]
fn an_existing_ledger_is_kept_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ledger.jsonl"), "keep\n").unwrap();
    let opts = GenOptions {
        target_bytes: 100_000,
        seed: 1,
        stamps: StampMix::Mixed,
        shape: Default::default(),
        overwrite: false,
    };
    assert!(generate(dir.path(), &opts).is_err());
    assert_eq!(
        fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap(),
        "keep\n"
    );
    fs::create_dir(dir.path().join("content")).unwrap();
    fs::write(dir.path().join("content/stale.jsonl"), "x\n").unwrap();
    fs::write(dir.path().join("archive.sqlite"), "stale").unwrap();
    generate(
        dir.path(),
        &GenOptions {
            shape: Default::default(),
            overwrite: true,
            ..opts
        },
    )
    .unwrap();
    assert!(!dir.path().join("archive.sqlite").exists());
    assert!(!dir.path().join("content/stale.jsonl").exists());
    assert!(fs::metadata(dir.path().join("ledger.jsonl")).unwrap().len() >= 100_000);
}
