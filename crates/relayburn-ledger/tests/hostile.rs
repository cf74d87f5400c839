//! Hostile input: the line scanner, the record parser, kind classification
//! and the hash functions never panic, do bounded work, stream long lines in
//! bounded memory, and read odd bytes exactly as Node's readers do.
//!
//! The fuzz test runs for `RELAYBURN_FUZZ_SECS` seconds (default 20);
//! `RELAYBURN_FUZZ_SEED` replays one run. A failure is shrunk and printed as
//! a byte-string literal; a crash that aborts the process (a stack
//! overflow) cannot be caught, so rerun with its seed and
//! `RELAYBURN_FUZZ_TRACE=<file>`, which holds the input being checked.
//! Inputs that once broke something are kept in `regressions`.

mod support;

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use relayburn_ledger::index;
use relayburn_ledger::json::{self, Value, MAX_DEPTH};
use relayburn_ledger::jsonl::{self, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};
use relayburn_ledger::{Error, LedgerHome};

/// The memory test measures this process's peak RSS, so the tests of this
/// file run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reader that hands its data out in pieces of the given sizes, so line
/// ends fall at every position relative to the scanner's refills.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
}

impl<'a> Pieces<'a> {
    fn new(data: &'a [u8], sizes: &'a [usize]) -> Pieces<'a> {
        Pieces {
            data,
            sizes,
            next: 0,
        }
    }
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = if self.sizes.is_empty() {
            usize::MAX
        } else {
            self.sizes[self.next % self.sizes.len()].max(1)
        };
        self.next += 1;
        let n = want.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// One logical line as the readers see it: `B` blank, `M` malformed, or
/// `<kind or -> <JSON.stringify output>`.
fn describe(p: Parsed) -> String {
    match p {
        Parsed::Blank => "B".into(),
        Parsed::Malformed(_) => "M".into(),
        Parsed::Value(v) => format!(
            "{} {}",
            line_kind(&v).map_or("-", Kind::as_str),
            v.to_json()
        ),
    }
}

/// Every logical line of a whole file, read through the shared scanner.
fn read_all(data: &[u8], sizes: &[usize]) -> Vec<String> {
    let mut scanner = LineScanner::new(Pieces::new(data, sizes), 0);
    let mut out = Vec::new();
    while let Some(line) = scanner.next_line().unwrap() {
        jsonl::for_each_logical(line.bytes, |p| out.push(describe(p)));
    }
    out
}

// ---------------------------------------------------------------------------
// Odd bytes, read as Node reads them
// ---------------------------------------------------------------------------

/// Files and what Node made of them: readline over a utf8 stream
/// (`crlfDelay: Infinity`), `trim()`, `JSON.parse`, the reference's kind
/// predicate and `JSON.stringify`. Produced once with Node 20.
const NODE_READINGS: &[(&[u8], &[&str])] = &[
    (b"{\x22a\x22:\x22x\x00y\x22}\x0a", &["M"]),
    (b"{\x22a\x22:1}\x00\x0a", &["M"]),
    (b"\x00\x0a", &["M"]),
    (b"{\x22a\x22:\x22\x5cu0000\x22}\x0a", &["- {\"a\":\"\\u0000\"}"]),
    (b"{\x22a\x22:\x22\xff\x22}\x0a", &["- {\"a\":\"\u{fffd}\"}"]),
    (b"{\x22a\x22:\x22\xe2\x82\x22}\x0a", &["- {\"a\":\"\u{fffd}\"}"]),
    (
        b"{\x22a\x22:\x22\xed\xa0\x80\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{fffd}\u{fffd}\"}"],
    ),
    (
        b"{\x22a\x22:\x22\xc0\x80\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{fffd}\"}"],
    ),
    (
        b"{\x22a\x22:\x22\xf4\x90\x80\x80\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{fffd}\u{fffd}\u{fffd}\"}"],
    ),
    (b"{\x22a\x22:\x22\xf0\x9f\x98\x22}\x0a", &["- {\"a\":\"\u{fffd}\"}"]),
    (
        b"{\x22a\x22:\x22\xf0\x9f\x98\x80\x22}\x0a",
        &["- {\"a\":\"\u{1f600}\"}"],
    ),
    (b"\xff{\x22a\x22:1}\x0a", &["M"]),
    (
        b"{\x22a\x22:\x22\x80\x80\x80\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{fffd}\u{fffd}\"}"],
    ),
    (
        b"{\x22a\x22:\x22\xe2\x82\xe2\x82\xac\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{20ac}\"}"],
    ),
    (
        b"{\x22a\x22:\x22\xf8\x88\x80\x80\x80\x22}\x0a",
        &["- {\"a\":\"\u{fffd}\u{fffd}\u{fffd}\u{fffd}\u{fffd}\"}"],
    ),
    (
        b"{\x22a\x22:\x22\xef\xbf\xbf\xef\xbf\xbe\x22}\x0a",
        &["- {\"a\":\"\u{ffff}\u{fffe}\"}"],
    ),
    (
        b"\xef\xbb\xbf{\x22v\x22:1,\x22kind\x22:\x22turn\x22,\x22record\x22:{}}\x0a",
        &["turn {\"v\":1,\"kind\":\"turn\",\"record\":{}}"],
    ),
    (b"{\x22a\x22:\xef\xbb\xbf1}\x0a", &["M"]),
    (b"{\x22a\x22:\x22\xef\xbb\xbf\x22}\x0a", &["- {\"a\":\"\u{feff}\"}"]),
    (
        b"{\x22v\x22:1,\x22kind\x22:\x22stamp\x22}\x0d\x0a{\x22v\x22:1,\x22kind\x22:\x22compaction\x22,\x22record\x22:{}}\x0d\x0a",
        &[
            "stamp {\"v\":1,\"kind\":\"stamp\"}",
            "compaction {\"v\":1,\"kind\":\"compaction\",\"record\":{}}",
        ],
    ),
    (
        b"{\x22a\x22:1}\x0d{\x22b\x22:2}\x0a",
        &["- {\"a\":1}", "- {\"b\":2}"],
    ),
    (b"{\x22a\x22:\x22x\x0dy\x22}\x0a", &["M", "M"]),
    (b"\x0d\x0d\x0a\x0d", &["B", "B", "B"]),
    (b"{\x22a\x22:1}\x0d\x0d\x0a", &["- {\"a\":1}", "B"]),
    (
        b"{\x22n\x22:18446744073709551616,\x22m\x22:1e309,\x22k\x22:-1e309,\x22z\x22:-0,\x22u\x22:340282366920938463463374607431768211456}\x0a",
        &["- {\"n\":18446744073709552000,\"m\":null,\"k\":null,\"z\":0,\"u\":3.402823669209385e+38}"],
    ),
    (
        b"{\x22v\x22:1,\x22kind\x22:\x22turn\x22,\x22record\x22:{\x22a\x22:1},\x22record\x22:{\x22b\x22:2}}\x0a",
        &["turn {\"v\":1,\"kind\":\"turn\",\"record\":{\"b\":2}}"],
    ),
    (
        b"{\x22v\x22:1,\x22kind\x22:\x22turn\x22,\x22v\x22:\x221\x22}\x0a",
        &["- {\"v\":\"1\",\"kind\":\"turn\"}"],
    ),
    (b"{\x22v\x22:1,\x22kind\x22:\x22tu", &["M"]),
    (
        b"{\x22a\x22:\x22\xe2\x80\xa8\x22}\xe2\x80\xa8\x0a",
        &["- {\"a\":\"\u{2028}\"}"],
    ),
    (b"\xe2\x80\xa8{\x22a\x22:1}\xc2\xa0\x0a", &["- {\"a\":1}"]),
    (b"  \x09 \x0a", &["B"]),
    (b"\x0b{\x22a\x22:1}\x0c\x0a", &["- {\"a\":1}"]),
    (
        b"{\x22a\x22:1}\x0a\x0a{\x22b\x22:2}",
        &["- {\"a\":1}", "B", "- {\"b\":2}"],
    ),
];

#[test]
fn odd_bytes_are_read_as_node_reads_them() {
    let _g = serial();
    for (data, want) in NODE_READINGS {
        for sizes in [&[][..], &[1], &[2, 3], &[7]] {
            assert_eq!(
                read_all(data, sizes),
                *want,
                "{} (pieces {sizes:?})",
                data.escape_ascii()
            );
        }
    }
}

/// Random invalid UTF-8 against what Node's readers decoded.
#[test]
fn invalid_utf8_decodes_as_node_decodes_it() {
    let _g = serial();
    let table = include_str!("data/utf8_lossy.tsv");
    let mut n = 0;
    for row in table.lines().filter(|l| !l.starts_with('#')) {
        let (hex, want) = row.split_once('\t').unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let got: Vec<String> = jsonl::decode(&bytes)
            .chars()
            .map(|c| format!("{:x}", u32::from(c)))
            .collect();
        assert_eq!(got.join(" "), want, "{hex}");
        n += 1;
    }
    assert!(n >= 600);
}

#[test]
fn a_character_split_across_reads_decodes_whole() {
    let _g = serial();
    // A 4-byte character straddling the scanner's first 1 MiB refill and
    // Node's 64 KiB stream chunks.
    for pad in [(1 << 20) - 2, (1 << 16) - 1, 5] {
        let mut data = b"{\"a\":\"".to_vec();
        data.resize(data.len() + pad, b'x');
        data.extend_from_slice("\u{1F600}\"}\n".as_bytes());
        let got = read_all(&data, &[]);
        assert_eq!(got.len(), 1);
        assert!(got[0].ends_with("x\u{1F600}\"}"), "pad {pad}");
    }
}

#[test]
fn numbers_beyond_u64_and_duplicate_keys() {
    let _g = serial();
    for (input, want) in [
        ("18446744073709551616", "18446744073709552000"),
        ("-18446744073709551616", "-18446744073709552000"),
        ("1e309", "null"),
        ("-1e309", "null"),
        ("1e-400", "0"),
        (
            "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881250404026184124858368",
            "1.7976931348623157e+308",
        ),
        (r#"{"a":1,"a":{"b":2},"a":[3]}"#, r#"{"a":[3]}"#),
    ] {
        assert_eq!(json::parse(input).unwrap().to_json(), want, "{input}");
    }
    // Long digit strings are still just doubles (Node: `null`, `1e+308`).
    assert_eq!(json::parse(&"9".repeat(1000)).unwrap().to_json(), "null");
    assert_eq!(json::parse(&"9".repeat(309)).unwrap().to_json(), "null");
    assert_eq!(json::parse(&"9".repeat(308)).unwrap().to_json(), "1e+308");
    let tiny = format!("0.{}5", "0".repeat(323));
    assert_eq!(json::parse(&tiny).unwrap().to_json(), "5e-324");
    // Many duplicate keys: linear, last value wins.
    let mut s = String::from("{");
    for i in 0..20_000 {
        s.push_str(&format!("\"k{}\":{i},", i % 100));
    }
    s.push_str("\"k0\":-1}");
    let t = Instant::now();
    let v = json::parse(&s).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(v.as_object().unwrap().len(), 100);
    assert_eq!(v.get("k0").unwrap().as_f64(), Some(-1.0));
    assert_eq!(v.get("k99").unwrap().as_f64(), Some(19_999.0));
}

#[test]
fn wide_objects_stay_linear() {
    let _g = serial();
    const N: usize = 50_000;
    // Every key twice, the second time in reverse order.
    let mut s = String::from("{");
    for i in 0..N {
        s.push_str(&format!("\"k{i}\":{i},"));
    }
    for i in (0..N).rev() {
        s.push_str(&format!("\"k{i}\":-{i},"));
    }
    s.pop();
    s.push('}');
    let t = Instant::now();
    let v = json::parse(&s).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), N);
    let (k, val) = o.iter().nth(7).unwrap();
    assert_eq!((k.as_str(), val.as_f64()), (Some("k7"), Some(-7.0)));

    // Array-index keys in descending order, each twice.
    let mut s = String::from("{");
    for i in (0..N).rev() {
        s.push_str(&format!("\"{i}\":{i},\"{i}\":{},", i + 1));
    }
    s.push_str("\"x\":0}");
    let t = Instant::now();
    let v = json::parse(&s).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let keys: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), N + 1);
    assert_eq!(&keys[..3], ["0", "1", "2"]);
    assert_eq!(keys[N], "x");
    assert_eq!(v.get("0").unwrap().as_f64(), Some(1.0));
}

// ---------------------------------------------------------------------------
// Deep nesting
// ---------------------------------------------------------------------------

fn deep_array(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn deep_object(depth: usize) -> String {
    "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)
}

/// Parse, serialise, copy, compare, stringify and drop a deep value.
fn exercise_deep(text: &str) {
    let v = json::parse(text).unwrap();
    assert_eq!(v.to_json(), text);
    assert_eq!(format!("{v:?}"), text);
    let copy = v.clone();
    assert!(copy == v);
    let _ = v.js_to_string();
    drop(copy);
    drop(v);
}

#[test]
fn deep_nesting_is_safe_on_a_small_stack() {
    let _g = serial();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            for depth in [10_000, MAX_DEPTH] {
                exercise_deep(&deep_array(depth));
                exercise_deep(&deep_object(depth));
            }
            // One level more is refused, not overflowed.
            assert!(json::parse(&deep_array(MAX_DEPTH + 1)).is_err());
            assert!(json::parse(&deep_object(MAX_DEPTH + 1)).is_err());
            assert!(matches!(
                jsonl::parse_line(deep_array(MAX_DEPTH + 1).as_bytes()),
                Parsed::Malformed(_)
            ));
            // Unterminated deep input.
            assert!(json::parse(&"[".repeat(200_000)).is_err());
            assert!(json::parse(&"{\"a\":".repeat(200_000)).is_err());

            // Deep values where the hashes look: the key conversions
            // (`Array#join`) must not recurse either.
            let deep = "[".repeat(10_000) + "\"x\"" + &"]".repeat(10_000);
            let line = format!(
                r#"{{"v":1,"kind":"turn","record":{{"source":{deep},"sessionId":{deep},"messageId":"m","ts":{deep},"model":"m","usage":{{"input":{deep},"output":1}},"toolCalls":[{{"argsHash":{deep}}}]}}}}"#
            );
            let v = match jsonl::parse_line(line.as_bytes()) {
                Parsed::Value(v) => v,
                other => panic!("{other:?}"),
            };
            assert_eq!(line_kind(&v), Some(Kind::Turn));
            let rec = v.get("record").unwrap();
            assert!(index::turn_id(rec).is_ok());
            assert!(index::turn_fingerprint(rec).is_ok());
            assert_eq!(rec.get("source").unwrap().js_to_string(), "x");
            for kind in Kind::ALL {
                let _ = index::record_id(kind, rec);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

// ---------------------------------------------------------------------------
// A very long line
// ---------------------------------------------------------------------------

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reset the peak RSS to the current RSS (Linux 4.0+).
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Memory used since `base`: the larger of peak and current growth.
struct Meter {
    hwm: u64,
    rss: u64,
}

impl Meter {
    fn start() -> Option<Meter> {
        reset_peak();
        Some(Meter {
            hwm: status_bytes("VmHWM:")?,
            rss: status_bytes("VmRSS:")?,
        })
    }
    fn grown(&self) -> u64 {
        let hwm = status_bytes("VmHWM:").unwrap_or(0).saturating_sub(self.hwm);
        let rss = status_bytes("VmRSS:").unwrap_or(0).saturating_sub(self.rss);
        hwm.max(rss)
    }
}

fn write_big_ledger(path: &Path, blob: usize) -> usize {
    let mut f = io::BufWriter::new(std::fs::File::create(path).unwrap());
    let head = br#"{"v":1,"kind":"turn","record":{"source":"codex","sessionId":"big","messageId":"m1","blob":""#;
    let tail = b"\"}}";
    f.write_all(head).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..blob / chunk.len() {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(&chunk[..blob % chunk.len()]).unwrap();
    f.write_all(tail).unwrap();
    f.write_all(b"\n").unwrap();
    f.write_all(br#"{"v":1,"kind":"turn","record":{"source":"codex","sessionId":"small","messageId":"m2"}}"#)
        .unwrap();
    f.write_all(b"\n").unwrap();
    f.flush().unwrap();
    head.len() + blob + tail.len()
}

#[test]
fn a_100_mb_line_streams_in_bounded_memory() {
    let _g = serial();
    const BLOB: usize = 100 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let line_len = write_big_ledger(&path, BLOB);
    let line_len_u64 = line_len as u64;

    let meter_scan = Meter::start();
    let mut scanner = LineScanner::open_at(&path, 0).unwrap();
    {
        let first = scanner.next_line().unwrap().unwrap();
        assert_eq!(first.offset, 0);
        assert_eq!(first.bytes.len(), line_len);
        assert!(first.terminated && !first.oversized);
        if let Some(m) = &meter_scan {
            let grown = m.grown();
            eprintln!(
                "scanner: line {} MB, memory grew {} MB",
                line_len >> 20,
                grown >> 20
            );
            // It must hold the line, and not much more.
            assert!(grown >= line_len_u64 * 9 / 10, "grew {grown}");
            assert!(grown <= 2 * line_len_u64 + (16 << 20), "grew {grown}");
        }

        let meter = Meter::start();
        let v = match jsonl::parse_line(first.bytes) {
            Parsed::Value(v) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(line_kind(&v), Some(Kind::Turn));
        let rec = v.get("record").unwrap();
        assert_eq!(rec.get("blob").unwrap().as_str().map(str::len), Some(BLOB));
        assert_eq!(
            index::turn_id(rec).unwrap(),
            index::Hash16::of("codex|big|m1")
        );
        if let Some(m) = &meter {
            let grown = m.grown();
            eprintln!("parse: memory grew {} MB", grown >> 20);
            // The value holds one copy of the string.
            assert!(grown <= 2 * line_len_u64 + (16 << 20), "grew {grown}");
        }
    }
    let second = scanner.next_line().unwrap().unwrap();
    assert_eq!(second.offset, line_len_u64 + 1);
    assert!(second.terminated);
    match jsonl::parse_line(second.bytes) {
        Parsed::Value(v) => assert_eq!(
            v.get("record")
                .unwrap()
                .get("sessionId")
                .and_then(Value::as_str),
            Some("small")
        ),
        other => panic!("{other:?}"),
    }
    assert!(scanner.next_line().unwrap().is_none());
    assert_eq!(scanner.position(), std::fs::metadata(&path).unwrap().len());
    // Past the long line the scanner no longer holds its memory.
    if let Some(m) = &meter_scan {
        let held = status_bytes("VmRSS:").unwrap_or(0).saturating_sub(m.rss);
        eprintln!("after the long line: {} MB held", held >> 20);
        assert!(held < 32 << 20, "still holding {held}");
    }
}

/// `n` bytes of `x`, then `rest`, without holding them in memory.
struct Synthetic {
    left: usize,
    rest: &'static [u8],
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left > 0 {
            let n = self.left.min(buf.len());
            buf[..n].fill(b'x');
            self.left -= n;
            return Ok(n);
        }
        let n = self.rest.len().min(buf.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

/// A line longer than any JavaScript string (the reference cannot read it
/// at all) is skipped and reported, and the lines after it are intact.
#[test]
fn a_line_beyond_the_limit_is_skipped_not_buffered() {
    let _g = serial();
    let big = jsonl::MAX_LINE_BYTES + (3 << 20) + 5;
    let meter = Meter::start();
    let mut scanner = LineScanner::new(
        Synthetic {
            left: big,
            rest: b"\n{\"a\":1}\nxx",
        },
        10,
    );
    let first = scanner.next_line().unwrap().unwrap();
    assert!(first.oversized && first.terminated && first.bytes.is_empty());
    assert_eq!(first.offset, 10);
    let second = scanner.next_line().unwrap().unwrap();
    assert_eq!(
        (
            second.offset,
            second.bytes,
            second.terminated,
            second.oversized
        ),
        (10 + big as u64 + 1, &b"{\"a\":1}"[..], true, false)
    );
    let third = scanner.next_line().unwrap().unwrap();
    assert_eq!((third.bytes, third.terminated), (&b"xx"[..], false));
    assert!(scanner.next_line().unwrap().is_none());
    assert_eq!(scanner.position(), 10 + big as u64 + 1 + 8 + 2);
    if let Some(m) = meter {
        let grown = m.grown();
        eprintln!("oversized line: memory grew {} MB", grown >> 20);
        assert!(
            grown <= jsonl::MAX_LINE_BYTES as u64 + (64 << 20),
            "grew {grown}"
        );
    }

    // The same at the end of the file, unterminated.
    let mut scanner = LineScanner::new(
        Synthetic {
            left: big,
            rest: b"",
        },
        0,
    );
    let only = scanner.next_line().unwrap().unwrap();
    assert!(only.oversized && !only.terminated && only.offset == 0);
    assert!(scanner.next_line().unwrap().is_none());
    assert_eq!(scanner.position(), big as u64);
}

// ---------------------------------------------------------------------------
// Session ids as file names
// ---------------------------------------------------------------------------

#[test]
fn session_ids_cannot_escape_the_content_directory() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let long = "a".repeat(129);
    for bad in [
        "",
        ".",
        "..",
        "...",
        "../x",
        "../../etc/passwd",
        "a/b",
        "a/../b",
        "x/..",
        "./x",
        "/",
        "/etc/passwd",
        "/abs",
        "a\0",
        "\0",
        "a\0/../../x",
        "a\\b",
        "..\\x",
        "C:x",
        "~",
        "~root",
        "a b",
        "a\nb",
        "é",
        "a\u{2215}b",
        "%2e%2e",
        "-rf",
        "_x",
        ".hidden",
        long.as_str(),
    ] {
        match home.content_file(bad) {
            Err(Error::InvalidSessionId(id)) => assert_eq!(id, bad),
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    for ok in [
        "a",
        "A-b_c.d",
        "x..y",
        "0b1c2d3e-1111-4222-8333-444455556666",
        &"z".repeat(128),
    ] {
        let p = home.content_file(ok).unwrap();
        assert_eq!(p.parent(), Some(home.content_dir().as_path()));
        assert_eq!(p.file_name().unwrap(), format!("{ok}.jsonl").as_str());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_session_id_stays_inside(id in prop_oneof![any::<String>(), "[A-Za-z0-9./\\\\_-]{0,12}"]) {
        let home = LedgerHome::new("home");
        if let Ok(p) = home.content_file(&id) {
            let content = home.content_dir();
            prop_assert_eq!(p.parent(), Some(content.as_path()));
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            prop_assert_eq!(name, format!("{id}.jsonl"));
            prop_assert!(!id.contains('/') && !id.contains('\0') && id != "..");
        }
    }
}

// ---------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------

/// Pieces spliced into inputs.
const SNIPPETS: &[&str] = &[
    "\\ud83d",
    "\\udc00",
    "\\ud83d\\ude00",
    "\\u0000",
    "\\",
    "\"",
    "1e400",
    "-0",
    "5e-324",
    "18446744073709551616",
    "123456789012345678",
    "\u{feff}",
    "\u{2028}",
    "\u{a0}",
    "\r\n",
    "\r",
    "\n",
    "\0",
    "\"v\":1,",
    "\"v\":1.0,",
    "\"v\":\"1\",",
    "\"kind\":\"turn\",",
    "\"kind\":\"stamp\",",
    "\"kind\":\"user_turn\",",
    "\"record\":null,",
    "\"record\":\"s\",",
    "\"record\":{},",
    "\"toolCalls\":{\"length\":\"1\",\"0\":{\"argsHash\":\"\\ud83d\\ude00x\"}},",
    "\"toolCalls\":\"abc\",",
    "\"toolCalls\":null,",
    "\"usage\":{\"input\":\"5\",\"output\":[1]},",
    "\"usage\":null,",
    "\"source\":[[null,[1]]],",
    "\"eventIndex\":1e21,",
    "\"1\":0,\"0\":1,",
    "{\"v\":1,\"kind\":\"turn\",\"record\":{\"source\":\"codex\",\"usage\":{},\"toolCalls\":[]}}",
    "[[[[[[[[",
    "]]]]]]]]",
    "{\"a\":{\"a\":{\"a\":",
    "}}}",
    ",",
    ":",
    "\u{1F600}",
];

/// Seed lines: Node's odd files, hand-made hostile lines, and (when the
/// fixtures are present) every line the reference wrote.
fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = NODE_READINGS.iter().map(|(d, _)| d.to_vec()).collect();
    c.extend(SNIPPETS.iter().map(|s| s.as_bytes().to_vec()));
    c.push(deep_array(3000).into_bytes());
    c.push(deep_object(3000).into_bytes());
    c.push(br#"{"v":1,"kind":"turn","record":{"v":1,"source":"codex","sessionId":"s","messageId":"m","turnIndex":0,"ts":"2026-01-01T00:00:00.000Z","model":"m","usage":{"input":1,"output":2,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},"toolCalls":[{"id":"t","name":"Bash","argsHash":"abcdef"}]}}"#.to_vec());
    c.push(br#"{"v":1,"kind":"stamp","ts":"2026-01-01T00:00:00.000Z","selector":{"sessionId":"s","range":{"fromTs":"a","toTs":"z"}},"enrichment":{"parentAgentId":"p"}}"#.to_vec());
    if let Some(reference) = support::fixtures::reference_dir() {
        let mut files = vec![reference.join("home/ledger.jsonl")];
        if let Ok(cases) = std::fs::read_dir(reference.join("ops")) {
            for case in cases.flatten() {
                let expected = case.path().join("expected");
                files.push(expected.join("ledger.jsonl"));
                if let Ok(sidecars) = std::fs::read_dir(expected.join("content")) {
                    files.extend(sidecars.flatten().map(|e| e.path()));
                }
            }
        }
        for f in files {
            if let Ok(bytes) = std::fs::read(&f) {
                c.extend(bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec));
            }
        }
    }
    c.sort();
    c.dedup();
    c
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Index),
    Truncate(Index),
    Delete(Index, usize),
    Splice(Index, Index, Index, usize),
    Duplicate(Index, usize),
    Nest(Index, usize, bool),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let special = prop::sample::select(vec![
        b'\n', b'\r', 0, 0xff, 0xc3, 0xed, 0xe2, 0x80, b'"', b'\\', b'{', b'}', b'[', b']', b',',
        b':', b'-', b'+', b'e', b'.', b'0', b'9', b' ', 0x0b, b'u', b'n',
    ]);
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (any::<Index>(), prop_oneof![special, any::<u8>()]).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(i, s)| Mutation::Insert(i, s)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        2 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..400)
            .prop_map(|(a, s, f, n)| Mutation::Splice(a, s, f, n)),
        1 => (any::<Index>(), 1usize..200).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        1 => (
            any::<Index>(),
            prop_oneof![1usize..64, 1000usize..20_000, Just(MAX_DEPTH), Just(MAX_DEPTH + 1)],
            any::<bool>()
        )
            .prop_map(|(i, d, o)| Mutation::Nest(i, d, o)),
    ]
}

fn at(i: &Index, len: usize) -> usize {
    i.index(len + 1)
}

fn apply(corpus: &[Vec<u8>], data: &mut Vec<u8>, m: &Mutation) {
    let len = data.len();
    match m {
        Mutation::Flip(i, bit) => {
            if len > 0 {
                data[i.index(len)] ^= 1 << bit;
            }
        }
        Mutation::Set(i, b) => {
            if len > 0 {
                data[i.index(len)] = *b;
            }
        }
        Mutation::Insert(i, s) => {
            let p = at(i, len);
            let snippet = SNIPPETS[s.index(SNIPPETS.len())].as_bytes();
            data.splice(p..p, snippet.iter().copied());
        }
        Mutation::Truncate(i) => data.truncate(at(i, len)),
        Mutation::Delete(i, n) => {
            let p = at(i, len);
            data.drain(p..(p + n).min(len));
        }
        Mutation::Splice(a, s, f, n) => {
            let other = &corpus[s.index(corpus.len())];
            let from = at(f, other.len());
            let piece = &other[from..(from + n).min(other.len())];
            let p = at(a, len);
            data.splice(p..p, piece.iter().copied());
        }
        Mutation::Duplicate(i, n) => {
            let p = at(i, len);
            let piece = data[p..(p + n).min(len)].to_vec();
            data.splice(p..p, piece);
        }
        Mutation::Nest(i, depth, object) => {
            let p = at(i, len);
            let text = if *object {
                deep_object(*depth)
            } else {
                deep_array(*depth)
            };
            data.splice(p..p, text.bytes());
        }
    }
}

/// One fuzz input: a small file and how it is handed to the scanner.
#[derive(Clone)]
struct Input {
    data: Vec<u8>,
    pieces: Vec<usize>,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Printed as a byte-string literal, ready to become a regression case.
        write!(
            f,
            "Input {{ data: b\"{}\", pieces: {:?} }}",
            self.data.escape_ascii(),
            self.pieces
        )
    }
}

fn input(corpus: Arc<Vec<Vec<u8>>>) -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(any::<Index>(), 1..4),
        prop::collection::vec(mutation(), 0..6),
        prop::collection::vec(1usize..300, 0..5),
        any::<bool>(),
    )
        .prop_map(move |(seeds, mutations, pieces, terminate)| {
            let mut data = Vec::new();
            for (n, s) in seeds.iter().enumerate() {
                if n > 0 {
                    data.push(b'\n');
                }
                data.extend_from_slice(&corpus[s.index(corpus.len())]);
            }
            if terminate {
                data.push(b'\n');
            }
            for m in &mutations {
                apply(&corpus, &mut data, m);
                data.truncate(4 << 20);
            }
            Input { data, pieces }
        })
}

/// The lines of `data` by plain splitting: (offset, bytes, terminated).
fn split_lines(data: &[u8]) -> Vec<(u64, &[u8], bool)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        match data[start..].iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push((start as u64, &data[start..start + i], true));
                start += i + 1;
            }
            None => {
                out.push((start as u64, &data[start..], false));
                start = data.len();
            }
        }
    }
    out
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Everything a reader, the index rebuild and a writer do with a line.
fn check_value(v: &Value) -> Result<(), TestCaseError> {
    let text = v.to_json();
    prop_assert!(!text.contains('\n') && !text.contains('\r'));
    let back = json::parse(&text).map_err(|e| fail(format!("own output rejected: {e}")))?;
    prop_assert_eq!(back.to_json(), text.as_str());
    let copy = v.clone();
    prop_assert!(copy == *v);
    let kind = line_kind(v);
    prop_assert_eq!(kind, line_kind(&copy));
    if let Some(obj) = v.as_object() {
        for (_, field) in obj.iter() {
            let _ = field.js_to_string();
            let _ = field.is_truthy();
        }
    }
    let absent = Value::Null;
    let rec = v.get("record").unwrap_or(&absent);
    for k in Kind::ALL {
        let a = index::record_id(k, rec).map(|r| r.map(|h| h.hex()));
        let b =
            index::record_id(k, copy.get("record").unwrap_or(&absent)).map(|r| r.map(|h| h.hex()));
        prop_assert_eq!(a, b);
    }
    let fp = index::turn_fingerprint(rec).map(|h| h.hex());
    prop_assert_eq!(
        fp,
        index::turn_fingerprint(copy.get("record").unwrap_or(&absent)).map(|h| h.hex())
    );
    Ok(())
}

fn check(input: &Input) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let base = 17;
    let expected = split_lines(&input.data);
    let mut scanner = LineScanner::new(Pieces::new(&input.data, &input.pieces), base);
    let mut n = 0;
    while let Some(line) = scanner
        .next_line()
        .map_err(|e| fail(format!("read error {e}")))?
    {
        let (off, bytes, terminated) = expected
            .get(n)
            .copied()
            .ok_or_else(|| fail("scanner found an extra line".into()))?;
        prop_assert_eq!(line.offset, base + off);
        prop_assert_eq!(line.bytes, bytes);
        prop_assert_eq!(line.terminated, terminated);
        prop_assert!(!line.oversized);
        n += 1;

        let mut logical = Vec::new();
        jsonl::for_each_logical(line.bytes, |p| logical.push(p));
        prop_assert!(!logical.is_empty());
        if !line.bytes.contains(&b'\r') {
            prop_assert_eq!(logical.len(), 1);
            prop_assert_eq!(
                describe(jsonl::parse_line(line.bytes)),
                describe(logical.pop().unwrap_or(Parsed::Blank))
            );
            continue;
        }
        for p in &logical {
            if let Parsed::Value(v) = p {
                check_value(v)?;
            }
        }
    }
    prop_assert_eq!(n, expected.len());
    prop_assert_eq!(scanner.position(), base + input.data.len() as u64);
    // Also through parse_line directly on each line, values checked.
    for (_, bytes, _) in &expected {
        if let Parsed::Value(v) = jsonl::parse_line(bytes) {
            check_value(&v)?;
        }
    }
    // Bounded work: inputs are at most a few MB.
    prop_assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

fn env_number(name: &str) -> Option<f64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

#[test]
fn fuzz_scanner_parser_kinds_and_hashes() {
    let _g = serial();
    let secs = env_number("RELAYBURN_FUZZ_SECS").unwrap_or(20.0).max(0.0);
    let seed = env_number("RELAYBURN_FUZZ_SEED").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        },
        |s| s as u64,
    );
    let trace = std::env::var_os("RELAYBURN_FUZZ_TRACE");
    let corpus = Arc::new(corpus());
    let strategy = input(corpus.clone());
    eprintln!(
        "fuzzing for {secs} s with seed {seed} (RELAYBURN_FUZZ_SEED), {} seed lines",
        corpus.len()
    );
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut batch: u64 = 0;
    loop {
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        rng_seed[8..16].copy_from_slice(&batch.to_le_bytes());
        let config = Config {
            cases: 32,
            failure_persistence: None,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed));
        if let Err(e) = runner.run(&strategy, |input| {
            if let Some(path) = &trace {
                let _ = std::fs::write(path, &input.data);
            }
            check(&input)
        }) {
            panic!("fuzz failure (seed {seed}, batch {batch}): {e}");
        }
        batch += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzzed {} inputs", batch * 32);
}

/// Inputs that once broke an invariant, kept as they were found.
#[test]
fn regressions() {
    let _g = serial();
    let deep = deep_array(MAX_DEPTH);
    let cases = [
        // Found by the fuzzer: a lone CR splits a line, and the second half
        // is an array nested 100,000 deep; copying it recursed until the
        // stack overflowed.
        Input {
            data: [b"{\"v\":1,\"kind\"\r".as_slice(), deep.as_bytes()].concat(),
            pieces: vec![],
        },
        // The same depth in the fields a hash key is built from (`Array#join`
        // recursed), and under the fingerprint's sums.
        Input {
            data: format!(
                r#"{{"v":1,"kind":"turn","record":{{"source":{deep},"sessionId":"s","messageId":"m","usage":{{"input":{deep}}},"toolCalls":[{{"argsHash":"abcd"}}]}}}}"#
            )
            .into_bytes(),
            pieces: vec![3, 1000],
        },
        Input {
            data: format!(
                r#"{{"v":1,"kind":"tool_result_event","record":{{"source":"codex","sessionId":"s","toolUseId":"t","eventIndex":{deep}}}}}"#
            )
            .into_bytes(),
            pieces: vec![],
        },
    ];
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for case in &cases {
                check(case).unwrap();
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
