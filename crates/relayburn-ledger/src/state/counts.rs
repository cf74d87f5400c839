//! Line counts kept between runs of `state status`, so that a run reads
//! only what was appended since the last one instead of the whole ledger.
//!
//! For the ledger and the id index, `state-counts.json` keeps the counts
//! of a prefix of the file: up to the end of its last complete line when
//! they were taken, with the file's device and inode and a digest of the
//! bytes just before that end. The next run recounts from scratch when any
//! of these no longer holds (the file was replaced, truncated or rewritten
//! in place) or the counts file is missing or unreadable; otherwise it
//! counts the bytes past the prefix and adds them. Lines without their
//! `\n` yet (a torn or in-progress append) are counted on every run and
//! never kept, so a later completion of the line is not counted twice.
//!
//! The file is a cache: writing it is best effort (a read-only home still
//! gets exact counts, recounted each time), and concurrent runs replace it
//! atomically, each with counts that are right for what they saw.

use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::json::{self, Object, Value};
use crate::jsonl::{LineScanner, RawLine};

/// Bytes before the kept end whose digest must still match.
const CHECK_BYTES: u64 = 4096;

/// Name of the counts file in the home.
pub const COUNTS_FILE: &str = "state-counts.json";

/// Where a kept prefix ends and how to recognise the same file.
#[derive(Debug, Clone, PartialEq)]
struct Prefix {
    dev: u64,
    ino: u64,
    end: u64,
    check: String,
}

/// Counts of one file, and how to add a line to them.
pub(crate) trait LineCounts: Clone + Default {
    fn add_line(&mut self, line: &RawLine<'_>);
    fn to_value(&self) -> Value;
    fn from_value(v: &Value) -> Option<Self>;
}

/// Kept counts of every counted file, as read from and written to disk.
#[derive(Debug, Default)]
struct Doc {
    entries: Object,
}

fn number(v: Option<&Value>) -> Option<u64> {
    match v {
        Some(Value::Number(n)) if *n >= 0.0 && n.fract() == 0.0 => Some(*n as u64),
        _ => None,
    }
}

fn digest_before(file: &mut std::fs::File, end: u64) -> std::io::Result<String> {
    let from = end.saturating_sub(CHECK_BYTES);
    file.seek(SeekFrom::Start(from))?;
    let mut buf = vec![0u8; (end - from) as usize];
    file.read_exact(&mut buf)?;
    let d = Sha256::digest(&buf);
    Ok(d[..8].iter().map(|b| format!("{b:02x}")).collect())
}

fn prefix_of(v: &Value) -> Option<Prefix> {
    Some(Prefix {
        dev: number(v.get("dev"))?,
        ino: number(v.get("ino"))?,
        end: number(v.get("end"))?,
        check: v.get("check")?.as_str()?.to_string(),
    })
}

impl Doc {
    fn read(path: &Path) -> Doc {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| json::parse(&String::from_utf8_lossy(&b)).ok())
            .and_then(Value::into_object)
            .unwrap_or_default();
        Doc { entries }
    }

    fn write(&self, path: &Path) {
        let tmp = {
            let mut s = path.as_os_str().to_owned();
            s.push(format!(".{}.tmp", std::process::id()));
            PathBuf::from(s)
        };
        let body = Value::Object(self.entries.clone()).to_json();
        // A cache: a home we cannot write to still gets exact counts.
        let _ = crate::fsio::replace_file_via(path, &tmp, body.as_bytes());
    }
}

/// Counts of `file` (under `key` in the counts file at `doc_path`): the
/// kept prefix's, plus those of the bytes after it. `None` when the file
/// does not exist.
pub(crate) fn count_file<C: LineCounts>(
    doc_path: &Path,
    key: &str,
    file: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<(C, u64)>> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", file, e)),
    };
    let meta = f.metadata().ctx("stat", file)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let len = meta.len();
    let mut doc = Doc::read(doc_path);
    let kept = doc.entries.get(key).and_then(|v| {
        let p = prefix_of(v.get("prefix")?)?;
        let c = C::from_value(v.get("counts")?)?;
        Some((p, c))
    });
    let (start, base) = match kept {
        Some((p, c))
            if p.dev == meta.dev()
                && p.ino == meta.ino()
                && p.end <= len
                && digest_before(&mut f, p.end).ok().as_deref() == Some(p.check.as_str()) =>
        {
            (p.end, c)
        }
        _ => (0, C::default()),
    };
    let (kept_counts, total, end) = count_from(file, start, base, len, progress)?;
    if end != start || start == 0 {
        let check = digest_before(&mut f, end).ctx("read", file)?;
        let mut prefix = Object::new();
        prefix.insert("dev", Value::Number(meta.dev() as f64));
        prefix.insert("ino", Value::Number(meta.ino() as f64));
        prefix.insert("end", Value::Number(end as f64));
        prefix.insert("check", Value::from(check));
        let mut entry = Object::new();
        entry.insert("prefix", Value::Object(prefix));
        entry.insert("counts", kept_counts.to_value());
        doc.entries.insert(key, Value::Object(entry));
        doc.write(doc_path);
    }
    Ok(Some((total, len)))
}

/// Count the lines of `[start, EOF)` onto `base`: the counts up to the end
/// of the last complete line (to keep), the counts of everything, and that
/// end.
pub(crate) fn count_from<C: LineCounts>(
    file: &Path,
    start: u64,
    base: C,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(C, C, u64)> {
    let mut sc = LineScanner::open_at(file, start).ctx("open", file)?;
    let mut kept = base;
    let mut torn: Option<C> = None;
    let mut end = start;
    let mut next_report = start;
    while let Some(line) = sc.next_line().ctx("read", file)? {
        if line.offset >= next_report {
            progress(line.offset, len);
            next_report = line.offset + (4 << 20);
        }
        if line.terminated {
            kept.add_line(&line);
            end = sc.position();
        } else {
            // Only the last line can lack its newline.
            let mut all = kept.clone();
            all.add_line(&line);
            torn = Some(all);
        }
    }
    progress(len, len);
    let total = torn.unwrap_or_else(|| kept.clone());
    Ok((kept, total, end))
}
