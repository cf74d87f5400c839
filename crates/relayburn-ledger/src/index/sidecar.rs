//! The index sidecars `ledger.idx` and `ledger.content.idx` and the
//! in-memory dedup state built from them (SPEC §4).
//!
//! The state reproduces what one process of the reference remembers: the
//! id set loaded from `ledger.idx`, the last [`CONTENT_WINDOW`] lines of
//! `ledger.content.idx`, and every id and fingerprint committed since.
//! Unlike the reference it also follows what other processes wrote: each
//! sync reads only what was appended to the three files since the last
//! look (byte offsets), and reloads a file that shrank or was replaced.
//! Scanning the ledger tail matters because the reference appends its
//! index lines only after releasing the `ledger` lock.

use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::io::{BufRead, BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::fsio::{append_bytes, last_byte, replace_file, FileId, Tracked};
use crate::home::LedgerHome;
use crate::index::{record_id, turn_fingerprint, Hash16, Hash16Set, CONTENT_WINDOW};
use crate::json::Value;
use crate::jsonl::{for_each_logical, LineScanner, Parsed};
use crate::records::{line_kind, Kind};

/// Counts of a rebuilt index, as the reference's `rebuildIndex` returns
/// them, plus how many ledger lines could not be indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RebuildIndexResult {
    /// Distinct ids written to `ledger.idx`.
    pub ids: usize,
    /// Fingerprints written to `ledger.content.idx` (at most the window).
    pub content: usize,
    /// Lines of a known kind whose record could not be hashed (for example
    /// a turn without `usage`). The reference aborts its rebuild on these.
    pub skipped: usize,
}

impl RebuildIndexResult {
    /// `{ids, content}`: the reference's result object.
    pub fn to_json(&self) -> Value {
        crate::records::obj([
            ("ids", Value::Number(self.ids as f64)),
            ("content", Value::Number(self.content as f64)),
        ])
    }
}

/// The dedup memory of one process.
#[derive(Debug, Default)]
pub(crate) struct IndexState {
    pub(crate) loaded: bool,
    pub(crate) ids: Hash16Set,
    /// Fingerprints a turn is checked against: the window at load plus
    /// everything seen since. Never trimmed, as in the reference.
    pub(crate) content: Hash16Set,
    /// Mirror of `ledger.content.idx`, in file order.
    pub(crate) order: VecDeque<Hash16>,
    pub(crate) ids_file: Tracked,
    pub(crate) window_file: Tracked,
    pub(crate) ledger_file: Tracked,
    ids_pin: Pin,
    window_pin: Pin,
}

/// An open handle on a tracked index file. While it is open the file's
/// inode cannot be freed, so no replacement can be given its number, and
/// "same device and inode" really means "same file". Without it, the
/// content window — replaced by a file of exactly the same size at every
/// append once full — can come back under the number and size a handle
/// last saw, and that handle would miss what the others wrote (then
/// rewrite the window from its stale copy, dropping their fingerprints).
#[derive(Debug, Default)]
struct Pin(Option<(FileId, File)>);

impl Pin {
    fn hold(&mut self, path: &Path, tracked: &Tracked) {
        match tracked.id {
            None => self.0 = None,
            Some(id) if self.0.as_ref().is_some_and(|(held, _)| *held == id) => {}
            Some(id) => {
                // Called under the `ledger` lock, so the path still names
                // the file that was read; if not, the next sync notices.
                self.0 = File::open(path).ok().and_then(|f| {
                    let m = f.metadata().ok()?;
                    (FileId::of(&m) == id).then_some((id, f))
                });
            }
        }
    }
}

/// One index line: 16 lowercase hex digits after trimming. Anything else
/// never matches a computed hash, so it is dropped.
fn parse_index_line(line: &[u8]) -> Option<Hash16> {
    let t = line.trim_ascii();
    if t.len() != 16 || !t.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    std::str::from_utf8(t).ok().and_then(Hash16::parse_hex)
}

/// Read the newline-terminated lines of `path` from `from`; a final line
/// without `\n` is left for next time (a writer may be mid-append).
/// `None` when the file does not exist.
fn read_index_lines(
    path: &Path,
    from: u64,
    mut each: impl FnMut(Hash16),
) -> Result<Option<Tracked>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let meta = f.metadata().ctx("stat", path)?;
    if from > 0 {
        f.seek(SeekFrom::Start(from)).ctx("seek", path)?;
    }
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut offset = from;
    let mut line = Vec::with_capacity(32);
    loop {
        line.clear();
        let n = r.read_until(b'\n', &mut line).ctx("read", path)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        offset += n as u64;
        if let Some(h) = parse_index_line(&line) {
            each(h);
        }
    }
    Ok(Some(Tracked {
        id: Some(FileId::of(&meta)),
        offset,
    }))
}

fn stat_opt(path: &Path) -> Result<Option<Metadata>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// How much of the ledger's end a first load reads for ids.
const RECENT_TAIL_BYTES: u64 = 1 << 20;

/// The id of one parsed ledger line, whatever its fingerprint.
fn line_id(line: &Value) -> Option<Hash16> {
    let kind = line_kind(line)?;
    const NULL: &Value = &Value::Null;
    let rec = line.get("record").unwrap_or(NULL);
    record_id(kind, rec)?.ok()
}

/// The id and, for turns, fingerprint of one parsed ledger line; `Err`
/// when the record cannot be hashed.
pub(crate) fn line_hashes(line: &Value) -> Option<Result<(Hash16, Option<Hash16>), ()>> {
    let kind = line_kind(line)?;
    const NULL: &Value = &Value::Null;
    let rec = line.get("record").unwrap_or(NULL);
    let id = match record_id(kind, rec)? {
        Ok(h) => h,
        Err(_) => return Some(Err(())),
    };
    if kind != Kind::Turn {
        return Some(Ok((id, None)));
    }
    match turn_fingerprint(rec) {
        Ok(fp) => Some(Ok((id, Some(fp)))),
        Err(_) => Some(Err(())),
    }
}

impl IndexState {
    /// Forget everything, as a new process would start.
    pub(crate) fn reset(&mut self) {
        *self = IndexState::default();
    }

    /// Bring the state up to date with the files on disk. Call with the
    /// `ledger` lock held so the ledger cannot grow meanwhile.
    pub(crate) fn sync(&mut self, home: &LedgerHome) -> Result<()> {
        if !self.loaded || !self.sync_ledger(home)? {
            self.load(home)?;
        } else {
            self.sync_index_files(home)?;
        }
        self.pin_index_files(home);
        Ok(())
    }

    /// Keep the index files as tracked open (see [`Pin`]). Call with the
    /// `ledger` lock held, after the tracked state changed.
    pub(crate) fn pin_index_files(&mut self, home: &LedgerHome) {
        self.ids_pin.hold(&home.ledger_index(), &self.ids_file);
        self.window_pin
            .hold(&home.ledger_content_index(), &self.window_file);
    }

    /// Load as the reference's `loadIndex` does; the ledger's current size
    /// is where later scans start.
    fn load(&mut self, home: &LedgerHome) -> Result<()> {
        self.reset();
        let ids = &mut self.ids;
        // 17 bytes a line: reserve once instead of growing a million times.
        if let Ok(m) = std::fs::metadata(home.ledger_index()) {
            ids.reserve((m.len() / 17) as usize);
        }
        self.ids_file = read_index_lines(&home.ledger_index(), 0, |h| {
            ids.insert(h);
        })?
        .unwrap_or_default();
        self.reload_window(home)?;
        let path = home.ledger();
        self.ledger_file = match stat_opt(&path)? {
            Some(m) => {
                self.learn_recent_ids(&path, m.len())?;
                Tracked {
                    id: Some(FileId::of(&m)),
                    offset: m.len(),
                }
            }
            None => Tracked::default(),
        };
        self.loaded = true;
        Ok(())
    }

    /// The reference appends its index lines after releasing the `ledger`
    /// lock, so the newest records may not be in `ledger.idx` yet when it
    /// is loaded. Their ids are taken from the ledger's tail. Only ids:
    /// an id seen in the ledger is always right to dedup against, while
    /// fingerprints keep the reference's window semantics.
    fn learn_recent_ids(&mut self, path: &Path, len: u64) -> Result<()> {
        let start = len.saturating_sub(RECENT_TAIL_BYTES);
        let mut sc = LineScanner::open_at(path, start).ctx("read", path)?;
        let mut at_line_start = start == 0 || {
            let mut f = File::open(path).ctx("open", path)?;
            last_byte(&mut f, start).ctx("read", path)? == b'\n'
        };
        let ids = &mut self.ids;
        while let Some(line) = sc.next_line().ctx("read", path)? {
            if !std::mem::replace(&mut at_line_start, true) || line.oversized {
                continue;
            }
            for_each_logical(line.bytes, |p| {
                if let Parsed::Value(v) = p {
                    if let Some(id) = line_id(&v) {
                        ids.insert(id);
                    }
                }
            });
        }
        Ok(())
    }

    /// Replace the window mirror by the last lines of the file on disk; the
    /// fingerprints join the dedup set.
    fn reload_window(&mut self, home: &LedgerHome) -> Result<()> {
        let mut all = VecDeque::new();
        let tracked = read_index_lines(&home.ledger_content_index(), 0, |h| {
            all.push_back(h);
            if all.len() > CONTENT_WINDOW {
                all.pop_front();
            }
        })?;
        self.window_file = tracked.unwrap_or_default();
        self.content.extend(all.iter().copied());
        self.order = all;
        Ok(())
    }

    /// Scan what was appended to the ledger since the last look. Returns
    /// `false` when the ledger shrank, vanished or was replaced: the caller
    /// then reloads everything.
    fn sync_ledger(&mut self, home: &LedgerHome) -> Result<bool> {
        let path = home.ledger();
        let meta = match stat_opt(&path)? {
            Some(m) => m,
            None => return Ok(self.ledger_file == Tracked::default()),
        };
        let id = FileId::of(&meta);
        if self.ledger_file.id.is_some_and(|known| known != id)
            || meta.len() < self.ledger_file.offset
        {
            return Ok(false);
        }
        if self.ledger_file.id.is_some() && meta.len() == self.ledger_file.offset {
            return Ok(true);
        }
        let end = self.scan_ledger(&path, self.ledger_file.offset)?;
        self.ledger_file = Tracked {
            id: Some(id),
            offset: end,
        };
        Ok(true)
    }

    /// Add the ids and fingerprints of every record from `from` to the end
    /// of the ledger; returns the offset reached.
    fn scan_ledger(&mut self, path: &Path, from: u64) -> Result<u64> {
        let mut sc = LineScanner::open_at(path, from).ctx("read", path)?;
        let ids = &mut self.ids;
        let content = &mut self.content;
        while let Some(line) = sc.next_line().ctx("read", path)? {
            if line.oversized {
                continue;
            }
            for_each_logical(line.bytes, |p| {
                if let Parsed::Value(v) = p {
                    if let Some(Ok((id, fp))) = line_hashes(&v) {
                        ids.insert(id);
                        if let Some(fp) = fp {
                            content.insert(fp);
                        }
                    }
                }
            });
        }
        Ok(sc.position())
    }

    /// Pick up lines other processes appended to the two index files.
    pub(crate) fn sync_index_files(&mut self, home: &LedgerHome) -> Result<()> {
        let ids_path = home.ledger_index();
        match stat_opt(&ids_path)? {
            None => self.ids_file = Tracked::default(),
            Some(m) => {
                let replaced = self.ids_file.id.is_some_and(|k| k != FileId::of(&m))
                    || m.len() < self.ids_file.offset;
                // A replaced id file (another rebuild) can only have lost ids
                // of records that are still in the ledger, so keep ours too.
                let from = if replaced { 0 } else { self.ids_file.offset };
                if replaced || m.len() > from {
                    let ids = &mut self.ids;
                    if let Some(t) = read_index_lines(&ids_path, from, |h| {
                        ids.insert(h);
                    })? {
                        self.ids_file = t;
                    }
                }
            }
        }
        let win_path = home.ledger_content_index();
        match stat_opt(&win_path)? {
            None => {
                self.order.clear();
                self.window_file = Tracked::default();
            }
            Some(m) => {
                let replaced = self.window_file.id.is_some_and(|k| k != FileId::of(&m))
                    || m.len() < self.window_file.offset;
                if replaced {
                    self.reload_window(home)?;
                } else if m.len() > self.window_file.offset {
                    let (content, order) = (&mut self.content, &mut self.order);
                    if let Some(t) = read_index_lines(&win_path, self.window_file.offset, |h| {
                        content.insert(h);
                        order.push_back(h);
                    })? {
                        self.window_file = t;
                    }
                    self.bound_order();
                }
            }
        }
        Ok(())
    }

    /// Keep the mirror bounded. Trimming to one more than the window does
    /// not change what the next write does: a mirror longer than the
    /// window is always rewritten to its last `CONTENT_WINDOW` entries.
    fn bound_order(&mut self) {
        if self.order.len() > 2 * CONTENT_WINDOW {
            let excess = self.order.len() - (CONTENT_WINDOW + 1);
            self.order.drain(..excess);
        }
    }

    /// Note that the ledger grew from `prev` to `new_len` by our own write.
    pub(crate) fn ledger_appended(&mut self, id: FileId, prev: u64, new_len: u64) {
        if !self.loaded {
            return;
        }
        let in_step = match self.ledger_file.id {
            Some(known) => known == id && self.ledger_file.offset == prev,
            None => prev == 0 && self.ledger_file.offset == 0,
        };
        if in_step {
            self.ledger_file = Tracked {
                id: Some(id),
                offset: new_len,
            };
        }
    }

    /// Append id hashes and fingerprints to the sidecars. Call with the
    /// `ledger-index` lock held.
    pub(crate) fn append_hashes(
        &mut self,
        home: &LedgerHome,
        ids: &[Hash16],
        fingerprints: &[Hash16],
    ) -> Result<()> {
        if ids.is_empty() && fingerprints.is_empty() {
            return Ok(());
        }
        self.sync_index_files(home)?;
        if !ids.is_empty() {
            let path = home.ledger_index();
            let (id, prev, len) = append_bytes(&path, &hash_lines(ids))?;
            if self.ids_file.id.is_none_or(|k| k == id) && self.ids_file.offset <= prev {
                self.ids_file = Tracked {
                    id: Some(id),
                    offset: len,
                };
            }
        }
        if !fingerprints.is_empty() {
            self.order.extend(fingerprints.iter().copied());
            let path = home.ledger_content_index();
            if self.order.len() > CONTENT_WINDOW {
                let excess = self.order.len() - CONTENT_WINDOW;
                self.order.drain(..excess);
                let body = hash_lines(self.order.iter());
                self.window_file = replace_file(&path, &body)?;
            } else {
                let (id, prev, len) = append_bytes(&path, &hash_lines(fingerprints))?;
                if self.window_file.id.is_none_or(|k| k == id) && self.window_file.offset <= prev {
                    self.window_file = Tracked {
                        id: Some(id),
                        offset: len,
                    };
                }
            }
        }
        self.pin_index_files(home);
        Ok(())
    }
}

/// What a full rebuild collects from the ledger: ids in first-seen order
/// and the first occurrence of each fingerprint.
#[derive(Default)]
pub(crate) struct Rebuilder {
    seen_ids: Hash16Set,
    pub(crate) ids: Vec<Hash16>,
    seen_content: Hash16Set,
    pub(crate) content: Vec<Hash16>,
    pub(crate) skipped: usize,
}

impl Rebuilder {
    pub(crate) fn feed(&mut self, line: &Value) {
        let Some(kind) = line_kind(line) else { return };
        const NULL: &Value = &Value::Null;
        let rec = line.get("record").unwrap_or(NULL);
        let id = match record_id(kind, rec) {
            None => return,
            Some(Ok(id)) => id,
            Some(Err(_)) => {
                self.skipped += 1;
                return;
            }
        };
        if self.seen_ids.insert(id) {
            self.ids.push(id);
        }
        if kind == Kind::Turn {
            match turn_fingerprint(rec) {
                Ok(fp) => {
                    if self.seen_content.insert(fp) {
                        self.content.push(fp);
                    }
                }
                Err(_) => self.skipped += 1,
            }
        }
    }

    /// Feed every record of the ledger between two offsets; returns the
    /// offset reached.
    pub(crate) fn scan(
        &mut self,
        path: &Path,
        from: u64,
        to: Option<u64>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64> {
        let mut f = File::open(path).ctx("open", path)?;
        let total = match to {
            Some(t) => t,
            None => f.metadata().ctx("stat", path)?.len(),
        };
        let mut next_report = from;
        if from > 0 {
            f.seek(SeekFrom::Start(from)).ctx("seek", path)?;
        }
        let src: Box<dyn Read> = match to {
            Some(to) => Box::new(f.take(to.saturating_sub(from))),
            None => Box::new(f),
        };
        let mut sc = LineScanner::new(src, from);
        let mut reached = from;
        while let Some(line) = sc.next_line().ctx("read", path)? {
            // With a bound, stop before an unterminated line: it may still be
            // being written, and the locked pass reads it again.
            if to.is_some() && !line.terminated {
                break;
            }
            if line.offset >= next_report {
                progress(line.offset, total);
                next_report = line.offset + (4 << 20);
            }
            if !line.oversized {
                for_each_logical(line.bytes, |p| {
                    if let Parsed::Value(v) = p {
                        self.feed(&v);
                    }
                });
            }
            reached = sc.position();
        }
        Ok(reached)
    }
}

/// `a\nb\n…\n` for hashes; empty for none.
pub(crate) fn hash_lines<'a>(hashes: impl IntoIterator<Item = &'a Hash16>) -> Vec<u8> {
    let mut out = Vec::new();
    for h in hashes {
        out.extend_from_slice(h.hex().as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lines_need_lowercase_hex_and_a_newline() {
        assert!(parse_index_line(b"0123456789abcdef").is_some());
        assert!(parse_index_line(b"  0123456789abcdef\r").is_some());
        assert!(parse_index_line(b"0123456789ABCDEF").is_none());
        assert!(parse_index_line(b"0123456789abcde").is_none());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.idx");
        std::fs::write(&p, "0123456789abcdef\n\ngarbage\nfedcba9876543210").unwrap();
        let mut got = Vec::new();
        let t = read_index_lines(&p, 0, |h| got.push(h)).unwrap().unwrap();
        assert_eq!(got, vec![Hash16(0x0123456789abcdef)]);
        assert_eq!(t.offset, 26);
    }

    #[test]
    fn a_first_load_learns_ids_from_the_ledger_tail_only() {
        let dir = tempfile::tempdir().unwrap();
        let home = LedgerHome::new(dir.path());
        let line = |m: &str| {
            format!(
                r#"{{"v":1,"kind":"compaction","record":{{"source":"x","sessionId":"s","ts":"{m}"}}}}"#
            )
        };
        let id = |m: &str| {
            crate::index::compaction_id(
                &crate::json::parse(&format!(r#"{{"source":"x","sessionId":"s","ts":"{m}"}}"#))
                    .unwrap(),
            )
            .unwrap()
        };
        let pad = "x".repeat(RECENT_TAIL_BYTES as usize);
        let body = format!("{}\n{}\n{}\n", line("old"), pad, line("new"));
        std::fs::write(home.ledger(), body).unwrap();
        let mut st = IndexState::default();
        st.sync(&home).unwrap();
        assert!(st.ids.contains(&id("new")));
        assert!(!st.ids.contains(&id("old")));
        assert_eq!(
            st.ledger_file.offset,
            std::fs::metadata(home.ledger()).unwrap().len()
        );
    }
}
