//! The status of the derived state, in the shape of the reference CLI's
//! `StateStatus` (`burn state status --json`), plus the ledger's own line
//! counts per kind.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::archive::ArchiveStatus;
use crate::error::{Error, IoContext, Result};
use crate::home::is_valid_session_id;
use crate::json::{Object, Value};
use crate::jsonl::{for_each_logical, Parsed, RawLine};
use crate::ledger::Ledger;
use crate::records::{line_kind, Kind};

use super::counts::{count_file, count_from, LineCounts, COUNTS_FILE};

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

impl LineCounts for LedgerCounts {
    fn add_line(&mut self, line: &RawLine<'_>) {
        if line.oversized {
            self.other += 1;
            return;
        }
        for_each_logical(line.bytes, |p| match p {
            Parsed::Blank => self.blank += 1,
            Parsed::Malformed(_) => self.other += 1,
            Parsed::Value(v) => match line_kind(&v) {
                Some(k) => {
                    self.kinds[k as usize] += 1;
                    if k == Kind::Turn
                        && v.get("record")
                            .and_then(|r| r.get("activity"))
                            .is_some_and(|a| a.as_js_string().is_some())
                    {
                        self.classified += 1;
                    }
                }
                None => self.other += 1,
            },
        });
    }

    fn to_value(&self) -> Value {
        let n = |x: u64| Value::Number(x as f64);
        let mut o = Object::new();
        o.insert(
            "kinds",
            Value::Array(self.kinds.iter().map(|&k| n(k)).collect()),
        );
        o.insert("classified", n(self.classified));
        o.insert("blank", n(self.blank));
        o.insert("other", n(self.other));
        Value::Object(o)
    }

    fn from_value(v: &Value) -> Option<LedgerCounts> {
        let n = |v: Option<&Value>| match v {
            Some(Value::Number(x)) if *x >= 0.0 && x.fract() == 0.0 => Some(*x as u64),
            _ => None,
        };
        let mut c = LedgerCounts::default();
        let kinds = v.get("kinds")?.as_array()?;
        if kinds.len() != c.kinds.len() {
            return None;
        }
        for (slot, k) in c.kinds.iter_mut().zip(kinds) {
            *slot = n(Some(k))?;
        }
        c.classified = n(v.get("classified"))?;
        c.blank = n(v.get("blank"))?;
        c.other = n(v.get("other"))?;
        Some(c)
    }
}

/// Non-blank lines of an index sidecar.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Entries(u64);

impl LineCounts for Entries {
    fn add_line(&mut self, line: &RawLine<'_>) {
        // An id line starts with a hex digit: no need to decode and trim.
        let visible = match line.bytes.first() {
            Some(b) if b.is_ascii_graphic() => true,
            _ => !String::from_utf8_lossy(line.bytes).trim().is_empty(),
        };
        if visible || line.oversized {
            self.0 += 1;
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0 as f64)
    }

    fn from_value(v: &Value) -> Option<Entries> {
        match v {
            Value::Number(x) if *x >= 0.0 && x.fract() == 0.0 => Some(Entries(*x as u64)),
            _ => None,
        }
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

/// An index sidecar's entries, counted on from the kept counts.
fn index_file_status(doc: &Path, key: &str, path: PathBuf) -> Result<IndexFileStatus> {
    match count_file::<Entries>(doc, key, &path, &mut |_, _| {})? {
        Some((Entries(entries), bytes)) => Ok(IndexFileStatus {
            bytes,
            exists: true,
            entries,
            path,
        }),
        None => Ok(IndexFileStatus {
            path,
            exists: false,
            bytes: 0,
            entries: 0,
        }),
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
    /// Count the ledger's lines by kind in one streaming pass over the
    /// whole file; `progress(done, total)` sees the bytes read.
    pub fn ledger_counts(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<LedgerCounts> {
        let path = self.home().ledger();
        let len = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Ok(LedgerCounts::default()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(LedgerCounts::default()),
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        let (_, mut c, _) = count_from(&path, 0, LedgerCounts::default(), len, progress)?;
        c.exists = true;
        c.bytes = len;
        Ok(c)
    }

    /// [`Ledger::ledger_counts`], reading only the bytes appended since the
    /// counts were last kept (see [`super::counts`]).
    pub fn ledger_counts_kept(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<LedgerCounts> {
        let home = self.home();
        let doc = home.root().join(COUNTS_FILE);
        Ok(
            match count_file::<LedgerCounts>(&doc, "ledger", &home.ledger(), progress)? {
                Some((mut c, len)) => {
                    c.exists = true;
                    c.bytes = len;
                    c
                }
                None => LedgerCounts::default(),
            },
        )
    }

    /// Index files, content sidecars, ledger counts and archive status.
    pub fn state_status(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<StateStatus> {
        let home = self.home();
        let doc = home.root().join(COUNTS_FILE);
        Ok(StateStatus {
            ids: index_file_status(&doc, "ids", home.ledger_index())?,
            content_index: index_file_status(&doc, "contentIndex", home.ledger_content_index())?,
            content: content_status(home.content_dir())?,
            ledger_path: home.ledger(),
            ledger: self.ledger_counts_kept(progress)?,
            archive: self.archive_status()?,
        })
    }
}
