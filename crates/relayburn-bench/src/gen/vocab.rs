//! Names the generated records draw from: sources, models, projects, tools
//! and their targets, stamp enrichment values. Invented, but in the shapes
//! the session-log readers produce.

/// The three harnesses whose logs fill real ledgers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Claude,
    Codex,
    OpenCode,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Claude => "claude-code",
            Source::Codex => "codex",
            Source::OpenCode => "opencode",
        }
    }

    pub fn models(self) -> &'static [(&'static str, u32)] {
        match self {
            Source::Claude => &[
                ("claude-sonnet-4-5-20250929", 55),
                ("claude-opus-4-1-20250805", 15),
                ("claude-opus-4-5-20251101", 15),
                ("claude-haiku-4-5-20251001", 15),
            ],
            Source::Codex => &[("gpt-5-codex", 45), ("gpt-5.1-codex", 35), ("gpt-5", 20)],
            Source::OpenCode => &[
                ("claude-sonnet-4-5", 40),
                ("gpt-5.1", 25),
                ("kimi-k2", 20),
                ("glm-4.6", 15),
            ],
        }
    }

    /// The model a subagent of this source usually runs on.
    pub fn subagent_model(self) -> &'static str {
        match self {
            Source::Claude => "claude-haiku-4-5-20251001",
            Source::Codex => "gpt-5-codex",
            Source::OpenCode => "claude-sonnet-4-5",
        }
    }

    pub fn tools(self) -> &'static [(Tool, u32)] {
        use Tool::*;
        match self {
            Source::Claude => &[
                (Read, 24),
                (Edit, 16),
                (Bash, 18),
                (Grep, 9),
                (Glob, 6),
                (Write, 5),
                (TodoWrite, 8),
                (Task, 2),
                (Agent, 1),
                (WebFetch, 3),
                (WebSearch, 2),
                (NotebookEdit, 1),
                (Mcp, 2),
            ],
            Source::Codex => &[
                (ExecCommand, 48),
                (Shell, 12),
                (ApplyPatch, 22),
                (UpdatePlan, 9),
                (SpawnAgent, 3),
                (WebSearchCall, 3),
                (ViewImage, 1),
            ],
            Source::OpenCode => &[
                (OcRead, 24),
                (OcEdit, 16),
                (OcBash, 18),
                (OcGrep, 9),
                (OcGlob, 6),
                (OcWrite, 5),
                (OcTodoWrite, 8),
                (OcTask, 3),
                (OcWebFetch, 3),
                (OcList, 4),
                (OcSkill, 3),
            ],
        }
    }
}

/// Tool names as each harness spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Read,
    Edit,
    Write,
    Bash,
    Grep,
    Glob,
    Task,
    Agent,
    TodoWrite,
    WebFetch,
    WebSearch,
    NotebookEdit,
    Mcp,
    ExecCommand,
    Shell,
    ApplyPatch,
    UpdatePlan,
    SpawnAgent,
    WebSearchCall,
    ViewImage,
    OcRead,
    OcEdit,
    OcWrite,
    OcBash,
    OcGrep,
    OcGlob,
    OcTask,
    OcTodoWrite,
    OcWebFetch,
    OcList,
    OcSkill,
}

/// What a tool call's `target` is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    None,
    AbsPath,
    RelPath,
    Dir,
    Command,
    Pattern,
    GlobPattern,
    Url,
    SubagentType,
    Description,
}

impl Tool {
    pub fn name(self) -> &'static str {
        use Tool::*;
        match self {
            Read => "Read",
            Edit => "Edit",
            Write => "Write",
            Bash => "Bash",
            Grep => "Grep",
            Glob => "Glob",
            Task => "Task",
            Agent => "Agent",
            TodoWrite => "TodoWrite",
            WebFetch => "WebFetch",
            WebSearch => "WebSearch",
            NotebookEdit => "NotebookEdit",
            Mcp => "mcp__github__get_pull_request",
            ExecCommand => "exec_command",
            Shell => "shell",
            ApplyPatch => "apply_patch",
            UpdatePlan => "update_plan",
            SpawnAgent => "spawn_agent",
            WebSearchCall => "web_search",
            ViewImage => "view_image",
            OcRead => "read",
            OcEdit => "edit",
            OcWrite => "write",
            OcBash => "bash",
            OcGrep => "grep",
            OcGlob => "glob",
            OcTask => "task",
            OcTodoWrite => "todowrite",
            OcWebFetch => "webfetch",
            OcList => "list",
            OcSkill => "skill",
        }
    }

    pub fn target(self) -> TargetKind {
        use TargetKind as T;
        use Tool::*;
        match self {
            Read | Edit | Write | NotebookEdit | OcRead | OcEdit | OcWrite | ViewImage => {
                T::AbsPath
            }
            ApplyPatch => T::RelPath,
            OcList => T::Dir,
            Bash | ExecCommand | OcBash => T::Command,
            Grep | OcGrep => T::Pattern,
            Glob | OcGlob => T::GlobPattern,
            WebFetch | OcWebFetch => T::Url,
            Task | Agent => T::SubagentType,
            OcTask => T::Description,
            TodoWrite | WebSearch | Mcp | Shell | UpdatePlan | SpawnAgent | WebSearchCall
            | OcTodoWrite | OcSkill => T::None,
        }
    }

    /// Calls that spawn a subagent.
    pub fn spawns(self) -> bool {
        matches!(
            self,
            Tool::Task | Tool::Agent | Tool::SpawnAgent | Tool::OcTask
        )
    }

    /// Calls that change files (the turn's `hasEdits`).
    pub fn edits(self) -> bool {
        use Tool::*;
        matches!(
            self,
            Edit | Write | NotebookEdit | ApplyPatch | OcEdit | OcWrite
        )
    }

    /// Calls whose target lands in `filesTouched`.
    pub fn touches_file(self) -> bool {
        use Tool::*;
        matches!(
            self,
            Read | Edit | Write | NotebookEdit | ApplyPatch | OcRead | OcEdit | OcWrite
        )
    }

    /// Which edit hashes the Claude reader derives: (pre, post).
    pub fn edit_hashes(self) -> (bool, bool) {
        match self {
            Tool::Edit | Tool::NotebookEdit => (true, true),
            Tool::Write => (false, true),
            _ => (false, false),
        }
    }
}

/// (project directory name, projectKey)
pub const PROJECTS: &[(&str, &str)] = &[
    ("relay", "relay"),
    ("burn", "burn"),
    ("infra", "infra"),
    ("webapp", "webapp"),
    ("docs-site", "docs-site"),
    ("payments-service", "payments-service"),
    ("mobile-client", "mobile-client"),
    ("data-pipeline", "data-pipeline"),
    ("ml-experiments", "ml-experiments"),
    ("cli-tools", "cli-tools"),
    ("auth-gateway", "auth-gateway"),
    ("design-system", "design-system"),
];

pub const DIRS: &[&str] = &[
    "src",
    "src/archive",
    "src/ledger",
    "src/api/handlers",
    "crates/core/src",
    "packages/reader/src",
    "packages/ledger/src",
    "tests",
    "tests/integration",
    "docs",
    "scripts",
    "web/components",
    "internal/store",
    "lib",
];

pub const FILES: &[&str] = &[
    "mod.rs",
    "lib.rs",
    "main.rs",
    "query.rs",
    "index.ts",
    "reader.ts",
    "archive.ts",
    "schema.ts",
    "handler.go",
    "store.go",
    "utils.py",
    "models.py",
    "README.md",
    "Button.tsx",
    "config.yaml",
    "migrations.sql",
];

pub const COMMANDS: &[&str] = &[
    "cargo test",
    "cargo build --release",
    "cargo clippy --all-targets -- -D warnings",
    "git status",
    "git diff --stat",
    "git log --oneline -20",
    "npm test",
    "pnpm run build",
    "pnpm vitest run src/archive.test.ts",
    "ls -la",
    "rg -n \"TODO\" src",
    "pytest -q tests/test_store.py",
    "go test ./...",
    "make lint",
    "docker compose up -d db",
    "git commit -m \"Fix archive cursor reset\"",
];

pub const PATTERNS: &[&str] = &[
    "fn main",
    "TODO",
    "archive_version",
    "impl .* for",
    "useEffect",
    "async function",
    "ledger_offset_bytes",
    "class .*Error",
    "SELECT .* FROM turns",
];

pub const GLOBS: &[&str] = &[
    "**/*.rs",
    "src/**/*.ts",
    "**/Cargo.toml",
    "tests/**/*.py",
    "*.md",
    "web/**/*.tsx",
];

pub const URLS: &[&str] = &[
    "https://docs.rs/rusqlite/latest/rusqlite/struct.Connection.html",
    "https://nodejs.org/api/readline.html",
    "https://developer.mozilla.org/en-US/docs/Web/JavaScript/Reference/Global_Objects/JSON/stringify",
    "https://www.sqlite.org/wal.html",
    "https://go.dev/doc/effective_go",
    "https://docs.python.org/3/library/asyncio.html",
];

pub const SUBAGENT_TYPES: &[&str] = &[
    "general-purpose",
    "Explore",
    "code-reviewer",
    "test-runner",
    "Plan",
];

pub const DESCRIPTIONS: &[&str] = &[
    "Explore the archive module",
    "Review the ledger writer changes",
    "Find callers of rebuild_index",
    "Run the integration tests",
    "Investigate flaky lock test",
    "Summarise open TODOs",
    "Draft migration plan",
];

pub const SKILLS: &[&str] = &["git-release", "frontend-design", "pdf", "changelog"];

pub const ACTIVITIES_EDIT: &[(&str, u32)] = &[
    ("coding", 40),
    ("feature", 20),
    ("refactoring", 15),
    ("debugging", 15),
    ("docs", 5),
    ("format", 5),
];

pub const ACTIVITIES_TOOLS: &[(&str, u32)] = &[
    ("exploration", 30),
    ("testing", 15),
    ("git", 10),
    ("build-deploy", 8),
    ("verification", 10),
    ("deps", 4),
    ("debugging", 13),
    ("delegation", 5),
    ("review", 5),
];

pub const ACTIVITIES_TALK: &[(&str, u32)] = &[
    ("conversation", 35),
    ("planning", 20),
    ("reasoning", 15),
    ("brainstorming", 10),
    ("review", 10),
    ("docs", 10),
];

pub const PERSONAS: &[&str] = &["builder", "reviewer", "planner", "tester", "researcher"];
pub const TIERS: &[&str] = &["fast", "deep", "standard"];
pub const PHASES: &[&str] = &["spec", "implement", "verify", "ship"];

pub const USER_TEXT: &[&str] = &[
    "Fix the failing archive test, please.",
    "Can you explain why the cursor resets after truncation?",
    "Add a flag for the stamp mix and wire it through.",
    "Looks good. Now run the full suite.",
    "Refactor the reader so that it streams instead of buffering.",
    "Why is this query slow on a big ledger?",
    "Write docs for the new index format.",
    "continue",
];

pub const ASSISTANT_TEXT: &[&str] = &[
    "I'll start by reading the archive module to see how the cursor is stored.",
    "The test fails because the fixture expects a trailing newline.",
    "Done. The build is green and clippy has no warnings.",
    "Here is a summary of the changes and the remaining risks.",
    "Let me check the lock protocol before touching the writer.",
];
