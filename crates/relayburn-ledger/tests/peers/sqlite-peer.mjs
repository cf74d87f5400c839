// A dependency-free Node 22 peer for the cross-implementation tests of the
// SQLite store (`burn.sqlite`). It uses the built-in `node:sqlite` the way
// the TypeScript ledger's SQLite backend does:
//
// - pragmas: WAL, foreign keys, synchronous NORMAL, busy_timeout 30 s;
// - a named lock is a row of `locks`: under BEGIN IMMEDIATE, a row younger
//   than 5,000 ms means "busy" (retry: 20 ms x 50, then 250 ms x 40), an
//   older one is deleted and taken; release deletes the row;
// - turns are appended in one BEGIN IMMEDIATE transaction per batch, with
//   INSERT OR IGNORE on the id hash, skipping a content fingerprint found
//   among the last 10,000 rows of `turns` by rowid.
//
// The store must already exist (the Rust side creates it).
//
// Modes (every event goes to stdout as "<event> <Date.now()> ..."):
//   hold <db> <lock> <ms>             say "trying", acquire, hold, release
//   acquire-once <db> <lock>          say "trying", acquire, release at once
//   leave-stale <db> <lock> <age-ms>  insert a row acquired <age-ms> ago, exit
//   append <db> <turns.json> <from> <to> <batch>
//                                     say "opened" once connected, then
//                                     append turns[from..to) in batches

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';

const STALE = 5_000;
const FAST_DELAY = 20;
const FAST_ROUNDS = 50;
const SLOW_DELAY = 250;
const SLOW_ROUNDS = 40;
const WINDOW = 10_000;

const say = (event, ...rest) => console.log([event, Date.now(), ...rest].join(' '));
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const sha16 = (s) => createHash('sha256').update(s).digest('hex').slice(0, 16);

function openDb(path) {
  const db = new DatabaseSync(path);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('PRAGMA foreign_keys = ON');
  db.exec('PRAGMA synchronous = NORMAL');
  db.exec('PRAGMA busy_timeout = 30000');
  return db;
}

function tryOnce(db, name) {
  const now = Date.now();
  db.exec('BEGIN IMMEDIATE');
  try {
    const row = db.prepare('SELECT acquired_at_ms FROM locks WHERE name = ?').get(name);
    if (row && now - Number(row.acquired_at_ms) < STALE) {
      db.exec('ROLLBACK');
      return false;
    }
    if (row) db.prepare('DELETE FROM locks WHERE name = ?').run(name);
    db.prepare('INSERT INTO locks (name, acquired_at_ms, pid) VALUES (?, ?, ?)').run(
      name,
      now,
      process.pid,
    );
    db.exec('COMMIT');
    return true;
  } catch (err) {
    try {
      db.exec('ROLLBACK');
    } catch {}
    if (/constraint failed/i.test(String(err.message))) return false;
    throw err;
  }
}

function acquire(db, name) {
  for (let round = 0; round < FAST_ROUNDS + SLOW_ROUNDS; round++) {
    if (tryOnce(db, name)) return;
    sleep(round < FAST_ROUNDS ? FAST_DELAY : SLOW_DELAY);
  }
  throw new Error(`could not acquire sqlite lock '${name}'`);
}

function release(db, name) {
  db.prepare('DELETE FROM locks WHERE name = ?').run(name);
}

function turnId(t) {
  return sha16(`${t.source}|${t.sessionId}|${t.messageId}`);
}

function fingerprint(t) {
  const u = t.usage;
  const calls = t.toolCalls;
  const prefix =
    calls.length > 0 && typeof calls[0]?.argsHash === 'string' ? calls[0].argsHash.slice(0, 4) : '';
  return sha16(
    [t.ts, t.model, u.input + u.output, u.cacheRead, u.cacheCreate5m + u.cacheCreate1h, prefix].join(
      '|',
    ),
  );
}

function appendTurns(db, turns) {
  const recent = db.prepare('SELECT content_fp FROM turns ORDER BY rowid DESC LIMIT ?');
  const insert = db.prepare(
    `INSERT OR IGNORE INTO turns (id_hash, content_fp, source, session_id, message_id,
       turn_index, ts, project, project_key, record_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  db.exec('BEGIN IMMEDIATE');
  try {
    const seen = new Set(recent.all(WINDOW).map((r) => r.content_fp));
    for (const t of turns) {
      const fp = fingerprint(t);
      if (seen.has(fp)) continue;
      insert.run(
        turnId(t),
        fp,
        t.source,
        t.sessionId,
        t.messageId,
        t.turnIndex,
        t.ts,
        t.project ?? null,
        t.projectKey ?? null,
        JSON.stringify(t),
      );
    }
    db.exec('COMMIT');
  } catch (err) {
    db.exec('ROLLBACK');
    throw err;
  }
}

const [mode, dbPath, ...args] = process.argv.slice(2);
const db = openDb(dbPath);
switch (mode) {
  case 'hold': {
    say('trying');
    acquire(db, args[0]);
    say('acquired');
    sleep(Number(args[1]));
    say('releasing');
    release(db, args[0]);
    break;
  }
  case 'acquire-once': {
    say('trying');
    acquire(db, args[0]);
    say('acquired');
    release(db, args[0]);
    break;
  }
  case 'leave-stale': {
    db.prepare('INSERT INTO locks (name, acquired_at_ms, pid) VALUES (?, ?, ?)').run(
      args[0],
      Date.now() - Number(args[1]),
      process.pid,
    );
    say('left');
    break;
  }
  case 'append': {
    db.prepare('SELECT count(*) AS n FROM turns').get();
    say('opened');
    const turns = JSON.parse(readFileSync(args[0], 'utf8'));
    const [from, to, batch] = args.slice(1).map(Number);
    for (let i = from; i < to; i += batch) {
      appendTurns(db, turns.slice(i, Math.min(i + batch, to)));
    }
    say('done');
    break;
  }
  default:
    throw new Error(`unknown mode ${mode}`);
}
db.close();
