//! Re-deriving the `sessions` rows of touched sessions from their turns.
//!
//! The reference runs one aggregate statement per session
//! ([`UPSERT_SESSION`]); that statement stays the rule, and is what runs
//! for a few sessions or for values this module does not model. A fresh
//! archive, or very many touched sessions, is instead aggregated in one
//! sequential scan of `turns` here, which must give the statement's exact
//! answer. That needs SQLite's value ordering, emulated in this one place:
//!
//! * values compare by storage class first: NULL < INTEGER and REAL
//!   (compared as numbers, an integer and a real that are equal as doubles
//!   decided on the exact integer) < TEXT (compared as bytes, the `BINARY`
//!   collation) < BLOB (never stored in these columns);
//! * `MIN`/`MAX` ignore NULLs and are NULL when every value is;
//! * `json_group_array(DISTINCT model)` lists models in the order the scan
//!   meets them, which for the statement is `idx_turns_session`'s order:
//!   `turn_index` as above, then rowid; a model seen again keeps its first
//!   position.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::error::Result;
use crate::json;

use super::schema::sql_err;
use super::sql::{
    Sv, FIRST_SOURCE, INSERT_SESSION, NEXT_SOURCE, SCAN_TURNS_FOR_SESSIONS, SESSION_HAS_TURNS,
    UPSERT_SESSION,
};

/// Above this many touched sessions one scan of `turns` beats one index
/// walk per session.
pub(super) const SCAN_SESSIONS: usize = 2000;

/// Re-derive the touched sessions; returns how many distinct session ids
/// were touched (the reference's count, which ignores the source).
pub(super) fn rebuild_sessions(
    conn: &Connection,
    path: &Path,
    keys: &HashSet<String>,
    scan: bool,
) -> Result<u64> {
    let e = sql_err(path);
    let mut distinct: HashSet<&str> = HashSet::new();
    for k in keys {
        distinct.insert(k.split_once('|').map_or(k.as_str(), |(_, s)| s));
    }
    let aggregates = if scan { scan_turns(conn, path)? } else { None };
    let mut resolved: HashSet<String> = HashSet::new();
    let mut sources: Option<Vec<String>> = None;
    let mut exists = conn.prepare(SESSION_HAS_TURNS).map_err(&e)?;
    for k in keys {
        if let Some(sid) = k.strip_prefix("*|") {
            // A stamp's session: every source that has turns in it.
            if sources.is_none() {
                sources = Some(distinct_sources(conn, path)?);
            }
            for src in sources.iter().flatten() {
                if exists.exists([src.as_str(), sid]).map_err(&e)? {
                    resolved.insert(format!("{src}|{sid}"));
                }
            }
        } else {
            resolved.insert(k.clone());
        }
    }
    match aggregates {
        Some(mut agg) => {
            let mut insert = conn.prepare(INSERT_SESSION).map_err(&e)?;
            for k in &resolved {
                let (source, sid) = k.split_once('|').unwrap_or((k.as_str(), ""));
                let key = (source.as_bytes().to_vec(), sid.as_bytes().to_vec());
                if let Some(a) = agg.remove(&key) {
                    insert
                        .execute(rusqlite::params_from_iter(a.row(source, sid).iter()))
                        .map_err(&e)?;
                }
            }
        }
        None => {
            let mut upsert = conn.prepare(UPSERT_SESSION).map_err(&e)?;
            for k in &resolved {
                let (source, sid) = k.split_once('|').unwrap_or((k.as_str(), ""));
                upsert.execute([source, sid]).map_err(&e)?;
            }
        }
    }
    Ok(distinct.len() as u64)
}

/// A column read as text, whatever its storage class.
pub(super) fn text_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match r.get_ref(i)? {
        ValueRef::Null => None,
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
    })
}

/// Distinct values of `turns.source`, stepping through an index whose
/// first column is `source` instead of scanning the table.
pub(super) fn distinct_sources(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    let e = sql_err(path);
    let mut first = conn.prepare(FIRST_SOURCE).map_err(&e)?;
    let mut next = conn.prepare(NEXT_SOURCE).map_err(&e)?;
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<String> = first.query_row([], |r| text_col(r, 0)).map_err(&e)?;
    while let Some(s) = cur {
        cur = next.query_row([&s], |r| text_col(r, 0)).map_err(&e)?;
        out.push(s);
    }
    Ok(out)
}

/// An index key value: NULL < numbers < text (< blob, not stored here).
#[derive(Debug, Clone)]
enum Key {
    Int(i64),
    Real(f64),
    Text(Vec<u8>),
}

fn cmp_int_real(i: i64, r: f64) -> Ordering {
    let f = i as f64;
    match f.partial_cmp(&r) {
        Some(Ordering::Equal) => {
            // Equal as doubles: decide on the exact integer value.
            if r >= 9_223_372_036_854_775_808.0 {
                Ordering::Less
            } else if r < -9_223_372_036_854_775_808.0 {
                Ordering::Greater
            } else {
                i.cmp(&(r as i64))
            }
        }
        Some(o) => o,
        None => Ordering::Greater,
    }
}

fn cmp_key(a: &Key, b: &Key) -> Ordering {
    match (a, b) {
        (Key::Int(x), Key::Int(y)) => x.cmp(y),
        (Key::Real(x), Key::Real(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Key::Int(x), Key::Real(y)) => cmp_int_real(*x, *y),
        (Key::Real(x), Key::Int(y)) => cmp_int_real(*y, *x).reverse(),
        (Key::Text(x), Key::Text(y)) => x.cmp(y),
        (Key::Text(_), _) => Ordering::Greater,
        (_, Key::Text(_)) => Ordering::Less,
    }
}

#[derive(Default)]
struct Agg {
    count: i64,
    min_ts: Option<Vec<u8>>,
    max_ts: Option<Vec<u8>>,
    /// project, project_key, workflow_id, agent_id, parent_subagent_id.
    mins: [Option<Vec<u8>>; 5],
    max_sidechain: Option<Key>,
    min_rank: Option<u8>,
    known: i64,
    not_full: i64,
    /// Each distinct model with the first index position it has.
    models: Vec<(Vec<u8>, Key, i64)>,
}

fn text(v: ValueRef<'_>) -> Option<Option<Vec<u8>>> {
    match v {
        ValueRef::Null => Some(None),
        ValueRef::Text(t) => Some(Some(t.to_vec())),
        _ => None,
    }
}

fn min_into(slot: &mut Option<Vec<u8>>, v: Option<Vec<u8>>, want_min: bool) {
    if let Some(v) = v {
        let replace = match slot {
            None => true,
            Some(cur) => {
                if want_min {
                    v < *cur
                } else {
                    v > *cur
                }
            }
        };
        if replace {
            *slot = Some(v);
        }
    }
}

const RANKS: [&str; 5] = [
    "cost-only",
    "aggregate-only",
    "partial",
    "usage-only",
    "full",
];

impl Agg {
    fn row(self, source: &str, sid: &str) -> [Sv; 14] {
        let t = |v: Option<Vec<u8>>| match v {
            Some(b) => Sv::Text(String::from_utf8_lossy(&b).into_owned()),
            None => Sv::Null,
        };
        let mut models = self.models;
        models.sort_by(|a, b| cmp_key(&a.1, &b.1).then(a.2.cmp(&b.2)));
        let mut json = String::from("[");
        for (i, (m, _, _)) in models.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json::write_str(&mut json, &String::from_utf8_lossy(m));
        }
        json.push(']');
        let has_subagent = match self.max_sidechain {
            None => Sv::Int(0),
            Some(Key::Int(i)) => Sv::Int(i),
            Some(Key::Real(r)) => Sv::Real(r),
            Some(Key::Text(b)) => Sv::Text(String::from_utf8_lossy(&b).into_owned()),
        };
        let min_fidelity = match self.min_rank {
            Some(r) => Sv::Text(RANKS[r as usize - 1].to_string()),
            None => Sv::Null,
        };
        let full = if self.known == 0 {
            Sv::Null
        } else {
            Sv::Int(i64::from(self.not_full == 0))
        };
        let [project, project_key, workflow, agent, parent] = self.mins;
        [
            Sv::Text(source.to_string()),
            Sv::Text(sid.to_string()),
            t(project),
            t(project_key),
            t(self.min_ts),
            t(self.max_ts),
            Sv::Int(self.count),
            Sv::Text(json),
            t(workflow),
            t(agent),
            t(parent),
            has_subagent,
            min_fidelity,
            full,
        ]
    }
}

type Aggregates = HashMap<(Vec<u8>, Vec<u8>), Agg>;

/// Aggregate every session of `turns`; `None` when a value has a type
/// this pass does not model (the caller then uses the SQL statement).
fn scan_turns(conn: &Connection, path: &Path) -> Result<Option<Aggregates>> {
    let e = sql_err(path);
    let mut stmt = conn.prepare(SCAN_TURNS_FOR_SESSIONS).map_err(&e)?;
    let mut rows = stmt.query([]).map_err(&e)?;
    let mut out: Aggregates = HashMap::new();
    while let Some(r) = rows.next().map_err(&e)? {
        let rowid: i64 = r.get(0).map_err(&e)?;
        let (Some(Some(source)), Some(Some(sid))) = (
            text(r.get_ref(1).map_err(&e)?),
            text(r.get_ref(2).map_err(&e)?),
        ) else {
            return Ok(None);
        };
        let key = match r.get_ref(3).map_err(&e)? {
            ValueRef::Integer(i) => Key::Int(i),
            ValueRef::Real(f) => Key::Real(f),
            ValueRef::Text(t) => Key::Text(t.to_vec()),
            _ => return Ok(None),
        };
        let (Some(Some(ts)), Some(Some(model))) = (
            text(r.get_ref(4).map_err(&e)?),
            text(r.get_ref(5).map_err(&e)?),
        ) else {
            return Ok(None);
        };
        let mut mins: [Option<Vec<u8>>; 5] = Default::default();
        for (i, slot) in mins.iter_mut().enumerate() {
            match text(r.get_ref(6 + i).map_err(&e)?) {
                Some(v) => *slot = v,
                None => return Ok(None),
            }
        }
        let side = match r.get_ref(11).map_err(&e)? {
            ValueRef::Null => None,
            ValueRef::Integer(i) => Some(Key::Int(i)),
            ValueRef::Real(f) => Some(Key::Real(f)),
            _ => return Ok(None),
        };
        let fid = match text(r.get_ref(12).map_err(&e)?) {
            Some(v) => v,
            None => return Ok(None),
        };
        let a = out.entry((source, sid)).or_default();
        a.count += 1;
        min_into(&mut a.min_ts, Some(ts.clone()), true);
        min_into(&mut a.max_ts, Some(ts), false);
        for (slot, v) in a.mins.iter_mut().zip(mins) {
            min_into(slot, v, true);
        }
        if let Some(sv) = side {
            let bigger = match &a.max_sidechain {
                None => true,
                Some(cur) => cmp_key(&sv, cur) == Ordering::Greater,
            };
            if bigger {
                a.max_sidechain = Some(sv);
            }
        }
        if let Some(f) = fid {
            a.known += 1;
            if f != b"full" {
                a.not_full += 1;
            }
            if let Some(rank) = RANKS.iter().position(|r| r.as_bytes() == f.as_slice()) {
                let rank = rank as u8 + 1;
                a.min_rank = Some(a.min_rank.map_or(rank, |m| m.min(rank)));
            }
        }
        match a.models.iter_mut().find(|(m, _, _)| *m == model) {
            Some(entry) => {
                let earlier = cmp_key(&key, &entry.1).then(rowid.cmp(&entry.2));
                if earlier == Ordering::Less {
                    entry.1 = key;
                    entry.2 = rowid;
                }
            }
            None => a.models.push((model, key, rowid)),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions_of(scan: bool) -> Vec<Vec<String>> {
        let conn = Connection::open_in_memory().unwrap();
        let p = Path::new(":memory:");
        super::super::schema::ensure_schema(&conn, p, true).unwrap();
        // Mixed turn_index types, repeated models out of order, NULL and
        // known fidelity, sidechain flags, text minima with shared prefixes.
        conn.execute_batch(
            "INSERT INTO turns (source, session_id, message_id, turn_index, ts, model, project,
               project_key, is_sidechain, workflow_id, agent_id, parent_subagent_id,
               attribution_fidelity)
             VALUES
             ('a','s1','m1',3,'2026-01-03','zeta','/p/b',NULL,NULL,'wf2',NULL,NULL,'full'),
             ('a','s1','m2',1,'2026-01-01','beta','/p/a','k',0,'wf1','g',NULL,NULL),
             ('a','s1','m3',1.5,'2026-01-02','gamma','/p/ab','j',1,NULL,NULL,'pp','partial'),
             ('a','s1','m4','x','2026-01-05','omega',NULL,NULL,NULL,NULL,NULL,NULL,'full'),
             ('a','s1','m5',1,'2026-01-04','beta',NULL,NULL,NULL,NULL,NULL,NULL,'usage-only'),
             ('b','s1','m1',0,'2026-02-01','m',NULL,NULL,NULL,NULL,NULL,NULL,NULL),
             ('b','s2','m1',0,'2026-02-01','m\"q',NULL,NULL,0,NULL,NULL,NULL,'full'),
             ('b','s2','m2',0,'2026-02-02','m\"q',NULL,NULL,0,NULL,NULL,NULL,'odd');",
        )
        .unwrap();
        let keys: HashSet<String> = ["a|s1", "*|s1", "b|s2", "c|none"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(rebuild_sessions(&conn, p, &keys, scan).unwrap(), 3);
        let mut stmt = conn
            .prepare("SELECT * FROM sessions ORDER BY source, session_id")
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..n)
                    .map(|i| match r.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Text(t) => {
                            String::from_utf8_lossy(t).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>())
            })
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn session_scan_equals_the_per_session_statement() {
        let by_sql = sessions_of(false);
        assert_eq!(by_sql.len(), 3);
        // Worked by hand for (a, s1): models by (turn_index, rowid) are
        // beta(1), beta(1), gamma(1.5), zeta(3), omega('x'); the smallest
        // project is '/p/a'; the worst class is partial.
        assert_eq!(by_sql[0][7], r#"["beta","gamma","zeta","omega"]"#);
        assert_eq!(by_sql[0][2], "/p/a");
        assert_eq!(by_sql[0][12], "partial");
        assert_eq!(by_sql[0][11], "Integer(1)");
        assert_eq!(by_sql[2][7], r#"["m\"q"]"#);
        assert_eq!(sessions_of(true), by_sql);
    }
}
