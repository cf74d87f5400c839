//! `relayburn-bench`: generate realistic ledger homes and run the
//! benchmarks of the performance goals.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use relayburn_bench::gen::{self, GenOptions, StampMix};

/// The allocator `burn` uses, so that rebuild figures are the command's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use relayburn_bench::run::{
    append, child, incremental, lock, matrix, query, rebuild, sqlite_store, team, ShapeArgs,
};

#[derive(Parser)]
#[command(name = "relayburn-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a deterministic synthetic home (ledger, index sidecars,
    /// content sidecars) whose line mix follows real ledgers.
    Gen(GenArgs),
    /// Run a benchmark and print its figures with the command line.
    #[command(subcommand)]
    Run(RunCommand),
    /// Work the benchmarks do in child processes.
    #[command(subcommand, hide = true)]
    Child(child::ChildCommand),
}

#[derive(Subcommand)]
enum RunCommand {
    /// Full rebuild of one home, beside the SQLite floor for the same rows.
    Rebuild(rebuild::RebuildArgs),
    /// Full rebuild of homes that differ only in their stamp lines.
    Stamps(rebuild::StampsArgs),
    /// Full rebuild of generated ledgers of several shapes, each beside
    /// its SQLite floor.
    Matrix(matrix::MatrixArgs),
    /// Full rebuild at several sizes: time and peak memory per size.
    Scaling(rebuild::ScalingArgs),
    /// Incremental build of a tail appended after a full build.
    Incremental(incremental::IncrementalArgs),
    /// Turns appended per second with dedup, by batch size.
    Append(append::AppendArgs),
    /// Ledger and archive query latency.
    Query(query::QueryArgs),
    /// Lock acquire+release, alone and with contending processes.
    Lock(lock::LockArgs),
    /// Team ledger: push vs plain COPY, tail push, team query by session.
    Team(team::TeamArgs),
    /// The SQLite storage backend: 100-turn appends and session queries
    /// on a store holding a million turns.
    SqliteStore(sqlite_store::SqliteStoreArgs),
}

#[derive(Args)]
struct GenArgs {
    /// Ledger size without stamp lines: 150MB, 1.5GB, 200MiB, or bytes.
    #[arg(long, value_parser = parse_size)]
    size: u64,
    /// Seed of the random stream; the same arguments give the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The home directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Which stamp lines to write.
    #[arg(long, value_enum, default_value_t = StampMix::Mixed)]
    stamps: StampMix,
    /// Replace the ledger, index, content and archive files already there.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    shape: ShapeArgs,
}

fn parse_size(s: &str) -> Result<u64, String> {
    gen::parse_size(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Gen(a) => run_gen(a),
        Command::Run(r) => match r {
            RunCommand::Rebuild(a) => rebuild::run_rebuild(a),
            RunCommand::Stamps(a) => rebuild::run_stamps(a),
            RunCommand::Scaling(a) => rebuild::run_scaling(a),
            RunCommand::Matrix(a) => matrix::run_matrix(a),
            RunCommand::Incremental(a) => incremental::run_incremental(a),
            RunCommand::Append(a) => append::run_append(a),
            RunCommand::Query(a) => query::run_query(a),
            RunCommand::Lock(a) => lock::run_lock(a),
            RunCommand::Team(a) => team::run_team(a),
            RunCommand::SqliteStore(a) => sqlite_store::run_sqlite_store(a),
        },
        Command::Child(c) => child::run(c),
    }
}

fn run_gen(a: GenArgs) -> anyhow::Result<()> {
    let opts = GenOptions {
        target_bytes: a.size,
        seed: a.seed,
        stamps: a.stamps,
        shape: a.shape.shape(),
        overwrite: a.force,
    };
    let started = Instant::now();
    let report = gen::generate(&a.out, &opts)
        .with_context(|| format!("generating a ledger in {}", a.out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    println!("{report}");
    println!(
        "wrote {} in {:.2} s ({:.0} MB/s)",
        a.out.display(),
        secs,
        report.total_bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}
