//! The entry builders: the records piv appends to the manifest's list sections (failures, sessions, notifications, plans, executions, checkpoints) and the `next_action` it writes, each with its YAML form.

use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

use crate::core::taxonomy::max_retries_for;

/// missing text fields read as empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub command: String,
    pub phase: u32,
    pub error_category: String,
    pub retry_count: u32,
    /// `pending`, `auto_fixed`, `rolled_back`, `escalated`, `escalated_blocking`, ...
    pub resolution: String,
    pub checkpoint: Option<String>,
    pub details: String,
    pub timestamp: String,
}

impl Failure {
    pub fn is_pending(&self) -> bool {
        self.resolution == "pending"
    }

    /// The manifest entry in the reference's field order; `max_retries` is copied from the
    /// taxonomy (informational), `checkpoint` omitted when none.
    pub fn to_value(&self) -> Value {
        let mut m = Mapping::new();
        m.insert("command".into(), self.command.as_str().into());
        m.insert("phase".into(), self.phase.into());
        m.insert("error_category".into(), self.error_category.as_str().into());
        m.insert("timestamp".into(), self.timestamp.as_str().into());
        m.insert("retry_count".into(), self.retry_count.into());
        m.insert(
            "max_retries".into(),
            max_retries_for(&self.error_category).into(),
        );
        if let Some(tag) = &self.checkpoint {
            m.insert("checkpoint".into(), tag.as_str().into());
        }
        m.insert("resolution".into(), self.resolution.as_str().into());
        m.insert("details".into(), self.details.as_str().into());
        Value::Mapping(m)
    }
}

/// A `plans` entry as the orchestrator would record one: `{path, phase, status: complete, generated_at}`.
pub fn plan_entry(path: &str, phase: u32, now: &str) -> Value {
    let mut m = Mapping::new();
    m.insert("path".into(), path.into());
    m.insert("phase".into(), phase.into());
    m.insert("status".into(), "complete".into());
    m.insert("generated_at".into(), now.into());
    Value::Mapping(m)
}

/// The `executions` entry appended after a successful execute (zeros, as the reference).
pub fn execution_entry(phase: u32, now: &str) -> Value {
    let mut m = Mapping::new();
    m.insert("phase".into(), phase.into());
    m.insert("status".into(), "complete".into());
    m.insert("completed_at".into(), now.into());
    m.insert("tasks_total".into(), 0.into());
    m.insert("tasks_done".into(), 0.into());
    m.insert("tasks_blocked".into(), 0.into());
    Value::Mapping(m)
}

/// A new active checkpoint taken before execute: `{tag, phase, created_before: execute, status: active}`.
pub fn checkpoint_entry(tag: &str, phase: u32) -> Value {
    let mut m = Mapping::new();
    m.insert("tag".into(), tag.into());
    m.insert("phase".into(), phase.into());
    m.insert("created_before".into(), "execute".into());
    m.insert("status".into(), "active".into());
    Value::Mapping(m)
}

/// A `notifications` entry, as `handleError` recorded escalations.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEntry {
    pub timestamp: String,
    /// `escalation`, `info` or `completion`.
    pub kind: String,
    /// `warning`, `critical` or `info`.
    pub severity: String,
    pub category: String,
    pub phase: u32,
    pub details: String,
    pub blocking: bool,
    pub action_taken: String,
}

impl NotificationEntry {
    pub fn to_value(&self) -> Value {
        let mut m = Mapping::new();
        m.insert("timestamp".into(), self.timestamp.as_str().into());
        m.insert("type".into(), self.kind.as_str().into());
        m.insert("severity".into(), self.severity.as_str().into());
        m.insert("category".into(), self.category.as_str().into());
        m.insert("phase".into(), self.phase.into());
        m.insert("details".into(), self.details.as_str().into());
        m.insert("blocking".into(), self.blocking.into());
        m.insert("action_taken".into(), self.action_taken.as_str().into());
        Value::Mapping(m)
    }
}

/// piv's record of one agent session, appended to `sessions` (a piv-only section).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// `plan`, `execute`, `validate`, `commit`, `refactor`, `research`, `preflight`, ...
    pub step: String,
    /// None for pre-loop sessions.
    pub phase: Option<u32>,
    /// The slash commands sent, e.g. `/prime + /execute .agents/plans/x.md`.
    pub commands: String,
    pub session_id: Option<String>,
    /// `success` or the result's `error_*` subtype (or `no_result`, `timeout`, ...).
    pub outcome: String,
    /// What the session cost; None is written as `cost_usd: null` plus `cost_unknown:
    /// true` (stopped before its result), never as a free $0.
    pub cost_usd: Option<f64>,
    /// The model the session reported (omitted when unknown).
    pub model: Option<String>,
    pub num_turns: Option<u64>,
    pub duration_ms: Option<u64>,
    pub finished_at: String,
}

impl SessionRecord {
    pub fn to_value(&self) -> Value {
        let mut m = Mapping::new();
        m.insert("step".into(), self.step.as_str().into());
        m.insert("phase".into(), self.phase.map_or(Value::Null, |p| p.into()));
        m.insert("commands".into(), self.commands.as_str().into());
        m.insert(
            "session_id".into(),
            self.session_id.as_deref().map_or(Value::Null, |s| s.into()),
        );
        m.insert("outcome".into(), self.outcome.as_str().into());
        m.insert(
            "cost_usd".into(),
            self.cost_usd.map_or(Value::Null, |c| c.into()),
        );
        if self.cost_usd.is_none() {
            m.insert("cost_unknown".into(), true.into());
        }
        if let Some(model) = &self.model {
            m.insert("model".into(), model.as_str().into());
        }
        m.insert(
            "num_turns".into(),
            self.num_turns.map_or(Value::Null, |n| n.into()),
        );
        m.insert(
            "duration_ms".into(),
            self.duration_ms.map_or(Value::Null, |n| n.into()),
        );
        m.insert("finished_at".into(), self.finished_at.as_str().into());
        Value::Mapping(m)
    }
}

/// How sure a recommended next action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    High,
    Medium,
    Low,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        }
    }
}

/// A recommended next step, as the manifest's `next_action` holds it (the rules that
/// choose one are [`crate::core::next_action`]). Serialises as
/// `{"command","argument","reason","confidence"}` with `argument` null when absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAction {
    pub command: String,
    pub argument: Option<String>,
    pub reason: String,
    pub confidence: Confidence,
}

impl NextAction {
    /// Whether nothing is left to do.
    pub fn is_done(&self) -> bool {
        self.command == "done"
    }

    /// The manifest's `next_action` map: `argument` omitted when none, as the reference
    /// dumped it.
    pub fn to_value(&self) -> Value {
        let mut m = Mapping::new();
        m.insert("command".into(), self.command.as_str().into());
        if let Some(arg) = &self.argument {
            m.insert("argument".into(), arg.as_str().into());
        }
        m.insert("reason".into(), self.reason.as_str().into());
        m.insert("confidence".into(), self.confidence.as_str().into());
        Value::Mapping(m)
    }
}
