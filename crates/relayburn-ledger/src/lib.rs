//! The relayburn ledger: the local store in which `burn` records what AI
//! coding agents spent.
//!
//! The on-disk format is shared with the TypeScript package
//! `@relayburn/ledger` 1.10.0; both can work on one home at the same time.
//! See `SPEC.md` in the repository for the contract each module keeps.

pub mod archive;
pub mod content;
pub mod demo;
pub mod error;
pub(crate) mod fsio;
pub mod home;
pub mod index;
pub mod interrupt;
pub mod js;
pub mod json;
pub mod jsonl;
pub mod ledger;
pub mod lock;
pub mod query;
pub mod records;
pub mod rewrite;
pub mod state;
pub mod store;
pub mod sys;
pub mod team;
pub mod time;
pub mod writer;

pub use error::{Error, Result};
pub use home::{Env, LedgerHome, Storage, StorageKind};
pub use json::{JsString, Object, Value};
pub use ledger::Ledger;
pub use query::Query;
pub use records::Kind;
pub use state::check;
pub use store::{PostgresStore, SqliteStore, Store};
