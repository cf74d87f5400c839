//! The index sidecars when several handles (as several processes would)
//! take turns on one home: the content window, rewritten whole at every
//! append once it is full, must never lose a recent fingerprint.

mod support;

use relayburn_ledger::check;
use relayburn_ledger::{Ledger, LedgerHome};

use support::reliability::*;

/// Three handles append in turn past a full window. Each append replaces
/// `ledger.content.idx` (a new file renamed over the old one) by a file
/// of exactly the same size; when the file system hands a replacement the
/// inode number a handle last saw, only a handle that kept its file open
/// can tell the file changed.
#[test]
fn handles_taking_turns_on_a_full_window_keep_every_recent_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let home = LedgerHome::new(dir.path());
    let first = Ledger::open(home.clone()).unwrap();
    let mut next = WINDOW - 30;
    first.append_turns((0..next).map(turn).collect()).unwrap();
    let handles: Vec<Ledger> = (0..3)
        .map(|_| Ledger::open(home.clone()).unwrap())
        .collect();
    for round in 0..50 {
        for h in &handles {
            assert_eq!(
                h.append_turns((next..next + 3).map(turn).collect())
                    .unwrap(),
                3
            );
            next += 3;
        }
        let window = IndexAudit::of(&home.ledger_content_index());
        assert_eq!(window.hashes.len(), WINDOW.min(next), "round {round}");
        let want: Vec<_> = (next.saturating_sub(WINDOW)..next).map(turn_fp).collect();
        assert_eq!(
            window.hashes, want,
            "round {round}: the window lost fingerprints"
        );
    }
    let report = check::check(&home, &mut |_, _| {}).unwrap();
    assert!(report.problems().is_empty(), "{:?}", report.problems());
}
