//! One generated session: its identity, plan and the records each turn
//! produces, in the field order the reference's session-log readers use.

use rand::RngExt;
use relayburn_ledger::archive::query::COVERAGE_KEYS;
use relayburn_ledger::json::{Object, Value};
use relayburn_ledger::records::Kind;
use relayburn_ledger::Result;

use super::emit::Emitter;
use super::ids::{
    anthropic_id, call_id, derived_rng, hex16, iso, log_logistic, log_uniform, opencode_id, pick,
    pick_str, push_hex, uuid_v4, uuid_v7, weighted, weighted_at, Rng,
};
use super::vocab::{self, Source, TargetKind, Tool};
use super::{StampMix, World};

/// Share of turns that call tools, and how many calls such a turn makes;
/// with one result event per call this gives ~0.85 events per turn.
pub(crate) const P_TOOL_TURN: f64 = 0.4286;
const CALLS_PER_TOOL_TURN: &[(usize, u32)] = &[(1, 50), (2, 25), (3, 11), (4, 7), (5, 4), (6, 3)];
/// Share of tool turns whose results come back in a recorded user turn
/// (interrupted and trailing turns have none).
const P_TOOL_USER_TURN: f64 = 0.85;
/// Share of tool-less turns followed by a typed user prompt.
const P_TEXT_USER_TURN: f64 = 0.18;
/// Share of sessions whose turns carry a fidelity block.
const P_FIDELITY: f64 = 0.75;
/// Share of Claude user turns linked to the turn that follows them.
const P_CLAUDE_FOLLOWING: f64 = 0.05;
/// Share of compactions whose preceding turn is known.
const P_COMPACTION_ANCHORED: f64 = 0.6;
/// Share of tool calls that fail.
const P_TOOL_ERROR: f64 = 0.04;
/// Compactions per turn (700 per 75,000).
const COMPACTIONS_PER_TURN: f64 = 700.0 / 75_000.0;
/// Share of spawning calls whose subagent run is generated as a session.
pub(crate) const P_SPAWN_SESSION: f64 = 0.06;
/// Largest cached prefix a model keeps.
const MAX_CONTEXT: f64 = 190_000.0;
/// Mean turns of a main session and of a subagent session.
const MAIN_MEAN_TURNS: f64 = 100.0;
const CHILD_MEAN_TURNS: f64 = 35.0;
const MAX_MAIN_TURNS: f64 = 1_500.0;
const MAX_CHILD_TURNS: f64 = 400.0;

/// Labels of the side streams derived from the run seed.
const STAMP_STREAM: u64 = 0x0053_5441_4d50;
const CONTENT_STREAM: u64 = 0x434f_4e54;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FidelityClass {
    Full,
    UsageOnly,
    AggregateOnly,
    Partial,
    CostOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Root,
    Continuation,
    Fork,
}

/// How a subagent session hangs off its parent.
#[derive(Debug, Clone)]
pub struct ChildLink {
    parent_session: String,
    agent_id: String,
    parent_tool_use_id: String,
    subagent_type: &'static str,
    description: Option<&'static str>,
}

/// A stamp planned for a session, emitted when its turn has been written.
#[derive(Debug)]
enum StampPlan {
    Message {
        target_turn: u32,
        after_turn: u32,
        /// The message id, known once the target turn is written.
        target: Option<String>,
        enrichment: Value,
    },
    Range {
        from_turn: u32,
        to_turn: u32,
        /// The first turn's timestamp, known once it is written.
        from_ts: Option<String>,
        with_session: bool,
        enrichment: Value,
    },
}

pub struct Session {
    pub serial: u64,
    source: Source,
    pub id: String,
    tag: String,
    model: &'static str,
    project: Option<(String, &'static str)>,
    session_path: Option<String>,
    fidelity: Option<FidelityClass>,
    origin: Origin,
    related: Option<String>,
    source_version: Option<&'static str>,
    child: Option<ChildLink>,
    planned_turns: u32,
    turn_index: u32,
    /// Time of the next turn, ms since the epoch.
    pub clock: i64,
    event_index: u32,
    context: f64,
    next_message_id: String,
    started: bool,
    session_stamp: Option<Value>,
    stamp_plans: Vec<StampPlan>,
    stamp_rng: Rng,
    content: Option<ContentBuf>,
}

struct ContentBuf {
    rng: Rng,
    text: String,
    lines: u64,
}

impl Session {
    /// A top-level session starting at `start`.
    pub fn new_main(world: &mut World, start: i64) -> Session {
        let source = *weighted_at(
            world.sources.next_unit(),
            &[
                (Source::Claude, 56),
                (Source::Codex, 32),
                (Source::OpenCode, 12),
            ],
        );
        let rng = &mut world.rng;
        let model = *weighted(rng, source.models());
        let id = new_session_id(source, start, rng);
        let project = if rng.random_bool(0.85) {
            let (dir, key) = *pick(rng, vocab::PROJECTS);
            Some((format!("/home/dev/{dir}"), key))
        } else {
            None
        };
        let origin = *weighted(
            rng,
            &[
                (Origin::Root, 90),
                (Origin::Continuation, 7),
                (Origin::Fork, 3),
            ],
        );
        let recent = &world.recent[source as usize];
        let (origin, related) = if origin == Origin::Root || recent.is_empty() {
            (Origin::Root, None)
        } else {
            let r = recent[rng.random_range(0..recent.len())].clone();
            (origin, Some(r))
        };
        let planned = log_logistic(
            world.main_lengths.next_unit(),
            MAIN_MEAN_TURNS * world.length_scale,
        )
        .clamp(2.0, MAX_MAIN_TURNS) as u32;
        let serial = world.next_serial();
        let mut s = Session::build(world, serial, source, model, id, project, start, planned);
        s.origin = origin;
        s.related = related;
        let recent = &mut world.recent[source as usize];
        recent.push(s.id.clone());
        if recent.len() > 16 {
            recent.remove(0);
        }
        s.plan_stamps(world.stamps);
        s
    }

    /// A subagent session spawned by a tool call of `parent` at `start`.
    fn new_child(world: &mut World, parent: &Session, link: ChildLink, start: i64) -> Session {
        let planned = log_logistic(
            world.child_lengths.next_unit(),
            CHILD_MEAN_TURNS * world.length_scale,
        )
        .clamp(1.0, MAX_CHILD_TURNS) as u32;
        let id = match parent.source {
            // A Codex subagent's session id is its agent id.
            Source::Codex => link.agent_id.clone(),
            s => new_session_id(s, start, &mut world.rng),
        };
        let serial = world.next_serial();
        let model = parent.source.subagent_model();
        let mut s = Session::build(
            world,
            serial,
            parent.source,
            model,
            id,
            parent.project.clone(),
            start,
            planned,
        );
        s.child = Some(link);
        s.plan_stamps(world.stamps);
        s
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        world: &mut World,
        serial: u64,
        source: Source,
        model: &'static str,
        id: String,
        project: Option<(String, &'static str)>,
        start: i64,
        planned_turns: u32,
    ) -> Session {
        let u = world.fidelities.next_unit();
        let rng = &mut world.rng;
        let mut tag = String::with_capacity(8);
        push_hex(&mut tag, rng, 8);
        let session_path = if rng.random_bool(0.2) {
            Some(session_path(source, &id, project.as_ref(), start))
        } else {
            None
        };
        // Older writers left fidelity out.
        let fidelity = if u < P_FIDELITY {
            Some(*weighted_at(
                u / P_FIDELITY,
                &[
                    (FidelityClass::Full, 70),
                    (FidelityClass::UsageOnly, 15),
                    (FidelityClass::AggregateOnly, 7),
                    (FidelityClass::Partial, 5),
                    (FidelityClass::CostOnly, 3),
                ],
            ))
        } else {
            None
        };
        let source_version = match source {
            Source::Claude if rng.random_bool(0.3) => {
                Some(*pick(rng, &["2.0.14", "2.0.31", "2.0.42"]))
            }
            Source::Codex if rng.random_bool(0.3) => Some(*pick(rng, &["0.46.0", "0.58.0"])),
            _ => None,
        };
        let context = log_uniform(rng, 8_000.0, 30_000.0);
        let mut s = Session {
            serial,
            source,
            id,
            tag,
            model,
            project,
            session_path,
            fidelity,
            origin: Origin::Root,
            related: None,
            source_version,
            child: None,
            planned_turns: planned_turns.max(1),
            turn_index: 0,
            clock: start,
            event_index: 0,
            context,
            next_message_id: String::new(),
            started: false,
            session_stamp: None,
            stamp_plans: Vec::new(),
            stamp_rng: derived_rng(world.seed, STAMP_STREAM, serial),
            content: None,
        };
        s.next_message_id = s.new_message_id(0, &mut world.rng);
        let mut crng = derived_rng(world.seed, CONTENT_STREAM, serial);
        if serial == 0 || crng.random_bool(0.03) {
            s.content = Some(ContentBuf {
                rng: crng,
                text: String::new(),
                lines: 0,
            });
        }
        s
    }

    pub fn done(&self) -> bool {
        self.turn_index >= self.planned_turns
    }

    /// The sidecar lines written for this session, if it keeps content.
    pub fn take_content(&mut self) -> Option<(String, u64)> {
        self.content
            .take()
            .filter(|c| c.lines > 0)
            .map(|c| (c.text, c.lines))
    }

    fn new_message_id(&self, turn_index: u32, rng: &mut Rng) -> String {
        match self.source {
            Source::Claude => anthropic_id("msg", rng),
            Source::Codex => format!("turn_{}_{}", turn_index, self.tag),
            Source::OpenCode => opencode_id("msg", self.clock, rng),
        }
    }

    fn new_tool_use_id(&self, rng: &mut Rng) -> String {
        match self.source {
            Source::Claude => anthropic_id("toolu", rng),
            Source::Codex => call_id(rng),
            Source::OpenCode if self.model.starts_with("claude") => anthropic_id("toolu", rng),
            Source::OpenCode => call_id(rng),
        }
    }

    /// Decide this session's stamps from its own stream, so the stamp mix
    /// never changes any other line of the ledger.
    fn plan_stamps(&mut self, mix: StampMix) {
        if mix == StampMix::None {
            return;
        }
        let rng = &mut self.stamp_rng;
        let session_share = if mix == StampMix::Session { 1.0 } else { 0.85 };
        if rng.random_bool(session_share) {
            let mut e = Object::new();
            let mut wf = String::from("wf-");
            push_hex(&mut wf, rng, 6);
            e.insert("workflowId", Value::from(wf));
            e.insert("persona", Value::str(pick_str(rng, vocab::PERSONAS)));
            e.insert("tier", Value::str(pick_str(rng, vocab::TIERS)));
            if rng.random_bool(0.3) {
                e.insert(
                    "ticket",
                    Value::from(format!("BURN-{}", rng.random_range(100..4000))),
                );
            }
            if rng.random_bool(0.3) {
                e.insert(
                    "sprint",
                    Value::from(format!("2025-S{:02}", rng.random_range(10..40))),
                );
            }
            if let Some(link) = &self.child {
                if rng.random_bool(0.3) {
                    e.insert("parentAgentId", Value::str(&link.parent_session));
                    e.insert("agentId", Value::str(&link.agent_id));
                }
            }
            self.session_stamp = Some(Value::Object(e));
        }
        if mix != StampMix::Mixed {
            return;
        }
        let n = self.planned_turns;
        if rng.random_bool(0.25) {
            let target = rng.random_range(0..n);
            let after = (target + rng.random_range(0..6)).min(n - 1);
            let mut e = Object::new();
            match rng.random_range(0..3) {
                0 => e.insert("tier", Value::str("pinned")),
                1 => e.insert(
                    "ticket",
                    Value::from(format!("BURN-{}", rng.random_range(100..4000))),
                ),
                _ => e.insert("reviewed", Value::str("true")),
            }
            self.stamp_plans.push(StampPlan::Message {
                target_turn: target,
                after_turn: after,
                target: None,
                enrichment: Value::Object(e),
            });
        }
        for with_session in [false, true] {
            if n >= 2 && rng.random_bool(0.15) {
                let from = rng.random_range(0..n - 1);
                let to = (from + rng.random_range(1..20)).min(n - 1);
                let mut e = Object::new();
                if with_session {
                    e.insert("phase", Value::str(pick_str(rng, vocab::PHASES)));
                    e.insert("persona", Value::str(pick_str(rng, vocab::PERSONAS)));
                } else {
                    e.insert(
                        "sprint",
                        Value::from(format!("2025-S{:02}", rng.random_range(10..40))),
                    );
                    e.insert("phase", Value::str(pick_str(rng, vocab::PHASES)));
                }
                self.stamp_plans.push(StampPlan::Range {
                    from_turn: from,
                    to_turn: to,
                    from_ts: None,
                    with_session,
                    enrichment: Value::Object(e),
                });
            }
        }
    }

    /// Lines written before the first turn: the spawn-time stamp and the
    /// relationship rows the readers derive for the session.
    fn start(&mut self, em: &mut Emitter) -> Result<()> {
        self.started = true;
        if let Some(enrichment) = self.session_stamp.take() {
            let ts = self.clock - self.stamp_rng.random_range(500..20_000);
            let selector = obj(vec![("sessionId", Value::str(&self.id))]);
            em.stamp(stamp_line(ts, selector, enrichment.clone()))?;
            // The writer pairs a stamp naming a parent agent with a
            // spawn-env relationship row.
            if let Some(parent) = enrichment.get("parentAgentId").and_then(Value::as_str) {
                let mut r = Object::new();
                r.insert("v", Value::Number(1.0));
                r.insert("source", Value::str("spawn-env"));
                r.insert("sessionId", Value::str(&self.id));
                r.insert("relatedSessionId", Value::str(parent));
                r.insert("relationshipType", Value::str("subagent"));
                r.insert("ts", Value::from(iso(ts)));
                if let Some(a) = enrichment.get("agentId").and_then(Value::as_str) {
                    r.insert("agentId", Value::str(a));
                }
                em.side_record(Kind::Relationship, Value::Object(r))?;
            }
        }
        let ts = Value::from(iso(self.clock));
        let src = Value::str(self.source.as_str());
        let mut rows = Vec::new();
        match &self.child {
            None => {
                let mut r = Object::new();
                r.insert("v", Value::Number(1.0));
                r.insert("source", src.clone());
                r.insert("sessionId", Value::str(&self.id));
                match (self.origin, &self.related) {
                    (Origin::Root, _) | (_, None) => {
                        r.insert("relationshipType", Value::str("root"));
                        r.insert("ts", ts.clone());
                    }
                    (origin, Some(related)) => {
                        r.insert("relatedSessionId", Value::str(related));
                        let t = if origin == Origin::Fork {
                            "fork"
                        } else {
                            "continuation"
                        };
                        r.insert("relationshipType", Value::str(t));
                        r.insert("ts", ts.clone());
                        if origin == Origin::Fork {
                            r.insert("sourceSessionId", Value::str(related));
                        }
                    }
                }
                if let Some(v) = self.source_version {
                    r.insert("sourceVersion", Value::str(v));
                }
                rows.push(r);
            }
            Some(link) => match self.source {
                Source::Claude => {
                    let mut r = Object::new();
                    r.insert("v", Value::Number(1.0));
                    r.insert("source", Value::str("native-claude"));
                    r.insert("sessionId", Value::str(&self.id));
                    r.insert("relationshipType", Value::str("subagent"));
                    r.insert("agentId", Value::str(&link.agent_id));
                    r.insert("relatedSessionId", Value::str(&link.parent_session));
                    r.insert("parentToolUseId", Value::str(&link.parent_tool_use_id));
                    r.insert("subagentType", Value::str(link.subagent_type));
                    if let Some(d) = link.description {
                        r.insert("description", Value::str(d));
                    }
                    r.insert("ts", ts.clone());
                    rows.push(r);
                }
                Source::Codex => {
                    let mut r = Object::new();
                    r.insert("v", Value::Number(1.0));
                    r.insert("source", src.clone());
                    r.insert("sessionId", Value::str(&self.id));
                    r.insert("relationshipType", Value::str("subagent"));
                    r.insert("relatedSessionId", Value::str(&link.parent_session));
                    r.insert("parentToolUseId", Value::str(&link.parent_tool_use_id));
                    r.insert("agentId", Value::str(&link.agent_id));
                    r.insert("subagentType", Value::str(link.subagent_type));
                    if let Some(d) = link.description {
                        r.insert("description", Value::str(d));
                    }
                    r.insert("ts", ts.clone());
                    rows.push(r);
                }
                Source::OpenCode => {
                    let mut root = Object::new();
                    root.insert("v", Value::Number(1.0));
                    root.insert("source", src.clone());
                    root.insert("sessionId", Value::str(&self.id));
                    root.insert("relationshipType", Value::str("root"));
                    root.insert("ts", ts.clone());
                    rows.push(root);
                    let mut r = Object::new();
                    r.insert("v", Value::Number(1.0));
                    r.insert("source", Value::str("native-opencode"));
                    r.insert("sessionId", Value::str(&self.id));
                    r.insert("relatedSessionId", Value::str(&link.parent_session));
                    r.insert("relationshipType", Value::str("subagent"));
                    r.insert("ts", ts.clone());
                    rows.push(r);
                }
            },
        }
        for r in rows {
            em.record(Kind::Relationship, Value::Object(r))?;
        }
        Ok(())
    }

    /// Write the next turn and what follows it in the log (tool-result
    /// events, the user turn, a compaction, due stamps). Returns the
    /// subagent sessions its calls spawned.
    pub fn step(&mut self, world: &mut World, em: &mut Emitter) -> Result<Vec<Session>> {
        if !self.started {
            self.start(em)?;
        }
        let mut spawned = Vec::new();
        let ts = self.clock;
        let idx = self.turn_index;
        let message_id = std::mem::take(&mut self.next_message_id);
        let is_last = idx + 1 >= self.planned_turns;
        if self.child.is_some() {
            world.subagent_turns += 1;
        }
        // The next turn's id is needed now: the user turn names it.
        if !is_last {
            self.next_message_id = self.new_message_id(idx + 1, &mut world.rng);
        }

        // Tool calls.
        let rng = &mut world.rng;
        let n_calls = if rng.random_bool(world.p_tool_turn) {
            let n = *weighted(rng, CALLS_PER_TOOL_TURN);
            if world.calls_scale == 1.0 {
                n
            } else {
                (n as f64 * world.calls_scale).round().max(1.0) as usize
            }
        } else {
            0
        };
        let mut calls = Vec::with_capacity(n_calls);
        for _ in 0..n_calls {
            let mut tool = *weighted(rng, self.source.tools());
            if tool.spawns() && self.child.is_some() {
                // Subagents do not spawn subagents here.
                tool = match self.source {
                    Source::Claude => Tool::Read,
                    Source::Codex => Tool::ExecCommand,
                    Source::OpenCode => Tool::OcRead,
                };
            }
            let id = self.new_tool_use_id(rng);
            let target = self.target(tool, rng);
            // Some spawning calls run a subagent generated as its own
            // session; those succeed.
            let spawns = tool.spawns() && {
                world.spawn_acc += world.spawn_rate;
                world.spawn_acc >= 1.0
            };
            if spawns {
                world.spawn_acc -= 1.0;
            }
            let is_error = !spawns && rng.random_bool(P_TOOL_ERROR);
            let content_len = log_uniform(rng, 40.0, 60_000.0);
            calls.push(Call {
                tool,
                id,
                target,
                is_error,
                content_len,
                args_hash: hex16(rng),
                spawns,
                child: None,
            });
        }

        // Usage: the cached prefix grows with every turn until compacted.
        let (input, output, reasoning, cc5, cc1) = self.usage(rng);
        if self.context > MAX_CONTEXT {
            // The user cleared the conversation.
            self.context = log_uniform(rng, 8_000.0, 30_000.0);
        }
        let cache_read = self.context.floor();
        let tool_bytes: f64 = calls.iter().map(|c| c.content_len).sum();
        self.context += input + output + tool_bytes / 4.0;

        let mut call_values = Vec::with_capacity(calls.len());
        let mut files: Vec<&str> = Vec::new();
        let mut has_edits = false;
        for c in &calls {
            let mut o = Object::new();
            o.insert("id", Value::str(&c.id));
            o.insert("name", Value::str(c.tool.name()));
            o.insert("argsHash", Value::str(&c.args_hash));
            if let Some(t) = &c.target {
                o.insert("target", Value::str(t));
            }
            if c.tool == Tool::OcSkill {
                o.insert("skillName", Value::str(pick_str(rng, vocab::SKILLS)));
            }
            if c.is_error && self.source != Source::OpenCode {
                o.insert("isError", Value::Bool(true));
            }
            if self.source == Source::Claude {
                let (pre, post) = c.tool.edit_hashes();
                if pre {
                    o.insert("editPreHash", Value::from(hex16(rng)));
                }
                if post {
                    o.insert("editPostHash", Value::from(hex16(rng)));
                }
            }
            call_values.push(Value::Object(o));
            if c.tool.touches_file() {
                if let Some(t) = &c.target {
                    if !files.contains(&t.as_str()) {
                        files.push(t);
                    }
                }
            }
            has_edits |= c.tool.edits();
        }

        let mut t = Object::new();
        t.insert("v", Value::Number(1.0));
        t.insert("source", Value::str(self.source.as_str()));
        t.insert("sessionId", Value::str(&self.id));
        t.insert("messageId", Value::str(&message_id));
        t.insert("turnIndex", Value::Number(f64::from(idx)));
        t.insert("ts", Value::from(iso(ts)));
        t.insert("model", Value::str(self.model));
        let mut u = Object::new();
        u.insert("input", Value::Number(input));
        u.insert("output", Value::Number(output));
        u.insert("reasoning", Value::Number(reasoning));
        u.insert("cacheRead", Value::Number(cache_read));
        u.insert("cacheCreate5m", Value::Number(cc5));
        u.insert("cacheCreate1h", Value::Number(cc1));
        t.insert("usage", Value::Object(u.clone()));
        t.insert("toolCalls", Value::Array(call_values));
        if let Some(p) = &self.session_path {
            t.insert("sessionPath", Value::str(p));
        }
        if let Some((root, key)) = &self.project {
            t.insert("project", Value::str(root));
            t.insert("projectKey", Value::str(key));
        }
        if !files.is_empty() {
            t.insert(
                "filesTouched",
                Value::Array(files.iter().map(|f| Value::str(f)).collect()),
            );
        }
        if let Some(link) = &self.child {
            let mut s = Object::new();
            s.insert("isSidechain", Value::Bool(true));
            s.insert("agentId", Value::str(&link.agent_id));
            s.insert("parentToolUseId", Value::str(&link.parent_tool_use_id));
            s.insert("subagentType", Value::str(link.subagent_type));
            if let Some(d) = link.description {
                s.insert("description", Value::str(d));
            }
            s.insert("parentAgentId", Value::str(&link.parent_session));
            t.insert("subagent", Value::Object(s));
        }
        let stop = if !calls.is_empty() {
            "tool_use"
        } else if rng.random_bool(0.01) {
            "max_tokens"
        } else {
            "end_turn"
        };
        t.insert("stopReason", Value::str(stop));
        if let Some(f) = self.fidelity {
            t.insert("fidelity", fidelity_value(f, self.source));
        }
        let activity = if has_edits {
            weighted(rng, vocab::ACTIVITIES_EDIT)
        } else if !calls.is_empty() {
            weighted(rng, vocab::ACTIVITIES_TOOLS)
        } else {
            weighted(rng, vocab::ACTIVITIES_TALK)
        };
        t.insert("activity", Value::str(activity));
        let retries = *weighted(rng, &[(0.0, 90), (1.0, 8), (2.0, 2)]);
        t.insert("retries", Value::Number(retries));
        t.insert("hasEdits", Value::Bool(has_edits));
        let turn_ts = iso(ts);
        em.turn(Value::Object(t), &mut world.rng)?;

        // Claude's result events name the user line that carried them.
        let result_line =
            (self.source == Source::Claude && !calls.is_empty()).then(|| uuid_v4(&mut world.rng));
        let event_message_id = result_line.as_deref().unwrap_or(&message_id);
        // Subagent runs: the parent waits for them, so their result events
        // land after the child's last turn.
        let mut when = ts + world.rng.random_range(800..6_000);
        for c in calls.iter_mut() {
            let mut dur = log_uniform(&mut world.rng, 150.0, 45_000.0) as i64;
            if c.spawns {
                {
                    let agent_id = match self.source {
                        Source::Claude => uuid_v4(&mut world.rng),
                        Source::Codex => uuid_v7(when, &mut world.rng),
                        Source::OpenCode => opencode_id("ses", when, &mut world.rng),
                    };
                    let link = ChildLink {
                        parent_session: self.id.clone(),
                        agent_id,
                        parent_tool_use_id: c.id.clone(),
                        subagent_type: pick_str(&mut world.rng, vocab::SUBAGENT_TYPES),
                        // Spawn inputs without a description are common.
                        description: world
                            .rng
                            .random_bool(0.5)
                            .then(|| *pick(&mut world.rng, vocab::DESCRIPTIONS)),
                    };
                    let child = Session::new_child(world, self, link, when + 1_500);
                    dur = i64::from(child.planned_turns) * 45_000 + 5_000;
                    c.child = Some((child.id.clone(), child.agent_id().to_owned()));
                    spawned.push(child);
                }
            }
            when += dur;
            self.tool_result_event(c, event_message_id, when, &u, n_calls as f64, world, em)?;
        }

        // The user line that carries the results back, or a typed prompt.
        let user_ts = if !calls.is_empty() {
            let recorded = world.rng.random_bool(P_TOOL_USER_TURN);
            let uts = when + world.rng.random_range(200..3_000);
            let mut blocks = Vec::with_capacity(calls.len() + 1);
            for c in &calls {
                let mut b = Object::new();
                b.insert("kind", Value::str("tool_result"));
                b.insert("toolUseId", Value::str(&c.id));
                b.insert("byteLen", Value::Number(c.content_len));
                b.insert("approxTokens", Value::Number(approx_tokens(c.content_len)));
                if c.is_error {
                    b.insert("isError", Value::Bool(true));
                }
                blocks.push(Value::Object(b));
            }
            if world.rng.random_bool(0.05) {
                blocks.push(text_block(&mut world.rng));
            }
            if recorded {
                let line = result_line.clone();
                self.user_turn(uts, blocks, line, &message_id, world, em)?;
            }
            uts
        } else {
            let think = log_uniform(&mut world.rng, 8_000.0, 1_200_000.0) as i64;
            let uts = ts + world.rng.random_range(3_000..60_000) + think;
            if !is_last && world.rng.random_bool(P_TEXT_USER_TURN) {
                let blocks = vec![text_block(&mut world.rng)];
                self.user_turn(uts, blocks, None, &message_id, world, em)?;
            }
            uts
        };
        let next_ts = user_ts + world.rng.random_range(1_500..40_000);

        // Now and then the harness compacts the context.
        world.compaction_acc += COMPACTIONS_PER_TURN;
        if world.compaction_acc >= 1.0 {
            world.compaction_acc -= 1.0;
            let mut c = Object::new();
            c.insert("v", Value::Number(1.0));
            c.insert("source", Value::str(self.source.as_str()));
            c.insert("sessionId", Value::str(&self.id));
            c.insert("ts", Value::from(iso(next_ts - 1_000)));
            // A boundary right after a resume has no assistant turn before it.
            if world.rng.random_bool(P_COMPACTION_ANCHORED) {
                c.insert("precedingMessageId", Value::str(&message_id));
                c.insert("tokensBeforeCompact", Value::Number(cache_read));
            }
            em.record(Kind::Compaction, Value::Object(c))?;
            self.context = log_uniform(&mut world.rng, 8_000.0, 30_000.0);
        }

        self.content_for_turn(&message_id, &turn_ts, &calls);
        self.due_stamps(idx, &message_id, &turn_ts, next_ts, em)?;

        self.turn_index += 1;
        self.clock = next_ts;
        Ok(spawned)
    }

    fn agent_id(&self) -> &str {
        self.child.as_ref().map_or("", |l| l.agent_id.as_str())
    }

    fn usage(&self, rng: &mut Rng) -> (f64, f64, f64, f64, f64) {
        let anthropic = self.model.starts_with("claude");
        let input = if anthropic {
            log_uniform(rng, 3.0, 6_000.0)
        } else {
            log_uniform(rng, 200.0, 25_000.0)
        };
        let output = log_uniform(rng, 20.0, 8_000.0);
        let reasoning = if anthropic || self.model == "kimi-k2" {
            0.0
        } else {
            (output * rng.random_range(0.1..0.9)).floor()
        };
        let cc5 = if anthropic {
            log_uniform(rng, 50.0, 25_000.0)
        } else {
            0.0
        };
        let cc1 = if anthropic && rng.random_bool(0.08) {
            log_uniform(rng, 500.0, 40_000.0)
        } else {
            0.0
        };
        (input, output, reasoning, cc5, cc1)
    }

    fn target(&self, tool: Tool, rng: &mut Rng) -> Option<String> {
        match tool.target() {
            TargetKind::None => None,
            TargetKind::AbsPath => {
                let root = self
                    .project
                    .as_ref()
                    .map_or("/home/dev/scratch", |(r, _)| r.as_str());
                Some(format!(
                    "{}/{}/{}",
                    root,
                    pick(rng, vocab::DIRS),
                    pick(rng, vocab::FILES)
                ))
            }
            TargetKind::Dir => Some((*pick(rng, vocab::DIRS)).to_owned()),
            TargetKind::RelPath => Some(format!(
                "{}/{}",
                pick(rng, vocab::DIRS),
                pick(rng, vocab::FILES)
            )),
            TargetKind::Command => Some((*pick(rng, vocab::COMMANDS)).to_owned()),
            TargetKind::Pattern => Some((*pick(rng, vocab::PATTERNS)).to_owned()),
            TargetKind::GlobPattern => Some((*pick(rng, vocab::GLOBS)).to_owned()),
            TargetKind::Url => Some((*pick(rng, vocab::URLS)).to_owned()),
            TargetKind::SubagentType => Some((*pick(rng, vocab::SUBAGENT_TYPES)).to_owned()),
            TargetKind::Description => Some((*pick(rng, vocab::DESCRIPTIONS)).to_owned()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn tool_result_event(
        &mut self,
        c: &Call,
        message_id: &str,
        when: i64,
        turn_usage: &Object,
        n_calls: f64,
        world: &mut World,
        em: &mut Emitter,
    ) -> Result<()> {
        let rng = &mut world.rng;
        let status = if c.is_error {
            "errored"
        } else if self.source == Source::Codex {
            // Codex settles a call's status only at task end, if at all.
            *weighted(
                rng,
                &[
                    ("completed", 970),
                    ("unknown", 20),
                    ("cancelled", 5),
                    ("running", 5),
                ],
            )
        } else {
            "completed"
        };
        let event_source = match (self.source, c.child.is_some()) {
            (Source::Codex, true) => "subagent_notification",
            (Source::Codex, false) => "function_call_output",
            _ => "tool_result",
        };
        let mut e = Object::new();
        e.insert("v", Value::Number(1.0));
        e.insert("source", Value::str(self.source.as_str()));
        e.insert("sessionId", Value::str(&self.id));
        let ts = Value::from(iso(when));
        if self.source == Source::OpenCode {
            e.insert("messageId", Value::str(message_id));
        }
        e.insert("toolUseId", Value::str(&c.id));
        e.insert("callIndex", Value::Number(0.0));
        e.insert("eventIndex", Value::Number(f64::from(self.event_index)));
        self.event_index += 1;
        if self.source == Source::OpenCode {
            e.insert("ts", ts.clone());
        }
        e.insert("status", Value::str(status));
        e.insert("eventSource", Value::str(event_source));
        if self.source != Source::OpenCode {
            // Queue-style events carry no message id now and then.
            if rng.random_bool(0.97) {
                e.insert("messageId", Value::str(message_id));
            }
            e.insert("ts", ts);
        }
        if c.is_error {
            e.insert("isError", Value::Bool(true));
        }
        if self.source == Source::OpenCode {
            // OpenCode splits the step's usage evenly over its tool calls.
            let mut share = Object::new();
            for (k, v) in turn_usage.iter() {
                let n = v.as_f64().unwrap_or(0.0);
                share.insert(k.clone(), Value::Number(n / n_calls));
            }
            e.insert("usage", Value::Object(share));
            let attribution = if n_calls > 1.0 {
                "even-split-turn"
            } else {
                "single-tool-turn"
            };
            e.insert("usageAttribution", Value::str(attribution));
        }
        e.insert("contentLength", Value::Number(c.content_len));
        e.insert("contentHash", Value::from(hex16(rng)));
        if let Some((child_session, agent_id)) = &c.child {
            e.insert("agentId", Value::str(agent_id));
            if self.source != Source::Claude {
                e.insert("subagentSessionId", Value::str(child_session));
            }
        }
        em.record(Kind::ToolResultEvent, Value::Object(e))
    }

    fn user_turn(
        &mut self,
        ts: i64,
        blocks: Vec<Value>,
        line_uuid: Option<String>,
        preceding: &str,
        world: &mut World,
        em: &mut Emitter,
    ) -> Result<()> {
        // Called while the turn `preceding` is the current one.
        let is_last = self.turn_index + 1 >= self.planned_turns;
        let following = (!is_last).then(|| self.next_message_id.clone());
        if following.is_none() && self.source != Source::Claude {
            // Codex and OpenCode emit a user turn only once the assistant
            // turn it feeds into exists.
            return Ok(());
        }
        let text_only = blocks
            .iter()
            .all(|b| b.get("kind").and_then(Value::as_str) == Some("text"));
        let user_uuid = match self.source {
            Source::Claude => line_uuid.unwrap_or_else(|| uuid_v4(&mut world.rng)),
            Source::OpenCode if text_only => opencode_id("msg", ts, &mut world.rng),
            _ => format!(
                "{}:{}->{}",
                self.id,
                preceding,
                following.as_deref().unwrap_or_default()
            ),
        };
        let mut r = Object::new();
        r.insert("v", Value::Number(1.0));
        r.insert("source", Value::str(self.source.as_str()));
        r.insert("sessionId", Value::str(&self.id));
        r.insert("userUuid", Value::from(user_uuid));
        r.insert("ts", Value::from(iso(ts)));
        r.insert("blocks", Value::Array(blocks));
        match self.source {
            Source::Claude => {
                r.insert("precedingMessageId", Value::str(preceding));
                // Only the full-file parse links the following turn.
                if let Some(f) = following.filter(|_| world.rng.random_bool(P_CLAUDE_FOLLOWING)) {
                    r.insert("followingMessageId", Value::from(f));
                }
            }
            _ => {
                if let Some(f) = following {
                    r.insert("followingMessageId", Value::from(f));
                }
                r.insert("precedingMessageId", Value::str(preceding));
            }
        }
        if text_only {
            if let Some(c) = self.content.as_mut() {
                let text = *pick(&mut c.rng, vocab::USER_TEXT);
                let line = content_record(
                    self.source,
                    &self.id,
                    &self.next_message_id,
                    &iso(ts),
                    "user",
                    "text",
                    ("text", Value::str(text)),
                );
                c.push(&line);
            }
        }
        em.record(Kind::UserTurn, Value::Object(r))
    }

    fn content_for_turn(&mut self, message_id: &str, ts: &str, calls: &[Call]) {
        let Some(c) = self.content.as_mut() else {
            return;
        };
        let src = self.source;
        if src == Source::Claude && c.rng.random_bool(0.5) {
            let text = *pick(&mut c.rng, vocab::ASSISTANT_TEXT);
            let line = content_record(
                src,
                &self.id,
                message_id,
                ts,
                "assistant",
                "thinking",
                ("text", Value::from(format!("Thinking: {text}"))),
            );
            c.push(&line);
        }
        if calls.is_empty() || c.rng.random_bool(0.4) {
            let text = *pick(&mut c.rng, vocab::ASSISTANT_TEXT);
            let line = content_record(
                src,
                &self.id,
                message_id,
                ts,
                "assistant",
                "text",
                ("text", Value::str(text)),
            );
            c.push(&line);
        }
        for call in calls {
            let mut input = Object::new();
            match call.tool.target() {
                TargetKind::AbsPath | TargetKind::RelPath | TargetKind::Dir => {
                    input.insert(
                        "file_path",
                        Value::str(call.target.as_deref().unwrap_or("")),
                    );
                }
                TargetKind::Command => {
                    input.insert("command", Value::str(call.target.as_deref().unwrap_or("")));
                }
                TargetKind::None => {}
                _ => {
                    input.insert("query", Value::str(call.target.as_deref().unwrap_or("")));
                }
            }
            let mut tu = Object::new();
            tu.insert("id", Value::str(&call.id));
            tu.insert("name", Value::str(call.tool.name()));
            tu.insert("input", Value::Object(input));
            let line = content_record(
                src,
                &self.id,
                message_id,
                ts,
                "assistant",
                "tool_use",
                ("toolUse", Value::Object(tu)),
            );
            c.push(&line);
            let len = (call.content_len as usize).min(240);
            let mut body = String::with_capacity(len);
            while body.len() < len {
                body.push_str("line of tool output\n");
            }
            body.truncate(len);
            let mut tr = Object::new();
            tr.insert("toolUseId", Value::str(&call.id));
            tr.insert("content", Value::from(body));
            if call.is_error {
                tr.insert("isError", Value::Bool(true));
            }
            let line = content_record(
                src,
                &self.id,
                message_id,
                ts,
                "tool_result",
                "tool_result",
                ("toolResult", Value::Object(tr)),
            );
            c.push(&line);
        }
    }

    fn due_stamps(
        &mut self,
        idx: u32,
        message_id: &str,
        turn_ts: &str,
        next_ts: i64,
        em: &mut Emitter,
    ) -> Result<()> {
        if self.stamp_plans.is_empty() {
            return Ok(());
        }
        let mut i = 0;
        while i < self.stamp_plans.len() {
            let due = match &mut self.stamp_plans[i] {
                StampPlan::Message {
                    target_turn,
                    after_turn,
                    target,
                    ..
                } => {
                    if *target_turn == idx {
                        *target = Some(message_id.to_owned());
                    }
                    *after_turn == idx
                }
                StampPlan::Range {
                    from_turn,
                    to_turn,
                    from_ts,
                    ..
                } => {
                    if *from_turn == idx {
                        *from_ts = Some(turn_ts.to_owned());
                    }
                    *to_turn == idx
                }
            };
            if !due {
                i += 1;
                continue;
            }
            let plan = self.stamp_plans.remove(i);
            let ts = next_ts - self.stamp_rng.random_range(1..900);
            match plan {
                StampPlan::Message {
                    target, enrichment, ..
                } => {
                    let target = target.unwrap_or_else(|| message_id.to_owned());
                    let selector = obj(vec![("messageId", Value::from(target))]);
                    em.stamp(stamp_line(ts, selector, enrichment))?;
                }
                StampPlan::Range {
                    from_ts,
                    with_session,
                    enrichment,
                    ..
                } => {
                    let from = from_ts.unwrap_or_else(|| turn_ts.to_owned());
                    let range = obj(vec![
                        ("fromTs", Value::from(from)),
                        ("toTs", Value::str(turn_ts)),
                    ]);
                    let mut sel = Vec::new();
                    if with_session {
                        sel.push(("sessionId", Value::str(&self.id)));
                    }
                    sel.push(("range", range));
                    em.stamp(stamp_line(ts, obj(sel), enrichment))?;
                }
            }
        }
        Ok(())
    }
}

struct Call {
    tool: Tool,
    id: String,
    target: Option<String>,
    is_error: bool,
    content_len: f64,
    args_hash: String,
    spawns: bool,
    /// (child session id, agent id) of the subagent session it spawned.
    child: Option<(String, String)>,
}

impl ContentBuf {
    fn push(&mut self, line: &Value) {
        line.write_json(&mut self.text);
        self.text.push('\n');
        self.lines += 1;
    }
}

fn obj(pairs: Vec<(&'static str, Value)>) -> Value {
    relayburn_ledger::records::obj(pairs)
}

fn stamp_line(ts: i64, selector: Value, enrichment: Value) -> Value {
    obj(vec![
        ("v", Value::Number(1.0)),
        ("kind", Value::str("stamp")),
        ("ts", Value::from(iso(ts))),
        ("selector", selector),
        ("enrichment", enrichment),
    ])
}

fn content_record(
    source: Source,
    session_id: &str,
    message_id: &str,
    ts: &str,
    role: &str,
    kind: &str,
    body: (&'static str, Value),
) -> Value {
    obj(vec![
        ("v", Value::Number(1.0)),
        ("source", Value::str(source.as_str())),
        ("sessionId", Value::str(session_id)),
        ("messageId", Value::str(message_id)),
        ("ts", Value::str(ts)),
        ("role", Value::str(role)),
        ("kind", Value::str(kind)),
        body,
    ])
}

fn text_block(rng: &mut Rng) -> Value {
    let len = log_uniform(rng, 4.0, 4_000.0);
    obj(vec![
        ("kind", Value::str("text")),
        ("byteLen", Value::Number(len)),
        ("approxTokens", Value::Number(approx_tokens(len))),
    ])
}

/// A tokenizer-like estimate: about 3.6 bytes per token.
fn approx_tokens(bytes: f64) -> f64 {
    (bytes / 3.6).ceil()
}

fn new_session_id(source: Source, start: i64, rng: &mut Rng) -> String {
    match source {
        Source::Claude => uuid_v4(rng),
        Source::Codex => uuid_v7(start, rng),
        Source::OpenCode => opencode_id("ses", start, rng),
    }
}

fn session_path(
    source: Source,
    id: &str,
    project: Option<&(String, &'static str)>,
    start: i64,
) -> String {
    match source {
        Source::Claude => {
            let dir = project.map_or("/home/dev/scratch", |(r, _)| r.as_str());
            format!(
                "/home/dev/.claude/projects/{}/{id}.jsonl",
                dir.replace('/', "-")
            )
        }
        Source::Codex => {
            let t = iso(start);
            format!(
                "/home/dev/.codex/sessions/{}/{}/{}/rollout-{}-{id}.jsonl",
                &t[0..4],
                &t[5..7],
                &t[8..10],
                t[0..19].replace(':', "-")
            )
        }
        Source::OpenCode => {
            format!("/home/dev/.local/share/opencode/storage/session/info/{id}.json")
        }
    }
}

fn fidelity_value(class: FidelityClass, source: Source) -> Value {
    let (granularity, flags, name) = match class {
        FidelityClass::Full => (
            "per-turn",
            [
                true,
                true,
                source == Source::Codex,
                true,
                source != Source::Codex,
                true,
                true,
                true,
                source == Source::Claude,
            ],
            "full",
        ),
        FidelityClass::UsageOnly => (
            "per-message",
            [true, true, false, true, true, true, false, false, false],
            "usage-only",
        ),
        FidelityClass::AggregateOnly => (
            "per-session-aggregate",
            [true, true, false, false, false, false, false, false, false],
            "aggregate-only",
        ),
        FidelityClass::Partial => (
            "per-turn",
            [true, false, false, false, false, true, false, false, false],
            "partial",
        ),
        FidelityClass::CostOnly => ("cost-only", [false; 9], "cost-only"),
    };
    let mut coverage = Object::new();
    for (k, f) in COVERAGE_KEYS.iter().zip(flags) {
        coverage.insert(*k, Value::Bool(f));
    }
    obj(vec![
        ("granularity", Value::str(granularity)),
        ("coverage", Value::Object(coverage)),
        ("class", Value::str(name)),
    ])
}
