//! Id hashes and content fingerprints (SPEC §4): recomputed over a fixture
//! ledger they reproduce the reference's rebuilt `ledger.idx` and
//! `ledger.content.idx`; hand cases pin JavaScript's conversions, with
//! expected hashes computed by Node (`createHash('sha256')` over the key
//! built with template strings and `Array#join`).

mod support;

use std::collections::HashSet;
use std::path::Path;

use relayburn_ledger::index::{self, Hash16};
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::jsonl::{self, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};

/// The content window's length (SPEC §4), written here rather than taken
/// from the code under test.
const WINDOW: usize = 10_000;

/// What the reference's index rebuild computes from a ledger: ids in
/// first-seen order, and the fingerprints' first occurrences, last
/// `WINDOW` of them.
fn rebuild(ledger: &Path) -> (Vec<Hash16>, Vec<Hash16>) {
    let mut ids = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut content = Vec::new();
    let mut seen_content = HashSet::new();
    let mut scanner = LineScanner::open_at(ledger, 0).unwrap();
    while let Some(line) = scanner.next_line().unwrap() {
        // Node's readline emits the unterminated last line too.
        jsonl::for_each_logical(line.bytes, |parsed| {
            let Parsed::Value(v) = parsed else { return };
            let Some(kind) = line_kind(&v) else { return };
            let absent = Value::Null;
            let record = v.get("record").unwrap_or(&absent);
            if let Some(id) = index::record_id(kind, record) {
                let id = id.unwrap();
                if seen_ids.insert(id) {
                    ids.push(id);
                }
            }
            if kind == Kind::Turn {
                let fp = index::turn_fingerprint(record).unwrap();
                if seen_content.insert(fp) {
                    content.push(fp);
                }
            }
        });
    }
    let keep = content.len().saturating_sub(WINDOW);
    content.drain(..keep);
    (ids, content)
}

fn read_index(path: &Path) -> Vec<Hash16> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| Hash16::parse_hex(l).unwrap_or_else(|| panic!("bad index line {l:?}")))
        .collect()
}

fn check_home(dir: &Path) {
    let (ids, content) = rebuild(&dir.join("ledger.jsonl"));
    let want_ids = read_index(&dir.join("ledger.idx"));
    let want_content = read_index(&dir.join("ledger.content.idx"));
    assert!(!want_ids.is_empty());
    // As sets (the contract) and, since a rebuild writes them in first-seen
    // order, as sequences too.
    let got_set: HashSet<_> = ids.iter().copied().collect();
    let want_set: HashSet<_> = want_ids.iter().copied().collect();
    assert_eq!(got_set.len(), ids.len());
    assert_eq!(
        got_set,
        want_set,
        "{}: ids differ ({} ours, {} reference)",
        dir.display(),
        ids.len(),
        want_ids.len()
    );
    assert_eq!(ids, want_ids, "{}: id order", dir.display());
    assert_eq!(content, want_content, "{}: content window", dir.display());
    // Text form: exactly what the files hold.
    let body: String = want_content.iter().map(|h| format!("{h}\n")).collect();
    assert_eq!(
        body,
        std::fs::read_to_string(dir.join("ledger.content.idx")).unwrap()
    );
}

#[test]
fn fixture_home_indexes_are_reproduced() {
    let reference = reference_or_skip!();
    check_home(&reference.join("home"));
}

/// The ops cases whose last index-changing step is `rebuildIndex`.
#[test]
fn rebuilt_ops_indexes_are_reproduced() {
    let reference = reference_or_skip!();
    for case in ["basic", "window", "numbers"] {
        let ops = json::parse(
            &std::fs::read_to_string(reference.join("ops").join(case).join("ops.json")).unwrap(),
        )
        .unwrap();
        let last_writer = ops
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.get("op").unwrap().as_str().unwrap())
            .rfind(|op| op.starts_with("append") || *op == "rawAppend" || *op == "rebuildIndex");
        assert_eq!(last_writer, Some("rebuildIndex"), "{case}");
        check_home(&reference.join("ops").join(case).join("expected"));
    }
}

#[test]
fn window_keeps_the_last_ten_thousand_first_occurrences() {
    let reference = reference_or_skip!();
    let dir = reference.join("ops/window/expected");
    let (_, content) = rebuild(&dir.join("ledger.jsonl"));
    assert_eq!(content.len(), WINDOW);
    assert_eq!(read_index(&dir.join("ledger.content.idx")).len(), WINDOW);
}

#[test]
fn keys_follow_javascript_conversions() {
    // (function, record, first 16 hex of SHA-256 as Node computes it).
    let cases: &[(&str, &str, &str)] = &[
        (
            "turn",
            r#"{"source":"codex","sessionId":"s","messageId":"m"}"#,
            "d105f23d21c144d1",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":"s"}"#,
            "eb72a321b97a502f",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":null,"messageId":1e21}"#,
            "0ff5727fff765b13",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":"a\ud83db","messageId":"\ud83d\ude00"}"#,
            "1bf3cbce61316209",
        ),
        (
            "turn",
            r#"{"source":["a",null,["b",null]],"sessionId":{"x":1},"messageId":true}"#,
            "c01e2d844876f8e4",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":"s","messageId":-0}"#,
            "bc2f84588904caba",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":"s","messageId":0.1}"#,
            "9edee83ec37d19fe",
        ),
        (
            "turn",
            r#"{"source":"codex","sessionId":"s","messageId":[]}"#,
            "7cec8b50a5a799e9",
        ),
        ("turn", r#""just a string""#, "e3852b1f8f5fec37"),
        ("turn", r#"[1,2]"#, "e3852b1f8f5fec37"),
        (
            "compaction",
            r#"{"source":"codex","sessionId":"s","ts":"2026-01-01T00:00:00.000Z"}"#,
            "699da7e8aa5014ee",
        ),
        (
            "compaction",
            r#"{"source":"codex","sessionId":"s"}"#,
            "eb72a321b97a502f",
        ),
        (
            "relationship",
            r#"{"source":"spawn-env","sessionId":"s","relationshipType":"subagent","relatedSessionId":"p"}"#,
            "91d60b0b960a36c5",
        ),
        (
            "relationship",
            r#"{"source":"spawn-env","sessionId":null,"relationshipType":"subagent","relatedSessionId":null,"agentId":"a","parentToolUseId":7}"#,
            "bbaa3e24b4c2d05d",
        ),
        ("relationship", r#"{"sessionId":"s"}"#, "3731b76ac732e390"),
        (
            "tool_result_event",
            r#"{"source":"codex","sessionId":"s","toolUseId":"t","eventIndex":1e21}"#,
            "93d39917aafdd82f",
        ),
        (
            "tool_result_event",
            r#"{"source":"codex","sessionId":"s","toolUseId":"t"}"#,
            "c2c2bb3532dfb486",
        ),
        (
            "tool_result_event",
            r#"{"source":"codex","sessionId":"s","toolUseId":"t","eventIndex":123456789012345678}"#,
            "ed6b52912ee1d745",
        ),
        (
            "tool_result_event",
            r#"{"source":"codex","sessionId":"s","toolUseId":"t","eventIndex":[null,[1,[2]]]}"#,
            "c30e2de012fa2183",
        ),
        (
            "user_turn",
            r#"{"source":"codex","sessionId":"s","userUuid":"u"}"#,
            "79f7517a8f9ffe95",
        ),
        (
            "user_turn",
            r#"{"source":"codex","sessionId":"s","userUuid":null}"#,
            "6eead52d5971a5e4",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":0.1,"output":0.2,"cacheRead":1.5,"cacheCreate5m":1e21,"cacheCreate1h":1},"toolCalls":[{"argsHash":"abcdef"}]}"#,
            "c182e0824987fd4d",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1},"toolCalls":[]}"#,
            "af813ca9eae57ca3",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":"5","output":7,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[{}]}"#,
            "8767d0ed912352f2",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":null,"output":true,"cacheRead":null,"cacheCreate5m":[1],"cacheCreate1h":{"a":1}},"toolCalls":[{"argsHash":"\ud83d\ude00\ud83d\ude00x"}]}"#,
            "d790bfba625c4019",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":[{"argsHash":"a\ud83d\ude00"}]}"#,
            "ee16e40b6867a34d",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":"abc"}"#,
            "70d1f353941a6550",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":{"length":2,"0":{"argsHash":"zyxwv"}}}"#,
            "293ed0617da3035a",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":{"length":"1","0":{"argsHash":"zyxwv"}}}"#,
            "293ed0617da3035a",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":{"0":{"argsHash":"zyxwv"}}}"#,
            "70d1f353941a6550",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":[null]}"#,
            "70d1f353941a6550",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1,"output":2,"cacheRead":3,"cacheCreate5m":4,"cacheCreate1h":5},"toolCalls":[{"argsHash":7}]}"#,
            "70d1f353941a6550",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":"str","toolCalls":[]}"#,
            "af813ca9eae57ca3",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1e308,"output":1e308,"cacheRead":-0,"cacheCreate5m":0.1,"cacheCreate1h":0.2},"toolCalls":true}"#,
            "ec978484c404eab5",
        ),
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{},"toolCalls":5}"#,
            "af813ca9eae57ca3",
        ),
        (
            "fp",
            r#"{"usage":{"input":1,"output":2},"toolCalls":[]}"#,
            "8fca0e9a46506b7b",
        ),
        // The reference throws a TypeError on these.
        (
            "fp",
            r#"{"ts":"T","model":"M","usage":{"input":1},"toolCalls":null}"#,
            "THROWS",
        ),
        ("fp", r#"{"ts":"T","model":"M","toolCalls":[]}"#, "THROWS"),
        ("fp", r#"{"ts":"T","model":"M","usage":{}}"#, "THROWS"),
        ("turn", "null", "THROWS"),
        ("fp", "null", "THROWS"),
    ];
    for &(f, record, want) in cases {
        let r = json::parse(record).unwrap();
        let got = match f {
            "turn" => index::turn_id(&r),
            "compaction" => index::compaction_id(&r),
            "relationship" => index::relationship_id(&r),
            "tool_result_event" => index::tool_result_event_id(&r),
            "user_turn" => index::user_turn_id(&r),
            "fp" => index::turn_fingerprint(&r),
            _ => unreachable!(),
        };
        let got = got.map_or_else(|_| "THROWS".to_string(), |h| h.hex());
        assert_eq!(got, want, "{f} {record}");
        if f != "fp" {
            let kind = Kind::parse(f).unwrap();
            let via_kind = index::record_id(kind, &r)
                .unwrap()
                .map_or_else(|_| "THROWS".to_string(), |h| h.hex());
            assert_eq!(via_kind, want, "record_id {f} {record}");
        }
    }
    assert!(index::record_id(Kind::Stamp, &Value::Null).is_none());
}

#[test]
fn hash_text_forms() {
    // sha256("") starts e3b0c44298fc1c14.
    assert_eq!(Hash16::of("").hex(), "e3b0c44298fc1c14");
    assert_eq!(Hash16::of("").to_string(), "e3b0c44298fc1c14");
    let h = Hash16::parse_hex("00000000000000ff").unwrap();
    assert_eq!(h.0, 255);
    assert_eq!(h.hex(), "00000000000000ff");
    assert_eq!(
        Hash16::parse_hex("abcdef0123456789").map(|h| h.hex()),
        Some("abcdef0123456789".into())
    );
    for bad in [
        "",
        "0",
        "00000000000000f",
        "00000000000000fff",
        "g000000000000000",
        "+000000000000000",
        " 000000000000000",
        "000000000000000\u{e9}",
        // A different string from any digest for the reference.
        "ABCDEF0123456789",
    ] {
        assert_eq!(Hash16::parse_hex(bad), None, "{bad:?}");
    }
}
