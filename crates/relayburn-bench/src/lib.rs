//! Benchmarks support for relayburn-ledger: a generator of realistic,
//! deterministic ledger homes that benchmarks and tests can call.

pub mod gen;
