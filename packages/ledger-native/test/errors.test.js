// Bad input gets the error the reference gives (same class and message
// where the reference throws), and nothing is written.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { packageDir, tempHome } from './helpers.js';

test('writers reject what is not an array, and what JSON cannot carry', async (t) => {
  const home = tempHome(t);
  await assert.rejects(ledger.appendTurns('nope'), TypeError);
  await assert.rejects(ledger.appendContent(undefined), TypeError);
  // JSON.stringify throws on a BigInt, as the reference's writer would.
  await assert.rejects(ledger.appendTurns([{ sessionId: 's', usage: { input: 1n } }]), TypeError);
  assert.equal(existsSync(path.join(home, 'ledger.jsonl')), false);
});

test('stamp needs a selector field', async (t) => {
  const home = tempHome(t);
  await assert.rejects(ledger.stamp({}, { k: 'v' }), {
    name: 'Error',
    message: 'stamp requires at least one selector field (sessionId, messageId, or range)',
  });
  assert.equal(existsSync(path.join(home, 'ledger.jsonl')), false);
});

test('an unsafe session id is refused by the content reader and the path function', async (t) => {
  tempHome(t);
  await assert.rejects(ledger.readContent({ sessionId: '../escape' }), {
    message: 'invalid sessionId for content path: "../escape"',
  });
  assert.throws(() => ledger.contentFilePath('a/b'), { message: 'invalid sessionId for content path: "a/b"' });
  assert.equal(ledger.isValidSessionId('x'.repeat(129)), false);
  assert.equal(ledger.isValidSessionId('ses_AZ.09-_'), true);
});

test('a home that is a file is reported with its path', async (t) => {
  const home = tempHome(t);
  const file = path.join(home, 'not-a-dir');
  writeFileSync(file, 'x');
  process.env.RELAYBURN_HOME = file;
  await assert.rejects(ledger.appendTurns([]), (e) => e instanceof Error && e.message.includes(file));
  await assert.rejects(ledger.queryAll(), (e) => e.message.includes(file));
});

test('a malformed hwm map or cursor map is refused, not written', async (t) => {
  const home = tempHome(t);
  await assert.rejects(ledger.saveHwm([1, 2]), /hwm map must be an object/);
  await assert.rejects(ledger.saveCursors('x'), /cursor map must be an object/);
  assert.equal(existsSync(path.join(home, 'hwm.json')), false);
  assert.equal(existsSync(path.join(home, 'cursors.json')), false);
});

test('pruneContent needs a numeric age', async (t) => {
  tempHome(t);
  await assert.rejects(ledger.pruneContent({ olderThanMs: 'soon' }), TypeError);
  await assert.rejects(ledger.pruneContent({ olderThanMs: NaN }), TypeError);
});

// The storage backend is chosen once per process, so these run in children.
function inChild(env, body) {
  const script = `import(${JSON.stringify(path.join(packageDir, 'index.js'))}).then(async (m) => {
    try { await (${body})(m); console.log('ok'); } catch (e) { console.log(e.message); }
  });`;
  return execFileSync(process.execPath, ['-e', script], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  }).trim();
}

test('RELAYBURN_STORAGE: unknown values and non-file backends are refused as the reference words it', (t) => {
  const home = tempHome(t);
  assert.equal(
    inChild({ RELAYBURN_HOME: home, RELAYBURN_STORAGE: 'bogus' }, '(m) => m.appendTurns([])'),
    'unsupported RELAYBURN_STORAGE="bogus" (expected file, sqlite, postgres, or http)',
  );
  assert.equal(
    inChild({ RELAYBURN_HOME: home, RELAYBURN_STORAGE: 'sqlite' }, '(m) => m.buildArchive()'),
    'archive operations require RELAYBURN_STORAGE=file (got sqlite)',
  );
  assert.equal(
    inChild({ RELAYBURN_HOME: home, RELAYBURN_STORAGE: 'postgres' }, '(m) => m.appendTurns([])'),
    'RELAYBURN_STORAGE=postgres is not supported in this build',
  );
});
