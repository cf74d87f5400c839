// Generates number_strings.tsv: doubles (as IEEE-754 bit patterns) and the
// text Node gives them with `String(x)` (Number#toString), which is also
// what JSON.stringify writes for finite numbers.
//
//   node number_strings.js > number_strings.tsv
//
// Deterministic (a fixed xorshift seed). Test data only; the Rust tests
// never run Node.
'use strict';
let state = 0x9e3779b97f4a7c15n;
const MASK = (1n << 64n) - 1n;
function next() {
  state ^= (state << 13n) & MASK;
  state ^= state >> 7n;
  state ^= (state << 17n) & MASK;
  return state;
}
const buf = new DataView(new ArrayBuffer(8));
const fromBits = (b) => {
  buf.setBigUint64(0, b);
  return buf.getFloat64(0);
};
const toBits = (x) => {
  buf.setFloat64(0, x);
  return buf.getBigUint64(0);
};
const out = [
  '# Produced by Node (not by this project) with number_strings.js:',
  '# <bits as 16 hex digits> <String(x)>',
  `# node ${process.version}`,
];
const seen = new Set();
const add = (x) => {
  if (!Number.isFinite(x)) return;
  const bits = toBits(x);
  if (seen.has(bits)) return;
  seen.add(bits);
  out.push(`${bits.toString(16).padStart(16, '0')}\t${String(x)}`);
};
// Hand-picked edges.
for (const x of [0, -0, 1, -1, 0.1, 0.2, 0.3, 1.5, 1e21, 1e21 - 65536, 999999999999999900000, 1e-7,
  1e-6, 0.000001234, 1.7976931348623157e308, 5e-324, 2.2250738585072014e-308, 2 ** 53, 2 ** 53 + 2,
  123456789012345680, 1e15, 1e15 + 0.5, 1e16, 4.35, 0.000123, 100, 1e100, 1.2345e-300]) add(x);
// Random bit patterns (all magnitudes, subnormals included).
for (let i = 0; i < 1500; i++) add(fromBits(next()));
// Random "human" decimals: few digits, moderate exponents.
for (let i = 0; i < 1000; i++) {
  const digits = Number(next() % 100000n);
  const exp = Number(next() % 50n) - 25;
  add(Number(`${digits}e${exp}`));
  add(-Number(`${digits}e${exp}`));
}
// Around the exponent-notation switch points.
for (let e = -9; e <= 23; e++) {
  for (const m of [1, 1.5, 9.999999999999999, 1.0000000000000002]) add(m * 10 ** e);
}
// Integers of every size up to 2^63.
for (let i = 0; i < 300; i++) add(Number(next() >> BigInt(Number(next() % 64n))));
process.stdout.write(out.join('\n') + '\n');
