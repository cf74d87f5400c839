//! Moving a home's data from one storage backend to another
//! (`burn state copy`): every record, stamp and content record of the
//! source is written to the destination through its own writers, in the
//! source's order, and the destination is then checked to hold them all.
//!
//! The source is only read. The copy is idempotent and so resumable:
//! records dedup on their id hashes, content on its line or fingerprint,
//! and a stamp is skipped while the destination already holds as many
//! equal stamps (`ts`, selector, enrichment) as the source has so far.

use std::collections::HashMap;

use super::Store;
use crate::error::Result;
use crate::index::{record_id, Hash16Set};
use crate::json::Value;
use crate::records::{line_kind, obj, Kind};

/// Records per append call: large batches keep turns written together
/// in the source together, so none is taken for another's re-emission.
const BATCH: usize = 2_000;

/// How many refusal reasons a report keeps (all are counted).
const MAX_REASONS: usize = 20;

/// The record kinds, in report order.
const KINDS: [Kind; 5] = [
    Kind::Turn,
    Kind::Compaction,
    Kind::Relationship,
    Kind::ToolResultEvent,
    Kind::UserTurn,
];

/// What [`copy`] did and what the count check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Per record kind, in [`KINDS`] order: `(read, added)`.
    pub records: Vec<(Kind, u64, u64)>,
    pub stamps_read: u64,
    pub stamps_added: u64,
    pub content_read: u64,
    pub content_added: u64,
    /// Content records the destination's writer skips (no or an unsafe
    /// session id, not an object).
    pub content_skipped: u64,
    /// Records the destination's writer refused, and the first reasons.
    pub refused: u64,
    pub refused_reasons: Vec<String>,
    /// The count check: what of the source the destination lacks after
    /// the copy, as `(what, count)`; empty when everything arrived.
    pub missing: Vec<(String, u64)>,
}

impl CopyReport {
    /// Whether the destination holds everything the source holds.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }

    pub fn to_value(&self) -> Value {
        let n = |x: u64| Value::Number(x as f64);
        let records = self
            .records
            .iter()
            .map(|(k, read, added)| {
                obj([
                    ("kind", Value::str(k.as_str())),
                    ("read", n(*read)),
                    ("added", n(*added)),
                ])
            })
            .collect();
        let missing = self
            .missing
            .iter()
            .map(|(what, c)| obj([("what", Value::str(what)), ("count", n(*c))]))
            .collect();
        obj([
            ("records", Value::Array(records)),
            ("stampsRead", n(self.stamps_read)),
            ("stampsAdded", n(self.stamps_added)),
            ("contentRead", n(self.content_read)),
            ("contentAdded", n(self.content_added)),
            ("contentSkipped", n(self.content_skipped)),
            ("refused", n(self.refused)),
            (
                "refusedReasons",
                Value::Array(self.refused_reasons.iter().map(|r| Value::str(r)).collect()),
            ),
            ("missing", Value::Array(missing)),
            ("complete", Value::Bool(self.is_complete())),
        ])
    }
}

/// A stamp's identity for the multiset comparison.
fn stamp_key(line: &Value) -> String {
    let part = |k: &str| line.get(k).map_or_else(String::new, Value::to_json);
    format!(
        "{}\u{0}{}\u{0}{}",
        part("ts"),
        part("selector"),
        part("enrichment")
    )
}

/// Every stamp of a store, counted by identity.
fn stamp_counts(s: &dyn Store) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for line in s.entries()? {
        let line = line?;
        if line_kind(&line) == Some(Kind::Stamp) {
            *out.entry(stamp_key(&line)).or_default() += 1;
        }
    }
    Ok(out)
}

/// The id hashes of every record of a store, per kind.
fn id_sets(s: &dyn Store) -> Result<HashMap<Kind, Hash16Set>> {
    let mut out: HashMap<Kind, Hash16Set> = HashMap::new();
    for line in s.entries()? {
        let line = line?;
        let Some(kind) = line_kind(&line).filter(|k| *k != Kind::Stamp) else {
            continue;
        };
        if let Some(Ok(id)) = line.get("record").and_then(|r| record_id(kind, r)) {
            out.entry(kind).or_default().insert(id);
        }
    }
    Ok(out)
}

struct Copier<'a> {
    to: &'a dyn Store,
    report: CopyReport,
    pending: Option<(Kind, Vec<Value>)>,
}

impl Copier<'_> {
    fn count(&mut self, kind: Kind, read: u64, added: u64) {
        if let Some(e) = self.report.records.iter_mut().find(|e| e.0 == kind) {
            e.1 += read;
            e.2 += added;
        }
    }

    fn flush(&mut self) -> Result<()> {
        let Some((kind, batch)) = self.pending.take() else {
            return Ok(());
        };
        let read = batch.len() as u64;
        match self.to.append_records(kind, batch.clone()) {
            Ok(added) => self.count(kind, read, added as u64),
            // One bad record fails its batch: write the rest one by one,
            // counting what the destination refuses.
            Err(_) => {
                self.count(kind, read, 0);
                for r in batch {
                    match self.to.append_records(kind, vec![r]) {
                        Ok(added) => self.count(kind, 0, added as u64),
                        Err(e) => {
                            self.report.refused += 1;
                            if self.report.refused_reasons.len() < MAX_REASONS {
                                self.report.refused_reasons.push(e.to_string());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, kind: Kind, record: Value) -> Result<()> {
        if self
            .pending
            .as_ref()
            .is_some_and(|(k, b)| *k != kind || b.len() >= BATCH)
        {
            self.flush()?;
        }
        self.pending
            .get_or_insert_with(|| (kind, Vec::new()))
            .1
            .push(record);
        Ok(())
    }
}

/// Copy everything `from` holds into `to` (see the module docs), then
/// check it arrived. `progress` gets `(entries done, entries total)`.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let sessions = from.list_content_session_ids()?;
    let total = from.entries()?.count() as u64 + sessions.len() as u64;
    let mut have = stamp_counts(to)?;
    let mut c = Copier {
        to,
        report: CopyReport {
            records: KINDS.iter().map(|k| (*k, 0, 0)).collect(),
            ..CopyReport::default()
        },
        pending: None,
    };
    let mut done = 0;
    for line in from.entries()? {
        let line = line?;
        done += 1;
        if done % 1_000 == 0 {
            progress(done, total);
        }
        match line_kind(&line) {
            Some(Kind::Stamp) => {
                c.flush()?;
                c.report.stamps_read += 1;
                match have.get_mut(&stamp_key(&line)).filter(|n| **n > 0) {
                    Some(n) => *n -= 1,
                    None => {
                        to.append_stamp(&line)?;
                        c.report.stamps_added += 1;
                    }
                }
            }
            Some(kind) => {
                if let Some(rec) = line.into_object().and_then(|mut o| o.remove("record")) {
                    c.push(kind, rec)?;
                }
            }
            None => {}
        }
    }
    c.flush()?;
    let mut report = c.report;
    for sid in &sessions {
        let recs = from.read_content(sid, None)?;
        report.content_read += recs.len() as u64;
        let s = to.append_content(recs)?;
        report.content_added += s.appended as u64;
        report.content_skipped += (s.missing_session + s.invalid_session_ids.len()) as u64;
        done += 1;
        progress(done, total);
    }
    report.missing = count_check(from, to, &sessions)?;
    progress(total, total);
    Ok(report)
}

/// What of `from` the destination lacks: ids per kind, stamps, content.
fn count_check(
    from: &dyn Store,
    to: &dyn Store,
    sessions: &[String],
) -> Result<Vec<(String, u64)>> {
    let mut missing = Vec::new();
    let mut want = id_sets(from)?;
    let got = id_sets(to)?;
    for kind in KINDS {
        let Some(ids) = want.remove(&kind) else {
            continue;
        };
        let empty = Hash16Set::default();
        let there = got.get(&kind).unwrap_or(&empty);
        let n = ids.iter().filter(|id| !there.contains(id)).count() as u64;
        if n > 0 {
            missing.push((format!("{} records", kind.as_str()), n));
        }
    }
    let have = stamp_counts(to)?;
    let lacking: u64 = stamp_counts(from)?
        .into_iter()
        .map(|(k, n)| n.saturating_sub(have.get(&k).copied().unwrap_or(0)))
        .sum();
    if lacking > 0 {
        missing.push(("stamps".into(), lacking));
    }
    let mut content = 0;
    for sid in sessions {
        let there: std::collections::HashSet<String> = to
            .read_content(sid, None)?
            .iter()
            .map(Value::to_json)
            .collect();
        content += from
            .read_content(sid, None)?
            .iter()
            .filter(|r| r.as_object().is_some() && !there.contains(&r.to_json()))
            .count() as u64;
    }
    if content > 0 {
        missing.push(("content records".into(), content));
    }
    Ok(missing)
}
