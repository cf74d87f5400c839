//! Re-applying new stamps to turns already in the archive.
//!
//! A stamp folds into every turn its selector reaches, earlier turns
//! included; an incremental build (or a fresh one whose turns have odd key
//! values) therefore re-folds the turns the new stamps select, with the
//! reference's selection rules, and rewrites only rows whose enrichment
//! columns change.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, Statement};

use crate::error::{Error, Result};
use crate::json::{Object, Value};

use super::fold::{FoldCache, StampIndex};
use super::pipeline::NewStamp;
use super::rows::bindable;
use super::schema::sql_err;
use super::sessions::{distinct_sources, text_col};
use super::sql::{Sv, REFOLD_READ, REFOLD_TURN, TURN_ROWIDS};

/// Would binding `new` store exactly `old`? Text compares as bytes; a
/// double bound to a text column is stored as text, so it never counts as
/// equal (the row is rewritten, which is always correct).
fn same_stored(new: &Sv, old: &Sv) -> bool {
    match (new, old) {
        (Sv::Null, Sv::Null) => true,
        (Sv::Text(a), Sv::Text(b)) => a == b,
        _ => false,
    }
}

/// Parameters per `IN (…)` lookup.
const IN_CHUNK: usize = 500;

/// Turns a stamp may apply to, found as the reference finds them: by the
/// first selector field present among sessionId, messageId and range.
/// The set is the reference's; the lookups use indexes where it scans
/// (sessionId per source, all messageIds in one pass).
pub(super) fn refold(
    conn: &Connection,
    path: &Path,
    index: &StampIndex,
    stamps: &[NewStamp],
    sessions: &mut HashSet<String>,
) -> Result<()> {
    let e = sql_err(path);
    let mut targets: HashSet<i64> = HashSet::new();
    let mut collect = |stmt: &mut Statement<'_>, params: &[&Sv]| -> Result<()> {
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(&e)?;
        while let Some(r) = rows.next().map_err(&e)? {
            targets.insert(r.get(0).map_err(&e)?);
        }
        Ok(())
    };
    let sources: Vec<Sv> = distinct_sources(conn, path)?
        .into_iter()
        .map(Sv::Text)
        .collect();
    let mut by_session = conn
        .prepare(&format!(
            "{TURN_ROWIDS} WHERE source = ?1 AND session_id = ?2"
        ))
        .map_err(&e)?;
    let mut message_ids: Vec<Sv> = Vec::new();
    for s in stamps {
        let sel = &s.selector;
        if let Some(sid) = sel.get("sessionId") {
            let p = bindable(sid).unwrap_or(Sv::Null);
            for src in &sources {
                collect(&mut by_session, &[src, &p])?;
            }
        } else if let Some(mid) = sel.get("messageId") {
            message_ids.push(bindable(mid).unwrap_or(Sv::Null));
        } else if let Some(range) = sel.get("range").filter(|r| r.is_truthy()) {
            let mut wheres = Vec::new();
            let mut params = Vec::new();
            for (k, op) in [("fromTs", ">="), ("toTs", "<=")] {
                if let Some(b) = range.get(k).filter(|b| b.is_truthy()) {
                    params.push(bindable(b).unwrap_or(Sv::Null));
                    wheres.push(format!("ts {op} ?{}", params.len()));
                }
            }
            let sql = if wheres.is_empty() {
                TURN_ROWIDS.to_string()
            } else {
                format!("{TURN_ROWIDS} WHERE {}", wheres.join(" AND "))
            };
            let mut stmt = conn.prepare(&sql).map_err(&e)?;
            let refs: Vec<&Sv> = params.iter().collect();
            collect(&mut stmt, &refs)?;
        }
    }
    for chunk in message_ids.chunks(IN_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let mut stmt = conn
            .prepare(&format!("{TURN_ROWIDS} WHERE message_id IN ({marks})"))
            .map_err(&e)?;
        let refs: Vec<&Sv> = chunk.iter().collect();
        collect(&mut stmt, &refs)?;
    }
    let mut rowids: Vec<i64> = targets.into_iter().collect();
    rowids.sort_unstable();
    let mut read = conn.prepare(REFOLD_READ).map_err(&e)?;
    let mut update = conn.prepare(REFOLD_TURN).map_err(&e)?;
    let mut cache = FoldCache::default();
    for rowid in rowids {
        let (key, current) = read
            .query_row([rowid], |r| {
                let mut key: [String; 4] = Default::default();
                for (i, slot) in key.iter_mut().enumerate() {
                    *slot = text_col(r, i)?.unwrap_or_default();
                }
                let mut current: [Sv; 5] = [Sv::Null, Sv::Null, Sv::Null, Sv::Null, Sv::Null];
                for (i, slot) in current.iter_mut().enumerate() {
                    *slot = Sv::from_stored(r.get_ref(4 + i)?);
                }
                Ok((key, current))
            })
            .map_err(&e)?;
        let [source, session_id, message_id, ts] = key;
        let mut fake = Object::new();
        fake.insert("source", Value::from(source.as_str()));
        fake.insert("sessionId", Value::from(session_id.as_str()));
        fake.insert("messageId", Value::from(message_id));
        fake.insert("ts", Value::from(ts));
        let fake = Value::Object(fake);
        // Values that cannot be bound were refused with their stamp.
        let c = cache
            .columns(index, &fake)
            .map_err(|reason| Error::invalid("enrichment", reason))?;
        let new = [
            c.workflow_id,
            c.agent_id,
            c.persona,
            c.tier,
            Sv::Text(c.json),
        ];
        // Rewriting a row with the values it holds changes nothing.
        if !new.iter().zip(&current).all(|(n, o)| same_stored(n, o)) {
            let [w, a, p, t, j] = new;
            update
                .execute(rusqlite::params![w, a, p, t, j, rowid])
                .map_err(&e)?;
        }
        sessions.insert(format!("{source}|{session_id}"));
    }
    Ok(())
}
