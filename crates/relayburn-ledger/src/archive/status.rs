//! Archive status and vacuum, as the reference reports them.

use std::path::PathBuf;

use rusqlite::types::ValueRef;

use crate::error::{Error, IoContext, Result};
use crate::home::LedgerHome;
use crate::json::{Object, Value};
use crate::lock::Locks;

use super::file_stat;
use super::read::{ArchiveReader, Freshness, Unavailable};
use super::schema::{open_archive, sql_err, ARCHIVE_VERSION};
use crate::home::lock_name;

/// Row counts of the main tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub sessions: u64,
    pub turns: u64,
    pub tool_calls: u64,
    pub tool_result_events: u64,
    pub compactions: u64,
}

/// A snapshot of the archive against the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveStatus {
    pub archive_path: PathBuf,
    pub exists: bool,
    pub archive_version: i64,
    pub ledger_offset_bytes: i64,
    pub ledger_mtime_ms: i64,
    pub ledger_size_bytes: u64,
    pub ledger_mtime_ms_current: i64,
    /// The cursor is at the ledger's end.
    pub up_to_date: bool,
    pub last_built_at: Option<String>,
    pub last_rebuild_at: Option<String>,
    pub row_counts: RowCounts,
    /// Turns per `attribution_fidelity` (`unknown` for NULL), in the
    /// order SQLite groups them.
    pub fidelity_histogram: Vec<(String, u64)>,
    /// Extension: why the archive cannot answer (other version, damaged,
    /// built from another ledger); `None` when it can or does not exist.
    pub problem: Option<String>,
}

impl ArchiveStatus {
    /// The reference's JSON shape.
    pub fn to_value(&self) -> Value {
        let n = |x: f64| Value::Number(x);
        let opt = |s: &Option<String>| s.as_deref().map_or(Value::Null, Value::str);
        let mut counts = Object::new();
        counts.insert("sessions", n(self.row_counts.sessions as f64));
        counts.insert("turns", n(self.row_counts.turns as f64));
        counts.insert("toolCalls", n(self.row_counts.tool_calls as f64));
        counts.insert(
            "toolResultEvents",
            n(self.row_counts.tool_result_events as f64),
        );
        counts.insert("compactions", n(self.row_counts.compactions as f64));
        let mut hist = Object::new();
        for (k, v) in &self.fidelity_histogram {
            hist.insert(k.as_str(), n(*v as f64));
        }
        let mut o = Object::new();
        o.insert(
            "archivePath",
            Value::from(self.archive_path.to_string_lossy().into_owned()),
        );
        o.insert("exists", Value::Bool(self.exists));
        o.insert("archiveVersion", n(self.archive_version as f64));
        o.insert("ledgerOffsetBytes", n(self.ledger_offset_bytes as f64));
        o.insert("ledgerMtimeMs", n(self.ledger_mtime_ms as f64));
        o.insert("ledgerSizeBytes", n(self.ledger_size_bytes as f64));
        o.insert(
            "ledgerMtimeMsCurrent",
            n(self.ledger_mtime_ms_current as f64),
        );
        o.insert("upToDate", Value::Bool(self.up_to_date));
        o.insert("lastBuiltAt", opt(&self.last_built_at));
        o.insert("lastRebuildAt", opt(&self.last_rebuild_at));
        o.insert("rowCounts", Value::Object(counts));
        o.insert("fidelityHistogram", Value::Object(hist));
        if let Some(p) = &self.problem {
            o.insert("problem", Value::str(p));
        }
        Value::Object(o)
    }
}

/// Status of the archive without taking the build lock (WAL gives a
/// consistent view while a build runs). Unlike the reference, reading the
/// status never creates, migrates or replaces the archive: one this
/// version cannot read is reported with its [`ArchiveStatus::problem`].
pub fn archive_status(home: &LedgerHome) -> Result<ArchiveStatus> {
    let path = home.archive();
    let (ledger_size, ledger_mtime) = file_stat(&home.ledger())?.unwrap_or((0, 0));
    let mut status = ArchiveStatus {
        archive_path: path.clone(),
        exists: false,
        archive_version: ARCHIVE_VERSION,
        ledger_offset_bytes: 0,
        ledger_mtime_ms: 0,
        ledger_size_bytes: ledger_size,
        ledger_mtime_ms_current: ledger_mtime,
        up_to_date: false,
        last_built_at: None,
        last_rebuild_at: None,
        row_counts: RowCounts::default(),
        fidelity_histogram: Vec::new(),
        problem: None,
    };
    let reader = match ArchiveReader::open(home) {
        Ok(r) => r,
        Err(Error::ArchiveUnavailable { why, .. }) => {
            if why != Unavailable::Missing {
                status.exists = true;
                if let Unavailable::Newer { found } | Unavailable::Older { found } = why {
                    status.archive_version = found;
                }
                status.problem = Some(why.to_string());
            }
            return Ok(status);
        }
        Err(e) => return Err(e),
    };
    let st = &reader.state;
    status.exists = true;
    status.archive_version = st.version;
    status.ledger_offset_bytes = st.offset as i64;
    status.ledger_mtime_ms = st.mtime_ms;
    status.last_built_at = st.last_built_at.clone();
    status.last_rebuild_at = st.last_rebuild_at.clone();
    match reader.freshness(home)? {
        Freshness::UpToDate => status.up_to_date = true,
        Freshness::Behind { .. } => {}
        Freshness::Replaced(why) => status.problem = Some(why),
    }
    let conn = &reader.conn;
    let e = reader.sql_err();
    let count = |table: &str| -> Result<u64> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(&e)
    };
    // Grouping the column itself walks its index instead of sorting every
    // turn; `attribution_fidelity` has TEXT affinity, so the groups are
    // NULL and texts, and NULL joins any 'unknown' text as the reference's
    // COALESCE does, in byte order. An archive of an older shape has no
    // such column: no histogram, and the turns are counted.
    let mut groups: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    let turns = if reader.has_column("turns", "attribution_fidelity")? {
        let mut stmt = conn
            .prepare(
                "SELECT attribution_fidelity, COUNT(*) FROM turns GROUP BY attribution_fidelity",
            )
            .map_err(&e)?;
        let mut rows = stmt.query([]).map_err(&e)?;
        let mut turns = 0;
        while let Some(r) = rows.next().map_err(&e)? {
            let k = match r.get_ref(0).map_err(&e)? {
                ValueRef::Null => b"unknown".to_vec(),
                ValueRef::Text(t) | ValueRef::Blob(t) => t.to_vec(),
                ValueRef::Integer(i) => i.to_string().into_bytes(),
                ValueRef::Real(f) => f.to_string().into_bytes(),
            };
            let n = r.get::<_, i64>(1).map_err(&e)? as u64;
            turns += n;
            *groups.entry(k).or_default() += n;
        }
        turns
    } else {
        count("turns")?
    };
    status.fidelity_histogram = groups
        .into_iter()
        .map(|(k, n)| (String::from_utf8_lossy(&k).into_owned(), n))
        .collect();
    status.row_counts = RowCounts {
        sessions: count("sessions")?,
        turns,
        tool_calls: count("tool_calls")?,
        tool_result_events: count("tool_result_events")?,
        compactions: count("compactions")?,
    };
    Ok(status)
}

/// What a vacuum reclaimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VacuumResult {
    pub archive_path: PathBuf,
    /// False when there was no archive (nothing is created then).
    pub existed: bool,
    pub before_bytes: u64,
    pub after_bytes: u64,
    /// `before_bytes - after_bytes` (negative if the file grew).
    pub reclaimed_bytes: i64,
}

impl VacuumResult {
    /// The reference's JSON shape.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert(
            "archivePath",
            Value::from(self.archive_path.to_string_lossy().into_owned()),
        );
        o.insert("existed", Value::Bool(self.existed));
        o.insert("beforeBytes", Value::Number(self.before_bytes as f64));
        o.insert("afterBytes", Value::Number(self.after_bytes as f64));
        o.insert("reclaimedBytes", Value::Number(self.reclaimed_bytes as f64));
        Value::Object(o)
    }
}

/// Fold the WAL in, `VACUUM`, fold again, and measure the main file
/// before and after, under lock `archive`.
pub fn vacuum_archive(home: &LedgerHome, locks: &Locks) -> Result<VacuumResult> {
    locks.with_lock(lock_name::ARCHIVE, || {
        let path = home.archive();
        if file_stat(&path)?.is_none() {
            return Ok(VacuumResult {
                archive_path: path,
                existed: false,
                before_bytes: 0,
                after_bytes: 0,
                reclaimed_bytes: 0,
            });
        }
        let conn = open_archive(&path)?;
        let db_path = path.clone();
        let e = sql_err(&db_path);
        let checkpoint = || {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(&e)
        };
        checkpoint()?;
        let before = std::fs::metadata(&path).ctx("stat", &path)?.len();
        conn.execute_batch("VACUUM").map_err(&e)?;
        checkpoint()?;
        let after = std::fs::metadata(&path).ctx("stat", &path)?.len();
        drop(conn);
        Ok(VacuumResult {
            archive_path: path,
            existed: true,
            before_bytes: before,
            after_bytes: after,
            reclaimed_bytes: before as i64 - after as i64,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fidelity_histogram_joins_null_with_unknown_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = LedgerHome::new(dir.path());
        let conn = open_archive(&home.archive()).unwrap();
        // NULL twice and the text 'unknown' once make one group of 3, as
        // COALESCE(attribution_fidelity, 'unknown') groups them.
        conn.execute_batch(
            "INSERT INTO turns (source, session_id, message_id, turn_index, ts, model,
               attribution_fidelity)
             VALUES ('a','s','m1',0,'t','x',NULL), ('a','s','m2',0,'t','x','unknown'),
                    ('a','s','m3',0,'t','x','full'), ('a','s','m4',0,'t','x',NULL),
                    ('a','s','m5',0,'t','x','Partial'), ('a','s','m6',0,'t','x','full');",
        )
        .unwrap();
        drop(conn);
        let s = archive_status(&home).unwrap();
        let hist: Vec<(&str, u64)> = s
            .fidelity_histogram
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(hist, [("Partial", 1), ("full", 2), ("unknown", 3)]);
        assert_eq!(s.row_counts.turns, 6);
    }
}
