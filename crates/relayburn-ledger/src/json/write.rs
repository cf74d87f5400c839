//! Serialisation (`JSON.stringify`), compact and indented.

use super::number::write_number;
use super::parse::find_string_special;
use super::*;

pub(super) const HEX: &[u8; 16] = b"0123456789abcdef";

pub(super) fn push_u_escape(out: &mut String, unit: u16) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((unit >> shift) & 0xF) as usize] as char);
    }
}

pub(super) fn write_str_body(out: &mut String, s: &str) {
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

pub(super) enum Frame<'a> {
    Array(std::slice::Iter<'a, Value>, bool),
    Object(std::slice::Iter<'a, (JsString, Value)>, bool),
}

pub(super) fn write_value(out: &mut String, root: &Value) {
    write_frames(out, Vec::new(), Some(root));
}

/// Write `next` (if any), then finish every open container on `stack`.
pub(super) fn write_frames<'a>(
    out: &mut String,
    mut stack: Vec<Frame<'a>>,
    mut next: Option<&'a Value>,
) {
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

/// `JSON.stringify(value, null, 2)`: the indented form the reference's CLI
/// prints for `--json` output.
pub fn to_json_pretty(value: &Value) -> String {
    let mut out = String::new();
    write_pretty(&mut out, value, 0);
    out
}

pub(super) fn write_pretty(out: &mut String, v: &Value, depth: usize) {
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
