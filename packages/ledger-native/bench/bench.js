// The cost of the binding: the same work through this package and without
// it, in one run, alternating so both see the same machine.
//
//   node bench/bench.js rebuild --home DIR [--reps 3]
//     rebuildArchive() in this process vs `burn state rebuild archive --full`
//     (the same library behind a command line) on the home DIR.
//   node bench/bench.js append --home DIR [--batches 300]
//     100-turn appendTurns batches of fresh turns vs the library's own
//     append benchmark (`relayburn-bench run append --batches 100`) on the
//     same home. Prepare DIR with `relayburn-bench run append --home DIR
//     --ids 1000000` (a ledger whose index holds 1 M ids).
//
// Binaries are taken from ../../target/release (build them with
// `cargo build --release -p relayburn-cli -p relayburn-bench`).
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const bin = (name) => path.join(process.env.CARGO_TARGET_DIR ?? path.join(root, 'target'), 'release', name);

const [mode, ...rest] = process.argv.slice(2);
const opts = {};
for (let i = 0; i < rest.length; i += 2) opts[rest[i].replace(/^--/, '')] = rest[i + 1];
if (!opts.home || !['rebuild', 'append'].includes(mode)) {
  console.error('usage: node bench/bench.js rebuild|append --home DIR [--reps N] [--batches N]');
  process.exit(2);
}
const home = path.resolve(opts.home);
process.env.RELAYBURN_HOME = home;
const ledger = await import('../index.js');

const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
const ms = (x) => `${x.toFixed(x < 10 ? 3 : 1)} ms`;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];
// CPU seconds of this process, and of its waited-for children, from /proc.
const cpuSelf = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
};
const cpuChildren = () => {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 16 and 17 (cutime, cstime) in clock ticks of 10 ms.
  return (Number(f[13]) + Number(f[14])) * 10;
};
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

console.log(`## ledger-native: ${mode}\n`);
console.log('```sh');
console.log(`node bench/bench.js ${process.argv.slice(2).join(' ')}`);
console.log('```\n');
console.log(`- node ${process.version}; home ${path.basename(home)}: ledger.jsonl of ${statSync(path.join(home, 'ledger.jsonl')).size} bytes`);

if (mode === 'rebuild') {
  const reps = Number(opts.reps ?? 3);
  const pkg = [];
  const cli = [];
  const pkgCpu = [];
  const cliCpu = [];
  let applied;
  console.log('\n| run | package wall | `burn` wall | package CPU | `burn` CPU | load average before |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (let i = 0; i < reps; i++) {
    const l = load();
    let c = cpuSelf();
    let t = performance.now();
    const r = await ledger.rebuildArchive();
    pkg.push(performance.now() - t);
    pkgCpu.push(cpuSelf() - c);
    c = cpuChildren();
    t = performance.now();
    execFileSync(bin('burn'), ['--home', home, '--quiet', 'state', 'rebuild', 'archive', '--full'], {
      stdio: 'ignore',
    });
    cli.push(performance.now() - t);
    cliCpu.push(cpuChildren() - c);
    applied = `${r.turnsApplied} turns, ${r.scannedBytes} bytes`;
    console.log(`| ${i + 1} | ${ms(pkg[i])} | ${ms(cli[i])} | ${ms(pkgCpu[i])} | ${ms(cliCpu[i])} | ${l} |`);
  }
  console.log(`\n- each rebuild applied ${applied}`);
  const ratio = median(pkg) / median(cli);
  console.log(`- median: package ${ms(median(pkg))}, burn ${ms(median(cli))} → **${ratio.toFixed(3)} ×**`);
  console.log(`- CPU median: package ${ms(median(pkgCpu))}, burn ${ms(median(cliCpu))} → **${(median(pkgCpu) / median(cliCpu)).toFixed(3)} ×**`);
  console.log(`- best: package ${ms(Math.min(...pkg))}, burn ${ms(Math.min(...cli))} → ${(Math.min(...pkg) / Math.min(...cli)).toFixed(3)} ×`);
} else {
  const batches = Number(opts.batches ?? 300);
  // Realistic turns: the first turn lines of the ledger, made fresh (new
  // messageId, ts and usage, so neither the id nor the content fingerprint
  // is known).
  const sample = [];
  const text = readFileSync(path.join(home, 'ledger.jsonl'), 'utf8').slice(0, 4 << 20);
  for (const line of text.split('\n')) {
    if (!line.startsWith('{"v":1,"kind":"turn"')) continue;
    try {
      sample.push(JSON.parse(line).record);
    } catch {
      // a line cut by the slice
    }
    if (sample.length === 1000) break;
  }
  let n = 0;
  const fresh = () => {
    const t = structuredClone(sample[n % sample.length]);
    n++;
    t.messageId = `node-bench-${process.pid}-${Date.now()}-${n}`;
    t.ts = new Date(Date.UTC(2030, 0, 1) + n * 1000).toISOString();
    t.usage.input = n;
    return t;
  };
  // The library alone on the same home, before and after the package.
  const library = () => {
    const out = execFileSync(
      bin('relayburn-bench'),
      ['run', 'append', '--home', home, '--batches', '100', '--first-calls', '1'],
      { encoding: 'utf8' },
    );
    const find = (what) => out.split('\n').find((x) => x.includes(what));
    const row = find('batches of 100');
    const dupRow = find('all duplicates');
    const p50 = /p50 ([\d.]+) (µs|ms)/.exec(row ?? '');
    const mn = /mean ([\d.]+) (µs|ms)/.exec(row ?? '');
    if (!p50 || !mn || !dupRow) throw new Error(`unexpected relayburn-bench output:\n${out}`);
    const toMs = (m) => Number(m[1]) / (m[2] === 'µs' ? 1000 : 1);
    return { row: row.split('|')[2].trim(), dupRow: dupRow.split('|')[2].trim(), p50: toMs(p50), mean: toMs(mn) };
  };
  const libBefore = library();
  const lines = () => {
    const buf = readFileSync(path.join(home, 'ledger.jsonl'));
    let n = 0;
    for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, i + 1)) n++;
    return n;
  };
  const before = lines();
  const l0 = load();
  let t = performance.now();
  await ledger.appendTurns(Array.from({ length: 100 }, fresh));
  const first = performance.now() - t;
  // Made before timing: building records in JavaScript leaves garbage
  // whose collection would land in the timed calls, a cost of making the
  // records, not of the binding (the library's benchmark builds its own
  // outside the timing too).
  const prepared = Array.from({ length: batches }, () => Array.from({ length: 100 }, fresh));
  const times = [];
  for (const batch of prepared) {
    t = performance.now();
    await ledger.appendTurns(batch);
    times.push(performance.now() - t);
  }
  // The share of the caller's JSON.stringify, measured on batches alike.
  const stringify = [];
  for (let i = 0; i < batches; i++) {
    const batch = Array.from({ length: 100 }, fresh);
    t = performance.now();
    JSON.stringify(batch);
    stringify.push(performance.now() - t);
  }
  // A batch the index already holds: parse, hash and look up, no write.
  const dupBatch = Array.from({ length: 100 }, fresh);
  await ledger.appendTurns(dupBatch);
  const dups = [];
  for (let i = 0; i < 100; i++) {
    t = performance.now();
    await ledger.appendTurns(dupBatch);
    dups.push(performance.now() - t);
  }
  const appended = lines() - before;
  const libAfter = library();
  const roundTrip = [];
  for (let i = 0; i < 100; i++) {
    t = performance.now();
    await ledger.appendTurns([]);
    roundTrip.push(performance.now() - t);
  }
  if (appended !== 100 * (batches + 2)) {
    throw new Error(`expected ${100 * (batches + 2)} new lines, found ${appended}`);
  }
  console.log(`- ${sample.length} sample turns from the ledger, mean line ${Math.round(text.length / text.split('\n').length)} bytes of ledger; all ${appended} appended (none deduplicated)`);
  console.log(`- load average before: ${l0}\n`);
  console.log('| figure | value |');
  console.log('| --- | --- |');
  console.log(`| package: first call (index load + 100 turns) | ${ms(first)} |`);
  console.log(`| package: batches of 100 | p50 ${ms(median(times))} · p99 ${ms(pct(times, 99))} · mean ${ms(mean(times))} (n = ${batches}) |`);
  console.log(`| package: 100 turns that are all duplicates | p50 ${ms(median(dups))} · mean ${ms(mean(dups))} (n = 100) |`);
  console.log(`| package: an empty batch (the round trip) | p50 ${ms(median(roundTrip))} (n = 100) |`);
  console.log(`| of which the caller's JSON.stringify of the batch | p50 ${ms(median(stringify))} · mean ${ms(mean(stringify))} |`);
  for (const [when, r] of [['before', libBefore], ['after', libAfter]]) {
    console.log(`| library, ${when} (relayburn-bench run append --batches 100) | ${r.row} |`);
    console.log(`| library, ${when}: 100 turns that are all duplicates | ${r.dupRow} |`);
  }
  const libP50 = (libBefore.p50 + libAfter.p50) / 2;
  const libMean = (libBefore.mean + libAfter.mean) / 2;
  console.log(`\n- p50: package ${ms(median(times))} vs library ${ms(libP50)} (mean of the two runs) → **${(median(times) / libP50).toFixed(3)} ×**`);
  console.log(`- mean: package ${ms(mean(times))} vs library ${ms(libMean)} → ${(mean(times) / libMean).toFixed(3)} ×`);
}
