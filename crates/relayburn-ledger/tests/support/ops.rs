//! Helpers shared by the replays of the reference's `ops/` scripts.

use relayburn_ledger::Value;

/// The `records` of a step.
pub fn records(step: &Value) -> Vec<Value> {
    step.get("records")
        .and_then(Value::as_array)
        .map(<[Value]>::to_vec)
        .unwrap_or_default()
}

/// At most 400 bytes of `s`, for failure messages.
pub fn short(s: &str) -> String {
    if s.len() > 400 {
        let mut end = 400;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// Compare results as JSON values and, stricter, in key order too.
pub fn compare_result(i: usize, op: &str, want: &Value, got: &Value) -> Option<String> {
    if want == got && want.to_json() == got.to_json() {
        return None;
    }
    if let (Value::Array(w), Value::Array(g)) = (want, got) {
        if w.len() != g.len() {
            return Some(format!(
                "step {i} ({op}): {} items, reference has {}",
                g.len(),
                w.len()
            ));
        }
        for (j, (a, b)) in w.iter().zip(g).enumerate() {
            if a != b || a.to_json() != b.to_json() {
                return Some(format!(
                    "step {i} ({op}) item {j} differs\n  want: {}\n  got:  {}",
                    short(&a.to_json()),
                    short(&b.to_json())
                ));
            }
        }
    }
    Some(format!(
        "step {i} ({op}) differs\n  want: {}\n  got:  {}",
        short(&want.to_json()),
        short(&got.to_json())
    ))
}
