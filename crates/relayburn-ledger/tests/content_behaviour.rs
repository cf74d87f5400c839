//! Content sidecars (append, read, list, prune) and configuration.

mod support;

use std::fs::{File, FileTimes};
use std::time::{Duration, SystemTime};

use relayburn_ledger::home::Env;
use relayburn_ledger::state::{ContentStore, Retention};
use relayburn_ledger::{Error, Ledger};
use support::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn content(overrides: &str) -> relayburn_ledger::Value {
    merge(CONTENT, overrides)
}

fn set_mtime(l: &Ledger, sid: &str, when: SystemTime) {
    let f = File::options()
        .write(true)
        .open(l.home().content_file(sid).unwrap())
        .unwrap();
    f.set_times(FileTimes::new().set_modified(when).set_accessed(when))
        .unwrap();
}

fn files(l: &Ledger) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(l.home().content_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_content_directory_appears_on_first_append_and_records_round_trip() {
    let (_d, l) = temp_ledger();
    assert!(!l.home().content_dir().exists());
    let tool_use = obj(
        r#"{"v":1,"source":"claude-code","sessionId":"s-A","messageId":"m-2","ts":"2026-04-20T00:00:00.000Z","role":"assistant","kind":"tool_use","toolUse":{"id":"t1","name":"Bash","input":{"command":"ls"}}}"#,
    );
    let summary = l
        .append_content(vec![
            content(r#"{"sessionId":"s-A","messageId":"m-1"}"#),
            tool_use.clone(),
        ])
        .unwrap();
    assert_eq!(summary.appended, 2);
    let got = l.read_content("s-A", None).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(s(&got[0], "messageId"), Some("m-1"));
    assert_eq!(got[1].to_json(), tool_use.to_json());
    // One serialised record per line, nothing else.
    let text = std::fs::read_to_string(l.home().content_file("s-A").unwrap()).unwrap();
    assert_eq!(
        text,
        format!("{}\n{}\n", got[0].to_json(), tool_use.to_json())
    );
}

#[test]
fn identical_records_are_stored_once() {
    let (_d, l) = temp_ledger();
    let rec = content(r#"{"sessionId":"sess-twice","messageId":"m-twice"}"#);
    l.append_content(vec![rec.clone()]).unwrap();
    let again = l.append_content(vec![rec.clone(), rec]).unwrap();
    assert_eq!((again.appended, again.duplicates), (0, 2));
    let got = l.read_content("sess-twice", None).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(s(&got[0], "text"), Some("hi there"));
}

#[test]
fn read_content_filters_by_message_id() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![
        content(r#"{"sessionId":"s-X","messageId":"a"}"#),
        content(r#"{"sessionId":"s-X","messageId":"b"}"#),
    ])
    .unwrap();
    let got = l.read_content("s-X", Some("b")).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(s(&got[0], "messageId"), Some("b"));
}

#[test]
fn a_missing_sidecar_reads_as_empty_and_a_bad_id_is_an_error() {
    let (_d, l) = temp_ledger();
    assert!(l.read_content("does-not-exist", None).unwrap().is_empty());
    assert!(matches!(
        l.read_content("../escape", None),
        Err(Error::InvalidSessionId(_))
    ));
}

#[test]
fn read_content_skips_what_is_not_a_record() {
    let (_d, l) = temp_ledger();
    std::fs::create_dir_all(l.home().content_dir()).unwrap();
    std::fs::write(
        l.home().content_file("s").unwrap(),
        "{\"messageId\":\"a\"}\r\n\n  \nnot json\n42\nnull\n[1]\n {\"messageId\":\"b\"} ",
    )
    .unwrap();
    let got: Vec<String> = l
        .read_content("s", None)
        .unwrap()
        .iter()
        .map(|v| v.to_json())
        .collect();
    assert_eq!(got, [r#"{"messageId":"a"}"#, "[1]", r#"{"messageId":"b"}"#]);
}

#[test]
fn records_are_grouped_into_one_file_per_session() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![
        content(r#"{"sessionId":"s-A","messageId":"a"}"#),
        content(r#"{"sessionId":"s-B","messageId":"b"}"#),
        content(r#"{"sessionId":"s-A","messageId":"c"}"#),
    ])
    .unwrap();
    assert_eq!(files(&l), ["s-A.jsonl", "s-B.jsonl"]);
    assert_eq!(l.read_content("s-A", None).unwrap().len(), 2);
}

#[test]
fn listing_shows_non_empty_sidecars_with_valid_names() {
    let (_d, l) = temp_ledger();
    assert!(l.list_content_session_ids().unwrap().is_empty());
    l.append_content(vec![
        content(r#"{"sessionId":"s-A","messageId":"m-A1"}"#),
        content(r#"{"sessionId":"s-A","messageId":"m-A2","text":"second"}"#),
        content(r#"{"sessionId":"s-B","messageId":"m-B1"}"#),
    ])
    .unwrap();
    let dir = l.home().content_dir();
    std::fs::write(dir.join("empty.jsonl"), "").unwrap();
    std::fs::write(dir.join(".hidden.jsonl"), "x\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "x\n").unwrap();
    assert_eq!(l.list_content_session_ids().unwrap(), ["s-A", "s-B"]);
}

#[test]
fn prune_removes_sidecars_older_than_the_cutoff() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![
        content(r#"{"sessionId":"sess-aged","messageId":"m"}"#),
        content(r#"{"sessionId":"sess-fresh","messageId":"m"}"#),
    ])
    .unwrap();
    let old_size = size(&l.home().content_file("sess-aged").unwrap());
    set_mtime(&l, "sess-aged", SystemTime::now() - 120 * DAY);
    let r = l.prune_content(90 * DAY, None).unwrap();
    assert_eq!(
        (r.files_deleted, r.bytes_freed, r.skipped_recoverable),
        (1, old_size, 0)
    );
    assert_eq!(files(&l), ["sess-fresh.jsonl"]);
    assert_eq!(
        r.to_json().to_json(),
        format!(r#"{{"filesDeleted":1,"bytesFreed":{old_size},"skippedRecoverable":0}}"#)
    );
}

#[test]
fn prune_without_a_content_directory_does_nothing() {
    let (_d, l) = temp_ledger();
    let r = l.prune_content(Duration::from_millis(1000), None).unwrap();
    assert_eq!(
        r.to_json().to_json(),
        r#"{"filesDeleted":0,"bytesFreed":0,"skippedRecoverable":0}"#
    );
}

#[test]
fn prune_with_zero_age_clears_everything_up_to_now() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![
        content(r#"{"sessionId":"sess-a","messageId":"a"}"#),
        content(r#"{"sessionId":"s-2","messageId":"b"}"#),
    ])
    .unwrap();
    let now = SystemTime::now();
    set_mtime(&l, "sess-a", now);
    set_mtime(&l, "s-2", now);
    assert_eq!(
        l.prune_content(Duration::ZERO, None).unwrap().files_deleted,
        2
    );
    assert!(files(&l).is_empty());
}

#[test]
fn prune_keeps_recent_files() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![content("{}")]).unwrap();
    assert_eq!(l.prune_content(DAY, None).unwrap().files_deleted, 0);
    std::thread::sleep(Duration::from_millis(25));
    assert_eq!(
        l.prune_content(Duration::from_millis(10), None)
            .unwrap()
            .files_deleted,
        1
    );
    assert!(l.read_content("sess-a", None).unwrap().is_empty());
}

#[test]
fn prune_keeps_sidecars_the_source_can_rebuild() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![
        content(r#"{"sessionId":"sess-keep","messageId":"m"}"#),
        content(r#"{"sessionId":"sess-drop","messageId":"m"}"#),
    ])
    .unwrap();
    set_mtime(&l, "sess-keep", SystemTime::now() - 120 * DAY);
    set_mtime(&l, "sess-drop", SystemTime::now() - 120 * DAY);
    let pred = |sid: &str| Ok(sid == "sess-keep");
    let r = l.prune_content(90 * DAY, Some(&pred)).unwrap();
    assert_eq!((r.files_deleted, r.skipped_recoverable), (1, 1));
    assert!(r.bytes_freed > 0);
    assert_eq!(files(&l), ["sess-keep.jsonl"]);
    // Without a predicate everything old goes.
    let r = l.prune_content(90 * DAY, None).unwrap();
    assert_eq!((r.files_deleted, r.skipped_recoverable), (1, 0));
}

#[test]
fn a_failing_recoverability_check_means_prune() {
    let (_d, l) = temp_ledger();
    l.append_content(vec![content(r#"{"sessionId":"sess-err","messageId":"m"}"#)])
        .unwrap();
    set_mtime(&l, "sess-err", SystemTime::now() - 120 * DAY);
    let pred = |_: &str| Err(Error::Internal("index unavailable".into()));
    let r = l.prune_content(90 * DAY, Some(&pred)).unwrap();
    assert_eq!((r.files_deleted, r.skipped_recoverable), (1, 0));
}

#[test]
fn unsafe_session_ids_never_become_paths() {
    let (d, l) = temp_ledger();
    let summary = l
        .append_content(vec![
            content(r#"{"sessionId":"../escape","messageId":"m"}"#),
            content(r#"{"sessionId":"","messageId":"m"}"#),
            content(r#"{"sessionId":null,"messageId":"m"}"#),
            content(r#"{"sessionId":"sess-ok","messageId":"m"}"#),
        ])
        .unwrap();
    assert_eq!(summary.invalid_session_ids, [r#""../escape""#]);
    assert_eq!(summary.missing_session, 2);
    let warnings: Vec<String> = summary.warnings().collect();
    assert_eq!(
        warnings,
        [r#"[burn] skipping content record with unsafe sessionId: "../escape""#]
    );
    assert_eq!(files(&l), ["sess-ok.jsonl"]);
    assert!(!d.path().join("escape.jsonl").exists());
    assert!(!d.path().parent().unwrap().join("escape.jsonl").exists());
}

#[test]
fn content_paths_follow_the_session_id_rules() {
    let (d, l) = temp_ledger();
    assert_eq!(
        l.home().content_file("sess-42").unwrap(),
        d.path().join("content").join("sess-42.jsonl")
    );
    for bad in ["../escape", "has/slash", "", ".", ".."] {
        assert!(l.home().content_file(bad).is_err(), "{bad:?}");
    }
    assert!(l.home().content_file(&"a".repeat(129)).is_err());
    assert!(l.home().content_file(&"a".repeat(128)).is_ok());
}

// --- configuration ---

fn env(store: Option<&str>, ttl: Option<&str>) -> Env {
    Env {
        content_store: store.map(str::to_string),
        content_ttl_days: ttl.map(str::to_string),
        ..Env::default()
    }
}

fn write_config(l: &Ledger, text: &str) {
    std::fs::write(l.home().config(), text).unwrap();
}

#[test]
fn config_defaults_to_full_store_and_ninety_days() {
    let (_d, l) = temp_ledger();
    let c = l.load_config(&env(None, None)).unwrap();
    assert_eq!(c.config, relayburn_ledger::state::Config::default());
    assert_eq!(c.config.content.store, ContentStore::Full);
    assert_eq!(c.config.content.retention_days, Retention::Days(90.0));
    assert!(c.warnings.is_empty());
}

#[test]
fn config_file_values_are_read() {
    let (_d, l) = temp_ledger();
    write_config(
        &l,
        r#"{"content":{"store":"hash-only","retentionDays":30},"other":1}"#,
    );
    let c = l.load_config(&env(None, None)).unwrap().config;
    assert_eq!(c.content.store, ContentStore::HashOnly);
    assert_eq!(c.content.retention_days, Retention::Days(30.0));
}

#[test]
fn the_environment_wins_over_the_file() {
    let (_d, l) = temp_ledger();
    write_config(&l, r#"{"content":{"store":"hash-only","retentionDays":7}}"#);
    let c = l
        .load_config(&env(Some("OFF"), Some("forever")))
        .unwrap()
        .config;
    assert_eq!(c.content.store, ContentStore::Off);
    assert_eq!(c.content.retention_days, Retention::Forever);
    let c = l.load_config(&env(None, Some("-1"))).unwrap().config;
    assert_eq!(c.content.retention_days, Retention::Forever);
}

#[test]
fn blank_environment_values_count_as_unset() {
    let (_d, l) = temp_ledger();
    let c = l.load_config(&env(Some(""), Some(""))).unwrap();
    assert_eq!(c.config.content.retention_days, Retention::Days(90.0));
    assert!(c.warnings.is_empty());
    let c = l.load_config(&env(None, Some("   "))).unwrap().config;
    assert_eq!(c.content.retention_days, Retention::Days(90.0));
    write_config(&l, r#"{"content":{"retentionDays":7}}"#);
    let c = l.load_config(&env(None, Some(""))).unwrap().config;
    assert_eq!(c.content.retention_days, Retention::Days(7.0));
}

#[test]
fn invalid_values_fall_back_with_a_warning() {
    let (_d, l) = temp_ledger();
    let c = l.load_config(&env(Some("nonsense"), Some("soon"))).unwrap();
    assert_eq!(c.config.content.store, ContentStore::Full);
    assert_eq!(c.config.content.retention_days, Retention::Days(90.0));
    assert_eq!(c.warnings.len(), 2);
    // An invalid variable falls back to the file, not straight to defaults.
    write_config(&l, r#"{"content":{"store":"off"}}"#);
    let c = l.load_config(&env(Some("nonsense"), None)).unwrap().config;
    assert_eq!(c.content.store, ContentStore::Off);
}

#[test]
fn invalid_json_in_the_config_file_warns_and_uses_defaults() {
    let (_d, l) = temp_ledger();
    write_config(&l, "{ this is not json");
    let c = l.load_config(&env(None, None)).unwrap();
    assert_eq!(c.config, relayburn_ledger::state::Config::default());
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("invalid JSON"), "{:?}", c.warnings);
    write_config(&l, "null");
    let c = l.load_config(&env(None, None)).unwrap();
    assert!(
        c.warnings[0].contains("is not a JSON object"),
        "{:?}",
        c.warnings
    );
    assert_eq!(Retention::Days(2.0).millis(), Some(172_800_000.0));
    assert_eq!(Retention::Forever.millis(), None);
}
