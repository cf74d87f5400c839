//! The home directory and every path under it (SPEC §1).
//!
//! This is the only place that reads `RELAYBURN_HOME`; everything else
//! receives a [`LedgerHome`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest session id accepted in a file name.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The names of the locks under a home (SPEC §1, §3); lock `NAME` is the
/// file `<home>/NAME.lock`. Both implementations must use exactly these.
pub mod lock_name {
    /// Appends to `ledger.jsonl` (and the rewrite that replaces it).
    pub const LEDGER: &str = "ledger";
    /// `ledger.idx` and `ledger.content.idx`.
    pub const LEDGER_INDEX: &str = "ledger-index";
    /// `archive.sqlite` and its build.
    pub const ARCHIVE: &str = "archive";
    /// `cursors.json`.
    pub const CURSORS: &str = "cursors";
    /// `push.json` (this project's team ledger; the reference has none).
    pub const PUSH: &str = "push";
    /// Taken by the reference's test suites only; listed so that no other
    /// use collides with it.
    pub const TEST_SERIALIZE: &str = "test-serialize";

    /// `content/<sessionId>.jsonl`.
    pub fn content(session_id: &str) -> String {
        format!("content.{session_id}")
    }
}

/// A resolved home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerHome {
    root: PathBuf,
}

impl LedgerHome {
    /// A home at an explicit directory.
    pub fn new(root: impl Into<PathBuf>) -> LedgerHome {
        LedgerHome { root: root.into() }
    }

    /// `RELAYBURN_HOME` when set and non-empty, else `~/.relayburn`.
    pub fn from_env() -> Result<LedgerHome> {
        Env::capture().ledger_home()
    }

    /// The resolution rule, separated from the process environment so it
    /// can be tested.
    pub fn resolve(
        relayburn_home: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Result<LedgerHome> {
        if let Some(h) = relayburn_home.filter(|h| !h.is_empty()) {
            return Ok(LedgerHome::new(h));
        }
        match home.filter(|h| !h.is_empty()) {
            Some(h) => Ok(LedgerHome::new(PathBuf::from(h).join(".relayburn"))),
            None => Err(Error::NoHome),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fail unless the home directory exists. Reads and maintenance call
    /// this first, so a mistyped home is an error instead of an empty
    /// answer or a new, empty archive somewhere unexpected.
    pub fn require_existing(&self) -> Result<()> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::io(
                "open home",
                &self.root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            )),
            Err(e) => Err(Error::io("open home", &self.root, e)),
        }
    }
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }
    pub fn ledger_index(&self) -> PathBuf {
        self.root.join("ledger.idx")
    }
    pub fn ledger_content_index(&self) -> PathBuf {
        self.root.join("ledger.content.idx")
    }
    pub fn content_dir(&self) -> PathBuf {
        self.root.join("content")
    }
    pub fn archive(&self) -> PathBuf {
        self.root.join("archive.sqlite")
    }
    /// The SQLite storage backend's default store.
    pub fn sqlite_store(&self) -> PathBuf {
        self.root.join("burn.sqlite")
    }
    pub fn cursors(&self) -> PathBuf {
        self.root.join("cursors.json")
    }
    pub fn hwm(&self) -> PathBuf {
        self.root.join("hwm.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// The machine id and the push cursors of `burn push`.
    pub fn push_state(&self) -> PathBuf {
        self.root.join("push.json")
    }

    /// Lines cut short by a crash that a repair terminated: accepted, so
    /// `check` reports each once.
    pub fn repairs(&self) -> PathBuf {
        self.root.join("ledger.repairs.json")
    }
    /// `<home>/<name>.lock`.
    pub fn lock(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.lock"))
    }

    /// `content/<sessionId>.jsonl`; an unsafe id is an error, never a path.
    pub fn content_file(&self, session_id: &str) -> Result<PathBuf> {
        if !is_valid_session_id(session_id) {
            return Err(Error::InvalidSessionId(session_id.to_string()));
        }
        Ok(self.content_dir().join(format!("{session_id}.jsonl")))
    }
}

/// A value that must not be printed (a connection string with a
/// password): `Debug` shows only that it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A snapshot of the environment variables the ledger honours, taken in
/// one place so the rest of the library receives them as data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub relayburn_home: Option<std::ffi::OsString>,
    pub home: Option<std::ffi::OsString>,
    /// `RELAYBURN_CONTENT_STORE`.
    pub content_store: Option<String>,
    /// `RELAYBURN_CONTENT_TTL_DAYS`.
    pub content_ttl_days: Option<String>,
    /// `RELAYBURN_POSTGRES_URL`: the team database.
    pub postgres_url: Option<Secret>,
    /// `RELAYBURN_MACHINE_ID`: overrides the home's machine id.
    pub machine_id: Option<String>,
    /// `RELAYBURN_STORAGE`: which storage backend (`file` when unset).
    pub storage: Option<String>,
    /// `RELAYBURN_SQLITE_PATH`: where the `sqlite` backend keeps its store.
    pub sqlite_path: Option<std::ffi::OsString>,
}

impl Env {
    /// Read the process environment.
    pub fn capture() -> Env {
        let text = |k: &str| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned());
        Env {
            relayburn_home: std::env::var_os("RELAYBURN_HOME"),
            home: std::env::var_os("HOME"),
            content_store: text("RELAYBURN_CONTENT_STORE"),
            content_ttl_days: text("RELAYBURN_CONTENT_TTL_DAYS"),
            postgres_url: text("RELAYBURN_POSTGRES_URL")
                .filter(|s| !s.is_empty())
                .map(Secret),
            machine_id: text("RELAYBURN_MACHINE_ID").filter(|s| !s.is_empty()),
            storage: text("RELAYBURN_STORAGE"),
            sqlite_path: std::env::var_os("RELAYBURN_SQLITE_PATH"),
        }
    }

    /// The storage backend these variables select, with the reference's
    /// messages for reserved and unknown names.
    pub fn storage_kind(&self) -> Result<StorageKind> {
        match self.storage.as_deref() {
            None => Ok(StorageKind::File),
            Some(raw) => StorageKind::parse(raw).ok_or_else(|| {
                let mut quoted = String::new();
                crate::json::write_str(&mut quoted, raw);
                Error::UnknownStorage(quoted)
            }),
        }
    }

    /// The selected backend and where it keeps its data: the SQLite store
    /// is `RELAYBURN_SQLITE_PATH` when set and non-empty, else
    /// `<home>/burn.sqlite`.
    pub fn storage(&self) -> Result<Storage> {
        self.storage_at(self.ledger_home()?)
    }

    /// [`storage`](Env::storage) for an explicit home (`burn --home`).
    pub fn storage_at(&self, home: LedgerHome) -> Result<Storage> {
        let sqlite_path = match self.sqlite_path.as_ref().filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => home.sqlite_store(),
        };
        Ok(Storage {
            kind: self.storage_kind()?,
            home,
            sqlite_path,
            postgres_url: self.postgres_url.clone(),
        })
    }
}

/// The storage backends the reference names (`RELAYBURN_STORAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    File,
    Sqlite,
    Postgres,
    Http,
}

impl StorageKind {
    pub const ALL: [StorageKind; 4] = [
        StorageKind::File,
        StorageKind::Sqlite,
        StorageKind::Postgres,
        StorageKind::Http,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StorageKind::File => "file",
            StorageKind::Sqlite => "sqlite",
            StorageKind::Postgres => "postgres",
            StorageKind::Http => "http",
        }
    }

    /// Exact, case-sensitive names, as the reference compares them.
    pub fn parse(s: &str) -> Option<StorageKind> {
        StorageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A resolved storage selection: the backend and its locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub kind: StorageKind,
    pub home: LedgerHome,
    /// The SQLite store's file (used when `kind` is `Sqlite`).
    pub sqlite_path: PathBuf,
    /// The PostgreSQL server (used when `kind` is `Postgres`):
    /// `RELAYBURN_POSTGRES_URL`.
    pub postgres_url: Option<Secret>,
}

impl Storage {
    /// File storage at `home`.
    pub fn file(home: LedgerHome) -> Storage {
        Storage {
            kind: StorageKind::File,
            sqlite_path: home.sqlite_store(),
            postgres_url: None,
            home,
        }
    }

    /// SQLite storage at `home`, its store at `<home>/burn.sqlite`.
    pub fn sqlite(home: LedgerHome) -> Storage {
        Storage {
            kind: StorageKind::Sqlite,
            sqlite_path: home.sqlite_store(),
            postgres_url: None,
            home,
        }
    }

    /// PostgreSQL storage on the server `url` names; `home` keeps what
    /// is local to a machine (push state, content of file storage).
    pub fn postgres(home: LedgerHome, url: impl Into<String>) -> Storage {
        Storage {
            kind: StorageKind::Postgres,
            sqlite_path: home.sqlite_store(),
            postgres_url: Some(Secret(url.into())),
            home,
        }
    }

    /// Archive operations exist only over file storage.
    pub fn require_file(&self) -> Result<()> {
        match self.kind {
            StorageKind::File => Ok(()),
            k => Err(Error::ArchiveNeedsFileStorage(k.as_str())),
        }
    }
}

impl Env {
    /// The home these variables select (see [`LedgerHome::resolve`]).
    pub fn ledger_home(&self) -> Result<LedgerHome> {
        LedgerHome::resolve(self.relayburn_home.clone(), self.home.clone())
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 128 characters, not `.`/`..`.
pub fn is_valid_session_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > MAX_SESSION_ID_LEN || id == "." || id == ".." {
        return false;
    }
    b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_follow_the_contract() {
        for ok in [
            "a",
            "0b1c2d3e-1111-4222-8333-444455556666",
            "ses_abcDEF123",
            "a.b_c-d",
            &"x".repeat(128),
        ] {
            assert!(is_valid_session_id(ok), "{ok:?} should be valid");
        }
        for bad in [
            "",
            ".",
            "..",
            "../escape",
            "a/b",
            "-a",
            "_a",
            ".hidden",
            "a b",
            "a\\b",
            "é",
            "a\0",
            &"x".repeat(129),
        ] {
            assert!(!is_valid_session_id(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn content_file_refuses_escapes() {
        let h = LedgerHome::new("/h");
        assert!(h.content_file("../etc").is_err());
        assert_eq!(
            h.content_file("abc").unwrap(),
            PathBuf::from("/h/content/abc.jsonl")
        );
    }

    #[test]
    fn storage_selection_follows_the_reference() {
        let env = |s: Option<&str>, p: Option<&str>| Env {
            relayburn_home: Some("/h".into()),
            storage: s.map(str::to_string),
            sqlite_path: p.map(Into::into),
            ..Env::default()
        };
        let st = env(None, None).storage().unwrap();
        assert_eq!(st.kind, StorageKind::File);
        assert_eq!(st.sqlite_path, PathBuf::from("/h/burn.sqlite"));
        let st = env(Some("sqlite"), Some("/db/x.sqlite")).storage().unwrap();
        assert_eq!(st.kind, StorageKind::Sqlite);
        assert_eq!(st.sqlite_path, PathBuf::from("/db/x.sqlite"));
        let st = env(Some("sqlite"), Some("")).storage().unwrap();
        assert_eq!(st.sqlite_path, PathBuf::from("/h/burn.sqlite"));
        assert_eq!(
            env(Some("SQLite"), None).storage().unwrap_err().to_string(),
            r#"unsupported RELAYBURN_STORAGE="SQLite" (expected file, sqlite, postgres, or http)"#
        );
        assert_eq!(
            env(Some(""), None).storage().unwrap_err().to_string(),
            r#"unsupported RELAYBURN_STORAGE="" (expected file, sqlite, postgres, or http)"#
        );
        let pg = env(Some("postgres"), None).storage().unwrap();
        assert_eq!(pg.postgres_url, None);
        let with_url = Env {
            postgres_url: Some(Secret("postgres://u:pw@h/d".into())),
            ..env(Some("postgres"), None)
        };
        let st = with_url.storage().unwrap();
        assert_eq!(st.kind, StorageKind::Postgres);
        assert_eq!(
            st.postgres_url.as_ref().map(|s| s.0.as_str()),
            Some("postgres://u:pw@h/d")
        );
        assert!(!format!("{st:?}").contains("pw@"));
        assert_eq!(
            pg.require_file().unwrap_err().to_string(),
            "archive operations require RELAYBURN_STORAGE=file (got postgres)"
        );
    }

    #[test]
    fn env_resolution() {
        let r = LedgerHome::resolve(Some("/x".into()), Some("/home/u".into())).unwrap();
        assert_eq!(r.root(), Path::new("/x"));
        let r = LedgerHome::resolve(Some("".into()), Some("/home/u".into())).unwrap();
        assert_eq!(r.root(), Path::new("/home/u/.relayburn"));
        let r = LedgerHome::resolve(None, Some("/home/u".into())).unwrap();
        assert_eq!(
            r.lock("ledger"),
            PathBuf::from("/home/u/.relayburn/ledger.lock")
        );
        assert!(LedgerHome::resolve(None, None).is_err());
    }
}
