//! Lossless JSON with JavaScript semantics.
//!
//! The reference reads every line with `JSON.parse` and writes with
//! `JSON.stringify`, so a line is only byte-identical across the two
//! implementations if this module reproduces V8's observable behaviour:
//! numbers are doubles printed by `Number#toString`, objects keep
//! insertion order (with array-index keys hoisted, as JS property order
//! demands), a duplicate key keeps its first position and its last value,
//! and strings may hold lone UTF-16 surrogates. Parsing, serialising and
//! dropping are iterative so hostile nesting cannot overflow the stack.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

mod number;
mod parse;
mod write;

pub use number::format_number;
pub use parse::{parse, ParseError};
pub use write::{to_json_pretty, write_str, write_string};
use write::{write_frames, write_value, Frame};

/// Containers nested deeper than this are rejected as malformed input.
/// (`JSON.parse` has no limit, but `JSON.stringify` gives up near 5,000
/// levels, so no line the reference writes comes close.)
pub const MAX_DEPTH: usize = 100_000;

/// A JavaScript string: UTF-8 when it is valid Unicode, UTF-16 code units
/// when it holds a lone surrogate (which a Rust `str` cannot represent).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum JsString {
    Utf8(Box<str>),
    Utf16(Box<[u16]>),
}

impl JsString {
    /// The string when it is valid Unicode.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            JsString::Utf8(s) => Some(s),
            JsString::Utf16(_) => None,
        }
    }

    /// The string with lone surrogates replaced by U+FFFD, which is also
    /// what Node hashes when a JS string is fed to `createHash().update`.
    pub fn to_lossy(&self) -> Cow<'_, str> {
        match self {
            JsString::Utf8(s) => Cow::Borrowed(s),
            JsString::Utf16(u) => Cow::Owned(String::from_utf16_lossy(u)),
        }
    }

    /// Length in UTF-16 code units, as JavaScript's `.length`.
    pub fn utf16_len(&self) -> usize {
        match self {
            JsString::Utf8(s) => s.encode_utf16().count(),
            JsString::Utf16(u) => u.len(),
        }
    }

    fn units(&self) -> Cow<'_, [u16]> {
        match self {
            JsString::Utf8(s) => Cow::Owned(s.encode_utf16().collect()),
            JsString::Utf16(u) => Cow::Borrowed(u),
        }
    }

    /// JavaScript `<` on strings: code-unit order, which differs from byte
    /// order only for characters above U+FFFF against U+E000..U+FFFF.
    pub fn js_cmp(&self, other: &JsString) -> std::cmp::Ordering {
        match (self, other) {
            (JsString::Utf8(a), JsString::Utf8(b)) => js_str_cmp(a, b),
            _ => self.units().cmp(&other.units()),
        }
    }

    /// A string from UTF-16 code units, in the form the parser produces
    /// (UTF-8 unless it holds a lone surrogate), so equality stays exact.
    pub fn from_utf16(units: Vec<u16>) -> JsString {
        JsString::from_units(units)
    }

    fn from_units(units: Vec<u16>) -> JsString {
        match String::from_utf16(&units) {
            Ok(s) => JsString::Utf8(s.into_boxed_str()),
            Err(_) => JsString::Utf16(units.into_boxed_slice()),
        }
    }
}

/// Compare two strings the way JavaScript's relational operators do.
pub fn js_str_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    // Byte order equals code-point order; it only disagrees with UTF-16
    // order when a supplementary character meets U+E000..U+FFFF.
    let fast = a.as_bytes().cmp(b.as_bytes());
    let needs_units = |s: &str| s.bytes().any(|c| c >= 0xEE);
    if !needs_units(a) || !needs_units(b) {
        return fast;
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

impl From<&str> for JsString {
    fn from(s: &str) -> Self {
        JsString::Utf8(s.into())
    }
}
impl From<String> for JsString {
    fn from(s: String) -> Self {
        JsString::Utf8(s.into_boxed_str())
    }
}

impl fmt::Debug for JsString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_string(&mut out, self);
        f.write_str(&out)
    }
}

impl PartialEq<str> for JsString {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

/// A `null` to borrow where a field is absent (`Value` has a destructor, so
/// `&Value::Null` is not promoted to a `'static` borrow).
pub static NULL: Value = Value::Null;

/// A parsed JSON value with JavaScript semantics.
///
/// `Clone`, `PartialEq`, `Drop` and serialisation walk the tree with a heap
/// stack, never by recursion, so a line nested [`MAX_DEPTH`] deep is safe
/// on any thread.
#[derive(Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(f64),
    String(JsString),
    Array(Vec<Value>),
    Object(Object),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl Clone for Value {
    fn clone(&self) -> Value {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) => Value::Number(*n),
            Value::String(s) => Value::String(s.clone()),
            Value::Array(_) | Value::Object(_) => clone_deep(self),
        }
    }
}

/// A container being copied: the source children still to visit, the
/// copies made so far, and (for objects) the key of the child in progress.
enum CloneFrame<'a> {
    Array(std::slice::Iter<'a, Value>, Vec<Value>),
    Object {
        src: std::slice::Iter<'a, (JsString, Value)>,
        entries: Vec<(JsString, Value)>,
        index_keys: usize,
        key: Option<JsString>,
    },
}

impl<'a> CloneFrame<'a> {
    /// Start copying `v`, or copy it at once when it is a scalar.
    fn open(v: &'a Value) -> Result<CloneFrame<'a>, Value> {
        match v {
            Value::Array(a) => Ok(CloneFrame::Array(a.iter(), Vec::with_capacity(a.len()))),
            Value::Object(o) => Ok(CloneFrame::Object {
                src: o.entries.iter(),
                entries: Vec::with_capacity(o.entries.len()),
                index_keys: o.index_keys,
                key: None,
            }),
            scalar => Err(scalar.clone()),
        }
    }

    fn finish(self) -> Value {
        match self {
            CloneFrame::Array(_, items) => Value::Array(items),
            CloneFrame::Object {
                entries,
                index_keys,
                ..
            } => Value::Object(Object {
                entries,
                index_keys,
            }),
        }
    }

    /// Attach a finished child copy.
    fn attach(&mut self, child: Value) {
        match self {
            CloneFrame::Array(_, items) => items.push(child),
            CloneFrame::Object { entries, key, .. } => {
                let k = key.take().unwrap_or_else(|| JsString::Utf8("".into()));
                entries.push((k, child));
            }
        }
    }
}

fn clone_deep(root: &Value) -> Value {
    let mut stack = match CloneFrame::open(root) {
        Ok(frame) => vec![frame],
        Err(scalar) => return scalar,
    };
    loop {
        let Some(top) = stack.last_mut() else {
            return Value::Null;
        };
        let child = match top {
            CloneFrame::Array(it, _) => it.next(),
            CloneFrame::Object { src, key, .. } => src.next().map(|(k, v)| {
                *key = Some(k.clone());
                v
            }),
        };
        match child {
            Some(c) => match CloneFrame::open(c) {
                Ok(frame) => stack.push(frame),
                Err(scalar) => top.attach(scalar),
            },
            None => {
                let Some(done) = stack.pop().map(CloneFrame::finish) else {
                    return Value::Null;
                };
                match stack.last_mut() {
                    Some(parent) => parent.attach(done),
                    None => return done,
                }
            }
        }
    }
}

impl PartialEq for Value {
    /// Equality as JSON values: numbers as doubles (so `-0 == 0`), objects
    /// regardless of key order.
    fn eq(&self, other: &Value) -> bool {
        let mut pending: Vec<(&Value, &Value)> = vec![(self, other)];
        while let Some((a, b)) = pending.pop() {
            match (a, b) {
                (Value::Null, Value::Null) => {}
                (Value::Bool(x), Value::Bool(y)) if x == y => {}
                (Value::Number(x), Value::Number(y)) if x == y => {}
                (Value::String(x), Value::String(y)) if x == y => {}
                (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                    pending.extend(x.iter().zip(y.iter()));
                }
                (Value::Object(x), Value::Object(y)) if x.len() == y.len() => {
                    for (k, v) in &x.entries {
                        match y.get_js(k) {
                            Some(w) => pending.push((v, w)),
                            None => return false,
                        }
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

/// How many container drops may nest on the call stack before the rest of
/// a value is flattened onto the heap (a few hundred bytes of stack each).
const RECURSIVE_DROP_DEPTH: u32 = 32;

thread_local! {
    /// Container drops currently nested on this thread's call stack.
    static DROP_DEPTH: Cell<u32> = const { Cell::new(0) };
}

impl Drop for Value {
    fn drop(&mut self) {
        // Flatten nested containers onto a heap stack so that dropping a
        // value nested 100,000 deep cannot overflow the thread's stack.
        let shallow = match self {
            Value::Array(a) => a.iter().all(|v| !v.is_container()),
            Value::Object(o) => o.entries.iter().all(|(_, v)| !v.is_container()),
            _ => true,
        };
        if shallow {
            return;
        }
        // Ordinary records are a few levels deep: drop their children right
        // here, recursing through this function, while the nesting stays
        // small. Only deeper values pay for the heap stack.
        let depth = DROP_DEPTH
            .try_with(Cell::get)
            .unwrap_or(RECURSIVE_DROP_DEPTH);
        if depth < RECURSIVE_DROP_DEPTH {
            let _ = DROP_DEPTH.try_with(|d| d.set(depth + 1));
            match self {
                Value::Array(a) => a.clear(),
                Value::Object(o) => o.entries.clear(),
                _ => {}
            }
            let _ = DROP_DEPTH.try_with(|d| d.set(depth));
            return;
        }
        let mut stack: Vec<Value> = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut v) = stack.pop() {
            take_children(&mut v, &mut stack);
        }
    }
}

fn take_children(v: &mut Value, stack: &mut Vec<Value>) {
    match v {
        Value::Array(a) => stack.extend(a.drain(..).filter(|c| c.is_container())),
        Value::Object(o) => stack.extend(
            o.entries
                .drain(..)
                .map(|(_, c)| c)
                .filter(|c| c.is_container()),
        ),
        _ => {}
    }
}

impl Value {
    fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Object(_))
    }

    pub fn str(s: &str) -> Value {
        Value::String(JsString::from(s))
    }

    /// The value as a valid-Unicode string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => s.as_str(),
            _ => None,
        }
    }

    pub fn as_js_string(&self) -> Option<&JsString> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Move the object out, leaving `Null` behind.
    pub fn into_object(mut self) -> Option<Object> {
        match &mut self {
            Value::Object(o) => Some(std::mem::take(o)),
            _ => None,
        }
    }

    /// Move the array out, leaving `Null` behind.
    pub fn into_array(mut self) -> Option<Vec<Value>> {
        match &mut self {
            Value::Array(a) => Some(std::mem::take(a)),
            _ => None,
        }
    }

    /// [`js::truthy`](crate::js::truthy), as a method.
    pub fn is_truthy(&self) -> bool {
        crate::js::truthy(self)
    }

    /// Member access that mirrors `obj.key` (undefined on non-objects).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object().and_then(|o| o.get(key))
    }

    /// `JSON.stringify(value)`.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
        out
    }

    /// Append `JSON.stringify(value)` to `out`.
    pub fn write_json(&self, out: &mut String) {
        write_value(out, self);
    }

    /// [`js::to_string`](crate::js::to_string), as a method.
    pub fn js_to_string(&self) -> Cow<'_, str> {
        crate::js::to_string(self)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::str(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(JsString::from(s))
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(o)
    }
}

/// A JavaScript plain object: own properties in JS enumeration order
/// (array-index keys ascending, then the rest in insertion order).
#[derive(Clone, Default)]
pub struct Object {
    entries: Vec<(JsString, Value)>,
    /// How many leading entries are array-index keys.
    index_keys: usize,
}

impl PartialEq for Object {
    /// Structural equality as JSON values: same keys with equal values,
    /// regardless of order (what a JSON comparison of two documents means).
    fn eq(&self, other: &Object) -> bool {
        self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .all(|(k, v)| other.get_js(k).is_some_and(|w| w == v))
    }
}

impl Object {
    /// Append `JSON.stringify(object)` to `out`.
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        write_frames(out, vec![Frame::Object(self.entries.iter(), true)], None);
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_object_shallow_for_debug(&mut out, self);
        f.write_str(&out)
    }
}

fn write_object_shallow_for_debug(out: &mut String, o: &Object) {
    o.write_json(out);
}

/// The numeric value of `key` when JavaScript treats it as an array index.
fn array_index(key: &JsString) -> Option<u32> {
    let s = key.as_str()?;
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    let n: u64 = s.parse().ok()?;
    // 2^32 - 1 is not an array index.
    if n < u32::MAX as u64 {
        Some(n as u32)
    } else {
        None
    }
}

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    fn position_js(&self, key: &JsString) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_js(&self, key: &JsString) -> Option<&Value> {
        self.position_js(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        let i = self.position(key)?;
        Some(&mut self.entries[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// JavaScript property assignment: an existing key keeps its place and
    /// takes the new value; a new key goes where JS enumeration puts it.
    pub fn insert(&mut self, key: impl Into<JsString>, value: Value) {
        let key = key.into();
        if let Some(i) = self.position_js(&key) {
            self.entries[i].1 = value;
            return;
        }
        self.push_new(key, value);
    }

    /// Insert a key known not to be present.
    fn push_new(&mut self, key: JsString, value: Value) {
        match array_index(&key) {
            Some(n) => {
                let at = self.entries[..self.index_keys]
                    .partition_point(|(k, _)| array_index(k).is_some_and(|m| m < n));
                self.entries.insert(at, (key, value));
                self.index_keys += 1;
            }
            None => self.entries.push((key, value)),
        }
    }

    /// `delete obj[key]`.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        if i < self.index_keys {
            self.index_keys -= 1;
        }
        Some(self.entries.remove(i).1)
    }

    /// Own enumerable properties in JavaScript order.
    pub fn iter(&self) -> impl Iterator<Item = (&JsString, &Value)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl FromIterator<(JsString, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (JsString, Value)>>(iter: I) -> Self {
        let mut o = Object::new();
        for (k, v) in iter {
            o.insert(k, v);
        }
        o
    }
}

/// Build an object from `(key, value)` pairs (keys as string slices).
#[macro_export]
macro_rules! js_object {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut o = $crate::json::Object::new();
        $( o.insert($k, $crate::json::Value::from($v)); )*
        o
    }};
}
