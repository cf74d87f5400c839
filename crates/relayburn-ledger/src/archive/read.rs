//! Opening the archive to read it.
//!
//! A read never creates, migrates or deletes the archive: it opens the
//! file read-only (`immutable` when the home cannot be written, so a
//! read-only mount or another user's home still answers) and says why it
//! cannot answer instead of answering wrongly. Only a build replaces an
//! archive of another version; a newer one is never replaced by
//! anything but an explicit full rebuild.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Error, Result};
use crate::home::LedgerHome;

use super::fingerprint::{self, Identity};
use super::schema::ARCHIVE_VERSION;

/// Why the archive cannot answer a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No `archive.sqlite` yet.
    Missing,
    /// Written by a newer release: refused, never replaced implicitly.
    Newer { found: i64 },
    /// Written by an older release: the next build replaces it.
    Older { found: i64 },
    /// Not an archive any more (cut short, garbage, a directory, no
    /// archive tables).
    Damaged(String),
    /// An archive this process cannot open (permissions, locked).
    Unreadable(String),
    /// Built from another ledger file: its rows are not this ledger's.
    OtherLedger(String),
}

impl Unavailable {
    /// Does a full rebuild fix it?
    pub fn needs_full_rebuild(&self) -> bool {
        matches!(self, Unavailable::Newer { .. } | Unavailable::Damaged(_))
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Missing => {
                write!(f, "not built yet; `burn state rebuild archive` builds it")
            }
            Unavailable::Newer { found } => write!(
                f,
                "archive_version {found} is newer than this tool's {ARCHIVE_VERSION} \
                 (written by a newer release); refusing to read or change it; \
                 `burn state rebuild archive --full` replaces it with a version {ARCHIVE_VERSION} archive"
            ),
            Unavailable::Older { found } => write!(
                f,
                "archive_version {found} is older than this tool's {ARCHIVE_VERSION}; \
                 `burn state rebuild archive` replaces it"
            ),
            Unavailable::Damaged(why) => write!(
                f,
                "damaged ({why}); `burn state rebuild archive --full` replaces it"
            ),
            Unavailable::Unreadable(why) => write!(f, "cannot be read ({why})"),
            Unavailable::OtherLedger(why) => write!(
                f,
                "built from another ledger ({why}); `burn state rebuild archive` rebuilds it"
            ),
        }
    }
}

/// The stored build state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub offset: u64,
    pub mtime_ms: i64,
    pub version: i64,
    pub last_built_at: Option<String>,
    pub last_rebuild_at: Option<String>,
    /// Which ledger the cursor belongs to; `None` when the archive was
    /// built by a tool that does not record it.
    pub identity: Option<Identity>,
}

/// How the archive stands against the ledger now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    UpToDate,
    /// The ledger has bytes past the cursor.
    Behind {
        cursor: u64,
        ledger_size: u64,
    },
    /// The archive was built from another ledger file (shorter now, or
    /// different at its start): its rows cannot be trusted; the next
    /// build starts from zero.
    Replaced(String),
}

/// A read-only connection to a valid archive of this version.
pub struct ArchiveReader {
    pub(crate) conn: Connection,
    pub(crate) path: PathBuf,
    pub state: StoredState,
}

fn unavailable(path: &Path, why: Unavailable) -> Error {
    Error::ArchiveUnavailable {
        path: path.to_path_buf(),
        why,
    }
}

/// Problems visible in the file's first 100 bytes and its size, found
/// without SQLite: not a database, or cut shorter than its header says.
pub(crate) fn header_problem(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Some("empty file".into()));
    }
    let mut h = [0u8; 100];
    let mut got = 0;
    while got < h.len() {
        let n = f.read(&mut h[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < h.len() || &h[..16] != b"SQLite format 3\0" {
        return Ok(Some("not an SQLite database".into()));
    }
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([h[28], h[29], h[30], h[31]]));
    let counter = &h[24..28];
    let valid_for = &h[92..96];
    // The header's page count is trusted only when it was written by the
    // same change as the rest of the header; pages still in the WAL may
    // legitimately lie past the end of the main file.
    let wal = super::with_suffix(path, "-wal");
    let wal_has_pages = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 32);
    if counter == valid_for && !wal_has_pages && len < page_size * pages {
        return Ok(Some(format!(
            "{len} bytes where its header declares {}: cut short",
            page_size * pages
        )));
    }
    Ok(None)
}

/// An SQLite URI for `path`: every byte a URI could misread is
/// percent-encoded.
fn uri(path: &Path, query: &str) -> String {
    let mut s = String::from("file:");
    for b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(b) {
            s.push(char::from(*b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push('?');
    s.push_str(query);
    s
}

fn dir_writable(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access only reads the NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Classify an SQLite failure while reading.
fn classify(e: &rusqlite::Error) -> Unavailable {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(NotADatabase) | Some(DatabaseCorrupt) => Unavailable::Damaged(e.to_string()),
        _ => Unavailable::Unreadable(e.to_string()),
    }
}

fn open_conn(path: &Path, query: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        uri(path, query),
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Read the state row, or say why the archive cannot answer.
fn read_state(
    conn: &Connection,
) -> rusqlite::Result<std::result::Result<StoredState, Unavailable>> {
    let has_state = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archive_state'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_state {
        return Ok(Err(Unavailable::Damaged("no archive tables".into())));
    }
    let row = conn
        .query_row(
            "SELECT ledger_offset_bytes, ledger_mtime_ms, archive_version,
                    last_built_at, last_rebuild_at FROM archive_state WHERE id = 1",
            [],
            |r| {
                let int = |i: usize| -> rusqlite::Result<i64> {
                    Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                        rusqlite::types::Value::Integer(n) => n,
                        rusqlite::types::Value::Real(f) => f as i64,
                        _ => -1,
                    })
                };
                Ok((
                    int(0)?,
                    int(1)?,
                    int(2)?,
                    r.get::<_, Option<String>>(3).ok().flatten(),
                    r.get::<_, Option<String>>(4).ok().flatten(),
                ))
            },
        )
        .optional()?;
    let Some((offset, mtime_ms, version, built, rebuilt)) = row else {
        return Ok(Err(Unavailable::Damaged("no archive_state row".into())));
    };
    if version > ARCHIVE_VERSION {
        return Ok(Err(Unavailable::Newer { found: version }));
    }
    if version < ARCHIVE_VERSION {
        return Ok(Err(Unavailable::Older { found: version }));
    }
    let identity = fingerprint::stored(conn)?;
    Ok(Ok(StoredState {
        offset: offset.max(0) as u64,
        mtime_ms,
        version,
        last_built_at: built,
        last_rebuild_at: rebuilt,
        identity,
    }))
}

impl ArchiveReader {
    /// Open the home's archive for reading. Every reason it cannot answer
    /// is an [`Error::ArchiveUnavailable`].
    pub fn open(home: &LedgerHome) -> Result<ArchiveReader> {
        let path = home.archive();
        let fail = |why| Err(unavailable(&path, why));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return fail(Unavailable::Damaged("not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return fail(Unavailable::Missing)
            }
            Err(e) => return fail(Unavailable::Unreadable(e.to_string())),
        }
        match header_problem(&path) {
            Ok(Some(why)) => return fail(Unavailable::Damaged(why)),
            Ok(None) => {}
            Err(e) => return fail(Unavailable::Unreadable(e.to_string())),
        }
        // Read-only; when the directory cannot be written, SQLite cannot
        // create the WAL index either, so the file is read as immutable
        // (nobody can be writing it then).
        let modes: &[&str] = if dir_writable(&path) {
            &["mode=ro", "immutable=1"]
        } else {
            &["immutable=1"]
        };
        let mut first_err = None;
        for mode in modes {
            let attempt = open_conn(&path, mode).and_then(|c| {
                c.execute_batch("BEGIN")?;
                let state = read_state(&c)?;
                Ok((c, state))
            });
            match attempt {
                Ok((conn, Ok(state))) => {
                    return Ok(ArchiveReader { conn, path, state });
                }
                Ok((_, Err(why))) => return fail(why),
                Err(e) => {
                    let why = classify(&e);
                    if matches!(why, Unavailable::Damaged(_)) {
                        return fail(why);
                    }
                    first_err.get_or_insert(why);
                }
            }
        }
        fail(first_err.unwrap_or(Unavailable::Unreadable("cannot open".into())))
    }

    /// The archive against the ledger as it is now.
    pub fn freshness(&self, home: &LedgerHome) -> Result<Freshness> {
        let ledger = home.ledger();
        let size = super::file_stat(&ledger)?.map_or(0, |(s, _)| s);
        let cursor = self.state.offset;
        if size < cursor {
            return Ok(Freshness::Replaced(format!(
                "ledger.jsonl is {size} bytes, shorter than the archive's cursor {cursor}"
            )));
        }
        if let Some(why) = fingerprint::mismatch(&ledger, cursor, self.state.identity)? {
            return Ok(Freshness::Replaced(why));
        }
        Ok(if cursor == size {
            Freshness::UpToDate
        } else {
            Freshness::Behind {
                cursor,
                ledger_size: size,
            }
        })
    }

    pub(crate) fn sql_err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        super::schema::sql_err(&self.path)
    }

    /// Does `table` have `column`? (Archives of an older shape lack the
    /// additive columns; a read does not add them.)
    pub(crate) fn has_column(&self, table: &str, column: &str) -> Result<bool> {
        self.conn
            .query_row(
                &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(self.sql_err())
    }
}

/// Where turns are read from, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnSource {
    /// The archive when it can answer for the whole ledger, else the ledger.
    Auto,
    /// The archive, even when behind (with a warning).
    Archive,
    Ledger,
}

/// What a turn query will read, and the line to tell the user about it.
pub enum TurnPlan {
    Ledger {
        note: Option<String>,
    },
    Archive {
        reader: Box<ArchiveReader>,
        note: Option<String>,
        /// The note is a warning: the answer may be incomplete.
        warn: bool,
    },
}

/// Decide where a turn query reads from. Auto falls back to the ledger
/// whenever the archive cannot answer for the whole ledger; an explicit
/// archive read that cannot answer is an
/// [`Error::ArchiveUnavailable`], and one that is behind is answered
/// with a warning.
pub fn plan_turn_read(home: &LedgerHome, from: TurnSource) -> Result<TurnPlan> {
    if from == TurnSource::Ledger {
        return Ok(TurnPlan::Ledger { note: None });
    }
    let reader = match (ArchiveReader::open(home), from) {
        (Ok(r), _) => r,
        (Err(Error::ArchiveUnavailable { why, .. }), TurnSource::Auto) => {
            return Ok(TurnPlan::Ledger {
                note: Some(format!("reading turns from the ledger: archive {why}")),
            })
        }
        (Err(e), _) => return Err(e),
    };
    match (reader.freshness(home)?, from) {
        (Freshness::UpToDate, _) => Ok(TurnPlan::Archive {
            reader: Box::new(reader),
            note: Some("reading turns from the archive (up to date)".into()),
            warn: false,
        }),
        (
            Freshness::Behind {
                cursor,
                ledger_size,
            },
            TurnSource::Auto,
        ) => Ok(TurnPlan::Ledger {
            note: Some(format!(
                "reading turns from the ledger: the archive is {} bytes behind it",
                ledger_size - cursor
            )),
        }),
        (
            Freshness::Behind {
                cursor,
                ledger_size,
            },
            _,
        ) => Ok(TurnPlan::Archive {
            reader: Box::new(reader),
            note: Some(format!(
                "warning: the archive is {} bytes behind the ledger; turns appended since \
                 its last build are missing (`burn state rebuild archive` catches up)",
                ledger_size - cursor
            )),
            warn: true,
        }),
        (Freshness::Replaced(why), TurnSource::Auto) => Ok(TurnPlan::Ledger {
            note: Some(format!(
                "reading turns from the ledger: archive {}",
                Unavailable::OtherLedger(why)
            )),
        }),
        (Freshness::Replaced(why), _) => {
            Err(unavailable(&reader.path, Unavailable::OtherLedger(why)))
        }
    }
}
