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
    pub fn cursors(&self) -> PathBuf {
        self.root.join("cursors.json")
    }
    pub fn hwm(&self) -> PathBuf {
        self.root.join("hwm.json")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
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
        }
    }

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
