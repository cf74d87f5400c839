//! `burn`: the command line of the relayburn ledger. All storage logic is
//! in the `relayburn-ledger` library; this binary parses arguments, calls
//! it, and prints.

mod cli;
mod commands;
mod format;
mod progress;
mod since;
mod waiting;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line naming the file and the cause; no backtrace.
            let _ = writeln!(std::io::stderr(), "burn: {e:#}");
            ExitCode::from(1)
        }
    }
}
