//! State beside the ledger: the small state files — ingest cursors
//! (`cursors.json`), high-water marks (`hwm.json`) and user configuration
//! (`config.json`) — and the derived state as a whole: its status
//! ([`status`]), its reset ([`reset`]) and its consistency ([`check`]).
//!
//! Entries of the state files are kept as JSON so that fields this crate
//! does not know, and fields another version wrote, survive a rewrite.

pub mod check;
pub mod counts;
pub mod reset;
pub mod status;

use std::io::ErrorKind;
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsio::{replace_file, replace_file_via, tmp_path};
use crate::home::Env;
use crate::js::string_to_number;
use crate::json::{self, write_string, Object, Value};
use crate::ledger::Ledger;

/// Read a file as text; `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// The parsed document of a cursors file and its `files` map; a missing or
/// malformed file gives an empty map.
fn read_cursors_doc(path: &Path) -> Result<(Option<Object>, Object)> {
    let Some(text) = read_optional(path)? else {
        return Ok((None, Object::new()));
    };
    let Some(mut doc) = json::parse(&text).ok().and_then(Value::into_object) else {
        return Ok((None, Object::new()));
    };
    let files = match doc.get_mut("files") {
        Some(Value::Object(o)) => std::mem::take(o),
        _ => Object::new(),
    };
    Ok((Some(doc), files))
}

impl Ledger {
    /// The cursor map (`files` of `cursors.json`); empty when the file is
    /// missing or malformed. Other read errors are reported.
    pub fn load_cursors(&self) -> Result<Object> {
        Ok(read_cursors_doc(&self.home().cursors())?.1)
    }

    /// Replace the whole cursor map. Other top-level fields of the file
    /// are kept.
    pub fn save_cursors(&self, files: &Object) -> Result<()> {
        let files = files.clone();
        self.update_cursors(move |map| {
            *map = files;
            Ok(())
        })
    }

    /// Read, change and write the cursor map under lock `cursors`, so
    /// concurrent writers of different keys do not lose each other's work.
    pub fn update_cursors(&self, mutate: impl FnOnce(&mut Object) -> Result<()>) -> Result<()> {
        let path = self.home().cursors();
        self.with_lock(crate::home::lock_name::CURSORS, || {
            let (doc, mut files) = read_cursors_doc(&path)?;
            mutate(&mut files)?;
            let mut doc = doc.unwrap_or_default();
            doc.insert("files", Value::Object(files));
            let body = to_json_pretty(&Value::Object(doc));
            replace_file(&path, body.as_bytes()).map(drop)
        })
    }

    /// Write only the keys that differ between `before` and `after`
    /// (added, changed or removed), on top of what is on disk now. Nothing
    /// is written when nothing changed.
    pub fn save_cursor_changes(&self, before: &Object, after: &Object) -> Result<()> {
        let mut changes: Vec<(String, Option<Value>)> = Vec::new();
        let mut keys: Vec<&json::JsString> = before.iter().map(|(k, _)| k).collect();
        keys.extend(
            after
                .iter()
                .map(|(k, _)| k)
                .filter(|k| before.get_js(k).is_none()),
        );
        for key in keys {
            let prior = before.get_js(key);
            let next = after.get_js(key);
            let name = key.to_lossy().into_owned();
            match (prior, next) {
                (Some(_), None) => changes.push((name, None)),
                (None, Some(n)) => changes.push((name, Some(n.clone()))),
                (Some(p), Some(n)) if !deep_strict_equal(p, n) => {
                    changes.push((name, Some(n.clone())))
                }
                _ => {}
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        self.update_cursors(|map| {
            for (k, v) in changes {
                match v {
                    Some(v) => map.insert(k, v),
                    None => {
                        map.remove(&k);
                    }
                }
            }
            Ok(())
        })
    }

    /// The high-water marks; empty when `hwm.json` is missing, malformed or
    /// not an object.
    pub fn load_hwm(&self) -> Result<Object> {
        let Some(text) = read_optional(&self.home().hwm())? else {
            return Ok(Object::new());
        };
        Ok(json::parse(&text)
            .ok()
            .and_then(Value::into_object)
            .unwrap_or_default())
    }

    /// Write the high-water marks (atomically, unlike the reference, so a
    /// reader never sees half a file).
    pub fn save_hwm(&self, map: &Object) -> Result<()> {
        let path = self.home().hwm();
        let mut tmp = tmp_path(&path).into_os_string();
        tmp.push(format!(".{}.{}", std::process::id(), unique()));
        let body = to_json_pretty(&Value::Object(map.clone()));
        replace_file_via(&path, Path::new(&tmp), body.as_bytes()).map(drop)
    }

    /// The configuration: `config.json` overridden by the environment,
    /// with the problems found (as the reference words them on stderr).
    pub fn load_config(&self, env: &Env) -> Result<LoadedConfig> {
        let path = self.home().config();
        let mut warnings = Vec::new();
        let file: Option<Value> = match std::fs::read(&path) {
            Ok(b) => match json::parse(&String::from_utf8_lossy(&b)) {
                Ok(v @ (Value::Object(_) | Value::Array(_))) => Some(v),
                Ok(_) => {
                    warnings.push(format!(
                        "[burn] warning: {} is not a JSON object; using defaults",
                        path.display()
                    ));
                    None
                }
                Err(e) => {
                    warnings.push(format!(
                        "[burn] warning: invalid JSON in {} ({e}); using defaults",
                        path.display()
                    ));
                    None
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => {
                warnings.push(format!(
                    "[burn] warning: could not read {}: {e}",
                    path.display()
                ));
                None
            }
        };
        let content = file.as_ref().and_then(|f| f.get("content"));
        let store = pick(
            env.content_store.as_deref().map(Value::str).as_ref(),
            content.and_then(|c| c.get("store")),
            ContentStore::from_value,
            "RELAYBURN_CONTENT_STORE",
            "content.store",
            &mut warnings,
        )
        .unwrap_or(ContentStore::Full);
        let retention_days = pick(
            env.content_ttl_days.as_deref().map(Value::str).as_ref(),
            content.and_then(|c| c.get("retentionDays")),
            Retention::from_value,
            "RELAYBURN_CONTENT_TTL_DAYS",
            "content.retentionDays",
            &mut warnings,
        )
        .unwrap_or(Retention::Days(DEFAULT_RETENTION_DAYS));
        Ok(LoadedConfig {
            config: Config {
                content: ContentConfig {
                    store,
                    retention_days,
                },
            },
            warnings,
        })
    }
}

/// Environment first, then the file; a value present but not understood
/// is reported and skipped. Blank values count as unset.
fn pick<T>(
    env: Option<&Value>,
    file: Option<&Value>,
    parse: fn(&Value) -> Parsed<T>,
    env_name: &str,
    file_name: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    for (v, name) in [(env, env_name), (file, file_name)] {
        let Some(v) = v else { continue };
        match parse(v) {
            Parsed::Ok(t) => return Some(t),
            Parsed::Unset => {}
            Parsed::Invalid => warnings.push(format!(
                "[burn] warning: ignoring invalid {name} value {}",
                v.to_json()
            )),
        }
    }
    None
}

enum Parsed<T> {
    Ok(T),
    Unset,
    Invalid,
}

const DEFAULT_RETENTION_DAYS: f64 = 90.0;

/// What the content sidecars keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentStore {
    Full,
    HashOnly,
    Off,
}

impl ContentStore {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentStore::Full => "full",
            ContentStore::HashOnly => "hash-only",
            ContentStore::Off => "off",
        }
    }

    fn from_value(v: &Value) -> Parsed<ContentStore> {
        let Some(s) = v.as_str() else {
            return Parsed::Invalid;
        };
        match s.to_lowercase().as_str() {
            "full" => Parsed::Ok(ContentStore::Full),
            "hash-only" => Parsed::Ok(ContentStore::HashOnly),
            "off" => Parsed::Ok(ContentStore::Off),
            _ if crate::js::trim(s).is_empty() => Parsed::Unset,
            _ => Parsed::Invalid,
        }
    }
}

/// How long content sidecars are kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retention {
    Days(f64),
    Forever,
}

impl Retention {
    /// Milliseconds, `None` for forever.
    pub fn millis(self) -> Option<f64> {
        match self {
            Retention::Days(d) => Some(d * 24.0 * 60.0 * 60.0 * 1000.0),
            Retention::Forever => None,
        }
    }

    fn from_value(v: &Value) -> Parsed<Retention> {
        let n = match v {
            Value::Number(n) => *n,
            Value::String(s) => {
                let s = s.to_lossy();
                let t = crate::js::trim(&s).to_lowercase();
                if t.is_empty() {
                    // An empty variable must not mean "keep nothing".
                    return Parsed::Unset;
                }
                if t == "forever" {
                    return Parsed::Ok(Retention::Forever);
                }
                string_to_number(&t)
            }
            _ => return Parsed::Invalid,
        };
        if !n.is_finite() {
            return Parsed::Invalid;
        }
        Parsed::Ok(if n < 0.0 {
            Retention::Forever
        } else {
            Retention::Days(n)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContentConfig {
    pub store: ContentStore,
    pub retention_days: Retention,
}

/// The user configuration the ledger reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub content: ContentConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            content: ContentConfig {
                store: ContentStore::Full,
                retention_days: Retention::Days(DEFAULT_RETENTION_DAYS),
            },
        }
    }
}

/// A configuration and the warnings met while reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `util.isDeepStrictEqual` on JSON values: key order does not matter,
/// `0` and `-0` differ.
pub fn deep_strict_equal(a: &Value, b: &Value) -> bool {
    let mut stack = vec![(a, b)];
    while let Some((x, y)) = stack.pop() {
        match (x, y) {
            (Value::Null, Value::Null) => {}
            (Value::Bool(p), Value::Bool(q)) if p == q => {}
            (Value::Number(p), Value::Number(q)) => {
                let same = (p == q && p.is_sign_negative() == q.is_sign_negative())
                    || (p.is_nan() && q.is_nan());
                if !same {
                    return false;
                }
            }
            (Value::String(p), Value::String(q)) if p == q => {}
            (Value::Array(p), Value::Array(q)) if p.len() == q.len() => {
                stack.extend(p.iter().zip(q.iter()));
            }
            (Value::Object(p), Value::Object(q)) if p.len() == q.len() => {
                for (k, v) in p.iter() {
                    match q.get_js(k) {
                        Some(w) => stack.push((v, w)),
                        None => return false,
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

/// `JSON.stringify(value, null, 2)`, without recursion.
pub fn to_json_pretty(v: &Value) -> String {
    enum Frame<'a> {
        Array(std::slice::Iter<'a, Value>),
        Object(Box<dyn Iterator<Item = (&'a json::JsString, &'a Value)> + 'a>),
    }
    fn indent(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    let mut out = String::new();
    let mut stack: Vec<(Frame<'_>, bool)> = Vec::new();
    let mut next = Some(v);
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Array(a) if !a.is_empty() => {
                    out.push('[');
                    stack.push((Frame::Array(a.iter()), true));
                }
                Value::Object(o) if !o.is_empty() => {
                    out.push('{');
                    stack.push((Frame::Object(Box::new(o.iter())), true));
                }
                other => other.write_json(&mut out),
            }
        }
        let depth = stack.len();
        let Some((frame, first)) = stack.last_mut() else {
            break;
        };
        let item = match frame {
            Frame::Array(it) => it.next().map(|v| (None, v)),
            Frame::Object(it) => it.next().map(|(k, v)| (Some(k), v)),
        };
        match item {
            Some((key, v)) => {
                if !*first {
                    out.push(',');
                }
                *first = false;
                indent(&mut out, depth);
                if let Some(k) = key {
                    write_string(&mut out, k);
                    out.push_str(": ");
                }
                next = Some(v);
            }
            None => {
                let close = match frame {
                    Frame::Array(_) => ']',
                    Frame::Object(_) => '}',
                };
                stack.pop();
                indent(&mut out, depth - 1);
                out.push(close);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn pretty_printing_matches_json_stringify() {
        let v = parse(r#"{"files":{"/a":{"kind":"claude","inode":1,"x":[],"y":{},"z":[1,{"k":null}]}},"e":"\u0001"}"#).unwrap();
        // JSON.stringify(v, null, 2) in Node.
        let want = "{\n  \"files\": {\n    \"/a\": {\n      \"kind\": \"claude\",\n      \"inode\": 1,\n      \"x\": [],\n      \"y\": {},\n      \"z\": [\n        1,\n        {\n          \"k\": null\n        }\n      ]\n    }\n  },\n  \"e\": \"\\u0001\"\n}";
        assert_eq!(to_json_pretty(&v), want);
        assert_eq!(to_json_pretty(&parse("[]").unwrap()), "[]");
        assert_eq!(to_json_pretty(&parse("5").unwrap()), "5");
    }

    #[test]
    fn deep_equality_is_strict_about_zero_and_loose_about_key_order() {
        let p = |s: &str| parse(s).unwrap();
        assert!(deep_strict_equal(
            &p(r#"{"a":1,"b":[1,2]}"#),
            &p(r#"{"b":[1,2],"a":1}"#)
        ));
        assert!(!deep_strict_equal(&p("0"), &p("-0")));
        assert!(!deep_strict_equal(&p(r#"{"a":1}"#), &p(r#"{"a":1,"b":2}"#)));
        assert!(!deep_strict_equal(&p("[1]"), &p("[\"1\"]")));
    }

    #[test]
    fn retention_values() {
        let r = |s: &str| match Retention::from_value(&Value::str(s)) {
            Parsed::Ok(r) => Some(r),
            _ => None,
        };
        assert_eq!(r("forever"), Some(Retention::Forever));
        assert_eq!(r(" FOREVER "), Some(Retention::Forever));
        assert_eq!(r("-1"), Some(Retention::Forever));
        assert_eq!(r("7"), Some(Retention::Days(7.0)));
        assert_eq!(r("0x10"), Some(Retention::Days(16.0)));
        assert_eq!(r("   "), None);
        assert_eq!(r("soon"), None);
        assert_eq!(r("Infinity"), None);
        assert_eq!(Retention::Days(1.0).millis(), Some(86_400_000.0));
    }
}
