//! A small, deterministic demo ledger, so a newcomer can see the tool work
//! without having any agent sessions of their own. Every record goes
//! through the public writers, like real ingest.

use crate::error::Result;
use crate::json::{Object, Value};
use crate::ledger::Ledger;

/// What [`write_demo`] appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub sessions: usize,
    pub turns: usize,
    pub tool_result_events: usize,
    pub user_turns: usize,
}

fn o(pairs: &[(&str, Value)]) -> Value {
    let mut obj = Object::new();
    for (k, v) in pairs {
        obj.insert(*k, v.clone());
    }
    Value::Object(obj)
}

fn s(x: &str) -> Value {
    Value::from(x)
}

fn n(x: f64) -> Value {
    Value::Number(x)
}

/// `2026-03-0DTHH:MM:SS.000Z` for minute `m` of day `day`.
fn ts(day: u32, m: u32) -> String {
    format!("2026-03-{:02}T{:02}:{:02}:00.000Z", day, 9 + m / 60, m % 60)
}

const TOOLS: [(&str, &str); 5] = [
    ("Read", "src/main.rs"),
    ("Edit", "src/lib.rs"),
    ("Bash", "cargo test"),
    ("Grep", "fn main"),
    ("Write", "README.md"),
];

/// Append a demo workload: three sessions from three sources, turns with
/// tool calls, their tool-result events and user turns, a compaction, a
/// subagent relationship and a few stamps.
pub fn write_demo(ledger: &Ledger) -> Result<DemoSummary> {
    let sessions = [
        (
            "claude-code",
            "0b1c2d3e-1111-4222-8333-444455556666",
            "claude-sonnet-4-5",
            1,
        ),
        (
            "codex",
            "9f8e7d6c-aaaa-4bbb-8ccc-dddd00001111",
            "gpt-5-codex",
            2,
        ),
        ("opencode", "ses_demoOpenCode01", "claude-opus-4-1", 3),
    ];
    let mut sum = DemoSummary::default();
    for (si, (source, sid, model, day)) in sessions.iter().enumerate() {
        let mut turns = Vec::new();
        let mut events = Vec::new();
        let mut users = Vec::new();
        let mut event_index = 0.0;
        for t in 0..24u32 {
            let mid = format!("msg_demo_{si}_{t:03}");
            let calls: Vec<Value> = (0..(t % 4))
                .map(|c| {
                    let (name, target) = TOOLS[((t + c) % 5) as usize];
                    o(&[
                        ("id", s(&format!("toolu_demo_{si}_{t}_{c}"))),
                        ("name", s(name)),
                        ("target", s(target)),
                        (
                            "argsHash",
                            s(&format!(
                                "{:016x}",
                                (si as u64 + 1) * 7919 * (t as u64 * 4 + c as u64 + 1)
                            )),
                        ),
                    ])
                })
                .collect();
            for (c, call) in calls.iter().enumerate() {
                let id = call.get("id").cloned().unwrap_or_default();
                events.push(o(&[
                    ("v", n(1.0)),
                    ("source", s(source)),
                    ("sessionId", s(sid)),
                    ("messageId", s(&mid)),
                    ("toolUseId", id),
                    ("callIndex", n(0.0)),
                    ("eventIndex", n(event_index)),
                    ("ts", s(&ts(*day, t * 3 + 1))),
                    (
                        "status",
                        s(if (t + c as u32) % 9 == 0 {
                            "errored"
                        } else {
                            "completed"
                        }),
                    ),
                    ("eventSource", s("tool_result")),
                    ("contentLength", n(f64::from(200 + t * 37))),
                ]));
                event_index += 1.0;
            }
            let input = f64::from(1200 + t * 150);
            turns.push(o(&[
                ("v", n(1.0)),
                ("source", s(source)),
                ("sessionId", s(sid)),
                ("messageId", s(&mid)),
                ("turnIndex", n(f64::from(t))),
                ("ts", s(&ts(*day, t * 3))),
                ("model", s(model)),
                ("project", s("/home/demo/relayburn")),
                ("projectKey", s("relayburn")),
                (
                    "usage",
                    o(&[
                        ("input", n(input)),
                        ("output", n(f64::from(300 + t * 11))),
                        ("reasoning", n(0.0)),
                        ("cacheRead", n(input * 8.0)),
                        ("cacheCreate5m", n(f64::from(t % 3) * 500.0)),
                        ("cacheCreate1h", n(0.0)),
                    ]),
                ),
                ("toolCalls", Value::Array(calls)),
                (
                    "stopReason",
                    s(if t % 4 == 0 { "end_turn" } else { "tool_use" }),
                ),
            ]));
            users.push(o(&[
                ("v", n(1.0)),
                ("source", s(source)),
                ("sessionId", s(sid)),
                ("userUuid", s(&format!("user_demo_{si}_{t:03}"))),
                ("ts", s(&ts(*day, t * 3 + 2))),
                ("precedingMessageId", s(&mid)),
                (
                    "blocks",
                    Value::Array(vec![o(&[
                        ("kind", s("text")),
                        ("byteLen", n(f64::from(40 + t))),
                        ("approxTokens", n(f64::from(10 + t / 4))),
                    ])]),
                ),
            ]));
        }
        sum.sessions += 1;
        sum.turns += ledger.append_turns(turns)?;
        sum.tool_result_events += ledger.append_tool_result_events(events)?;
        sum.user_turns += ledger.append_user_turns(users)?;
        ledger.append_compactions(vec![o(&[
            ("v", n(1.0)),
            ("source", s(source)),
            ("sessionId", s(sid)),
            ("ts", s(&ts(*day, 40))),
            ("precedingMessageId", s(&format!("msg_demo_{si}_013"))),
            ("tokensBeforeCompact", n(52_000.0)),
        ])])?;
    }
    let root = sessions[0].1;
    // A little raw content for the first session, as ingest keeps it.
    let content: Vec<Value> = (0..3u32)
        .map(|t| {
            o(&[
                ("v", n(1.0)),
                ("source", s(sessions[0].0)),
                ("sessionId", s(root)),
                ("messageId", s(&format!("msg_demo_0_{t:03}"))),
                ("ts", s(&ts(1, t * 3))),
                ("role", s("assistant")),
                ("kind", s("text")),
                (
                    "text",
                    s(&format!("Step {t}: reading the code before editing it.")),
                ),
            ])
        })
        .collect();
    ledger.append_content(content)?;
    ledger.stamp(
        o(&[("sessionId", s(root))]),
        o(&[
            ("workflowId", s("demo-workflow")),
            ("persona", s("builder")),
        ]),
    )?;
    ledger.stamp(
        o(&[("sessionId", s(sessions[1].1))]),
        o(&[("parentAgentId", s(root)), ("agentId", s("agent-demo-1"))]),
    )?;
    ledger.stamp(
        o(&[("messageId", s("msg_demo_2_005"))]),
        o(&[("tier", s("pinned"))]),
    )?;
    ledger.stamp(
        o(&[(
            "range",
            o(&[("fromTs", s(&ts(3, 30))), ("toTs", s(&ts(3, 60)))]),
        )]),
        o(&[("sprint", s("s1"))]),
    )?;
    Ok(sum)
}

/// Tokens of a group of turns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokens {
    pub turns: u64,
    pub input: f64,
    pub output: f64,
    pub reasoning: f64,
    pub cache_read: f64,
    pub cache_create: f64,
}

impl Tokens {
    fn add(&mut self, usage: Option<&Value>) {
        let get = |k: &str| {
            usage
                .and_then(|u| u.get(k))
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
        };
        self.turns += 1;
        self.input += get("input");
        self.output += get("output");
        self.reasoning += get("reasoning");
        self.cache_read += get("cacheRead");
        self.cache_create += get("cacheCreate5m") + get("cacheCreate1h");
    }
}

/// What the turns of a home spent, by model and by day (UTC): what a
/// person opening the tool for the first time wants to see.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spend {
    pub total: Tokens,
    /// By model, most output tokens first.
    pub by_model: Vec<(String, Tokens)>,
    /// By `YYYY-MM-DD` of the turn's `ts`, in date order.
    pub by_day: Vec<(String, Tokens)>,
}

/// Sum every turn of the ledger (stamps folded, as queries return them).
pub fn spend(ledger: &Ledger) -> Result<Spend> {
    let mut s = Spend::default();
    let mut models: std::collections::BTreeMap<String, Tokens> = Default::default();
    let mut days: std::collections::BTreeMap<String, Tokens> = Default::default();
    for t in ledger.query_turns(&crate::query::Query::default())? {
        let t = t?;
        let usage = t.get("usage");
        let text = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        s.total.add(usage);
        models.entry(text("model")).or_default().add(usage);
        let day: String = text("ts").chars().take(10).collect();
        days.entry(day).or_default().add(usage);
    }
    s.by_model = models.into_iter().collect();
    s.by_model
        .sort_by(|a, b| b.1.output.total_cmp(&a.1.output).then(a.0.cmp(&b.0)));
    s.by_day = days.into_iter().collect();
    Ok(s)
}
