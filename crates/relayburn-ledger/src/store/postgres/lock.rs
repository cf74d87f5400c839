//! Named locks on PostgreSQL advisory locks.
//!
//! A lock is a session-level advisory lock (`pg_try_advisory_lock`) taken
//! on a connection kept for locks alone, so a long query of the store
//! neither waits for it nor holds it. The key is a hash of the store's
//! schema and the lock name. The server releases a dead client's locks
//! with its session: there are no rows to go stale and nothing to break.
//!
//! Advisory locks are re-entrant per session, and all threads of a store
//! share its lock connection, so threads of one store first claim the
//! name among themselves; a thread already holding it simply runs.
//! Waiting follows the reference's budget (fast retries, then slow ones).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use postgres::Client;

use super::advisory_key;
use crate::error::{Error, Result};
use crate::lock::LockOptions;
use crate::team::Target;

thread_local! {
    /// `(store, lock name)` held by this thread (re-entrancy).
    static HELD: RefCell<HashSet<(String, String)>> = RefCell::new(HashSet::new());
}

pub(super) struct Locks {
    target: Target,
    schema: String,
    /// The store as the re-entrancy marks of [`HELD`] name it.
    ident: String,
    conn: Mutex<Option<Client>>,
    local: crate::store::LocalClaims,
}

impl Locks {
    pub(super) fn new(target: Target, schema: String) -> Locks {
        Locks {
            ident: format!("{}\0{schema}", target.name()),
            target,
            schema,
            conn: Mutex::new(None),
            local: crate::store::LocalClaims::default(),
        }
    }

    fn conn(&self) -> MutexGuard<'_, Option<Client>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, name: &str) -> i64 {
        advisory_key(&["relayburn lock", &self.schema, name])
    }

    /// Run `f` holding lock `name`.
    pub(super) fn with_lock(
        &self,
        name: &str,
        options: &LockOptions,
        f: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let held = (self.ident.clone(), name.to_string());
        if HELD.with(|h| h.borrow().contains(&held)) {
            return f();
        }
        let _claim = self.local.claim(name);
        let key = self.key(name);
        self.acquire(name, key, options)?;
        HELD.with(|h| h.borrow_mut().insert(held.clone()));
        let _guard = Guard {
            locks: self,
            key,
            held,
        };
        f()
    }

    /// Try, then try again after each delay of the budget.
    fn acquire(&self, name: &str, key: i64, o: &LockOptions) -> Result<()> {
        let total = o.fast_retries + o.slow_retries;
        for attempt in 0..=total {
            if self.try_acquire(key)? {
                return Ok(());
            }
            if attempt == total {
                break;
            }
            std::thread::sleep(o.delay(attempt));
        }
        Err(Error::PostgresLockTimeout {
            target: self.target.name().to_string(),
            name: name.to_string(),
            attempts: total + 1,
            budget_ms: o.budget_ms(),
        })
    }

    fn try_acquire(&self, key: i64) -> Result<bool> {
        let mut g = self.conn();
        if g.as_ref().is_none_or(Client::is_closed) {
            *g = Some(self.target.connect()?);
        }
        let Some(c) = g.as_mut() else {
            return Err(Error::Internal("lock connection missing".into()));
        };
        match c.query_one("SELECT pg_try_advisory_lock($1)", &[&key]) {
            Ok(r) => Ok(r.get(0)),
            Err(e) => {
                // A broken connection took its locks with it.
                *g = None;
                Err(self.target.db_error("take lock", e))
            }
        }
    }

    fn release(&self, key: i64) {
        let mut g = self.conn();
        if let Some(c) = g.as_mut() {
            if c.query_one("SELECT pg_advisory_unlock($1)", &[&key])
                .is_err()
            {
                *g = None;
            }
        }
    }
}

/// The advisory lock and this thread's re-entrancy mark; dropped (also on
/// a panic in the body) it releases both.
struct Guard<'a> {
    locks: &'a Locks,
    key: i64,
    held: (String, String),
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        HELD.with(|h| h.borrow_mut().remove(&self.held));
        self.locks.release(self.key);
    }
}
