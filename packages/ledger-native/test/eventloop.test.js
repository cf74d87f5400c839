// A long archive rebuild runs off the JavaScript thread: timers keep
// firing throughout. The home is generated (150 MB ledger) by the bench
// tool; a blocked event loop would show one gap as long as the rebuild.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { binary, tempHome } from './helpers.js';

test('timers keep firing during a rebuild of a 150 MB home', async (t) => {
  const bench = binary(t, 'relayburn-bench');
  if (!bench) return;
  const home = tempHome(t);
  execFileSync(bench, ['gen', '--size', '150MB', '--seed', '1', '--out', home], { stdio: 'ignore' });

  let ticks = 0;
  let maxGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, 10);
  const started = performance.now();
  const result = await ledger.rebuildArchive();
  const took = performance.now() - started;
  clearInterval(timer);
  maxGap = Math.max(maxGap, performance.now() - last);

  assert.equal(result.rebuiltFromZero, true);
  assert.ok(result.turnsApplied > 100_000, `turns applied: ${result.turnsApplied}`);
  t.diagnostic(`rebuild ${took.toFixed(0)} ms, ${ticks} ticks, longest gap ${maxGap.toFixed(0)} ms`);
  assert.ok(ticks >= 10, `only ${ticks} timer ticks in ${took.toFixed(0)} ms`);
  assert.ok(maxGap < took / 4, `a gap of ${maxGap.toFixed(0)} ms in a ${took.toFixed(0)} ms rebuild`);
});
