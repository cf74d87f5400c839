//! Time an archive rebuild or incremental build of a home:
//! `cargo run --release --example archive_rebuild -- <home> [build|rebuild]`.

use std::time::Instant;

use relayburn_ledger::archive::{build_archive, rebuild_archive};
use relayburn_ledger::lock::Locks;
use relayburn_ledger::LedgerHome;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let home = LedgerHome::new(
        args.next()
            .ok_or("usage: archive_rebuild <home> [build|rebuild]")?,
    );
    let what = args.next().unwrap_or_else(|| "rebuild".into());
    let locks = Locks::new(home.clone());
    let started = Instant::now();
    let result = match what.as_str() {
        "build" => build_archive(&home, &locks)?,
        _ => rebuild_archive(&home, &locks)?,
    };
    eprintln!("{what}: {:.2?}", started.elapsed());
    println!("{}", result.to_value().to_json());
    Ok(())
}
