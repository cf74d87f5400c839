//! Parsing (`JSON.parse`).

use std::collections::HashSet;

use super::*;

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

pub(super) const LANES_01: u64 = u64::from_ne_bytes([0x01; 8]);
pub(super) const LANES_80: u64 = u64::from_ne_bytes([0x80; 8]);

/// High bit set in each byte lane of `x` that is zero. Lanes above the
/// first zero lane may be false positives, so only the lowest set lane is
/// meaningful.
#[inline]
pub(super) fn zero_lanes(x: u64) -> u64 {
    x.wrapping_sub(LANES_01) & !x & LANES_80
}

/// Index of the first byte a JSON string cannot hold as is (`"`, `\` or a
/// control character), or `b.len()`. Eight bytes per step: strings are
/// most of a ledger line.
#[inline]
pub(super) fn find_string_special(b: &[u8]) -> usize {
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

pub(super) struct Parser<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

/// The parser's work vectors, kept per thread between parses.
#[derive(Default)]
pub(super) struct Scratch {
    stack: Vec<Open>,
    items: Vec<Value>,
    entries: Vec<(JsString, Value)>,
}

/// Scratch vectors that grew past this many slots (a hostile line) are
/// freed rather than kept.
pub(super) const SCRATCH_KEEP: usize = 4096;

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
}

/// A container being parsed. Its children wait on the parser's shared
/// scratch vectors from `start` on, so each container is allocated once,
/// at its exact size, when it closes.
pub(super) enum Open {
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
            i = self.digits_from(i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = self.digits_from(i)?;
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

    /// The end of the run of digits starting at `start`; a number's
    /// fraction and exponent need at least one.
    fn digits_from(&mut self, start: usize) -> Result<usize, ParseError> {
        let mut i = start;
        while matches!(self.b.get(i), Some(b'0'..=b'9')) {
            i += 1;
        }
        if i == start {
            self.i = i;
            return Err(self.err("invalid number"));
        }
        Ok(i)
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
pub(super) fn to_units(buf: &mut String, units: &mut Option<Vec<u16>>) {
    if units.is_none() {
        *units = Some(buf.encode_utf16().collect());
        buf.clear();
    }
}

/// A high surrogate not followed by a low one stays a lone code unit.
pub(super) fn flush_high(
    buf: &mut String,
    units: &mut Option<Vec<u16>>,
    pending: &mut Option<u16>,
) {
    if let Some(h) = pending.take() {
        to_units(buf, units);
        if let Some(u) = units {
            u.push(h);
        }
    }
}

pub(super) fn push_unit(
    buf: &mut String,
    units: &mut Option<Vec<u16>>,
    pending: &mut Option<u16>,
    unit: u16,
) {
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
pub(super) fn build_object(members: Vec<(JsString, Value)>) -> Object {
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
pub(super) fn is_plain(members: &[(JsString, Value)]) -> bool {
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
