//! Ledger writers (SPEC §4): append with dedup, stamps, index rebuild.
//!
//! Single-process behaviour is the reference's, byte for byte. Across
//! processes the dedup check, the ledger append and the index append all
//! happen under the `ledger` lock against the index as it is on disk, so
//! two writers can never append the same record twice.

use crate::error::{Error, Result};
use crate::fsio::{append_bytes, replace_file, FileId, Tracked};
use crate::home::lock_name::{LEDGER as LEDGER_LOCK, LEDGER_INDEX as INDEX_LOCK};
use crate::home::LedgerHome;
use crate::index::sidecar::{hash_lines, IndexState, RebuildIndexResult, Rebuilder};
use crate::index::{record_id, turn_fingerprint, Hash16, CONTENT_WINDOW};
use crate::json::{JsString, Object, Value};
use crate::ledger::Ledger;
use crate::records::{wrap_record, Kind};
use crate::time::now_iso;

impl Ledger {
    /// Append turns, skipping those already in the ledger.
    ///
    /// A turn is dropped when its id (`source|sessionId|messageId`) is
    /// known, also earlier in the same batch, or when its content
    /// fingerprint is among those committed before this batch (so a turn
    /// re-emitted under a new id is not counted twice). Returns how many
    /// turns were written. A turn that cannot be fingerprinted (no
    /// `usage`, no `toolCalls`) fails the whole batch, as in the reference;
    /// nothing is written then.
    ///
    /// ```
    /// use relayburn_ledger::{json, Ledger, LedgerHome, Query};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
    /// let turn = json::parse(r#"{"v":1,"source":"codex","sessionId":"s1","messageId":"m1",
    ///     "turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"gpt-5",
    ///     "usage":{"input":10,"output":5,"reasoning":0,"cacheRead":0,"cacheCreate5m":0,"cacheCreate1h":0},
    ///     "toolCalls":[]}"#)?;
    /// assert_eq!(ledger.append_turns(vec![turn.clone()])?, 1);
    /// assert_eq!(ledger.append_turns(vec![turn])?, 0); // already there
    /// let turns = ledger.query_turns(&Query::default())?.collect::<Result<Vec<_>, _>>()?;
    /// assert_eq!(turns.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn append_turns(&self, turns: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Turn, turns)
    }

    /// Append compaction events, deduped on `source|sessionId|ts`.
    pub fn append_compactions(&self, events: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Compaction, events)
    }

    /// Append session relationships, deduped on their six-part id.
    pub fn append_relationships(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::Relationship, records)
    }

    /// Append tool result events, deduped on
    /// `source|sessionId|toolUseId|eventIndex`.
    pub fn append_tool_result_events(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::ToolResultEvent, records)
    }

    /// Append user turns, deduped on `source|sessionId|userUuid`.
    pub fn append_user_turns(&self, records: Vec<Value>) -> Result<usize> {
        self.append_records(Kind::UserTurn, records)
    }

    /// Append records of one kind (not stamps).
    pub fn append_records(&self, kind: Kind, records: Vec<Value>) -> Result<usize> {
        if kind == Kind::Stamp {
            return Err(Error::invalid(
                "kind",
                "stamps are appended with stamp() or append_stamp()",
            ));
        }
        if records.is_empty() {
            return Ok(0);
        }
        let ids = records
            .iter()
            .enumerate()
            .map(|(i, r)| id_of(kind, i, r))
            .collect::<Result<Vec<_>>>()?;
        self.with_lock(LEDGER_LOCK, || {
            let mut st = self.index_state();
            st.sync(self.home())?;
            let mut keep = vec![false; records.len()];
            let mut fresh = 0;
            let mut new_ids = Vec::new();
            let mut new_fps = Vec::new();
            for (i, (rec, id)) in records.iter().zip(&ids).enumerate() {
                if st.ids.contains(id) {
                    continue;
                }
                if kind == Kind::Turn {
                    let fp = match turn_fingerprint(rec) {
                        Ok(fp) => fp,
                        Err(e) => {
                            for id in &new_ids {
                                st.ids.remove(id);
                            }
                            return Err(Error::invalid(
                                format!("records[{i}]"),
                                format!("turn record {i}: {e}"),
                            ));
                        }
                    };
                    // Only fingerprints committed before this batch count.
                    if st.content.contains(&fp) {
                        continue;
                    }
                    new_fps.push(fp);
                }
                st.ids.insert(*id);
                new_ids.push(*id);
                keep[i] = true;
                fresh += 1;
            }
            if fresh == 0 {
                return Ok(0);
            }
            let mut payload = String::new();
            for (rec, k) in records.into_iter().zip(keep) {
                if k {
                    wrap_record(kind, rec).write_json(&mut payload);
                    payload.push('\n');
                }
            }
            if let Err(e) = self.append_ledger_locked(&mut st, payload.as_bytes()) {
                for id in &new_ids {
                    st.ids.remove(id);
                }
                return Err(e);
            }
            st.content.extend(new_fps.iter().copied());
            let home = self.home().clone();
            self.with_lock(INDEX_LOCK, || st.append_hashes(&home, &new_ids, &new_fps))?;
            Ok(fresh)
        })
    }

    /// Write `payload` to the ledger; the `ledger` lock must be held.
    fn append_ledger_locked(&self, st: &mut IndexState, payload: &[u8]) -> Result<()> {
        crate::rewrite::ensure_not_rewriting(&self.home().ledger())?;
        // Dedup was decided under the lock: write only if it is still ours.
        self.locks().ensure_held(LEDGER_LOCK)?;
        let (id, prev, len) = append_bytes(&self.home().ledger(), payload)?;
        st.ledger_appended(id, prev, len);
        Ok(())
    }

    /// Record enrichment for the turns `selector` picks, stamped now.
    ///
    /// `selector` needs at least one of `sessionId`, `messageId`, `range`.
    /// Returns the stamp line written. A `sessionId` stamp whose
    /// enrichment names a `parentAgentId` also records the subagent
    /// relationship (see [`Ledger::append_stamp`]).
    ///
    /// ```
    /// use relayburn_ledger::{json, Ledger, LedgerHome, Query};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
    /// let turn = json::parse(r#"{"v":1,"source":"codex","sessionId":"s1","messageId":"m1",
    ///     "ts":"2026-04-20T00:00:00.000Z","model":"gpt-5","usage":{"input":1,"output":1},"toolCalls":[]}"#)?;
    /// ledger.append_turns(vec![turn])?;
    /// ledger.stamp(json::parse(r#"{"sessionId":"s1"}"#)?, json::parse(r#"{"workflowId":"wf-1"}"#)?)?;
    /// let t = ledger.query_turns(&Query::default())?.next().unwrap()?;
    /// assert_eq!(t.get("enrichment").unwrap().get("workflowId").unwrap().as_str(), Some("wf-1"));
    /// assert!(ledger.stamp(json::parse("{}")?, json::parse("{}")?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stamp(&self, selector: Value, enrichment: Value) -> Result<Value> {
        let line = stamp_line(selector, enrichment)?;
        self.append_stamp(&line)?;
        Ok(line)
    }

    /// Append a stamp line exactly as given (its `ts` included).
    ///
    /// When `selector.sessionId` and `enrichment.parentAgentId` are
    /// non-empty strings, a `spawn-env` subagent relationship is appended
    /// in the same write, unless one with the same id is already known.
    pub fn append_stamp(&self, line: &Value) -> Result<()> {
        let mut payload = line.to_json();
        payload.push('\n');
        let Some(rel) = spawn_env_relationship(line) else {
            return self.with_lock(LEDGER_LOCK, || {
                crate::rewrite::ensure_not_rewriting(&self.home().ledger())?;
                self.locks().ensure_held(LEDGER_LOCK)?;
                let (id, prev, len) = append_bytes(&self.home().ledger(), payload.as_bytes())?;
                let mut st = self.index_state();
                st.ledger_appended(id, prev, len);
                Ok(())
            });
        };
        let rel_id = id_of(Kind::Relationship, 0, &rel)?;
        self.with_lock(LEDGER_LOCK, || {
            let mut st = self.index_state();
            st.sync(self.home())?;
            if st.ids.contains(&rel_id) {
                return self.append_ledger_locked(&mut st, payload.as_bytes());
            }
            wrap_record(Kind::Relationship, rel).write_json(&mut payload);
            payload.push('\n');
            self.append_ledger_locked(&mut st, payload.as_bytes())?;
            st.ids.insert(rel_id);
            let home = self.home().clone();
            self.with_lock(INDEX_LOCK, || st.append_hashes(&home, &[rel_id], &[]))
        })
    }

    /// Recompute `ledger.idx` and `ledger.content.idx` from the ledger.
    ///
    /// Ids are written in first-seen order; the content window keeps the
    /// first occurrence of each fingerprint, last [`CONTENT_WINDOW`] of
    /// them. The bulk of the ledger is read without holding a lock; only
    /// the tail appended meanwhile is read under `ledger`, so writers are
    /// not held up for the length of a full scan.
    ///
    /// ```
    /// use relayburn_ledger::{json, Ledger, LedgerHome};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
    /// let turn = json::parse(r#"{"source":"codex","sessionId":"s","messageId":"m",
    ///     "ts":"T","model":"M","usage":{"input":1,"output":2},"toolCalls":[]}"#)?;
    /// ledger.append_turns(vec![turn])?;
    /// std::fs::remove_file(ledger.home().ledger_index())?;
    /// let r = ledger.rebuild_index()?;
    /// assert_eq!((r.ids, r.content, r.skipped), (1, 1, 0));
    /// assert_eq!(std::fs::read_to_string(ledger.home().ledger_index())?.lines().count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rebuild_index(&self) -> Result<RebuildIndexResult> {
        self.rebuild_index_with_progress(&mut |_, _| {})
    }

    /// [`rebuild_index`](Self::rebuild_index), reporting `(bytes read,
    /// ledger size)` every few megabytes.
    pub fn rebuild_index_with_progress(
        &self,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RebuildIndexResult> {
        let path = self.home().ledger();
        let mut rb = Rebuilder::default();
        let before = std::fs::metadata(&path).ok();
        let mut reached = 0;
        if let Some(m) = before.as_ref().filter(|m| m.is_file()) {
            reached = rb.scan(&path, 0, Some(m.len()), progress)?;
        }
        self.with_lock(LEDGER_LOCK, || {
            let now = std::fs::metadata(&path).ok();
            let same_file = match (&before, &now) {
                (Some(b), Some(n)) => FileId::of(b) == FileId::of(n) && n.len() >= reached,
                (None, None) => true,
                _ => false,
            };
            let mut end = reached;
            if !same_file {
                // Rewritten or truncated meanwhile: read it all again.
                rb = Rebuilder::default();
                end = 0;
            }
            let ledger_file = match now.as_ref().filter(|m| m.is_file()) {
                Some(m) => {
                    end = rb.scan(&path, end, None, progress)?;
                    Tracked {
                        id: Some(FileId::of(m)),
                        offset: end,
                    }
                }
                None => Tracked::default(),
            };
            let tail_start = rb.content.len().saturating_sub(CONTENT_WINDOW);
            let tail: Vec<Hash16> = rb.content[tail_start..].to_vec();
            let home: &LedgerHome = self.home();
            let (ids_file, window_file) = self.with_lock(INDEX_LOCK, || {
                let a = replace_file(&home.ledger_index(), &hash_lines(&rb.ids))?;
                let b = replace_file(&home.ledger_content_index(), &hash_lines(&tail))?;
                Ok((a, b))
            })?;
            let mut st = self.index_state();
            st.reset();
            st.ids = rb.ids.iter().copied().collect();
            st.content = tail.iter().copied().collect();
            st.order = tail.iter().copied().collect();
            st.ids_file = ids_file;
            st.window_file = window_file;
            st.ledger_file = ledger_file;
            st.loaded = true;
            st.pin_index_files(home);
            Ok(RebuildIndexResult {
                ids: rb.ids.len(),
                content: tail.len(),
                skipped: rb.skipped,
            })
        })
    }
}

/// The id hash of record `i` of a batch of `kind`; an error naming it
/// when it cannot be hashed.
pub(crate) fn id_of(kind: Kind, i: usize, r: &Value) -> Result<Hash16> {
    match record_id(kind, r) {
        Some(Ok(h)) => Ok(h),
        Some(Err(e)) => Err(Error::invalid(
            format!("records[{i}]"),
            format!("{} record {i}: {e}", kind.as_str()),
        )),
        None => Err(Error::Internal("stamps have no record id".into())),
    }
}

/// The stamp line for `selector` and `enrichment`, stamped now; the
/// selector needs at least one of `sessionId`, `messageId`, `range`.
pub(crate) fn stamp_line(selector: Value, enrichment: Value) -> Result<Value> {
    let has_field = selector.as_object().is_some_and(|o| {
        o.contains_key("sessionId") || o.contains_key("messageId") || o.contains_key("range")
    });
    if !has_field {
        return Err(Error::invalid(
            "selector",
            "stamp requires at least one selector field (sessionId, messageId, or range)",
        ));
    }
    validate_selector(&selector).map_err(|reason| Error::invalid("selector", reason))?;
    let mut line = Object::new();
    line.insert("v", Value::Number(1.0));
    line.insert("kind", Value::str("stamp"));
    line.insert("ts", Value::String(JsString::from(now_iso())));
    line.insert("selector", selector);
    line.insert("enrichment", enrichment);
    Ok(Value::Object(line))
}

/// The relationship a `sessionId` stamp with a `parentAgentId` implies:
/// `{v, source, sessionId, relatedSessionId, relationshipType, ts, agentId?}`
/// in that key order.
pub(crate) fn spawn_env_relationship(line: &Value) -> Option<Value> {
    let session = line.get("selector")?.get("sessionId")?.as_js_string()?;
    if session.utf16_len() == 0 {
        return None;
    }
    let enrichment = line.get("enrichment");
    let parent = enrichment?.get("parentAgentId")?.as_js_string()?;
    if parent.utf16_len() == 0 {
        return None;
    }
    let mut o = Object::new();
    o.insert("v", Value::Number(1.0));
    o.insert("source", Value::str("spawn-env"));
    o.insert("sessionId", Value::String(session.clone()));
    o.insert("relatedSessionId", Value::String(parent.clone()));
    o.insert("relationshipType", Value::str("subagent"));
    // `ts: line.ts` keeps the key even when the stamp has none; JSON then
    // drops an undefined value, so an absent ts stays absent.
    if let Some(ts) = line.get("ts") {
        o.insert("ts", ts.clone());
    }
    if let Some(agent) = enrichment
        .and_then(|e| e.get("agentId"))
        .and_then(Value::as_js_string)
        .filter(|a| a.utf16_len() > 0)
    {
        o.insert("agentId", Value::String(agent.clone()));
    }
    Some(Value::Object(o))
}

/// A stamp is appended for good, so a selector that would match nothing
/// (or everything) by accident is refused before anything is written:
/// ids must be non-empty strings, a range needs both ends, each a
/// canonical ISO timestamp, and must not be reversed.
fn validate_selector(selector: &Value) -> std::result::Result<(), String> {
    for key in ["sessionId", "messageId"] {
        if let Some(v) = selector.get(key) {
            if v.as_str().is_none_or(|s| s.trim().is_empty()) {
                return Err(format!("stamp selector {key} must be a non-empty string"));
            }
        }
    }
    let Some(range) = selector.get("range") else {
        return Ok(());
    };
    let end = |key: &str| -> std::result::Result<String, String> {
        let v = range.get(key).and_then(Value::as_str).ok_or_else(|| {
            "a stamp range needs both fromTs and toTs (--from-ts and --to-ts)".to_string()
        })?;
        if !crate::time::is_canonical_iso(v) {
            return Err(format!(
                "stamp range {key} {v:?} is not a timestamp of the form 2026-01-31T23:59:59.000Z"
            ));
        }
        Ok(v.to_string())
    };
    let (from, to) = (end("fromTs")?, end("toTs")?);
    if from > to {
        return Err(format!(
            "stamp range is reversed: fromTs {from} is after toTs {to}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;
    use crate::time::iso_from_millis;

    #[test]
    fn iso_dates_match_javascript() {
        assert_eq!(iso_from_millis(0), "1970-01-01T00:00:00.000Z");
        // new Date(Date.UTC(2026, 3, 20, 0, 0, 0, 7)).toISOString()
        assert_eq!(
            iso_from_millis(1_776_643_200_007),
            "2026-04-20T00:00:00.007Z"
        );
        // 2000-02-29T23:59:59.999Z, a leap day.
        assert_eq!(iso_from_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        let now = now_iso();
        assert_eq!(now.len(), 24);
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn spawn_env_relationship_key_order() {
        let line = parse(r#"{"v":1,"kind":"stamp","ts":"T","selector":{"sessionId":"c"},"enrichment":{"agentId":"a","parentAgentId":"p"}}"#).unwrap();
        assert_eq!(
            spawn_env_relationship(&line).unwrap().to_json(),
            r#"{"v":1,"source":"spawn-env","sessionId":"c","relatedSessionId":"p","relationshipType":"subagent","ts":"T","agentId":"a"}"#
        );
        for no in [
            r#"{"selector":{"sessionId":""},"enrichment":{"parentAgentId":"p"}}"#,
            r#"{"selector":{"messageId":"m"},"enrichment":{"parentAgentId":"p"}}"#,
            r#"{"selector":{"sessionId":"c"},"enrichment":{"parentAgentId":""}}"#,
            r#"{"selector":{"sessionId":"c"},"enrichment":{"parentAgentId":5}}"#,
        ] {
            assert!(
                spawn_env_relationship(&parse(no).unwrap()).is_none(),
                "{no}"
            );
        }
    }
}
