//! Benchmarks support for relayburn-ledger: a generator of realistic,
//! deterministic ledger homes, the SQLite floor of a full rebuild, and the
//! `run` benchmarks of the performance goals.

pub mod floor;
pub mod gen;
pub mod run;
