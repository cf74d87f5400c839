//! The command-line grammar. Names, flags and exit codes follow the
//! reference CLI so scripts written for it keep working.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "burn",
    version,
    about = "Keep the relayburn ledger: what AI coding agents spent, turn by turn",
    long_about = "Keep the relayburn ledger: what AI coding agents spent, turn by turn.\n\nThis tool stores, checks and queries the ledger; it does not read agents' session logs (the TypeScript burn ingests those into the same home).\n\nExit codes: 0 success, 1 failure (one line on stderr), 2 usage error, 130/143 interrupted by SIGINT/SIGTERM during an archive build (nothing changed).",
    after_help = "Examples:\n  burn demo\n  burn state status --json\n  burn state rebuild archive --full\n  burn query turns --since 7d --source claude-code\n  burn stamp --session 0b1c2d3e workflowId=wf-1\n\nThe home is $RELAYBURN_HOME when set and non-empty, else ~/.relayburn."
)]
pub struct Cli {
    /// Use this home instead of $RELAYBURN_HOME / ~/.relayburn.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect and maintain derived ledger state.
    #[command(
        after_help = "Examples:\n  burn state\n  burn state status --json\n  burn state rebuild archive --full\n  burn state check --repair"
    )]
    State(StateArgs),

    /// Print ledger records as JSON Lines.
    #[command(
        after_help = "Examples:\n  burn query turns --since 7d\n  burn query turns --session 0b1c2d3e --from archive\n  burn query turns --since 7d --from postgres --machine laptop-1\n  burn query turns --enrich workflowId=wf-1\n  burn query tool-result-events --source codex --since 2026-05-01"
    )]
    Query(QueryArgs),

    /// Append a stamp that enriches matching turns.
    #[command(
        after_help = "Examples:\n  burn stamp --session 0b1c2d3e workflowId=wf-1 persona=reviewer\n  burn stamp --message msg_01abc tier=pinned\n  burn stamp --from-ts 2026-01-01T00:00:00Z --to-ts 2026-01-31T23:59:59Z sprint=s9"
    )]
    Stamp(StampArgs),

    /// Copy what is new in this home into a shared PostgreSQL team ledger.
    #[command(
        after_help = "The server comes from --to or $RELAYBURN_POSTGRES_URL (prefer the variable:\na password on the command line is visible to other users). Safe to\ninterrupt and run again: records are stored once, and the push resumes\nafter the last committed batch.\n\nExamples:\n  RELAYBURN_POSTGRES_URL=postgres://me@db.internal/burn?sslmode=verify-full burn push\n  burn push --to postgres://me@localhost/burn --json"
    )]
    Push(PushArgs),

    /// Rebuild the archive and show the state, on your home or a demo one.
    #[command(
        after_help = "When the home has no ledger.jsonl, a small demo ledger is written to\na new directory (printed) and used instead; your home is not touched.\n\nExamples:\n  burn demo\n  burn demo --demo-dir /tmp/burn-demo"
    )]
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: Option<StateCommand>,

    /// Print JSON instead of text (for the default `status`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Index files, content sidecars, ledger counts and archive status.
    Status {
        #[arg(long)]
        json: bool,
        /// Also show every machine's last push to this team ledger
        /// (default $RELAYBURN_POSTGRES_URL).
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
    },
    /// Rebuild derived artifacts: index, archive, or all.
    Rebuild(RebuildArgs),
    /// Delete content sidecars older than the retention.
    #[command(
        after_help = "Dry run unless --force.\n\nExamples:\n  burn state prune\n  burn state prune --days 30 --force"
    )]
    Prune {
        /// Retention in days, or `forever`; default from config.json.
        #[arg(long, value_name = "N|forever")]
        days: Option<String>,
        /// Actually delete.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Delete derived state (indexes, archive); never the ledger or content.
    #[command(
        after_help = "Dry run unless --force. ledger.jsonl, config.json, cursors.json and\nhwm.json are never touched. content/ (raw text and tool payloads) is kept\nunless --delete-content is given: this tool cannot write it again, so\ndeleting it cannot be undone.\n\nExamples:\n  burn state reset\n  burn state reset --force --json\n  burn state reset --delete-content --force"
    )]
    Reset {
        #[arg(long)]
        force: bool,
        /// Also delete content/ (cannot be undone: it is not derived).
        #[arg(long)]
        delete_content: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy the records, stamps and content of the selected storage
    /// backend into another one; the source is only read.
    #[command(
        after_help = "The source is the backend RELAYBURN_STORAGE selects (file by default).\nIdempotent: run it again to resume an interrupted copy; nothing is\nadded twice. Exit 1 when the count check finds something missing.\n\nExamples:\n  burn state copy --to sqlite\n  RELAYBURN_POSTGRES_URL=postgres://me@db/burn burn state copy --to postgres\n  RELAYBURN_STORAGE=sqlite burn state copy --to file --json"
    )]
    Copy {
        /// The destination backend.
        #[arg(long, value_enum)]
        to: CopyTarget,
        #[arg(long)]
        json: bool,
    },
    /// Read-only consistency report; exit 1 when problems are found.
    #[command(
        after_help = "Examples:\n  burn state check\n  burn state check --json\n  burn state check --repair"
    )]
    Check {
        #[arg(long)]
        json: bool,
        /// Rebuild the indexes and terminate a torn tail.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Debug, Args)]
pub struct RebuildArgs {
    #[command(subcommand)]
    pub target: RebuildTarget,
}

#[derive(Debug, Subcommand)]
pub enum RebuildTarget {
    /// Rebuild ledger.idx and ledger.content.idx from the ledger.
    Index {
        #[arg(long)]
        json: bool,
    },
    /// Apply the ledger tail to archive.sqlite (--full: from zero).
    #[command(
        after_help = "Examples:\n  burn state rebuild archive\n  burn state rebuild archive --full --json\n  burn state rebuild archive vacuum"
    )]
    Archive {
        /// `build` (default) or `vacuum`.
        action: Option<ArchiveAction>,
        /// Rebuild from byte 0 (built aside and swapped in).
        #[arg(long, conflicts_with = "vacuum")]
        full: bool,
        /// Reclaim unused pages.
        #[arg(long)]
        vacuum: bool,
        #[arg(long)]
        json: bool,
    },
    /// Index, then archive.
    All {
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Needs the session-log readers, which this tool does not include.
    Classify {
        #[arg(long)]
        force: bool,
    },
    /// Needs the session-log readers, which this tool does not include.
    Content,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CopyTarget {
    File,
    Sqlite,
    /// The PostgreSQL store at $RELAYBURN_POSTGRES_URL.
    Postgres,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ArchiveAction {
    Build,
    Vacuum,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum QueryKind {
    Turns,
    Compactions,
    Relationships,
    ToolResultEvents,
    UserTurns,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum From {
    /// The archive when it is up to date with the ledger, else the ledger.
    Auto,
    Archive,
    Ledger,
    /// The team ledger (--postgres or $RELAYBURN_POSTGRES_URL).
    Postgres,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    pub kind: QueryKind,
    /// ISO timestamp or relative: 24h, 7d, 2w, 1m (m = months of 30 days, not minutes).
    #[arg(long)]
    pub since: Option<String>,
    /// ISO timestamp or relative: 24h, 7d, 2w, 1m (m = months of 30 days, not minutes).
    #[arg(long)]
    pub until: Option<String>,
    /// Matches `project` or `projectKey`.
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    /// claude-code, codex, opencode, …
    #[arg(long)]
    pub source: Option<String>,
    /// Enrichment equality filter (turns only), repeatable.
    #[arg(long = "enrich", value_name = "KEY=VALUE")]
    pub enrich: Vec<String>,
    /// Where turns come from. auto: the archive when it is up to date,
    /// else the ledger (one line on stderr says which and why).
    /// archive: exit 1 when the archive cannot answer (missing, another
    /// version, damaged, built from another ledger); a warning on stderr
    /// when it is behind the ledger.
    #[arg(long, value_enum, default_value_t = From::Auto)]
    pub from: From,
    /// With --from postgres: only records pushed by this machine.
    #[arg(long, value_name = "ID")]
    pub machine: Option<String>,
    /// With --from postgres: the server (default $RELAYBURN_POSTGRES_URL).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// postgres://user:password@host:port/db?sslmode=… (default
    /// $RELAYBURN_POSTGRES_URL).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// Push as this machine (default $RELAYBURN_MACHINE_ID, else the id
    /// generated once for this home).
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<String>,
    /// Records per transaction.
    #[arg(long, value_name = "N", hide = true)]
    pub batch_rows: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub message: Option<String>,
    /// Range start (ISO timestamp or relative, inclusive); needs --to-ts.
    #[arg(long)]
    pub from_ts: Option<String>,
    /// Range end (ISO timestamp or relative, inclusive); needs --from-ts.
    #[arg(long)]
    pub to_ts: Option<String>,
    /// Enrichment pairs.
    #[arg(value_name = "KEY=VALUE", required = true)]
    pub pairs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the demo home when your home has no ledger.
    #[arg(long, value_name = "DIR")]
    pub demo_dir: Option<PathBuf>,
}
