//! Reader conformance on the reference's fixture home: every query of
//! `queries-in.json` must return what the reference's ledger query
//! returned, and an index rebuild of its ledger must write the same index
//! files the reference wrote.

mod support;

use relayburn_ledger::{json, Ledger, LedgerHome, Query, Value};

fn load(path: &std::path::Path) -> Value {
    json::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn collect(it: impl Iterator<Item = relayburn_ledger::Result<Value>>) -> Vec<Value> {
    it.collect::<Result<Vec<_>, _>>().unwrap()
}

/// Equal as JSON values and in key order; on a difference, name the first
/// differing item.
fn assert_same(what: &str, want: &[Value], got: &[Value]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} results, reference has {}",
        got.len(),
        want.len()
    );
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            w == g && w.to_json() == g.to_json(),
            "{what}: item {i} differs\n  want: {}\n  got:  {}",
            w.to_json(),
            g.to_json()
        );
    }
}

#[test]
fn turn_queries_match_the_reference() {
    let reference = reference_or_skip!();
    let home = reference.join("home");
    let ledger = Ledger::open(LedgerHome::new(&home)).unwrap();
    let inputs = load(&home.join("queries-in.json"));
    let expected = load(&home.join("queries.json"));
    let turn_queries = inputs.get("turns").and_then(Value::as_array).unwrap();
    let expected = expected.as_array().unwrap();
    assert_eq!(turn_queries.len(), expected.len());
    for (q, e) in turn_queries.iter().zip(expected) {
        assert_eq!(
            e.get("query"),
            Some(q),
            "queries.json follows queries-in.json"
        );
        let want = e.get("ledger").and_then(Value::as_array).unwrap();
        let got = collect(ledger.query_turns(&Query::from_json(q)).unwrap());
        assert_same(&format!("turns {}", q.to_json()), want, &got);
    }
}

#[test]
fn other_kinds_match_the_reference() {
    let reference = reference_or_skip!();
    let home = reference.join("home");
    let ledger = Ledger::open(LedgerHome::new(&home)).unwrap();
    let expected = load(&home.join("aux-queries.json"));
    let expected = expected.as_array().unwrap();
    assert!(!expected.is_empty());
    for e in expected {
        let q = e.get("query").unwrap();
        let query = Query::from_json(q);
        let cases: [(&str, Vec<Value>); 4] = [
            (
                "compactions",
                collect(ledger.query_compactions(&query).unwrap()),
            ),
            (
                "relationships",
                collect(ledger.query_relationships(&query).unwrap()),
            ),
            (
                "toolResultEvents",
                collect(ledger.query_tool_result_events(&query).unwrap()),
            ),
            (
                "userTurns",
                collect(ledger.query_user_turns(&query).unwrap()),
            ),
        ];
        for (kind, got) in cases {
            let want = e.get(kind).and_then(Value::as_array).unwrap();
            assert_same(&format!("{kind} {}", q.to_json()), want, &got);
        }
    }
}

#[test]
fn index_rebuild_matches_the_reference() {
    let reference = reference_or_skip!();
    let fixture = reference.join("home");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture.join("ledger.jsonl"),
        dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let ledger = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    let r = ledger.rebuild_index().unwrap();
    assert_eq!(r.skipped, 0);
    for name in ["ledger.idx", "ledger.content.idx"] {
        let want = std::fs::read(fixture.join(name)).unwrap();
        let got = std::fs::read(dir.path().join(name)).unwrap();
        assert!(want == got, "{name} differs from the reference's rebuild");
    }
    let ids = std::fs::read_to_string(fixture.join("ledger.idx")).unwrap();
    assert_eq!(r.ids, ids.lines().count());
}

/// The fixture ledger cut just before the `\n` that ends the last line
/// holding `marker`, so that line is complete JSON without its newline.
/// Node's readline still yields such a line, so the reference's readers and
/// its index rebuild take it into account.
fn cut_before_newline(ledger: &[u8], marker: &str) -> Vec<u8> {
    let text = std::str::from_utf8(ledger).unwrap();
    let start = text.rfind(marker).unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let line = &text[text[..start].rfind('\n').map_or(0, |i| i + 1)..end];
    assert!(json::parse(line).is_ok(), "the cut line must be valid JSON");
    ledger[..end].to_vec()
}

fn home_with(ledger: &[u8]) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ledger.jsonl"), ledger).unwrap();
    let l = Ledger::open(LedgerHome::new(dir.path())).unwrap();
    (dir, l)
}

#[test]
fn a_complete_last_line_without_its_newline_is_read_by_queries_and_the_index_rebuild() {
    let reference = reference_or_skip!();
    let fixture = reference.join("home");
    let full = std::fs::read(fixture.join("ledger.jsonl")).unwrap();
    // The fixture ends: … user_turn line, stamp line, torn fragment. Cutting
    // before the stamp's newline leaves the stamp as the last line; cutting
    // before the user turn's leaves that user turn last. The fragment never
    // parsed, so the reference's outputs for the whole file hold for both.
    let at_stamp = cut_before_newline(&full, "{\"v\":1,\"kind\":\"stamp\"");
    let at_user_turn = cut_before_newline(&full, "{\"v\":1,\"kind\":\"user_turn\"");
    assert!(at_user_turn.len() < at_stamp.len());

    // Turns: the unterminated stamp is folded as the reference folds it.
    let (_d, ledger) = home_with(&at_stamp);
    let expected = load(&fixture.join("queries.json"));
    let first = &expected.as_array().unwrap()[0];
    assert_eq!(first.get("query").unwrap().to_json(), "{}");
    let want = first.get("ledger").and_then(Value::as_array).unwrap();
    let got = collect(ledger.query_turns(&Query::default()).unwrap());
    assert_same("turns {} (stamp unterminated)", want, &got);

    // User turns: the unterminated one is returned.
    let (dir, ledger) = home_with(&at_user_turn);
    let aux = load(&fixture.join("aux-queries.json"));
    let all = aux.as_array().unwrap()[0].clone();
    assert_eq!(all.get("query").unwrap().to_json(), "{}");
    let want = all.get("userTurns").and_then(Value::as_array).unwrap();
    let got = collect(ledger.query_user_turns(&Query::default()).unwrap());
    assert_same("userTurns {} (last one unterminated)", want, &got);

    // Index rebuild: the unterminated user turn's id is in the index, which
    // is then byte for byte the reference's.
    ledger.rebuild_index().unwrap();
    for name in ["ledger.idx", "ledger.content.idx"] {
        let want = std::fs::read(fixture.join(name)).unwrap();
        let got = std::fs::read(dir.path().join(name)).unwrap();
        assert!(want == got, "{name} differs from the reference's rebuild");
    }
}
