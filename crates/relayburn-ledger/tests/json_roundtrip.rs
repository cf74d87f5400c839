//! Round-trip fidelity (SPEC §2): every line the reference wrote is read
//! and written back byte for byte, odd lines are read exactly as Node reads
//! them, and each JSON rule is pinned by a hand-written case whose expected
//! text came from Node's `JSON.stringify(JSON.parse(…))`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use relayburn_ledger::json::{self, JsString, Object, Value};
use relayburn_ledger::jsonl::{self, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};

// ---------------------------------------------------------------------------
// Node's readings of the fixture lines (tests/data/node_readings.tsv)
// ---------------------------------------------------------------------------

/// How Node reads one logical line.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    class: String,
    kind: String,
    /// `JSON.stringify` output; `None` when it is the line itself.
    output: Option<String>,
}

struct NodeReadings {
    line_counts: BTreeMap<String, usize>,
    lines: BTreeMap<(String, usize), Reading>,
}

fn node_readings() -> NodeReadings {
    let text = include_str!("data/node_readings.tsv");
    let mut line_counts = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for row in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = row.splitn(6, '\t').collect();
        match cols[0] {
            "F" => {
                line_counts.insert(cols[1].to_string(), cols[2].parse().unwrap());
            }
            "L" => {
                assert_eq!(cols.len(), 6, "bad row {row:?}");
                let output = match cols[5] {
                    "=" => None,
                    s => Some(s.to_string()),
                };
                lines.insert(
                    (cols[1].to_string(), cols[2].parse().unwrap()),
                    Reading {
                        class: cols[3].to_string(),
                        kind: cols[4].to_string(),
                        output,
                    },
                );
            }
            other => panic!("unknown row type {other:?}"),
        }
    }
    NodeReadings { line_counts, lines }
}

/// Our reading of one physical line that holds no `\r`.
fn our_reading(bytes: &[u8]) -> Reading {
    let mut got = Vec::new();
    jsonl::for_each_logical(bytes, |p| got.push(p));
    assert_eq!(got.len(), 1, "one logical line expected");
    match got.pop().unwrap() {
        Parsed::Blank => Reading {
            class: "blank".into(),
            kind: "-".into(),
            output: Some(String::new()),
        },
        Parsed::Malformed(_) => Reading {
            class: "malformed".into(),
            kind: "-".into(),
            output: Some(String::new()),
        },
        Parsed::Value(v) => Reading {
            class: "value".into(),
            kind: line_kind(&v).map_or("-", Kind::as_str).into(),
            output: Some(v.to_json()),
        },
    }
}

fn physical_lines(path: &Path) -> Vec<Vec<u8>> {
    let mut scanner = LineScanner::open_at(path, 0).unwrap();
    let mut out = Vec::new();
    let mut expected_offset = 0;
    while let Some(line) = scanner.next_line().unwrap() {
        assert_eq!(line.offset, expected_offset);
        assert!(!line.oversized);
        expected_offset = line.end(line.bytes.len() as u64);
        out.push(line.bytes.to_vec());
    }
    assert_eq!(expected_offset, std::fs::metadata(path).unwrap().len());
    out
}

/// The kind a line written by the reference declares in its first bytes,
/// `{"v":1,"kind":"K",…` (found without the JSON parser).
fn declared_kind(line: &str) -> &str {
    let Some(rest) = line.strip_prefix(r#"{"v":1,"kind":""#) else {
        return "-";
    };
    let k = &rest[..rest.find('"').unwrap()];
    match k {
        "turn" | "stamp" | "compaction" | "relationship" | "tool_result_event" | "user_turn" => k,
        _ => "-",
    }
}

/// Physical line numbers of `ledger` that a `rawAppend` step of `ops` put
/// there: each raw text is found in the final ledger (exactly once), and a
/// ledger that was truncated was written only by raw appends.
fn raw_line_numbers(ops: &Value, ledger: &[u8]) -> BTreeSet<usize> {
    let steps = ops.as_array().unwrap();
    let op = |s: &Value| s.get("op").unwrap().as_str().unwrap().to_string();
    let mut line_starts = vec![0usize];
    line_starts.extend(
        ledger
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    let line_of = |off: usize| line_starts.partition_point(|&s| s <= off) - 1;
    let mut raw = BTreeSet::new();
    if steps.iter().any(|s| op(s) == "truncateLedger") {
        assert!(
            !steps.iter().any(|s| op(s).starts_with("append")),
            "a truncated ledger written by writers too"
        );
        raw.extend(0..line_starts.len() - 1);
        return raw;
    }
    for s in steps.iter().filter(|s| op(s) == "rawAppend") {
        let text = s.get("text").unwrap().as_str().unwrap().as_bytes();
        let found: Vec<usize> = ledger
            .windows(text.len())
            .enumerate()
            .filter(|(_, w)| *w == text)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "raw text must occur exactly once");
        raw.extend(line_of(found[0])..=line_of(found[0] + text.len() - 1));
    }
    raw
}

/// Check every line of one fixture file; returns how many lines Node's
/// table decided.
fn check_file(
    reference: &Path,
    rel: &str,
    is_ledger: bool,
    raw: &BTreeSet<usize>,
    readings: &NodeReadings,
) -> usize {
    let lines = physical_lines(&reference.join(rel));
    assert!(!lines.is_empty(), "{rel} is empty");
    if let Some(&n) = readings.line_counts.get(rel) {
        assert_eq!(
            lines.len(),
            n,
            "{rel}: logical line count differs from Node's"
        );
    }
    let mut from_node = 0;
    for (i, bytes) in lines.iter().enumerate() {
        assert!(!bytes.contains(&b'\r'), "{rel}:{i} holds a CR");
        let ours = our_reading(bytes);
        match readings.lines.get(&(rel.to_string(), i)) {
            Some(node) => {
                from_node += 1;
                let text = std::str::from_utf8(bytes).unwrap();
                let mut node = node.clone();
                match node.class.as_str() {
                    "value" => {
                        node.output.get_or_insert_with(|| text.to_string());
                    }
                    _ => node.output = Some(String::new()),
                }
                assert_eq!(ours, node, "{rel}:{i}: {text}");
            }
            None => {
                assert!(
                    !raw.contains(&i),
                    "{rel}:{i} was raw-appended but Node's table lacks it"
                );
                let text = std::str::from_utf8(bytes).unwrap();
                let want = Reading {
                    class: "value".into(),
                    kind: if is_ledger { declared_kind(text) } else { "-" }.into(),
                    output: Some(text.to_string()),
                };
                if is_ledger {
                    assert_ne!(want.kind, "-", "{rel}:{i} declares no known kind");
                }
                assert_eq!(ours, want, "{rel}:{i}");
            }
        }
    }
    for &i in raw {
        assert!(
            readings.lines.contains_key(&(rel.to_string(), i)),
            "{rel}:{i} is raw but has no Node reading"
        );
    }
    let listed: BTreeSet<usize> = readings
        .lines
        .keys()
        .filter(|(f, _)| f == rel)
        .map(|&(_, i)| i)
        .collect();
    if rel.starts_with("ops/") {
        assert_eq!(&listed, raw, "{rel}: raw lines differ from Node's table");
    }
    from_node
}

#[test]
fn every_fixture_line_reads_and_writes_back_as_node_does() {
    let reference = reference_or_skip!();
    let readings = node_readings();
    let mut files = 0;
    let mut lines_from_node = 0;

    lines_from_node += check_file(
        &reference,
        "home/ledger.jsonl",
        true,
        &BTreeSet::new(),
        &readings,
    );
    files += 1;

    let mut cases: Vec<_> = std::fs::read_dir(reference.join("ops"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(cases.len() >= 8);
    for case in &cases {
        let ops_text =
            std::fs::read_to_string(reference.join("ops").join(case).join("ops.json")).unwrap();
        let ops = json::parse(&ops_text).unwrap();
        let expected = reference.join("ops").join(case).join("expected");
        let ledger_rel = format!("ops/{case}/expected/ledger.jsonl");
        if expected.join("ledger.jsonl").exists() {
            let bytes = std::fs::read(expected.join("ledger.jsonl")).unwrap();
            let raw = raw_line_numbers(&ops, &bytes);
            lines_from_node += check_file(&reference, &ledger_rel, true, &raw, &readings);
            files += 1;
        }
        if expected.join("content").is_dir() {
            let mut sidecars: Vec<_> = std::fs::read_dir(expected.join("content"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            sidecars.sort();
            for f in sidecars {
                let rel = format!("ops/{case}/expected/content/{f}");
                check_file(&reference, &rel, false, &BTreeSet::new(), &readings);
                files += 1;
            }
        }
    }
    assert!(files >= 9, "only {files} fixture files found");
    // The table covers the torn home line and every raw-appended line.
    assert!(lines_from_node > 300, "{lines_from_node}");
}

#[test]
fn fixture_lines_with_lone_surrogates_come_back_escaped() {
    let reference = reference_or_skip!();
    let text =
        std::fs::read_to_string(reference.join("ops/content/expected/content/ses_abcDEF123.jsonl"))
            .unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(r"\ud83d"))
        .expect("the content fixture holds a lone surrogate");
    let v = json::parse(line).unwrap();
    let t = v.get("text").unwrap().as_js_string().unwrap();
    assert!(
        t.as_str().is_none(),
        "a lone surrogate is not valid Unicode"
    );
    assert_eq!(t.utf16_len(), "broken pair ".len() + 1 + " end".len());
    assert_eq!(v.to_json(), line);
}

// ---------------------------------------------------------------------------
// Hand-written rules; every expected text was produced by Node 20:
// `JSON.stringify(JSON.parse(input))`, or a SyntaxError.
// ---------------------------------------------------------------------------

fn rt(input: &str) -> String {
    match json::parse(input) {
        Ok(v) => v.to_json(),
        Err(e) => panic!("{input:?} should parse: {e}"),
    }
}

fn rejects(input: &str) {
    assert!(json::parse(input).is_err(), "{input:?} should be rejected");
}

#[test]
fn numbers_print_like_number_to_string() {
    for (input, want) in [
        ("0.1", "0.1"),
        ("1.5", "1.5"),
        ("1e21", "1e+21"),
        ("1e20", "100000000000000000000"),
        ("1e-7", "1e-7"),
        ("1e-6", "0.000001"),
        ("0.000001", "0.000001"),
        ("-5e-7", "-5e-7"),
        ("123e-20", "1.23e-18"),
        ("-0", "0"),
        ("-0.0", "0"),
        ("9007199254740993", "9007199254740992"),
        ("123456789012345678", "123456789012345680"),
        ("18446744073709551616", "18446744073709552000"),
        ("123456789012345678901234567890", "1.2345678901234568e+29"),
        ("5e-324", "5e-324"),
        ("2e-324", "0"),
        ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ("1e400", "null"),
        ("-1e400", "null"),
        ("1e309", "null"),
        ("1E2", "100"),
        ("1e+2", "100"),
        ("0.1e1", "1"),
        ("2.5e-3", "0.0025"),
        ("4.35", "4.35"),
        ("1e15", "1000000000000000"),
        ("1e16", "10000000000000000"),
    ] {
        assert_eq!(rt(input), want, "{input}");
    }
    // The parsed value is the double itself; a negative zero is kept until
    // it is printed.
    let z = json::parse("-0").unwrap().as_f64().unwrap();
    assert!(z == 0.0 && z.is_sign_negative());
    assert_eq!(json::parse("1e400").unwrap().as_f64(), Some(f64::INFINITY));
    assert_eq!(json::parse("5e-324").unwrap().as_f64(), Some(5e-324));
}

/// Thousands of doubles (random bit patterns, short decimals, integers,
/// the notation switch points) against Node's `String(x)`.
#[test]
fn numbers_print_exactly_as_node_prints_them() {
    let table = include_str!("data/number_strings.tsv");
    let mut n = 0;
    for row in table.lines().filter(|l| !l.starts_with('#')) {
        let (bits, want) = row.split_once('\t').unwrap();
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        assert_eq!(json::format_number(x), want, "{bits}");
        assert_eq!(Value::Number(x).to_json(), want, "{bits}");
        let back = json::parse(want).unwrap().as_f64().unwrap();
        assert!(back == x, "{want} reads back as {back}");
        n += 1;
    }
    assert!(n > 3000, "{n}");
}

#[test]
fn surrogates_and_emoji() {
    for (input, want) in [
        (r#""\ud83d""#, r#""\ud83d""#),
        (r#""\udc00""#, r#""\udc00""#),
        (r#""\ude00\ud83d""#, r#""\ude00\ud83d""#),
        (r#""a\ud83dx""#, r#""a\ud83dx""#),
        (r#""\ud83d\ude00""#, "\"\u{1F600}\""),
        (r#""\uD83D\uDE00""#, "\"\u{1F600}\""),
        (r#""\ud83d\ud83d\ude00""#, "\"\\ud83d\u{1F600}\""),
        ("\"\u{1F600}\"", "\"\u{1F600}\""),
        (r#""\u00e9\u0041""#, "\"\u{e9}A\""),
    ] {
        assert_eq!(rt(input), want, "{input}");
    }
    // The emoji from an escaped pair is an ordinary Unicode string.
    let v = json::parse(r#""\ud83d\ude00""#).unwrap();
    assert_eq!(v.as_str(), Some("\u{1F600}"));
    let lone = json::parse(r#""\ud83d""#).unwrap();
    assert_eq!(
        lone.as_js_string(),
        Some(&JsString::Utf16(vec![0xD83D].into()))
    );
}

#[test]
fn string_escapes_follow_json_stringify() {
    // All of 0x00..=0x1f, then DEL, U+2028, U+2029, quote, backslash, slash.
    let mut all: String = (0u8..0x20).map(char::from).collect();
    all.push_str("\u{7f}\u{2028}\u{2029}\"\\/");
    let want = "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\u{7f}\u{2028}\u{2029}\\\"\\\\/\"";
    assert_eq!(Value::from(all.as_str()).to_json(), want);
    // And parsing that text gives the string back.
    assert_eq!(json::parse(want).unwrap().as_str(), Some(all.as_str()));
    for (input, want) in [
        (r#""\u007f""#, "\"\u{7f}\""),
        (r#""\u2028\u2029""#, "\"\u{2028}\u{2029}\""),
        (r#""\/""#, r#""/""#),
        (r#""\b\f\n\r\t""#, r#""\b\f\n\r\t""#),
        (r#""\u0000\u001f\u0010""#, r#""\u0000\u001f\u0010""#),
        (r#""\u001F\u000A""#, r#""\u001f\n""#),
    ] {
        assert_eq!(rt(input), want, "{input}");
    }
}

#[test]
fn duplicate_keys_keep_first_position_and_last_value() {
    for (input, want) in [
        (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
        (r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#),
        (r#"{"1":1,"1":2,"b":3,"0":4}"#, r#"{"0":4,"1":2,"b":3}"#),
        (
            r#"{"v":1,"kind":"turn","kind":"stamp"}"#,
            r#"{"v":1,"kind":"stamp"}"#,
        ),
        (
            r#"{"v":2,"v":1,"kind":"relationship"}"#,
            r#"{"v":1,"kind":"relationship"}"#,
        ),
    ] {
        assert_eq!(rt(input), want, "{input}");
    }
    // Many keys (past the small-object fast path) with a late duplicate.
    let mut input = String::from("{");
    let mut want = String::from("{");
    for i in 0..100 {
        input.push_str(&format!("\"k{i}\":{i},"));
        want.push_str(&format!("\"k{i}\":{},", if i == 7 { 1000 } else { i }));
    }
    input.push_str("\"k7\":1000}");
    want.pop();
    want.push('}');
    assert_eq!(rt(&input), want);
}

#[test]
fn array_index_keys_come_first_in_ascending_order() {
    for (input, want) in [
        (r#"{"b":1,"2":2,"1":3}"#, r#"{"1":3,"2":2,"b":1}"#),
        (
            r#"{"01":1,"4294967295":2,"4294967294":3,"1":4,"0":5}"#,
            r#"{"0":5,"1":4,"4294967294":3,"01":1,"4294967295":2}"#,
        ),
    ] {
        assert_eq!(rt(input), want, "{input}");
    }
    // Inserting through the API follows the same order.
    let mut o = Object::new();
    o.insert("z", Value::Null);
    o.insert("10", Value::Null);
    o.insert("-1", Value::Null);
    o.insert("9", Value::Null);
    assert_eq!(
        Value::Object(o).to_json(),
        r#"{"9":null,"10":null,"z":null,"-1":null}"#
    );
}

#[test]
fn line_kind_needs_v_exactly_one() {
    for (input, want, kind) in [
        (
            r#"{"v":"1","kind":"turn"}"#,
            r#"{"v":"1","kind":"turn"}"#,
            None,
        ),
        (
            r#"{"v":1.0,"kind":"turn"}"#,
            r#"{"v":1,"kind":"turn"}"#,
            Some(Kind::Turn),
        ),
        (
            r#"{"v":1e0,"kind":"stamp"}"#,
            r#"{"v":1,"kind":"stamp"}"#,
            Some(Kind::Stamp),
        ),
        (
            r#"{"v":10e-1,"kind":"user_turn"}"#,
            r#"{"v":1,"kind":"user_turn"}"#,
            Some(Kind::UserTurn),
        ),
        (
            r#"{"v":true,"kind":"turn"}"#,
            r#"{"v":true,"kind":"turn"}"#,
            None,
        ),
        (
            r#"{"v":-0,"kind":"turn"}"#,
            r#"{"v":0,"kind":"turn"}"#,
            None,
        ),
        (r#"{"v":1,"kind":"Turn"}"#, r#"{"v":1,"kind":"Turn"}"#, None),
        (
            r#"{"v":1,"kind":"content"}"#,
            r#"{"v":1,"kind":"content"}"#,
            None,
        ),
        (
            r#"[{"v":1,"kind":"turn"}]"#,
            r#"[{"v":1,"kind":"turn"}]"#,
            None,
        ),
        (
            r#"{"v":1,"kind":"turn","kind":"stamp"}"#,
            r#"{"v":1,"kind":"stamp"}"#,
            Some(Kind::Stamp),
        ),
        (
            r#"{"v":2,"v":1,"kind":"relationship"}"#,
            r#"{"v":1,"kind":"relationship"}"#,
            Some(Kind::Relationship),
        ),
        (
            r#"{"kind":"compaction","v":1}"#,
            r#"{"kind":"compaction","v":1}"#,
            Some(Kind::Compaction),
        ),
        (
            r#"{"v":1,"kind":"tool_result_event"}"#,
            r#"{"v":1,"kind":"tool_result_event"}"#,
            Some(Kind::ToolResultEvent),
        ),
        (
            r#"{"v":1,"kind":"turn\u0000"}"#,
            r#"{"v":1,"kind":"turn\u0000"}"#,
            None,
        ),
        (r#"{"v":1}"#, r#"{"v":1}"#, None),
        ("1", "1", None),
        ("null", "null", None),
    ] {
        let v = json::parse(input).unwrap();
        assert_eq!(v.to_json(), want, "{input}");
        assert_eq!(line_kind(&v), kind, "{input}");
    }
}

#[test]
fn unknown_fields_survive_at_every_level() {
    let line = r#"{"v":1,"zeta":[1,{"q":null}],"kind":"turn","record":{"v":1,"source":"codex","extra":{"deep":{"deeper":[true,false,"x"]}},"sessionId":"s","messageId":"m","usage":{"input":1,"output":2,"mystery":0.5,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[{"id":"t","name":"Bash","argsHash":"abcd","future":{"a":[]}}],"fidelity":{"granularity":"per-turn","new":1}},"trailer":"x"}"#;
    let v = json::parse(line).unwrap();
    assert_eq!(v.to_json(), line);
    assert_eq!(line_kind(&v), Some(Kind::Turn));
    let rec = v.get("record").unwrap();
    assert_eq!(rec.get("sessionId").and_then(Value::as_str), Some("s"));
    let usage = rec.get("usage").unwrap();
    assert_eq!(usage.get("output").and_then(Value::as_f64), Some(2.0));
    assert_eq!(usage.get("mystery").and_then(Value::as_f64), Some(0.5));
    let call = &rec.get("toolCalls").and_then(Value::as_array).unwrap()[0];
    assert_eq!(call.get("argsHash").and_then(Value::as_str), Some("abcd"));
}

#[test]
fn whitespace_rules() {
    // JSON.parse: only space, tab, CR and LF between tokens.
    assert_eq!(rt(" \t\r\n{\"a\" : [ 1 , 2 ] }\n "), r#"{"a":[1,2]}"#);
    for ws in [
        "\u{a0}", "\u{1680}", "\u{2000}", "\u{200a}", "\u{2028}", "\u{2029}", "\u{202f}",
        "\u{205f}", "\u{3000}", "\u{feff}", "\u{b}", "\u{c}",
    ] {
        rejects(&format!("{ws}1"));
        rejects(&format!("1{ws}"));
        rejects(&format!("[1,{ws}2]"));
        // The readers trim with String#trim first, which removes all of these.
        let line = format!("{ws}{ws}{{\"a\":1}}{ws}");
        match jsonl::parse_line(line.as_bytes()) {
            Parsed::Value(v) => assert_eq!(v.to_json(), r#"{"a":1}"#),
            other => panic!("{ws:?}: {other:?}"),
        }
    }
    // String#trim leaves U+180E, U+0085 and U+200B alone (Node 20), so they
    // make the line malformed.
    for not_ws in ["\u{180e}", "\u{85}", "\u{200b}"] {
        let line = format!("{not_ws}{{\"a\":1}}");
        assert!(
            matches!(jsonl::parse_line(line.as_bytes()), Parsed::Malformed(_)),
            "{not_ws:?}"
        );
        assert_eq!(
            relayburn_ledger::js::trim(&format!("{not_ws}x{not_ws}"))
                .chars()
                .count(),
            3
        );
    }
    assert!(matches!(jsonl::parse_line(b""), Parsed::Blank));
    assert!(matches!(
        jsonl::parse_line("\u{feff} \u{a0}\t".as_bytes()),
        Parsed::Blank
    ));
}

#[test]
fn invalid_json_is_rejected() {
    for input in [
        "",
        " ",
        r#"{"a":1,}"#,
        "[1,]",
        "{'a':1}",
        "01",
        "-01",
        "00",
        "+1",
        ".5",
        "1.",
        "-",
        "--1",
        "1e",
        "1e+",
        "0x10",
        "NaN",
        "Infinity",
        "-Infinity",
        "\"a\tb\"",
        "\"a\nb\"",
        "\"\u{0}\"",
        "\"\u{1f}\"",
        r#""\x41""#,
        r#""\U0041""#,
        r#""\u12""#,
        r#""\u12g4""#,
        r#""\"#,
        "[1 2]",
        r#"{"a" 1}"#,
        r#"{"a":1 "b":2}"#,
        r#"{a:1}"#,
        r#"{"a":1}}"#,
        "tru",
        "nul",
        "True",
        "1 2",
        "\"abc",
        "[",
        "{",
        "]",
        "/* c */1",
        "1//c",
    ] {
        rejects(input);
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    /// A JS string in the one representation the parser produces: UTF-8
    /// when it is valid Unicode, code units otherwise.
    fn canonical(units: Vec<u16>) -> JsString {
        match String::from_utf16(&units) {
            Ok(s) => JsString::from(s),
            Err(_) => JsString::Utf16(units.into_boxed_slice()),
        }
    }

    fn code_unit() -> impl Strategy<Value = u16> {
        prop_oneof![
            4 => 0x20u16..0x7f,
            2 => 0u16..0x20,
            2 => 0xD800u16..0xE000,
            1 => Just(0x2028u16),
            1 => any::<u16>(),
        ]
    }

    fn js_string() -> impl Strategy<Value = JsString> {
        prop_oneof![
            3 => any::<String>().prop_map(JsString::from),
            3 => vec(code_unit(), 0..12).prop_map(canonical),
            1 => prop::sample::select(vec![
                "", "0", "1", "01", "-1", "10", "4294967294", "4294967295", "v", "kind",
                "\u{1F600}", "\"\\/",
            ])
            .prop_map(JsString::from),
        ]
    }

    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            any::<u64>().prop_map(f64::from_bits),
            any::<i64>().prop_map(|n| n as f64),
            any::<i32>().prop_map(f64::from),
            (1u64..1 << 52).prop_map(f64::from_bits), // subnormals
            prop::sample::select(vec![0.1, 1.5, 1e21, 1e-7, 1e-6, -0.0, 5e-324, f64::MAX]),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number().prop_map(Value::Number),
            js_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..8).prop_map(Value::Array),
                vec((js_string(), inner), 0..8).prop_map(|kv| {
                    let mut o = Object::new();
                    for (k, v) in kv {
                        o.insert(k, v);
                    }
                    Value::Object(o)
                }),
            ]
        })
    }

    /// What `JSON.parse(JSON.stringify(v))` gives: non-finite numbers
    /// become null (a negative zero compares equal to zero as a double).
    fn after_round_trip(v: &Value) -> Value {
        match v {
            Value::Number(n) if !n.is_finite() => Value::Null,
            Value::Array(a) => Value::Array(a.iter().map(after_round_trip).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), after_round_trip(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn values_survive_serialise_parse_serialise(v in value()) {
            let first = v.to_json();
            prop_assert!(!first.contains('\n') && !first.contains('\r'));
            let parsed = json::parse(&first).unwrap();
            prop_assert_eq!(parsed.to_json(), first.clone());
            prop_assert_eq!(&parsed, &after_round_trip(&v));
            // A serialised value is a ledger line as the readers see it.
            match jsonl::parse_line(first.as_bytes()) {
                Parsed::Value(w) => prop_assert_eq!(w.to_json(), first),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn numbers_survive_as_doubles(n in number()) {
            let text = Value::Number(n).to_json();
            let back = json::parse(&text).unwrap();
            if n.is_finite() {
                prop_assert_eq!(back.as_f64(), Some(n));
                prop_assert_eq!(back.to_json(), text.clone());
                // Rust's shortest round-trip digits agree with ours.
                let ours: f64 = text.parse().unwrap();
                prop_assert_eq!(ours, n);
            } else {
                prop_assert_eq!(text, "null");
            }
        }
    }

    /// JavaScript's own-property order for the members of a parsed object:
    /// array indices (canonical decimal below 2^32 - 1) ascending, then the
    /// other keys in first-appearance order; each key takes its last value.
    fn js_member_order(members: &[(String, u32)]) -> Vec<(String, u32)> {
        let is_index = |k: &str| {
            !k.is_empty()
                && k.bytes().all(|b| b.is_ascii_digit())
                && (k == "0" || !k.starts_with('0'))
                && k.parse::<u64>().is_ok_and(|n| n < u64::from(u32::MAX))
        };
        let mut indices: BTreeMap<u64, (String, u32)> = BTreeMap::new();
        let mut names: Vec<(String, u32)> = Vec::new();
        for (k, v) in members {
            if is_index(k) {
                indices.insert(k.parse().unwrap(), (k.clone(), *v));
            } else if let Some(slot) = names.iter_mut().find(|(n, _)| n == k) {
                slot.1 = *v;
            } else {
                names.push((k.clone(), *v));
            }
        }
        indices.into_values().chain(names).collect()
    }

    fn member_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "2",
                "10",
                "01",
                "00",
                "-1",
                "1.5",
                "4294967294",
                "4294967295",
                "a",
                "b",
                "kind",
                "v",
                "",
            ])
            .prop_map(str::to_string),
            "[0-9]{1,3}",
            "[a-c]{1,2}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn members_follow_javascript_property_order(
            members in vec((member_key(), any::<u32>()), 0..60)
        ) {
            let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let text = format!("{{{}}}", body.join(","));
            let want: Vec<String> = js_member_order(&members)
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            let want = format!("{{{}}}", want.join(","));
            prop_assert_eq!(json::parse(&text).unwrap().to_json(), want.clone());
            // Built through the API instead of the parser: the same order.
            let mut o = Object::new();
            for (k, v) in &members {
                o.insert(k.as_str(), Value::Number(f64::from(*v)));
            }
            prop_assert_eq!(Value::Object(o).to_json(), want);
        }
    }

    // --- turn-shaped lines with extra fields -----------------------------

    /// Numbers with the text `Number#toString` gives them (from Node).
    const NUMBERS: &[(&str, f64)] = &[
        ("0", 0.0),
        ("1", 1.0),
        ("1161", 1161.0),
        ("0.1", 0.1),
        ("1.5", 1.5),
        ("7.25", 7.25),
        ("1e+21", 1e21),
        ("1e-7", 1e-7),
        ("0.000001", 1e-6),
        ("123456789012345680", 123456789012345680.0),
        ("9007199254740992", 9007199254740992.0),
    ];

    fn plain_text() -> impl Strategy<Value = String> {
        "[A-Za-z0-9 ._:/-]{0,24}"
    }

    fn num() -> impl Strategy<Value = (&'static str, f64)> {
        prop::sample::select(NUMBERS)
    }

    #[derive(Debug, Clone)]
    struct Turn {
        source: String,
        session_id: String,
        message_id: String,
        ts: String,
        model: String,
        usage: Vec<(&'static str, f64)>,
        args_hash: Option<String>,
        /// Extra fields (already serialised) and where they go.
        extras: Vec<(usize, String, String)>,
    }

    fn turn() -> impl Strategy<Value = Turn> {
        (
            prop::sample::select(vec!["claude-code", "codex", "opencode"]),
            plain_text(),
            plain_text(),
            plain_text(),
            plain_text(),
            vec(num(), 6),
            proptest::option::of("[0-9a-f]{1,16}"),
            vec(
                (
                    0usize..12,
                    "x[A-Za-z]{0,6}",
                    value().prop_map(|v| v.to_json()),
                ),
                0..5,
            ),
        )
            .prop_map(
                |(source, session_id, message_id, ts, model, usage, args_hash, extras)| Turn {
                    source: source.to_string(),
                    session_id,
                    message_id,
                    ts,
                    model,
                    usage,
                    args_hash,
                    extras,
                },
            )
    }

    /// The line as the reference would write it, built by hand.
    fn line_of(t: &Turn) -> String {
        let names = [
            "input",
            "output",
            "reasoning",
            "cacheRead",
            "cacheCreate5m",
            "cacheCreate1h",
        ];
        let usage: Vec<String> = names
            .iter()
            .zip(&t.usage)
            .map(|(k, (text, _))| format!("\"{k}\":{text}"))
            .collect();
        let calls = match &t.args_hash {
            Some(h) => format!("[{{\"id\":\"t1\",\"name\":\"Bash\",\"argsHash\":\"{h}\"}}]"),
            None => "[]".into(),
        };
        let mut fields = vec![
            "\"v\":1".to_string(),
            format!("\"source\":\"{}\"", t.source),
            format!("\"sessionId\":\"{}\"", t.session_id),
            format!("\"messageId\":\"{}\"", t.message_id),
            "\"turnIndex\":3".to_string(),
            format!("\"ts\":\"{}\"", t.ts),
            format!("\"model\":\"{}\"", t.model),
            format!("\"usage\":{{{}}}", usage.join(",")),
            format!("\"toolCalls\":{calls}"),
        ];
        // Extra keys start with `x` and are unique, so they keep their place.
        let mut seen = BTreeSet::new();
        for (at, k, v) in &t.extras {
            if seen.insert(k.clone()) {
                let at = (*at).min(fields.len());
                fields.insert(at, format!("\"{k}\":{v}"));
            }
        }
        format!(
            "{{\"v\":1,\"kind\":\"turn\",\"record\":{{{}}}}}",
            fields.join(",")
        )
    }

    fn sha16(key: &str) -> String {
        Sha256::digest(key.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn turn_lines_survive_with_extra_fields(t in turn()) {
            let line = line_of(&t);
            let v = match jsonl::parse_line(line.as_bytes()) {
                Parsed::Value(v) => v,
                other => return Err(TestCaseError::fail(format!("{other:?}"))),
            };
            prop_assert_eq!(v.to_json(), line.clone());
            prop_assert_eq!(line_kind(&v), Some(Kind::Turn));
            let rec = v.get("record").unwrap();
            let text = |k: &str| rec.get(k).and_then(Value::as_str);
            prop_assert_eq!(text("sessionId"), Some(t.session_id.as_str()));
            prop_assert_eq!(text("messageId"), Some(t.message_id.as_str()));
            prop_assert_eq!(rec.get("turnIndex").and_then(Value::as_f64), Some(3.0));
            let u = rec.get("usage").unwrap();
            let names = ["input", "output", "reasoning", "cacheRead", "cacheCreate5m", "cacheCreate1h"];
            for (k, (_, want)) in names.iter().zip(&t.usage) {
                prop_assert_eq!(u.get(k).and_then(Value::as_f64), Some(*want));
            }
            let id = relayburn_ledger::index::turn_id(rec).unwrap();
            prop_assert_eq!(
                id.hex(),
                sha16(&format!("{}|{}|{}", t.source, t.session_id, t.message_id))
            );
            // Re-serialising a second time changes nothing either.
            let again = json::parse(&v.to_json()).unwrap();
            prop_assert_eq!(again.to_json(), line);
        }
    }
}

/// CPU time of this thread: the machine may be shared, so rates are per
/// CPU second rather than per wall second.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Parse throughput on the fixture ledger, through the readers' path
/// (scanner, lossy decode, trim, parse), and serialise throughput. Run by
/// hand: `cargo test --release --test json_roundtrip -- --ignored --nocapture throughput`.
#[test]
#[ignore]
fn throughput() {
    let reference = reference_or_skip!();
    let one = std::fs::read(reference.join("home/ledger.jsonl")).unwrap();
    let target_mb: usize = std::env::var("RELAYBURN_THROUGHPUT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut data = Vec::new();
    while data.len() < target_mb << 20 {
        data.extend_from_slice(&one);
        data.push(b'\n');
    }
    let mb = data.len() as f64 / (1 << 20) as f64;
    let rounds = if target_mb < 64 { 1 } else { 3 };
    for _ in 0..rounds {
        let cpu = cpu_seconds();
        let mut values = Vec::new();
        let mut scanner = LineScanner::new(data.as_slice(), 0);
        while let Some(line) = scanner.next_line().unwrap() {
            if let Parsed::Value(v) = jsonl::parse_line(line.bytes) {
                values.push(v);
                if values.len() == 1000 {
                    values.clear();
                }
            }
        }
        drop(values);
        let parse = cpu_seconds() - cpu;

        let parsed: Vec<Value> = one
            .split(|&b| b == b'\n')
            .filter_map(|l| match jsonl::parse_line(l) {
                Parsed::Value(v) => Some(v),
                _ => None,
            })
            .collect();
        let cpu = cpu_seconds();
        let mut written = 0usize;
        let mut out = String::new();
        while written < target_mb << 20 {
            for v in &parsed {
                out.clear();
                v.write_json(&mut out);
                written += out.len() + 1;
            }
        }
        let serialise = cpu_seconds() - cpu;
        eprintln!(
            "{mb:.0} MB: parse {:.0} MB/s, serialise {:.0} MB/s (per CPU second)",
            mb / parse,
            written as f64 / (1 << 20) as f64 / serialise,
        );
    }
}
