//! The team ledger's schema: the reference's storage migration 1 in
//! PostgreSQL dialect, with the machine that pushed each row and where the
//! row sits in that machine's ledger, plus the push cursors.
//!
//! Migrations run at connect under an advisory lock, so two machines
//! connecting to a new database at once do not both create it. A server
//! whose schema is newer than this build is refused before anything is
//! written.

use std::sync::LazyLock;

use postgres::Client;

use crate::error::Result;
use crate::store::tables::{
    create_index, create_table, RecordTable, CONTENT_COLUMNS, CONTENT_INDEXES, CONTENT_UNIQUE,
    RECORD_TABLES as STORE_RECORD_TABLES,
};

use super::target::Target;

/// The schema version this build writes and reads.
pub const LATEST_VERSION: i32 = 1;

/// Advisory lock key for migrations ("relayburn" in ASCII, folded).
const MIGRATION_LOCK: i64 = 0x7265_6c61_7962_7572;

/// Every table the current version needs.
pub const TABLES: [&str; 10] = [
    "schema_state",
    "locks",
    "turns",
    "compactions",
    "relationships",
    "tool_result_events",
    "user_turns",
    "stamps",
    "content",
    "push_cursors",
];

/// Migration 1 before the record tables. The `content` table (in the
/// tail) is the reference's, for the storage backend; `burn push` does not
/// send message text. `record_json` is `TEXT`: `jsonb` would reorder keys
/// and round numbers, and queries must return the record as it was
/// written. `ledger_offset`/`ledger_part` keep each machine's ledger order.
const MIGRATION_1_HEAD: &str = "
CREATE TABLE IF NOT EXISTS locks (
  name           TEXT PRIMARY KEY,
  acquired_at_ms BIGINT NOT NULL,
  pid            INTEGER
);

";

/// Migration 1 after the record tables, before the content table.
const MIGRATION_1_STAMPS: &str = "CREATE TABLE IF NOT EXISTS stamps (
  seq             BIGSERIAL PRIMARY KEY,
  line_hash       TEXT NOT NULL UNIQUE,
  ts              TEXT NOT NULL,
  selector_json   TEXT NOT NULL,
  enrichment_json TEXT NOT NULL,
  session_id      TEXT,
  message_id      TEXT,
  machine_id      TEXT NOT NULL,
  ledger_offset   BIGINT NOT NULL,
  ledger_part     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_stamps_session ON stamps(session_id);
CREATE INDEX IF NOT EXISTS idx_stamps_message ON stamps(message_id);
CREATE INDEX IF NOT EXISTS idx_stamps_ts ON stamps(ts);

";

/// Migration 1 after the content table: the push cursors.
const MIGRATION_1_CURSORS: &str = "CREATE TABLE IF NOT EXISTS push_cursors (
  machine_id    TEXT PRIMARY KEY,
  ledger_offset BIGINT NOT NULL,
  check_hash    TEXT NOT NULL,
  rows_inserted BIGINT NOT NULL,
  pushes        BIGINT NOT NULL,
  last_push_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
";

/// Migration 1, with the record and content tables written from their
/// description.
static MIGRATION_1: LazyLock<String> = LazyLock::new(|| {
    let tables: Vec<String> = STORE_RECORD_TABLES.iter().map(record_table_ddl).collect();
    format!(
        "{MIGRATION_1_HEAD}{}{MIGRATION_1_STAMPS}{}\n{MIGRATION_1_CURSORS}",
        tables.join(""),
        content_ddl()
    )
});

/// A record table as the team ledger keeps it: the storage table, plus
/// the machine that pushed each row and where the row sits in that
/// machine's ledger, with indexes for a lookup by session alone and for a
/// machine's rows in ledger order.
fn record_table_ddl(t: &RecordTable) -> String {
    let mut columns: Vec<(&str, &str)> = t.columns.iter().map(|c| (c.name, c.postgres)).collect();
    columns.extend([
        ("machine_id", "TEXT NOT NULL"),
        ("ledger_offset", "BIGINT NOT NULL"),
        ("ledger_part", "INTEGER NOT NULL"),
    ]);
    let mut indexes = t.indexes.to_vec();
    indexes.insert(1, ("session_id", "session_id"));
    indexes.push(("machine", "machine_id, ledger_offset, ledger_part"));
    let mut out = create_table(t.name, &columns, &[]);
    for (suffix, cols) in indexes {
        out.push_str(&create_index(t.name, suffix, cols));
    }
    out.push('\n');
    out
}

/// The content table as the storage backend has it, with the machine
/// that pushed each row.
fn content_ddl() -> String {
    let mut columns: Vec<(&str, &str)> = CONTENT_COLUMNS
        .iter()
        .map(|c| (c.name, c.postgres))
        .collect();
    columns.push(("machine_id", "TEXT NOT NULL"));
    let mut out = create_table("content", &columns, &[CONTENT_UNIQUE]);
    for (suffix, cols) in CONTENT_INDEXES {
        out.push_str(&create_index("content", suffix, cols));
    }
    out
}

/// Ordered migrations: (version, SQL).
static MIGRATIONS: LazyLock<[(i32, &'static str); 1]> =
    LazyLock::new(|| [(1, MIGRATION_1.as_str())]);

/// Bring the database to [`LATEST_VERSION`], or refuse it.
pub fn migrate(target: &Target, client: &mut Client) -> Result<()> {
    let e = |what: &'static str| move |err| target.db_error(what, err);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .map_err(e("lock schema"))?;
    let result = migrate_locked(target, client);
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .map_err(e("unlock schema"));
    result?;
    unlock.map(|_| ())
}

fn migrate_locked(target: &Target, client: &mut Client) -> Result<()> {
    let e = |what: &'static str| move |err| target.db_error(what, err);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_state (
               id      INTEGER PRIMARY KEY CHECK (id = 1),
               version INTEGER NOT NULL
             )",
        )
        .map_err(e("create schema_state"))?;
    let current: i32 = client
        .query_opt("SELECT version FROM schema_state WHERE id = 1", &[])
        .map_err(e("read schema version"))?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if current > LATEST_VERSION {
        return Err(target.error(format_args!(
            "the server's team ledger schema is version {current}, newer than this burn supports ({LATEST_VERSION}); upgrade burn"
        )));
    }
    for &(version, sql) in MIGRATIONS.iter() {
        if version <= current {
            continue;
        }
        let mut tx = client.transaction().map_err(e("begin migration"))?;
        tx.batch_execute(sql).map_err(e("apply migration"))?;
        tx.execute(
            "INSERT INTO schema_state (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
            &[&version],
        )
        .map_err(e("record schema version"))?;
        tx.commit().map_err(e("commit migration"))?;
    }
    check_tables(target, client)
}

/// Every table of the schema must be there; one dropped by hand is named
/// rather than failing later in the middle of a push.
fn check_tables(target: &Target, client: &mut Client) -> Result<()> {
    let names: Vec<&str> = TABLES.to_vec();
    let rows = client
        .query(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(quote_ident(t)) IS NULL",
            &[&names],
        )
        .map_err(|err| target.db_error("check tables", err))?;
    let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if !missing.is_empty() {
        return Err(target.error(format_args!(
            "the team ledger schema is damaged: table {} missing although schema_state says version {LATEST_VERSION}; restore it from a backup or recreate the database, then push again",
            missing.join(", ")
        )));
    }
    Ok(())
}
