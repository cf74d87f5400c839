//! Each command: call the library, print its result.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use relayburn_ledger::archive::{plan_turn_read, ArchiveStatus, BuildResult, TurnPlan, TurnSource};
use relayburn_ledger::json::{to_json_pretty, Object, Value};
use relayburn_ledger::state::check::CheckReport;
use relayburn_ledger::state::reset::ResetScope;
use relayburn_ledger::state::status::StateStatus;
use relayburn_ledger::store::{self, Store};
use relayburn_ledger::{Env, Kind, Ledger, LedgerHome, Query, Storage, StorageKind};

use relayburn_ledger::team::push::{Phase, PushObserver, PushProgress};
use relayburn_ledger::team::query::TeamLedger;
use relayburn_ledger::team::{PushOptions, Target};

use crate::cli::{
    ArchiveAction, Cli, Command, CopyTarget, DemoArgs, From, PushArgs, QueryArgs, QueryKind,
    RebuildTarget, StampArgs, StateCommand,
};
use crate::format::{bytes, int, plural};
use crate::progress::Progress;
use crate::since;

/// Exit code for a usage error (as clap uses).
pub const USAGE: u8 = 2;

/// A usage error: the command line asks for something invalid. `main`
/// prints it as one line and exits with [`USAGE`].
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage_err(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

struct Ctx {
    /// The storage backend `RELAYBURN_STORAGE` selects.
    store: Box<dyn Store>,
    home: LedgerHome,
    quiet: bool,
    env: Env,
}

impl Ctx {
    fn progress(&self, json: bool, msg: &str) -> Progress {
        Progress::new(!self.quiet && !json, msg)
    }

    /// The file ledger, for what only file storage has (the archive,
    /// index files); the reference's error under another backend.
    fn ledger(&self) -> Result<&Ledger> {
        Ok(self.store.require_file()?)
    }

    /// The home's own files (`push.json`), whatever the backend.
    fn home_ledger(&self) -> Result<Ledger> {
        Ok(Ledger::open(self.home.clone())?)
    }

    /// `config.json` of the home, whatever the backend.
    fn config(&self) -> Result<relayburn_ledger::state::LoadedConfig> {
        Ok(Ledger::open(self.home.clone())?.load_config(&self.env)?)
    }
}

fn open(home: Option<PathBuf>, env: &Env, quiet: bool, must_exist: bool) -> Result<Ctx> {
    let home = match home {
        Some(h) => LedgerHome::new(h),
        None => env.ledger_home()?,
    };
    if must_exist {
        home.require_existing()?;
    }
    let storage = env.storage_at(home.clone())?;
    Ok(Ctx {
        store: store::open_observed(&storage, (!quiet).then(crate::waiting::announcer))?,
        home,
        quiet,
        env: env.clone(),
    })
}

/// Run a parsed command line; the exit code on success.
pub fn run(cli: Cli) -> Result<u8> {
    let env = Env::capture();
    if let Command::Demo(args) = &cli.command {
        return demo(cli.home.clone(), cli.quiet, &env, args);
    }
    // Only a write may start a new home.
    let must_exist = !matches!(cli.command, Command::Stamp(_));
    let ctx = open(cli.home, &env, cli.quiet, must_exist)?;
    match cli.command {
        Command::State(s) => match s.command {
            None => status(&ctx, s.json, None),
            Some(StateCommand::Status { json, postgres }) => status(&ctx, json || s.json, postgres),
            Some(StateCommand::Rebuild(r)) => rebuild(&ctx, r.target),
            Some(StateCommand::Prune { days, force, json }) => prune(&ctx, days, force, json),
            Some(StateCommand::Reset {
                force,
                delete_content,
                json,
            }) => reset(&ctx, force, delete_content, json),
            Some(StateCommand::Check { json, repair }) => check(&ctx, json, repair),
            Some(StateCommand::Copy { to, json }) => copy(&ctx, to, json),
        },
        Command::Query(q) => query(&ctx, q),
        Command::Stamp(s) => stamp(&ctx, s),
        Command::Push(p) => push(&ctx, p),
        Command::Demo(_) => unreachable!("handled above"),
    }
}

fn print_json(v: &Value) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", to_json_pretty(v))?;
    Ok(0)
}

fn print_lines(lines: &[String]) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(0)
}

// --- status ---------------------------------------------------------------

fn status(ctx: &Ctx, json: bool, postgres: Option<String>) -> Result<u8> {
    let target = team_target(ctx, postgres, false)?;
    let team = relayburn_ledger::team::push_status(&ctx.home_ledger()?, target.as_ref())?;
    let with_team = |mut v: Value| {
        if let (Some(o), Some(team)) = (v.as_object_mut(), &team) {
            o.insert("team", team.clone());
        }
        v
    };
    let (value, mut lines) = if let Some(sq) = ctx.store.as_sqlite() {
        let s = sq.status()?;
        (s.to_value(), sqlite_status_lines(&s))
    } else if let Some(pg) = ctx.store.as_postgres() {
        let s = pg.status()?;
        (s.to_value(), postgres_status_lines(&s))
    } else {
        let p = ctx.progress(json, "checking derived state");
        let s = ctx.ledger()?.state_status(&mut p.callback())?;
        p.finish();
        (s.to_value(), status_lines(&s))
    };
    if json {
        return print_json(&with_team(value));
    }
    if let Some(team) = &team {
        lines.extend(team_lines(team));
    }
    print_lines(&lines)
}

/// The server from a flag or `$RELAYBURN_POSTGRES_URL`; required or not.
fn team_target(ctx: &Ctx, flag: Option<String>, required: bool) -> Result<Option<Target>> {
    let url = flag.or_else(|| ctx.env.postgres_url.as_ref().map(|s| s.0.clone()));
    match url {
        Some(u) => Ok(Some(Target::parse(&u)?)),
        None if required => bail!(
            "no team ledger given: pass --to/--postgres postgres://… or set RELAYBURN_POSTGRES_URL"
        ),
        None => Ok(None),
    }
}

fn team_lines(team: &Value) -> Vec<String> {
    let text = |v: Option<&Value>| v.map(|v| v.js_to_string().into_owned()).unwrap_or_default();
    let mut l = vec![format!(
        "team: machine id {}",
        team.get("machineId")
            .and_then(Value::as_str)
            .unwrap_or("(not pushed yet)")
    )];
    if let Some(pushes) = team.get("pushes").and_then(Value::as_object) {
        for (server, p) in pushes.iter() {
            l.push(format!(
                "  last push to {}: {} (ledger byte {})",
                server.to_lossy(),
                text(p.get("pushedAt")),
                text(p.get("offset"))
            ));
        }
    }
    if let Some(server) = team.get("server") {
        let name = text(server.get("target"));
        if let Some(e) = server.get("error") {
            l.push(format!("  {name}: unavailable: {}", text(Some(e))));
        }
        for m in server
            .get("machines")
            .and_then(Value::as_array)
            .unwrap_or(&[])
        {
            l.push(format!(
                "  {name}: {} last pushed {} ({} rows stored)",
                text(m.get("machineId")),
                text(m.get("lastPushAt")),
                text(m.get("rowsInserted"))
            ));
        }
    }
    l
}

fn postgres_status_lines(s: &relayburn_ledger::store::postgres::PostgresStatus) -> Vec<String> {
    vec![
        format!(
            "postgres store: {} (schema {}, version {})",
            s.target, s.schema, s.schema_version
        ),
        format!(
            "  rows: {}",
            s.rows
                .iter()
                .map(|(t, n, own)| format!("{} {t} ({} written here)", int(*n), int(*own)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "  content: {} session{}",
            int(s.content_sessions),
            plural(s.content_sessions)
        ),
    ]
}

fn sqlite_status_lines(s: &relayburn_ledger::store::sqlite::SqliteStatus) -> Vec<String> {
    let mut l = vec![
        format!(
            "sqlite store: {} ({}, schema version {})",
            s.path.display(),
            bytes(s.bytes, "bytes"),
            s.schema_version
        ),
        format!(
            "  rows: {}",
            s.rows
                .iter()
                .map(|(t, n)| format!("{} {t}", int(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        format!(
            "  content: {} session{}",
            int(s.content_sessions),
            plural(s.content_sessions)
        ),
    ];
    for (name, age, pid) in &s.locks {
        l.push(format!(
            "  lock {name}: {age} ms old, pid {}",
            pid.map_or("unknown".to_string(), |p| p.to_string())
        ));
    }
    l
}

fn index_line(s: &relayburn_ledger::state::status::IndexFileStatus, noun: &str) -> String {
    if !s.exists {
        return format!("missing at {}", s.path.display());
    }
    format!(
        "{} {noun}, {} bytes at {}",
        int(s.entries),
        int(s.bytes),
        s.path.display()
    )
}

fn status_lines(s: &StateStatus) -> Vec<String> {
    use relayburn_ledger::Kind;
    let mut l = vec!["derived state:".to_string(), "ledger:".to_string()];
    if s.ledger.exists {
        l.push(format!(
            "  {}: {} bytes",
            s.ledger_path.display(),
            int(s.ledger.bytes)
        ));
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .map(|k| format!("{} {}", int(s.ledger.count(*k)), k.as_str()))
            .collect();
        l.push(format!("  lines: {}", kinds.join(", ")));
        if s.ledger.other > 0 {
            l.push(format!(
                "  skipped: {} line{} not of a known kind or not JSON",
                int(s.ledger.other),
                plural(s.ledger.other)
            ));
        }
    } else {
        l.push(format!("  missing at {}", s.ledger_path.display()));
    }
    l.push("index:".into());
    l.push(format!("  id index: {}", index_line(&s.ids, "hashes")));
    l.push(format!(
        "  content index: {}",
        index_line(&s.content_index, "fingerprints")
    ));
    l.push("content:".into());
    if s.content.exists {
        l.push(format!("  path: {}", s.content.path.display()));
    } else {
        l.push(format!(
            "  status: not built yet at {}",
            s.content.path.display()
        ));
    }
    l.push(format!(
        "  sidecars: {} files, {} non-empty sessions, {} bytes",
        int(s.content.files),
        int(s.content.sessions),
        int(s.content.bytes)
    ));
    l.push(format!(
        "  user turns: {} ledger rows",
        int(s.ledger.count(Kind::UserTurn))
    ));
    let turns = s.ledger.count(Kind::Turn);
    let missing = turns - s.ledger.classified;
    l.push("classifier:".into());
    l.push(format!(
        "  turns: {} classified / {} total{}",
        int(s.ledger.classified),
        int(turns),
        if missing > 0 {
            format!(" ({} missing)", int(missing))
        } else {
            " (complete)".into()
        }
    ));
    l.extend(archive_status_lines(&s.archive));
    l
}

fn archive_status_lines(s: &ArchiveStatus) -> Vec<String> {
    let v = s.to_value();
    let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0) as u64;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let mut l = vec![format!(
        "archive: {}",
        text("archivePath").unwrap_or_default()
    )];
    if v.get("exists").and_then(Value::as_bool) != Some(true) {
        l.push("  status: not built yet - run `burn state rebuild archive`".into());
        return l;
    }
    if let Some(p) = &s.problem {
        l.push(format!("  status: cannot answer - {p}"));
        if s.last_built_at.is_none() {
            // Nothing of it could be read.
            return l;
        }
    }
    l.push(format!("  schema version: {}", num("archiveVersion")));
    l.push(format!(
        "  ledger cursor: {} / {} bytes{}",
        int(num("ledgerOffsetBytes")),
        int(num("ledgerSizeBytes")),
        if v.get("upToDate").and_then(Value::as_bool) == Some(true) {
            " (up to date)"
        } else {
            " (tail pending)"
        }
    ));
    if let Some(t) = text("lastBuiltAt") {
        l.push(format!("  last build: {t}"));
    }
    if let Some(t) = text("lastRebuildAt") {
        l.push(format!("  last full rebuild: {t}"));
    }
    let rc = v.get("rowCounts");
    let rn = |k: &str| {
        rc.and_then(|r| r.get(k))
            .and_then(Value::as_f64)
            .unwrap_or(0.0) as u64
    };
    l.push("  rows:".into());
    l.push(format!("    sessions:           {}", int(rn("sessions"))));
    l.push(format!("    turns:              {}", int(rn("turns"))));
    l.push(format!("    tool_calls:         {}", int(rn("toolCalls"))));
    l.push(format!(
        "    tool_result_events: {}",
        int(rn("toolResultEvents"))
    ));
    l.push(format!(
        "    compactions:        {}",
        int(rn("compactions"))
    ));
    l
}

// --- rebuild --------------------------------------------------------------

fn needs_readers(target: &str) -> Result<u8> {
    eprintln!(
        "burn state rebuild {target}: needs the session-log readers (Claude Code, Codex, OpenCode), \
         which are not part of this tool; use the TypeScript `burn` for this target"
    );
    Ok(USAGE)
}

fn rebuild(ctx: &Ctx, target: RebuildTarget) -> Result<u8> {
    match target {
        RebuildTarget::Index { json } => {
            let (lines, v) = rebuild_index(ctx, json)?;
            if json {
                return print_json(&v);
            }
            print_lines(&lines)
        }
        RebuildTarget::Archive {
            action,
            full,
            vacuum,
            json,
        } => {
            let vacuum = vacuum || action == Some(ArchiveAction::Vacuum);
            if vacuum && full {
                eprintln!("burn state rebuild archive: --full and --vacuum cannot be combined");
                return Ok(USAGE);
            }
            if vacuum {
                return vacuum_archive(ctx, json);
            }
            let r = build_archive(ctx, full, json)?;
            if json {
                return print_json(&r.report_value());
            }
            print_lines(&build_lines(&r, full))
        }
        RebuildTarget::All { force: _, json } => {
            let (mut lines, index) = rebuild_index(ctx, json)?;
            let r = build_archive(ctx, false, json)?;
            if json {
                let mut o = Object::new();
                o.insert("index", index);
                o.insert("archive", r.report_value());
                return print_json(&Value::Object(o));
            }
            lines.extend(build_lines(&r, false));
            print_lines(&lines)
        }
        RebuildTarget::Classify { .. } => needs_readers("classify"),
        RebuildTarget::Content => needs_readers("content"),
    }
}

/// Rebuild the index: the human lines and the JSON result.
fn rebuild_index(ctx: &Ctx, json: bool) -> Result<(Vec<String>, Value)> {
    let p = ctx.progress(json, "rebuilding ledger indexes");
    let r = ctx
        .store
        .require_file_for("state rebuild index", "index sidecars")?
        .rebuild_index_with_progress(&mut p.callback())?;
    p.finish();
    let mut lines = vec![format!(
        "rebuilt ledger index: {} id hashes, {} content fingerprints",
        int(r.ids as u64),
        int(r.content as u64)
    )];
    if r.skipped > 0 {
        lines.push(format!(
            "  skipped {} record{} missing required fields (see `burn state check`)",
            int(r.skipped as u64),
            plural(r.skipped as u64)
        ));
    }
    let mut v = r.to_json();
    if let Some(o) = v.as_object_mut() {
        o.insert("skipped", Value::Number(r.skipped as f64));
    }
    Ok((lines, v))
}

fn build_archive(ctx: &Ctx, full: bool, json: bool) -> Result<BuildResult> {
    let p = ctx.progress(
        json,
        if full {
            "rebuilding archive from ledger"
        } else {
            "building archive tail"
        },
    );
    let report = |done: u64, total: u64| p.bytes(done, total);
    // Ctrl-C or SIGTERM stops the build cleanly instead of killing it
    // mid-way (`main` exits 128 + the signal).
    let _signals = relayburn_ledger::interrupt::catch_signals();
    let r = if full {
        ctx.ledger()?.rebuild_archive_with_progress(&report)?
    } else {
        ctx.ledger()?.build_archive_with_progress(&report)?
    };
    p.finish();
    Ok(r)
}

fn build_lines(r: &BuildResult, full: bool) -> Vec<String> {
    let mut l = vec![if full {
        "rebuilt archive from ledger".to_string()
    } else {
        "archive build complete".to_string()
    }];
    l.push(format!(
        "  {} turn{} applied, {} session{} touched, {} stamp{}, {} compaction{}, {} tool-result event{}",
        int(r.turns_applied),
        plural(r.turns_applied),
        int(r.sessions_touched),
        plural(r.sessions_touched),
        int(r.stamps_applied),
        plural(r.stamps_applied),
        int(r.compactions_applied),
        plural(r.compactions_applied),
        int(r.tool_result_events_applied),
        plural(r.tool_result_events_applied),
    ));
    l.push(format!(
        "  {} bytes scanned from ledger tail",
        int(r.scanned_bytes)
    ));
    if let Some(v) = r.replaced_version {
        l.push(format!(
            "  replaced an archive of older version {v} by a version {} one",
            relayburn_ledger::archive::ARCHIVE_VERSION
        ));
    }
    if let Some(why) = &r.restarted {
        l.push(format!("  rebuilt from byte 0: {why}"));
    }
    if r.malformed_count > 0 {
        l.push(format!(
            "  skipped {} line{} that {} not JSON (see `burn state check`):",
            int(r.malformed_count),
            plural(r.malformed_count),
            if r.malformed_count == 1 { "is" } else { "are" }
        ));
        for (offset, why) in r.malformed.iter().take(10) {
            l.push(format!("    byte {offset}: {why}"));
        }
    }
    if r.skipped_count > 0 {
        l.push(format!(
            "  skipped {} malformed record{}:",
            int(r.skipped_count),
            plural(r.skipped_count)
        ));
        for s in r.skipped.iter().take(10) {
            l.push(format!(
                "    byte {}: {} ({})",
                s.offset,
                s.kind.as_str(),
                s.reason
            ));
        }
    }
    l
}

fn vacuum_archive(ctx: &Ctx, json: bool) -> Result<u8> {
    let p = ctx.progress(json, "vacuuming archive");
    let r = ctx.ledger()?.vacuum_archive()?;
    p.finish();
    let v = r.to_value();
    if json {
        return print_json(&v);
    }
    let num = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0) as u64;
    if v.get("existed").and_then(Value::as_bool) != Some(true) {
        println!(
            "archive: no archive at {} - run `burn state rebuild archive` first",
            v.get("archivePath").and_then(Value::as_str).unwrap_or("")
        );
        return Ok(0);
    }
    println!(
        "archive: vacuumed {} -> {} (reclaimed {})",
        bytes(num("beforeBytes"), "B"),
        bytes(num("afterBytes"), "B"),
        bytes(num("reclaimedBytes"), "B")
    );
    Ok(0)
}

// --- prune ----------------------------------------------------------------

/// `--days`: a number of days (fractions allowed), or `forever`; a
/// negative number means forever, as in the reference.
fn parse_days(s: &str) -> Option<Option<Duration>> {
    let t = s.trim().to_ascii_lowercase();
    if t == "forever" {
        return Some(None);
    }
    let n: f64 = t.parse().ok()?;
    if !n.is_finite() {
        return None;
    }
    if n < 0.0 {
        return Some(None);
    }
    // Beyond what a duration holds is not a retention anyone means.
    Duration::try_from_secs_f64(n * 86_400.0).ok().map(Some)
}

fn prune(ctx: &Ctx, days: Option<String>, force: bool, json: bool) -> Result<u8> {
    let retention = match days {
        Some(d) => match parse_days(&d) {
            Some(r) => r,
            None => {
                eprintln!(
                    "burn state prune: invalid --days value: {d:?} (expected a number or \"forever\")"
                );
                return Ok(USAGE);
            }
        },
        None => {
            let cfg = ctx.config()?;
            for w in &cfg.warnings {
                eprintln!("burn: warning: {w}");
            }
            cfg.config
                .content
                .retention_days
                .millis()
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        }
    };
    let Some(older_than) = retention else {
        if json {
            return print_json(&prune_value(false, &[], 0));
        }
        println!("content retention=forever - nothing to prune");
        return Ok(0);
    };
    if !force {
        let c = ctx.store.prune_candidates(older_than)?;
        let total: u64 = c.iter().map(|(_, b)| b).sum();
        if json {
            return print_json(&prune_value(false, &c, total));
        }
        println!(
            "dry run: would prune {} content file{} ({})",
            int(c.len() as u64),
            plural(c.len() as u64),
            bytes(total, "bytes")
        );
        for (sid, b) in c.iter().take(20) {
            println!("  {sid}: {}", bytes(*b, "bytes"));
        }
        if c.len() > 20 {
            println!("  … and {} more", c.len() - 20);
        }
        println!("re-run with --force to delete.");
        return Ok(0);
    }
    let r = ctx.store.prune_content(older_than, None)?;
    if json {
        let mut v = r.to_json();
        if let Some(o) = v.as_object_mut() {
            o.insert("dryRun", Value::Bool(false));
        }
        return print_json(&v);
    }
    println!(
        "pruned {} content file{} ({})",
        int(r.files_deleted),
        plural(r.files_deleted),
        bytes(r.bytes_freed, "bytes")
    );
    Ok(0)
}

fn prune_value(forced: bool, c: &[(String, u64)], total: u64) -> Value {
    let mut o = Object::new();
    o.insert("dryRun", Value::Bool(!forced));
    o.insert("filesDeleted", Value::Number(0.0));
    o.insert("bytesFreed", Value::Number(0.0));
    o.insert("wouldDelete", Value::Number(c.len() as f64));
    o.insert("wouldFree", Value::Number(total as f64));
    o.insert(
        "sessions",
        Value::Array(c.iter().map(|(s, _)| Value::from(s.as_str())).collect()),
    );
    Value::Object(o)
}

// --- reset ----------------------------------------------------------------

fn reset(ctx: &Ctx, force: bool, delete_content: bool, json: bool) -> Result<u8> {
    let scope = if delete_content {
        ResetScope::WithContent
    } else {
        ResetScope::Derived
    };
    let ledger = ctx
        .store
        .require_file_for("state reset", "derived files (index sidecars, archive)")?;
    let summary = if force {
        ledger.reset_derived(scope)?
    } else {
        ledger.reset_plan(scope)?
    };
    if json {
        return print_json(&summary.to_value());
    }
    let mut l = vec![if force {
        format!("reset derived state under {}", summary.home.display())
    } else {
        format!(
            "dry run: would reset derived state under {}",
            summary.home.display()
        )
    }];
    for t in &summary.targets {
        let tag = if t.existed {
            format!(
                "{} file{}, {}",
                int(t.files_removed),
                plural(t.files_removed),
                bytes(t.bytes, "bytes")
            )
        } else {
            "already absent".to_string()
        };
        l.push(format!(
            "  {} {}: {tag}",
            if t.is_dir { "dir " } else { "file" },
            t.path.display()
        ));
        if !t.rebuildable && t.existed {
            l.push(format!(
                "    {}: no rebuild can bring this back",
                if force {
                    "deleted for good"
                } else {
                    "CANNOT BE UNDONE"
                }
            ));
        }
    }
    let files = summary.files_removed();
    if force {
        l.push(format!(
            "total: removed {} file{}, {} freed",
            int(files),
            plural(files),
            bytes(summary.bytes_freed(), "bytes")
        ));
    } else {
        l.push(format!(
            "total: {} file{}, {} would be freed",
            int(files),
            plural(files),
            bytes(summary.bytes_freed(), "bytes")
        ));
        l.push("re-run with --force to apply.".into());
    }
    let kept: Vec<String> = summary
        .kept
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    l.push(format!(
        "kept (not derived, cannot be rebuilt): {}",
        kept.join(", ")
    ));
    if !delete_content {
        l.push("content/ is kept; --delete-content deletes it too (cannot be undone)".into());
    }
    print_lines(&l)
}

// --- check ----------------------------------------------------------------

fn check(ctx: &Ctx, json: bool, repair: bool) -> Result<u8> {
    if let Some(sq) = ctx.store.as_sqlite() {
        if repair {
            eprintln!("burn state check --repair: a sqlite store has no derived files to repair");
            return Ok(USAGE);
        }
        let problems = sq.check()?;
        if json {
            let mut o = Object::new();
            o.insert("storage", Value::from("sqlite"));
            o.insert(
                "problems",
                Value::Array(problems.iter().map(|p| Value::from(p.as_str())).collect()),
            );
            print_json(&Value::Object(o))?;
        } else if problems.is_empty() {
            println!("{}: ok: no problems found", sq.path().display());
        } else {
            println!(
                "{}: {} problem{}:",
                sq.path().display(),
                problems.len(),
                plural(problems.len() as u64)
            );
            for p in &problems {
                println!("  - {p}");
            }
        }
        return Ok(if problems.is_empty() { 0 } else { 1 });
    }
    if let Some(pg) = ctx.store.as_postgres() {
        if repair {
            eprintln!("burn state check --repair: a postgres store has no derived files to repair");
            return Ok(USAGE);
        }
        // Opening checked the schema version and every table; the server
        // keeps its own data consistent.
        let s = pg.status()?;
        if json {
            let mut o = Object::new();
            o.insert("storage", Value::from("postgres"));
            o.insert("problems", Value::Array(Vec::new()));
            print_json(&Value::Object(o))?;
        } else {
            println!("{} (schema {}): ok: no problems found", s.target, s.schema);
        }
        return Ok(0);
    }
    let home = ctx.ledger()?.home().clone();
    let run = |msg: &str| -> Result<CheckReport> {
        let p = ctx.progress(json, msg);
        let r = relayburn_ledger::state::check::check(&home, &mut p.callback())?;
        p.finish();
        Ok(r)
    };
    let report = run("checking ledger")?;
    let problems = report.problems();
    if !repair {
        if json {
            print_json(&report.to_value())?;
        } else {
            print_lines(&check_lines(&report))?;
        }
        return Ok(if problems.is_empty() { 0 } else { 1 });
    }
    // Say what will be done, then do it, then check again.
    let mut plan = Vec::new();
    for l in report.locks.iter().filter(|l| l.stale) {
        plan.push(format!("remove the stale lockfile {}", l.path.display()));
    }
    for f in &report.rebuild_leftovers {
        plan.push(format!("remove {}", f.display()));
    }
    if let Some(t) = &report.torn_tail {
        plan.push(format!(
            "terminate the torn last line at byte {} with a newline (its bytes are kept)",
            t.offset
        ));
    }
    plan.push("rebuild ledger.idx and ledger.content.idx from the ledger".to_string());
    if report.archive.as_ref().is_some_and(|a| a.needs_rebuild()) {
        plan.push(
            "rebuild archive.sqlite from the ledger (`burn state rebuild archive --full`)".into(),
        );
    }
    if !json {
        println!("repair:");
        for p in &plan {
            println!("  - {p}");
        }
    }
    let repaired = ctx.ledger()?.repair()?;
    let after = run("checking again")?;
    let remaining = after.problems();
    if json {
        let mut o = Object::new();
        o.insert("before", report.to_value());
        o.insert(
            "plan",
            Value::Array(plan.iter().map(|p| Value::from(p.as_str())).collect()),
        );
        o.insert("repair", repaired.to_value());
        o.insert("after", after.to_value());
        print_json(&Value::Object(o))?;
    } else {
        println!(
            "repaired: index rebuilt ({} ids, {} fingerprints){}{}",
            int(repaired.index.ids as u64),
            int(repaired.index.content as u64),
            repaired
                .terminated_torn_tail_at
                .map(|o| format!(", torn line at byte {o} terminated"))
                .unwrap_or_default(),
            if repaired.archive_rebuilt.is_some() {
                ", archive rebuilt"
            } else {
                ""
            }
        );
        print_lines(&check_lines(&after))?;
    }
    Ok(if remaining.is_empty() { 0 } else { 1 })
}

fn check_lines(r: &CheckReport) -> Vec<String> {
    let mut l = vec![format!(
        "ledger: {} bytes, {} lines",
        int(r.ledger_bytes),
        int(r.lines)
    )];
    for b in &r.malformed {
        l.push(format!(
            "  malformed line at byte {}: {}",
            b.offset, b.reason
        ));
    }
    for b in &r.unhashable {
        l.push(format!(
            "  unreadable record at byte {}: {}",
            b.offset, b.reason
        ));
    }
    if let Some(t) = &r.torn_tail {
        l.push(format!(
            "  torn last line at byte {} ({} bytes, no newline)",
            t.offset, t.length
        ));
    }
    if r.repaired_count > 0 {
        l.push(format!(
            "  {} torn line{} terminated by an earlier repair (accepted; readers skip {})",
            int(r.repaired_count),
            plural(r.repaired_count),
            if r.repaired_count == 1 { "it" } else { "them" }
        ));
    }
    for lock in &r.locks {
        l.push(format!(
            "lockfile {}: {} ms old{}{}",
            lock.path.display(),
            lock.age_ms,
            if lock.holder.is_empty() {
                String::new()
            } else {
                format!(", holder {}", lock.holder)
            },
            if lock.stale { " (stale)" } else { "" }
        ));
    }
    let problems = r.problems();
    if problems.is_empty() {
        l.push("ok: no problems found".into());
    } else {
        l.push(format!(
            "{} problem{}:",
            problems.len(),
            plural(problems.len() as u64)
        ));
        for p in problems {
            l.push(format!("  - {p}"));
        }
    }
    l
}

// --- copy -----------------------------------------------------------------

fn copy(ctx: &Ctx, to: CopyTarget, json: bool) -> Result<u8> {
    let kind = match to {
        CopyTarget::File => StorageKind::File,
        CopyTarget::Sqlite => StorageKind::Sqlite,
        CopyTarget::Postgres => StorageKind::Postgres,
    };
    if kind == ctx.store.kind() {
        bail!(
            "the source is already {} storage (RELAYBURN_STORAGE); choose the other backend",
            kind.as_str()
        );
    }
    let target = Storage {
        kind,
        ..ctx.env.storage_at(ctx.home.clone())?
    };
    let dest = store::open(&target)?;
    let p = ctx.progress(json, &format!("copying into {} storage", kind.as_str()));
    let r = store::copy::copy(ctx.store.as_ref(), dest.as_ref(), &mut |done, total| {
        p.items(done, total, "entries")
    })?;
    p.finish();
    if json {
        print_json(&r.to_value())?;
    } else {
        let where_ = match kind {
            StorageKind::Sqlite => target.sqlite_path.display().to_string(),
            StorageKind::Postgres => match dest.as_postgres() {
                Some(pg) => pg.target().name().to_string(),
                None => "postgres".to_string(),
            },
            _ => target.home.ledger().display().to_string(),
        };
        let mut l = vec![format!("copied into {where_}:")];
        for (k, read, added) in &r.records {
            l.push(format!(
                "  {}: {} read, {} added",
                k.as_str(),
                int(*read),
                int(*added)
            ));
        }
        l.push(format!(
            "  stamps: {} read, {} added",
            int(r.stamps_read),
            int(r.stamps_added)
        ));
        l.push(format!(
            "  content: {} read, {} added, {} skipped by the writer",
            int(r.content_read),
            int(r.content_added),
            int(r.content_skipped)
        ));
        if r.refused > 0 {
            l.push(format!("  refused by the destination: {}", int(r.refused)));
            for why in &r.refused_reasons {
                l.push(format!("    {why}"));
            }
        }
        if r.is_complete() {
            l.push("count check: ok, the destination holds everything the source holds".into());
        }
        print_lines(&l)?;
    }
    if !r.is_complete() {
        for (what, n) in &r.missing {
            eprintln!(
                "burn state copy: count check: {} {what} missing from the destination",
                int(*n)
            );
        }
        return Ok(1);
    }
    Ok(0)
}

// --- query ----------------------------------------------------------------

fn pair(s: &str, what: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(usage_err(format!(
            "invalid {what} {s:?}: expected KEY=VALUE"
        ))),
    }
}

/// A `--since`-style time flag resolved to the ledger's ISO form.
fn time_flag(v: &Option<String>, flag: &str, now: SystemTime) -> Result<Option<String>> {
    v.as_deref()
        .map(|s| since::resolve(s, now).map_err(|e| usage_err(format!("--{flag}: {e}"))))
        .transpose()
}

fn query(ctx: &Ctx, a: QueryArgs) -> Result<u8> {
    let now = SystemTime::now();
    let q = Query {
        since: time_flag(&a.since, "since", now)?,
        until: time_flag(&a.until, "until", now)?,
        project: a.project.clone(),
        session_id: a.session.clone(),
        source: a.source.clone(),
        enrichment: a
            .enrich
            .iter()
            .map(|p| pair(p, "--enrich"))
            .collect::<Result<_>>()?,
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut emit = |v: Value| -> Result<()> {
        let mut line = v.to_json();
        line.push('\n');
        out.write_all(line.as_bytes())?;
        Ok(())
    };
    if a.from == From::Postgres {
        let Some(target) = team_target(ctx, a.postgres.clone(), true)? else {
            unreachable!("required")
        };
        let kind = match a.kind {
            QueryKind::Turns => Kind::Turn,
            QueryKind::Compactions => Kind::Compaction,
            QueryKind::Relationships => Kind::Relationship,
            QueryKind::ToolResultEvents => Kind::ToolResultEvent,
            QueryKind::UserTurns => Kind::UserTurn,
        };
        if kind != Kind::Turn && !q.enrichment.is_empty() {
            return usage("query", "--enrich only applies to turns");
        }
        let mut team = TeamLedger::open(&target)?;
        team.query(kind, &q, a.machine.as_deref(), |v| {
            emit(v).map_err(|e| match e.downcast::<std::io::Error>() {
                Ok(io) => relayburn_ledger::Error::io("write", "stdout", io),
                Err(e) => relayburn_ledger::Error::Internal(format!("write: {e}")),
            })
        })?;
        out.flush()?;
        return Ok(0);
    }
    if a.machine.is_some() || a.postgres.is_some() {
        return usage(
            "query",
            "--machine and --postgres only apply with --from postgres",
        );
    }
    let st = ctx.store.as_ref();
    match a.kind {
        QueryKind::Turns => {
            let from = match a.from {
                From::Auto => TurnSource::Auto,
                From::Archive => TurnSource::Archive,
                From::Ledger | From::Postgres => TurnSource::Ledger,
            };
            match st.as_file() {
                // Other backends have no archive: read the store.
                None => {
                    if a.from == From::Archive {
                        // The backend's own error: archives need file storage.
                        ctx.ledger()?;
                    }
                    if a.from == From::Auto && !ctx.quiet {
                        eprintln!("burn: reading turns from the {} store", st.kind().as_str());
                    }
                    for v in st.query_turns(&q)? {
                        emit(v?)?;
                    }
                }
                Some(l) => match plan_turn_read(l.home(), from)? {
                    TurnPlan::Archive { reader, note, warn } => {
                        if let Some(n) = note.filter(|_| warn || !ctx.quiet) {
                            eprintln!("burn: {n}");
                        }
                        reader.for_each_turn(&q, true, &mut emit)?;
                    }
                    TurnPlan::Ledger { note } => {
                        if let Some(n) = note {
                            eprintln!("burn: {n}");
                        }
                        for v in st.query_turns(&q)? {
                            emit(v?)?;
                        }
                    }
                },
            }
        }
        other => {
            if a.from == From::Archive {
                return usage("query", "--from archive only applies to turns");
            }
            if !q.enrichment.is_empty() {
                return usage("query", "--enrich only applies to turns");
            }
            let kind = match other {
                QueryKind::Compactions => Kind::Compaction,
                QueryKind::Relationships => Kind::Relationship,
                QueryKind::ToolResultEvents => Kind::ToolResultEvent,
                QueryKind::UserTurns => Kind::UserTurn,
                QueryKind::Turns => Kind::Turn,
            };
            for v in st.query_records(kind, &q)? {
                emit(v?)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

// --- push -----------------------------------------------------------------

/// Shows rows/s and an ETA on a terminal.
struct PushDisplay {
    progress: Progress,
    started: std::time::Instant,
}

impl PushObserver for PushDisplay {
    fn progress(&mut self, p: &PushProgress) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        self.progress.set_message(&format!(
            "pushing: {} rows ({}/s)",
            int(p.rows_read),
            int((p.rows_read as f64 / secs) as u64)
        ));
        self.progress.bytes(p.done_bytes, p.total_bytes);
    }
    fn phase(&mut self, _batch: u64, _phase: Phase) {}
}

fn push(ctx: &Ctx, a: PushArgs) -> Result<u8> {
    let Some(target) = team_target(ctx, a.to, true)? else {
        unreachable!("required")
    };
    let mut opts = PushOptions {
        machine_id: a.machine_id.or_else(|| ctx.env.machine_id.clone()),
        ..PushOptions::default()
    };
    if let Some(n) = a.batch_rows {
        opts.batch_rows = n.max(1);
    }
    let mut display = PushDisplay {
        progress: ctx.progress(a.json, &format!("pushing to {target}")),
        started: std::time::Instant::now(),
    };
    let s = ctx
        .store
        .as_file()
        .context("burn push reads file storage only (RELAYBURN_STORAGE=file)")?
        .push_to(&target, &opts, &mut display)?;
    display.progress.finish();
    if a.json {
        return print_json(&s.to_value());
    }
    let mut lines = vec![format!(
        "pushed to {} as {}: {} new of {} record{} read, ledger bytes {}..{}, {} batch{} in {:.1}s",
        s.target,
        s.machine_id,
        int(s.rows_inserted()),
        int(s.rows_read()),
        plural(s.rows_read()),
        int(s.from_offset),
        int(s.to_offset),
        int(s.batches),
        if s.batches == 1 { "" } else { "es" },
        s.elapsed.as_secs_f64()
    )];
    if let Some(r) = &s.restarted {
        lines.push(format!("note: {r}"));
    }
    if s.skipped > 0 {
        lines.push(format!(
            "skipped {} unreadable line{} (first: {})",
            int(s.skipped),
            plural(s.skipped),
            s.skipped_first
                .iter()
                .take(3)
                .map(|k| format!("byte {}: {}", k.offset, k.reason))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    print_lines(&lines)
}

/// A usage error: one line on stderr, exit 2.
fn usage(cmd: &str, msg: &str) -> Result<u8> {
    eprintln!("burn {cmd}: {msg}");
    Ok(USAGE)
}

// --- stamp ----------------------------------------------------------------

fn stamp(ctx: &Ctx, a: StampArgs) -> Result<u8> {
    let mut selector = Object::new();
    if let Some(s) = &a.session {
        selector.insert("sessionId", Value::from(s.as_str()));
    }
    if let Some(m) = &a.message {
        selector.insert("messageId", Value::from(m.as_str()));
    }
    if a.from_ts.is_some() || a.to_ts.is_some() {
        let now = SystemTime::now();
        let mut range = Object::new();
        if let Some(f) = time_flag(&a.from_ts, "from-ts", now)? {
            range.insert("fromTs", Value::from(f));
        }
        if let Some(t) = time_flag(&a.to_ts, "to-ts", now)? {
            range.insert("toTs", Value::from(t));
        }
        selector.insert("range", Value::Object(range));
    }
    if selector.is_empty() {
        eprintln!("burn stamp: give at least one of --session, --message, --from-ts/--to-ts");
        return Ok(USAGE);
    }
    let mut enrichment = Object::new();
    for p in &a.pairs {
        let (k, v) = pair(p, "enrichment")?;
        enrichment.insert(k, Value::from(v));
    }
    let line = match ctx
        .store
        .stamp(Value::Object(selector), Value::Object(enrichment))
    {
        Err(relayburn_ledger::Error::Invalid { field, reason }) if field == "selector" => {
            return Err(usage_err(reason))
        }
        r => r?,
    };
    println!("{}", line.to_json());
    Ok(0)
}

// --- demo -----------------------------------------------------------------

fn demo(home: Option<PathBuf>, quiet: bool, env: &Env, a: &DemoArgs) -> Result<u8> {
    let user_home = match home {
        Some(h) => Some(LedgerHome::new(h)),
        None => env.ledger_home().ok(),
    };
    let has_ledger = user_home
        .as_ref()
        .is_some_and(|h| h.ledger().metadata().is_ok_and(|m| m.len() > 0));
    let home = match (has_ledger, user_home) {
        (true, Some(h)) => {
            println!("using your ledger home {}", h.root().display());
            h
        }
        _ => {
            let dir = match &a.demo_dir {
                Some(d) => d.clone(),
                None => std::env::temp_dir().join(format!("relayburn-demo-{}", std::process::id())),
            };
            let h = LedgerHome::new(&dir);
            if h.ledger().exists() {
                bail!(
                    "demo directory {} already holds a ledger; choose another with --demo-dir",
                    dir.display()
                );
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("create demo home {}", dir.display()))?;
            let ledger = Ledger::open(h.clone())?;
            let s = relayburn_ledger::demo::write_demo(&ledger)?;
            println!(
                "no ledger found; wrote a demo ledger to {} ({} sessions, {} turns, {} tool-result events, {} user turns)",
                dir.display(),
                s.sessions,
                s.turns,
                s.tool_result_events,
                s.user_turns
            );
            h
        }
    };
    let ctx = Ctx {
        store: Box::new(Ledger::open(home.clone())?),
        home: home.clone(),
        quiet,
        env: Env::capture(),
    };
    println!(
        "\n$ burn --home {} state rebuild archive --full",
        home.root().display()
    );
    let r = build_archive(&ctx, true, false)?;
    print_lines(&build_lines(&r, true))?;
    println!("\n$ burn --home {} state status", home.root().display());
    status(&ctx, false, None)?;
    print_lines(&spend_lines(&relayburn_ledger::demo::spend(ctx.ledger()?)?))?;
    println!(
        "\nnext: burn --home {} query turns | head",
        home.root().display()
    );
    Ok(0)
}

/// The spend table that ends the demo.
fn spend_lines(s: &relayburn_ledger::demo::Spend) -> Vec<String> {
    use relayburn_ledger::demo::Tokens;
    let n = |x: f64| int(x as u64);
    let row = |label: &str, t: &Tokens| {
        format!(
            "  {label:<24} {:>7} {:>12} {:>10} {:>13} {:>13}",
            int(t.turns),
            n(t.input),
            n(t.output),
            n(t.cache_read),
            n(t.cache_create)
        )
    };
    let head = format!(
        "  {:<24} {:>7} {:>12} {:>10} {:>13} {:>13}",
        "", "turns", "input", "output", "cache read", "cache write"
    );
    let mut l = vec![
        String::new(),
        "what the agents spent (tokens, from the ledger):".to_string(),
        head.clone(),
        row("all turns", &s.total),
        "by model:".to_string(),
    ];
    l.extend(s.by_model.iter().map(|(m, t)| row(m, t)));
    l.push("by day (UTC):".to_string());
    l.extend(s.by_day.iter().map(|(d, t)| row(d, t)));
    l
}
