// The public API of @relayburn/ledger 1.10.0, backed by the relayburn-ledger
// Rust library running in this process. Records cross into the addon as
// JSON.stringify text and come back through JSON.parse, so every number,
// key order and lone surrogate is what the TypeScript package would give.
// Every call that touches the disk runs off the JavaScript thread.

import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import * as path from 'node:path';

const native = createRequire(import.meta.url)('./relayburn_ledger.node');

// ---------------------------------------------------------------- paths

export function ledgerHome() {
  const env = process.env['RELAYBURN_HOME'];
  if (env && env.length > 0) return env;
  return path.join(homedir(), '.relayburn');
}

const inHome = (name) => () => path.join(ledgerHome(), name);
export const ledgerPath = inHome('ledger.jsonl');
export const hwmPath = inHome('hwm.json');
export const cursorsPath = inHome('cursors.json');
export const ledgerIndexPath = inHome('ledger.idx');
export const ledgerContentIndexPath = inHome('ledger.content.idx');
export const pricingOverridePath = inHome('models.dev.json');
export const configPath = inHome('config.json');
export const archivePath = inHome('archive.sqlite');
export const contentDir = inHome('content');

export function lockPath(name) {
  return path.join(ledgerHome(), `${name}.lock`);
}

export function sqlitePath() {
  const env = process.env['RELAYBURN_SQLITE_PATH'];
  if (env && env.length > 0) return env;
  return path.join(ledgerHome(), 'burn.sqlite');
}

const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function isValidSessionId(sessionId) {
  if (sessionId.length === 0 || sessionId.length > 128) return false;
  if (sessionId === '.' || sessionId === '..') return false;
  return SESSION_ID.test(sessionId);
}

export function contentFilePath(sessionId) {
  if (!isValidSessionId(sessionId)) {
    throw new Error(`invalid sessionId for content path: ${JSON.stringify(sessionId)}`);
  }
  return path.join(contentDir(), `${sessionId}.jsonl`);
}

// -------------------------------------------------------------- storage

const STORAGE_KINDS = ['file', 'sqlite', 'postgres', 'http'];
let storage;

function storageKind() {
  const raw = process.env['RELAYBURN_STORAGE'] ?? 'file';
  if (!STORAGE_KINDS.includes(raw)) {
    throw new Error(
      `unsupported RELAYBURN_STORAGE=${JSON.stringify(raw)} ` +
        '(expected file, sqlite, postgres, or http)',
    );
  }
  return raw;
}

// The storage backend, chosen once per process on first use as the
// reference chooses its adapter: file storage follows RELAYBURN_HOME at
// every call, the SQLite store's path is fixed when it is chosen.
function selected() {
  if (storage === undefined) {
    const kind = storageKind();
    if (kind !== 'file' && kind !== 'sqlite') {
      throw new Error(`RELAYBURN_STORAGE=${kind} is not supported in this build`);
    }
    storage = kind === 'sqlite' ? { kind, sqlitePath: sqlitePath() } : { kind };
  }
  return storage;
}

// Choose the storage again from the environment at the next call (the
// reference's adapter factory has the same hook for its tests).
export function __resetStorageForTesting() {
  storage = undefined;
  native.closeSqliteStores();
}

// Where a call goes, as the addon takes it.
function target() {
  const s = selected();
  return { home: ledgerHome(), storage: s.kind, sqlitePath: s.sqlitePath };
}

// What names a lock: the lockfile for file storage, the store for SQLite.
function lockKey(t, name) {
  return t.storage === 'sqlite' ? `sqlite:${t.sqlitePath}\0${name}` : path.join(t.home, `${name}.lock`);
}

// ---------------------------------------------------------------- locks

// Lock keys held by the current async context (re-entrancy).
const heldLocks = new AsyncLocalStorage();

// Lock key → lock name, for every lock this process has taken.
const lockNames = new Map();

// Names of the target's locks that the current context holds; the addon
// lets nested calls re-enter them instead of waiting on our own lock.
function held(t) {
  const out = [];
  for (const key of heldLocks.getStore() ?? []) {
    const name = lockNames.get(key);
    if (name !== undefined && lockKey(t, name) === key) out.push(name);
  }
  return out;
}

// Held on the selected storage's lock (a lockfile, or a row of the SQLite
// store's `locks`), re-entrant within one async context.
export async function withLock(name, fn) {
  const t = target();
  const key = lockKey(t, String(name));
  const current = heldLocks.getStore();
  if (current?.has(key)) return fn();
  const id = JSON.parse(await native.acquireLock(t, String(name)));
  lockNames.set(key, String(name));
  const next = new Set(current ?? []);
  next.add(key);
  try {
    return await heldLocks.run(next, fn);
  } finally {
    native.releaseLock(id);
  }
}

// Run `call(target, heldNames)` on the selected storage and parse its
// JSON answer.
async function run(call) {
  const t = target();
  return JSON.parse(await call(t, held(t)));
}

// Run `call(home, heldNames)` on the home's files (whatever the storage:
// hwm, cursors, config, the index sidecars and the archive are files).
async function runFiles(call) {
  const t = target();
  return JSON.parse(await call(t.home, held(t)));
}

function list(value, what) {
  if (!Array.isArray(value)) throw new TypeError(`${what} is not an array`);
  return JSON.stringify(value);
}

// -------------------------------------------------------------- writers

const appender = (kind, what) => async (records) => {
  const text = list(records, what);
  const warnings = await run((t, h) => native.append(t, kind, text, h));
  for (const w of warnings) process.stderr.write(`${w}\n`);
};

export const appendTurns = appender('turn', 'turns');
export const appendCompactions = appender('compaction', 'events');
export const appendRelationships = appender('relationship', 'records');
export const appendToolResultEvents = appender('tool_result_event', 'records');
export const appendUserTurns = appender('user_turn', 'records');
export const appendContent = appender('content', 'records');

export async function stamp(selector, enrichment) {
  if (
    selector.sessionId === undefined &&
    selector.messageId === undefined &&
    selector.range === undefined
  ) {
    throw new Error('stamp requires at least one selector field (sessionId, messageId, or range)');
  }
  const s = JSON.stringify(selector);
  const e = JSON.stringify(enrichment);
  await run((t, h) => native.stamp(t, s, e, h));
}

// Append a stamp line exactly as given, its `ts` included (what the
// reference's storage adapter does under `stamp`); for replaying scripts.
export async function __appendStampLineForTesting(line) {
  const text = JSON.stringify(line);
  await run((t, h) => native.appendStampLine(t, text, h));
}

// -------------------------------------------------------------- queries

const BATCH_BYTES = 1 << 20;

// Cursors of iterators dropped unfinished and then collected: close them.
const orphans = new FinalizationRegistry((box) => {
  if (box.id !== undefined) native.closeQuery(box.id);
});

async function* cursor(kind, q, box) {
  const t = target();
  const text = JSON.stringify(q);
  box.id = JSON.parse(await native.openQuery(t, kind, text));
  try {
    for (;;) {
      const batch = JSON.parse(await native.nextBatch(box.id, BATCH_BYTES));
      if (batch.length === 0) return;
      yield* batch;
    }
  } finally {
    // Exhausted (a no-op then) or left early: the cursor is closed.
    native.closeQuery(box.id);
    box.id = undefined;
  }
}

function records(kind, q) {
  const box = { id: undefined };
  const it = cursor(kind, q, box);
  orphans.register(it, box);
  return it;
}

async function collect(items) {
  const out = [];
  for await (const item of items) out.push(item);
  return out;
}

export async function* query(q = {}) {
  yield* records('turns', q);
}

export const queryAll = async (q = {}) => collect(records('turns', q));
export const queryCompactions = async (q = {}) => collect(records('compactions', q));
export const queryRelationships = async (q = {}) => collect(records('relationships', q));
export const queryToolResultEvents = async (q = {}) => collect(records('toolResultEvents', q));
export const queryUserTurns = async (q = {}) => collect(records('userTurns', q));

// -------------------------------------------------------------- archive

export const ARCHIVE_VERSION = 3;

function archiveStorage() {
  const raw = process.env['RELAYBURN_STORAGE'] ?? 'file';
  if (raw !== 'file') {
    const kind = STORAGE_KINDS.includes(raw) ? raw : JSON.stringify(raw);
    throw new Error(`archive operations require RELAYBURN_STORAGE=file (got ${kind})`);
  }
}

export async function buildArchive() {
  archiveStorage();
  return runFiles((home, h) => native.buildArchive(home, h));
}

export async function rebuildArchive() {
  archiveStorage();
  return runFiles((home, h) => native.rebuildArchive(home, h));
}

export async function vacuumArchive() {
  archiveStorage();
  return runFiles((home, h) => native.vacuumArchive(home, h));
}

export async function getArchiveStatus() {
  archiveStorage();
  return runFiles((home) => native.archiveStatus(home));
}

export async function archiveAvailable() {
  return runFiles((home) => native.archiveAvailable(home));
}

export async function queryAllFromArchive(q = {}) {
  archiveStorage();
  const text = JSON.stringify(q);
  return runFiles((home) => native.queryArchive(home, text, true));
}

export async function queryTurnsFromArchive(q = {}) {
  archiveStorage();
  const text = JSON.stringify(q);
  return runFiles((home) => native.queryArchive(home, text, false));
}

// -------------------------------------------------------------- content

export async function readContent(selector) {
  contentFilePath(selector.sessionId);
  const sid = selector.sessionId;
  const mid = selector.messageId === undefined ? null : String(selector.messageId);
  return run((t) => native.readContent(t, sid, mid));
}

export async function listContentSessionIds() {
  return new Set(await run((t) => native.listContentSessionIds(t)));
}

export async function pruneContent(options) {
  const { olderThanMs, isRecoverable } = options;
  if (typeof olderThanMs !== 'number' || Number.isNaN(olderThanMs)) {
    throw new TypeError('pruneContent: olderThanMs must be a number');
  }
  // The predicate is JavaScript: ask it up front about every sidecar old
  // enough to go, then let the addon prune under the per-session locks.
  let judged = null;
  const recoverable = [];
  if (isRecoverable) {
    judged = await run((t) => native.pruneCandidates(t, olderThanMs));
    for (const sessionId of judged) {
      try {
        if (await isRecoverable(sessionId)) recoverable.push(sessionId);
      } catch {
        // A failing predicate means "not recoverable", as in the reference.
      }
    }
  }
  return run((t, h) => native.pruneContent(t, olderThanMs, judged, recoverable, h));
}

// ------------------------------------------------ index, config, state

// The reference takes this lock through its storage adapter: under
// SQLite storage it is a row of `locks`, so it is taken here that way and
// the addon re-enters it.
export async function rebuildIndex() {
  return withLock('ledger-index', () => runFiles((home, h) => native.rebuildIndex(home, h)));
}

export function invalidateIndexCache() {
  native.invalidateIndexCache();
}

export const __resetIndexCacheForTesting = invalidateIndexCache;

export const DEFAULT_CONFIG = { content: { store: 'full', retentionDays: 90 } };

export async function loadConfig() {
  const store = process.env['RELAYBURN_CONTENT_STORE'] ?? null;
  const ttl = process.env['RELAYBURN_CONTENT_TTL_DAYS'] ?? null;
  const { config, warnings } = await runFiles((home) => native.loadConfig(home, store, ttl));
  for (const w of warnings) process.stderr.write(`${w}\n`);
  return config;
}

export function retentionMs(r) {
  if (r === 'forever') return null;
  return r * 24 * 60 * 60 * 1000;
}

export async function loadHwm() {
  return runFiles((home) => native.loadHwm(home));
}

export async function saveHwm(map) {
  const text = JSON.stringify(map);
  await runFiles((home) => native.saveHwm(home, text));
}

export async function loadCursors() {
  return runFiles((home) => native.loadCursors(home));
}

export async function saveCursors(map) {
  const text = JSON.stringify(map);
  await withLock('cursors', () => runFiles((home, h) => native.saveCursors(home, text, h)));
}

export async function saveCursorChanges(before, after) {
  const b = JSON.stringify(before);
  const a = JSON.stringify(after);
  await withLock('cursors', () =>
    runFiles((home, h) => native.saveCursorChanges(home, b, a, h)),
  );
}

export async function updateCursors(mutate) {
  await withLock('cursors', async () => {
    const map = await loadCursors();
    await mutate(map);
    await saveCursors(map);
  });
}

// --------------------------------------------------------------- schema

const isLine = (kind) => (line) =>
  !!line && typeof line === 'object' && line.kind === kind && line.v === 1;

export const isTurnLine = isLine('turn');
export const isStampLine = isLine('stamp');
export const isCompactionLine = isLine('compaction');
export const isSessionRelationshipLine = isLine('relationship');
export const isToolResultEventLine = isLine('tool_result_event');
export const isUserTurnLine = isLine('user_turn');

export function stampMatches(stamp, turn) {
  const { sessionId, messageId, range } = stamp.selector;
  // A selector with no field matches nothing.
  if (sessionId === undefined && messageId === undefined && range === undefined) return false;
  if (sessionId !== undefined && sessionId !== turn.sessionId) return false;
  if (messageId !== undefined && messageId !== turn.messageId) return false;
  if (range?.fromTs && turn.ts < range.fromTs) return false;
  return !(range?.toTs && turn.ts > range.toTs);
}
