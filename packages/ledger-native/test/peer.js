// A second process using the package, for the cross-process lock tests.
// Usage: node peer.js increment <counter-file> <n>
//   n times, under withLock('counter'): read the number in the file, write it + 1.
// Usage: node peer.js hold <lock> <ms>
//   take the lock, print "acquired", hold it <ms>, release, print "released".
import { readFile, writeFile } from 'node:fs/promises';

import { withLock } from '../index.js';

const [mode, arg, count] = process.argv.slice(2);
const pause = (ms) => new Promise((done) => setTimeout(done, ms));

if (mode === 'increment') {
  for (let i = 0; i < Number(count); i++) {
    await withLock('counter', async () => {
      const n = Number((await readFile(arg, 'utf8').catch(() => '0')) || '0');
      // Give a racing writer every chance to interleave.
      await pause(1);
      await writeFile(arg, String(n + 1));
    });
  }
} else if (mode === 'hold') {
  await withLock(arg, async () => {
    console.log(`acquired ${Date.now()}`);
    await pause(Number(count));
  });
  console.log(`released ${Date.now()}`);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
