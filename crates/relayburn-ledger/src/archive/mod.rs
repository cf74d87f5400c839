//! The SQLite archive: a derived, rebuildable read model of the ledger
//! (SPEC §6), compatible with the reference's `archive.sqlite`.
//!
//! * [`build_archive`] applies the ledger tail past the stored cursor;
//! * [`rebuild_archive`] builds a new archive from byte 0 beside the old
//!   one and swaps it in, so readers and crashes never see a half-built
//!   archive;
//! * [`archive_status`], [`vacuum_archive`] and the queries of
//!   [`query`](self::query) behave as the reference's.
//!
//! Extension: a record the reference cannot archive (its build would
//! throw, e.g. a turn without `usage`) is skipped and reported in
//! [`BuildResult::skipped`] with its byte offset; the rest of the build
//! goes on.

mod fingerprint;
mod fold;
mod pipeline;
pub mod query;
mod read;
mod refold;
mod rows;
pub mod schema;
mod sessions;
pub mod sql;
mod status;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::Connection;

use crate::error::{Error, IoContext, Result};
use crate::home::{lock_name, LedgerHome};
use crate::json::{Object, Value};
use crate::lock::Locks;
use crate::records::Kind;

pub use fingerprint::Identity;
pub use query::{archive_available, query_all_from_archive, query_turns_from_archive};
pub use read::{
    plan_turn_read, ArchiveReader, Freshness, StoredState, TurnPlan, TurnSource, Unavailable,
};
pub use schema::{open_archive, ARCHIVE_VERSION};
pub use status::{archive_status, vacuum_archive, ArchiveStatus, RowCounts, VacuumResult};

use pipeline::{apply_range, Mode};
use schema::sql_err;
use sql::{BUILD_CACHE, BULK_PRAGMAS};

/// Prefix of the file a rebuild writes before swapping it in.
const REBUILD_PREFIX: &str = "archive.sqlite.rebuild-";

/// How many skipped records a result lists (the count is always exact).
pub const MAX_LISTED_SKIPS: usize = 100;

/// A record left out of the archive, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRecord {
    /// Byte offset of its line in the ledger.
    pub offset: u64,
    pub kind: Kind,
    pub reason: String,
}

/// What a build did. Serialises with the reference's field names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildResult {
    /// Bytes of the lines parsed in this build (blank and malformed lines
    /// excluded, as in the reference).
    pub scanned_bytes: u64,
    /// Turn lines applied (a re-appended turn counts again).
    pub turns_applied: u64,
    /// Distinct session ids touched, whatever their source.
    pub sessions_touched: u64,
    pub stamps_applied: u64,
    pub compactions_applied: u64,
    pub tool_result_events_applied: u64,
    /// True only for a full rebuild.
    pub rebuilt_from_zero: bool,
    /// Extension: how many records were skipped as unarchivable.
    pub skipped_count: u64,
    /// Extension: the first [`MAX_LISTED_SKIPS`] of them, by offset.
    pub skipped: Vec<SkippedRecord>,
    /// Extension: the `archive_version` of an older archive this build
    /// replaced.
    pub replaced_version: Option<i64>,
    /// Extension: why the build started from zero although it was not a
    /// full rebuild (the ledger was truncated or replaced).
    pub restarted: Option<String>,
    /// Extension: how many lines were not JSON (readers skip them too).
    pub malformed_count: u64,
    /// Extension: the first [`MAX_LISTED_SKIPS`] of them: (offset, why).
    pub malformed: Vec<(u64, String)>,
}

impl BuildResult {
    /// The result as the reference's JSON object; `skippedRecords` and
    /// `skipped` appear only when something was skipped.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        let n = |x: u64| Value::Number(x as f64);
        o.insert("scannedBytes", n(self.scanned_bytes));
        o.insert("turnsApplied", n(self.turns_applied));
        o.insert("sessionsTouched", n(self.sessions_touched));
        o.insert("stampsApplied", n(self.stamps_applied));
        o.insert("compactionsApplied", n(self.compactions_applied));
        o.insert(
            "toolResultEventsApplied",
            n(self.tool_result_events_applied),
        );
        o.insert("rebuiltFromZero", Value::Bool(self.rebuilt_from_zero));
        if self.skipped_count > 0 {
            o.insert("skippedRecords", n(self.skipped_count));
            let list = self
                .skipped
                .iter()
                .map(|s| {
                    let mut e = Object::new();
                    e.insert("offset", n(s.offset));
                    e.insert("kind", Value::str(s.kind.as_str()));
                    e.insert("reason", Value::str(&s.reason));
                    Value::Object(e)
                })
                .collect();
            o.insert("skipped", Value::Array(list));
        }
        Value::Object(o)
    }

    /// [`Self::to_value`] with this implementation's other findings, for
    /// a user rather than for comparison with the reference.
    pub fn report_value(&self) -> Value {
        let mut v = self.to_value();
        if let Some(o) = v.as_object_mut() {
            if let Some(ver) = self.replaced_version {
                o.insert("replacedArchiveVersion", Value::Number(ver as f64));
            }
            if let Some(why) = &self.restarted {
                o.insert("restartedFromZero", Value::str(why));
            }
            if self.malformed_count == 0 {
                return v;
            }
            o.insert("malformedLines", Value::Number(self.malformed_count as f64));
            let list = self
                .malformed
                .iter()
                .map(|(offset, why)| {
                    let mut e = Object::new();
                    e.insert("offset", Value::Number(*offset as f64));
                    e.insert("reason", Value::str(why));
                    Value::Object(e)
                })
                .collect();
            o.insert("malformed", Value::Array(list));
        }
        v
    }
}

use crate::time::now_iso;

/// Size and `Math.floor(mtimeMs)` of a regular file, if there is one.
pub(crate) fn file_stat(path: &Path) -> Result<Option<(u64, i64)>> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            Ok(Some((m.len(), mtime)))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn finish(applied: pipeline::Applied, rebuilt: bool) -> BuildResult {
    let skipped_count = applied.skipped.len() as u64;
    let mut skipped = applied.skipped;
    skipped.truncate(MAX_LISTED_SKIPS);
    let malformed_count = applied.malformed.len() as u64;
    let mut malformed = applied.malformed;
    malformed.truncate(MAX_LISTED_SKIPS);
    BuildResult {
        scanned_bytes: applied.scanned_bytes,
        turns_applied: applied.turns,
        sessions_touched: applied.sessions_touched,
        stamps_applied: applied.stamps,
        compactions_applied: applied.compactions,
        tool_result_events_applied: applied.tool_result_events,
        rebuilt_from_zero: rebuilt,
        skipped_count,
        skipped,
        replaced_version: None,
        restarted: None,
        malformed_count,
        malformed,
    }
}

/// Run `f` inside one transaction, rolling back when it fails.
fn in_transaction<T>(
    conn: &mut Connection,
    path: &Path,
    begin: &str,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    conn.execute_batch(begin).map_err(sql_err(path))?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("COMMIT").map_err(sql_err(path))?;
            Ok(v)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Apply the ledger past the archive's cursor (creating the archive when
/// missing), under lock `archive`.
pub fn build_archive(home: &LedgerHome, locks: &Locks) -> Result<BuildResult> {
    build_archive_with_progress(home, locks, &no_progress)
}

/// Receives (bytes of the stretch parsed so far, bytes of the stretch),
/// every few megabytes and once at the end, so a caller can show a rate
/// and an estimate of the time left.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

fn no_progress(_done: u64, _total: u64) {}

/// [`build_archive`], reporting progress through `progress`.
pub fn build_archive_with_progress(
    home: &LedgerHome,
    locks: &Locks,
    progress: Progress<'_>,
) -> Result<BuildResult> {
    locks.with_lock(lock_name::ARCHIVE, || build_locked(home, locks, progress))
}

fn build_locked(home: &LedgerHome, locks: &Locks, progress: Progress<'_>) -> Result<BuildResult> {
    let path = home.archive();
    let ledger = home.ledger();
    remove_stale_rebuilds(home.root());
    let mut trace = pipeline::Trace::new();
    let (mut conn, replaced_version) = schema::open_for_build(&path)?;
    trace.mark("open");
    let e = sql_err(&path);
    // A tail touches index pages all over a big archive: keep them cached.
    conn.execute_batch(BUILD_CACHE).map_err(&e)?;
    let now = now_iso();
    let Some((size, mtime)) = file_stat(&ledger)? else {
        conn.execute(
            "UPDATE archive_state SET last_built_at = ?1 WHERE id = 1",
            [&now],
        )
        .map_err(&e)?;
        return Ok(BuildResult {
            replaced_version,
            ..BuildResult::default()
        });
    };
    let (applied, restarted) = in_transaction(&mut conn, &path, "BEGIN IMMEDIATE", |conn| {
        let mut start: u64 = conn
            .query_row(
                "SELECT ledger_offset_bytes FROM archive_state WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&e)?
            .max(0) as u64;
        let stored = fingerprint::stored(conn).map_err(&e)?;
        let restarted = if size < start {
            Some(format!(
                "ledger.jsonl is {size} bytes, shorter than the archive's cursor {start}"
            ))
        } else {
            fingerprint::mismatch(&ledger, start, stored)?
        };
        if restarted.is_some() {
            // The ledger was rewritten or replaced: the cursor means
            // nothing any more.
            conn.execute_batch(
                "DELETE FROM sessions; DELETE FROM turns; DELETE FROM tool_calls;
                 DELETE FROM tool_result_events; DELETE FROM stamps; DELETE FROM compactions;
                 UPDATE archive_state SET ledger_offset_bytes = 0, ledger_mtime_ms = 0 WHERE id = 1;",
            )
            .map_err(&e)?;
            start = 0;
        }
        let applied = apply_range(conn, &path, &ledger, start, Mode::Incremental, progress)?;
        conn.execute(
            "UPDATE archive_state SET ledger_offset_bytes = ?1, ledger_mtime_ms = ?2,
             last_built_at = ?3 WHERE id = 1",
            rusqlite::params![applied.safe_offset as i64, mtime, now],
        )
        .map_err(&e)?;
        let identity = match stored {
            // Already covers all it can; re-reading it is wasted work.
            Some(id) if restarted.is_none() && u64::from(id.len) >= fingerprint::PREFIX => Some(id),
            _ => fingerprint::compute(&ledger, applied.safe_offset)?,
        };
        fingerprint::record(conn, identity).map_err(&e)?;
        // Commit only while the build is still the only one.
        locks.ensure_held(lock_name::ARCHIVE)?;
        Ok((applied, restarted))
    })?;
    trace.mark("commit");
    drop(conn);
    trace.mark("close");
    Ok(BuildResult {
        replaced_version,
        restarted,
        ..finish(applied, false)
    })
}

/// Build a new archive from the whole ledger and swap it in, under lock
/// `archive`. The old archive stays complete and readable until the swap.
pub fn rebuild_archive(home: &LedgerHome, locks: &Locks) -> Result<BuildResult> {
    rebuild_archive_with_progress(home, locks, &no_progress)
}

/// [`rebuild_archive`], reporting progress through `progress`.
pub fn rebuild_archive_with_progress(
    home: &LedgerHome,
    locks: &Locks,
    progress: Progress<'_>,
) -> Result<BuildResult> {
    locks.with_lock(lock_name::ARCHIVE, || rebuild_locked(home, locks, progress))
}

fn rebuild_locked(home: &LedgerHome, locks: &Locks, progress: Progress<'_>) -> Result<BuildResult> {
    let root = home.root();
    std::fs::create_dir_all(root).ctx("create directory", root)?;
    remove_stale_rebuilds(root);
    let path = home.archive();
    let tmp = root.join(format!("{REBUILD_PREFIX}{}.tmp", std::process::id()));
    schema::remove_database_files(&tmp)?;
    let built = build_aside(home, &tmp, progress)
        // The last moment to stop: after the swap the new archive stands.
        .and_then(|r| crate::interrupt::check().map(|()| r))
        // Swap in only while the build is still the only one.
        .and_then(|r| locks.ensure_held(lock_name::ARCHIVE).map(|()| r))
        .and_then(|r| swap_in(&tmp, &path).map(|()| r));
    match built {
        Ok(result) => Ok(result),
        Err(err) => {
            let _ = schema::remove_database_files(&tmp);
            Err(err)
        }
    }
}

fn build_aside(home: &LedgerHome, tmp: &Path, progress: Progress<'_>) -> Result<BuildResult> {
    let ledger = home.ledger();
    let mut conn = Connection::open(tmp).map_err(sql_err(tmp))?;
    let e = sql_err(tmp);
    conn.execute_batch(BULK_PRAGMAS).map_err(&e)?;
    // Secondary indexes are built after the load, by sorting, which costs
    // less than keeping them up to date row by row.
    schema::ensure_schema(&conn, tmp, false)?;
    schema::insert_initial_state(&conn, tmp)?;
    let now = now_iso();
    let stat = file_stat(&ledger)?;
    let applied = in_transaction(&mut conn, tmp, "BEGIN", |conn| match stat {
        None => {
            schema::create_secondary_indexes(conn, tmp)?;
            schema::create_fidelity_index(conn, tmp)?;
            conn.execute(
                "UPDATE archive_state SET last_built_at = ?1, last_rebuild_at = ?1 WHERE id = 1",
                [&now],
            )
            .map_err(&e)?;
            Ok(pipeline::Applied::default())
        }
        Some((_, mtime)) => {
            let applied = apply_range(conn, tmp, &ledger, 0, Mode::Fresh, progress)?;
            conn.execute(
                "UPDATE archive_state SET ledger_offset_bytes = ?1, ledger_mtime_ms = ?2,
                 last_built_at = ?3, last_rebuild_at = ?3 WHERE id = 1",
                rusqlite::params![applied.safe_offset as i64, mtime, now],
            )
            .map_err(&e)?;
            fingerprint::record(conn, fingerprint::compute(&ledger, applied.safe_offset)?)
                .map_err(&e)?;
            Ok(applied)
        }
    })?;
    let mut trace = pipeline::Trace::new();
    trace.mark("commit");
    // The swapped-in file must be a WAL database like the reference's.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(&e)?;
    conn.close().map_err(|(_, err)| sql_err(tmp)(err))?;
    trace.mark("close");
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .ctx("sync", tmp)?;
    trace.mark("sync");
    Ok(finish(applied, true))
}

/// Replace `path` by the finished `tmp`. The old archive's WAL is folded
/// in and removed first, so the new file can never be read through a
/// stale WAL or shared-memory index.
fn swap_in(tmp: &Path, path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        // An empty directory in its place goes; anything in it might be
        // someone's, so a non-empty one is left and named.
        std::fs::remove_dir(path).map_err(|e| Error::ArchiveUnavailable {
            path: path.to_path_buf(),
            why: Unavailable::Damaged(format!(
                "a directory is in its place and cannot be removed ({e}); move it away"
            )),
        })?;
    }
    if path.is_file() {
        if let Ok(old) = Connection::open(path) {
            let _ = old.busy_timeout(std::time::Duration::from_secs(2));
            let _ = old.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            let _ = old.close();
        }
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = with_suffix(path, suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io("remove", &p, err)),
        }
    }
    std::fs::rename(tmp, path).ctx("rename", tmp)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; not all filesystems allow it.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Files a full rebuild writes aside (with their journal files), each with
/// whether the rebuild that writes it is still running.
pub fn rebuild_leftovers(root: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(REBUILD_PREFIX) else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        // The lock's liveness rule, for a process of this host.
        let alive = pid.is_some_and(|p| {
            p != std::process::id()
                && crate::lock::local_liveness(p, None) == crate::lock::Liveness::Alive
        });
        out.push((entry.path(), alive));
    }
    out.sort();
    out
}

/// Remove files left by rebuilds whose process is gone (a crash or a
/// kill); a rebuild still running elsewhere keeps its file.
pub(crate) fn remove_stale_rebuilds(root: &Path) {
    for (path, alive) in rebuild_leftovers(root) {
        if !alive {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl crate::ledger::Ledger {
    /// Apply the ledger tail to `archive.sqlite` (incremental build).
    pub fn build_archive(&self) -> Result<BuildResult> {
        build_archive(self.home(), self.locks())
    }

    /// Rebuild `archive.sqlite` from byte 0, aside, then swap it in.
    pub fn rebuild_archive(&self) -> Result<BuildResult> {
        rebuild_archive(self.home(), self.locks())
    }

    /// [`Self::build_archive`], reporting progress through `progress`.
    pub fn build_archive_with_progress(&self, progress: Progress<'_>) -> Result<BuildResult> {
        build_archive_with_progress(self.home(), self.locks(), progress)
    }

    /// [`Self::rebuild_archive`], reporting progress through `progress`.
    pub fn rebuild_archive_with_progress(&self, progress: Progress<'_>) -> Result<BuildResult> {
        rebuild_archive_with_progress(self.home(), self.locks(), progress)
    }

    /// What the archive holds and how far it is behind the ledger.
    pub fn archive_status(&self) -> Result<ArchiveStatus> {
        archive_status(self.home())
    }

    /// Reclaim unused pages (serialised with builds).
    pub fn vacuum_archive(&self) -> Result<VacuumResult> {
        vacuum_archive(self.home(), self.locks())
    }

    /// Enriched turns from the archive, as the ledger query returns them
    /// (the reference's `queryAllFromArchive`: fidelity synthesised from
    /// the stored columns).
    pub fn query_turns_from_archive(&self, q: &crate::query::Query) -> Result<Vec<Value>> {
        query_all_from_archive(self.home(), q)
    }

    /// The archive opened read-only, or why it cannot answer.
    pub fn archive_reader(&self) -> Result<ArchiveReader> {
        ArchiveReader::open(self.home())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_the_stretch_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let home = LedgerHome::new(dir.path());
        // A 7-byte record and a blank line, twice: 18 bytes of stretch,
        // reported at its start and once done.
        let first = "{\"v\":2}\n\n";
        assert_eq!(first.len(), 9);
        let text = format!("{first}{first}");
        std::fs::create_dir_all(home.root()).unwrap();
        std::fs::write(home.ledger(), text).unwrap();
        let locks = Locks::new(home.clone());
        for rebuild in [true, false] {
            let seen = std::sync::Mutex::new(Vec::new());
            let record = |d: u64, t: u64| seen.lock().unwrap().push((d, t));
            if rebuild {
                rebuild_archive_with_progress(&home, &locks, &record).unwrap();
                assert_eq!(*seen.lock().unwrap(), vec![(0, 18), (18, 18)]);
            } else {
                // The cursor stops after the last record, so the trailing
                // blank line is the whole stretch.
                build_archive_with_progress(&home, &locks, &record).unwrap();
                assert_eq!(*seen.lock().unwrap(), vec![(0, 1), (1, 1)]);
            }
        }
    }
}
