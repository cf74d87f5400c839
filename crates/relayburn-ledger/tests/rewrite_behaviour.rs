//! The turn rewrite primitive (what reclassification is built on).

mod support;

use std::os::unix::fs::MetadataExt;

use relayburn_ledger::{Error, Query, Value};
use support::*;

/// A stand-in classifier: label turns by their first tool.
fn label(rec: &mut relayburn_ledger::Object, force: bool) -> bool {
    if !force && rec.get("activity").is_some() {
        return false;
    }
    let tool = rec
        .get("toolCalls")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let activity = match tool {
        "apply_patch" => "coding",
        "exec_command" => "testing",
        _ => "exploration",
    };
    let changed = rec.get("activity").and_then(Value::as_str) != Some(activity);
    rec.insert("activity", Value::str(activity));
    rec.insert("hasEdits", Value::Bool(activity == "coding"));
    changed
}

#[test]
fn without_a_ledger_nothing_happens() {
    let (_d, l) = temp_ledger();
    let r = l.rewrite_turns(|_, _| Ok(true)).unwrap();
    assert_eq!((r.lines, r.turns, r.changed), (0, 0, 0));
    assert!(!l.home().ledger().exists());
}

#[test]
fn changed_turns_are_rewritten_and_the_rest_is_kept() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"messageId":"msg-coding","toolCalls":[{"id":"c1","name":"apply_patch","argsHash":"h","target":"/a.ts"}]}"#),
        turn(r#"{"messageId":"msg-testing","turnIndex":1,"ts":"2026-04-20T00:00:01.000Z","toolCalls":[{"id":"c2","name":"exec_command","argsHash":"h","target":"pytest -q"}]}"#),
        turn(r#"{"messageId":"msg-done","turnIndex":2,"ts":"2026-04-20T00:00:02.000Z","activity":"refactoring"}"#),
    ])
    .unwrap();
    let before = std::fs::read_to_string(l.home().ledger()).unwrap();
    let r = l.rewrite_turns(|rec, _| Ok(label(rec, false))).unwrap();
    assert_eq!((r.lines, r.turns, r.changed), (3, 3, 2));
    let got = turns(&l, &Query::default());
    let activity: Vec<&str> = got.iter().map(|t| s(t, "activity").unwrap()).collect();
    assert_eq!(activity, ["coding", "testing", "refactoring"]);
    assert_eq!(got[0].get("hasEdits"), Some(&Value::Bool(true)));
    let after = std::fs::read_to_string(l.home().ledger()).unwrap();
    let (b, a): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    assert_eq!(a[2], b[2], "an unchanged turn is kept byte for byte");
    // A changed turn is the same line with the new fields.
    let mut expected = obj(b[0]);
    let rec = expected
        .as_object_mut()
        .unwrap()
        .get_mut("record")
        .unwrap()
        .as_object_mut()
        .unwrap();
    rec.insert("activity", Value::str("coding"));
    rec.insert("hasEdits", Value::Bool(true));
    assert_eq!(a[0], expected.to_json());
    // A forced run changes the labelled turn too.
    let r = l.rewrite_turns(|rec, _| Ok(label(rec, true))).unwrap();
    assert_eq!(r.changed, 1);
}

#[test]
fn other_lines_are_copied_byte_for_byte() {
    let (_d, l) = temp_ledger();
    let t = format!(
        r#"{{"v":1,"kind":"turn","record":{}}}"#,
        turn(r#"{"messageId":"m"}"#).to_json()
    );
    let odd = [
        r#"{"v":1,"kind":"stamp","ts":"2026-01-01T00:00:00.000Z","selector":{"sessionId":"sess-a"},"enrichment":{"k":"v"}}"#,
        "",
        "   ",
        "{broken",
        r#"{"v":2,"kind":"turn","record":{"sessionId":"sess-a"}}"#,
        r#"{"v":1,"kind":"mystery","x":1}"#,
        "{\"a\":1}\r{\"b\":2}",
        r#"{ "v" : 1 , "kind":"compaction","record":{"ts":"x"} }"#,
    ];
    let mut body = String::new();
    for o in odd {
        body.push_str(o);
        body.push('\n');
    }
    body.push_str(&t);
    body.push('\n');
    // A turn written by someone else with odd spacing, unchanged by `f`.
    body.push_str(&format!(
        "{{ \"v\":1, \"kind\":\"turn\", \"record\":{} }}\r\n",
        turn(r#"{"messageId":"keep","activity":"x"}"#).to_json()
    ));
    body.push_str("no final newline");
    std::fs::write(l.home().ledger(), &body).unwrap();
    let r = l.rewrite_turns(|rec, _| Ok(label(rec, false))).unwrap();
    assert_eq!(r.changed, 1);
    assert_eq!(r.turns, 2);
    let after = std::fs::read_to_string(l.home().ledger()).unwrap();
    let before_lines: Vec<&str> = body.split('\n').collect();
    let after_lines: Vec<&str> = after.split('\n').collect();
    assert_eq!(before_lines.len(), after_lines.len());
    for (i, (b, a)) in before_lines.iter().zip(&after_lines).enumerate() {
        if i == odd.len() {
            assert_ne!(b, a);
        } else {
            assert_eq!(b, a, "line {i}");
        }
    }
    assert!(after.ends_with("no final newline"));
}

#[test]
fn the_callback_sees_its_sessions_content() {
    let (_d, l) = temp_ledger();
    let sid = "5f0c2a9e-1d2b-4c3d-8e4f-a0b1c2d3e4f5";
    l.append_turns(vec![
        turn(&format!(r#"{{"sessionId":"{sid}","messageId":"a1"}}"#)),
        turn(r#"{"sessionId":"other","messageId":"b1","ts":"2026-04-21"}"#),
        turn(&format!(
            r#"{{"sessionId":"{sid}","messageId":"a2","ts":"2026-04-22"}}"#
        )),
    ])
    .unwrap();
    l.append_content(vec![
        merge(CONTENT, &format!(r#"{{"sessionId":"{sid}","role":"user","text":"fix the build"}}"#)),
        merge(
            CONTENT,
            &format!(r#"{{"sessionId":"{sid}","kind":"tool_result","toolResult":{{"toolUseId":"tool-1","content":"FAIL","isError":true}}}}"#),
        ),
    ])
    .unwrap();
    let mut seen = Vec::new();
    l.rewrite_turns(|rec, content| {
        seen.push((
            s(&Value::Object(rec.clone()), "messageId")
                .unwrap()
                .to_string(),
            content.len(),
        ));
        Ok(false)
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            ("a1".to_string(), 2),
            ("b1".to_string(), 0),
            ("a2".to_string(), 2)
        ]
    );
}

#[test]
fn an_error_leaves_the_ledger_untouched() {
    let (d, l) = temp_ledger();
    l.append_turns(vec![
        turn(r#"{"messageId":"a"}"#),
        turn(r#"{"messageId":"b","ts":"2026-04-21"}"#),
    ])
    .unwrap();
    let before = std::fs::read(l.home().ledger()).unwrap();
    let ino = std::fs::metadata(l.home().ledger()).unwrap().ino();
    let mut n = 0;
    let r = l.rewrite_turns(|rec, _| {
        n += 1;
        if n == 2 {
            return Err(Error::Internal("classifier failed".into()));
        }
        Ok(label(rec, true))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read(l.home().ledger()).unwrap(), before);
    assert_eq!(std::fs::metadata(l.home().ledger()).unwrap().ino(), ino);
    for e in std::fs::read_dir(d.path()).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.ends_with(".lock"),
            "{name}"
        );
    }
}

#[test]
fn an_unchanged_ledger_is_not_replaced() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    let ino = std::fs::metadata(l.home().ledger()).unwrap().ino();
    let r = l.rewrite_turns(|_, _| Ok(false)).unwrap();
    assert_eq!((r.turns, r.changed), (1, 0));
    assert_eq!(std::fs::metadata(l.home().ledger()).unwrap().ino(), ino);
}

#[test]
fn dedup_still_works_after_a_rewrite() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    l.rewrite_turns(|rec, _| Ok(label(rec, true))).unwrap();
    assert_eq!(l.append_turns(vec![turn("{}")]).unwrap(), 0);
    assert_eq!(
        l.append_turns(vec![turn(r#"{"messageId":"new","ts":"2026-05-01"}"#)])
            .unwrap(),
        1
    );
    assert_eq!(turns(&l, &Query::default()).len(), 2);
}

#[test]
fn appends_from_threads_during_a_rewrite_are_not_lost() {
    let (_d, l) = temp_ledger();
    let seed: Vec<Value> = (0..500)
        .map(|i| {
            turn(&format!(
                r#"{{"sessionId":"race-s-{}","messageId":"seed-m-{i}","turnIndex":{i},"ts":"2026-04-20T00:00:00.{i:03}Z","toolCalls":[{{"id":"tc-{i}","name":"apply_patch","argsHash":"h","target":"/f{i}.ts"}}]}}"#,
                i % 8
            ))
        })
        .collect();
    l.append_turns(seed).unwrap();
    std::thread::scope(|sc| {
        let l = &l;
        sc.spawn(move || {
            for _ in 0..3 {
                l.rewrite_turns(|rec, _| Ok(label(rec, true))).unwrap();
            }
        });
        for j in 0..20 {
            sc.spawn(move || {
                let t = turn(&format!(
                    r#"{{"sessionId":"late-s-{j}","messageId":"late-m-{j}","ts":"2026-04-21T00:00:00.{j:03}Z"}}"#
                ));
                assert_eq!(l.append_turns(vec![t]).unwrap(), 1);
            });
        }
    });
    let got = turns(&l, &Query::default());
    assert_eq!(got.len(), 520);
    for j in 0..20 {
        let m = format!("late-m-{j}");
        assert!(
            got.iter().any(|t| s(t, "messageId") == Some(&m)),
            "{m} lost"
        );
    }
}

#[test]
fn appending_from_inside_the_callback_is_refused() {
    let (_d, l) = temp_ledger();
    l.append_turns(vec![turn("{}")]).unwrap();
    let mut refused = false;
    l.rewrite_turns(|_, _| {
        let r = l.append_turns(vec![turn(r#"{"messageId":"inner","ts":"2026-05-01"}"#)]);
        refused = matches!(&r, Err(Error::Invalid { field, .. }) if field == "ledger");
        Ok(false)
    })
    .unwrap();
    assert!(refused);
    assert_eq!(turns(&l, &Query::default()).len(), 1);
    // Outside the rewrite appends work again.
    assert_eq!(
        l.append_turns(vec![turn(r#"{"messageId":"outer","ts":"2026-05-01"}"#)])
            .unwrap(),
        1
    );
}
