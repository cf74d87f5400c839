//! Serialises records into `ledger.jsonl` and keeps what the index sidecars
//! need, in the order an index rebuild would see it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::RngExt;
use relayburn_ledger::error::IoContext;
use relayburn_ledger::index::{record_id, turn_fingerprint, Hash16, CONTENT_WINDOW};
use relayburn_ledger::json::Value;
use relayburn_ledger::records::{wrap_record, Kind};
use relayburn_ledger::{Error, Result};

use super::ids::Rng;

/// Share of turn lines appended a second time, as two concurrent ingests
/// of the same session produce.
pub const DUPLICATE_TURN_RATE: f64 = 0.005;
/// How many lines later a duplicate shows up, at most.
const DUPLICATE_MAX_DELAY: u64 = 400;
const WRITE_BUFFER: usize = 8 << 20;

/// Lines and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    pub lines: u64,
    pub bytes: u64,
}

/// The id hashes are already uniformly distributed: hash them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Hashes in first-seen order, each once.
#[derive(Default)]
struct OrderedSet {
    order: Vec<u64>,
    seen: HashSet<u64, BuildHasherDefault<PassThrough>>,
}

impl OrderedSet {
    fn insert(&mut self, h: Hash16) {
        if self.seen.insert(h.0) {
            self.order.push(h.0);
        }
    }
}

pub struct Emitter {
    out: BufWriter<File>,
    path: PathBuf,
    line: String,
    stats: [KindStats; 6],
    /// Bytes of the lines that count towards the requested size: all but
    /// stamps and the relationship rows stamps bring along, so that every
    /// stamp mix yields the same other lines.
    pub budget_bytes: u64,
    budget_lines: u64,
    pub duplicates: u64,
    ids: OrderedSet,
    fingerprints: OrderedSet,
    pending: BinaryHeap<Reverse<(u64, u64, String)>>,
    pending_seq: u64,
}

pub fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Turn => 0,
        Kind::Stamp => 1,
        Kind::Compaction => 2,
        Kind::Relationship => 3,
        Kind::ToolResultEvent => 4,
        Kind::UserTurn => 5,
    }
}

impl Emitter {
    pub fn create(path: &Path) -> Result<Emitter> {
        let file = File::create(path).ctx("create", path)?;
        Ok(Emitter {
            out: BufWriter::with_capacity(WRITE_BUFFER, file),
            path: path.to_owned(),
            line: String::with_capacity(4096),
            stats: [KindStats::default(); 6],
            budget_bytes: 0,
            budget_lines: 0,
            duplicates: 0,
            ids: OrderedSet::default(),
            fingerprints: OrderedSet::default(),
            pending: BinaryHeap::new(),
            pending_seq: 0,
        })
    }

    pub fn stats(&self) -> [KindStats; 6] {
        self.stats
    }

    pub fn id_count(&self) -> usize {
        self.ids.order.len()
    }

    pub fn fingerprint_count(&self) -> usize {
        self.fingerprints.order.len()
    }

    fn index(&mut self, kind: Kind, rec: &Value) -> Result<()> {
        let bad = |e: relayburn_ledger::index::HashError| Error::invalid("record", e.to_string());
        if let Some(id) = record_id(kind, rec) {
            self.ids.insert(id.map_err(bad)?);
        }
        if kind == Kind::Turn {
            self.fingerprints
                .insert(turn_fingerprint(rec).map_err(bad)?);
        }
        Ok(())
    }

    fn write_line(&mut self, kind: Kind, line: &Value) -> Result<()> {
        self.line.clear();
        line.write_json(&mut self.line);
        self.line.push('\n');
        self.out
            .write_all(self.line.as_bytes())
            .ctx("write", &self.path)?;
        let s = &mut self.stats[slot(kind)];
        s.lines += 1;
        s.bytes += self.line.len() as u64;
        Ok(())
    }

    fn counted(&mut self) -> Result<()> {
        self.budget_bytes += self.line.len() as u64;
        self.budget_lines += 1;
        while let Some(Reverse((due, _, _))) = self.pending.peek() {
            if *due > self.budget_lines {
                break;
            }
            let Some(Reverse((_, _, text))) = self.pending.pop() else {
                break;
            };
            self.out
                .write_all(text.as_bytes())
                .ctx("write", &self.path)?;
            let s = &mut self.stats[slot(Kind::Turn)];
            s.lines += 1;
            s.bytes += text.len() as u64;
            self.budget_bytes += text.len() as u64;
            self.budget_lines += 1;
            self.duplicates += 1;
        }
        Ok(())
    }

    /// Append a record line of `kind`.
    pub fn record(&mut self, kind: Kind, rec: Value) -> Result<()> {
        self.index(kind, &rec)?;
        self.write_line(kind, &wrap_record(kind, rec))?;
        self.counted()
    }

    /// Append a turn, and now and then schedule the same line again.
    pub fn turn(&mut self, rec: Value, rng: &mut Rng) -> Result<()> {
        self.index(Kind::Turn, &rec)?;
        self.write_line(Kind::Turn, &wrap_record(Kind::Turn, rec))?;
        if rng.random_bool(DUPLICATE_TURN_RATE) {
            let due = self.budget_lines + rng.random_range(2..DUPLICATE_MAX_DELAY);
            self.pending_seq += 1;
            self.pending
                .push(Reverse((due, self.pending_seq, self.line.clone())));
        }
        self.counted()
    }

    /// A record that comes with a stamp: written and indexed, but not
    /// counted towards the size.
    pub fn side_record(&mut self, kind: Kind, rec: Value) -> Result<()> {
        self.index(kind, &rec)?;
        self.write_line(kind, &wrap_record(kind, rec))
    }

    /// A stamp line (not wrapped; stamps have no id).
    pub fn stamp(&mut self, line: Value) -> Result<()> {
        self.write_line(Kind::Stamp, &line)
    }

    /// Flush the ledger and write `ledger.idx` and `ledger.content.idx`
    /// as an index rebuild of this ledger would.
    pub fn finish(mut self, idx_path: &Path, content_idx_path: &Path) -> Result<()> {
        self.out.flush().ctx("write", &self.path)?;
        write_hashes(idx_path, &self.ids.order)?;
        let from = self.fingerprints.order.len().saturating_sub(CONTENT_WINDOW);
        write_hashes(content_idx_path, &self.fingerprints.order[from..])
    }
}

fn write_hashes(path: &Path, hashes: &[u64]) -> Result<()> {
    let file = File::create(path).ctx("create", path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for h in hashes {
        writeln!(w, "{}", Hash16(*h)).ctx("write", path)?;
    }
    w.flush().ctx("write", path)
}
