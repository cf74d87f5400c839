// The reference's fixture home (a 2.1 MB ledger with duplicates, floats,
// unknown fields, a lone surrogate, a malformed line and a torn tail):
// every recorded query answered through the package as the reference
// answered it, and the index and archive it derives equal the reference's.
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import * as ledger from '../index.js';
import { dumpArchive, normaliseDump, referenceDir, tempHome } from './helpers.js';

const load = (dir, name) => JSON.parse(readFileSync(path.join(dir, name), 'utf8'));

// Equal as JSON text (key order included); names the first differing item.
function same(what, got, want) {
  assert.equal(got.length, want.length, `${what}: ${got.length} items, reference has ${want.length}`);
  want.forEach((w, i) => {
    const g = JSON.stringify(got[i]);
    if (g !== JSON.stringify(w)) {
      assert.fail(`${what} item ${i}\n  want: ${JSON.stringify(w).slice(0, 400)}\n  got:  ${g.slice(0, 400)}`);
    }
  });
}

function homeWith(t, fixture, files) {
  const home = tempHome(t);
  for (const f of files) copyFileSync(path.join(fixture, f), path.join(home, f));
  return home;
}

test('ledger queries of every kind answer as the reference did', async (t) => {
  const ref = referenceDir(t);
  if (!ref) return;
  const fixture = path.join(ref, 'home');
  homeWith(t, fixture, ['ledger.jsonl']);
  const turns = load(fixture, 'queries.json');
  assert.equal(turns.length, 13);
  for (const e of turns) {
    same(`queryAll ${JSON.stringify(e.query)}`, await ledger.queryAll(e.query), e.ledger);
    const streamed = [];
    for await (const x of ledger.query(e.query)) streamed.push(x);
    same(`query ${JSON.stringify(e.query)}`, streamed, e.ledger);
  }
  for (const e of load(fixture, 'aux-queries.json')) {
    const q = JSON.stringify(e.query);
    same(`compactions ${q}`, await ledger.queryCompactions(e.query), e.compactions);
    same(`relationships ${q}`, await ledger.queryRelationships(e.query), e.relationships);
    same(`toolResultEvents ${q}`, await ledger.queryToolResultEvents(e.query), e.toolResultEvents);
    same(`userTurns ${q}`, await ledger.queryUserTurns(e.query), e.userTurns);
  }
});

test('index rebuild and archive rebuild equal the reference; archive queries too', async (t) => {
  const ref = referenceDir(t);
  if (!ref) return;
  const fixture = path.join(ref, 'home');
  const home = homeWith(t, fixture, ['ledger.jsonl']);
  const ids = readFileSync(path.join(fixture, 'ledger.idx'), 'utf8').split('\n').filter(Boolean).length;
  assert.equal((await ledger.rebuildIndex()).ids, ids);
  for (const f of ['ledger.idx', 'ledger.content.idx']) {
    assert.ok(readFileSync(path.join(home, f)).equals(readFileSync(path.join(fixture, f))), `${f} differs`);
  }
  await ledger.rebuildArchive();
  const want = normaliseDump(load(fixture, 'archive-dump.json'));
  const got = dumpArchive(path.join(home, 'archive.sqlite'), Object.keys(want));
  for (const table of Object.keys(want)) {
    assert.equal(got[table].length, want[table].length, `${table}: row count`);
    got[table].forEach((row, i) => assert.deepEqual(row, want[table][i], `${table} row ${i}`));
  }
  for (const e of load(fixture, 'queries.json')) {
    same(`queryAllFromArchive ${JSON.stringify(e.query)}`, await ledger.queryAllFromArchive(e.query), e.archive);
  }
});

test("the reference's own archive answers through the package", async (t) => {
  const ref = referenceDir(t);
  if (!ref) return;
  const fixture = path.join(ref, 'home');
  homeWith(t, fixture, ['ledger.jsonl', 'archive.sqlite']);
  for (const e of load(fixture, 'queries.json')) {
    same(`queryAllFromArchive ${JSON.stringify(e.query)}`, await ledger.queryAllFromArchive(e.query), e.archive);
  }
  // The reference's build stopped before the torn last line.
  const [state] = load(fixture, 'archive-dump.json').archive_state;
  const size = readFileSync(path.join(fixture, 'ledger.jsonl')).length;
  const status = await ledger.getArchiveStatus();
  assert.equal(status.ledgerOffsetBytes, state.ledger_offset_bytes);
  assert.equal(status.ledgerSizeBytes, size);
  assert.equal(status.upToDate, state.ledger_offset_bytes === size);
});
