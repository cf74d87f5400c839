//! Which ledger file an archive's cursor belongs to.
//!
//! A cursor is a byte offset; it means nothing in another file. If
//! `ledger.jsonl` is replaced by a different, longer file, applying it
//! past the old cursor would mix two ledgers. So each build records a
//! hash of the ledger's first bytes (at most [`PREFIX`]) in the header
//! fields SQLite leaves to applications — `user_version` holds the hash,
//! `application_id` how many bytes it covers — which the reference
//! neither reads nor writes, and which commit atomically with the cursor.
//! A build that finds them differing starts from zero, as it does after a
//! truncation.

use std::io::Read;
use std::path::Path;

use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes of the ledger's start that identify it.
pub(crate) const PREFIX: u64 = 4096;

/// A ledger's identity: a hash of its first `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub len: u32,
    /// Never 0: 0 means "not recorded" in `user_version`.
    pub hash: u32,
}

/// What the archive recorded, if anything (a reference-built archive
/// records nothing).
pub(crate) fn stored(conn: &Connection) -> rusqlite::Result<Option<Identity>> {
    let hash: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let len: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    if hash == 0 || !(1..=PREFIX as i64).contains(&len) {
        return Ok(None);
    }
    Ok(Some(Identity {
        len: len as u32,
        hash: hash as u32,
    }))
}

/// Hash of the first `len` bytes, or `None` when the file is shorter.
fn hash_prefix(ledger: &Path, len: u32) -> Result<Option<u32>> {
    let f = match std::fs::File::open(ledger) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", ledger, e)),
    };
    let mut buf = Vec::with_capacity(len as usize);
    f.take(u64::from(len))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("read", ledger, e))?;
    if buf.len() < len as usize {
        return Ok(None);
    }
    let d = Sha256::digest(&buf);
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    Ok(Some(h.max(1)))
}

/// The identity of the ledger as far as a cursor at `cursor` has read it.
pub(crate) fn compute(ledger: &Path, cursor: u64) -> Result<Option<Identity>> {
    let len = cursor.min(PREFIX) as u32;
    if len == 0 {
        return Ok(None);
    }
    Ok(hash_prefix(ledger, len)?.map(|hash| Identity { len, hash }))
}

/// Why the ledger is not the file `stored` describes; `None` when it is
/// (or nothing was recorded).
pub(crate) fn mismatch(
    ledger: &Path,
    cursor: u64,
    stored: Option<Identity>,
) -> Result<Option<String>> {
    let Some(id) = stored else { return Ok(None) };
    if cursor == 0 {
        return Ok(None);
    }
    match hash_prefix(ledger, id.len)? {
        Some(h) if h == id.hash => Ok(None),
        _ => Ok(Some(format!(
            "ledger.jsonl is not the file the archive was built from (its first {} bytes differ)",
            id.len
        ))),
    }
}

/// Record `id` with the cursor, inside the build's transaction.
pub(crate) fn record(conn: &Connection, id: Option<Identity>) -> rusqlite::Result<()> {
    let (hash, len) = id.map_or((0, 0), |i| (i.hash as i32, i.len as i32));
    conn.execute_batch(&format!(
        "PRAGMA user_version = {hash}; PRAGMA application_id = {len};"
    ))
}
