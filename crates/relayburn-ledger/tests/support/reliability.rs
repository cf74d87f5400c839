//! Shared pieces of the reliability tests: a seeded generator, the
//! workload's records, child processes, and audits of the files on disk.
//!

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use relayburn_ledger::index::{turn_fingerprint, turn_id, Hash16};
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::jsonl::{parse_line, Parsed};
use relayburn_ledger::records::{line_kind, wrap_record, Kind};
use relayburn_ledger::time::iso_from_millis;

/// The content window's length (SPEC §4), written here rather than taken
/// from the code under test.
pub const WINDOW: usize = 10_000;

// ---------------------------------------------------------------------------
// a small seeded generator (SplitMix64), so every run can be replayed
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// `RELAYBURN_RELIABILITY_LONG=1`: the long variants (more trials, a
/// longer soak), meant to be run by hand.
pub fn long_run() -> bool {
    std::env::var("RELAYBURN_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// the workload: turn `i` and content record `i` are fixed by `i` alone
// ---------------------------------------------------------------------------

/// Filler text of a length that varies with `i`, so records are a few
/// hundred bytes like real ones and writes span several pages.
fn filler(i: usize, len: usize) -> String {
    const WORDS: [&str; 8] = [
        "alpha ", "bravo ", "charlie ", "delta ", "echo ", "foxtrot ", "golf ", "hotel ",
    ];
    let mut s = String::with_capacity(len + 8);
    let mut k = i;
    while s.len() < len {
        s.push_str(WORDS[k % WORDS.len()]);
        k = k / 3 + 7;
    }
    s.truncate(len);
    s
}

/// Turns `0..100` are session `s-0`, the next hundred `s-1`, and so on:
/// sessions of a realistic length, so that a session stamp folds onto a
/// hundred turns, not onto a seventh of the ledger.
pub const TURNS_PER_SESSION: usize = 100;

pub fn turn_session(i: usize) -> String {
    format!("s-{}", i / TURNS_PER_SESSION)
}

/// Turn `i`: its own id (`m-<i>`) and its own content fingerprint (the
/// input token count is `i`).
pub fn turn(i: usize) -> Value {
    let ts = iso_from_millis(1_767_225_600_000 + i as i64 * 1000);
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{}","messageId":"m-{i}","turnIndex":{i},"ts":"{ts}","model":"gpt-5","usage":{{"input":{i},"output":{},"reasoning":0,"cacheRead":{},"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[{{"id":"t{i}","name":"Bash","argsHash":"{:016x}"}}],"project":"/p/{}","note":"{}"}}"#,
        turn_session(i),
        7 + i % 13,
        i % 100,
        (i as u64).wrapping_mul(0x9e37_79b9),
        i % 3,
        filler(i, 120 + i % 200),
    ))
    .unwrap()
}

/// The ledger line the library writes for turn `i`.
pub fn turn_line(i: usize) -> String {
    wrap_record(Kind::Turn, turn(i)).to_json()
}

/// Id and fingerprint of turn `i`, remembered: audits ask for them for
/// every record of a growing ledger, again and again.
fn turn_hashes(i: usize) -> (Hash16, Hash16) {
    static CACHE: Mutex<Vec<Option<(Hash16, Hash16)>>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if cache.len() <= i {
        cache.resize(i + 1, None);
    }
    *cache[i].get_or_insert_with(|| {
        let t = turn(i);
        (turn_id(&t).unwrap(), turn_fingerprint(&t).unwrap())
    })
}

pub fn turn_hash(i: usize) -> Hash16 {
    turn_hashes(i).0
}

pub fn turn_fp(i: usize) -> Hash16 {
    turn_hashes(i).1
}

/// The number in a `m-<i>` / `c-<i>` message id.
pub fn index_of(rec: &Value) -> Option<usize> {
    let m = rec.get("messageId")?.as_str()?;
    m.split_once('-')?.1.parse().ok()
}

pub const CONTENT_SESSIONS: usize = 4;

pub fn content_session(i: usize) -> String {
    format!("cs-{}", i % CONTENT_SESSIONS)
}

/// Content record `i`, in session `cs-<i mod 4>`; texts up to ~3 KB.
pub fn content(i: usize) -> Value {
    json::parse(&format!(
        r#"{{"v":1,"source":"codex","sessionId":"{}","messageId":"c-{i}","ts":"{}","role":"assistant","kind":"text","text":"{}"}}"#,
        content_session(i),
        iso_from_millis(1_767_225_600_000 + i as i64 * 1000),
        filler(i, 200 + (i * 37) % 2800),
    ))
    .unwrap()
}

pub fn content_line(i: usize) -> String {
    content(i).to_json()
}

// ---------------------------------------------------------------------------
// child processes: the test binary run again with a role
// ---------------------------------------------------------------------------

/// A child in `role` (see `support::role`), its stdout piped for markers.
pub fn child(entry: &str, role: &str, args: &[String]) -> Command {
    let mut c = crate::support::role::command(entry, role, args);
    c.stdout(Stdio::piped());
    c
}

/// Print a marker line the parent waits for (`MARK <name> <detail>`).
pub fn mark(name: &str, detail: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "MARK {name} {detail}");
    let _ = out.flush();
}

/// Marker lines of a child's stdout, as they come.
pub struct Marks {
    lines: std::io::Lines<BufReader<ChildStdout>>,
}

impl Marks {
    pub fn of(c: &mut Child) -> Marks {
        Marks {
            lines: BufReader::new(c.stdout.take().unwrap()).lines(),
        }
    }

    /// The next marker: (name, detail); `None` at the end of the output.
    pub fn next(&mut self) -> Option<(String, String)> {
        for line in self.lines.by_ref() {
            let Ok(line) = line else { return None };
            if let Some(body) = line.strip_prefix("MARK ") {
                let (name, detail) = body.split_once(' ').unwrap_or((body, ""));
                return Some((name.to_string(), detail.to_string()));
            }
        }
        None
    }

    /// Skip to marker `name`; panics when the output ends first.
    pub fn expect(&mut self, name: &str) -> String {
        while let Some((n, d)) = self.next() {
            if n == name {
                return d;
            }
        }
        panic!("child ended before marker {name}");
    }

    /// Every remaining marker.
    pub fn rest(mut self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while let Some(m) = self.next() {
            v.push(m);
        }
        v
    }
}

/// SIGKILL a child and reap it; true when it had already exited cleanly.
pub fn kill9(c: &mut Child) -> bool {
    if let Ok(Some(status)) = c.try_wait() {
        return status.success();
    }
    // SAFETY: plain kill(2) on the pid of a child we have not reaped yet.
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
    }
    let status = c.wait().unwrap();
    status.success()
}

pub fn sleep_us(us: u64) {
    std::thread::sleep(Duration::from_micros(us));
}

// ---------------------------------------------------------------------------
// audits of JSONL files
// ---------------------------------------------------------------------------

/// One line of a JSONL file: where it starts, its bytes without the
/// newline, and whether a newline ends it.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub offset: u64,
    pub bytes: &'a [u8],
    pub terminated: bool,
}

/// The lines of `data`, the unterminated tail included.
pub fn lines_of(data: &[u8]) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < data.len() {
        match data[start..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                out.push(Line {
                    offset: start as u64,
                    bytes: &data[start..start + p],
                    terminated: true,
                });
                start += p + 1;
            }
            None => {
                out.push(Line {
                    offset: start as u64,
                    bytes: &data[start..],
                    terminated: false,
                });
                start = data.len();
            }
        }
    }
    out
}

/// A line parsed as the readers parse it: `Some(value)` when it is JSON.
pub fn parsed(bytes: &[u8]) -> Option<Value> {
    match parse_line(bytes) {
        Parsed::Value(v) => Some(v),
        _ => None,
    }
}

/// What a ledger of the workload's turns holds.
#[derive(Debug, Default, Clone)]
pub struct LedgerAudit {
    /// Turn index of each record line, in file order (a complete record as
    /// the unterminated last line counts: readers accept it).
    pub records: Vec<(u64, usize)>,
    /// Lines that are not records: (offset, bytes, terminated).
    pub fragments: Vec<(u64, Vec<u8>, bool)>,
    /// Lines of the other kinds (stamps, compactions, …): offsets.
    pub others: Vec<u64>,
    pub ends_with_newline: bool,
}

impl LedgerAudit {
    /// Every record line must be turn `i` exactly as the workload made it;
    /// anything else is collected as a fragment for the caller to judge.
    pub fn of(data: &[u8]) -> LedgerAudit {
        LedgerAudit::of_from(data, 0)
    }

    /// The audit of the lines from byte `from` (a line start) on; offsets
    /// stay those of the whole file.
    pub fn of_from(data: &[u8], from: u64) -> LedgerAudit {
        let mut a = LedgerAudit {
            ends_with_newline: data.is_empty() || data.last() == Some(&b'\n'),
            ..LedgerAudit::default()
        };
        for mut l in lines_of(&data[from as usize..]) {
            l.offset += from;
            let v = parsed(l.bytes);
            match v.as_ref().filter(|v| line_kind(v) == Some(Kind::Turn)) {
                Some(v) => {
                    let rec = v.get("record").unwrap();
                    let i = index_of(rec).unwrap_or_else(|| panic!("record at {}", l.offset));
                    assert_eq!(
                        l.bytes,
                        turn_line(i).as_bytes(),
                        "record line at byte {} is not turn {i} as written",
                        l.offset
                    );
                    a.records.push((l.offset, i));
                }
                None if v.as_ref().and_then(line_kind).is_some() => a.others.push(l.offset),
                None => a.fragments.push((l.offset, l.bytes.to_vec(), l.terminated)),
            }
        }
        a
    }

    /// This audit (of the lines before `rest`'s first) followed by `rest`.
    pub fn joined(&self, rest: LedgerAudit) -> LedgerAudit {
        let mut a = self.clone();
        a.records.extend(rest.records);
        a.others.extend(rest.others);
        a.fragments.extend(rest.fragments);
        a.ends_with_newline = rest.ends_with_newline;
        a
    }

    /// Only the entries of lines that start before `offset`.
    pub fn before(&self, offset: u64) -> LedgerAudit {
        LedgerAudit {
            records: self
                .records
                .iter()
                .filter(|r| r.0 < offset)
                .copied()
                .collect(),
            others: self
                .others
                .iter()
                .filter(|&&o| o < offset)
                .copied()
                .collect(),
            fragments: self
                .fragments
                .iter()
                .filter(|f| f.0 < offset)
                .cloned()
                .collect(),
            ends_with_newline: true,
        }
    }

    /// How often each turn occurs.
    pub fn counts(&self) -> HashMap<usize, usize> {
        let mut m = HashMap::new();
        for (_, i) in &self.records {
            *m.entry(*i).or_insert(0) += 1;
        }
        m
    }

    pub fn assert_no_duplicates(&self) {
        for (i, n) in self.counts() {
            assert_eq!(n, 1, "turn {i} is in the ledger {n} times");
        }
    }

    pub fn present(&self) -> HashSet<usize> {
        self.records.iter().map(|(_, i)| *i).collect()
    }
}

/// Hashes of an index file's complete lines, and its unterminated tail.
/// Every complete line must be 16 lowercase hex digits, or be a torn
/// fragment left by a crash (listed in `bad`).
#[derive(Debug, Default)]
pub struct IndexAudit {
    pub hashes: Vec<Hash16>,
    pub bad: Vec<String>,
    pub torn_tail: Option<String>,
}

impl IndexAudit {
    pub fn of(path: &Path) -> IndexAudit {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", path.display()),
        };
        let mut a = IndexAudit::default();
        for l in lines_of(&data) {
            let text = String::from_utf8(l.bytes.to_vec()).unwrap();
            let hex = text.len() == 16
                && text
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
            if !l.terminated {
                // A torn hash is a prefix of a hash.
                assert!(
                    text.len() <= 16 && text.bytes().all(|c| c.is_ascii_hexdigit()),
                    "unterminated index tail {text:?} in {}",
                    path.display()
                );
                a.torn_tail = Some(text);
            } else if hex {
                a.hashes.push(Hash16::parse_hex(&text).unwrap());
            } else if text.trim().is_empty() {
                // Blank lines are skipped by every reader.
            } else {
                a.bad.push(text);
            }
        }
        a
    }

    pub fn set(&self) -> HashSet<Hash16> {
        self.hashes.iter().copied().collect()
    }
}

/// Files of `dir` whose names end with one of `suffixes` or contain
/// `.stale-` (a lockfile moved aside and never deleted).
pub fn leftovers(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.contains(".stale-") || suffixes.iter().any(|s| name.ends_with(s)) {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// Summary of timings in milliseconds: (count, median, p95, max).
pub fn summary(ms: &[f64]) -> (usize, f64, f64, f64) {
    if ms.is_empty() {
        return (0, 0.0, 0.0, 0.0);
    }
    let mut v = ms.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (v.len(), at(0.5), at(0.95), v[v.len() - 1])
}
