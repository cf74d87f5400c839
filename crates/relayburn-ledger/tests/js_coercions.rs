//! The JavaScript conversions of `relayburn_ledger::js` against Node's own
//! answers, on generated inputs: `Number(x)`, `Boolean(x)`, `String(x)`
//! and `x.length > 0`.

mod support;

use relayburn_ledger::js;
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::{Kind, LedgerHome};
use support::node_or_skip;

/// A small seeded generator (xorshift64), so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Pieces that `Number(string)` treats specially, and some it does not.
const PIECES: &[&str] = &[
    "0",
    "1",
    "7",
    "9",
    "00",
    "x",
    "X",
    "o",
    "O",
    "b",
    "B",
    ".",
    "e",
    "E",
    "+",
    "-",
    " ",
    "\t",
    "\n",
    "\u{a0}",
    "\u{feff}",
    "\u{2028}",
    "\u{85}",
    "\u{180e}",
    "Infinity",
    "infinity",
    "NaN",
    "inf",
    "a",
    "f",
    "F",
    "_",
    "n",
    "0x",
    "0o",
    "0b",
    "0X",
    "0O",
    "0B",
    "1e21",
    "ff",
    "12345678901234567890",
    "fffffffffffffffffff",
];

fn number_string(r: &mut Rng) -> String {
    let n = r.below(6);
    (0..n).map(|_| PIECES[r.below(PIECES.len())]).collect()
}

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "0.5",
    "1e21",
    "1e-7",
    "123456789012345678",
    "2",
    "-3.5",
];

fn value(r: &mut Rng, depth: u32) -> String {
    let pick = if depth >= 3 { r.below(4) } else { r.below(6) };
    match pick {
        0 => ["null", "true", "false"][r.below(3)].to_string(),
        1 => NUMBERS[r.below(NUMBERS.len())].to_string(),
        2 | 3 => Value::from(number_string(r)).to_json(),
        4 => {
            let items: Vec<String> = (0..r.below(4)).map(|_| value(r, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            // Objects: with and without a `length` (never `toString` or
            // `valueOf`, which JSON cannot make callable but which would
            // make String(x) throw).
            let keys = ["length", "0", "a"];
            let items: Vec<String> = (0..r.below(3))
                .map(|_| format!("\"{}\":{}", keys[r.below(3)], value(r, depth + 1)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// Node's answers for each input line.
fn ask_node(node: &str, inputs: &[String]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inputs.jsonl");
    std::fs::write(&file, inputs.join("\n") + "\n").unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/js-coercions.mjs");
    let out = std::process::Command::new(node)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().map(|l| json::parse(l).unwrap()).collect()
}

fn node_number(text: &str) -> f64 {
    match text {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        "-0" => -0.0,
        t => t.parse().unwrap(),
    }
}

fn same_number(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[test]
fn conversions_agree_with_node_on_generated_inputs() {
    let Some(node) = node_or_skip() else { return };
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut inputs: Vec<String> = Vec::new();
    for _ in 0..3_000 {
        inputs.push(Value::from(number_string(&mut r)).to_json());
    }
    for _ in 0..3_000 {
        inputs.push(value(&mut r, 0));
    }
    // Long non-decimal integers, where rounding to a double matters.
    for (prefix, digits, len) in [("0x", 16, 13..22), ("0o", 8, 17..28), ("0b", 2, 52..70)] {
        for _ in 0..300 {
            let n = len.start + r.below(len.end - len.start);
            let text: String = (0..n)
                .map(|_| char::from_digit(r.below(digits) as u32, digits as u32).unwrap())
                .collect();
            inputs.push(Value::from(format!("{prefix}{text}")).to_json());
        }
    }
    let answers = ask_node(node, &inputs);
    assert_eq!(answers.len(), inputs.len());
    let mut checked = 0;
    for (input, want) in inputs.iter().zip(&answers) {
        let v = json::parse(input).unwrap();
        let want = want.as_array().unwrap();
        let n = js::to_number(&v);
        assert!(
            same_number(n, node_number(want[0].as_str().unwrap())),
            "Number({input}): node {}, we {n}",
            want[0].to_json()
        );
        if let Some(s) = v.as_str() {
            assert!(same_number(js::string_to_number(s), n), "{input}");
        }
        assert_eq!(Some(js::truthy(&v)), want[1].as_bool(), "Boolean({input})");
        assert_eq!(
            js::to_string(&v),
            want[2].as_str().unwrap(),
            "String({input})"
        );
        if !matches!(v, Value::Null) {
            assert_eq!(
                Some(js::length_positive(&v)),
                want[3].as_bool(),
                "({input}).length > 0"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 6_900);
}

/// Node's answers, recorded: `({length: "0o7"}).length > 0` is true
/// (Number("0o7") is 7), and so is `({length: [[1]]}).length > 0`
/// (String([[1]]) is "1"). The archive's copy of this rule once said false
/// to both, while the fingerprint's said true.
#[test]
fn octal_and_nested_array_lengths_are_positive_everywhere() {
    for (length, want) in [
        (r#""0o7""#, true),
        (r#""0b1""#, true),
        ("[[1]]", true),
        (r#"["0o7"]"#, true),
        ("[[0]]", false),
        (r#""0o8""#, false),
    ] {
        let v = json::parse(&format!(r#"{{"length":{length}}}"#)).unwrap();
        assert_eq!(js::length_positive(&v), want, "length {length}");
        assert!((js::string_to_number("0o7") - 7.0).abs() < f64::EPSILON);
    }

    // The archive: `replacedTools` is stored when `x && x.length > 0`.
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let ledger = relayburn_ledger::Ledger::open(home.clone()).unwrap();
    let mut lines = String::new();
    for (i, length) in [r#""0o7""#, "[[1]]", "[[0]]"].iter().enumerate() {
        let rec = json::parse(&format!(
            r#"{{"v":1,"source":"claude-code","sessionId":"s","messageId":"m-{i}","turnIndex":{i},"ts":"2026-04-20T00:00:0{i}.000Z","model":"m","usage":{{"input":1,"output":1,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[{{"id":"t","name":"Bash","replacedTools":{{"length":{length}}}}}]}}"#
        ))
        .unwrap();
        lines.push_str(&relayburn_ledger::records::wrap_record(Kind::Turn, rec).to_json());
        lines.push('\n');
    }
    std::fs::write(home.ledger(), lines).unwrap();
    ledger.build_archive().unwrap();
    let conn = rusqlite::Connection::open(home.archive()).unwrap();
    let stored: Vec<Option<String>> = conn
        .prepare("SELECT replaced_tools FROM tool_calls ORDER BY message_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        stored,
        [
            Some(r#"{"length":"0o7"}"#.to_string()),
            Some(r#"{"length":[[1]]}"#.to_string()),
            None
        ]
    );
}

/// Node's answer, recorded: folding hex digits in doubles rounded twice and
/// gave 1183997827645081400000.
#[test]
fn a_long_hex_string_is_rounded_once() {
    assert_eq!(
        js::string_to_number("0x402f45472763427cb0"),
        1.183_997_827_645_081_6e21
    );
}
