// Generates utf8_lossy.tsv: byte strings with invalid UTF-8 and the text
// Node's readers make of them (a utf8 read stream into readline), as code
// points in hex. Each byte string is one line of a single file, so the
// decoder sees them as a stream, exactly as a ledger is read.
//
//   node utf8_lossy.js > utf8_lossy.tsv
//
// Deterministic (a fixed xorshift seed). Test data only; the Rust tests
// never run Node.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { createInterface } = require('readline');

let state = 0x2545f4914f6cdd1dn;
const MASK = (1n << 64n) - 1n;
function rand(n) {
  state ^= (state << 13n) & MASK;
  state ^= state >> 7n;
  state ^= (state << 17n) & MASK;
  return Number(state % BigInt(n));
}
const pieces = [
  () => [0x61 + rand(26)],
  () => [0x80 + rand(0x40)],
  () => [0xc0 + rand(0x40)],
  () => [0xc2 + rand(30), 0x80 + rand(0x40)],
  () => [0xe0 + rand(16), 0x80 + rand(0x40), 0x80 + rand(0x40)],
  () => [0xe0 + rand(16), 0x80 + rand(0x40)],
  () => [0xed, 0xa0 + rand(0x20), 0x80 + rand(0x40)],
  () => [0xf0 + rand(8), 0x80 + rand(0x40), 0x80 + rand(0x40), 0x80 + rand(0x40)],
  () => [0xf0 + rand(5), 0x80 + rand(0x40), 0x80 + rand(0x40)],
  () => [0xf5 + rand(11)],
  () => [0xef, 0xbb, 0xbf],
];
const lines = [];
for (let i = 0; i < 600; i++) {
  const bytes = [];
  const n = 1 + rand(6);
  for (let j = 0; j < n; j++) bytes.push(...pieces[rand(pieces.length)]());
  lines.push(Buffer.from(bytes));
}
const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'lossy-')), 'lines');
fs.writeFileSync(file, Buffer.concat(lines.flatMap((l) => [l, Buffer.from('\n')])));
(async () => {
  const rl = createInterface({
    input: fs.createReadStream(file, { encoding: 'utf8' }),
    crlfDelay: Infinity,
  });
  const out = [
    '# Produced by Node (not by this project) with utf8_lossy.js:',
    '# <line bytes in hex> <code points of what Node read, hex, space-separated>',
    `# node ${process.version}`,
  ];
  let i = 0;
  for await (const l of rl) {
    const cps = [...l].map((c) => c.codePointAt(0).toString(16)).join(' ');
    out.push(`${lines[i].toString('hex')}\t${cps}`);
    i++;
  }
  if (i !== lines.length) throw new Error('line count');
  process.stdout.write(out.join('\n') + '\n');
})();
