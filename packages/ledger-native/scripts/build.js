// Builds the addon with cargo and puts it beside index.js. Nothing is
// downloaded: the Rust crate needs no Node headers.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const root = path.resolve(pkg, '../..');
const profile = process.env.RELAYBURN_NODE_PROFILE ?? 'release';
const args = ['build', '-p', 'relayburn-node', '--profile', profile];
const r = spawnSync('cargo', args, { cwd: root, stdio: 'inherit' });
if (r.error) {
  console.error(`cannot run cargo: ${r.error.message}`);
  process.exit(1);
}
if (r.status !== 0) process.exit(r.status ?? 1);

const targetDir = process.env.CARGO_TARGET_DIR
  ? path.resolve(root, process.env.CARGO_TARGET_DIR)
  : path.join(root, 'target');
const dir = path.join(targetDir, profile === 'dev' ? 'debug' : profile);
const lib = { darwin: 'librelayburn_node.dylib', win32: 'relayburn_node.dll' }[process.platform]
  ?? 'librelayburn_node.so';
const from = path.join(dir, lib);
if (!existsSync(from)) {
  console.error(`cargo reported success but ${from} is missing`);
  process.exit(1);
}
copyFileSync(from, path.join(pkg, 'relayburn_ledger.node'));
console.log(`built ${path.join(pkg, 'relayburn_ledger.node')}`);
