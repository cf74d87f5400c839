//! `state status` keeps its line counts between runs; the kept counts must
//! always equal a recount of the whole ledger and index, whatever happened
//! to the files in between.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use relayburn_ledger::records::Kind;
use relayburn_ledger::state::counts::COUNTS_FILE;
use relayburn_ledger::state::status::LedgerCounts;
use relayburn_ledger::{Ledger, LedgerHome};

fn turn(i: usize, activity: bool) -> String {
    let act = if activity {
        r#","activity":"coding""#
    } else {
        ""
    };
    format!(
        r#"{{"v":1,"kind":"turn","record":{{"source":"claude-code","sessionId":"s{i}","messageId":"m{i}","ts":"2026-01-01T00:00:00.000Z"{act}}}}}"#
    )
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The status's counts (kept) and a fresh recount; they must agree.
fn both(ledger: &Ledger) -> (LedgerCounts, LedgerCounts, u64) {
    let status = ledger.state_status(&mut |_, _| {}).unwrap();
    let recount = ledger.ledger_counts(&mut |_, _| {}).unwrap();
    (status.ledger, recount, status.ids.entries)
}

fn ids_recount(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

#[test]
fn kept_counts_equal_a_recount_after_appends_torn_tails_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let ledger = Ledger::open(home.clone()).unwrap();
    let path = home.ledger();
    let idx = home.ledger_index();

    // Three turns (two classified), a blank line, a line that is not JSON.
    let mut text = String::new();
    for i in 0..3 {
        text.push_str(&turn(i, i != 1));
        text.push('\n');
    }
    text.push_str("\nnot json\n");
    append(&path, &text);
    append(&idx, "00112233445566aa\n00112233445566bb\n");
    let (kept, recount, ids) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!(kept.count(Kind::Turn), 3);
    assert_eq!(kept.classified, 2);
    assert_eq!((kept.blank, kept.other), (1, 1));
    assert_eq!(ids, 2);
    assert!(dir.path().join(COUNTS_FILE).is_file(), "counts were kept");

    // Appends are counted on top of the kept prefix.
    append(&path, &format!("{}\n{}\n", turn(3, true), turn(4, false)));
    append(&idx, "00112233445566cc\n");
    let (kept, recount, ids) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!(kept.count(Kind::Turn), 5);
    assert_eq!(kept.classified, 3);
    assert_eq!(ids, 3);

    // A torn tail: a line without its newline counts, but is not kept, so
    // completing it does not count it twice.
    let torn = turn(5, true);
    let (head, rest) = torn.split_at(torn.len() / 2);
    append(&path, head);
    append(&idx, "00112233445566dd");
    let (kept, recount, ids) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!(kept.count(Kind::Turn), 5, "half a line is not a turn");
    assert_eq!(kept.other, 2, "half a line is another line");
    assert_eq!(ids, 4);
    assert_eq!(ids, ids_recount(&idx));
    append(&path, &format!("{rest}\n"));
    append(&idx, "\n");
    let (kept, recount, ids) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!((kept.count(Kind::Turn), kept.other), (6, 1));
    assert_eq!(ids, 4);

    // Truncation in place to the first three lines, then other lines
    // appended past the old length: the digest of the bytes before the
    // kept end no longer matches, so everything is recounted.
    let bytes = std::fs::read(&path).unwrap();
    let cut = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut as u64).unwrap();
    drop(f);
    let mut more = String::new();
    for i in 10..20 {
        more.push_str(&turn(i, false));
        more.push('\n');
    }
    append(&path, &more);
    let (kept, recount, _) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!((kept.count(Kind::Turn), kept.classified), (13, 2));

    // A replaced file (new inode) and a corrupt counts file: recounted.
    let tmp = dir.path().join("ledger.jsonl.new");
    std::fs::write(&tmp, format!("{}\n", turn(30, true))).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let (kept, recount, _) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!(kept.count(Kind::Turn), 1);
    std::fs::write(dir.path().join(COUNTS_FILE), "{not json").unwrap();
    append(&path, &format!("{}\n", turn(31, true)));
    let (kept, recount, _) = both(&ledger);
    assert_eq!(kept, recount);
    assert_eq!((kept.count(Kind::Turn), kept.classified), (2, 2));
}
