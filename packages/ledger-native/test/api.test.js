// The rest of the surface, with expectations worked out by hand from the
// reference's documented behaviour.
import assert from 'node:assert/strict';
import { readFileSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { tempHome } from './helpers.js';

const turn = (sessionId, messageId, ts) => ({
  v: 1,
  source: 'codex',
  sessionId,
  messageId,
  turnIndex: 0,
  ts,
  model: 'm',
  usage: { input: 1, output: 2, reasoning: 0, cacheRead: 0, cacheCreate5m: 0, cacheCreate1h: 0 },
  toolCalls: [],
});

const content = (sessionId, messageId, text) => ({
  v: 1,
  source: 'codex',
  sessionId,
  messageId,
  ts: '2026-01-01T00:00:00.000Z',
  role: 'user',
  kind: 'text',
  text,
});

test('query is an async iterable that can be left early, and filters apply', async (t) => {
  tempHome(t);
  const turns = Array.from({ length: 3000 }, (_, i) =>
    turn(`s${i % 3}`, `m${i}`, `2026-01-01T00:00:${String(i % 60).padStart(2, '0')}.000Z`),
  );
  await ledger.appendTurns(turns);
  const it = ledger.query();
  assert.equal(typeof it[Symbol.asyncIterator], 'function');
  let seen = 0;
  for await (const x of it) {
    assert.deepEqual(x.enrichment, {});
    if (++seen === 5) break;
  }
  assert.equal(seen, 5);
  assert.equal((await ledger.queryAll()).length, 3000);
  assert.equal((await ledger.queryAll({ sessionId: 's1' })).length, 1000);
  // ts seconds 00..59 cycle; since :50 keeps 10 of every 60.
  assert.equal((await ledger.queryAll({ since: '2026-01-01T00:00:50.000Z' })).length, 500);
});

test('archive: absent, built, status, vacuum', async (t) => {
  const home = tempHome(t);
  assert.equal(await ledger.archiveAvailable(), false);
  const before = await ledger.getArchiveStatus();
  assert.equal(before.exists, false);
  assert.equal(before.archivePath, path.join(home, 'archive.sqlite'));
  assert.deepEqual(await ledger.vacuumArchive(), {
    archivePath: path.join(home, 'archive.sqlite'),
    existed: false,
    beforeBytes: 0,
    afterBytes: 0,
    reclaimedBytes: 0,
  });
  await ledger.appendTurns([turn('s', 'a', '2026-01-01T00:00:00.000Z'), turn('s', 'b', '2026-01-02T00:00:00.000Z')]);
  await ledger.stamp({ messageId: 'b' }, { workflowId: 'w' });
  const built = await ledger.buildArchive();
  assert.equal(built.turnsApplied, 2);
  assert.equal(built.stampsApplied, 1);
  assert.equal(built.rebuiltFromZero, false);
  const status = await ledger.getArchiveStatus();
  assert.equal(status.upToDate, true);
  assert.equal(status.rowCounts.turns, 2);
  assert.equal(status.ledgerSizeBytes, readFileSync(path.join(home, 'ledger.jsonl')).length);
  const rows = await ledger.queryTurnsFromArchive({ enrichment: { workflowId: 'w' } });
  assert.deepEqual(rows.map((r) => r.messageId), ['b']);
  assert.equal((await ledger.buildArchive()).scannedBytes, 0);
  assert.equal((await ledger.vacuumArchive()).existed, true);
});

test('content: append, read, list, prune with a recoverability predicate', async (t) => {
  const home = tempHome(t);
  await ledger.appendContent([content('a', 'm1', 'x'), content('a', 'm2', 'y'), content('b', 'm1', 'z')]);
  await ledger.appendContent([content('a', 'm1', 'x')]);
  assert.deepEqual((await ledger.readContent({ sessionId: 'a' })).map((r) => r.text), ['x', 'y']);
  assert.deepEqual((await ledger.readContent({ sessionId: 'a', messageId: 'm2' })).map((r) => r.text), ['y']);
  assert.deepEqual(await ledger.readContent({ sessionId: 'none' }), []);
  assert.deepEqual([...(await ledger.listContentSessionIds())].sort(), ['a', 'b']);
  const old = new Date(Date.now() - 10 * 86_400_000);
  for (const s of ['a', 'b']) utimesSync(path.join(home, 'content', `${s}.jsonl`), old, old);
  const asked = [];
  const r = await ledger.pruneContent({
    olderThanMs: 86_400_000,
    isRecoverable: (sid) => {
      asked.push(sid);
      return sid === 'a';
    },
  });
  assert.deepEqual(asked.sort(), ['a', 'b']);
  const bSize = Buffer.byteLength(JSON.stringify(content('b', 'm1', 'z')) + '\n');
  assert.deepEqual(r, { filesDeleted: 1, bytesFreed: bSize, skippedRecoverable: 1 });
  assert.deepEqual([...(await ledger.listContentSessionIds())], ['a']);
});

test('config, retention, hwm and cursors', async (t) => {
  const home = tempHome(t);
  assert.deepEqual(await ledger.loadConfig(), ledger.DEFAULT_CONFIG);
  writeFileSync(path.join(home, 'config.json'), JSON.stringify({ content: { store: 'off', retentionDays: -1 } }));
  assert.deepEqual(await ledger.loadConfig(), { content: { store: 'off', retentionDays: 'forever' } });
  process.env.RELAYBURN_CONTENT_TTL_DAYS = '7';
  t.after(() => delete process.env.RELAYBURN_CONTENT_TTL_DAYS);
  assert.equal((await ledger.loadConfig()).content.retentionDays, 7);
  assert.equal(ledger.retentionMs(2), 172_800_000);
  assert.equal(ledger.retentionMs('forever'), null);

  assert.deepEqual(await ledger.loadHwm(), {});
  const hwm = { f: { lastMessageId: 'm', lastTs: 't', mtimeMs: 1.5 } };
  await ledger.saveHwm(hwm);
  assert.equal(readFileSync(path.join(home, 'hwm.json'), 'utf8'), JSON.stringify(hwm, null, 2));
  assert.deepEqual(await ledger.loadHwm(), hwm);

  const a = { kind: 'opencode', inode: 1, mtimeMs: 2, seenMessageIds: ['x'] };
  const b = { kind: 'claude', inode: 3, offsetBytes: 4, mtimeMs: 5 };
  await ledger.saveCursors({ a, b });
  await ledger.saveCursorChanges({ a, b }, { a: { ...a, mtimeMs: 9 } });
  assert.deepEqual(await ledger.loadCursors(), { a: { ...a, mtimeMs: 9 } });
  assert.equal(
    readFileSync(path.join(home, 'cursors.json'), 'utf8'),
    JSON.stringify({ files: { a: { ...a, mtimeMs: 9 } } }, null, 2),
  );
});

test('schema guards and stampMatches', () => {
  assert.equal(ledger.isTurnLine({ v: 1, kind: 'turn' }), true);
  assert.equal(ledger.isTurnLine({ v: '1', kind: 'turn' }), false);
  assert.equal(ledger.isStampLine(null), false);
  assert.equal(ledger.isUserTurnLine({ v: 1, kind: 'user_turn' }), true);
  const t = turn('s', 'm', '2026-01-02T00:00:00.000Z');
  const stampOf = (selector) => ({ v: 1, kind: 'stamp', ts: 'x', selector, enrichment: {} });
  assert.equal(ledger.stampMatches(stampOf({ sessionId: 's' }), t), true);
  assert.equal(ledger.stampMatches(stampOf({ sessionId: 's', messageId: 'n' }), t), false);
  assert.equal(ledger.stampMatches(stampOf({ range: { fromTs: '2026-01-03' } }), t), false);
  assert.equal(ledger.stampMatches(stampOf({ range: {} }), t), true);
  assert.equal(ledger.stampMatches(stampOf({}), t), false);
});
