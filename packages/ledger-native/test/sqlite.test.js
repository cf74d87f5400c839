// The reference's recorded scripts replayed with RELAYBURN_STORAGE=sqlite
// (fixtures/reference/sqlite/<case>/expected): every step's result or error
// must equal the reference's, and burn.sqlite must hold the same rows, in
// the same rowid order, under the same schema. Needs Node 22's node:sqlite
// to read the store; skipped with a notice on an older Node.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { packageDir, referenceDir, repoRoot, runStep, sameResult, tempHome } from './helpers.js';

let DatabaseSync = null;
try {
  ({ DatabaseSync } = await import('node:sqlite'));
} catch {
  // Node before 22.5: the store cannot be read back here.
}

function useSqlite(t, home) {
  const before = [process.env.RELAYBURN_STORAGE, process.env.RELAYBURN_SQLITE_PATH];
  process.env.RELAYBURN_STORAGE = 'sqlite';
  process.env.RELAYBURN_SQLITE_PATH = path.join(home, 'burn.sqlite');
  ledger.__resetStorageForTesting();
  t.after(() => {
    for (const [k, v] of [['RELAYBURN_STORAGE', before[0]], ['RELAYBURN_SQLITE_PATH', before[1]]]) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    ledger.__resetStorageForTesting();
  });
}

// The fixtures' dump: every table but `locks` and `sqlite_sequence`, rows
// in rowid order with `_rowid`, the content clock nulled, and `_schema`.
function dumpStore(file) {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    const out = {};
    const tables = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .all()
      .map((r) => r.name)
      .filter((n) => n !== 'locks' && n !== 'sqlite_sequence');
    for (const t of tables) {
      out[t] = db.prepare(`SELECT rowid AS _rowid, * FROM ${t} ORDER BY rowid`).all().map((r) => {
        const row = { ...r };
        if (t === 'content') row.mtime_ms = null;
        return row;
      });
    }
    out._schema = db
      .prepare('SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name')
      .all()
      .map((r) => r.sql);
    return out;
  } finally {
    db.close();
  }
}

const cases = (ref) => readdirSync(path.join(ref, 'sqlite')).sort();

test('the sqlite cases are the file cases but archive-incremental', (t) => {
  const ref = referenceDir(t);
  if (!ref) return;
  const file = readdirSync(path.join(ref, 'ops')).filter((c) => c !== 'archive-incremental');
  assert.deepEqual(cases(ref), file.sort());
});

const ref0 = (() => {
  const shared = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../..', process.env.RELAYBURN_SHARED ?? '../shared');
  const dir = path.join(shared, 'fixtures', 'reference', 'sqlite');
  return existsSync(dir) ? readdirSync(dir).sort() : ['basic'];
})();

for (const name of ref0) {
  test(`sqlite/${name} through the package`, async (t) => {
    const ref = referenceDir(t);
    if (!ref) return;
    if (DatabaseSync === null) {
      if (process.env.RELAYBURN_REQUIRE_NODE === '1') throw new Error('node:sqlite is missing (Node 22.5+)');
      t.skip('node:sqlite is missing (Node 22.5+ needed to read the store back)');
      return;
    }
    const steps = JSON.parse(readFileSync(path.join(ref, 'ops', name, 'ops.json'), 'utf8'));
    const expected = path.join(ref, 'sqlite', name, 'expected');
    const results = JSON.parse(readFileSync(path.join(expected, 'results.json'), 'utf8'));
    assert.equal(steps.length, results.length);
    const home = tempHome(t);
    useSqlite(t, home);
    const warnings = [];
    const write = process.stderr.write;
    process.stderr.write = (chunk, ...rest) =>
      String(chunk).startsWith('[burn]') ? (warnings.push(String(chunk)), true) : write.call(process.stderr, chunk, ...rest);
    try {
      for (const [i, step] of steps.entries()) {
        const want = results[i].result;
        const what = `step ${i} (${step.op}${step.kind ? ' ' + step.kind : ''})`;
        if (want && typeof want === 'object' && 'skipped' in want) continue;
        if (want && typeof want === 'object' && !Array.isArray(want) && 'error' in want) {
          await assert.rejects(runStep(step), (e) => e.message === want.error, what);
          continue;
        }
        sameResult(what, await runStep(step), want);
      }
    } finally {
      process.stderr.write = write;
    }
    const stderrFile = path.join(expected, 'stderr.txt');
    assert.equal(warnings.join(''), existsSync(stderrFile) ? readFileSync(stderrFile, 'utf8') : '');
    const want = JSON.parse(readFileSync(path.join(expected, 'burn-dump.json'), 'utf8'));
    const got = dumpStore(path.join(home, 'burn.sqlite'));
    assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    for (const table of Object.keys(want)) {
      assert.equal(got[table].length, want[table].length, `${table}: row count`);
      got[table].forEach((row, i) => assert.deepEqual(row, want[table][i], `${table} row ${i}`));
    }
    // Nothing of file storage was written beside the store.
    assert.equal(existsSync(path.join(home, 'ledger.jsonl')), false);
  });
}

// ------------------------------------------------------------ locks

const pause = (ms) => new Promise((done) => setTimeout(done, ms));

function run(args, env) {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise((done) => child.on('exit', done));
  return { exited, out: () => out, err: () => err };
}

function needsNodeSqlite(t) {
  if (DatabaseSync !== null) return true;
  if (process.env.RELAYBURN_REQUIRE_NODE === '1') throw new Error('node:sqlite is missing (Node 22.5+)');
  t.skip('node:sqlite is missing (Node 22.5+)');
  return false;
}

const lockRows = (db) => {
  const c = new DatabaseSync(db, { readOnly: true });
  try {
    return c.prepare('SELECT count(*) AS n FROM locks').get().n;
  } finally {
    c.close();
  }
};

test('under sqlite storage withLock is a row of locks: two other Node processes and this one never lose an update', async (t) => {
  if (!needsNodeSqlite(t)) return;
  const home = tempHome(t);
  useSqlite(t, home);
  const db = path.join(home, 'burn.sqlite');
  const counter = path.join(home, 'counter.txt');
  writeFileSync(counter, '0');
  const n = 30;
  const env = { RELAYBURN_HOME: home, RELAYBURN_STORAGE: 'sqlite', RELAYBURN_SQLITE_PATH: db };
  const peers = [0, 1].map(() => run([path.join(packageDir, 'test', 'peer.js'), 'increment', counter, String(n)], env));
  let sawRow = false;
  for (let i = 0; i < n; i++) {
    await ledger.withLock('counter', async () => {
      const v = Number(readFileSync(counter, 'utf8') || '0');
      sawRow ||= lockRows(db) === 1;
      await pause(1);
      writeFileSync(counter, String(v + 1));
    });
  }
  const codes = await Promise.all(peers.map((p) => p.exited));
  assert.deepEqual(codes, [0, 0], peers.map((p) => p.err()).join('\n'));
  assert.equal(readFileSync(counter, 'utf8'), String(3 * n));
  assert.equal(sawRow, true);
  assert.equal(lockRows(db), 0);
  assert.equal(existsSync(path.join(home, 'counter.lock')), false);
});

test('under sqlite storage the reference-protocol peer waits while withLock holds the row', async (t) => {
  if (!needsNodeSqlite(t)) return;
  const home = tempHome(t);
  useSqlite(t, home);
  const db = path.join(home, 'burn.sqlite');
  await ledger.appendTurns([]); // creates the store
  const peerScript = path.join(repoRoot, 'crates/relayburn-ledger/tests/peers/sqlite-peer.mjs');
  let peer;
  let releasedAt;
  await ledger.withLock('ingest', async () => {
    peer = run([peerScript, 'acquire-once', db, 'ingest']);
    await pause(600);
    releasedAt = Date.now();
  });
  assert.equal(await peer.exited, 0, peer.err());
  const acquired = peer.out().split('\n').find((l) => l.startsWith('acquired'));
  assert.ok(acquired, peer.out());
  assert.ok(Number(acquired.split(' ')[1]) >= releasedAt - 5, `peer: ${acquired}, released ${releasedAt}`);
});

test('under sqlite storage withLock is re-entrant for nested locks, writers and cursors', async (t) => {
  if (!needsNodeSqlite(t)) return;
  const home = tempHome(t);
  useSqlite(t, home);
  const turn = (messageId) => ({
    v: 1,
    source: 'claude-code',
    sessionId: 's',
    messageId,
    turnIndex: 0,
    ts: '2026-01-01T00:00:00.000Z',
    model: 'm',
    usage: { input: 1, output: 2, reasoning: 0, cacheRead: 0, cacheCreate5m: 0, cacheCreate1h: 0 },
    toolCalls: [],
  });
  await ledger.withLock('cursors', async () => {
    // Each would wait out the row's retry budget (about 11 s) and fail if
    // the context's row were not passed down.
    await ledger.withLock('cursors', async () => ledger.appendTurns([turn('m1')]));
    await ledger.stamp({ sessionId: 's' }, { k: 'v' });
    await ledger.updateCursors((map) => {
      map.a = { kind: 'claude', inode: 1, offsetBytes: 2, mtimeMs: 3 };
    });
  });
  const turns = await ledger.queryAll();
  assert.deepEqual(turns.map((x) => [x.messageId, x.enrichment]), [['m1', { k: 'v' }]]);
  assert.deepEqual(await ledger.loadCursors(), { a: { kind: 'claude', inode: 1, offsetBytes: 2, mtimeMs: 3 } });
  assert.equal(existsSync(path.join(home, 'ledger.jsonl')), false);
  assert.equal(lockRows(path.join(home, 'burn.sqlite')), 0);
});
