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
use std::collections::{HashMap, HashSet};
use std::fmt;

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

// ---------------------------------------------------------------------------
// Serialisation (JSON.stringify)
// ---------------------------------------------------------------------------

/// `Number#toString` for a double; non-finite values serialise as `null`
/// in JSON, which callers handle before reaching here.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if n == 0.0 {
        return "0".into();
    }
    let mut buf = ryu_js::Buffer::new();
    buf.format_finite(n).to_owned()
}

fn write_number(out: &mut String, n: f64) {
    if !n.is_finite() {
        out.push_str("null");
    } else if n == 0.0 {
        out.push('0');
    } else if n.fract() == 0.0 && n.abs() < 1e15 {
        // Integers are by far the most common numbers; their decimal digits
        // are what Number#toString prints.
        push_integer(out, n as i64);
    } else {
        let mut buf = ryu_js::Buffer::new();
        out.push_str(buf.format_finite(n));
    }
}

fn push_integer(out: &mut String, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xF) as usize] as char);
    }
}

fn write_str_body(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    loop {
        let i = start + find_string_special(&bytes[start..]);
        out.push_str(&s[start..i]);
        let Some(&b) = bytes.get(i) else { return };
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0C => out.push_str("\\f"),
            _ => push_u_escape(out, u16::from(b)),
        }
        start = i + 1;
    }
}

/// Append a JSON string literal exactly as `JSON.stringify` writes it.
pub fn write_string(out: &mut String, s: &JsString) {
    out.push('"');
    match s {
        JsString::Utf8(s) => write_str_body(out, s),
        JsString::Utf16(units) => {
            for r in char::decode_utf16(units.iter().copied()) {
                match r {
                    Ok(c) => {
                        let mut b = [0u8; 4];
                        write_str_body(out, c.encode_utf8(&mut b));
                    }
                    Err(e) => push_u_escape(out, e.unpaired_surrogate()),
                }
            }
        }
    }
    out.push('"');
}

/// Append a JSON string literal for a plain `str`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    write_str_body(out, s);
    out.push('"');
}

enum Frame<'a> {
    Array(std::slice::Iter<'a, Value>, bool),
    Object(std::slice::Iter<'a, (JsString, Value)>, bool),
}

fn write_value(out: &mut String, root: &Value) {
    write_frames(out, Vec::new(), Some(root));
}

/// Write `next` (if any), then finish every open container on `stack`.
fn write_frames<'a>(out: &mut String, mut stack: Vec<Frame<'a>>, mut next: Option<&'a Value>) {
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Null => out.push_str("null"),
                Value::Bool(true) => out.push_str("true"),
                Value::Bool(false) => out.push_str("false"),
                Value::Number(n) => write_number(out, *n),
                Value::String(s) => write_string(out, s),
                Value::Array(a) => {
                    out.push('[');
                    stack.push(Frame::Array(a.iter(), true));
                }
                Value::Object(o) => {
                    out.push('{');
                    stack.push(Frame::Object(o.entries.iter(), true));
                }
            }
        }
        let Some(top) = stack.last_mut() else { break };
        match top {
            Frame::Array(it, first) => match it.next() {
                Some(v) => {
                    if !*first {
                        out.push(',');
                    }
                    *first = false;
                    next = Some(v);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Frame::Object(it, first) => match it.next() {
                Some((k, v)) => {
                    if !*first {
                        out.push(',');
                    }
                    *first = false;
                    write_string(out, k);
                    out.push(':');
                    next = Some(v);
                }
                None => {
                    out.push('}');
                    stack.pop();
                }
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing (JSON.parse)
// ---------------------------------------------------------------------------

/// Why a text is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {reason}")]
pub struct ParseError {
    pub offset: usize,
    pub reason: &'static str,
}

/// `JSON.parse(text)`: the whole text must be one value, with only JSON
/// whitespace around it.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let mut p = Parser {
        b: text.as_bytes(),
        s: text,
        i: 0,
    };
    p.skip_ws();
    let v = p.parse_value()?;
    p.skip_ws();
    if p.i != p.b.len() {
        return Err(p.err("unexpected data after the value"));
    }
    Ok(v)
}

const LANES_01: u64 = u64::from_ne_bytes([0x01; 8]);
const LANES_80: u64 = u64::from_ne_bytes([0x80; 8]);

/// High bit set in each byte lane of `x` that is zero. Lanes above the
/// first zero lane may be false positives, so only the lowest set lane is
/// meaningful.
#[inline]
fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LANES_01) & !x & LANES_80
}

/// Index of the first byte a JSON string cannot hold as is (`"`, `\` or a
/// control character), or `b.len()`. Eight bytes per step: strings are
/// most of a ledger line.
#[inline]
fn find_string_special(b: &[u8]) -> usize {
    let mut i = 0;
    while i + 8 <= b.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        let x = u64::from_le_bytes(w);
        let hits = zero_lanes(x ^ (LANES_01 * u64::from(b'"')))
            | zero_lanes(x ^ (LANES_01 * u64::from(b'\\')))
            | (x.wrapping_sub(LANES_01 * 0x20) & !x & LANES_80);
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1F) {
        i += 1;
    }
    i
}

struct Parser<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

/// The parser's work vectors, kept per thread between parses.
#[derive(Default)]
struct Scratch {
    stack: Vec<Open>,
    items: Vec<Value>,
    entries: Vec<(JsString, Value)>,
}

/// Scratch vectors that grew past this many slots (a hostile line) are
/// freed rather than kept.
const SCRATCH_KEEP: usize = 4096;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// A container being parsed. Its children wait on the parser's shared
/// scratch vectors from `start` on, so each container is allocated once,
/// at its exact size, when it closes.
enum Open {
    Array { start: usize },
    Object { start: usize, key: JsString },
}

impl<'a> Parser<'a> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError {
            offset: self.i,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect_lit(&mut self, lit: &'static [u8]) -> Result<(), ParseError> {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            Ok(())
        } else {
            Err(self.err("unexpected token"))
        }
    }

    fn parse_value(&mut self) -> Result<Value, ParseError> {
        // Reuse this thread's scratch vectors: growing fresh ones for every
        // line costs more than the rest of the parse's bookkeeping.
        let mut scratch = SCRATCH
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_default();
        let result = self.parse_value_with(&mut scratch);
        scratch.stack.clear();
        scratch.items.clear();
        scratch.entries.clear();
        if scratch.stack.capacity() + scratch.items.capacity() + scratch.entries.capacity()
            <= SCRATCH_KEEP
        {
            // Gone only while the thread is exiting: then it is simply freed.
            let _ = SCRATCH.try_with(|s| s.set(Some(scratch)));
        }
        result
    }

    fn parse_value_with(&mut self, scratch: &mut Scratch) -> Result<Value, ParseError> {
        let Scratch {
            stack,
            items,
            entries,
        } = scratch;
        loop {
            // Parse one value, or open a container.
            self.skip_ws();
            let mut value = match self.peek() {
                None => return Err(self.err("unexpected end of input")),
                Some(b'[' | b'{') if stack.len() >= MAX_DEPTH => {
                    return Err(self.err("nesting too deep"));
                }
                Some(b'[') => {
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Open::Array { start: items.len() });
                        continue;
                    }
                }
                Some(b'{') => {
                    self.i += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        Value::Object(Object::new())
                    } else {
                        let key = self.parse_key()?;
                        stack.push(Open::Object {
                            start: entries.len(),
                            key,
                        });
                        continue;
                    }
                }
                Some(b'"') => Value::String(self.parse_string()?),
                Some(b't') => {
                    self.expect_lit(b"true")?;
                    Value::Bool(true)
                }
                Some(b'f') => {
                    self.expect_lit(b"false")?;
                    Value::Bool(false)
                }
                Some(b'n') => {
                    self.expect_lit(b"null")?;
                    Value::Null
                }
                Some(b'-' | b'0'..=b'9') => Value::Number(self.parse_number()?),
                Some(_) => return Err(self.err("unexpected token")),
            };
            // Attach the value to its parent, closing containers as they end.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                self.skip_ws();
                match top {
                    Open::Array { start } => {
                        items.push(value);
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                break;
                            }
                            Some(b']') => {
                                self.i += 1;
                                let start = *start;
                                stack.pop();
                                value = Value::Array(items.drain(start..).collect());
                            }
                            _ => return Err(self.err("expected ',' or ']'")),
                        }
                    }
                    Open::Object { start, key } => {
                        let k = std::mem::replace(key, JsString::Utf8(Box::default()));
                        entries.push((k, value));
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.skip_ws();
                                *key = self.parse_key()?;
                                break;
                            }
                            Some(b'}') => {
                                self.i += 1;
                                let start = *start;
                                stack.pop();
                                value =
                                    Value::Object(build_object(entries.drain(start..).collect()));
                            }
                            _ => return Err(self.err("expected ',' or '}'")),
                        }
                    }
                }
            }
        }
    }

    /// A key and its colon.
    fn parse_key(&mut self) -> Result<JsString, ParseError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        let k = self.parse_string()?;
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.err("expected ':'"));
        }
        self.i += 1;
        Ok(k)
    }

    fn parse_number(&mut self) -> Result<f64, ParseError> {
        let start = self.i;
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        // The integer part's value, exact while it has at most 15 digits.
        let mut int_value: u64 = 0;
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    int_value = int_value.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                    i += 1;
                }
            }
            _ => {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        let int_end = i;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let d = i;
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
            if i == d {
                self.i = i;
                return Err(self.err("invalid number"));
            }
        }
        self.i = i;
        // Short plain integers are exact in a double.
        if i == int_end && i - start <= 15 {
            let n = int_value as f64;
            return Ok(if b[start] == b'-' { -n } else { n });
        }
        let text = &self.s[start..i];
        text.parse::<f64>().map_err(|_| self.err("invalid number"))
    }

    fn parse_string(&mut self) -> Result<JsString, ParseError> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let start = self.i;
        // Fast path: no escapes.
        self.i += find_string_special(&self.b[self.i..]);
        match self.b.get(self.i) {
            None => return Err(self.err("unterminated string")),
            Some(b'"') => {
                let s = &self.s[start..self.i];
                self.i += 1;
                return Ok(JsString::Utf8(s.into()));
            }
            Some(b'\\') => {}
            Some(_) => return Err(self.err("control character in string")),
        }
        let mut buf = String::with_capacity(self.i - start + 16);
        buf.push_str(&self.s[start..self.i]);
        // Code units of a string that turned out to hold a lone surrogate.
        let mut units: Option<Vec<u16>> = None;
        let mut pending_high: Option<u16> = None;
        loop {
            let run_start = self.i;
            self.i += find_string_special(&self.b[self.i..]);
            if self.i > run_start {
                let run = &self.s[run_start..self.i];
                flush_high(&mut buf, &mut units, &mut pending_high);
                match &mut units {
                    Some(u) => u.extend(run.encode_utf16()),
                    None => buf.push_str(run),
                }
            }
            match self.b.get(self.i) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    flush_high(&mut buf, &mut units, &mut pending_high);
                    return Ok(match units {
                        Some(u) => JsString::from_units(u),
                        None => JsString::Utf8(buf.into_boxed_str()),
                    });
                }
                Some(b'\\') => {
                    self.i += 1;
                    let e = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let unit = self.parse_hex4()?;
                            push_unit(&mut buf, &mut units, &mut pending_high, unit);
                            continue;
                        }
                        _ => return Err(self.err("invalid escape")),
                    };
                    flush_high(&mut buf, &mut units, &mut pending_high);
                    match &mut units {
                        Some(u) => u.push(ch as u16),
                        None => buf.push(ch),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }

    fn parse_hex4(&mut self) -> Result<u16, ParseError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("invalid unicode escape"))?;
        let mut n: u16 = 0;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("invalid unicode escape"))?;
            n = n * 16 + d as u16;
        }
        self.i += 4;
        Ok(n)
    }
}

/// Switch a string under construction to UTF-16 code units.
fn to_units(buf: &mut String, units: &mut Option<Vec<u16>>) {
    if units.is_none() {
        *units = Some(buf.encode_utf16().collect());
        buf.clear();
    }
}

/// A high surrogate not followed by a low one stays a lone code unit.
fn flush_high(buf: &mut String, units: &mut Option<Vec<u16>>, pending: &mut Option<u16>) {
    if let Some(h) = pending.take() {
        to_units(buf, units);
        if let Some(u) = units {
            u.push(h);
        }
    }
}

fn push_unit(buf: &mut String, units: &mut Option<Vec<u16>>, pending: &mut Option<u16>, unit: u16) {
    match unit {
        0xD800..=0xDBFF => {
            flush_high(buf, units, pending);
            *pending = Some(unit);
        }
        0xDC00..=0xDFFF => {
            if let Some(h) = pending.take() {
                let c = 0x10000 + (((h as u32) - 0xD800) << 10) + ((unit as u32) - 0xDC00);
                let ch = char::from_u32(c).unwrap_or('\u{FFFD}');
                match units {
                    Some(u) => {
                        let mut b = [0u16; 2];
                        u.extend_from_slice(ch.encode_utf16(&mut b));
                    }
                    None => buf.push(ch),
                }
            } else {
                to_units(buf, units);
                if let Some(u) = units {
                    u.push(unit);
                }
            }
        }
        _ => {
            flush_high(buf, units, pending);
            let ch = char::from_u32(unit as u32).unwrap_or('\u{FFFD}');
            match units {
                Some(u) => u.push(unit),
                None => buf.push(ch),
            }
        }
    }
}

/// The object `JSON.parse` makes of the members as written: a duplicate
/// key keeps its first position and takes the last value, and array-index
/// keys come first in ascending order.
fn build_object(members: Vec<(JsString, Value)>) -> Object {
    if is_plain(&members) {
        // The usual case: the members as they are, in one allocation.
        return Object {
            entries: members,
            index_keys: 0,
        };
    }
    // Linear in the member count even for hostile input (many duplicates or
    // index keys).
    let mut indexed: Vec<(u32, JsString, Value)> = Vec::new();
    let mut index_at: HashMap<u32, usize> = HashMap::new();
    let mut named: Vec<(JsString, Value)> = Vec::with_capacity(members.len());
    let mut named_at: HashMap<JsString, usize> = HashMap::new();
    for (k, v) in members {
        match array_index(&k) {
            Some(n) => match index_at.get(&n) {
                Some(&i) => indexed[i].2 = v,
                None => {
                    index_at.insert(n, indexed.len());
                    indexed.push((n, k, v));
                }
            },
            None => match named_at.get(&k) {
                Some(&i) => named[i].1 = v,
                None => {
                    named_at.insert(k.clone(), named.len());
                    named.push((k, v));
                }
            },
        }
    }
    indexed.sort_unstable_by_key(|e| e.0);
    let index_keys = indexed.len();
    let mut entries = Vec::with_capacity(index_keys + named.len());
    entries.extend(indexed.into_iter().map(|(_, k, v)| (k, v)));
    entries.extend(named);
    Object {
        entries,
        index_keys,
    }
}

/// No array-index key and no duplicate key.
fn is_plain(members: &[(JsString, Value)]) -> bool {
    if members.iter().any(|(k, _)| array_index(k).is_some()) {
        return false;
    }
    if members.len() <= 16 {
        members
            .iter()
            .enumerate()
            .all(|(i, (k, _))| members[..i].iter().all(|(j, _)| j != k))
    } else {
        let mut seen = HashSet::with_capacity(members.len());
        members.iter().all(|(k, _)| seen.insert(k))
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

/// `JSON.stringify(value, null, 2)`: the indented form the reference's CLI
/// prints for `--json` output.
pub fn to_json_pretty(value: &Value) -> String {
    let mut out = String::new();
    write_pretty(&mut out, value, 0);
    out
}

fn write_pretty(out: &mut String, v: &Value, depth: usize) {
    fn indent(out: &mut String, depth: usize) {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    }
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write_pretty(out, item, depth + 1);
            }
            indent(out, depth);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, item)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, depth + 1);
                write_string(out, k);
                out.push_str(": ");
                write_pretty(out, item, depth + 1);
            }
            indent(out, depth);
            out.push('}');
        }
        other => other.write_json(out),
    }
}

#[cfg(test)]
mod pretty_tests {
    use super::*;

    #[test]
    fn pretty_matches_stringify_with_indent_two() {
        let v = parse(r#"{"a":1,"b":[],"c":{},"d":[1,{"e":null}]}"#).unwrap();
        assert_eq!(
            to_json_pretty(&v),
            "{\n  \"a\": 1,\n  \"b\": [],\n  \"c\": {},\n  \"d\": [\n    1,\n    {\n      \"e\": null\n    }\n  ]\n}"
        );
    }
}
