//! The status of the derived state, in the shape of the reference CLI's
//! `StateStatus` (`burn state status --json`), plus the ledger's own line
//! counts per kind.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::archive::ArchiveStatus;
use crate::error::{Error, IoContext, Result};
use crate::home::is_valid_session_id;
use crate::json::{Object, Value};
use crate::jsonl::{for_each_logical, LineScanner, Parsed};
use crate::ledger::Ledger;
use crate::records::{line_kind, Kind};

/// One index sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexFileStatus {
    pub path: PathBuf,
    pub exists: bool,
    pub bytes: u64,
    /// Non-blank lines.
    pub entries: u64,
}

/// The content sidecar directory.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentStatus {
    pub path: PathBuf,
    pub exists: bool,
    pub files: u64,
    /// Sidecars that are not empty.
    pub sessions: u64,
    pub bytes: u64,
}

/// What one pass over the ledger counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerCounts {
    pub exists: bool,
    pub bytes: u64,
    /// Lines of each kind, in [`Kind::ALL`] order.
    pub kinds: [u64; 6],
    /// Turns whose record has a string `activity`.
    pub classified: u64,
    pub blank: u64,
    /// Lines that are not JSON, or not of a known kind.
    pub other: u64,
}

impl LedgerCounts {
    pub fn count(&self, kind: Kind) -> u64 {
        self.kinds[kind as usize]
    }
}

/// Everything `burn state status` shows.
#[derive(Debug, Clone)]
pub struct StateStatus {
    pub ids: IndexFileStatus,
    pub content_index: IndexFileStatus,
    pub content: ContentStatus,
    pub ledger_path: PathBuf,
    pub ledger: LedgerCounts,
    pub archive: ArchiveStatus,
}

impl StateStatus {
    /// The reference's `StateStatus` object; the `ledger` key is this
    /// project's addition.
    pub fn to_value(&self) -> Value {
        let n = |x: u64| Value::Number(x as f64);
        let path = |p: &Path| Value::from(p.display().to_string());
        let index_file = |s: &IndexFileStatus| {
            let mut o = Object::new();
            o.insert("path", path(&s.path));
            o.insert("exists", Value::Bool(s.exists));
            o.insert("bytes", n(s.bytes));
            o.insert("entries", n(s.entries));
            Value::Object(o)
        };
        let mut index = Object::new();
        index.insert("ids", index_file(&self.ids));
        index.insert("content", index_file(&self.content_index));
        let mut content = Object::new();
        content.insert("path", path(&self.content.path));
        content.insert("exists", Value::Bool(self.content.exists));
        content.insert("files", n(self.content.files));
        content.insert("sessions", n(self.content.sessions));
        content.insert("bytes", n(self.content.bytes));
        content.insert("userTurns", n(self.ledger.count(Kind::UserTurn)));
        let turns = self.ledger.count(Kind::Turn);
        let mut classifier = Object::new();
        classifier.insert("turns", n(turns));
        classifier.insert("classified", n(self.ledger.classified));
        classifier.insert("missing", n(turns - self.ledger.classified));
        let mut ledger = Object::new();
        ledger.insert("path", path(&self.ledger_path));
        ledger.insert("exists", Value::Bool(self.ledger.exists));
        ledger.insert("bytes", n(self.ledger.bytes));
        let mut lines = Object::new();
        for k in Kind::ALL {
            lines.insert(k.as_str(), n(self.ledger.count(k)));
        }
        ledger.insert("lines", Value::Object(lines));
        ledger.insert("blankLines", n(self.ledger.blank));
        ledger.insert("otherLines", n(self.ledger.other));
        let mut out = Object::new();
        out.insert("index", Value::Object(index));
        out.insert("content", Value::Object(content));
        out.insert("classifier", Value::Object(classifier));
        out.insert("archive", self.archive.to_value());
        out.insert("ledger", Value::Object(ledger));
        Value::Object(out)
    }
}

fn index_file_status(path: PathBuf) -> Result<IndexFileStatus> {
    match std::fs::read(&path) {
        Ok(raw) => {
            let entries = raw
                .split(|&b| b == b'\n')
                .filter(|l| !String::from_utf8_lossy(l).trim().is_empty())
                .count() as u64;
            Ok(IndexFileStatus {
                bytes: raw.len() as u64,
                exists: true,
                entries,
                path,
            })
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(IndexFileStatus {
            path,
            exists: false,
            bytes: 0,
            entries: 0,
        }),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

fn content_status(dir: PathBuf) -> Result<ContentStatus> {
    let mut s = ContentStatus {
        path: dir.clone(),
        exists: false,
        files: 0,
        sessions: 0,
        bytes: 0,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(s),
        Err(e) => return Err(Error::io("read directory", &dir, e)),
    };
    s.exists = true;
    for entry in entries {
        let entry = entry.ctx("read directory", &dir)?;
        let name = entry.file_name();
        let Some(sid) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
            continue;
        };
        if !is_valid_session_id(sid) {
            continue;
        }
        // A sidecar pruned meanwhile is simply not counted.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        s.files += 1;
        s.bytes += meta.len();
        if meta.len() > 0 {
            s.sessions += 1;
        }
    }
    Ok(s)
}

impl Ledger {
    /// Count the ledger's lines by kind in one streaming pass;
    /// `progress(done, total)` sees the bytes read.
    pub fn ledger_counts(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<LedgerCounts> {
        let path = self.home().ledger();
        let mut c = LedgerCounts::default();
        let total = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Ok(c),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(c),
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        c.exists = true;
        c.bytes = total;
        let mut sc = LineScanner::open_at(&path, 0).ctx("open", &path)?;
        let mut next_report = 0u64;
        while let Some(line) = sc.next_line().ctx("read", &path)? {
            if line.offset >= next_report {
                progress(line.offset, total);
                next_report = line.offset + (4 << 20);
            }
            if line.oversized {
                c.other += 1;
                continue;
            }
            for_each_logical(line.bytes, |p| match p {
                Parsed::Blank => c.blank += 1,
                Parsed::Malformed(_) => c.other += 1,
                Parsed::Value(v) => match line_kind(&v) {
                    Some(k) => {
                        c.kinds[k as usize] += 1;
                        if k == Kind::Turn
                            && v.get("record")
                                .and_then(|r| r.get("activity"))
                                .is_some_and(|a| a.as_js_string().is_some())
                        {
                            c.classified += 1;
                        }
                    }
                    None => c.other += 1,
                },
            });
        }
        progress(total, total);
        Ok(c)
    }

    /// Index files, content sidecars, ledger counts and archive status.
    pub fn state_status(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<StateStatus> {
        let home = self.home();
        Ok(StateStatus {
            ids: index_file_status(home.ledger_index())?,
            content_index: index_file_status(home.ledger_content_index())?,
            content: content_status(home.content_dir())?,
            ledger_path: home.ledger(),
            ledger: self.ledger_counts(progress)?,
            archive: self.archive_status()?,
        })
    }
}
