//! `burn state reset`: delete the derived state — the index sidecars and
//! the archive with its WAL files — and nothing else.
//!
//! Unlike the reference's reset, the ledger itself, the cursors, the
//! high-water marks and the config are never touched: they cannot be
//! derived again from anything in the home. The content sidecars cannot
//! either (only the session-log readers, which this crate lacks, could
//! write them again), so they go only when asked for by name
//! ([`ResetScope::WithContent`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::home::lock_name;
use crate::json::{Object, Value};
use crate::ledger::Ledger;

/// What a reset removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetScope {
    /// Only what a rebuild brings back: the indexes and the archive.
    #[default]
    Derived,
    /// Also `content/`, which nothing in the home can bring back.
    WithContent,
}

/// One path reset would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetTarget {
    pub path: PathBuf,
    pub is_dir: bool,
    pub existed: bool,
    pub bytes: u64,
    pub files_removed: u64,
    /// False when no rebuild can bring the path's data back.
    pub rebuildable: bool,
}

impl ResetTarget {
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("path", Value::from(self.path.display().to_string()));
        o.insert(
            "kind",
            Value::from(if self.is_dir { "dir" } else { "file" }),
        );
        o.insert("existed", Value::Bool(self.existed));
        o.insert("bytes", Value::Number(self.bytes as f64));
        o.insert("filesRemoved", Value::Number(self.files_removed as f64));
        o.insert("rebuildable", Value::Bool(self.rebuildable));
        Value::Object(o)
    }
}

/// What a reset did or would do (the reference's `ResetSummary` shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetSummary {
    pub home: PathBuf,
    pub forced: bool,
    pub targets: Vec<ResetTarget>,
    /// Paths left in place because they cannot be derived again.
    pub kept: Vec<PathBuf>,
}

impl ResetSummary {
    pub fn files_removed(&self) -> u64 {
        self.targets.iter().map(|t| t.files_removed).sum()
    }
    pub fn bytes_freed(&self) -> u64 {
        self.targets.iter().map(|t| t.bytes).sum()
    }

    pub fn to_value(&self) -> Value {
        let mut totals = Object::new();
        totals.insert("filesRemoved", Value::Number(self.files_removed() as f64));
        totals.insert("bytesFreed", Value::Number(self.bytes_freed() as f64));
        let mut o = Object::new();
        o.insert("home", Value::from(self.home.display().to_string()));
        o.insert("forced", Value::Bool(self.forced));
        o.insert("reingestRequested", Value::Bool(false));
        o.insert("reingested", Value::Null);
        o.insert(
            "targets",
            Value::Array(self.targets.iter().map(ResetTarget::to_value).collect()),
        );
        o.insert(
            "kept",
            Value::Array(
                self.kept
                    .iter()
                    .map(|p| Value::from(p.display().to_string()))
                    .collect(),
            ),
        );
        o.insert("totals", Value::Object(totals));
        o.insert("dryRun", Value::Bool(!self.forced));
        Value::Object(o)
    }
}

/// Refuse anything that is not strictly below the home, even through a
/// symlinked parent.
fn assert_inside(home: &Path, target: &Path) -> Result<()> {
    let outside = || {
        Error::invalid(
            "path",
            format!(
                "refusing to touch path outside ledger home: {}",
                target.display()
            ),
        )
    };
    let rel = target.strip_prefix(home).map_err(|_| outside())?;
    if rel.as_os_str().is_empty()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(outside());
    }
    let real_home = std::fs::canonicalize(home).ctx("resolve", home)?;
    if let Some(parent) = target.parent() {
        if let Ok(real_parent) = std::fs::canonicalize(parent) {
            if !real_parent.starts_with(&real_home) {
                return Err(outside());
            }
        }
    }
    Ok(())
}

fn stat_target(path: PathBuf, is_dir: bool) -> Result<ResetTarget> {
    let mut t = ResetTarget {
        path,
        is_dir,
        existed: false,
        bytes: 0,
        files_removed: 0,
        rebuildable: true,
    };
    let meta = match std::fs::symlink_metadata(&t.path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(t),
        Err(e) => return Err(Error::io("stat", &t.path, e)),
    };
    if is_dir {
        // A symlink in place of content/ is not followed.
        if !meta.is_dir() {
            return Ok(t);
        }
        t.existed = true;
        let mut stack = vec![t.path.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
                let entry = entry.ctx("read directory", &dir)?;
                let m = match entry.path().symlink_metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if m.is_dir() {
                    stack.push(entry.path());
                } else {
                    t.files_removed += 1;
                    if m.is_file() {
                        t.bytes += m.len();
                    }
                }
            }
        }
    } else if meta.is_file() {
        t.existed = true;
        t.bytes = meta.len();
        t.files_removed = 1;
    }
    Ok(t)
}

impl Ledger {
    /// The paths a reset of `scope` removes.
    fn reset_targets(&self, scope: ResetScope) -> Result<Vec<ResetTarget>> {
        let h = self.home();
        let archive = h.archive();
        let with_suffix = |s: &str| {
            let mut p = archive.clone().into_os_string();
            p.push(s);
            PathBuf::from(p)
        };
        let mut out = Vec::new();
        for p in [
            h.ledger_index(),
            h.ledger_content_index(),
            archive.clone(),
            with_suffix("-wal"),
            with_suffix("-shm"),
        ] {
            out.push(stat_target(p, false)?);
        }
        // Half-built archives of rebuilds that did not finish.
        for (p, _) in crate::archive::rebuild_leftovers(h.root()) {
            out.push(stat_target(p, false)?);
        }
        if scope == ResetScope::WithContent {
            let mut content = stat_target(h.content_dir(), true)?;
            content.rebuildable = false;
            out.push(content);
        }
        Ok(out)
    }

    /// The files a reset of `scope` leaves because they cannot be derived.
    fn reset_kept(&self, scope: ResetScope) -> Vec<PathBuf> {
        let h = self.home();
        let mut kept = vec![h.ledger(), h.config(), h.cursors(), h.hwm()];
        if scope == ResetScope::Derived {
            kept.push(h.content_dir());
        }
        kept
    }

    /// What [`reset_derived`](Self::reset_derived) would remove; reads only.
    pub fn reset_plan(&self, scope: ResetScope) -> Result<ResetSummary> {
        Ok(ResetSummary {
            home: self.home().root().to_path_buf(),
            forced: false,
            targets: self.reset_targets(scope)?,
            kept: self.reset_kept(scope),
        })
    }

    /// Delete the derived state under the `ledger`, `ledger-index` and
    /// `archive` locks, so no writer or build is mid-way, then forget the
    /// in-memory index.
    pub fn reset_derived(&self, scope: ResetScope) -> Result<ResetSummary> {
        let root = self.home().root().to_path_buf();
        let targets = self.with_lock(lock_name::LEDGER, || {
            self.with_lock(lock_name::LEDGER_INDEX, || {
                self.with_lock(lock_name::ARCHIVE, || {
                    let mut done = Vec::new();
                    for t in self.reset_targets(scope)? {
                        assert_inside(&root, &t.path)?;
                        if t.existed {
                            let r = if t.is_dir {
                                std::fs::remove_dir_all(&t.path)
                            } else {
                                std::fs::remove_file(&t.path)
                            };
                            match r {
                                Ok(()) => {}
                                Err(e) if e.kind() == ErrorKind::NotFound => {}
                                Err(e) => return Err(Error::io("remove", &t.path, e)),
                            }
                        }
                        done.push(t);
                    }
                    Ok(done)
                })
            })
        })?;
        self.invalidate_index_cache();
        Ok(ResetSummary {
            home: root,
            forced: true,
            targets,
            kept: self.reset_kept(scope),
        })
    }
}
