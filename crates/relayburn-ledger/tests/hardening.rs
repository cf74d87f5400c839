//! Faults a hostile trial found: a ledger replaced under the archive, and
//! what the archive's reads and builds must do about it.

mod archive_common;
mod common;

use archive_common::*;
use relayburn_ledger::archive::{
    archive_status, build_archive, plan_turn_read, rebuild_archive, TurnPlan, TurnSource,
};
use relayburn_ledger::records::Kind;

const T0: &str = "2026-04-20T10:00:00.000Z";

fn turns(h: &TempHome, session: &str, n: u32) {
    for i in 0..n {
        h.append_record(
            Kind::Turn,
            &turn(session, &format!("{session}-m{i}"), i, T0, ""),
        );
    }
}

/// The archive tables of a full rebuild of `h`'s ledger, made aside.
fn full_rebuild_dump(h: &TempHome) -> relayburn_ledger::json::Value {
    let scratch = TempHome::new();
    std::fs::copy(h.ledger(), scratch.ledger()).unwrap();
    rebuild_archive(&scratch.home, &scratch.locks).unwrap();
    dump(&scratch.archive())
}

#[test]
fn a_ledger_replaced_by_a_longer_file_restarts_the_build_from_zero() {
    let h = TempHome::new();
    turns(&h, "s-old", 3);
    build_archive(&h.home, &h.locks).unwrap();
    let old_len = std::fs::metadata(h.ledger()).unwrap().len();

    // Another ledger, longer than the first, in its place.
    let other = TempHome::new();
    turns(&other, "s-new", 8);
    assert!(std::fs::metadata(other.ledger()).unwrap().len() > old_len);
    std::fs::copy(other.ledger(), h.ledger()).unwrap();

    // Reads say so instead of answering from a mixed archive.
    let s = archive_status(&h.home).unwrap();
    assert!(!s.up_to_date);
    assert!(s.problem.unwrap().contains("not the file"), "status");
    match plan_turn_read(&h.home, TurnSource::Auto).unwrap() {
        TurnPlan::Ledger { note } => assert!(note.unwrap().contains("another ledger")),
        TurnPlan::Archive { .. } => panic!("auto read the archive of another ledger"),
    }
    assert!(plan_turn_read(&h.home, TurnSource::Archive).is_err());
    let report = relayburn_ledger::check::check(&h.home, &mut |_, _| {}).unwrap();
    assert!(
        report
            .problems()
            .iter()
            .any(|p| p.contains("another ledger")),
        "{:?}",
        report.problems()
    );

    // The next build starts from zero: the archive is the new ledger's alone.
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert!(r.restarted.is_some(), "{r:?}");
    assert_eq!(r.turns_applied, 8);
    assert_dumps_equal(&dump(&h.archive()), &full_rebuild_dump(&h), "after restart");
    assert!(archive_status(&h.home).unwrap().up_to_date);

    // Growing the same ledger is not a replacement.
    turns(&h, "s-more", 2);
    let r = build_archive(&h.home, &h.locks).unwrap();
    assert_eq!((r.restarted, r.turns_applied), (None, 2));
    assert_dumps_equal(&dump(&h.archive()), &full_rebuild_dump(&h), "after growth");
}
