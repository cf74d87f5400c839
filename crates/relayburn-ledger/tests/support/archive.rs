//! Helpers shared by the archive integration tests: table dumps in the
//! fixtures' format, temporary homes, ledger lines.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use relayburn_ledger::archive::schema::TABLES;
use relayburn_ledger::json::{self, Object, Value};
use relayburn_ledger::lock::Locks;
use relayburn_ledger::records::{wrap_record, Kind};
use relayburn_ledger::LedgerHome;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// Primary-key columns of each table, in key order.
pub fn primary_key(table: &str) -> &'static [&'static str] {
    match table {
        "sessions" => &["source", "session_id"],
        "turns" => &["source", "session_id", "message_id"],
        "tool_calls" => &["source", "session_id", "message_id", "call_index"],
        "tool_result_events" => &[
            "source",
            "session_id",
            "message_id",
            "tool_use_id",
            "event_index",
        ],
        "stamps" => &["source", "session_id", "ts", "ledger_offset_bytes"],
        "compactions" => &["source", "session_id", "ts"],
        "archive_state" => &["id"],
        other => panic!("unknown table {other}"),
    }
}

/// Clock-dependent state columns the fixtures blank out.
pub const CLOCK_COLUMNS: &[&str] = &["ledger_mtime_ms", "last_built_at", "last_rebuild_at"];

fn cell(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Number(i as f64),
        ValueRef::Real(f) => Value::Number(f),
        ValueRef::Text(t) => Value::from(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => panic!("blob in archive"),
    }
}

/// Every row of every table, all columns, as `{table: [row…]}`.
pub fn dump(path: &Path) -> Value {
    let conn = Connection::open(path).unwrap();
    dump_conn(&conn)
}

pub fn dump_conn(conn: &Connection) -> Value {
    let mut out = Object::new();
    for table in TABLES {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([]).unwrap();
        let mut list = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let mut o = Object::new();
            for (i, n) in names.iter().enumerate() {
                o.insert(n.as_str(), cell(r.get_ref(i).unwrap()));
            }
            list.push(Value::Object(o));
        }
        out.insert(*table, Value::Array(list));
    }
    normalise_dump(Value::Object(out))
}

fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => {
            x.to_lossy().as_bytes().cmp(y.to_lossy().as_bytes())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(_), _) => Ordering::Less,
        (_, Value::Number(_)) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// Sort rows by primary key and blank the clock columns, as the fixtures.
pub fn normalise_dump(d: Value) -> Value {
    let mut o = d.into_object().unwrap();
    let mut out = Object::new();
    for table in TABLES {
        let Some(rows) = o.remove(table) else {
            continue;
        };
        let mut rows = rows.into_array().unwrap();
        let pk = primary_key(table);
        rows.sort_by(|a, b| {
            for k in pk {
                let c = cmp_values(a.get(k).unwrap(), b.get(k).unwrap());
                if c != Ordering::Equal {
                    return c;
                }
            }
            Ordering::Equal
        });
        if *table == "archive_state" {
            for r in rows.iter_mut() {
                let ro = r.as_object_mut().unwrap();
                for c in CLOCK_COLUMNS {
                    if ro.contains_key(c) {
                        ro.insert(*c, Value::Null);
                    }
                }
            }
        }
        out.insert(*table, Value::Array(rows));
    }
    Value::Object(out)
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    json::parse(&text).unwrap()
}

/// Assert two dumps are equal, naming the first differing row.
pub fn assert_dumps_equal(got: &Value, want: &Value, what: &str) {
    for table in TABLES {
        let g = got.get(table).and_then(Value::as_array).unwrap_or(&[]);
        let w = want
            .get(table)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{what}: fixture lacks table {table}"));
        for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
            assert_eq!(a, b, "{what}: table {table}, row {i} differs");
        }
        assert_eq!(g.len(), w.len(), "{what}: table {table} row count");
    }
}

/// A temporary home (the directory lives as long as the value).
pub struct TempHome {
    pub dir: tempfile::TempDir,
    pub home: LedgerHome,
    pub locks: Locks,
}

impl TempHome {
    pub fn new() -> TempHome {
        let dir = tempfile::tempdir().unwrap();
        let home = LedgerHome::new(dir.path());
        let locks = Locks::new(home.clone());
        TempHome { dir, home, locks }
    }

    pub fn ledger(&self) -> PathBuf {
        self.home.ledger()
    }

    pub fn archive(&self) -> PathBuf {
        self.home.archive()
    }

    /// Append raw text to the ledger.
    pub fn append(&self, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ledger())
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Append one record line of `kind`.
    pub fn append_record(&self, kind: Kind, record: &str) {
        let line = wrap_record(kind, json::parse(record).unwrap()).to_json();
        self.append(&format!("{line}\n"));
    }

    /// Append a stamp line.
    pub fn append_stamp(&self, ts: &str, selector: &str, enrichment: &str) {
        self.append(&format!(
            "{{\"v\":1,\"kind\":\"stamp\",\"ts\":\"{ts}\",\"selector\":{selector},\"enrichment\":{enrichment}}}\n"
        ));
    }

    pub fn db(&self) -> Connection {
        Connection::open(self.archive()).unwrap()
    }
}

/// A turn record with the defaults the reference's tests use, fields
/// overridden by `extra` (a JSON object whose keys replace or add).
pub fn turn(session: &str, message: &str, turn_index: u32, ts: &str, extra: &str) -> String {
    let mut base = json::parse(&format!(
        r#"{{"v":1,"source":"claude-code","sessionId":"{session}","messageId":"{message}","turnIndex":{turn_index},"ts":"{ts}","model":"claude-sonnet-4-6","usage":{{"input":100,"output":50,"reasoning":0,"cacheRead":1000,"cacheCreate5m":0,"cacheCreate1h":0}},"toolCalls":[],"project":"/tmp/project"}}"#
    ))
    .unwrap()
    .into_object()
    .unwrap();
    let extra = json::parse(if extra.is_empty() { "{}" } else { extra })
        .unwrap()
        .into_object()
        .unwrap();
    for (k, v) in extra.iter() {
        base.insert(k.clone(), v.clone());
    }
    Value::Object(base).to_json()
}

/// Copy a fixture file into a fresh temp home under `name`.
pub fn copy_into(src: &Path, home: &TempHome, name: &str) -> PathBuf {
    let dst = home.dir.path().join(name);
    std::fs::copy(src, &dst).unwrap();
    let mut perm = std::fs::metadata(&dst).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&dst, perm).unwrap();
    dst
}
