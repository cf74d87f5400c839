// Node's answers for the conversions of src/js.rs. Reads a file of JSON
// values, one per line, and prints for each a JSON array:
// [Number(v) ("-0" for negative zero), Boolean(v), String(v), v.length > 0
// (null when v is null)].
import { readFileSync } from 'node:fs';

const lines = readFileSync(process.argv[2], 'utf8').split('\n').filter((l) => l.length > 0);
const out = [];
for (const line of lines) {
  const v = JSON.parse(line);
  const n = Number(v);
  out.push(
    JSON.stringify([
      Object.is(n, -0) ? '-0' : String(n),
      Boolean(v),
      String(v),
      v === null ? null : v.length > 0,
    ]),
  );
}
process.stdout.write(out.join('\n') + '\n');
