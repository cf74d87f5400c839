//! The team ledger: `burn push` into an empty database against a plain
//! `COPY` of the same rows, a 1 % tail push, and team queries by session
//! with several machines' ledgers loaded.
//!
//! Each run creates its databases on the server given by `--postgres`
//! (a role that may create databases) and drops them at the end.

use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use postgres::{Client, NoTls};
use relayburn_ledger::team::push::Quiet;
use relayburn_ledger::team::query::TeamLedger;
use relayburn_ledger::team::schema::TABLES;
use relayburn_ledger::team::source::{LedgerFile, PushSource};
use relayburn_ledger::team::{PushOptions, Target};
use relayburn_ledger::{Kind, Ledger, LedgerHome, Query};

use super::{count, generate, loadavg, mb, secs, HomeArgs, OutArgs, Section, Summary};

#[derive(Args, Debug)]
pub struct TeamArgs {
    /// Superuser (or CREATEDB) connection to the server to measure.
    #[arg(long, value_name = "URL")]
    pub postgres: String,
    /// Ledger size of each machine (--home is ignored: one home per machine is generated).
    #[command(flatten)]
    pub home: HomeArgs,
    /// Machines whose ledgers are loaded for the query figures.
    #[arg(long, default_value_t = 8)]
    pub machines: usize,
    /// Size of the tail pushed after the rest, in percent of the ledger.
    #[arg(long, default_value_t = 1.0)]
    pub tail_percent: f64,
    /// Team queries by session timed.
    #[arg(long, default_value_t = 300)]
    pub query_reps: usize,
    /// Keep the generated homes here (reused when present).
    #[arg(long)]
    pub work_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// A database created for the run, dropped at the end.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Db {
    fn create(admin: &str, name: &str) -> Result<Db> {
        let name = format!("bench_{name}_{}", std::process::id());
        let mut c = Client::connect(admin, NoTls).context("connecting as admin")?;
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin, String::new()),
        };
        let Some(slash) = base.rfind('/') else {
            bail!("--postgres must be a postgres://…/database URL");
        };
        let url = format!("{}/{name}{query}", &base[..slash]);
        Ok(Db {
            admin: admin.to_string(),
            name,
            url,
        })
    }

    fn client(&self) -> Result<Client> {
        Client::connect(&self.url, NoTls).context("connecting to the bench database")
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = Client::connect(&self.admin, NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn push(ledger: &Ledger, url: &str, machine: &str) -> Result<relayburn_ledger::team::PushSummary> {
    let opts = PushOptions {
        machine_id: Some(machine.into()),
        ..PushOptions::default()
    };
    Ok(ledger.push_to(&Target::parse(url)?, &opts, &mut Quiet)?)
}

/// Every record table's rows in COPY text format (the schema's order).
fn export(c: &mut Client) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut out = Vec::new();
    for t in TABLES {
        if matches!(t, "schema_state" | "locks" | "push_cursors" | "content") {
            continue;
        }
        let mut buf = Vec::new();
        c.copy_out(format!("COPY {t} TO STDOUT").as_str())?
            .read_to_end(&mut buf)?;
        out.push((t, buf));
    }
    Ok(out)
}

fn home_for(a: &TeamArgs, dir: &Path, i: usize) -> Result<LedgerHome> {
    let path = dir.join(format!("machine-{i}"));
    if !path.join("ledger.jsonl").exists() {
        generate(
            &path,
            a.home.size,
            a.home.seed + i as u64,
            a.home.stamps,
            a.home.shape.shape(),
        )?;
    }
    Ok(LedgerHome::new(path))
}

pub fn run_team(a: TeamArgs) -> Result<()> {
    let temp;
    let dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut s = Section::new("Team ledger (PostgreSQL)");
    if let Some(pw) = postgres::Config::from_str(&a.postgres).ok().and_then(|c| {
        c.get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }) {
        s.redact(&pw);
    }
    let mut c0 = Client::connect(&a.postgres, NoTls).context("connecting to --postgres")?;
    let version: String = c0.query_one("SHOW server_version", &[])?.get(0);
    drop(c0);
    s.note(format!(
        "PostgreSQL {version}, reached over loopback TCP; fsync as the server is configured"
    ));
    let home0 = home_for(&a, &dir, 0)?;
    let bytes = std::fs::metadata(home0.ledger())?.len();
    s.note(format!(
        "{} machine ledgers of {} each (generator seeds {}..{}, stamps {:?})",
        a.machines,
        mb(bytes),
        a.home.seed,
        a.home.seed + a.machines as u64 - 1,
        a.home.stamps
    ));
    let ledger0 = Ledger::open(home0.clone())?;

    // Push into an empty database, then the same rows by plain COPY.
    let full = Db::create(&a.postgres, "push")?;
    eprintln!("push of {} into an empty database …", mb(bytes));
    let load = loadavg();
    let t = Instant::now();
    let summary = push(&ledger0, &full.url, "machine-0")?;
    let push_secs = t.elapsed().as_secs_f64();
    let rows = summary.rows_inserted();
    s.row(
        "push into an empty database",
        format!(
            "{} ({} rows, {:.0} rows/s, {:.1} MB/s; load {load})",
            secs(push_secs),
            count(rows),
            rows as f64 / push_secs,
            bytes as f64 / 1e6 / push_secs
        ),
    );
    let data = export(&mut full.client()?)?;
    let plain = Db::create(&a.postgres, "copy")?;
    {
        let target = Target::parse(&plain.url)?;
        TeamLedger::open(&target)?; // the same schema, empty
        let mut c = plain.client()?;
        eprintln!("plain COPY of the same rows …");
        let load = loadavg();
        let t = Instant::now();
        let mut tx = c.transaction()?;
        for (table, buf) in &data {
            let mut w = tx.copy_in(format!("COPY {table} FROM STDIN").as_str())?;
            w.write_all(buf)?;
            w.finish()?;
        }
        tx.commit()?;
        let copy_secs = t.elapsed().as_secs_f64();
        s.row(
            "plain COPY of the same rows into the same empty schema",
            format!("{} (load {load})", secs(copy_secs)),
        );
        s.row(
            "push / plain COPY (goal ≤ 1.5 ×)",
            format!("{:.2} ×", push_secs / copy_secs),
        );
    }
    drop(plain);

    // The tail: take the last rows of machine 0 and its cursor back to a
    // line start `tail_percent` from the end, then push again.
    let ledger_file = LedgerFile::new(home0.ledger());
    let cut = {
        let at = (bytes as f64 * (1.0 - a.tail_percent / 100.0)) as u64;
        let mut f = std::fs::File::open(home0.ledger())?;
        use std::io::{Seek, SeekFrom};
        f.seek(SeekFrom::Start(at.saturating_sub(1)))?;
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf)?;
        let nl = buf[..n]
            .iter()
            .position(|&b| b == b'\n')
            .context("no line end near the cut")?;
        at.saturating_sub(1) + nl as u64 + 1
    };
    let check = ledger_file
        .checkpoint(cut)?
        .context("no checkpoint at the cut")?;
    let mut c = full.client()?;
    for t in TABLES {
        if matches!(t, "schema_state" | "locks" | "push_cursors" | "content") {
            continue;
        }
        c.execute(
            format!("DELETE FROM {t} WHERE ledger_offset >= $1").as_str(),
            &[&(cut as i64)],
        )?;
    }
    c.execute(
        "UPDATE push_cursors SET ledger_offset = $1, check_hash = $2",
        &[&(cut as i64), &check],
    )?;
    c.batch_execute("VACUUM ANALYZE")?;
    let mut tails = Vec::new();
    let load = loadavg();
    let t = Instant::now();
    let tail = push(&ledger0, &full.url, "machine-0")?;
    tails.push(t.elapsed().as_secs_f64());
    s.row(
        format!("push of a {} % tail (goal ≤ 1 s)", a.tail_percent),
        format!(
            "{} ({} rows, {} bytes; load {load})",
            secs(tails[0]),
            count(tail.rows_inserted()),
            count(bytes - cut)
        ),
    );
    drop(c);

    // Team queries by session with every machine loaded.
    for i in 1..a.machines {
        let home = home_for(&a, &dir, i)?;
        eprintln!("loading machine {i} …");
        push(&Ledger::open(home)?, &full.url, &format!("machine-{i}"))?;
    }
    let mut c = full.client()?;
    c.batch_execute("ANALYZE")?;
    let turns: i64 = c.query_one("SELECT count(*) FROM turns", &[])?.get(0);
    let sessions: Vec<String> = c
        .query(
            "SELECT session_id FROM (SELECT DISTINCT session_id FROM turns) s ORDER BY md5(session_id) LIMIT $1",
            &[&(a.query_reps as i64)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(c);
    let mut team = TeamLedger::open(&Target::parse(&full.url)?)?;
    let mut samples = Vec::with_capacity(sessions.len());
    let mut found = 0usize;
    let load = loadavg();
    for sid in &sessions {
        let q = Query {
            session_id: Some(sid.clone()),
            ..Query::default()
        };
        let t = Instant::now();
        team.query(Kind::Turn, &q, None, |_| {
            found += 1;
            Ok(())
        })?;
        samples.push(t.elapsed().as_secs_f64());
    }
    s.row(
        format!(
            "team query by session, {} machines, {} turns loaded (goal p99 ≤ 10 ms)",
            a.machines,
            count(turns as u64)
        ),
        format!(
            "{} ({} sessions, {} turns returned; one connection; load {load})",
            Summary::of(&samples).line(),
            sessions.len(),
            count(found as u64)
        ),
    );
    s.emit(&a.out)
}
