//! The team ledger's schema: the reference's storage migration 1 in
//! PostgreSQL dialect, with the machine that pushed each row and where the
//! row sits in that machine's ledger, plus the push cursors.
//!
//! Migrations run at connect under an advisory lock, so two machines
//! connecting to a new database at once do not both create it. A server
//! whose schema is newer than this build is refused before anything is
//! written.

use postgres::Client;

use crate::error::Result;

use super::target::Target;

/// The schema version this build writes and reads.
pub const LATEST_VERSION: i32 = 1;

/// Advisory lock key for migrations ("relayburn" in ASCII, folded).
const MIGRATION_LOCK: i64 = 0x7265_6c61_7962_7572;

/// Record tables; every one has `id_hash` as its key.
pub const RECORD_TABLES: [&str; 5] = [
    "turns",
    "compactions",
    "relationships",
    "tool_result_events",
    "user_turns",
];

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

/// Migration 1. The `content` table is the reference's, for the storage
/// backend; `burn push` does not send message text. `record_json` is `TEXT`: `jsonb` would reorder keys and
/// round numbers, and queries must return the record as it was written.
/// `ledger_offset`/`ledger_part` keep each machine's ledger order.
const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS locks (
  name           TEXT PRIMARY KEY,
  acquired_at_ms BIGINT NOT NULL,
  pid            INTEGER
);

CREATE TABLE IF NOT EXISTS turns (
  id_hash       TEXT PRIMARY KEY,
  content_fp    TEXT NOT NULL,
  source        TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  message_id    TEXT NOT NULL,
  turn_index    BIGINT,
  ts            TEXT NOT NULL,
  project       TEXT,
  project_key   TEXT,
  record_json   TEXT NOT NULL,
  machine_id    TEXT NOT NULL,
  ledger_offset BIGINT NOT NULL,
  ledger_part   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_turns_session ON turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_turns_session_id ON turns(session_id);
CREATE INDEX IF NOT EXISTS idx_turns_ts ON turns(ts);
CREATE INDEX IF NOT EXISTS idx_turns_session_index ON turns(source, session_id, turn_index);
CREATE INDEX IF NOT EXISTS idx_turns_project_key ON turns(project_key);
CREATE INDEX IF NOT EXISTS idx_turns_machine ON turns(machine_id, ledger_offset, ledger_part);

CREATE TABLE IF NOT EXISTS compactions (
  id_hash       TEXT PRIMARY KEY,
  source        TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  ts            TEXT NOT NULL,
  record_json   TEXT NOT NULL,
  machine_id    TEXT NOT NULL,
  ledger_offset BIGINT NOT NULL,
  ledger_part   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_compactions_session ON compactions(source, session_id);
CREATE INDEX IF NOT EXISTS idx_compactions_session_id ON compactions(session_id);
CREATE INDEX IF NOT EXISTS idx_compactions_ts ON compactions(ts);
CREATE INDEX IF NOT EXISTS idx_compactions_machine ON compactions(machine_id, ledger_offset, ledger_part);

CREATE TABLE IF NOT EXISTS relationships (
  id_hash             TEXT PRIMARY KEY,
  source              TEXT NOT NULL,
  session_id          TEXT NOT NULL,
  related_session_id  TEXT,
  ts                  TEXT,
  record_json         TEXT NOT NULL,
  machine_id          TEXT NOT NULL,
  ledger_offset       BIGINT NOT NULL,
  ledger_part         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_relationships_session ON relationships(source, session_id);
CREATE INDEX IF NOT EXISTS idx_relationships_session_id ON relationships(session_id);
CREATE INDEX IF NOT EXISTS idx_relationships_related ON relationships(related_session_id);
CREATE INDEX IF NOT EXISTS idx_relationships_machine ON relationships(machine_id, ledger_offset, ledger_part);

CREATE TABLE IF NOT EXISTS tool_result_events (
  id_hash       TEXT PRIMARY KEY,
  source        TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  ts            TEXT,
  record_json   TEXT NOT NULL,
  machine_id    TEXT NOT NULL,
  ledger_offset BIGINT NOT NULL,
  ledger_part   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_session ON tool_result_events(source, session_id);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_session_id ON tool_result_events(session_id);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_ts ON tool_result_events(ts);
CREATE INDEX IF NOT EXISTS idx_tool_result_events_machine ON tool_result_events(machine_id, ledger_offset, ledger_part);

CREATE TABLE IF NOT EXISTS user_turns (
  id_hash       TEXT PRIMARY KEY,
  source        TEXT NOT NULL,
  session_id    TEXT NOT NULL,
  ts            TEXT NOT NULL,
  record_json   TEXT NOT NULL,
  machine_id    TEXT NOT NULL,
  ledger_offset BIGINT NOT NULL,
  ledger_part   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_user_turns_session ON user_turns(source, session_id);
CREATE INDEX IF NOT EXISTS idx_user_turns_session_id ON user_turns(session_id);
CREATE INDEX IF NOT EXISTS idx_user_turns_ts ON user_turns(ts);
CREATE INDEX IF NOT EXISTS idx_user_turns_machine ON user_turns(machine_id, ledger_offset, ledger_part);

CREATE TABLE IF NOT EXISTS stamps (
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

CREATE TABLE IF NOT EXISTS content (
  seq          BIGSERIAL PRIMARY KEY,
  source       TEXT NOT NULL,
  session_id   TEXT NOT NULL,
  message_id   TEXT NOT NULL,
  ts           TEXT NOT NULL,
  content_fp   TEXT NOT NULL,
  record_json  TEXT NOT NULL,
  mtime_ms     BIGINT NOT NULL,
  machine_id   TEXT NOT NULL,
  UNIQUE (session_id, content_fp)
);
CREATE INDEX IF NOT EXISTS idx_content_session ON content(session_id);
CREATE INDEX IF NOT EXISTS idx_content_session_message ON content(session_id, message_id);
CREATE INDEX IF NOT EXISTS idx_content_mtime ON content(mtime_ms);

CREATE TABLE IF NOT EXISTS push_cursors (
  machine_id    TEXT PRIMARY KEY,
  ledger_offset BIGINT NOT NULL,
  check_hash    TEXT NOT NULL,
  rows_inserted BIGINT NOT NULL,
  pushes        BIGINT NOT NULL,
  last_push_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
";

/// Ordered migrations: (version, SQL).
const MIGRATIONS: [(i32, &str); 1] = [(1, MIGRATION_1)];

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
    for (version, sql) in MIGRATIONS {
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
