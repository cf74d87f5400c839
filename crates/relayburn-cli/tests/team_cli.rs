//! `burn push` and `burn query --from postgres` end to end, against the
//! PostgreSQL server of `RELAYBURN_TEST_POSTGRES_URL`.

#[path = "../../relayburn-ledger/tests/team_support/mod.rs"]
mod team_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use relayburn_ledger::json::{parse, Value};
use relayburn_ledger::{Ledger, LedgerHome};

fn burn(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAYBURN_HOME")
        .env_remove("RELAYBURN_POSTGRES_URL")
        .env_remove("RELAYBURN_MACHINE_ID")
        .output()
        .expect("run burn")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn reference() -> Option<PathBuf> {
    let dir = match std::env::var_os("RELAYBURN_SHARED") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let r = dir.join("fixtures/reference");
    if r.is_dir() {
        return Some(r);
    }
    if std::env::var_os("RELAYBURN_REQUIRE_FIXTURES").is_some_and(|v| v == "1") {
        panic!("reference fixtures missing at {}", r.display());
    }
    eprintln!("notice: reference fixtures not found; skipping");
    None
}

/// The `burn query` flags of a `queries-in.json` query.
fn flags(q: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (key, flag) in [
        ("since", "--since"),
        ("until", "--until"),
        ("project", "--project"),
        ("sessionId", "--session"),
        ("source", "--source"),
    ] {
        if let Some(v) = q.get(key).and_then(Value::as_str) {
            out.push(flag.to_string());
            out.push(v.to_string());
        }
    }
    if let Some(e) = q.get("enrichment").and_then(Value::as_object) {
        for (k, v) in e.iter() {
            out.push("--enrich".into());
            out.push(format!("{}={}", k.to_lossy(), v.as_str().unwrap()));
        }
    }
    out
}

#[test]
fn push_then_query_from_postgres_matches_the_ledger_query() {
    let Some(admin) = team_support::server() else {
        return;
    };
    let Some(reference) = reference() else {
        return;
    };
    let url = team_support::fresh_db(&admin, "cli_fixture");
    let pw = team_support::password(&admin);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference.join("home/ledger.jsonl"),
        dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let o = burn(
        dir.path(),
        &["push", "--to", &url, "--machine-id", "laptop-1", "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(!out.contains(&pw));
    let summary = parse(&out).unwrap();
    assert!(summary
        .get("target")
        .and_then(Value::as_str)
        .unwrap()
        .starts_with("burn@127.0.0.1:"));
    assert_eq!(
        summary.get("rowsInserted").and_then(Value::as_f64),
        Some(3701.0)
    );

    let inputs =
        parse(&std::fs::read_to_string(reference.join("home/queries-in.json")).unwrap()).unwrap();
    let expected =
        parse(&std::fs::read_to_string(reference.join("home/queries.json")).unwrap()).unwrap();
    for (q, e) in inputs
        .get("turns")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .zip(expected.as_array().unwrap())
    {
        let f = flags(q);
        let args = |from: &str| -> Vec<String> {
            let mut a = vec![
                "query".to_string(),
                "turns".into(),
                "--from".into(),
                from.into(),
            ];
            a.extend(f.iter().cloned());
            a
        };
        let run = |a: Vec<String>, extra: &[&str]| {
            let mut all: Vec<&str> = a.iter().map(String::as_str).collect();
            all.extend_from_slice(extra);
            let o = burn(dir.path(), &all);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            text(&o.stdout)
        };
        let ledger = run(args("ledger"), &[]);
        let team = run(args("postgres"), &["--postgres", &url]);
        let mine = run(
            args("postgres"),
            &["--postgres", &url, "--machine", "laptop-1"],
        );
        // The ledger query repeats re-appended turn lines; the team ledger
        // holds each turn id once, at its first place.
        let mut seen = std::collections::HashSet::new();
        let once: String = ledger
            .lines()
            .filter(|l| {
                let v = parse(l).unwrap();
                seen.insert(
                    ["source", "sessionId", "messageId"].map(|k| v.get(k).map(Value::to_json)),
                )
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let want: String = {
            let mut seen = std::collections::HashSet::new();
            e.get("ledger")
                .and_then(Value::as_array)
                .unwrap()
                .iter()
                .filter(|v| {
                    seen.insert(
                        ["source", "sessionId", "messageId"].map(|k| v.get(k).map(Value::to_json)),
                    )
                })
                .map(|v| format!("{}\n", v.to_json()))
                .collect()
        };
        assert_eq!(once, want, "ledger query {}", q.to_json());
        assert_eq!(team, once, "team query {}", q.to_json());
        assert_eq!(mine, once, "team query of laptop-1 {}", q.to_json());
    }
    let other = burn(
        dir.path(),
        &[
            "query",
            "turns",
            "--from",
            "postgres",
            "--postgres",
            &url,
            "--machine",
            "nobody",
        ],
    );
    assert_eq!(text(&other.stdout), "");

    let s = burn(
        dir.path(),
        &["state", "status", "--json", "--postgres", &url],
    );
    assert_eq!(s.status.code(), Some(0), "{}", text(&s.stderr));
    assert!(!text(&s.stdout).contains(&pw));
    let v = parse(&text(&s.stdout)).unwrap();
    let machines = v
        .get("team")
        .and_then(|t| t.get("server"))
        .and_then(|s| s.get("machines"))
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(machines.len(), 1);
    assert_eq!(
        machines[0].get("machineId").and_then(Value::as_str),
        Some("laptop-1")
    );
    assert_eq!(
        machines[0].get("rowsInserted").and_then(Value::as_f64),
        Some(3701.0)
    );
    assert!(machines[0]
        .get("lastPushAt")
        .and_then(Value::as_str)
        .unwrap()
        .ends_with('Z'));
}

#[test]
fn eight_push_processes_at_once() {
    let Some(admin) = team_support::server() else {
        return;
    };
    let url = team_support::fresh_db(&admin, "cli_eight");
    let homes: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let turn = |s: &str, m: &str| {
        parse(&format!(
            r#"{{"v":1,"source":"codex","sessionId":"{s}","messageId":"{m}","turnIndex":0,"ts":"2026-04-20T00:00:00.000Z","model":"{s}/{m}","usage":{{"input":1,"output":2}},"toolCalls":[]}}"#
        ))
        .unwrap()
    };
    for (h, d) in homes.iter().enumerate() {
        let l = Ledger::open(LedgerHome::new(d.path())).unwrap();
        l.append_turns(
            (0..250)
                .map(|i| turn(&format!("own-{h}"), &format!("m{i}")))
                .collect(),
        )
        .unwrap();
        l.append_turns((0..250).map(|i| turn("shared", &format!("m{i}"))).collect())
            .unwrap();
    }
    let spawned: Vec<_> = homes
        .iter()
        .enumerate()
        .map(|(h, d)| {
            Command::new(env!("CARGO_BIN_EXE_burn"))
                .arg("--home")
                .arg(d.path())
                .args(["push", "--batch-rows", "60"])
                .env("RELAYBURN_POSTGRES_URL", &url)
                .env("RELAYBURN_MACHINE_ID", format!("box-{h}"))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in spawned {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    let mut c = team_support::client(&url);
    assert_eq!(
        team_support::count(&mut c, "SELECT count(*) FROM turns"),
        8 * 250 + 250
    );
    for h in 0..8 {
        assert_eq!(
            team_support::count(&mut c, &format!("SELECT count(*) FROM turns WHERE machine_id = 'box-{h}' AND session_id = 'own-{h}'")),
            250
        );
    }
    assert_eq!(
        team_support::count(
            &mut c,
            "SELECT sum(rows_inserted)::bigint FROM push_cursors"
        ),
        8 * 250 + 250
    );
}

#[test]
fn connection_refused_is_one_line_and_exit_1_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://burn:S3cretPassw0rd@127.0.0.1:{port}/team");
    for json in [false, true] {
        let mut args = vec!["push", "--to", &url];
        if json {
            args.push("--json");
        }
        let o = burn(dir.path(), &args);
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "burn: postgres burn@127.0.0.1:{port}/team: connect:"
            )),
            "{err}"
        );
        assert!(!err.contains("S3cretPassw0rd") && !text(&o.stdout).contains("S3cretPassw0rd"));
        assert_eq!(text(&o.stdout), "");
    }
    let o = burn(
        dir.path(),
        &["state", "status", "--json", "--postgres", &url],
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(!text(&o.stdout).contains("S3cretPassw0rd"));
    let o = burn(dir.path(), &["push"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("RELAYBURN_POSTGRES_URL"));
}

#[test]
fn a_wrong_password_never_shows_in_any_output() {
    let Some(admin) = team_support::server() else {
        return;
    };
    let pw = team_support::password(&admin);
    let wrong = admin.replacen(&format!(":{pw}@"), ":An0therS3cret@", 1);
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["push", "--to", wrong.as_str(), "--json"],
        vec![
            "query",
            "turns",
            "--from",
            "postgres",
            "--postgres",
            wrong.as_str(),
        ],
        vec!["state", "status", "--json", "--postgres", wrong.as_str()],
    ] {
        let o = burn(dir.path(), &args);
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert!(
            all.contains("password authentication failed"),
            "{args:?}: {all}"
        );
        assert!(
            !all.contains("An0therS3cret") && !all.contains(&pw),
            "{all}"
        );
    }
}

/// `burn` with `RELAYBURN_STORAGE` and the server chosen by the caller.
fn burn_on(home: &Path, storage: &str, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burn"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RELAYBURN_HOME")
        .env_remove("RELAYBURN_SQLITE_PATH")
        .env_remove("RELAYBURN_MACHINE_ID")
        .env("RELAYBURN_STORAGE", storage)
        .env("RELAYBURN_POSTGRES_URL", url)
        .output()
        .expect("run burn")
}

#[test]
fn postgres_storage_serves_copy_query_stamp_status_and_check() {
    let Some(admin) = team_support::server() else {
        return;
    };
    let Some(reference) = reference() else {
        return;
    };
    let url = team_support::fresh_db(&admin, "cli_store");
    let pw = team_support::password(&admin);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        reference.join("home/ledger.jsonl"),
        dir.path().join("ledger.jsonl"),
    )
    .unwrap();
    let ok = |o: &Output| {
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(!out.contains(&pw) && !err.contains(&pw));
        out
    };
    // The same home into both keyed stores.
    ok(&burn_on(
        dir.path(),
        "file",
        &url,
        &["state", "copy", "--to", "postgres"],
    ));
    ok(&burn_on(
        dir.path(),
        "file",
        &url,
        &["state", "copy", "--to", "sqlite"],
    ));
    for kind in [
        "turns",
        "compactions",
        "relationships",
        "tool-result-events",
        "user-turns",
    ] {
        let pg = ok(&burn_on(dir.path(), "postgres", &url, &["query", kind]));
        let sq = ok(&burn_on(dir.path(), "sqlite", &url, &["query", kind]));
        assert!(!pg.is_empty(), "{kind}");
        assert!(pg == sq, "{kind}: postgres and sqlite answers differ");
    }
    let session = |storage: &str, extra: &[&str]| -> usize {
        let mut args = vec!["query", "turns"];
        args.extend_from_slice(extra);
        ok(&burn_on(dir.path(), storage, &url, &args))
            .lines()
            .count()
    };
    // A session of the fixture ledger: stamp it, find it by the stamp.
    let sid = "87b8937c-e7aa-42fb-9f0a-77f0fe3062f2";
    let in_session = session("postgres", &["--session", sid]);
    assert!(in_session > 0);
    ok(&burn_on(
        dir.path(),
        "postgres",
        &url,
        &["stamp", "--session", sid, "squad=blue-4411"],
    ));
    assert_eq!(
        session("postgres", &["--enrich", "squad=blue-4411"]),
        in_session
    );
    assert_eq!(session("sqlite", &["--enrich", "squad=blue-4411"]), 0);

    let o = burn_on(dir.path(), "postgres", &url, &["state", "status", "--json"]);
    let status = parse(&ok(&o)).unwrap();
    assert_eq!(
        status.get("storage").and_then(Value::as_str),
        Some("postgres")
    );
    let rows = status.get("rows").unwrap();
    // 15 stamps in the fixture, and ours.
    assert_eq!(rows.get("stamps").and_then(Value::as_f64), Some(16.0));
    assert_eq!(rows.get("turns").and_then(Value::as_f64), Some(1589.0));
    ok(&burn_on(dir.path(), "postgres", &url, &["state", "check"]));

    let o = burn_on(
        dir.path(),
        "postgres",
        &url,
        &["state", "rebuild", "archive"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "burn: archive operations require RELAYBURN_STORAGE=file (got postgres)\n"
    );
}
