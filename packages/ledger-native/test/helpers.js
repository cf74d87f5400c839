// Shared by the package's tests: where the fixtures and binaries are,
// temporary homes, and archive dumps in the fixtures' format.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageDir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const repoRoot = path.resolve(packageDir, '../..');

// The reference fixtures, or null (with a notice) when they are absent and
// not required.
export function referenceDir(t) {
  const shared = path.resolve(repoRoot, process.env.RELAYBURN_SHARED ?? '../shared');
  const dir = path.join(shared, 'fixtures', 'reference');
  if (existsSync(dir)) return dir;
  if (process.env.RELAYBURN_REQUIRE_FIXTURES === '1') {
    throw new Error(`reference fixtures not found at ${dir} (set RELAYBURN_SHARED)`);
  }
  t.skip(`reference fixtures not found at ${dir}; set RELAYBURN_SHARED`);
  return null;
}

// A built binary of the workspace, or null with a notice.
export function binary(t, name) {
  const dir = process.env.CARGO_TARGET_DIR
    ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR)
    : path.join(repoRoot, 'target');
  const p = path.join(dir, 'release', name);
  if (existsSync(p)) return p;
  if (process.env.RELAYBURN_REQUIRE_FIXTURES === '1') throw new Error(`${p} is not built`);
  t.skip(`${p} is not built; run cargo build --release`);
  return null;
}

// A fresh directory made the home of this process until `done` runs.
export function tempHome(t) {
  const dir = mkdtempSync(path.join(tmpdir(), 'ledger-native-'));
  const before = process.env.RELAYBURN_HOME;
  process.env.RELAYBURN_HOME = dir;
  t.after(() => {
    if (before === undefined) delete process.env.RELAYBURN_HOME;
    else process.env.RELAYBURN_HOME = before;
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

// Primary keys of the archive tables, in key order (the fixtures sort by them).
const PRIMARY_KEYS = {
  sessions: ['source', 'session_id'],
  turns: ['source', 'session_id', 'message_id'],
  tool_calls: ['source', 'session_id', 'message_id', 'call_index'],
  tool_result_events: ['source', 'session_id', 'message_id', 'tool_use_id', 'event_index'],
  stamps: ['source', 'session_id', 'ts', 'ledger_offset_bytes'],
  compactions: ['source', 'session_id', 'ts'],
  archive_state: ['id'],
};
const CLOCK_COLUMNS = ['ledger_mtime_ms', 'last_built_at', 'last_rebuild_at'];

function sqlite(db, sql) {
  const out = execFileSync('sqlite3', ['-json', '-readonly', db, sql], {
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  return out.trim() === '' ? [] : JSON.parse(out);
}

// Every row of `tables` with every column, through the sqlite3 shell. Each
// cell is tagged with its storage class so reals keep all 17 digits and
// integers are not mistaken for text.
export function dumpArchive(db, tables) {
  const out = {};
  for (const table of tables) {
    const cols = sqlite(db, `PRAGMA table_info(${table})`).map((c) => c.name);
    const cells = cols.map(
      (c) =>
        `CASE typeof("${c}") WHEN 'real' THEN 'r' || printf('%!.17g', "${c}") ` +
        `WHEN 'integer' THEN 'i' || "${c}" WHEN 'text' THEN 't' || "${c}" END AS "${c}"`,
    );
    const rows = sqlite(db, `SELECT ${cells.join(', ')} FROM ${table}`);
    out[table] = rows.map((r) => {
      const row = {};
      for (const c of cols) {
        const v = r[c];
        row[c] = v === null || v === undefined ? null : v[0] === 't' ? v.slice(1) : Number(v.slice(1));
      }
      return row;
    });
  }
  return normaliseDump(out);
}

function compareCells(a, b) {
  if (a === b) return 0;
  if (a === null) return -1;
  if (b === null) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : 1;
  if (typeof a === 'number') return -1;
  if (typeof b === 'number') return 1;
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

// Rows sorted by primary key, clock columns blanked, as the fixtures are.
export function normaliseDump(dump) {
  const out = {};
  for (const [table, rows] of Object.entries(dump)) {
    const pk = PRIMARY_KEYS[table] ?? [];
    const sorted = [...rows].sort((x, y) => {
      for (const k of pk) {
        const c = compareCells(x[k], y[k]);
        if (c !== 0) return c;
      }
      return 0;
    });
    if (table === 'archive_state') {
      for (const r of sorted) for (const c of CLOCK_COLUMNS) if (c in r) r[c] = null;
    }
    out[table] = sorted;
  }
  return out;
}
