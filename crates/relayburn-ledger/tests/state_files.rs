//! Ingest cursors and high-water marks.

mod support;

use relayburn_ledger::{Object, Value};
use support::*;

fn object(text: &str) -> Object {
    obj(text).into_object().unwrap()
}

#[test]
fn a_cursor_round_trips() {
    let (_d, l) = temp_ledger();
    let map =
        object(r#"{"/abs/a.jsonl":{"kind":"claude","inode":1,"offsetBytes":100,"mtimeMs":123}}"#);
    l.save_cursors(&map).unwrap();
    assert_eq!(l.load_cursors().unwrap(), map);
    // The file is JSON.stringify({files}, null, 2), no trailing newline.
    let text = std::fs::read_to_string(l.home().cursors()).unwrap();
    assert_eq!(
        text,
        "{\n  \"files\": {\n    \"/abs/a.jsonl\": {\n      \"kind\": \"claude\",\n      \"inode\": 1,\n      \"offsetBytes\": 100,\n      \"mtimeMs\": 123\n    }\n  }\n}"
    );
}

#[test]
fn missing_or_malformed_cursor_files_read_as_empty() {
    let (_d, l) = temp_ledger();
    assert!(l.load_cursors().unwrap().is_empty());
    std::fs::write(l.home().cursors(), "{not json").unwrap();
    assert!(l.load_cursors().unwrap().is_empty());
    std::fs::write(l.home().cursors(), r#"{"files":[1,2]}"#).unwrap();
    assert!(l.load_cursors().unwrap().is_empty());
    std::fs::write(l.home().cursors(), r#"{"other":{}}"#).unwrap();
    assert!(l.load_cursors().unwrap().is_empty());
}

#[test]
fn saving_leaves_no_temp_or_lock_file() {
    let (d, l) = temp_ledger();
    l.save_cursors(&object(
        r#"{"/abs/x.jsonl":{"kind":"claude","inode":1,"offsetBytes":0,"mtimeMs":0}}"#,
    ))
    .unwrap();
    for e in std::fs::read_dir(d.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.ends_with(".lock"),
            "{name}"
        );
    }
}

#[test]
fn unknown_fields_survive_rewrites() {
    let (_d, l) = temp_ledger();
    std::fs::write(
        l.home().cursors(),
        r#"{"version":7,"files":{"/a":{"kind":"codex","inode":2,"future":{"x":[1]}}},"trailer":true}"#,
    )
    .unwrap();
    l.update_cursors(|m| {
        m.insert("/b", obj(r#"{"kind":"claude","inode":3}"#));
        Ok(())
    })
    .unwrap();
    let doc = obj(&std::fs::read_to_string(l.home().cursors()).unwrap());
    assert_eq!(
        doc.to_json(),
        r#"{"version":7,"files":{"/a":{"kind":"codex","inode":2,"future":{"x":[1]}},"/b":{"kind":"claude","inode":3}},"trailer":true}"#
    );
}

#[test]
fn the_cursor_lock_serialises_updates_across_threads() {
    let (_d, l) = temp_ledger();
    std::thread::scope(|sc| {
        for t in 0..4 {
            let l = &l;
            sc.spawn(move || {
                for i in 0..10 {
                    l.update_cursors(|m| {
                        m.insert(format!("/t{t}/{i}"), Value::Number(f64::from(i)));
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(l.load_cursors().unwrap().len(), 40);
}

#[test]
fn only_changed_keys_are_saved() {
    let (_d, l) = temp_ledger();
    let stream = "opencode-stream:http://127.0.0.1:7777:demo";
    let before = object(&format!(
        r#"{{"/abs/a.jsonl":{{"kind":"claude","inode":1,"offsetBytes":100,"mtimeMs":100}},"{stream}":{{"kind":"opencode-stream","lastEventId":"1","emittedMessageIds":["m1"],"emittedToolEventIds":[]}},"/gone":{{"kind":"claude"}}}}"#
    ));
    let mut after = before.clone();
    after.insert(
        "/abs/a.jsonl",
        obj(r#"{"kind":"claude","inode":1,"offsetBytes":200,"mtimeMs":200}"#),
    );
    after.remove("/gone");
    after.insert("/new", obj(r#"{"kind":"claude","inode":9}"#));
    l.save_cursors(&before).unwrap();
    // Another writer moves the stream cursor meanwhile.
    let moved = obj(
        r#"{"kind":"opencode-stream","lastEventId":"2","emittedMessageIds":["m1","m2"],"emittedToolEventIds":["tool:0"]}"#,
    );
    let m2 = moved.clone();
    l.update_cursors(move |m| {
        m.insert(stream, m2);
        Ok(())
    })
    .unwrap();
    l.save_cursor_changes(&before, &after).unwrap();
    let got = l.load_cursors().unwrap();
    assert_eq!(got.get("/abs/a.jsonl"), after.get("/abs/a.jsonl"));
    assert_eq!(got.get(stream), Some(&moved));
    assert_eq!(got.get("/gone"), None);
    assert_eq!(got.get("/new"), after.get("/new"));
}

#[test]
fn no_change_means_no_write() {
    let (_d, l) = temp_ledger();
    let map = object(r#"{"/a":{"kind":"claude","offsetBytes":1,"x":{"b":1,"a":2}}}"#);
    // Key order does not make a change.
    let reordered = object(r#"{"/a":{"x":{"a":2,"b":1},"offsetBytes":1,"kind":"claude"}}"#);
    l.save_cursor_changes(&map, &reordered).unwrap();
    assert!(!l.home().cursors().exists());
    // -0 and 0 differ, as util.isDeepStrictEqual says.
    let zero = object(r#"{"/a":{"n":0}}"#);
    let negative = object(r#"{"/a":{"n":-0}}"#);
    l.save_cursor_changes(&zero, &negative).unwrap();
    assert!(l.home().cursors().exists());
}

#[test]
fn high_water_marks_round_trip() {
    let (_d, l) = temp_ledger();
    assert!(l.load_hwm().unwrap().is_empty());
    let map = object(
        r#"{"/abs/s.jsonl":{"lastMessageId":"m9","lastTs":"2026-04-20T00:00:00.000Z","mtimeMs":1.5,"extra":[1]}}"#,
    );
    l.save_hwm(&map).unwrap();
    assert_eq!(l.load_hwm().unwrap(), map);
    let text = std::fs::read_to_string(l.home().hwm()).unwrap();
    assert!(text.starts_with("{\n  \"/abs/s.jsonl\": {\n    \"lastMessageId\": \"m9\","));
    for bad in ["[1,2]", "\"x\"", "nope"] {
        std::fs::write(l.home().hwm(), bad).unwrap();
        assert!(l.load_hwm().unwrap().is_empty(), "{bad}");
    }
}
