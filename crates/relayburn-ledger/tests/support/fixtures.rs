//! Where the reference's fixtures are, and skipping without them.
use std::path::PathBuf;

/// The `shared/` directory holding `fixtures/` (the reference's outputs):
/// `RELAYBURN_SHARED` when set, else `../shared` beside the checkout.
///
/// Returns `None` (after printing a notice) when the fixtures are absent,
/// so a plain `cargo test` elsewhere skips these tests; with
/// `RELAYBURN_REQUIRE_FIXTURES=1` (as `.ci/run` sets) their absence fails.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RELAYBURN_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    if dir.join("fixtures").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("RELAYBURN_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        panic!(
            "reference fixtures are required but missing at {}",
            dir.join("fixtures").display()
        );
    }
    eprintln!(
        "notice: reference fixtures not found at {}; skipping (set RELAYBURN_SHARED)",
        dir.join("fixtures").display()
    );
    None
}

/// `<shared>/fixtures/reference`, or `None` to skip.
pub fn reference_dir() -> Option<PathBuf> {
    shared_dir().map(|d| d.join("fixtures/reference"))
}

/// Skip the current test when the fixtures are absent.
#[macro_export]
macro_rules! reference_or_skip {
    () => {
        match $crate::support::fixtures::reference_dir() {
            Some(d) => d,
            None => return,
        }
    };
}

/// Fail unless the case directories in `dir` are exactly `cases`
/// (sorted): a case the reference adds must be listed here to be replayed.
pub fn assert_cases_listed(dir: &std::path::Path, cases: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, cases, "a case was added or removed: list it here");
}

/// Fail with every mismatch of a replayed case listed.
pub fn assert_no_mismatches(case: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "case {case}: {} mismatches\n{}",
        failures.len(),
        failures.join("\n")
    );
}
