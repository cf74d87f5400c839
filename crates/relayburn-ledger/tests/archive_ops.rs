//! Replays the archive steps of the reference's ops scripts: every build
//! result and archive query equals `expected/results.json`, and the final
//! archive equals `expected/archive-dump.json`.
//!
//! Writer steps (`appendTurns`, `appendStamp`, …) belong to the writer
//! module; their output is taken from the expected final ledger, cut where
//! the next archive step needs it.

mod support;

use std::path::Path;

use relayburn_ledger::archive::{build_archive, query_all_from_archive, rebuild_archive};
use relayburn_ledger::json::Value;
use relayburn_ledger::query::Query;
use support::archive::*;

struct Replay<'a> {
    h: TempHome,
    expected_ledger: &'a [u8],
    /// Writer steps happened since the ledger was last brought up to date.
    pending: bool,
}

impl Replay<'_> {
    fn len(&self) -> usize {
        std::fs::metadata(self.h.ledger()).map_or(0, |m| m.len() as usize)
    }

    /// Bring the ledger up to `upto` bytes of the expected ledger.
    fn extend_to(&mut self, upto: usize) {
        let cur = self.len();
        assert!(upto >= cur, "expected ledger is shorter than ours");
        let ours = std::fs::read(self.h.ledger()).unwrap_or_default();
        assert_eq!(
            &ours[..],
            &self.expected_ledger[..cur],
            "ledger prefix differs"
        );
        let text = std::str::from_utf8(&self.expected_ledger[cur..upto]).unwrap();
        self.h.append(text);
        self.pending = false;
    }
}

fn replay(case_dir: &Path) -> usize {
    let ops = read_json(&case_dir.join("ops.json"));
    let results = read_json(&case_dir.join("expected/results.json"));
    let expected_ledger = std::fs::read(case_dir.join("expected/ledger.jsonl")).unwrap();
    let mut r = Replay {
        h: TempHome::new(),
        expected_ledger: &expected_ledger,
        pending: false,
    };
    let mut checked = 0;
    let ops = ops.as_array().unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(ops.len(), results.len());
    for (i, (op, res)) in ops.iter().zip(results).enumerate() {
        let name = op.get("op").and_then(Value::as_str).unwrap();
        let want = res.get("result").unwrap();
        let step = format!("{} step {i} ({name})", case_dir.display());
        match name {
            "rawAppend" => {
                let text = op.get("text").and_then(Value::as_str).unwrap();
                if r.pending {
                    let cur = r.len();
                    let at = memchr::memmem::find(&expected_ledger[cur..], text.as_bytes())
                        .expect("raw text in the expected ledger");
                    r.extend_to(cur + at);
                }
                r.h.append(text);
            }
            "truncateLedger" => {
                assert!(!r.pending);
                let bytes = op.get("bytes").and_then(Value::as_f64).unwrap() as u64;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(r.h.ledger())
                    .unwrap();
                f.set_len(bytes).unwrap();
            }
            "buildArchive" => {
                if r.pending {
                    let scanned = want.get("scannedBytes").and_then(Value::as_f64).unwrap();
                    let upto = r.len() + scanned as usize;
                    r.extend_to(upto);
                }
                let got = build_archive(&r.h.home, &r.h.locks).unwrap();
                assert_eq!(got.to_value().to_json(), want.to_json(), "{step}");
                checked += 1;
            }
            "rebuildArchive" => {
                if r.pending {
                    r.extend_to(expected_ledger.len());
                }
                let got = rebuild_archive(&r.h.home, &r.h.locks).unwrap();
                assert_eq!(got.to_value().to_json(), want.to_json(), "{step}");
                checked += 1;
            }
            "query" if op.get("from").and_then(Value::as_str) == Some("archive") => {
                let q = Query::from_json(op.get("query").unwrap());
                let got = query_all_from_archive(&r.h.home, &q).unwrap();
                let want = want.as_array().unwrap();
                assert_eq!(got.len(), want.len(), "{step}: row count");
                for (j, (g, w)) in got.iter().zip(want).enumerate() {
                    assert_eq!(g.to_json(), w.to_json(), "{step}: row {j}");
                }
                checked += 1;
            }
            "appendTurns"
            | "appendCompactions"
            | "appendRelationships"
            | "appendToolResultEvents"
            | "appendUserTurns"
            | "appendStamp" => {
                r.pending = true;
            }
            // Ledger queries, content and index steps are not the archive's.
            _ => {}
        }
    }
    if r.pending {
        r.extend_to(expected_ledger.len());
    }
    assert_eq!(
        std::fs::read(r.h.ledger()).unwrap(),
        expected_ledger,
        "final ledger"
    );
    let dump_path = case_dir.join("expected/archive-dump.json");
    if dump_path.exists() {
        let got = dump(&r.h.archive());
        let want = normalise_dump(read_json(&dump_path));
        assert_dumps_equal(&got, &want, &case_dir.display().to_string());
    }
    checked
}

#[test]
fn archive_incremental_case_replays_exactly() {
    let r = reference_or_skip!();
    // 7 builds and 2 archive queries.
    assert_eq!(replay(&r.join("ops/archive-incremental")), 9);
}

#[test]
fn stamps_case_builds_refolds_and_queries_exactly() {
    let r = reference_or_skip!();
    // 3 builds, 5 archive queries, 1 rebuild.
    assert_eq!(replay(&r.join("ops/stamps")), 9);
}

#[test]
fn tool_result_events_case_replays_exactly() {
    let r = reference_or_skip!();
    assert_eq!(replay(&r.join("ops/tool-result-events")), 1);
}

#[test]
fn numbers_case_rebuild_replays_exactly() {
    let r = reference_or_skip!();
    assert_eq!(replay(&r.join("ops/numbers")), 1);
}
