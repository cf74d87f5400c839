//! Ledger queries (SPEC §5): streaming readers for every record kind, with
//! the reference's filters and stamp folding.
//!
//! Lines are read as Node's readline reads them (see `jsonl.rs`); blank,
//! malformed and unknown lines are skipped. A line of a known kind whose
//! `record` is missing or not an object is skipped too (the reference
//! would throw or yield a shapeless value).

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::ErrorKind;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::json::{JsString, Object, Value};
use crate::jsonl::{for_each_logical, LineScanner, Parsed};
use crate::ledger::Ledger;
use crate::records::{line_kind, stamp_matches, Kind};

/// A ledger query filter, as the reference's `Query`. Empty strings count
/// as absent (the reference tests them for truthiness).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub since: Option<String>,
    pub until: Option<String>,
    pub project: Option<String>,
    pub session_id: Option<String>,
    pub source: Option<String>,
    pub enrichment: Vec<(String, String)>,
}

impl Query {
    /// Read a camelCase filter object
    /// (`{since, until, project, sessionId, source, enrichment}`); fields of
    /// another type are ignored.
    pub fn from_json(v: &Value) -> Query {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let enrichment = v
            .get("enrichment")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Query {
            since: s("since"),
            until: s("until"),
            project: s("project"),
            session_id: s("sessionId"),
            source: s("source"),
            enrichment,
        }
    }
}

/// A query with its strings prepared for JavaScript comparisons.
#[derive(Debug, Clone)]
pub(crate) struct Filters {
    since: Option<JsString>,
    until: Option<JsString>,
    project: Option<String>,
    session_id: Option<String>,
    source: Option<String>,
    enrichment: Vec<(String, String)>,
}

fn truthy(s: &Option<String>) -> Option<&String> {
    s.as_ref().filter(|s| !s.is_empty())
}

impl Filters {
    pub(crate) fn new(q: &Query) -> Filters {
        Filters {
            since: truthy(&q.since).map(|s| JsString::from(s.as_str())),
            until: truthy(&q.until).map(|s| JsString::from(s.as_str())),
            project: truthy(&q.project).cloned(),
            session_id: truthy(&q.session_id).cloned(),
            source: truthy(&q.source).cloned(),
            enrichment: q.enrichment.clone(),
        }
    }

    /// `ts < since` or `ts > until` (inclusive bounds).
    fn out_of_range(&self, ts: Option<&Value>) -> bool {
        if let Some(since) = &self.since {
            if js_compare(ts, since) == Some(Ordering::Less) {
                return true;
            }
        }
        if let Some(until) = &self.until {
            if js_compare(ts, until) == Some(Ordering::Greater) {
                return true;
            }
        }
        false
    }

    fn session_and_source(&self, r: &Value) -> bool {
        if let Some(sid) = &self.session_id {
            if !str_eq(r.get("sessionId"), sid) {
                return false;
            }
        }
        if let Some(src) = &self.source {
            if !str_eq(r.get("source"), src) {
                return false;
            }
        }
        true
    }

    /// The turn filters that do not need the folded enrichment.
    fn turn_without_enrichment(&self, t: &Value) -> bool {
        if self.out_of_range(t.get("ts")) {
            return false;
        }
        if let Some(p) = &self.project {
            if !str_eq(t.get("project"), p) && !str_eq(t.get("projectKey"), p) {
                return false;
            }
        }
        self.session_and_source(t)
    }

    fn enrichment_matches(&self, e: &Object) -> bool {
        self.enrichment.iter().all(|(k, v)| str_eq(e.get(k), v))
    }
}

/// `a === b` for a record field against a query string.
fn str_eq(v: Option<&Value>, s: &str) -> bool {
    matches!(v, Some(Value::String(js)) if js == s)
}

/// JavaScript's relational comparison of a record field with a string;
/// `None` when the answer is "false both ways" (NaN, undefined).
fn js_compare(a: Option<&Value>, b: &JsString) -> Option<Ordering> {
    let num = |x: f64, b: &JsString| {
        let y = string_to_number(&b.to_lossy());
        x.partial_cmp(&y)
    };
    match a? {
        Value::String(s) => Some(s.js_cmp(b)),
        Value::Number(n) => num(*n, b),
        Value::Null => num(0.0, b),
        Value::Bool(x) => num(f64::from(u8::from(*x)), b),
        // Objects and arrays become strings first ("[object Object]", "a,b").
        other => Some(JsString::from(other.js_to_string().as_ref()).js_cmp(b)),
    }
}

use crate::js::string_to_number;

/// The parsed JSON lines of the ledger, in file order. Stops with the
/// first read error.
pub struct LedgerLines {
    path: PathBuf,
    scanner: Option<LineScanner<File>>,
    pending: VecDeque<Value>,
}

impl LedgerLines {
    fn open(path: PathBuf) -> Result<LedgerLines> {
        let scanner = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => match LineScanner::open_at(&path, 0) {
                Ok(s) => Some(s),
                Err(e) if e.kind() == ErrorKind::NotFound => None,
                Err(e) => return Err(Error::io("open", &path, e)),
            },
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        Ok(LedgerLines {
            path,
            scanner,
            pending: VecDeque::new(),
        })
    }
}

impl Iterator for LedgerLines {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Some(Ok(v));
            }
            let sc = self.scanner.as_mut()?;
            match sc.next_line() {
                Err(e) => {
                    self.scanner = None;
                    return Some(Err(Error::io("read", &self.path, e)));
                }
                Ok(None) => {
                    self.scanner = None;
                    return None;
                }
                Ok(Some(line)) => {
                    if line.oversized {
                        continue;
                    }
                    let pending = &mut self.pending;
                    for_each_logical(line.bytes, |p| {
                        if let Parsed::Value(v) = p {
                            pending.push_back(v);
                        }
                    });
                }
            }
        }
    }
}

/// The record of a line of `kind`, when it is an object.
fn take_record(line: Value, kind: Kind) -> Option<Value> {
    if line_kind(&line) != Some(kind) {
        return None;
    }
    let rec = line.into_object()?.remove("record")?;
    rec.as_object().is_some().then_some(rec)
}

/// The next record of `kind` in `lines` that `keep` turns into an item;
/// read errors are passed on as items.
fn next_kept(
    lines: &mut LedgerLines,
    kind: Kind,
    mut keep: impl FnMut(Value) -> Option<Value>,
) -> Option<Result<Value>> {
    loop {
        let line = match lines.next()? {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        if let Some(item) = take_record(line, kind).and_then(&mut keep) {
            return Some(Ok(item));
        }
    }
}

type Passes = fn(&Value, &Filters) -> bool;

/// Records of one kind passing a query.
pub struct Records {
    lines: LedgerLines,
    kind: Kind,
    filters: Filters,
    passes: Passes,
}

impl Iterator for Records {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        let (passes, filters) = (self.passes, &self.filters);
        next_kept(&mut self.lines, self.kind, |rec| {
            passes(&rec, filters).then_some(rec)
        })
    }
}

fn compaction_passes(e: &Value, f: &Filters) -> bool {
    !f.out_of_range(e.get("ts")) && f.session_and_source(e)
}

/// Bounds apply only when the record has a truthy `ts`.
fn ts_if_truthy(r: &Value) -> Option<&Value> {
    r.get("ts").filter(|t| t.is_truthy())
}

fn relationship_passes(r: &Value, f: &Filters) -> bool {
    if let Some(ts) = ts_if_truthy(r) {
        if f.out_of_range(Some(ts)) {
            return false;
        }
    }
    if let Some(sid) = &f.session_id {
        if !str_eq(r.get("sessionId"), sid) && !str_eq(r.get("relatedSessionId"), sid) {
            return false;
        }
    }
    match &f.source {
        Some(src) => str_eq(r.get("source"), src),
        None => true,
    }
}

fn tool_result_event_passes(r: &Value, f: &Filters) -> bool {
    if let Some(ts) = ts_if_truthy(r) {
        if f.out_of_range(Some(ts)) {
            return false;
        }
    }
    f.session_and_source(r)
}

fn user_turn_passes(r: &Value, f: &Filters) -> bool {
    !f.out_of_range(r.get("ts")) && f.session_and_source(r)
}

/// Every stamp of the ledger, in application order, indexed by what their
/// selector can match so a turn only meets the stamps that may apply.
pub(crate) struct Stamps {
    list: Vec<(Value, Object)>,
    by_session: HashMap<String, Vec<usize>>,
    by_message: HashMap<String, Vec<usize>>,
    general: Vec<usize>,
}

impl Stamps {
    fn collect(path: PathBuf) -> Result<Stamps> {
        Stamps::from_lines(LedgerLines::open(path)?)
    }

    /// Stamps from parsed ledger lines in ledger order; other kinds are
    /// passed over.
    fn from_lines(lines: impl IntoIterator<Item = Result<Value>>) -> Result<Stamps> {
        let mut found: Vec<(JsString, Value, Object)> = Vec::new();
        for line in lines {
            let line = line?;
            if line_kind(&line) != Some(Kind::Stamp) {
                continue;
            }
            let Some(mut o) = line.into_object() else {
                continue;
            };
            // The reference sorts with `ts.localeCompare`; ISO timestamps
            // order the same in code-unit order, which is used here. A
            // stamp without a string ts sorts first.
            let ts = match o.get("ts") {
                Some(Value::String(s)) => s.clone(),
                _ => JsString::from(""),
            };
            let selector = o.remove("selector").unwrap_or(Value::Null);
            let enrichment = o
                .remove("enrichment")
                .and_then(Value::into_object)
                .unwrap_or_default();
            found.push((ts, selector, enrichment));
        }
        found.sort_by(|a, b| a.0.js_cmp(&b.0));
        Ok(Stamps::from_ordered(
            found.into_iter().map(|(_, sel, enr)| (sel, enr)),
        ))
    }

    /// Stamps already in application order, as `(selector, enrichment)`.
    pub(crate) fn from_ordered(found: impl IntoIterator<Item = (Value, Object)>) -> Stamps {
        let mut s = Stamps {
            list: Vec::new(),
            by_session: HashMap::new(),
            by_message: HashMap::new(),
            general: Vec::new(),
        };
        for (i, (selector, enrichment)) in found.into_iter().enumerate() {
            let key = |k: &str| -> Option<Option<String>> {
                let v = selector.get(k)?;
                Some(v.as_js_string().map(|s| s.to_lossy().into_owned()))
            };
            match (key("sessionId"), key("messageId")) {
                (Some(Some(sid)), _) => s.by_session.entry(sid).or_default().push(i),
                (None, Some(Some(mid))) => s.by_message.entry(mid).or_default().push(i),
                _ => s.general.push(i),
            }
            s.list.push((selector, enrichment));
        }
        s
    }

    /// The enrichment of `turn`: matching stamps applied in order, later
    /// keys overwriting earlier ones.
    fn fold(&self, turn: &Value) -> Object {
        let mut out = Object::new();
        if self.list.is_empty() {
            return out;
        }
        let lookup = |map: &HashMap<String, Vec<usize>>, k: &str| -> Vec<usize> {
            match turn.get(k).and_then(Value::as_js_string) {
                Some(s) => map.get(s.to_lossy().as_ref()).cloned().unwrap_or_default(),
                None => Vec::new(),
            }
        };
        let mut candidates = lookup(&self.by_session, "sessionId");
        candidates.extend(lookup(&self.by_message, "messageId"));
        candidates.extend_from_slice(&self.general);
        candidates.sort_unstable();
        for i in candidates {
            let (selector, enrichment) = &self.list[i];
            if stamp_matches(selector, turn) {
                for (k, v) in enrichment.iter() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }
}

/// Turns passing a query, each with its folded `enrichment`.
pub struct Turns {
    lines: LedgerLines,
    stamps: Stamps,
    filters: Filters,
}

impl Iterator for Turns {
    type Item = Result<Value>;

    fn next(&mut self) -> Option<Result<Value>> {
        let (stamps, filters) = (&self.stamps, &self.filters);
        next_kept(&mut self.lines, Kind::Turn, |rec| {
            enrich_turn(rec, stamps, filters)
        })
    }
}

/// A turn record with its folded `enrichment`, when it passes `filters`.
pub(crate) fn enrich_turn(mut rec: Value, stamps: &Stamps, filters: &Filters) -> Option<Value> {
    if !filters.turn_without_enrichment(&rec) {
        return None;
    }
    let enrichment = stamps.fold(&rec);
    if !filters.enrichment_matches(&enrichment) {
        return None;
    }
    if let Some(o) = rec.as_object_mut() {
        // `{...record, enrichment}`: appended, or replaced in place.
        o.insert("enrichment", Value::Object(enrichment));
    }
    Some(rec)
}

/// The reference's filter for a record of `kind` (not turns, not stamps).
pub(crate) fn passes(kind: Kind, rec: &Value, filters: &Filters) -> bool {
    match kind {
        Kind::Compaction => compaction_passes(rec, filters),
        Kind::Relationship => relationship_passes(rec, filters),
        Kind::ToolResultEvent => tool_result_event_passes(rec, filters),
        Kind::UserTurn => user_turn_passes(rec, filters),
        Kind::Turn | Kind::Stamp => true,
    }
}

/// A query's filter for records that come from elsewhere than the ledger
/// file (a team database), with the ledger query's exact semantics: the
/// same filters, and for turns the same stamp folding.
pub struct RecordFilter {
    kind: Kind,
    filters: Filters,
    stamps: Stamps,
}

impl RecordFilter {
    /// A filter for records of `kind`. `stamp_lines` are stamp lines in
    /// ledger order (only turns use them); other lines are ignored.
    pub fn new(
        kind: Kind,
        q: &Query,
        stamp_lines: impl IntoIterator<Item = Result<Value>>,
    ) -> Result<RecordFilter> {
        let stamps = if kind == Kind::Turn {
            Stamps::from_lines(stamp_lines)?
        } else {
            Stamps::from_lines(std::iter::empty())?
        };
        Ok(RecordFilter {
            kind,
            filters: Filters::new(q),
            stamps,
        })
    }

    /// The record as the ledger query would return it, or `None`.
    pub fn apply(&self, rec: Value) -> Option<Value> {
        rec.as_object()?;
        match self.kind {
            Kind::Turn => enrich_turn(rec, &self.stamps, &self.filters),
            Kind::Stamp => None,
            kind => passes(kind, &rec, &self.filters).then_some(rec),
        }
    }
}

/// The session id and source a query narrows to, as the filters read
/// them (empty strings do not filter), for backends that can look them up
/// by index before applying [`RecordFilter`].
pub fn narrowing(q: &Query) -> (Option<&str>, Option<&str>) {
    (
        truthy(&q.session_id).map(String::as_str),
        truthy(&q.source).map(String::as_str),
    )
}

impl Ledger {
    /// Stream the turns matching `q`, each with an `enrichment` object
    /// folded from every stamp in the ledger (SPEC §5).
    ///
    /// Memory holds the stamps, not the ledger: the file is read twice,
    /// once for the stamps and once for the turns.
    ///
    /// ```
    /// use relayburn_ledger::{json, Ledger, LedgerHome, Query};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ledger = Ledger::open(LedgerHome::new(dir.path()))?;
    /// for (m, ts) in [("m1", "2026-04-19T00:00:00.000Z"), ("m2", "2026-04-20T12:00:00.000Z")] {
    ///     let t = json::parse(&format!(r#"{{"source":"codex","sessionId":"s","messageId":"{m}",
    ///         "ts":"{ts}","model":"M","usage":{{"input":1,"output":1}},"toolCalls":[]}}"#))?;
    ///     ledger.append_turns(vec![t])?;
    /// }
    /// let q = Query { since: Some("2026-04-20T00:00:00.000Z".into()), ..Query::default() };
    /// let got: Vec<_> = ledger.query_turns(&q)?.collect::<Result<_, _>>()?;
    /// assert_eq!(got.len(), 1);
    /// assert_eq!(got[0].get("messageId").unwrap().as_str(), Some("m2"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn query_turns(&self, q: &Query) -> Result<Turns> {
        let path = self.home().ledger();
        let stamps = Stamps::collect(path.clone())?;
        Ok(Turns {
            lines: LedgerLines::open(path)?,
            stamps,
            filters: Filters::new(q),
        })
    }

    fn records(&self, kind: Kind, q: &Query, passes: Passes) -> Result<Records> {
        Ok(Records {
            lines: LedgerLines::open(self.home().ledger())?,
            kind,
            filters: Filters::new(q),
            passes,
        })
    }

    /// Compaction events matching `since`, `until`, `sessionId`, `source`.
    pub fn query_compactions(&self, q: &Query) -> Result<Records> {
        self.records(Kind::Compaction, q, compaction_passes)
    }

    /// Relationships; `sessionId` matches either end of the edge, and the
    /// time bounds only apply to records that have a `ts`.
    pub fn query_relationships(&self, q: &Query) -> Result<Records> {
        self.records(Kind::Relationship, q, relationship_passes)
    }

    /// Tool result events; the time bounds only apply to records with a `ts`.
    pub fn query_tool_result_events(&self, q: &Query) -> Result<Records> {
        self.records(Kind::ToolResultEvent, q, tool_result_event_passes)
    }

    /// User turns matching `since`, `until`, `sessionId`, `source`.
    pub fn query_user_turns(&self, q: &Query) -> Result<Records> {
        self.records(Kind::UserTurn, q, user_turn_passes)
    }

    /// Every parsed line of the ledger, whatever its kind.
    pub fn lines(&self) -> Result<LedgerLines> {
        LedgerLines::open(self.home().ledger())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn query_from_json_reads_camel_case() {
        let q = Query::from_json(
            &parse(r#"{"since":"a","sessionId":"s","source":5,"enrichment":{"k":"v","n":1}}"#)
                .unwrap(),
        );
        assert_eq!(q.since.as_deref(), Some("a"));
        assert_eq!(q.session_id.as_deref(), Some("s"));
        assert_eq!(q.source, None);
        assert_eq!(q.enrichment, vec![("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn relational_comparison_follows_javascript() {
        let b = JsString::from("2026");
        let v = |s: &str| parse(s).unwrap();
        assert_eq!(js_compare(Some(&v(r#""2025""#)), &b), Some(Ordering::Less));
        assert_eq!(js_compare(None, &b), None);
        assert_eq!(js_compare(Some(&v("2027")), &b), Some(Ordering::Greater));
        assert_eq!(js_compare(Some(&v("null")), &b), Some(Ordering::Less));
        assert_eq!(js_compare(Some(&v("1")), &JsString::from("x")), None);
        assert_eq!(string_to_number(" 0x1f "), 31.0);
        assert_eq!(string_to_number("1e3"), 1000.0);
        assert!(string_to_number("inf").is_nan());
        assert_eq!(string_to_number("-Infinity"), f64::NEG_INFINITY);
        assert_eq!(string_to_number(""), 0.0);
    }

    #[test]
    fn empty_strings_do_not_filter() {
        let f = Filters::new(&Query {
            since: Some(String::new()),
            session_id: Some(String::new()),
            ..Query::default()
        });
        assert!(f.turn_without_enrichment(&parse(r#"{"ts":"x","sessionId":"s"}"#).unwrap()));
    }
}
