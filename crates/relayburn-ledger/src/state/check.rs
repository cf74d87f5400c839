//! A read-only consistency report over a home: what `burn state check`
//! prints. It never writes; [`repair`] is the separate, explicit fix.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::archive::{ArchiveReader, Freshness, Unavailable};
use crate::error::{IoContext, Result};
use crate::home::LedgerHome;
use crate::index::{self, Hash16, CONTENT_WINDOW};
use crate::json::{Object, Value};
use crate::jsonl::{for_each_logical, LineScanner, Parsed};
use crate::records::{line_kind, Kind};

/// How many example offsets/ids a report keeps per problem.
const SAMPLES: usize = 20;

/// A line the readers skip, with where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    pub offset: u64,
    pub length: u64,
    pub reason: String,
}

/// A lockfile found in the home.
#[derive(Debug, Clone, PartialEq)]
pub struct LockInfo {
    pub path: PathBuf,
    pub age_ms: i64,
    /// What the holder wrote into the file (empty for the reference).
    pub holder: String,
    pub stale: bool,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckReport {
    pub ledger_bytes: u64,
    pub lines: u64,
    pub kinds: Vec<(Kind, u64)>,
    pub blank_lines: u64,
    /// Complete lines that are not JSON.
    pub malformed: Vec<BadLine>,
    pub malformed_count: u64,
    /// Records of a known kind that the reference could not hash (it would
    /// throw on them, e.g. a turn without `usage`).
    pub unhashable: Vec<BadLine>,
    pub unhashable_count: u64,
    /// The unterminated last line, if any.
    pub torn_tail: Option<BadLine>,
    /// Torn lines an earlier repair terminated: skipped by readers, known,
    /// not a problem any more.
    pub repaired_count: u64,
    pub index_exists: bool,
    /// Ids of ledger records missing from `ledger.idx`.
    pub index_missing: Vec<String>,
    pub index_missing_count: u64,
    /// Ids in `ledger.idx` that no ledger record has.
    pub index_extra: Vec<String>,
    pub index_extra_count: u64,
    pub index_bad_lines: u64,
    /// Fingerprints in the content window that no ledger turn has.
    pub content_extra: Vec<String>,
    pub content_extra_count: u64,
    /// Recent fingerprints the window should hold but does not.
    pub content_missing_count: u64,
    pub archive: Option<ArchiveCursor>,
    pub locks: Vec<LockInfo>,
    /// Files a full rebuild left when it was killed (its process is gone).
    pub rebuild_leftovers: Vec<PathBuf>,
}

/// The archive's cursor against the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveCursor {
    pub offset: u64,
    pub ledger_size: u64,
    /// The cursor is past the end of the ledger (the next build resets).
    pub beyond_end: bool,
    /// The cursor is not at the start of a line.
    pub mid_line: bool,
    /// Why the archive cannot answer (damaged, another version).
    pub error: Option<String>,
    /// The archive was built from another ledger file.
    pub replaced: Option<String>,
}

impl ArchiveCursor {
    /// Whether `--repair` must rebuild the archive from zero.
    pub fn needs_rebuild(&self) -> bool {
        self.error.is_some() || self.replaced.is_some() || self.beyond_end || self.mid_line
    }
}

impl CheckReport {
    /// The problems, one sentence each; empty when the home is clean.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.malformed_count > 0 {
            p.push(format!(
                "{} malformed ledger line(s), first at byte {}",
                self.malformed_count, self.malformed[0].offset
            ));
        }
        if self.unhashable_count > 0 {
            p.push(format!(
                "{} record(s) of a known kind are missing required fields, first at byte {}",
                self.unhashable_count, self.unhashable[0].offset
            ));
        }
        if let Some(t) = &self.torn_tail {
            p.push(format!(
                "torn last line at byte {} ({} bytes without a newline)",
                t.offset, t.length
            ));
        }
        if self.index_missing_count > 0 {
            p.push(format!(
                "{} ledger id(s) missing from ledger.idx",
                self.index_missing_count
            ));
        }
        if self.index_extra_count > 0 {
            p.push(format!(
                "{} id(s) in ledger.idx have no ledger record",
                self.index_extra_count
            ));
        }
        if self.index_bad_lines > 0 {
            p.push(format!(
                "{} malformed line(s) in ledger.idx",
                self.index_bad_lines
            ));
        }
        if self.content_extra_count > 0 {
            p.push(format!(
                "{} fingerprint(s) in ledger.content.idx match no ledger turn",
                self.content_extra_count
            ));
        }
        if self.content_missing_count > 0 {
            p.push(format!(
                "{} recent fingerprint(s) missing from ledger.content.idx",
                self.content_missing_count
            ));
        }
        if let Some(a) = &self.archive {
            if let Some(e) = &a.error {
                p.push(format!("archive {e}"));
            }
            if let Some(r) = &a.replaced {
                p.push(format!("archive built from another ledger: {r}"));
            } else if a.beyond_end {
                p.push(format!(
                    "archive cursor {} is past the ledger end {}",
                    a.offset, a.ledger_size
                ));
            } else if a.mid_line {
                p.push(format!(
                    "archive cursor {} is not at a line start",
                    a.offset
                ));
            }
        }
        for f in &self.rebuild_leftovers {
            p.push(format!(
                "{} was left by a full rebuild that did not finish",
                f.display()
            ));
        }
        for l in self.locks.iter().filter(|l| l.stale) {
            p.push(format!(
                "stale lockfile {} ({} ms old{})",
                l.path.display(),
                l.age_ms,
                if l.holder.is_empty() {
                    String::new()
                } else {
                    format!(", holder {}", l.holder)
                }
            ));
        }
        p
    }

    /// The report as JSON for `--json`.
    pub fn to_value(&self) -> Value {
        let bad = |v: &[BadLine]| {
            Value::Array(
                v.iter()
                    .map(|b| {
                        let mut o = Object::new();
                        o.insert("offset", Value::Number(b.offset as f64));
                        o.insert("length", Value::Number(b.length as f64));
                        o.insert("reason", Value::from(b.reason.as_str()));
                        Value::Object(o)
                    })
                    .collect(),
            )
        };
        let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let n = |x: u64| Value::Number(x as f64);
        let mut ledger = Object::new();
        ledger.insert("bytes", n(self.ledger_bytes));
        ledger.insert("lines", n(self.lines));
        let mut kinds = Object::new();
        for (k, c) in &self.kinds {
            kinds.insert(k.as_str(), n(*c));
        }
        ledger.insert("kinds", Value::Object(kinds));
        ledger.insert("blankLines", n(self.blank_lines));
        ledger.insert("malformedCount", n(self.malformed_count));
        ledger.insert("repairedCount", n(self.repaired_count));
        ledger.insert("malformed", bad(&self.malformed));
        ledger.insert("unhashableCount", n(self.unhashable_count));
        ledger.insert("unhashable", bad(&self.unhashable));
        ledger.insert(
            "tornTail",
            match &self.torn_tail {
                Some(t) => bad(std::slice::from_ref(t))
                    .into_array()
                    .and_then(|mut a| a.pop())
                    .unwrap_or(Value::Null),
                None => Value::Null,
            },
        );
        let mut index = Object::new();
        index.insert("exists", Value::Bool(self.index_exists));
        index.insert("missingCount", n(self.index_missing_count));
        index.insert("missing", strs(&self.index_missing));
        index.insert("extraCount", n(self.index_extra_count));
        index.insert("extra", strs(&self.index_extra));
        index.insert("badLines", n(self.index_bad_lines));
        let mut content = Object::new();
        content.insert("extraCount", n(self.content_extra_count));
        content.insert("extra", strs(&self.content_extra));
        content.insert("missingCount", n(self.content_missing_count));
        let archive = match &self.archive {
            None => Value::Null,
            Some(a) => {
                let mut o = Object::new();
                o.insert("offset", n(a.offset));
                o.insert("ledgerSize", n(a.ledger_size));
                o.insert("beyondEnd", Value::Bool(a.beyond_end));
                o.insert("midLine", Value::Bool(a.mid_line));
                o.insert("error", opt_str(a.error.as_deref()));
                o.insert("replaced", opt_str(a.replaced.as_deref()));
                Value::Object(o)
            }
        };
        let locks = Value::Array(
            self.locks
                .iter()
                .map(|l| {
                    let mut o = Object::new();
                    o.insert("path", Value::from(l.path.display().to_string()));
                    o.insert("ageMs", Value::Number(l.age_ms as f64));
                    o.insert("holder", Value::from(l.holder.as_str()));
                    o.insert("stale", Value::Bool(l.stale));
                    Value::Object(o)
                })
                .collect(),
        );
        let mut out = Object::new();
        out.insert("ok", Value::Bool(self.problems().is_empty()));
        out.insert(
            "problems",
            Value::Array(self.problems().into_iter().map(Value::from).collect()),
        );
        out.insert("ledger", Value::Object(ledger));
        out.insert("index", Value::Object(index));
        out.insert("contentIndex", Value::Object(content));
        out.insert("archive", archive);
        out.insert("locks", locks);
        out.insert("rebuildLeftovers", paths(&self.rebuild_leftovers));
        Value::Object(out)
    }
}

fn opt_str(s: Option<&str>) -> Value {
    s.map_or(Value::Null, Value::from)
}

fn paths(v: &[PathBuf]) -> Value {
    Value::Array(
        v.iter()
            .map(|p| Value::from(p.display().to_string()))
            .collect(),
    )
}

fn push_sample<T>(v: &mut Vec<T>, count: &mut u64, item: T) {
    *count += 1;
    if v.len() < SAMPLES {
        v.push(item);
    }
}

/// Read everything and report; `progress(done_bytes, total_bytes)` is called
/// as the ledger is scanned.
pub fn check(home: &LedgerHome, progress: &mut dyn FnMut(u64, u64)) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let ledger = home.ledger();
    let mut ids: HashSet<Hash16> = HashSet::new();
    // Fingerprints in first-occurrence order, as the index rebuild keeps them.
    let mut fps_seen: HashSet<Hash16> = HashSet::new();
    let mut fps_order: Vec<Hash16> = Vec::new();
    let mut kind_counts = [0u64; 6];
    let mut last_line_end = 0u64;
    let repaired = load_repairs(&home.repairs())?;
    if ledger.is_file() {
        let total = std::fs::metadata(&ledger).ctx("stat", &ledger)?.len();
        r.ledger_bytes = total;
        let mut sc = LineScanner::open_at(&ledger, 0).ctx("open", &ledger)?;
        let mut since_progress = 0u64;
        while let Some(line) = sc.next_line().ctx("read", &ledger)? {
            let len = line.bytes.len() as u64;
            since_progress += len + 1;
            if since_progress > (8 << 20) {
                progress(line.offset, total);
                since_progress = 0;
            }
            if !line.terminated {
                r.torn_tail = Some(BadLine {
                    offset: line.offset,
                    length: len,
                    reason: "no newline at end of file".into(),
                });
            } else {
                last_line_end = line.offset + len + 1;
            }
            r.lines += 1;
            if line.oversized {
                push_sample(
                    &mut r.malformed,
                    &mut r.malformed_count,
                    BadLine {
                        offset: line.offset,
                        length: len,
                        reason: "line too long".into(),
                    },
                );
                continue;
            }
            let offset = line.offset;
            let terminated = line.terminated;
            let mut handle = |p: Parsed| match p {
                Parsed::Blank => r.blank_lines += 1,
                Parsed::Malformed(_) if terminated && repaired.contains(&(offset, len)) => {
                    r.repaired_count += 1;
                }
                Parsed::Malformed(why) => {
                    // A torn tail is reported once, as torn.
                    if terminated {
                        push_sample(
                            &mut r.malformed,
                            &mut r.malformed_count,
                            BadLine {
                                offset,
                                length: len,
                                reason: why,
                            },
                        );
                    }
                }
                Parsed::Value(v) => {
                    let Some(kind) = line_kind(&v) else { return };
                    kind_counts[kind as usize] += 1;
                    if kind == Kind::Stamp {
                        return;
                    }
                    let rec = v.get("record").unwrap_or(&crate::json::NULL);
                    let id = index::record_id(kind, rec).and_then(|h| h.ok());
                    let fp = if kind == Kind::Turn {
                        index::turn_fingerprint(rec).ok()
                    } else {
                        None
                    };
                    match id {
                        Some(id) if kind != Kind::Turn || fp.is_some() => {
                            ids.insert(id);
                            if let Some(fp) = fp {
                                if fps_seen.insert(fp) {
                                    fps_order.push(fp);
                                }
                            }
                        }
                        _ => push_sample(
                            &mut r.unhashable,
                            &mut r.unhashable_count,
                            BadLine {
                                offset,
                                length: len,
                                reason: format!("{} record lacks required fields", kind.as_str()),
                            },
                        ),
                    }
                }
            };
            for_each_logical(line.bytes, &mut handle);
        }
        progress(total, total);
    }
    r.kinds = Kind::ALL
        .iter()
        .map(|k| (*k, kind_counts[*k as usize]))
        .collect();

    // ledger.idx against the ledger.
    let idx_path = home.ledger_index();
    if idx_path.is_file() {
        r.index_exists = true;
        let bytes = std::fs::read(&idx_path).ctx("read", &idx_path)?;
        let mut in_idx: HashSet<Hash16> = HashSet::new();
        for l in index_lines(&bytes) {
            match l.and_then(Hash16::parse_hex) {
                Some(h) => {
                    in_idx.insert(h);
                }
                None => r.index_bad_lines += 1,
            }
        }
        for h in &in_idx {
            if !ids.contains(h) {
                push_sample(&mut r.index_extra, &mut r.index_extra_count, h.hex());
            }
        }
        for h in &ids {
            if !in_idx.contains(h) {
                push_sample(&mut r.index_missing, &mut r.index_missing_count, h.hex());
            }
        }
    } else {
        for h in &ids {
            push_sample(&mut r.index_missing, &mut r.index_missing_count, h.hex());
        }
    }

    // The content window against the ledger's turns.
    let cidx = home.ledger_content_index();
    let window: HashSet<Hash16> = if cidx.is_file() {
        let bytes = std::fs::read(&cidx).ctx("read", &cidx)?;
        index_lines(&bytes)
            .filter_map(|l| l.and_then(Hash16::parse_hex))
            .collect()
    } else {
        HashSet::new()
    };
    for h in &window {
        if !fps_seen.contains(h) {
            push_sample(&mut r.content_extra, &mut r.content_extra_count, h.hex());
        }
    }
    // The most recent distinct fingerprints must be in the window; how many
    // is bounded by what the window can hold.
    let expect = fps_order.len().min(CONTENT_WINDOW / 2);
    r.content_missing_count = fps_order[fps_order.len() - expect..]
        .iter()
        .filter(|h| !window.contains(h))
        .count() as u64;

    r.archive = archive_cursor(home, r.ledger_bytes, last_line_end)?;
    r.locks = lockfiles(home)?;
    r.rebuild_leftovers = crate::archive::rebuild_leftovers(home.root())
        .into_iter()
        .filter(|(_, alive)| !alive)
        .map(|(p, _)| p)
        .collect();
    Ok(r)
}

/// The non-blank lines of an index sidecar, trimmed; `None` for a line
/// that is not UTF-8 (a bad line, never a reason to stop).
fn index_lines(bytes: &[u8]) -> impl Iterator<Item = Option<&str>> {
    bytes
        .split(|&b| b == b'\n')
        .map(|l| std::str::from_utf8(l).map(str::trim).map_err(|_| ()))
        .filter(|l| l.map_or(true, |t| !t.is_empty()))
        .map(Result::ok)
}

fn archive_cursor(
    home: &LedgerHome,
    ledger_size: u64,
    last_line_end: u64,
) -> Result<Option<ArchiveCursor>> {
    let mut c = ArchiveCursor {
        offset: 0,
        ledger_size,
        beyond_end: false,
        mid_line: false,
        error: None,
        replaced: None,
    };
    let reader = match ArchiveReader::open(home) {
        Ok(r) => r,
        Err(crate::Error::ArchiveUnavailable { why, .. }) => {
            if why == Unavailable::Missing {
                return Ok(None);
            }
            c.error = Some(why.to_string());
            return Ok(Some(c));
        }
        Err(e) => return Err(e),
    };
    let offset = reader.state.offset;
    c.offset = offset;
    c.beyond_end = offset > ledger_size;
    c.mid_line = !c.beyond_end
        && offset != 0
        && offset != last_line_end
        && !is_line_start(home, offset).unwrap_or(true);
    if let Freshness::Replaced(why) = reader.freshness(home)? {
        c.replaced = Some(why);
    }
    Ok(Some(c))
}

/// Whether byte `offset` of the ledger follows a newline.
fn is_line_start(home: &LedgerHome, offset: u64) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(home.ledger())?;
    f.seek(SeekFrom::Start(offset - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

fn lockfiles(home: &LedgerHome) -> Result<Vec<LockInfo>> {
    let mut out = Vec::new();
    let dir = home.root();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::Error::io("list", dir, e)),
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".lock") {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let age_ms = match meta.modified().map(|m| now.duration_since(m)) {
            Ok(Ok(d)) => d.as_millis() as i64,
            Ok(Err(e)) => -(e.duration().as_millis() as i64),
            Err(_) => 0,
        };
        let holder = if meta.is_file() {
            std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default()
        } else {
            "(not a regular file)".to_string()
        };
        out.push(LockInfo {
            // A dead holder's lock is stale at once, as acquirers judge it.
            stale: !meta.is_file() || crate::lock::is_stale(&path),
            path,
            age_ms,
            holder,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What [`Ledger::repair`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairReport {
    /// Offset of the torn line that was terminated with a newline.
    pub terminated_torn_tail_at: Option<u64>,
    pub index: crate::index::sidecar::RebuildIndexResult,
    /// Why the archive was rebuilt from zero, if it was.
    pub archive_rebuilt: Option<String>,
    /// Stale lockfiles and leftovers of killed rebuilds, removed.
    pub removed: Vec<PathBuf>,
}

impl RepairReport {
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert(
            "terminatedTornTailAt",
            self.terminated_torn_tail_at
                .map(|x| Value::Number(x as f64))
                .unwrap_or(Value::Null),
        );
        o.insert("index", self.index.to_json());
        o.insert("removed", paths(&self.removed));
        o.insert("archiveRebuilt", opt_str(self.archive_rebuilt.as_deref()));
        Value::Object(o)
    }
}

impl crate::ledger::Ledger {
    /// The repairs `burn state check --repair` makes: end a torn last line
    /// with a newline (so the fragment stays one skipped line and cannot
    /// swallow the next record), then rebuild both index sidecars. The torn
    /// bytes themselves are kept, never deleted.
    pub fn repair(&self) -> Result<RepairReport> {
        let path = self.home().ledger();
        // Stale locks first, so the repair itself is not kept waiting.
        let mut removed = Vec::new();
        for l in lockfiles(self.home())? {
            if l.stale && crate::lock::remove_if_stale(&l.path) {
                removed.push(l.path);
            }
        }
        for (leftover, alive) in crate::archive::rebuild_leftovers(self.home().root()) {
            if !alive && std::fs::remove_file(&leftover).is_ok() {
                removed.push(leftover);
            }
        }
        let terminated = self.with_lock(crate::home::lock_name::LEDGER, || {
            let len = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m.len(),
                _ => return Ok(None),
            };
            if len == 0 {
                return Ok(None);
            }
            let start = torn_tail_start(&path, len)?;
            if let Some(at) = start {
                crate::fsio::append_bytes(&path, b"")?;
                record_repair(&self.home().repairs(), at, len - at)?;
            }
            Ok(start)
        })?;
        let index = self.rebuild_index()?;
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let archive = archive_cursor(self.home(), size, size)?;
        let archive_rebuilt = match archive {
            Some(a) if a.needs_rebuild() => {
                self.rebuild_archive()?;
                Some(
                    a.error
                        .or(a.replaced)
                        .unwrap_or_else(|| format!("archive cursor {} was unusable", a.offset)),
                )
            }
            _ => None,
        };
        Ok(RepairReport {
            terminated_torn_tail_at: terminated,
            index,
            archive_rebuilt,
            removed,
        })
    }
}

/// Where the unterminated last line starts, if the file does not end
/// with a newline.
fn torn_tail_start(path: &std::path::Path, len: u64) -> Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ctx("open", path)?;
    let mut pos = len;
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = true;
    while pos > 0 {
        let n = (pos as usize).min(buf.len());
        pos -= n as u64;
        f.seek(SeekFrom::Start(pos)).ctx("seek", path)?;
        f.read_exact(&mut buf[..n]).ctx("read", path)?;
        if first {
            if buf[n - 1] == b'\n' {
                return Ok(None);
            }
            first = false;
        }
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(pos + i as u64 + 1));
        }
    }
    Ok(Some(0))
}

/// The (offset, length) of each line a repair terminated.
fn load_repairs(path: &std::path::Path) -> Result<HashSet<(u64, u64)>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(crate::Error::io("read", path, e)),
    };
    let doc = crate::json::parse(&text).unwrap_or(Value::Null);
    let list = doc
        .get("terminated")
        .and_then(Value::as_array)
        .unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|e| {
            let n = |k: &str| e.get(k).and_then(Value::as_f64).map(|x| x as u64);
            Some((n("offset")?, n("length")?))
        })
        .collect())
}

/// Add a terminated line to the repairs file (under the `ledger` lock).
fn record_repair(path: &std::path::Path, offset: u64, length: u64) -> Result<()> {
    let mut all: Vec<(u64, u64)> = load_repairs(path)?.into_iter().collect();
    all.push((offset, length));
    all.sort_unstable();
    all.dedup();
    let list = all
        .iter()
        .map(|(o, l)| {
            let mut e = Object::new();
            e.insert("offset", Value::Number(*o as f64));
            e.insert("length", Value::Number(*l as f64));
            Value::Object(e)
        })
        .collect();
    let mut doc = Object::new();
    doc.insert("terminated", Value::Array(list));
    let body = format!("{}\n", Value::Object(doc).to_json());
    crate::fsio::replace_file(path, body.as_bytes()).map(drop)
}
