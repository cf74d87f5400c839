// A dependency-free Node peer for the cross-implementation lock tests.
//
// It follows the lock protocol of SPEC §3 the way the TypeScript ledger
// does: exclusive create with flag 'wx' (an empty file), on EEXIST a stat;
// an mtime older than the stale window is unlinked and the create retried
// at once; otherwise 20 ms sleeps for 50 rounds, then 250 ms for 40, then
// failure. Release is a plain unlink. It never reads the file's content.
//
// Modes (every event goes to stdout as "<event> <Date.now()> ..."):
//   hold <lock> <ms>                  acquire, hold <ms>, release
//   acquire-once <lock>               acquire, release at once
//   leave-stale <lock> <age-ms>       acquire, backdate the mtime, exit
//                                     without releasing (a crashed holder)
//   increment <lock> <counter> <n>    n times: under the lock, add 1 to the
//                                     number in <counter>

import { open, readFile, stat, unlink, utimes, writeFile } from 'node:fs/promises';

const FAST_DELAY = 20;
const FAST_ROUNDS = 50;
const SLOW_DELAY = 250;
const SLOW_ROUNDS = 40;
const STALE = 5_000;

const pause = (ms) => new Promise((done) => setTimeout(done, ms));
const say = (event, ...rest) => console.log([event, Date.now(), ...rest].join(' '));

async function take(lock) {
  let why = 'held by live process';
  const rounds = FAST_ROUNDS + SLOW_ROUNDS;
  for (let round = 0; round < rounds; round++) {
    try {
      const fh = await open(lock, 'wx');
      await fh.close();
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    let info = null;
    try {
      info = await stat(lock);
    } catch {
      info = null;
    }
    if (info !== null && Date.now() - info.mtimeMs > STALE) {
      try {
        await unlink(lock);
        continue;
      } catch (err) {
        if (err.code === 'ENOENT') continue;
        why = 'lock appears stale but unlink kept failing';
      }
    } else {
      why = 'held by live process';
    }
    await pause(round < FAST_ROUNDS ? FAST_DELAY : SLOW_DELAY);
  }
  const e = new Error(`could not acquire lock after ${rounds} attempts - ${why}: ${lock}`);
  e.code = 'ELOCKTIMEOUT';
  throw e;
}

async function give(lock) {
  try {
    await unlink(lock);
  } catch {
    // an orphan goes stale by itself
  }
}

async function main(argv) {
  const [mode, lock, ...rest] = argv;
  switch (mode) {
    case 'hold': {
      const ms = Number(rest[0]);
      const start = Date.now();
      await take(lock);
      say('acquired', 'waited', Date.now() - start);
      await pause(ms);
      say('releasing');
      await give(lock);
      say('released');
      return;
    }
    case 'acquire-once': {
      say('trying');
      const start = Date.now();
      await take(lock);
      say('acquired', 'waited', Date.now() - start);
      say('releasing');
      await give(lock);
      say('released');
      return;
    }
    case 'leave-stale': {
      const age = Number(rest[0]);
      await take(lock);
      const then = new Date(Date.now() - age);
      await utimes(lock, then, then);
      say('left');
      return;
    }
    case 'increment': {
      const [counter, times] = rest;
      for (let i = 0; i < Number(times); i++) {
        await take(lock);
        try {
          let n = 0;
          try {
            n = Number((await readFile(counter, 'utf8')).trim() || '0');
          } catch (err) {
            if (err.code !== 'ENOENT') throw err;
          }
          await writeFile(counter, `${n + 1}\n`);
        } finally {
          await give(lock);
        }
      }
      say('done');
      return;
    }
    default:
      throw new Error(`unknown mode ${mode}`);
  }
}

main(process.argv.slice(2)).catch((err) => {
  if (err.code === 'ELOCKTIMEOUT') {
    say('timeout', err.message);
    process.exit(2);
  }
  console.error(err);
  process.exit(1);
});
