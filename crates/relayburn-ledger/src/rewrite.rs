//! In-place rewrite of turn records (the primitive behind reclassification).
//!
//! The ledger is streamed under the `ledger` lock into `ledger.jsonl.tmp`,
//! which is then renamed over it. Appenders wait on the same lock, so no
//! line appended meanwhile can land in the file being replaced. Every line
//! the caller does not change is copied byte for byte.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fsio::{tmp_path, FileId, Tracked};
use crate::home::lock_name::LEDGER as LEDGER_LOCK;
use crate::json::{Object, Value};
use crate::jsonl::{parse_line, LineScanner, Parsed};
use crate::ledger::Ledger;
use crate::records::{line_kind, Kind};

/// What a rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// Physical lines read.
    pub lines: u64,
    /// Turn lines offered to the callback.
    pub turns: u64,
    /// Turn lines the callback changed (and that were re-serialised).
    pub changed: u64,
}

/// How many sessions' content is kept in memory while rewriting.
const CONTENT_CACHE: usize = 8;

thread_local! {
    /// Ledgers this thread is rewriting. The `ledger` lock is re-entrant,
    /// so without this an append from inside the callback would go to the
    /// file about to be replaced, and be lost.
    static REWRITING: RefCell<HashSet<PathBuf>> = RefCell::new(HashSet::new());
}

/// Refuse to append to a ledger this thread is rewriting.
pub(crate) fn ensure_not_rewriting(ledger: &Path) -> Result<()> {
    if REWRITING.with(|r| r.borrow().contains(ledger)) {
        return Err(Error::invalid(
            "ledger",
            format!("cannot append to {} while rewriting it", ledger.display()),
        ));
    }
    Ok(())
}

/// Marks a ledger as being rewritten by this thread until dropped.
struct RewriteGuard(PathBuf);

impl RewriteGuard {
    fn new(path: &Path) -> RewriteGuard {
        REWRITING.with(|r| r.borrow_mut().insert(path.to_path_buf()));
        RewriteGuard(path.to_path_buf())
    }
}

impl Drop for RewriteGuard {
    fn drop(&mut self) {
        REWRITING.with(|r| r.borrow_mut().remove(&self.0));
    }
}

impl Ledger {
    /// Let `f` change turn records in place.
    ///
    /// `f` receives each turn record (in file order) and the content
    /// records of its session, and returns whether it changed the record.
    /// Only changed turns are re-serialised; blank, malformed, non-turn and
    /// unchanged lines are copied byte for byte, and a missing final
    /// newline stays missing. When nothing changed the ledger is left
    /// untouched. An error from `f` aborts the rewrite and leaves the
    /// ledger as it was. `f` runs with the `ledger` lock held by this
    /// thread: it may read, but an append to this ledger from inside it is
    /// refused. A callback that changes `source`, `sessionId` or
    /// `messageId` leaves stale ids in `ledger.idx`; rebuild the index
    /// then.
    pub fn rewrite_turns(
        &self,
        mut f: impl FnMut(&mut Object, &[Value]) -> Result<bool>,
    ) -> Result<RewriteReport> {
        let path = self.home().ledger();
        let mut report = RewriteReport::default();
        self.with_lock(LEDGER_LOCK, || {
            let mut sc = match LineScanner::open_at(&path, 0) {
                Ok(sc) => sc,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("open", &path, e)),
            };
            let before = std::fs::metadata(&path).ctx("stat", &path)?;
            // Catch up first so the dedup state can follow the new file. The
            // state is not held while `f` runs, so `f` may use this handle.
            let caught_up = {
                let mut st = self.index_state();
                if st.loaded {
                    st.sync(self.home())?;
                }
                st.loaded.then_some(st.ledger_file)
            };
            let _guard = RewriteGuard::new(&path);
            let tmp = tmp_path(&path);
            let file = File::create(&tmp).ctx("create", &tmp)?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            let mut cache: VecDeque<(String, Vec<Value>)> = VecDeque::new();
            let result = (|| -> Result<()> {
                while let Some(line) = sc.next_line().ctx("read", &path)? {
                    report.lines += 1;
                    let terminated = line.terminated;
                    let mut replaced: Option<String> = None;
                    // A lone `\r` makes several readline records of one
                    // physical line; such lines are never rewritten.
                    if !line.oversized && !has_inner_cr(line.bytes) {
                        if let Parsed::Value(mut v) = parse_line(line.bytes) {
                            if line_kind(&v) == Some(Kind::Turn) {
                                if let Some(Value::Object(rec)) =
                                    v.as_object_mut().and_then(|o| o.get_mut("record"))
                                {
                                    report.turns += 1;
                                    let sid = rec
                                        .get("sessionId")
                                        .and_then(Value::as_str)
                                        .unwrap_or("")
                                        .to_string();
                                    let content = self.cached_content(&mut cache, &sid);
                                    if f(rec, content)? {
                                        report.changed += 1;
                                        replaced = Some(v.to_json());
                                    }
                                }
                            }
                        }
                    }
                    let w = match &replaced {
                        Some(s) => out.write_all(s.as_bytes()),
                        None => out.write_all(line.bytes),
                    };
                    w.ctx("write", &tmp)?;
                    if terminated {
                        out.write_all(b"\n").ctx("write", &tmp)?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                drop(out);
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            if report.changed == 0 {
                drop(out);
                let _ = std::fs::remove_file(&tmp);
                return Ok(());
            }
            let file = out
                .into_inner()
                .map_err(|e| Error::io("write", &tmp, e.into_error()))?;
            file.sync_all().ctx("sync", &tmp)?;
            let meta = file.metadata().ctx("stat", &tmp)?;
            drop(file);
            // Keep the original's permissions.
            let _ = std::fs::set_permissions(&tmp, before.permissions());
            std::fs::rename(&tmp, &path).ctx("rename into place", &path)?;
            let mut st = self.index_state();
            if st.loaded && caught_up == Some(st.ledger_file) {
                st.ledger_file = Tracked {
                    id: Some(FileId::of(&meta)),
                    offset: meta.len(),
                };
            }
            Ok(())
        })?;
        Ok(report)
    }

    /// A session's content from a small most-recently-used cache.
    fn cached_content<'c>(
        &self,
        cache: &'c mut VecDeque<(String, Vec<Value>)>,
        sid: &str,
    ) -> &'c [Value] {
        if let Some(i) = cache.iter().position(|(k, _)| k == sid) {
            let hit = cache.remove(i).unwrap_or_default();
            cache.push_front(hit);
        } else {
            // Unreadable or unsafe: the turn is offered with no content.
            let recs = if sid.is_empty() {
                Vec::new()
            } else {
                self.read_content(sid, None).unwrap_or_default()
            };
            cache.push_front((sid.to_string(), recs));
            cache.truncate(CONTENT_CACHE);
        }
        cache.front().map(|(_, v)| v.as_slice()).unwrap_or(&[])
    }
}

/// A `\r` anywhere but at the very end (where readline strips it).
fn has_inner_cr(bytes: &[u8]) -> bool {
    let inner = match bytes.last() {
        Some(b'\r') => &bytes[..bytes.len() - 1],
        _ => bytes,
    };
    inner.contains(&b'\r')
}
