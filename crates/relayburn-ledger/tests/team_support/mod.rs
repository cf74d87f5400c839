//! A PostgreSQL server for the team ledger tests.
//!
//! `RELAYBURN_TEST_POSTGRES_URL` names a superuser connection (`.ci/run`
//! starts a throwaway cluster and sets it). Without it the tests print a
//! notice and skip, unless `RELAYBURN_REQUIRE_POSTGRES=1`. Each test gets
//! its own database, so tests run in parallel without meeting.
#![allow(dead_code)]

use std::path::Path;

use postgres::{Client, NoTls};

/// The admin URL, or `None` (after a notice) to skip.
pub fn server() -> Option<String> {
    match std::env::var("RELAYBURN_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var_os("RELAYBURN_REQUIRE_POSTGRES").is_some_and(|v| v == "1") {
                panic!("a PostgreSQL server is required: set RELAYBURN_TEST_POSTGRES_URL");
            }
            eprintln!(
                "notice: RELAYBURN_TEST_POSTGRES_URL is not set; skipping (see .ci/pg-cluster)"
            );
            None
        }
    }
}

/// Skip the current test when no server is given.
#[macro_export]
macro_rules! server_or_skip {
    () => {
        match team_support::server() {
            Some(u) => u,
            None => return,
        }
    };
}

/// `url` with its database replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let slash = base.rfind('/').expect("URL has a database");
    let mut out = format!("{}/{db}", &base[..slash]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The password of a `postgres://user:password@…` URL.
pub fn password(url: &str) -> String {
    let rest = url.split_once("://").expect("a URL").1;
    let userinfo = rest.split_once('@').expect("URL with credentials").0;
    userinfo
        .split_once(':')
        .expect("URL with a password")
        .1
        .to_string()
}

/// A fresh, empty database named after the test; its URL.
pub fn fresh_db(admin: &str, name: &str) -> String {
    let db = format!("t_{name}_{}", std::process::id());
    let mut c = Client::connect(admin, NoTls).expect("connect as admin");
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .expect("drop database");
    c.batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create database");
    with_db(admin, &db)
}

pub fn client(url: &str) -> Client {
    Client::connect(url, NoTls).expect("connect")
}

/// `SELECT count(*)` of a query.
pub fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).expect(sql).get(0)
}

/// Every file of a home with its bytes, except the push state, which is
/// the one file a push may change.
pub fn home_snapshot(home: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![home.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read home") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p
                .strip_prefix(home)
                .expect("under home")
                .to_string_lossy()
                .into_owned();
            if name == "push.json" {
                continue;
            }
            out.push((name, std::fs::read(&p).expect("read file")));
        }
    }
    out.sort();
    out
}

/// The one database the storage-backend tests share; created once.
const STORE_DB: &str = "store_tests";

/// A URL whose connections work in their own schema of a shared test
/// database, named after `key` (a temporary directory): opening the same
/// key again reaches the same store, as a second process would.
pub fn store_url(admin: &str, key: &Path) -> String {
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CREATED.get_or_init(|| {
        let mut c = Client::connect(admin, NoTls).expect("connect as admin");
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&STORE_DB])
            .expect("look up database")
            .is_some();
        if !exists {
            // Another test process may create it at the same moment.
            let _ = c.batch_execute(&format!("CREATE DATABASE {STORE_DB}"));
        }
    });
    let url = with_db(admin, STORE_DB);
    let schema = format!("s_{:016x}", fnv(key.as_os_str().as_encoded_bytes()));
    let mut c = Client::connect(&url, NoTls).expect("connect to the test database");
    c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .expect("create schema");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// FNV-1a, 64 bits: a short stable name for a path.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
