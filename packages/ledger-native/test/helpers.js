// Shared by the package's tests: where the fixtures and binaries are,
// temporary homes, and archive dumps in the fixtures' format.
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { appendFileSync, existsSync, mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as ledger from '../index.js';

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

// ------------------------------------------------ replaying recorded scripts

const QUERIES = {
  turns: ledger.queryAll,
  compactions: ledger.queryCompactions,
  relationships: ledger.queryRelationships,
  toolResultEvents: ledger.queryToolResultEvents,
  userTurns: ledger.queryUserTurns,
  content: ledger.readContent,
};

export async function runStep(step) {
  switch (step.op) {
    case 'appendTurns':
    case 'appendCompactions':
    case 'appendRelationships':
    case 'appendToolResultEvents':
    case 'appendUserTurns':
    case 'appendContent':
      return (await ledger[step.op](step.records)) ?? null;
    case 'appendStamp':
      return (await ledger.__appendStampLineForTesting(step.line)) ?? null;
    case 'rebuildIndex':
      return ledger.rebuildIndex();
    case 'invalidateIndexCache':
      return ledger.invalidateIndexCache() ?? null;
    case 'buildArchive':
      return ledger.buildArchive();
    case 'rebuildArchive':
      return ledger.rebuildArchive();
    case 'rawAppend':
      appendFileSync(ledger.ledgerPath(), step.text);
      return null;
    case 'truncateLedger':
      truncateSync(ledger.ledgerPath(), step.bytes);
      return null;
    case 'query': {
      // The recorded archive query is the reference's queryAllFromArchive.
      if (step.from === 'archive') return ledger.queryAllFromArchive(step.query);
      const run = QUERIES[step.kind];
      if (!run) throw new Error(`unknown query kind ${step.kind}`);
      return run(step.query);
    }
    default:
      throw new Error(`unknown op ${step.op}`);
  }
}

// Equal as JSON text, so key order counts too; names the first item that differs.
export function sameResult(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g === w) return;
  if (Array.isArray(got) && Array.isArray(want) && got.length === want.length) {
    const i = want.findIndex((item, j) => JSON.stringify(item) !== JSON.stringify(got[j]));
    assert.fail(`${what} item ${i} differs\n  want: ${JSON.stringify(want[i]).slice(0, 400)}\n  got:  ${JSON.stringify(got[i]).slice(0, 400)}`);
  }
  assert.fail(`${what} differs\n  want: ${w.slice(0, 400)}\n  got:  ${g.slice(0, 400)}`);
}

