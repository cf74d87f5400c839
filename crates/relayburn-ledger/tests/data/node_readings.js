// Generates node_readings.tsv: how Node itself reads the fixture lines
// whose re-serialisation is not simply the line as written.
//
//   node node_readings.js <shared>/fixtures/reference > node_readings.tsv
//
// Each logical line is read the way the reference's readers do it:
// readline over a utf8 stream (crlfDelay Infinity), `trim()`, then
// `JSON.parse`; the output column is `JSON.stringify` of that value. The
// kind column applies the reference's line predicate (`v === 1` and a
// known `kind`). This file is a generator for test data only; the Rust
// tests never run it.
'use strict';
const fs = require('fs');
const path = require('path');
const { createInterface } = require('readline');

const KINDS = ['turn', 'stamp', 'compaction', 'relationship', 'tool_result_event', 'user_turn'];

async function logicalLines(file) {
  const rl = createInterface({
    input: fs.createReadStream(file, { encoding: 'utf8' }),
    crlfDelay: Infinity,
  });
  const out = [];
  for await (const l of rl) out.push(l);
  return out;
}

function reading(line) {
  const t = line.trim();
  if (!t) return { cls: 'blank', kind: '-', out: '' };
  let v;
  try {
    v = JSON.parse(t);
  } catch {
    return { cls: 'malformed', kind: '-', out: '' };
  }
  const kind =
    !!v && typeof v === 'object' && KINDS.includes(v.kind) && v.v === 1 ? v.kind : '-';
  return { cls: 'value', kind, out: JSON.stringify(v) };
}

// Physical line numbers of the expected ledger that a rawAppend step wrote.
function rawLineNumbers(ops, bytes) {
  const raw = new Set();
  const lineStarts = [0];
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 0x0a) lineStarts.push(i + 1);
  const lineOf = (off) => {
    let lo = 0;
    let hi = lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (lineStarts[mid] <= off) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  const writers = ops.filter((s) => /^append/.test(s.op));
  if (ops.some((s) => s.op === 'truncateLedger')) {
    // Only raw appends and truncation touch such a ledger: all of it is raw.
    if (writers.length) throw new Error('truncation mixed with writers');
    for (let i = 0; i + 1 < lineStarts.length; i++) raw.add(i);
    return raw;
  }
  for (const s of ops) {
    if (s.op !== 'rawAppend') continue;
    const t = Buffer.from(s.text, 'utf8');
    const at = bytes.indexOf(t);
    if (at < 0 || bytes.indexOf(t, at + 1) >= 0) throw new Error('raw text not found once');
    const first = lineOf(at);
    const last = lineOf(at + t.length - 1);
    for (let i = first; i <= last; i++) raw.add(i);
  }
  return raw;
}

async function main() {
  const ref = process.argv[2];
  const rows = [
    '# Produced by Node (not by this project) with node_readings.js from the',
    '# reference fixtures: how Node reads each listed logical line.',
    '# F <file> <logical lines>',
    '# L <file> <line no> <blank|malformed|value> <kind or -> <JSON.stringify output, = if the line itself>',
    `# node ${process.version}`,
  ];
  const emit = (...cols) => rows.push(cols.join('\t'));

  const home = 'home/ledger.jsonl';
  const homeLines = await logicalLines(path.join(ref, home));
  emit('F', home, homeLines.length);
  homeLines.forEach((l, i) => {
    const r = reading(l);
    if (r.cls !== 'value' || r.out !== l) emit('L', home, i, r.cls, r.kind, r.out);
  });

  for (const c of fs.readdirSync(path.join(ref, 'ops')).sort()) {
    const ops = JSON.parse(fs.readFileSync(path.join(ref, 'ops', c, 'ops.json'), 'utf8'));
    if (!ops.some((s) => s.op === 'rawAppend')) continue;
    const rel = `ops/${c}/expected/ledger.jsonl`;
    const file = path.join(ref, rel);
    const bytes = fs.readFileSync(file);
    if (bytes.includes(0x0d)) throw new Error('CR in ops ledger');
    const lines = await logicalLines(file);
    emit('F', rel, lines.length);
    const raw = rawLineNumbers(ops, bytes);
    lines.forEach((l, i) => {
      if (!raw.has(i)) return;
      const r = reading(l);
      // `=`: Node writes the line back exactly as it is.
      emit('L', rel, i, r.cls, r.kind, r.cls === 'value' && r.out === l ? '=' : r.out);
    });
  }
  process.stdout.write(rows.join('\n') + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
