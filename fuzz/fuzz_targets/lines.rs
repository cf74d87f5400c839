//! Any bytes as a ledger file: scan, parse, classify and hash every line,
//! and check that what we write back reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relayburn_ledger::index;
use relayburn_ledger::json::{self, Value};
use relayburn_ledger::jsonl::{self, LineScanner, Parsed};
use relayburn_ledger::records::{line_kind, Kind};

fn check_value(v: &Value) {
    let text = v.to_json();
    assert!(!text.contains('\n'));
    let back = json::parse(&text).expect("our own output parses");
    assert_eq!(back.to_json(), text);
    let copy = v.clone();
    assert!(copy == *v);
    let absent = Value::Null;
    let rec = v.get("record").unwrap_or(&absent);
    if let Some(kind) = line_kind(v) {
        let _ = index::record_id(kind, rec);
    }
    for kind in Kind::ALL {
        let _ = index::record_id(kind, rec);
    }
    let _ = index::turn_fingerprint(rec);
}

fuzz_target!(|data: &[u8]| {
    let mut scanner = LineScanner::new(data, 0);
    let mut lines = 0;
    while let Ok(Some(line)) = scanner.next_line() {
        lines += 1;
        jsonl::for_each_logical(line.bytes, |p| {
            if let Parsed::Value(v) = p {
                check_value(&v);
            }
        });
    }
    assert_eq!(scanner.position(), data.len() as u64);
    assert!(lines <= data.len());
});
