//! Folding stamps onto turns, indexed so that each turn costs only the
//! stamps that can match it.
//!
//! The reference fetches every stamp of the turn's session bucket plus the
//! wildcard bucket for each turn, parses each one and tests it; with many
//! stamps that is quadratic. Here the stamps, in the reference's fold
//! order (`ts, ledger_offset_bytes` as SQLite sorts them), are parsed once
//! and indexed by the selector field that must match: sessionId,
//! messageId, or the `fromTs..=toTs` window. Candidates are then confirmed
//! with the exact selector rule and applied in fold order, so the result is
//! the reference's.

use std::collections::HashMap;

use crate::json::{JsString, Object, Value};
use crate::records::stamp_matches;

use super::rows::{bindable, EnrichmentCols, Sv};

/// A stamp as the fold uses it.
pub(crate) struct FoldStamp {
    pub selector: Value,
    pub enrichment: Value,
}

/// Exact-value index on a selector field (strings and numbers, the only
/// types that can equal a bindable turn field).
#[derive(Default)]
struct ValueIndex {
    strings: HashMap<JsString, Vec<u32>>,
    numbers: HashMap<u64, Vec<u32>>,
}

fn number_key(n: f64) -> u64 {
    // -0 === 0 in JavaScript.
    if n == 0.0 {
        0
    } else {
        n.to_bits()
    }
}

impl ValueIndex {
    fn insert(&mut self, v: &Value, i: u32) -> bool {
        match v {
            Value::String(s) => self.strings.entry(s.clone()).or_default().push(i),
            Value::Number(n) => self.numbers.entry(number_key(*n)).or_default().push(i),
            _ => return false,
        }
        true
    }

    fn get(&self, v: Option<&Value>) -> &[u32] {
        let hit = match v {
            Some(Value::String(s)) => self.strings.get(s),
            Some(Value::Number(n)) => self.numbers.get(&number_key(*n)),
            _ => None,
        };
        hit.map_or(&[], Vec::as_slice)
    }

    fn is_empty(&self) -> bool {
        self.strings.is_empty() && self.numbers.is_empty()
    }
}

/// Range-only stamps whose bounds are strings (or falsy, i.e. open):
/// sorted by lower bound, with a max-upper-bound tree to find the windows
/// holding a timestamp without scanning them all.
#[derive(Default)]
struct RangeIndex {
    /// (from, to, stamp), sorted by `from` (open first).
    items: Vec<(Option<JsString>, Option<JsString>, u32)>,
    /// Segment tree over `items` of the largest upper bound (None = open).
    tree: Vec<Option<usize>>,
    size: usize,
    /// Every distinct bound, sorted: timestamps between two neighbours (or
    /// equal to one) fall in exactly the same windows.
    points: Vec<JsString>,
}

fn upper_ge(a: &Option<JsString>, b: &Option<JsString>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(x), Some(y)) => x.js_cmp(y).is_ge(),
    }
}

impl RangeIndex {
    fn build(mut items: Vec<(Option<JsString>, Option<JsString>, u32)>) -> RangeIndex {
        items.sort_by(|a, b| match (&a.0, &b.0) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.js_cmp(y),
        });
        let size = items.len().next_power_of_two().max(1);
        let mut tree: Vec<Option<usize>> = vec![None; 2 * size];
        for (i, _) in items.iter().enumerate() {
            tree[size + i] = Some(i);
        }
        for n in (1..size).rev() {
            tree[n] = match (tree[2 * n], tree[2 * n + 1]) {
                (Some(a), Some(b)) => {
                    if upper_ge(&items[a].1, &items[b].1) {
                        Some(a)
                    } else {
                        Some(b)
                    }
                }
                (a, None) => a,
                (None, b) => b,
            };
        }
        let mut points: Vec<JsString> = items
            .iter()
            .flat_map(|(f, t, _)| [f.clone(), t.clone()])
            .flatten()
            .collect();
        points.sort_by(|a, b| a.js_cmp(b));
        points.dedup_by(|a, b| a.js_cmp(b).is_eq());
        RangeIndex {
            items,
            tree,
            size,
            points,
        }
    }

    /// Which stretch between bounds `ts` is in; equal segments mean equal
    /// window hits.
    fn segment(&self, ts: &JsString) -> u32 {
        let i = self.points.partition_point(|p| p.js_cmp(ts).is_lt());
        let on_point = self.points.get(i).is_some_and(|p| p.js_cmp(ts).is_eq());
        (2 * i + usize::from(on_point)) as u32
    }

    /// Stamps whose window holds `ts`.
    fn query(&self, ts: &JsString, out: &mut Vec<u32>) {
        if self.items.is_empty() {
            return;
        }
        // Windows starting at or before ts.
        let end = self.items.partition_point(|(from, _, _)| match from {
            None => true,
            Some(f) => f.js_cmp(ts).is_le(),
        });
        if end == 0 {
            return;
        }
        let mut stack = vec![(1usize, 0usize, self.size)];
        while let Some((node, lo, hi)) = stack.pop() {
            if lo >= end {
                continue;
            }
            let Some(best) = self.tree[node] else {
                continue;
            };
            let reaches = match &self.items[best].1 {
                None => true,
                Some(to) => to.js_cmp(ts).is_ge(),
            };
            if !reaches {
                continue;
            }
            if hi - lo == 1 {
                out.push(self.items[lo].2);
                continue;
            }
            let mid = (lo + hi) / 2;
            stack.push((2 * node, lo, mid));
            stack.push((2 * node + 1, mid, hi));
        }
    }
}

/// Every stamp of the archive, in fold order, indexed for lookup.
#[derive(Default)]
pub(crate) struct StampIndex {
    stamps: Vec<FoldStamp>,
    by_session: ValueIndex,
    by_message: ValueIndex,
    ranges: RangeIndex,
    /// Range-only stamps (all of them), for a turn whose `ts` is not a string.
    all_ranges: Vec<u32>,
    /// Stamps checked against every turn (odd range bounds).
    general: Vec<u32>,
    /// Each stamp's enrichment entries, keys interned.
    entries: Vec<StampEntries>,
    key_names: Vec<JsString>,
    /// Segment tree over window segments: each node summarises the window
    /// stamps covering all of its segments.
    window_tree: Vec<Summary>,
    window_leaves: usize,
}

/// A bound that leaves the window open on that side (falsy in JavaScript),
/// or a string bound; anything else is not indexable.
fn simple_bound(v: Option<&Value>) -> Result<Option<JsString>, ()> {
    match v {
        None => Ok(None),
        Some(v) if !v.is_truthy() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

impl StampIndex {
    /// Index stamps given in fold order.
    pub(crate) fn new(stamps: Vec<FoldStamp>) -> StampIndex {
        let mut ix = StampIndex::default();
        let mut ranges = Vec::new();
        for (i, s) in stamps.iter().enumerate() {
            let i = i as u32;
            let Some(sel) = s.selector.as_object() else {
                continue; // never matches
            };
            if let Some(sid) = sel.get("sessionId") {
                // Matching needs sessionId === turn.sessionId; a null or an
                // object can never equal the sessionId of an archived turn.
                ix.by_session.insert(sid, i);
            } else if let Some(mid) = sel.get("messageId") {
                ix.by_message.insert(mid, i);
            } else if let Some(range) = sel.get("range") {
                ix.all_ranges.push(i);
                match range {
                    Value::Object(r) => {
                        match (simple_bound(r.get("fromTs")), simple_bound(r.get("toTs"))) {
                            (Ok(from), Ok(to)) => ranges.push((from, to, i)),
                            _ => ix.general.push(i),
                        }
                    }
                    // A null or non-object range puts no bound at all.
                    _ => ranges.push((None, None, i)),
                }
            }
        }
        ix.ranges = RangeIndex::build(ranges);
        let mut interned: HashMap<JsString, KeyId> = HashMap::new();
        for st in &stamps {
            let mut e = StampEntries::default();
            for_each_entry(&st.enrichment, |k, v| {
                if k == *"__proto__" {
                    if matches!(v, Value::Object(_) | Value::Null) {
                        e.proto = Some(v);
                    }
                    return;
                }
                let next = interned.len() as KeyId;
                let id = *interned.entry(k.clone()).or_insert_with(|| {
                    ix.key_names.push(k);
                    next
                });
                e.keys.push((id, v));
            });
            ix.entries.push(e);
        }
        ix.build_window_tree();
        ix.stamps = stamps;
        ix
    }

    /// Place every window stamp on the segments its window covers.
    fn build_window_tree(&mut self) {
        let segments = 2 * self.ranges.points.len() + 1;
        let n = segments.next_power_of_two();
        self.window_leaves = n;
        self.window_tree = vec![Summary::default(); 2 * n];
        let seg_of = |b: &Option<JsString>, open: usize| match b {
            None => open,
            Some(p) => {
                let i = self.ranges.points.partition_point(|q| q.js_cmp(p).is_lt());
                2 * i + 1
            }
        };
        for (from, to, stamp) in &self.ranges.items {
            let lo = seg_of(from, 0);
            let hi = seg_of(to, segments - 1);
            if lo > hi {
                continue; // an empty window
            }
            let (mut l, mut r) = (lo + n, hi + n + 1);
            while l < r {
                if l & 1 == 1 {
                    self.window_tree[l].add_stamp(*stamp, &self.entries[*stamp as usize]);
                    l += 1;
                }
                if r & 1 == 1 {
                    r -= 1;
                    self.window_tree[r].add_stamp(*stamp, &self.entries[*stamp as usize]);
                }
                l /= 2;
                r /= 2;
            }
        }
    }

    /// What the window stamps covering `seg` assign.
    fn window_summary(&self, seg: u32) -> Summary {
        let mut out = Summary::default();
        let mut node = seg as usize + self.window_leaves;
        while node >= 1 {
            out.merge(&self.window_tree[node]);
            node /= 2;
        }
        out
    }

    /// The enrichment an assignment summary stands for.
    fn materialize(&self, s: &Summary) -> std::result::Result<EnrichmentCols, String> {
        let mut order: Vec<((u32, u32), KeyId, u32)> = s
            .slots
            .iter()
            .filter(|(k, _)| **k != PROTO_KEY)
            .map(|(k, slot)| (slot.first, *k, slot.last))
            .collect();
        order.sort_unstable_by_key(|(first, _, _)| *first);
        let mut folded = Folded::default();
        for (_, key, last) in order {
            let value = self.entries[last as usize]
                .keys
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            folded
                .own
                .insert(self.key_names[key as usize].clone(), value);
        }
        if let Some(slot) = s.slots.get(&PROTO_KEY) {
            folded.proto = self.entries[slot.last as usize].proto.clone();
        }
        folded.columns()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_session.is_empty()
            && self.by_message.is_empty()
            && self.all_ranges.is_empty()
            && self.general.is_empty()
    }

    /// Matching stamps that are not window-only stamps, in fold order.
    fn other_matches(&self, turn: &Value, out: &mut Vec<u32>) {
        out.clear();
        let checked = self
            .by_session
            .get(turn.get("sessionId"))
            .iter()
            .chain(self.by_message.get(turn.get("messageId")))
            .chain(&self.general)
            .copied()
            .filter(|&i| stamp_matches(&self.stamps[i as usize].selector, turn));
        out.extend(checked);
        out.sort_unstable();
        out.dedup();
    }

    /// Window-only stamps matching `turn`, unordered.
    fn window_matches(&self, turn: &Value, out: &mut Vec<u32>) {
        match turn.get("ts") {
            // Window hits are exact: those stamps have no other field.
            Some(Value::String(ts)) => self.ranges.query(ts, out),
            _ => out.extend(
                self.all_ranges
                    .iter()
                    .copied()
                    .filter(|&i| stamp_matches(&self.stamps[i as usize].selector, turn)),
            ),
        }
    }

    /// The stamps that match `turn` (an object with at least `sessionId`,
    /// `messageId` and `ts`), in fold order.
    pub(crate) fn matching(&self, turn: &Value, out: &mut Vec<u32>) {
        out.clear();
        if self.is_empty() {
            return;
        }
        let mut others = Vec::new();
        self.other_matches(turn, &mut others);
        self.window_matches(turn, out);
        out.extend(others);
        out.sort_unstable();
        out.dedup();
    }

    /// Fold the given stamps (in fold order).
    pub(crate) fn fold_stamps(&self, matched: &[u32]) -> Folded {
        let mut out = Folded::default();
        for &i in matched {
            out.apply(&self.stamps[i as usize].enrichment);
        }
        out
    }

    /// The enrichment the reference folds onto `turn`.
    #[cfg(test)]
    pub(crate) fn fold(&self, turn: &Value) -> Folded {
        let mut m = Vec::new();
        self.matching(turn, &mut m);
        self.fold_stamps(&m)
    }
}

/// Interned enrichment key; [`PROTO_KEY`] stands for `__proto__`.
type KeyId = u32;
const PROTO_KEY: KeyId = KeyId::MAX;

/// `Object.entries` of one stamp's enrichment.
#[derive(Default)]
struct StampEntries {
    keys: Vec<(KeyId, Value)>,
    /// An object (or null) assigned to `__proto__`.
    proto: Option<Value>,
}

/// Where a key is first assigned (stamp, position in its entries) and
/// which stamp assigns it last: all a fold needs, since the last value
/// wins and the key keeps its first place.
#[derive(Debug, Clone, Copy)]
struct Slot {
    first: (u32, u32),
    last: u32,
}

/// The assignments of a set of stamps, mergeable in any order.
#[derive(Debug, Clone, Default)]
struct Summary {
    slots: HashMap<KeyId, Slot>,
}

impl Summary {
    fn put(&mut self, key: KeyId, slot: Slot) {
        self.slots
            .entry(key)
            .and_modify(|s| {
                s.first = s.first.min(slot.first);
                s.last = s.last.max(slot.last);
            })
            .or_insert(slot);
    }

    fn add_stamp(&mut self, order: u32, e: &StampEntries) {
        for (pos, (key, _)) in e.keys.iter().enumerate() {
            self.put(
                *key,
                Slot {
                    first: (order, pos as u32),
                    last: order,
                },
            );
        }
        if e.proto.is_some() {
            self.put(
                PROTO_KEY,
                Slot {
                    first: (order, 0),
                    last: order,
                },
            );
        }
    }

    fn merge(&mut self, other: &Summary) {
        for (k, slot) in &other.slots {
            self.put(*k, *slot);
        }
    }
}

/// Folds are memoised: turns in the same stretch between window bounds
/// with the same session and message matches fold alike. Window stamps
/// are summarised per stretch through a segment tree, so a turn costs
/// about the number of distinct keys, however many windows cover it.
#[derive(Default)]
pub(crate) struct FoldCache {
    others: Vec<u32>,
    windows: HashMap<u32, Summary>,
    memo: HashMap<(u32, Vec<u32>), std::result::Result<EnrichmentCols, String>>,
}

const FOLD_CACHE_ENTRIES: usize = 4096;

impl FoldCache {
    /// The enrichment columns of `turn`, or why they cannot be bound.
    pub(crate) fn columns(
        &mut self,
        index: &StampIndex,
        turn: &Value,
    ) -> std::result::Result<EnrichmentCols, String> {
        if index.is_empty() {
            return Ok(EnrichmentCols::empty());
        }
        let Some(Value::String(ts)) = turn.get("ts") else {
            let mut m = Vec::new();
            index.matching(turn, &mut m);
            return index.fold_stamps(&m).columns();
        };
        let seg = index.ranges.segment(ts);
        index.other_matches(turn, &mut self.others);
        let key = (seg, std::mem::take(&mut self.others));
        if let Some(hit) = self.memo.get(&key) {
            let out = hit.clone();
            self.others = key.1;
            return out;
        }
        if self.windows.len() >= FOLD_CACHE_ENTRIES {
            self.windows.clear();
        }
        let windows = self
            .windows
            .entry(seg)
            .or_insert_with(|| index.window_summary(seg));
        let cols = if windows.slots.is_empty() && key.1.is_empty() {
            Ok(EnrichmentCols::empty())
        } else {
            let mut s = windows.clone();
            for &o in &key.1 {
                s.add_stamp(o, &index.entries[o as usize]);
            }
            index.materialize(&s)
        };
        if self.memo.len() >= FOLD_CACHE_ENTRIES {
            self.memo.clear();
        }
        self.memo.insert(key, cols.clone());
        cols
    }
}

/// `Object.entries(e)` for the values JSON can hold.
fn for_each_entry(e: &Value, mut f: impl FnMut(JsString, Value)) {
    match e {
        Value::Object(o) => {
            for (k, v) in o.iter() {
                f(k.clone(), v.clone());
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                f(JsString::from(i.to_string()), v.clone());
            }
        }
        Value::String(s) => {
            let units: Vec<u16> = match s {
                JsString::Utf16(u) => u.to_vec(),
                JsString::Utf8(t) => t.encode_utf16().collect(),
            };
            for (i, u) in units.into_iter().enumerate() {
                let ch = match String::from_utf16(&[u]) {
                    Ok(c) => JsString::from(c),
                    Err(_) => JsString::Utf16(Box::new([u])),
                };
                f(JsString::from(i.to_string()), Value::String(ch));
            }
        }
        _ => {}
    }
}

/// The enrichment object built by assigning each matching stamp's entries
/// in turn onto a plain object.
#[derive(Default)]
pub(crate) struct Folded {
    own: Object,
    /// Assigning `__proto__` an object replaces the prototype instead of
    /// adding a key; lookups then fall through to it.
    proto: Option<Value>,
}

impl Folded {
    /// `for (const [k, v] of Object.entries(e)) out[k] = v`.
    pub(crate) fn apply(&mut self, e: &Value) {
        for_each_entry(e, |k, v| self.assign(k, v));
    }

    fn assign(&mut self, k: JsString, v: Value) {
        if k == *"__proto__" {
            if matches!(v, Value::Object(_) | Value::Null) {
                self.proto = Some(v);
            }
            return;
        }
        self.own.insert(k, v);
    }

    /// `out[key]`, prototype included.
    fn lookup(&self, key: &str) -> Option<&Value> {
        self.own
            .get(key)
            .or_else(|| self.proto.as_ref().and_then(|p| p.get(key)))
    }

    /// The enrichment columns; fails where binding would fail.
    pub(crate) fn columns(self) -> Result<EnrichmentCols, String> {
        let col = |key: &str| match self.lookup(key) {
            None | Some(Value::Null) => Ok(Sv::Null),
            Some(v) => bindable(v).ok_or_else(|| format!("enrichment {key} is not a string")),
        };
        let workflow_id = col("workflowId")?;
        let agent_id = col("agentId")?;
        let persona = col("persona")?;
        let tier = col("tier")?;
        let json = Value::Object(self.own).to_json();
        Ok(EnrichmentCols {
            workflow_id,
            agent_id,
            persona,
            tier,
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    fn st(sel: &str, enr: &str) -> FoldStamp {
        FoldStamp {
            selector: parse(sel).unwrap(),
            enrichment: parse(enr).unwrap(),
        }
    }

    fn copies(stamps: &[FoldStamp]) -> Vec<FoldStamp> {
        stamps
            .iter()
            .map(|s| FoldStamp {
                selector: s.selector.clone(),
                enrichment: s.enrichment.clone(),
            })
            .collect()
    }

    /// The fold by its definition: every stamp in order, no index.
    fn fold_linearly(stamps: &[FoldStamp], turn: &Value) -> Folded {
        let mut want = Folded::default();
        for s in stamps {
            if stamp_matches(&s.selector, turn) {
                want.apply(&s.enrichment);
            }
        }
        want
    }

    fn fold_json(ix: &StampIndex, turn: &str) -> String {
        let via_cache = FoldCache::default()
            .columns(ix, &parse(turn).unwrap())
            .unwrap()
            .json;
        let direct = ix.fold(&parse(turn).unwrap()).columns().unwrap().json;
        assert_eq!(via_cache, direct);
        direct
    }

    #[test]
    fn later_stamps_win_and_selectors_filter() {
        let ix = StampIndex::new(vec![
            st(r#"{"sessionId":"s"}"#, r#"{"a":"1","b":"1"}"#),
            st(r#"{"messageId":"m"}"#, r#"{"b":"2"}"#),
            st(r#"{"range":{"fromTs":"2026-01-02"}}"#, r#"{"c":"3"}"#),
            st(r#"{"range":{"toTs":"2026-01-01"}}"#, r#"{"d":"4"}"#),
            st(r#"{"sessionId":"t"}"#, r#"{"e":"5"}"#),
        ]);
        assert_eq!(
            fold_json(
                &ix,
                r#"{"sessionId":"s","messageId":"m","ts":"2026-01-03"}"#
            ),
            r#"{"a":"1","b":"2","c":"3"}"#
        );
        assert_eq!(
            fold_json(
                &ix,
                r#"{"sessionId":"u","messageId":"x","ts":"2026-01-01"}"#
            ),
            r#"{"d":"4"}"#
        );
    }

    #[test]
    fn many_ranges_agree_with_a_linear_scan() {
        let mut stamps = Vec::new();
        for i in 0..200u32 {
            let from = format!("{:04}", (i * 37) % 1000);
            let to = format!("{:04}", (i * 37) % 1000 + (i % 50) * 3);
            let sel = if i % 7 == 0 {
                format!(r#"{{"range":{{"toTs":"{to}"}}}}"#)
            } else {
                format!(r#"{{"range":{{"fromTs":"{from}","toTs":"{to}"}}}}"#)
            };
            stamps.push(st(&sel, &format!(r#"{{"k{i}":"v"}}"#)));
        }
        let linear = copies(&stamps);
        let ix = StampIndex::new(stamps);
        for t in (0..1100).step_by(13) {
            let turn = parse(&format!(
                r#"{{"sessionId":"s","messageId":"m","ts":"{t:04}"}}"#
            ))
            .unwrap();
            let want = fold_linearly(&linear, &turn);
            assert_eq!(
                ix.fold(&turn).columns().unwrap().json,
                want.columns().unwrap().json,
                "ts {t}"
            );
        }
    }

    #[test]
    fn string_enrichment_spreads_its_characters_and_proto_is_not_a_key() {
        let mut f = Folded::default();
        f.apply(&parse(r#""ab""#).unwrap());
        f.apply(&parse(r#"{"__proto__":{"tier":"x"},"persona":"p"}"#).unwrap());
        let c = f.columns().unwrap();
        assert_eq!(c.json, r#"{"0":"a","1":"b","persona":"p"}"#);
        assert_eq!(c.tier, Sv::Text("x".into()));
    }

    #[test]
    fn memoised_summaries_equal_the_linear_fold_on_mixed_stamps() {
        // A small deterministic generator (no dependency needed).
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let keys = ["a", "b", "c", "workflowId", "tier", "0", "1"];
        let mut stamps = Vec::new();
        for _ in 0..300 {
            let sel = match next(5) {
                0 => format!(r#"{{"sessionId":"s{}"}}"#, next(4)),
                1 => format!(r#"{{"messageId":"m{}"}}"#, next(20)),
                2 => format!(
                    r#"{{"sessionId":"s{}","range":{{"toTs":"{:03}"}}}}"#,
                    next(4),
                    next(100)
                ),
                _ => {
                    let a = next(100);
                    let b = a + next(60);
                    match next(4) {
                        0 => format!(r#"{{"range":{{"fromTs":"{a:03}"}}}}"#),
                        1 => format!(r#"{{"range":{{"toTs":"{b:03}"}}}}"#),
                        2 => r#"{"range":{"fromTs":"","toTs":null}}"#.to_string(),
                        _ => format!(r#"{{"range":{{"fromTs":"{a:03}","toTs":"{b:03}"}}}}"#),
                    }
                }
            };
            let enr = match next(10) {
                0 => r#"["x","y"]"#.to_string(),
                1 => r#""zz""#.to_string(),
                2 => r#"{"__proto__":{"tier":"p"},"c":"proto"}"#.to_string(),
                _ => {
                    let mut parts = Vec::new();
                    for _ in 0..=next(3) {
                        let k = keys[next(keys.len() as u64) as usize];
                        parts.push(format!(r#""{k}":"v{}""#, next(1000)));
                    }
                    parts.dedup();
                    format!("{{{}}}", parts.join(","))
                }
            };
            stamps.push(st(&sel, &enr));
        }
        let copy = copies(&stamps);
        let ix = StampIndex::new(stamps);
        let mut cache = FoldCache::default();
        for _ in 0..2000 {
            let turn = parse(&format!(
                r#"{{"sessionId":"s{}","messageId":"m{}","ts":"{:03}"}}"#,
                next(5),
                next(25),
                next(170)
            ))
            .unwrap();
            let want = fold_linearly(&copy, &turn).columns().unwrap();
            let got = cache.columns(&ix, &turn).unwrap();
            assert_eq!(got.json, want.json, "{turn:?}");
            assert_eq!(got.tier, want.tier, "{turn:?}");
            assert_eq!(got.workflow_id, want.workflow_id, "{turn:?}");
        }
    }
}
