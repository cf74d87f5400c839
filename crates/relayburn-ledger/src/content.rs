//! Per-session content sidecars `content/<sessionId>.jsonl` (SPEC §4, §5):
//! raw text and tool payloads kept beside the ledger, deduped by line.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::fsio::append_bytes;
use crate::home::{is_valid_session_id, lock_name};
use crate::json::Value;
use crate::jsonl::{parse_line, LineScanner, Parsed};
use crate::ledger::Ledger;
use crate::records::obj;

/// What [`Ledger::append_content`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentAppendSummary {
    /// Lines written.
    pub appended: usize,
    /// Records already in their sidecar, or repeated in the batch.
    pub duplicates: usize,
    /// Records without a `sessionId` (skipped silently, as the reference).
    pub missing_session: usize,
    /// `sessionId`s refused as unsafe file names, one per record, as JSON
    /// strings (the reference warns about each on stderr).
    pub invalid_session_ids: Vec<String>,
}

impl ContentAppendSummary {
    /// The session a record belongs to, or `None` after counting it as
    /// missing one (skipped silently) or as unsafe (warned about).
    pub(crate) fn session_of<'a>(&mut self, r: &'a Value) -> Option<&'a str> {
        let sid = match r.get("sessionId") {
            Some(v) if v.is_truthy() => v,
            _ => {
                self.missing_session += 1;
                return None;
            }
        };
        let valid = sid.as_str().filter(|s| is_valid_session_id(s));
        if valid.is_none() {
            self.invalid_session_ids.push(sid.to_json());
        }
        valid
    }

    /// The warnings the reference prints for this batch.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.invalid_session_ids
            .iter()
            .map(|id| format!("[burn] skipping content record with unsafe sessionId: {id}"))
    }
}

/// What [`Ledger::prune_content`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneResult {
    pub files_deleted: u64,
    pub bytes_freed: u64,
    /// Sidecars kept because their source can rebuild them.
    pub skipped_recoverable: u64,
}

impl PruneResult {
    /// `{filesDeleted, bytesFreed, skippedRecoverable}`.
    pub fn to_json(&self) -> Value {
        obj([
            ("filesDeleted", Value::Number(self.files_deleted as f64)),
            ("bytesFreed", Value::Number(self.bytes_freed as f64)),
            (
                "skippedRecoverable",
                Value::Number(self.skipped_recoverable as f64),
            ),
        ])
    }
}

impl PruneResult {
    /// Count one session's outcome: `Some(Some(bytes))` deleted,
    /// `Some(None)` kept as recoverable, `None` left (too recent, gone).
    pub(crate) fn tally(&mut self, outcome: Option<Option<u64>>) {
        match outcome {
            Some(Some(bytes)) => {
                self.files_deleted += 1;
                self.bytes_freed += bytes;
            }
            Some(None) => self.skipped_recoverable += 1,
            None => {}
        }
    }
}

/// A predicate telling whether a session's source can rebuild its sidecar.
pub type IsRecoverable<'a> = &'a dyn Fn(&str) -> Result<bool>;

impl Ledger {
    /// Append content records to their sessions' sidecars.
    ///
    /// Records are grouped by `sessionId` (first-seen order); under lock
    /// `content.<sessionId>`, a serialised record is written unless the
    /// same line is already in the sidecar or earlier in the batch. One
    /// write per session. Records with no `sessionId` are skipped; unsafe
    /// ids are skipped and reported in the summary, never used as paths.
    ///
    /// ```
    /// use relayburn_ledger::{json, Ledger, LedgerHome};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
    /// let rec = json::parse(r#"{"v":1,"source":"claude-code","sessionId":"s-A","messageId":"m-1",
    ///     "ts":"2026-04-20T00:00:00.000Z","role":"assistant","kind":"text","text":"hello"}"#)?;
    /// let bad = json::parse(r#"{"sessionId":"../escape","text":"no"}"#)?;
    /// let summary = ledger.append_content(vec![rec.clone(), rec.clone(), bad])?;
    /// assert_eq!((summary.appended, summary.duplicates), (1, 1));
    /// assert_eq!(summary.invalid_session_ids, vec![r#""../escape""#.to_string()]);
    /// assert_eq!(ledger.read_content("s-A", Some("m-1"))?, vec![rec]);
    /// assert!(ledger.read_content("s-A", Some("other"))?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_content(&self, records: Vec<Value>) -> Result<ContentAppendSummary> {
        let mut summary = ContentAppendSummary::default();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &records {
            let Some(sid) = summary.session_of(r) else {
                continue;
            };
            let line = r.to_json();
            match groups.iter_mut().find(|(k, _)| k == sid) {
                Some((_, lines)) => lines.push(line),
                None => groups.push((sid.to_string(), vec![line])),
            }
        }
        for (sid, lines) in groups {
            let (written, dups) = self.append_session_content(&sid, lines)?;
            summary.appended += written;
            summary.duplicates += dups;
        }
        Ok(summary)
    }

    fn append_session_content(&self, sid: &str, lines: Vec<String>) -> Result<(usize, usize)> {
        let path = self.home().content_file(sid)?;
        self.with_lock(&lock_name::content(sid), || {
            // Only the batch's lines are held in memory; the sidecar is
            // streamed past them.
            let mut wanted: HashSet<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
            let mut present: HashSet<Vec<u8>> = HashSet::new();
            match LineScanner::open_at(&path, 0) {
                Ok(mut sc) => {
                    while let Some(line) = sc.next_line().ctx("read", &path)? {
                        if !wanted.is_empty() && wanted.remove(line.bytes) {
                            present.insert(line.bytes.to_vec());
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("open", &path, e)),
            }
            let mut payload = Vec::new();
            let mut seen: HashSet<&str> = HashSet::new();
            let mut written = 0;
            for l in &lines {
                if l.is_empty() || present.contains(l.as_bytes()) || !seen.insert(l) {
                    continue;
                }
                payload.extend_from_slice(l.as_bytes());
                payload.push(b'\n');
                written += 1;
            }
            if written > 0 {
                append_bytes(&path, &payload)?;
            }
            Ok((written, lines.len() - written))
        })
    }

    /// The content records of a session, optionally only one message's.
    ///
    /// Lines that are blank, not JSON, or not objects/arrays are skipped.
    /// A missing sidecar reads as empty; an unsafe session id is an error.
    pub fn read_content(&self, session_id: &str, message_id: Option<&str>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        self.for_each_content(session_id, |rec| {
            let keep = match message_id {
                None => true,
                Some(m) => matches!(rec.get("messageId"), Some(Value::String(s)) if s == m),
            };
            if keep {
                out.push(rec);
            }
        })?;
        Ok(out)
    }

    /// Stream a session's content records (see [`Ledger::read_content`]).
    pub fn for_each_content(&self, session_id: &str, mut f: impl FnMut(Value)) -> Result<()> {
        let path = self.home().content_file(session_id)?;
        let mut sc = match LineScanner::open_at(&path, 0) {
            Ok(sc) => sc,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        // The reference splits the whole file on `\n` only (no readline),
        // then trims each piece.
        while let Some(line) = sc.next_line().ctx("read", &path)? {
            if line.oversized {
                continue;
            }
            if let Parsed::Value(v) = parse_line(line.bytes) {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    f(v);
                }
            }
        }
        Ok(())
    }

    /// Session ids that have a non-empty sidecar with a valid name, sorted.
    pub fn list_content_session_ids(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (sid, path) in self.sidecar_files()? {
            // An empty sidecar means "tried, nothing written": not listed,
            // so it is parsed again.
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                out.push(sid);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Delete sidecars last modified at or before `now - older_than`.
    ///
    /// Each file is re-checked under its session lock, so a sidecar being
    /// written is judged by its new mtime. When `is_recoverable` says a
    /// session's source can rebuild the sidecar, it is kept; a predicate
    /// that fails counts as "not recoverable" (prune rather than keep
    /// forever on a broken source index).
    pub fn prune_content(
        &self,
        older_than: Duration,
        is_recoverable: Option<IsRecoverable<'_>>,
    ) -> Result<PruneResult> {
        let mut result = PruneResult::default();
        let cutoff = prune_cutoff(older_than);
        for (sid, path) in self.sidecar_files()? {
            let outcome = self.with_lock(&lock_name::content(&sid), || {
                let Ok(meta) = std::fs::metadata(&path) else {
                    return Ok(None);
                };
                if !meta.is_file() || mtime_ms(&meta) > cutoff {
                    return Ok(None);
                }
                if let Some(pred) = is_recoverable {
                    if let Ok(true) = pred(&sid) {
                        return Ok(Some(None));
                    }
                }
                Ok(std::fs::remove_file(&path).ok().map(|()| Some(meta.len())))
            })?;
            result.tally(outcome);
        }
        Ok(result)
    }
}

impl Ledger {
    /// The sidecars [`prune_content`](Self::prune_content) would delete
    /// now, as `(sessionId, bytes)`, sorted by session id; reads only.
    pub fn prune_candidates(&self, older_than: Duration) -> Result<Vec<(String, u64)>> {
        let cutoff = prune_cutoff(older_than);
        let mut out = Vec::new();
        for (sid, path) in self.sidecar_files()? {
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.is_file() && mtime_ms(&meta) <= cutoff {
                    out.push((sid, meta.len()));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// `(sessionId, path)` of every validly named sidecar.
    fn sidecar_files(&self) -> Result<Vec<(String, std::path::PathBuf)>> {
        let dir = self.home().content_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.ctx("read directory", &dir)?;
            if let Some(sid) = sidecar_session(&entry.file_name()) {
                out.push((sid, entry.path()));
            }
        }
        Ok(out)
    }
}

/// Files with an mtime at or before this (ms since the epoch) are old
/// enough to prune. Full precision (the reference truncates to whole
/// milliseconds), so that a zero age reliably takes a file written a
/// moment ago.
fn prune_cutoff(older_than: Duration) -> f64 {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    now_ms - older_than.as_secs_f64() * 1000.0
}

/// The session id of a sidecar file name `<id>.jsonl`, when valid.
fn sidecar_session(name: &std::ffi::OsStr) -> Option<String> {
    let name = name.to_str()?;
    let sid = name.strip_suffix(".jsonl")?;
    is_valid_session_id(sid).then(|| sid.to_string())
}

/// `stat.mtimeMs`: milliseconds since the epoch, with the sub-millisecond
/// part as a fraction.
fn mtime_ms(meta: &std::fs::Metadata) -> f64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -(e.duration().as_secs_f64() * 1000.0),
        },
        Err(_) => f64::NEG_INFINITY,
    }
}
