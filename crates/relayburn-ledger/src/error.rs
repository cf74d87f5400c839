//! The library's error type.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with. I/O errors always name the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("neither RELAYBURN_HOME nor HOME is set")]
    NoHome,
    #[error("invalid sessionId for content path: {0:?}")]
    InvalidSessionId(String),
    #[error(
        "could not acquire lock after {attempts} attempts (~{budget_ms}ms) - {detail}: {path}"
    )]
    LockTimeout {
        path: PathBuf,
        attempts: u32,
        budget_ms: u64,
        /// "held by live process …" or "lock appears stale but unlink kept failing".
        detail: String,
    },
    /// An argument or record the caller passed is not acceptable; `field`
    /// names it (`records[3]`, `selector`, `home`, …). The message is the
    /// reason alone, which already says where.
    #[error("{reason}")]
    Invalid { field: String, reason: String },
    /// Another process removed or replaced our lockfile while we held it;
    /// the work was given up before its effect became visible.
    #[error(
        "lost lock {path}: its lockfile was removed or replaced by another process \
         (a holder that never refreshes its lockfile, such as the TypeScript burn, \
         was taken for stale); nothing was committed"
    )]
    LockLost { path: PathBuf },
    /// SIGINT or SIGTERM arrived during work that stops cleanly.
    #[error("interrupted by signal {signal}; nothing was changed")]
    Interrupted { signal: i32 },
    /// A file holds what cannot be right: `offset` is the byte where, when
    /// known.
    #[error("corrupt {path}{}: {reason}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Corrupt {
        path: PathBuf,
        offset: Option<u64>,
        reason: String,
    },
    /// A failure that is neither bad input nor the environment: a bug, or a
    /// worker thread that died.
    #[error("internal error: {0}")]
    Internal(String),
    /// A team ledger error; `target` and `message` never hold a password.
    #[error("postgres {target}: {message}")]
    Postgres { target: String, message: String },
    /// The archive cannot answer or be built on as it is.
    #[error("archive {path}: {why}")]
    ArchiveUnavailable {
        path: PathBuf,
        why: crate::archive::Unavailable,
    },
    /// `RELAYBURN_STORAGE` holds a name no implementation knows.
    #[error("unsupported RELAYBURN_STORAGE={0} (expected file, sqlite, postgres, or http)")]
    UnknownStorage(String),
    /// A storage kind the reference reserves but this build lacks.
    #[error("RELAYBURN_STORAGE={0} is not supported in this build")]
    StorageNotSupported(&'static str),
    /// `RELAYBURN_STORAGE=postgres` without a server to use.
    #[error("RELAYBURN_STORAGE=postgres needs RELAYBURN_POSTGRES_URL (postgres://user@host/db)")]
    PostgresUrlMissing,
    /// A named lock of the PostgreSQL store stayed held by another session
    /// for the whole budget. `target` never holds a password.
    #[error("postgres {target}: could not acquire lock '{name}' after {attempts} attempts (~{budget_ms}ms): another process holds it")]
    PostgresLockTimeout {
        target: String,
        name: String,
        attempts: u32,
        budget_ms: u64,
    },
    /// An archive operation while another storage backend is selected.
    #[error("archive operations require RELAYBURN_STORAGE=file (got {0})")]
    ArchiveNeedsFileStorage(&'static str),
    /// An operation on files only file storage keeps (the index sidecars,
    /// the derived files a reset deletes) while another backend is selected.
    #[error(
        "{what} requires RELAYBURN_STORAGE=file (got {kind}): the {kind} store keeps no {files}"
    )]
    NeedsFileStorage {
        what: &'static str,
        kind: &'static str,
        files: &'static str,
    },
    /// A `burn.sqlite` migrated by a newer release.
    #[error("sqlite store is at schema version {found} but this build only knows up to {known}; please upgrade @relayburn/ledger")]
    StoreSchemaTooNew { found: i64, known: i64 },
    /// A named lock of the SQLite store stayed taken for the whole budget.
    #[error("could not acquire sqlite lock '{name}' after {attempts} attempts (~{budget_ms}ms)")]
    StoreLockTimeout {
        name: String,
        attempts: u32,
        budget_ms: u64,
    },
    #[error("sqlite store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("archive {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl Error {
    /// [`Error::Invalid`] for `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Attach a path and an operation to an `io::Result`.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}
