// The reference's recorded scripts (fixtures/reference/ops/<case>/ops.json)
// replayed through this package's functions, one fresh home per case, as a
// program written against @relayburn/ledger would call them. The files
// left in the home must equal the reference's byte for byte, every step's
// result must equal the recorded one (key order included), and so must
// the archive dump.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { dumpArchive, normaliseDump, referenceDir, runStep, sameResult, tempHome } from './helpers.js';

const CASES = [
  'archive-incremental',
  'basic',
  'content',
  'fingerprint',
  'numbers',
  'stamps',
  'tool-result-events',
  'window',
];

const read = (p) => (existsSync(p) ? readFileSync(p) : null);
const names = (d) => (existsSync(d) ? readdirSync(d).sort() : []);

function sameFile(name, want, got) {
  if (want === null || got === null) {
    assert.equal(got === null, want === null, `${name}: present in one home only`);
    return;
  }
  if (Buffer.compare(want, got) === 0) return;
  const w = want.toString('utf8').split('\n');
  const g = got.toString('utf8').split('\n');
  const i = w.findIndex((line, j) => line !== g[j]);
  assert.fail(`${name} differs at line ${i + 1}\n  want: ${w[i]?.slice(0, 300)}\n  got:  ${g[i]?.slice(0, 300)}`);
}

test('every recorded case is replayed here', (t) => {
  const ref = referenceDir(t);
  if (!ref) return;
  assert.deepEqual(names(path.join(ref, 'ops')), CASES);
});

for (const name of CASES) {
  test(`ops/${name} through the package`, async (t) => {
    const ref = referenceDir(t);
    if (!ref) return;
    const caseDir = path.join(ref, 'ops', name);
    const expected = path.join(caseDir, 'expected');
    const steps = JSON.parse(readFileSync(path.join(caseDir, 'ops.json'), 'utf8'));
    const results = JSON.parse(readFileSync(path.join(expected, 'results.json'), 'utf8'));
    assert.equal(steps.length, results.length);
    const home = tempHome(t);
    // The content case warns about an unsafe session id on stderr, as the
    // reference does; keep the test output clean but check the warning.
    const warnings = [];
    const write = process.stderr.write;
    process.stderr.write = (chunk, ...rest) =>
      String(chunk).startsWith('[burn]') ? (warnings.push(String(chunk)), true) : write.call(process.stderr, chunk, ...rest);
    try {
      for (const [i, step] of steps.entries()) {
        const got = await runStep(step);
        sameResult(`step ${i} (${step.op}${step.kind ? ' ' + step.kind : ''})`, got, results[i].result);
      }
    } finally {
      process.stderr.write = write;
    }
    if (name === 'content') {
      assert.deepEqual(warnings, ['[burn] skipping content record with unsafe sessionId: "../escape"\n']);
    }
    for (const f of ['ledger.jsonl', 'ledger.idx', 'ledger.content.idx']) {
      sameFile(f, read(path.join(expected, f)), read(path.join(home, f)));
    }
    const contentNames = names(path.join(expected, 'content'));
    assert.deepEqual(names(path.join(home, 'content')), contentNames);
    for (const f of contentNames) {
      sameFile(`content/${f}`, read(path.join(expected, 'content', f)), read(path.join(home, 'content', f)));
    }
    const dumpFile = path.join(expected, 'archive-dump.json');
    if (existsSync(dumpFile)) {
      const want = normaliseDump(JSON.parse(readFileSync(dumpFile, 'utf8')));
      const got = dumpArchive(path.join(home, 'archive.sqlite'), Object.keys(want));
      for (const table of Object.keys(want)) {
        assert.equal(got[table].length, want[table].length, `${table}: row count`);
        got[table].forEach((row, i) => assert.deepEqual(row, want[table][i], `${table} row ${i}`));
      }
    }
    const leftovers = names(home).filter((n) => n.endsWith('.lock') || n.endsWith('.tmp'));
    assert.deepEqual(leftovers, []);
  });
}
