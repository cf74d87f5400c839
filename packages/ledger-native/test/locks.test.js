// withLock: the shared lockfile protocol held while a JavaScript callback
// runs, re-entrant within one async context as the reference's is, and
// respected by a second Node process, by the reference-protocol peer and
// by the `burn` binary.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { binary, packageDir, repoRoot, tempHome } from './helpers.js';

const pause = (ms) => new Promise((done) => setTimeout(done, ms));

const turn = (sessionId, messageId) => ({
  v: 1,
  source: 'claude-code',
  sessionId,
  messageId,
  turnIndex: 0,
  ts: '2026-01-01T00:00:00.000Z',
  model: 'm',
  usage: { input: 1, output: 2, reasoning: 0, cacheRead: 0, cacheCreate5m: 0, cacheCreate1h: 0 },
  toolCalls: [],
});

// Start a process; resolves `line(prefix)` promises as its stdout says them.
function start(cmd, args, env) {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters = [];
  child.stdout.on('data', (d) => {
    out += d;
    for (const w of waiters) w();
  });
  child.stderr.on('data', (d) => (err += d));
  let finished = false;
  const exited = new Promise((done) =>
    child.on('exit', (code) => {
      finished = true;
      done(code);
    }),
  );
  return {
    exited,
    finished: () => finished,
    stderr: () => err,
    line: (prefix) =>
      new Promise((done, fail) => {
        const check = () => {
          const l = out.split('\n').find((x) => x.startsWith(prefix));
          if (l) done(l);
        };
        waiters.push(check);
        check();
        exited.then((code) => fail(new Error(`${cmd} exited ${code} before "${prefix}": ${err}`)));
      }),
  };
}

test('the lockfile exists exactly while the callback runs', async (t) => {
  const home = tempHome(t);
  const lp = path.join(home, 'demo.lock');
  const seen = await ledger.withLock('demo', async () => {
    await pause(10);
    return existsSync(lp);
  });
  assert.equal(seen, true);
  assert.equal(existsSync(lp), false);
});

test('a callback that throws releases the lock and the error reaches the caller', async (t) => {
  const home = tempHome(t);
  await assert.rejects(
    ledger.withLock('demo', async () => {
      throw new RangeError('boom');
    }),
    RangeError,
  );
  assert.equal(existsSync(path.join(home, 'demo.lock')), false);
});

test('re-entrant in one async context: nested withLock and writers under the ledger lock', async (t) => {
  const home = tempHome(t);
  await ledger.withLock('ledger', async () => {
    // Both would wait on our own lockfile for ~11 s and fail if the
    // context's lock were not passed down.
    await ledger.withLock('ledger', async () => ledger.appendTurns([turn('s', 'm1')]));
    await ledger.stamp({ sessionId: 's' }, { k: 'v' });
    await ledger.updateCursors((map) => {
      map.a = { kind: 'claude', inode: 1, offsetBytes: 2, mtimeMs: 3 };
    });
  });
  const lines = readFileSync(path.join(home, 'ledger.jsonl'), 'utf8').trim().split('\n');
  assert.equal(lines.length, 2);
  assert.deepEqual(await ledger.loadCursors(), { a: { kind: 'claude', inode: 1, offsetBytes: 2, mtimeMs: 3 } });
  assert.deepEqual(
    ledger.isTurnLine(JSON.parse(lines[0])) && ledger.isStampLine(JSON.parse(lines[1])),
    true,
  );
});

test('re-entry holds whatever the spelling of RELAYBURN_HOME', async (t) => {
  const home = tempHome(t);
  process.env.RELAYBURN_HOME = `${home}/./`;
  await ledger.withLock('ledger', async () => ledger.appendTurns([turn('s', 'm1')]));
  assert.equal((await ledger.queryAll()).length, 1);
});

test('another async context of the same process waits for the holder', async (t) => {
  tempHome(t);
  const events = [];
  const first = ledger.withLock('x', async () => {
    events.push('first in');
    await pause(200);
    events.push('first out');
  });
  await pause(20);
  const second = ledger.withLock('x', async () => events.push('second in'));
  await Promise.all([first, second]);
  assert.deepEqual(events, ['first in', 'first out', 'second in']);
});

test('two other Node processes and this one never lose an update under withLock', async (t) => {
  const home = tempHome(t);
  const counter = path.join(home, 'counter.txt');
  const n = 40;
  const peers = [0, 1].map(() =>
    start(process.execPath, [path.join(packageDir, 'test', 'peer.js'), 'increment', counter, String(n)], {
      RELAYBURN_HOME: home,
    }),
  );
  for (let i = 0; i < n; i++) {
    await ledger.withLock('counter', async () => {
      const v = Number(readFileSync(counter, { encoding: 'utf8', flag: 'a+' }) || '0');
      await pause(1);
      await import('node:fs/promises').then((fs) => fs.writeFile(counter, String(v + 1)));
    });
  }
  const codes = await Promise.all(peers.map((p) => p.exited));
  assert.deepEqual(codes, [0, 0], peers.map((p) => p.stderr()).join('\n'));
  assert.equal(readFileSync(counter, 'utf8'), String(3 * n));
});

test('a writer of this package waits for a lock held by another Node process', async (t) => {
  const home = tempHome(t);
  const peer = start(process.execPath, [path.join(packageDir, 'test', 'peer.js'), 'hold', 'ledger', '600'], {
    RELAYBURN_HOME: home,
  });
  await peer.line('acquired');
  await ledger.appendTurns([turn('s', 'm1')]);
  const appendedAt = statSync(path.join(home, 'ledger.jsonl')).mtimeMs;
  const released = Number((await peer.line('released')).split(' ')[1]);
  assert.equal(await peer.exited, 0);
  assert.ok(appendedAt >= released - 5, `appended at ${appendedAt}, peer released at ${released}`);
});

test('the reference-protocol peer waits while withLock holds the lock', async (t) => {
  const home = tempHome(t);
  const peerScript = path.join(repoRoot, 'crates/relayburn-ledger/tests/peers/lock-peer.mjs');
  let peer;
  let releasedAt;
  await ledger.withLock('ledger', async () => {
    peer = start(process.execPath, [peerScript, 'acquire-once', path.join(home, 'ledger.lock')]);
    await pause(600);
    releasedAt = Date.now();
  });
  assert.equal(await peer.exited, 0, peer.stderr());
  const acquired = await peer.line('acquired');
  assert.ok(Number(acquired.split(' ')[1]) >= releasedAt - 5, `peer: ${acquired}, released ${releasedAt}`);
});

test('the burn binary waits while withLock holds the ledger lock', async (t) => {
  const burn = binary(t, 'burn');
  if (!burn) return;
  const home = tempHome(t);
  await ledger.appendTurns([turn('s', 'm1')]);
  const ledgerFile = path.join(home, 'ledger.jsonl');
  let child;
  await ledger.withLock('ledger', async () => {
    const before = readFileSync(ledgerFile);
    child = start(burn, ['--home', home, '--quiet', 'stamp', '--session', 's', 'k=v'], {});
    await pause(700);
    // burn is waiting on our lockfile: nothing was appended meanwhile.
    assert.deepEqual(readFileSync(ledgerFile), before);
  });
  assert.equal(await child.exited, 0, child.stderr());
  const turns = await ledger.queryAll();
  assert.deepEqual(turns.map((x) => x.enrichment), [{ k: 'v' }]);
});

test('buildArchive waits while burn rebuilds the archive under its lock', async (t) => {
  const burn = binary(t, 'burn');
  const bench = binary(t, 'relayburn-bench');
  if (!burn || !bench) return;
  const home = tempHome(t);
  const { execFileSync } = await import('node:child_process');
  execFileSync(bench, ['gen', '--size', '30MB', '--seed', '2', '--out', home], { stdio: 'ignore' });
  const child = start(burn, ['--home', home, '--quiet', 'state', 'rebuild', 'archive', '--full'], {});
  const lock = path.join(home, 'archive.lock');
  while (!existsSync(lock)) {
    assert.equal(child.finished(), false, 'burn finished before it was seen holding the lock');
    await pause(2);
  }
  // Had it not waited, this build would have scanned the ledger beside
  // burn's rebuild; after it, there is nothing left to apply.
  const r = await ledger.buildArchive();
  assert.equal(await child.exited, 0, child.stderr());
  assert.equal(r.scannedBytes, 0);
  assert.equal((await ledger.getArchiveStatus()).upToDate, true);
});
