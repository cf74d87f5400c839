//! What a push reads: a [`PushSource`] yields the ledger's lines from a
//! resume point, each with the position after it. The file ledger is the
//! source today; another storage backend only has to implement the trait.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::json::Value;
use crate::jsonl::{for_each_logical, LineScanner, Parsed};
use crate::records::{line_kind, Kind};

/// Bytes before a cursor that its check hash covers.
const CHECK_WINDOW: u64 = 4096;

/// One parsed entry of the ledger.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A record of a keyed kind (everything but stamps).
    Record { kind: Kind, record: Value },
    /// A whole stamp line.
    Stamp(Value),
}

/// Why part of a line was not pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub offset: u64,
    pub reason: String,
}

/// One physical line: where it starts, where the next read resumes, and
/// what it holds.
#[derive(Debug, Clone)]
pub struct SourceLine {
    pub offset: u64,
    pub end: u64,
    pub entries: Vec<Entry>,
    pub skipped: Vec<Skip>,
}

/// A ledger that can be pushed.
pub trait PushSource {
    /// Size now, in the units of offsets (bytes for the file ledger).
    fn size(&self) -> Result<u64>;
    /// A fingerprint of the history just before `offset`; `None` when the
    /// source is shorter. A cursor applies only while this is unchanged.
    fn checkpoint(&self, offset: u64) -> Result<Option<String>>;
    /// Complete lines from `offset` up to `limit`. A torn last line is
    /// left for the next push.
    fn lines(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<SourceLine>> + '_>>;
}

/// The file ledger (`ledger.jsonl`) as a push source.
#[derive(Debug, Clone)]
pub struct LedgerFile {
    path: PathBuf,
}

impl LedgerFile {
    pub fn new(path: PathBuf) -> LedgerFile {
        LedgerFile { path }
    }
}

/// Classify one parsed logical line.
fn classify(v: Value, offset: u64, line: &mut SourceLine) {
    let kind = line_kind(&v);
    match kind {
        None => line.skipped.push(Skip {
            offset,
            reason: "not a ledger line of a known kind".into(),
        }),
        Some(Kind::Stamp) => line.entries.push(Entry::Stamp(v)),
        Some(kind) => match v.into_object().and_then(|mut o| o.remove("record")) {
            Some(record) if record.as_object().is_some() => {
                line.entries.push(Entry::Record { kind, record })
            }
            _ => line.skipped.push(Skip {
                offset,
                reason: format!("{} line without a record object", kind.as_str()),
            }),
        },
    }
}

struct FileLines {
    path: PathBuf,
    scanner: Option<LineScanner<std::io::Take<File>>>,
}

impl Iterator for FileLines {
    type Item = Result<SourceLine>;

    fn next(&mut self) -> Option<Result<SourceLine>> {
        loop {
            let sc = self.scanner.as_mut()?;
            let raw = match sc.next_line() {
                Err(e) => {
                    self.scanner = None;
                    return Some(Err(Error::io("read", &self.path, e)));
                }
                Ok(None) => {
                    self.scanner = None;
                    return None;
                }
                Ok(Some(raw)) => raw,
            };
            if !raw.terminated {
                self.scanner = None;
                return None;
            }
            let mut line = SourceLine {
                offset: raw.offset,
                end: raw.end(raw.bytes.len() as u64),
                entries: Vec::new(),
                skipped: Vec::new(),
            };
            if raw.oversized {
                line.skipped.push(Skip {
                    offset: raw.offset,
                    reason: "line too long".into(),
                });
            } else {
                let offset = raw.offset;
                for_each_logical(raw.bytes, |p| match p {
                    Parsed::Blank => {}
                    Parsed::Malformed(reason) => line.skipped.push(Skip { offset, reason }),
                    Parsed::Value(v) => classify(v, offset, &mut line),
                });
            }
            if line.entries.is_empty() && line.skipped.is_empty() {
                continue;
            }
            return Some(Ok(line));
        }
    }
}

impl PushSource for LedgerFile {
    fn size(&self) -> Result<u64> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io("stat", &self.path, e)),
        }
    }

    fn checkpoint(&self, offset: u64) -> Result<Option<String>> {
        if offset == 0 {
            return Ok(Some(String::new()));
        }
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        let len = f
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        if len < offset {
            return Ok(None);
        }
        let start = offset.saturating_sub(CHECK_WINDOW);
        let mut buf = vec![0u8; (offset - start) as usize];
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| Error::io("read", &self.path, e))?;
        // A cursor sits at a line end; anything else is another history.
        if buf.last() != Some(&b'\n') {
            return Ok(None);
        }
        let digest = Sha256::digest(&buf);
        Ok(Some(digest.iter().map(|b| format!("{b:02x}")).collect()))
    }

    fn lines(
        &self,
        offset: u64,
        limit: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<SourceLine>> + '_>> {
        let scanner = match File::open(&self.path) {
            Ok(mut f) => {
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| Error::io("seek", &self.path, e))?;
                Some(LineScanner::new(
                    f.take(limit.saturating_sub(offset)),
                    offset,
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &self.path, e)),
        };
        Ok(Box::new(FileLines {
            path: self.path.clone(),
            scanner,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(src: &LedgerFile, from: u64) -> Vec<SourceLine> {
        let len = src.size().unwrap();
        src.lines(from, len).unwrap().map(|l| l.unwrap()).collect()
    }

    #[test]
    fn lines_kinds_skips_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let body = concat!(
            "{\"v\":1,\"kind\":\"turn\",\"record\":{\"a\":1}}\n",
            "\n",
            "{broken\n",
            "{\"v\":1,\"kind\":\"stamp\",\"ts\":\"t\",\"selector\":{},\"enrichment\":{}}\n",
            "{\"v\":2,\"kind\":\"turn\",\"record\":{}}\n",
            "{\"v\":1,\"kind\":\"turn\",\"record\":{\"torn\":1}"
        );
        std::fs::write(&path, body).unwrap();
        let src = LedgerFile::new(path);
        let got = collect(&src, 0);
        assert_eq!(got.len(), 4);
        assert!(matches!(
            got[0].entries[0],
            Entry::Record {
                kind: Kind::Turn,
                ..
            }
        ));
        assert_eq!((got[0].offset, got[0].end), (0, 39));
        assert_eq!(got[1].skipped.len(), 1);
        assert_eq!(got[1].offset, 40);
        assert!(matches!(got[2].entries[0], Entry::Stamp(_)));
        assert_eq!(
            got[3].skipped[0].reason,
            "not a ledger line of a known kind"
        );
        // The torn line is not read; the last cursor is the end of line 5.
        let end = got[3].end;
        assert_eq!(&body.as_bytes()[end as usize..end as usize + 1], b"{");
        assert!(collect(&src, end).is_empty());
    }

    #[test]
    fn checkpoints_tell_histories_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, "a\nb\n").unwrap();
        let src = LedgerFile::new(path.clone());
        let at2 = src.checkpoint(2).unwrap().unwrap();
        assert_eq!(src.checkpoint(1).unwrap(), None, "not at a line end");
        assert_eq!(src.checkpoint(9).unwrap(), None, "beyond the end");
        std::fs::write(&path, "x\nb\n").unwrap();
        assert_ne!(src.checkpoint(2).unwrap().unwrap(), at2);
    }
}
