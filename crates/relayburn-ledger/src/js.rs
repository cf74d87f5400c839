//! JavaScript's conversions, as the reference applies them to values read
//! from JSON: `Number(x)`, truthiness, `x.length > 0` and `String(x)`.
//!
//! The byte-compatibility contract depends on them (id keys, fingerprints,
//! archive columns, query filters), so there is exactly one copy of each,
//! checked against Node on generated inputs by `tests/js_coercions.rs`.

use std::borrow::Cow;

use crate::json::{format_number, JsString, Value};

/// `Boolean(v)`.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => *n != 0.0 && !n.is_nan(),
        Value::String(JsString::Utf8(s)) => !s.is_empty(),
        Value::String(JsString::Utf16(u)) => !u.is_empty(),
        _ => true,
    }
}

/// `String(v)`, as template strings and `Array#join` apply it when keys
/// are hashed. An object is `[object Object]` (JSON cannot give it a
/// callable `toString`).
pub fn to_string(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => Cow::Owned(format_number(*n)),
        Value::String(s) => s.to_lossy(),
        Value::Array(a) => Cow::Owned(join_array(a)),
        Value::Object(_) => Cow::Borrowed("[object Object]"),
    }
}

/// `Array#toString`: elements joined with commas, null elements empty,
/// nested arrays joined in place (walked without recursion).
fn join_array(root: &[Value]) -> String {
    let mut out = String::new();
    let mut stack: Vec<(std::slice::Iter<'_, Value>, bool)> = vec![(root.iter(), true)];
    while let Some((it, first)) = stack.last_mut() {
        let Some(v) = it.next() else {
            stack.pop();
            continue;
        };
        if !std::mem::replace(first, false) {
            out.push(',');
        }
        match v {
            Value::Null => {}
            Value::Array(inner) => stack.push((inner.iter(), true)),
            other => out.push_str(&to_string(other)),
        }
    }
    out
}

/// `Number(v)` (ToNumber), as a relational comparison applies it.
pub fn to_number(v: &Value) -> f64 {
    match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => *n,
        Value::String(s) => string_to_number(&s.to_lossy()),
        // Arrays become their joined text; objects "[object Object]" (NaN).
        Value::Array(_) => string_to_number(&to_string(v)),
        Value::Object(_) => f64::NAN,
    }
}

/// `v.length > 0` for a value that is neither null nor undefined: arrays
/// and strings have a length (strings in UTF-16 units); an object may
/// carry a `length` property, converted by [`to_number`]; numbers and
/// booleans have none.
pub fn length_positive(v: &Value) -> bool {
    match v {
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => s.utf16_len() > 0,
        Value::Object(o) => o.get("length").is_some_and(|l| to_number(l) > 0.0),
        _ => false,
    }
}

/// The characters `String.prototype.trim` removes.
pub fn is_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{B}' | '\u{C}' | '\u{D}' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// `Number(text)`: trimmed; empty is 0; decimal literals, `Infinity` and
/// unsigned `0x`/`0o`/`0b` integers; anything else is NaN.
pub fn string_to_number(text: &str) -> f64 {
    let t = trim(text);
    if t.is_empty() {
        return 0.0;
    }
    let radix = match t.get(..2) {
        Some("0x" | "0X") => 16,
        Some("0o" | "0O") => 8,
        Some("0b" | "0B") => 2,
        _ => 10,
    };
    if radix != 10 {
        let digits = &t[2..];
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return f64::NAN;
        }
        return power_of_two_radix(digits, radix);
    }
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned == "Infinity" {
        return if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    // A StrDecimalLiteral: digits, optional fraction, optional exponent,
    // with at least one digit in the mantissa. Rust's parser also accepts
    // "inf"/"nan", which the check below excludes.
    let b = unsigned.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return f64::NAN;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return f64::NAN;
        }
        i += exp_digits;
    }
    if i != b.len() {
        return f64::NAN;
    }
    t.parse::<f64>().unwrap_or(f64::NAN)
}

/// The value of unsigned digits in radix 2, 8 or 16, rounded once to the
/// nearest double (ties to even) as JavaScript does; folding digit by digit
/// in doubles would round at every step and can end one unit off.
fn power_of_two_radix(digits: &str, radix: u32) -> f64 {
    let width = radix.trailing_zeros();
    // The first 64 significant bits, how many bits follow them, and
    // whether any of those is set.
    let (mut top, mut used, mut beyond, mut sticky) = (0u64, 0u32, 0i32, false);
    for c in digits.chars() {
        let d = c.to_digit(radix).unwrap_or(0);
        for shift in (0..width).rev() {
            let bit = (d >> shift) & 1 == 1;
            if used == 0 && !bit {
                continue;
            }
            if used < 64 {
                top = (top << 1) | u64::from(bit);
                used += 1;
            } else {
                beyond += 1;
                sticky |= bit;
            }
        }
    }
    // 64 bits hold 11 more than a double keeps, so folding the sticky bit
    // into the lowest one rounds exactly as the full value would.
    let m = (top | u64::from(sticky)) as f64;
    m * 2f64.powi(beyond)
}

/// `String.prototype.trim`.
pub fn trim(s: &str) -> &str {
    s.trim_matches(is_whitespace)
}
