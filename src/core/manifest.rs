//! The manifest model: a YAML document kept as a value layer (so every key piv does not model survives read→write), typed views where piv decides, and pure update operations with the reference's merge rules.
//!
//! `.agents/manifest.yaml` is written mostly by the Claude Code slash commands, which add
//! keys piv has never heard of. So the document itself stays a [`serde_yaml::Mapping`]
//! (key order and unknown keys kept), decisions are taken from a typed [`ManifestView`]
//! built on demand (wrong types become [`ManifestError::WrongType`] naming the field, never
//! a panic), and every change is a [`ManifestUpdate`] applied in place. Phase keys may be
//! YAML ints or strings; they are matched numerically everywhere, as the earlier version
//! effectively did (JavaScript object keys are strings).

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::{Mapping, Value};

use crate::core::next_action::{Confidence, NextAction};
use crate::core::taxonomy::{max_retries_for, severity_for, Severity};

/// Why a manifest text cannot be used. Messages are lowercase, name the field and say
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is empty: run /prime to rebuild it")]
    Empty,
    #[error("{}", syntax_message(*line, *column, message))]
    Syntax {
        /// 1-based; 0 when the parser gave no position.
        line: usize,
        /// 1-based; 0 when the parser gave no position.
        column: usize,
        message: String,
    },
    #[error("the manifest's top level is {found}, not a map of keys: fix the file or run /prime to rebuild it")]
    NotAMap { found: &'static str },
    #[error("manifest has no phases: add a `phases:` map (e.g. `1: {{plan: not_started, execution: not_started, validation: not_run}}`) or run /prime")]
    NoPhases,
    #[error("phase key {0:?} is not a number: phase keys must be whole numbers such as 1 or '2'")]
    BadPhaseKey(String),
    #[error(
        "manifest field `{field}` should be {expected}: fix that field in .agents/manifest.yaml"
    )]
    WrongType {
        /// A path such as `failures[2].retry_count`.
        field: String,
        expected: &'static str,
    },
}

fn syntax_message(line: usize, column: usize, message: &str) -> String {
    if line == 0 {
        format!("yaml syntax error: {message}; fix the file by hand (piv will not overwrite it)")
    } else {
        format!(
            "yaml syntax error at line {line}, column {column}: {message}; fix the file by hand (piv will not overwrite it)"
        )
    }
}

fn wrong(field: impl Into<String>, expected: &'static str) -> ManifestError {
    ManifestError::WrongType {
        field: field.into(),
        expected,
    }
}

/// The manifest document. Cloning is cheap enough for a file of a few hundred lines.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    doc: Mapping,
}

impl Manifest {
    /// Parses manifest text. Empty (or comment-only) text, a syntax error and a top level
    /// that is not a map are errors; nothing else is checked here (see [`Manifest::view`]).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        if text.trim().is_empty() {
            return Err(ManifestError::Empty);
        }
        let value: Value = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            ManifestError::Syntax {
                line,
                column,
                message: e.to_string(),
            }
        })?;
        match value {
            Value::Mapping(doc) => {
                // serde_yaml reads some documents it cannot write back (a tagged mapping
                // key such as `!x a: 1`); refuse them here so `to_yaml` never fails later.
                if let Err(e) = serde_yaml::to_string(&doc) {
                    return Err(ManifestError::Syntax {
                        line: 0,
                        column: 0,
                        message: format!(
                            "the document cannot be written back ({e}), e.g. a tagged key"
                        ),
                    });
                }
                Ok(Manifest { doc })
            }
            Value::Null => Err(ManifestError::Empty),
            other => Err(ManifestError::NotAMap {
                found: kind_of(&other),
            }),
        }
    }

    /// Wraps an existing document (e.g. built in a test).
    pub fn from_mapping(doc: Mapping) -> Manifest {
        Manifest { doc }
    }

    /// The YAML text of the document, keys in their original order.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.doc).expect("a YAML mapping always serialises")
    }

    /// The raw document, for callers that need a key piv does not model.
    pub fn doc(&self) -> &Mapping {
        &self.doc
    }

    /// The typed view piv decides from.
    pub fn view(&self) -> Result<ManifestView, ManifestError> {
        ManifestView::from_doc(&self.doc)
    }

    /// Applies one update and stamps `last_updated` with `now`.
    pub fn apply(&mut self, update: &ManifestUpdate, now: &str) -> Result<(), ManifestError> {
        match update {
            ManifestUpdate::SetPhaseStatus {
                phase,
                plan,
                execution,
                validation,
            } => self.set_phase_status(*phase, plan, execution, validation, &None)?,
            ManifestUpdate::SetPhaseCommit { phase, commit } => {
                self.set_phase_status(*phase, &None, &None, &None, &Some(commit.clone()))?
            }
            ManifestUpdate::Append { section, entry } => {
                list_mut(&mut self.doc, section.key())?.push(entry.clone())
            }
            ManifestUpdate::Merge(updates) => merge(&mut self.doc, updates),
            ManifestUpdate::ResolveFailures {
                phase,
                command,
                resolution,
            } => {
                for entry in list_mut(&mut self.doc, "failures")?.iter_mut() {
                    let Value::Mapping(f) = entry else { continue };
                    let matches = f.get("resolution").and_then(Value::as_str) == Some("pending")
                        && f.get("phase").and_then(number_of) == Some(*phase)
                        && f.get("command").and_then(Value::as_str) == Some(command.as_str());
                    if matches {
                        f.insert("resolution".into(), resolution.as_str().into());
                    }
                }
            }
            ManifestUpdate::ResolveCheckpoint { tag } => {
                for entry in list_mut(&mut self.doc, "checkpoints")?.iter_mut() {
                    let Value::Mapping(c) = entry else { continue };
                    if c.get("tag").and_then(Value::as_str) == Some(tag.as_str()) {
                        c.insert("status".into(), "resolved".into());
                    }
                }
            }
            ManifestUpdate::SetNextAction(action) => {
                self.doc
                    .insert("next_action".into(), next_action_value(action));
            }
        }
        self.doc.insert("last_updated".into(), now.into());
        Ok(())
    }

    /// Applies updates in order (all or nothing is not needed: callers write only on success).
    pub fn apply_all(
        &mut self,
        updates: &[ManifestUpdate],
        now: &str,
    ) -> Result<(), ManifestError> {
        updates.iter().try_for_each(|u| self.apply(u, now))
    }

    fn set_phase_status(
        &mut self,
        phase: u32,
        plan: &Option<StepStatus>,
        execution: &Option<StepStatus>,
        validation: &Option<ValidationStatus>,
        commit: &Option<StepStatus>,
    ) -> Result<(), ManifestError> {
        let phases = match self.doc.get_mut("phases") {
            Some(Value::Mapping(m)) => m,
            Some(Value::Null) | None => {
                self.doc
                    .insert("phases".into(), Value::Mapping(Mapping::new()));
                match self.doc.get_mut("phases") {
                    Some(Value::Mapping(m)) => m,
                    _ => unreachable!("just inserted a mapping"),
                }
            }
            Some(_) => return Err(wrong("phases", "a map of phase number to status")),
        };
        let existing_key = phases
            .keys()
            .find(|k| phase_key_number(k) == Some(phase))
            .cloned();
        let key = existing_key.unwrap_or_else(|| {
            // Match the style of the keys already there; a new manifest gets int keys,
            // as the earlier version dumped them.
            if phases.keys().any(Value::is_string) {
                Value::String(phase.to_string())
            } else {
                Value::Number(phase.into())
            }
        });
        let entry = phases.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            let mut fresh = Mapping::new();
            fresh.insert("plan".into(), "not_started".into());
            fresh.insert("execution".into(), "not_started".into());
            fresh.insert("validation".into(), "not_run".into());
            *entry = Value::Mapping(fresh);
        }
        let Value::Mapping(entry) = entry else {
            return Err(wrong(
                format!("phases.{phase}"),
                "a map with plan, execution and validation",
            ));
        };
        if let Some(s) = plan {
            entry.insert("plan".into(), s.as_str().into());
        }
        if let Some(s) = execution {
            entry.insert("execution".into(), s.as_str().into());
        }
        if let Some(s) = validation {
            entry.insert("validation".into(), s.as_str().into());
        }
        if let Some(s) = commit {
            entry.insert("commit".into(), s.as_str().into());
        }
        Ok(())
    }
}

/// The list sections piv appends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSection {
    Plans,
    Executions,
    Validations,
    Failures,
    Notifications,
    Checkpoints,
    /// piv's own record of every agent session (id, cost, turns, duration).
    Sessions,
}

impl ListSection {
    /// The top-level key of the section.
    pub fn key(self) -> &'static str {
        match self {
            ListSection::Plans => "plans",
            ListSection::Executions => "executions",
            ListSection::Validations => "validations",
            ListSection::Failures => "failures",
            ListSection::Notifications => "notifications",
            ListSection::Checkpoints => "checkpoints",
            ListSection::Sessions => "sessions",
        }
    }
}

/// One pure change to the manifest. Every application also sets `last_updated`.
#[derive(Debug, Clone, PartialEq)]
pub enum ManifestUpdate {
    /// Sets some status fields of a phase, creating the phase as
    /// `{not_started, not_started, not_run}` when absent.
    SetPhaseStatus {
        phase: u32,
        plan: Option<StepStatus>,
        execution: Option<StepStatus>,
        validation: Option<ValidationStatus>,
    },
    /// piv's commit status of a phase (`pending` after validation passed, `complete`
    /// after `/commit`), creating the phase like `SetPhaseStatus` when absent.
    SetPhaseCommit { phase: u32, commit: StepStatus },
    /// Appends one entry to a list section (created when missing).
    Append { section: ListSection, entry: Value },
    /// The reference merge: list sections (and, unlike the reference, `checkpoints`)
    /// append; other lists replace; maps merge one level deep; scalars replace.
    Merge(Mapping),
    /// Sets `resolution` on every *pending* failure of that phase and command.
    ResolveFailures {
        phase: u32,
        command: String,
        resolution: String,
    },
    /// Marks every checkpoint with this tag `resolved`.
    ResolveCheckpoint { tag: String },
    /// Writes `next_action` (argument omitted when none, as the reference dumped it).
    SetNextAction(NextAction),
}

/// Keys whose lists a merge appends to rather than replaces.
const APPEND_ON_MERGE: [&str; 7] = [
    "plans",
    "executions",
    "validations",
    "failures",
    "notifications",
    "checkpoints",
    "sessions",
];

fn merge(doc: &mut Mapping, updates: &Mapping) {
    for (key, new) in updates {
        let append = key.as_str().is_some_and(|k| APPEND_ON_MERGE.contains(&k));
        let slot = find_key(doc, key).cloned();
        match (slot.as_ref().and_then(|k| doc.get_mut(k)), new) {
            (Some(Value::Sequence(old)), Value::Sequence(items)) if append => {
                old.extend(items.iter().cloned())
            }
            (Some(Value::Mapping(old)), Value::Mapping(fields)) => {
                for (k, v) in fields {
                    let target = find_key(old, k).cloned().unwrap_or_else(|| k.clone());
                    old.insert(target, v.clone());
                }
            }
            (Some(old), _) => *old = new.clone(),
            (None, _) => {
                doc.insert(key.clone(), new.clone());
            }
        }
    }
}

/// The existing key equal to `key` the way JavaScript object keys compare (`1` and `'1'`
/// are the same key).
fn find_key<'a>(map: &'a Mapping, key: &Value) -> Option<&'a Value> {
    if map.contains_key(key) {
        return map.keys().find(|k| *k == key);
    }
    let wanted = scalar_text(key)?;
    map.keys()
        .find(|k| scalar_text(k).as_deref() == Some(wanted.as_str()))
}

fn list_mut<'a>(
    doc: &'a mut Mapping,
    key: &'static str,
) -> Result<&'a mut Vec<Value>, ManifestError> {
    if matches!(doc.get(key), None | Some(Value::Null)) {
        doc.insert(key.into(), Value::Sequence(Vec::new()));
    }
    match doc.get_mut(key) {
        Some(Value::Sequence(items)) => Ok(items),
        _ => Err(wrong(key, "a list")),
    }
}

fn next_action_value(action: &NextAction) -> Value {
    let mut m = Mapping::new();
    m.insert("command".into(), action.command.as_str().into());
    if let Some(arg) = &action.argument {
        m.insert("argument".into(), arg.as_str().into());
    }
    m.insert("reason".into(), action.reason.as_str().into());
    m.insert("confidence".into(), action.confidence.as_str().into());
    Value::Mapping(m)
}

// ---------------------------------------------------------------------------------------
// Typed view

/// Status of a plan or execution step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepStatus {
    NotStarted,
    InProgress,
    Complete,
    /// Anything else a slash command wrote; counts as not complete.
    Other(String),
}

impl StepStatus {
    pub fn parse(s: &str) -> StepStatus {
        match s {
            "not_started" => StepStatus::NotStarted,
            "in_progress" => StepStatus::InProgress,
            "complete" => StepStatus::Complete,
            other => StepStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StepStatus::NotStarted => "not_started",
            StepStatus::InProgress => "in_progress",
            StepStatus::Complete => "complete",
            StepStatus::Other(s) => s,
        }
    }
}

/// Status of a phase's validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationStatus {
    NotRun,
    Pass,
    Partial,
    Fail,
    /// Anything else a slash command wrote; counts as not passed.
    Other(String),
}

impl ValidationStatus {
    pub fn parse(s: &str) -> ValidationStatus {
        match s {
            "not_run" => ValidationStatus::NotRun,
            "pass" => ValidationStatus::Pass,
            "partial" => ValidationStatus::Partial,
            "fail" => ValidationStatus::Fail,
            other => ValidationStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ValidationStatus::NotRun => "not_run",
            ValidationStatus::Pass => "pass",
            ValidationStatus::Partial => "partial",
            ValidationStatus::Fail => "fail",
            ValidationStatus::Other(s) => s,
        }
    }
}

/// The status of one phase (or one monorepo slice). A missing field reads as
/// not started / not run, which the rules treat exactly as the earlier version treated
/// `undefined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseStatus {
    pub plan: StepStatus,
    pub execution: StepStatus,
    pub validation: ValidationStatus,
    pub name: Option<String>,
    /// piv's extension: `pending` once validation passed, `complete` after `/commit`.
    /// Absent in manifests written by others (and the reference): counts as committed.
    pub commit: Option<StepStatus>,
}

impl PhaseStatus {
    /// Done means plan and execution complete and validation passed.
    pub fn is_complete(&self) -> bool {
        self.plan == StepStatus::Complete
            && self.execution == StepStatus::Complete
            && self.validation == ValidationStatus::Pass
    }
}

/// A technology profile after the reference's `resolveProfiles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub path: Option<String>,
    pub status: Option<String>,
    pub freshness: Option<String>,
}

impl Profile {
    /// Only the literal `freshness: stale` marks a profile stale (dates are never read).
    pub fn is_stale(&self) -> bool {
        self.freshness.as_deref() == Some("stale")
    }
}

/// `preflight` as far as piv reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    pub status: Option<String>,
}

/// An entry of `plans`. `phase` is matched numerically (int or string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanEntry {
    pub path: Option<String>,
    pub phase: Option<u32>,
    pub status: Option<String>,
    pub module: Option<String>,
    pub slice: Option<String>,
}

/// An entry of `executions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionEntry {
    pub phase: Option<u32>,
    pub status: Option<String>,
}

/// An entry of `validations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationEntry {
    pub path: Option<String>,
    pub phase: Option<u32>,
    pub status: Option<String>,
    pub scenarios_passed: Option<u64>,
    pub scenarios_failed: Option<u64>,
    pub scenarios_skipped: Option<u64>,
}

/// An entry of `checkpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tag: String,
    pub phase: Option<u32>,
    /// `active` or `resolved`.
    pub status: String,
}

/// An entry of `failures`. Missing `retry_count` reads as 0 and a string `'1'` is coerced;
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

/// A monorepo module (behaviour.md §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub specification: Option<String>,
    pub status: Option<String>,
    /// Slice id → status, in string order.
    pub slices: BTreeMap<String, PhaseStatus>,
}

/// The typed view of a manifest: what piv decides from. Built by [`Manifest::view`].
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestView {
    /// Phase number → status, numerically sorted.
    pub phases: BTreeMap<u32, PhaseStatus>,
    /// Whether a `prd` is present (the only thing the rules test).
    pub has_prd: bool,
    pub prd_path: Option<String>,
    /// Resolved profiles (top-level `profiles`, else `research.profiles`), map order kept.
    pub profiles: Vec<Profile>,
    pub research_pending: Vec<String>,
    pub preflight: Option<Preflight>,
    pub plans: Vec<PlanEntry>,
    pub executions: Vec<ExecutionEntry>,
    pub validations: Vec<ValidationEntry>,
    pub checkpoints: Vec<Checkpoint>,
    pub failures: Vec<Failure>,
    /// The last recorded next action, when it is well formed (slash commands write it too).
    pub next_action: Option<NextAction>,
    pub last_updated: Option<String>,
    /// `project.structure` (e.g. `context-monorepo` or `classic`).
    pub project_structure: Option<String>,
    /// `modules`, when present.
    pub modules: Option<BTreeMap<String, Module>>,
    /// The truthy `_hasArchitectureMd` key the reference's monorepo rule looks at.
    pub has_architecture_md: bool,
}

impl ManifestView {
    /// Monorepo mode: `project.structure == context-monorepo` and `modules` present.
    pub fn is_monorepo(&self) -> bool {
        self.project_structure.as_deref() == Some("context-monorepo") && self.modules.is_some()
    }

    /// The first pending failure in list order, optionally only those at least as severe
    /// as `min_severity` (unknown categories count as blocking).
    pub fn first_pending_failure(&self, min_severity: Option<Severity>) -> Option<&Failure> {
        self.failures.iter().find(|f| {
            f.is_pending() && min_severity.is_none_or(|min| severity_for(&f.error_category) >= min)
        })
    }

    /// The first checkpoint with status `active`.
    pub fn active_checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.status == "active")
    }

    /// The first phase (numeric order) that is not plan complete, execution complete,
    /// validation pass.
    pub fn next_unfinished_phase(&self) -> Option<u32> {
        self.phases
            .iter()
            .find(|(_, s)| !s.is_complete())
            .map(|(n, _)| *n)
    }

    /// The first phase (numeric order) that needs work, counting piv's pending commit:
    /// `(phase, commit_only)` where `commit_only` means only the commit is left.
    pub fn next_phase_needing_work(&self) -> Option<(u32, bool)> {
        self.phases.iter().find_map(|(n, s)| {
            if !s.is_complete() {
                Some((*n, false))
            } else if s
                .commit
                .as_ref()
                .is_some_and(|c| *c != StepStatus::Complete)
            {
                Some((*n, true))
            } else {
                None
            }
        })
    }

    /// Pending failures in list order.
    pub fn pending_failures(&self) -> impl Iterator<Item = &Failure> {
        self.failures.iter().filter(|f| f.is_pending())
    }

    /// The tag of the active checkpoint of `phase`, if any.
    pub fn active_checkpoint_for(&self, phase: u32) -> Option<&str> {
        self.checkpoints
            .iter()
            .find(|c| c.status == "active" && c.phase == Some(phase))
            .map(|c| c.tag.as_str())
    }

    /// The preflight status, when a preflight section exists.
    pub fn preflight_status(&self) -> Option<&str> {
        self.preflight.as_ref().and_then(|p| p.status.as_deref())
    }

    /// The path of the first plan entry for `phase`.
    pub fn plan_path_for(&self, phase: u32) -> Option<&str> {
        self.plans
            .iter()
            .find(|p| p.phase == Some(phase))
            .and_then(|p| p.path.as_deref())
    }

    fn from_doc(doc: &Mapping) -> Result<ManifestView, ManifestError> {
        let research = match present(doc, "research") {
            None => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(_) => return Err(wrong("research", "a map")),
        };
        Ok(ManifestView {
            phases: read_phases(doc)?,
            has_prd: present(doc, "prd").is_some_and(truthy),
            prd_path: match present(doc, "prd") {
                Some(Value::Mapping(m)) => opt_text(m, "path", "prd")?,
                _ => None,
            },
            profiles: read_profiles(doc, research)?,
            research_pending: match research {
                Some(r) => read_text_list(r, "pending", "research.pending")?,
                None => Vec::new(),
            },
            preflight: match present(doc, "preflight") {
                None => None,
                Some(Value::Mapping(m)) => Some(Preflight {
                    status: opt_text(m, "status", "preflight")?,
                }),
                Some(v) if truthy(v) => Some(Preflight { status: None }),
                Some(_) => None,
            },
            plans: entries(doc, "plans", |m, at| {
                Ok(PlanEntry {
                    path: opt_text(m, "path", at)?,
                    phase: opt_number(m, "phase", at)?,
                    status: opt_text(m, "status", at)?,
                    module: opt_text(m, "module", at)?,
                    slice: opt_text(m, "slice", at)?,
                })
            })?,
            executions: entries(doc, "executions", |m, at| {
                Ok(ExecutionEntry {
                    phase: opt_number(m, "phase", at)?,
                    status: opt_text(m, "status", at)?,
                })
            })?,
            validations: entries(doc, "validations", |m, at| {
                Ok(ValidationEntry {
                    path: opt_text(m, "path", at)?,
                    phase: opt_number(m, "phase", at)?,
                    status: opt_text(m, "status", at)?,
                    scenarios_passed: opt_count(m, "scenarios_passed", at)?,
                    scenarios_failed: opt_count(m, "scenarios_failed", at)?,
                    scenarios_skipped: opt_count(m, "scenarios_skipped", at)?,
                })
            })?,
            checkpoints: entries(doc, "checkpoints", |m, at| {
                Ok(Checkpoint {
                    tag: opt_text(m, "tag", at)?.unwrap_or_default(),
                    phase: opt_number(m, "phase", at)?,
                    status: opt_text(m, "status", at)?.unwrap_or_default(),
                })
            })?,
            failures: entries(doc, "failures", |m, at| {
                Ok(Failure {
                    command: opt_text(m, "command", at)?.unwrap_or_default(),
                    phase: opt_number(m, "phase", at)?.unwrap_or(0),
                    error_category: opt_text(m, "error_category", at)?.unwrap_or_default(),
                    retry_count: opt_number(m, "retry_count", at)?.unwrap_or(0),
                    resolution: opt_text(m, "resolution", at)?.unwrap_or_default(),
                    checkpoint: opt_text(m, "checkpoint", at)?,
                    details: opt_text(m, "details", at)?.unwrap_or_default(),
                    timestamp: opt_text(m, "timestamp", at)?.unwrap_or_default(),
                })
            })?,
            next_action: match present(doc, "next_action") {
                Some(Value::Mapping(m)) => read_next_action(m),
                _ => None,
            },
            last_updated: opt_text(doc, "last_updated", "")?,
            project_structure: match present(doc, "project") {
                None => None,
                Some(Value::Mapping(m)) => opt_text(m, "structure", "project")?,
                Some(_) => return Err(wrong("project", "a map")),
            },
            modules: read_modules(doc)?,
            has_architecture_md: present(doc, "_hasArchitectureMd").is_some_and(truthy),
        })
    }
}

/// A key's value, treating an explicit `null` as absent (as `??` did).
fn present<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// JavaScript truthiness, for the rules that only test presence.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The text of a scalar (strings as is, numbers and booleans printed); None otherwise.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A whole number from an int or a numeric string (`2`, `'2'`).
fn number_of(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => s.trim().parse::<u32>().ok(),
        _ => None,
    }
}

fn phase_key_number(k: &Value) -> Option<u32> {
    number_of(k)
}

fn field_path(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn opt_text(m: &Mapping, key: &str, at: &str) -> Result<Option<String>, ManifestError> {
    match present(m, key) {
        None => Ok(None),
        Some(v) => scalar_text(v)
            .map(Some)
            .ok_or_else(|| wrong(field_path(at, key), "text")),
    }
}

fn opt_number(m: &Mapping, key: &str, at: &str) -> Result<Option<u32>, ManifestError> {
    match present(m, key) {
        None => Ok(None),
        Some(v) => number_of(v)
            .map(Some)
            .ok_or_else(|| wrong(field_path(at, key), "a whole number")),
    }
}

fn opt_count(m: &Mapping, key: &str, at: &str) -> Result<Option<u64>, ManifestError> {
    Ok(opt_number(m, key, at)?.map(u64::from))
}

fn read_text_list(m: &Mapping, key: &str, at: &str) -> Result<Vec<String>, ManifestError> {
    match present(m, key) {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| scalar_text(v).ok_or_else(|| wrong(format!("{at}[{i}]"), "text")))
            .collect(),
        Some(_) => Err(wrong(at, "a list of names")),
    }
}

/// Reads a top-level list of maps; a missing list is empty, a `null` entry is skipped.
fn entries<T>(
    doc: &Mapping,
    key: &str,
    read: impl Fn(&Mapping, &str) -> Result<T, ManifestError>,
) -> Result<Vec<T>, ManifestError> {
    let items = match present(doc, key) {
        None => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => return Err(wrong(key, "a list")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        match item {
            Value::Null => {}
            Value::Mapping(m) => out.push(read(m, &at)?),
            _ => return Err(wrong(at, "a map")),
        }
    }
    Ok(out)
}

fn read_status(m: &Mapping, at: &str) -> Result<PhaseStatus, ManifestError> {
    Ok(PhaseStatus {
        plan: opt_text(m, "plan", at)?.map_or(StepStatus::NotStarted, |s| StepStatus::parse(&s)),
        execution: opt_text(m, "execution", at)?
            .map_or(StepStatus::NotStarted, |s| StepStatus::parse(&s)),
        validation: opt_text(m, "validation", at)?
            .map_or(ValidationStatus::NotRun, |s| ValidationStatus::parse(&s)),
        name: opt_text(m, "name", at)?,
        commit: opt_text(m, "commit", at)?.map(|s| StepStatus::parse(&s)),
    })
}

fn read_phases(doc: &Mapping) -> Result<BTreeMap<u32, PhaseStatus>, ManifestError> {
    let phases = match present(doc, "phases") {
        None => return Err(ManifestError::NoPhases),
        Some(Value::Mapping(m)) => m,
        Some(_) => return Err(wrong("phases", "a map of phase number to status")),
    };
    let mut out = BTreeMap::new();
    for (key, value) in phases {
        let Some(n) = phase_key_number(key) else {
            let shown = scalar_text(key).unwrap_or_else(|| format!("{key:?}"));
            return Err(ManifestError::BadPhaseKey(shown));
        };
        let at = format!("phases.{}", scalar_text(key).unwrap_or_default());
        let Value::Mapping(m) = value else {
            return Err(wrong(at, "a map with plan, execution and validation"));
        };
        out.insert(n, read_status(m, &at)?);
    }
    Ok(out)
}

fn read_profiles(doc: &Mapping, research: Option<&Mapping>) -> Result<Vec<Profile>, ManifestError> {
    match present(doc, "profiles") {
        Some(Value::Mapping(m)) if !m.is_empty() => {
            let mut out = Vec::new();
            for (name, entry) in m {
                let name = scalar_text(name).unwrap_or_default();
                let at = format!("profiles.{name}");
                let profile = match entry {
                    Value::Null => Profile {
                        name,
                        path: None,
                        status: None,
                        freshness: None,
                    },
                    Value::Mapping(e) => Profile {
                        path: opt_text(e, "path", &at)?,
                        status: opt_text(e, "status", &at)?,
                        freshness: opt_text(e, "freshness", &at)?,
                        name,
                    },
                    _ => return Err(wrong(at, "a map")),
                };
                out.push(profile);
            }
            return Ok(out);
        }
        None | Some(Value::Mapping(_)) => {}
        Some(_) => return Err(wrong("profiles", "a map of profile name to entry")),
    }
    let Some(research) = research else {
        return Ok(Vec::new());
    };
    let items = match present(research, "profiles") {
        None => return Ok(Vec::new()),
        Some(Value::Sequence(items)) => items,
        Some(_) => return Err(wrong("research.profiles", "a list")),
    };
    let mut out: Vec<Profile> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("research.profiles[{i}]");
        let Value::Mapping(e) = item else {
            return Err(wrong(at, "a map"));
        };
        let profile = Profile {
            name: opt_text(e, "name", &at)?.unwrap_or_default(),
            path: opt_text(e, "path", &at)?,
            status: Some("complete".to_string()),
            freshness: opt_text(e, "freshness", &at)?,
        };
        // Keyed by name: a later duplicate replaces the earlier one in place.
        match out.iter_mut().find(|p| p.name == profile.name) {
            Some(existing) => *existing = profile,
            None => out.push(profile),
        }
    }
    Ok(out)
}

fn read_modules(doc: &Mapping) -> Result<Option<BTreeMap<String, Module>>, ManifestError> {
    let modules = match present(doc, "modules") {
        None => return Ok(None),
        Some(Value::Mapping(m)) => m,
        Some(_) => return Err(wrong("modules", "a map of module name to module")),
    };
    let mut out = BTreeMap::new();
    for (name, module) in modules {
        let name = scalar_text(name).unwrap_or_default();
        let at = format!("modules.{name}");
        let module = match module {
            Value::Null => Module {
                specification: None,
                status: None,
                slices: BTreeMap::new(),
            },
            Value::Mapping(m) => {
                let mut slices = BTreeMap::new();
                match present(m, "slices") {
                    None => {}
                    Some(Value::Mapping(s)) => {
                        for (id, status) in s {
                            let id = scalar_text(id).unwrap_or_default();
                            let slice_at = format!("{at}.slices.{id}");
                            let status = match status {
                                Value::Mapping(st) => read_status(st, &slice_at)?,
                                Value::Null => read_status(&Mapping::new(), &slice_at)?,
                                _ => {
                                    return Err(wrong(
                                        slice_at,
                                        "a map with plan, execution and validation",
                                    ))
                                }
                            };
                            slices.insert(id, status);
                        }
                    }
                    Some(_) => {
                        return Err(wrong(format!("{at}.slices"), "a map of slice id to status"))
                    }
                }
                Module {
                    specification: opt_text(m, "specification", &at)?,
                    status: opt_text(m, "status", &at)?,
                    slices,
                }
            }
            _ => return Err(wrong(at, "a map")),
        };
        out.insert(name, module);
    }
    Ok(Some(out))
}

fn read_next_action(m: &Mapping) -> Option<NextAction> {
    let text = |k: &str| present(m, k).and_then(scalar_text);
    Some(NextAction {
        command: text("command")?,
        argument: text("argument"),
        reason: text("reason").unwrap_or_default(),
        confidence: match text("confidence").as_deref() {
            Some("high") => Confidence::High,
            Some("medium") => Confidence::Medium,
            Some("low") => Confidence::Low,
            _ => return None,
        },
    })
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::next_action::{Confidence, NextAction};

    const NOW: &str = "2030-01-02T03:04:05.678Z";

    const RICH: &str = "\
zz_first_unknown: {keep: me, nested: {deep: [1, 2]}}
prd:
  path: .agents/PRD.md
  prd2: {path: PRD-gen2.md, generation: 2}
phases:
  '1': {plan: complete, execution: complete, validation: pass, name: Core, generation: 1}
  2: {plan: complete, execution: in_progress, validation: not_run, custom: x}
plans:
  - {path: p1.md, phase: 1, status: complete, module_hint: alpha}
failures:
  - command: execute
    phase: 2
    error_category: test_failure
    retry_count: 0
    resolution: pending
    details: 'vitest: 3 tests failed'
    extra_field: {why: unknown}
evolution: {generation: 1}
last_updated: '2001-01-01T00:00:00.000Z'
aa_last_unknown: [x, {y: z}]
";

    fn parse(text: &str) -> Manifest {
        Manifest::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn keys(m: &Mapping) -> Vec<String> {
        m.keys().map(|k| scalar_text(k).unwrap()).collect()
    }

    #[test]
    fn round_trip_keeps_unknown_keys_order_and_key_styles() {
        let original = parse(RICH);
        let mut written = original.clone();
        written
            .apply(
                &ManifestUpdate::SetPhaseStatus {
                    phase: 2,
                    plan: None,
                    execution: Some(StepStatus::Complete),
                    validation: None,
                },
                NOW,
            )
            .unwrap();
        let reread = parse(&written.to_yaml());
        assert_eq!(
            keys(reread.doc()),
            keys(original.doc()),
            "top-level keys and order survive"
        );
        let doc = reread.doc();
        assert_eq!(doc["zz_first_unknown"], original.doc()["zz_first_unknown"]);
        assert_eq!(doc["aa_last_unknown"], original.doc()["aa_last_unknown"]);
        assert_eq!(doc["evolution"], original.doc()["evolution"]);
        assert_eq!(doc["prd"]["prd2"]["generation"], Value::from(2));
        // Phase keys keep their YAML type: '1' a string, 2 an int; extras inside phases kept.
        let phases = doc["phases"].as_mapping().unwrap();
        assert!(phases.contains_key(Value::from("1")));
        assert!(phases.contains_key(Value::from(2)));
        assert_eq!(phases[Value::from("1")]["generation"], Value::from(1));
        assert_eq!(phases[Value::from(2)]["custom"], Value::from("x"));
        assert_eq!(phases[Value::from(2)]["execution"], Value::from("complete"));
        // Extras inside list entries kept.
        assert_eq!(doc["plans"][0]["module_hint"], Value::from("alpha"));
        assert_eq!(
            doc["failures"][0]["extra_field"]["why"],
            Value::from("unknown")
        );
        assert_eq!(doc["last_updated"], Value::from(NOW));
        // Unchanged document round-trips to an equal value.
        assert_eq!(parse(&original.to_yaml()), original);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Manifest::parse(""), Err(ManifestError::Empty));
        assert_eq!(Manifest::parse("  \n\n"), Err(ManifestError::Empty));
        assert_eq!(
            Manifest::parse("# only a comment\n"),
            Err(ManifestError::Empty)
        );
        assert_eq!(
            Manifest::parse("- a\n- b\n"),
            Err(ManifestError::NotAMap { found: "a list" })
        );
        assert_eq!(
            Manifest::parse("just text\n"),
            Err(ManifestError::NotAMap { found: "a string" })
        );
        match Manifest::parse("phases:\n  '1': {plan: complete\nprd: x\n") {
            Err(ManifestError::Syntax {
                line,
                column,
                message,
            }) => {
                assert!(line >= 2, "line {line}");
                assert!(column >= 1, "column {column}");
                assert!(!message.is_empty());
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let err = Manifest::parse("a: 1\n  b: [\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        // Found by fuzzing: readable but not writable, so `to_yaml` used to panic.
        for text in ["phases:\n  !: p{lan: comtee,p\n", "! : 1\n"] {
            match Manifest::parse(text) {
                Err(ManifestError::Syntax { message, .. }) => {
                    assert!(message.contains("written back"), "{message}")
                }
                other => panic!("{text:?}: expected a syntax error, got {other:?}"),
            }
        }
    }

    #[test]
    fn view_errors_name_the_field() {
        let cases: &[(&str, ManifestError)] = &[
            ("prd: {}\n", ManifestError::NoPhases),
            ("phases:\n", ManifestError::NoPhases),
            ("phases:\n  one: {plan: complete}\n", ManifestError::BadPhaseKey("one".into())),
            ("phases:\n  -1: {plan: complete}\n", ManifestError::BadPhaseKey("-1".into())),
            ("phases: [1, 2]\n", wrong("phases", "a map of phase number to status")),
            (
                "phases:\n  1: complete\n",
                wrong("phases.1", "a map with plan, execution and validation"),
            ),
            ("phases:\n  1: {plan: [a]}\n", wrong("phases.1.plan", "text")),
            (
                "phases: {}\nfailures:\n  - {resolution: pending}\n  - {resolution: pending}\n  - {retry_count: many}\n",
                wrong("failures[2].retry_count", "a whole number"),
            ),
            ("phases: {}\nfailures: {a: 1}\n", wrong("failures", "a list")),
            ("phases: {}\nplans:\n  - 3\n", wrong("plans[0]", "a map")),
            ("phases: {}\nplans:\n  - {phase: two}\n", wrong("plans[0].phase", "a whole number")),
            ("phases: {}\nprofiles: [a]\n", wrong("profiles", "a map of profile name to entry")),
            ("phases: {}\nresearch: {pending: x}\n", wrong("research.pending", "a list of names")),
            ("phases: {}\ncheckpoints:\n  - {tag: {a: b}}\n", wrong("checkpoints[0].tag", "text")),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).view().unwrap_err(), *expected, "{text}");
        }
        let msg = wrong("failures[2].retry_count", "a whole number").to_string();
        assert!(
            msg.contains("failures[2].retry_count") && msg.contains("fix"),
            "{msg}"
        );
        assert!(ManifestError::NoPhases
            .to_string()
            .contains("manifest has no phases"));
        assert!(ManifestError::BadPhaseKey("one".into())
            .to_string()
            .contains("\"one\""));
    }

    #[test]
    fn view_reads_typed_fields() {
        let text = "\
prd: {path: PRD.md}
phases:
  10: {plan: complete}
  '2': {plan: in_progress, execution: not_started, validation: not_run, name: Two}
  1: {plan: complete, execution: complete, validation: pass}
  3: {validation: bogus}
profiles:
  b: {freshness: stale}
  a: {}
research: {pending: [redis, 3]}
preflight: {status: blocked}
plans:
  - {path: x.md, phase: '2'}
checkpoints:
  - {tag: t1, phase: 1, status: active}
failures:
  - {command: execute, phase: '2', error_category: syntax_error, retry_count: '1', resolution: pending, details: d, checkpoint: t1, timestamp: now}
  - {command: commit}
next_action: {command: execute, argument: retry, reason: r, confidence: medium}
last_updated: yesterday
";
        let v = parse(text).view().unwrap();
        assert_eq!(
            v.phases.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 10]
        );
        assert_eq!(v.phases[&2].plan, StepStatus::InProgress);
        assert_eq!(v.phases[&2].name.as_deref(), Some("Two"));
        assert_eq!(v.phases[&10].execution, StepStatus::NotStarted);
        assert_eq!(v.phases[&10].validation, ValidationStatus::NotRun);
        assert_eq!(
            v.phases[&3].validation,
            ValidationStatus::Other("bogus".into())
        );
        assert!(v.has_prd);
        assert_eq!(v.prd_path.as_deref(), Some("PRD.md"));
        assert_eq!(
            v.profiles
                .iter()
                .map(|p| (p.name.as_str(), p.is_stale()))
                .collect::<Vec<_>>(),
            vec![("b", true), ("a", false)]
        );
        assert_eq!(v.research_pending, vec!["redis", "3"]);
        assert_eq!(
            v.preflight.as_ref().unwrap().status.as_deref(),
            Some("blocked")
        );
        assert_eq!(v.plan_path_for(2), Some("x.md"));
        assert_eq!(v.active_checkpoint().unwrap().tag, "t1");
        let f = &v.failures[0];
        assert_eq!(
            (f.phase, f.retry_count, f.checkpoint.as_deref()),
            (2, 1, Some("t1"))
        );
        let g = &v.failures[1];
        assert_eq!((g.phase, g.retry_count, g.resolution.as_str()), (0, 0, ""));
        assert_eq!(v.first_pending_failure(None), Some(f));
        assert_eq!(v.first_pending_failure(Some(Severity::Blocking)), Some(f));
        assert_eq!(
            v.next_action,
            Some(NextAction {
                command: "execute".into(),
                argument: Some("retry".into()),
                reason: "r".into(),
                confidence: Confidence::Medium
            })
        );
        assert_eq!(v.last_updated.as_deref(), Some("yesterday"));
        assert_eq!(v.next_unfinished_phase(), Some(2));
        assert!(!v.is_monorepo());
    }

    #[test]
    fn severity_filter_skips_advisory_failures() {
        let text = "phases: {}\nfailures:\n  - {error_category: stale_artifact, resolution: pending}\n  - {error_category: mystery, resolution: pending, details: m}\n";
        let v = parse(text).view().unwrap();
        assert_eq!(
            v.first_pending_failure(None).unwrap().error_category,
            "stale_artifact"
        );
        assert_eq!(
            v.first_pending_failure(Some(Severity::Blocking))
                .unwrap()
                .details,
            "m"
        );
    }

    #[test]
    fn set_phase_status_updates_in_place_and_creates_with_matching_key_style() {
        let mut m = parse("phases:\n  '1': {plan: not_started, execution: not_started, validation: not_run}\nlast_updated: old\ntail: 1\n");
        let set = |phase, plan| ManifestUpdate::SetPhaseStatus {
            phase,
            plan,
            execution: None,
            validation: Some(ValidationStatus::Pass),
        };
        m.apply(&set(1, Some(StepStatus::Complete)), NOW).unwrap();
        m.apply(&set(2, None), NOW).unwrap();
        let phases = m.doc()["phases"].as_mapping().unwrap();
        assert_eq!(keys(phases), vec!["1", "2"]);
        assert!(phases.contains_key(Value::from("2")), "string style kept");
        assert_eq!(phases[Value::from("1")]["plan"], Value::from("complete"));
        assert_eq!(phases[Value::from("2")]["plan"], Value::from("not_started"));
        assert_eq!(
            phases[Value::from("2")]["execution"],
            Value::from("not_started")
        );
        assert_eq!(phases[Value::from("2")]["validation"], Value::from("pass"));
        // last_updated stays where it was.
        assert_eq!(keys(m.doc()), vec!["phases", "last_updated", "tail"]);
        assert_eq!(m.doc()["last_updated"], Value::from(NOW));

        let mut ints = parse("phases:\n  1: {plan: complete}\n");
        ints.apply(&set(3, None), NOW).unwrap();
        assert!(ints.doc()["phases"]
            .as_mapping()
            .unwrap()
            .contains_key(Value::from(3)));
        let mut none = parse("prd: {}\n");
        none.apply(&set(1, None), NOW).unwrap();
        assert!(none.doc()["phases"]
            .as_mapping()
            .unwrap()
            .contains_key(Value::from(1)));
        assert_eq!(keys(none.doc()), vec!["prd", "phases", "last_updated"]);
        assert!(
            none.to_yaml().contains("\n  1:\n"),
            "int key dumped bare: {}",
            none.to_yaml()
        );
    }

    #[test]
    fn append_creates_and_extends_lists() {
        let mut m = parse("phases: {}\nfailures: []\n");
        let failure = Failure {
            command: "execute".into(),
            phase: 2,
            error_category: "test_failure".into(),
            retry_count: 0,
            resolution: "pending".into(),
            checkpoint: None,
            details: "d".into(),
            timestamp: NOW.into(),
        };
        m.apply(
            &ManifestUpdate::Append {
                section: ListSection::Failures,
                entry: failure.to_value(),
            },
            NOW,
        )
        .unwrap();
        m.apply(
            &ManifestUpdate::Append {
                section: ListSection::Sessions,
                entry: Value::from("s"),
            },
            NOW,
        )
        .unwrap();
        m.apply(
            &ManifestUpdate::Append {
                section: ListSection::Checkpoints,
                entry: checkpoint_entry("t", 2),
            },
            NOW,
        )
        .unwrap();
        let v = m.view().unwrap();
        assert_eq!(v.failures, vec![failure]);
        assert_eq!(m.doc()["failures"][0]["max_retries"], Value::from(2));
        assert!(m.doc()["failures"][0].get("checkpoint").is_none());
        assert_eq!(m.doc()["sessions"], Value::Sequence(vec![Value::from("s")]));
        assert_eq!(v.active_checkpoint().unwrap().phase, Some(2));
        let mut bad = parse("phases: {}\nplans: {a: 1}\n");
        assert_eq!(
            bad.apply(
                &ManifestUpdate::Append {
                    section: ListSection::Plans,
                    entry: plan_entry("p", 1, NOW)
                },
                NOW
            ),
            Err(wrong("plans", "a list"))
        );
    }

    #[test]
    fn merge_follows_the_reference_with_checkpoints_appended() {
        let mut m = parse("\
phases:\n  '1': {plan: complete}\nsettings: {mode: autonomous, nested: {a: 1}}\nplans: [{path: a}]\ncheckpoints: [{tag: old}]\nother_list: [1, 2]\nscalar: 1\n");
        let update: Mapping = serde_yaml::from_str(
            "phases:\n  1: {plan: complete, execution: complete}\n  2: {plan: not_started}\nsettings: {nested: {b: 2}, extra: yes}\nplans: [{path: b}]\ncheckpoints: [{tag: new}]\nother_list: [3]\nscalar: two\nfresh: {x: 1}\nexecutions: [{phase: 1}]\n",
        )
        .unwrap();
        m.apply(&ManifestUpdate::Merge(update), NOW).unwrap();
        let d = m.doc();
        let phases = d["phases"].as_mapping().unwrap();
        assert_eq!(keys(phases), vec!["1", "2"], "int key 1 merged into '1'");
        assert_eq!(
            phases[Value::from("1")]["execution"],
            Value::from("complete")
        );
        assert_eq!(d["settings"]["mode"], Value::from("autonomous"));
        assert_eq!(
            d["settings"]["nested"],
            serde_yaml::from_str::<Value>("{b: 2}").unwrap()
        );
        assert_eq!(d["plans"].as_sequence().unwrap().len(), 2);
        assert_eq!(d["checkpoints"].as_sequence().unwrap().len(), 2);
        assert_eq!(
            d["other_list"],
            serde_yaml::from_str::<Value>("[3]").unwrap()
        );
        assert_eq!(d["scalar"], Value::from("two"));
        assert_eq!(d["fresh"]["x"], Value::from(1));
        assert_eq!(d["executions"].as_sequence().unwrap().len(), 1);
    }

    #[test]
    fn resolve_failures_touches_only_pending_entries_of_that_phase_and_command() {
        let mut m = parse(
            "\
phases: {}
failures:
  - {command: execute, phase: 2, resolution: pending}
  - {command: execute, phase: '2', resolution: pending}
  - {command: execute, phase: 2, resolution: escalated}
  - {command: execute, phase: 3, resolution: pending}
  - {command: commit, phase: 2, resolution: pending}
",
        );
        m.apply(
            &ManifestUpdate::ResolveFailures {
                phase: 2,
                command: "execute".into(),
                resolution: "auto_fixed".into(),
            },
            NOW,
        )
        .unwrap();
        let got: Vec<String> = m
            .view()
            .unwrap()
            .failures
            .into_iter()
            .map(|f| f.resolution)
            .collect();
        assert_eq!(
            got,
            vec![
                "auto_fixed",
                "auto_fixed",
                "escalated",
                "pending",
                "pending"
            ]
        );
    }

    #[test]
    fn resolve_checkpoint_and_set_next_action() {
        let mut m = parse("phases: {}\ncheckpoints:\n  - {tag: a, status: active}\n  - {tag: b, status: active}\n  - {tag: a, status: active}\n");
        m.apply(&ManifestUpdate::ResolveCheckpoint { tag: "a".into() }, NOW)
            .unwrap();
        let st: Vec<String> = m
            .view()
            .unwrap()
            .checkpoints
            .into_iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(st, vec!["resolved", "active", "resolved"]);
        let mut empty = parse("phases: {}\n");
        empty
            .apply(&ManifestUpdate::ResolveCheckpoint { tag: "a".into() }, NOW)
            .unwrap();

        let action = NextAction {
            command: "done".into(),
            argument: None,
            reason: "All phases complete".into(),
            confidence: Confidence::High,
        };
        m.apply(&ManifestUpdate::SetNextAction(action.clone()), NOW)
            .unwrap();
        assert!(m.doc()["next_action"].get("argument").is_none());
        assert_eq!(m.view().unwrap().next_action, Some(action));
    }

    #[test]
    fn entry_constructors() {
        let e = execution_entry(3, NOW);
        assert_eq!(e["tasks_total"], Value::from(0));
        assert_eq!(e["completed_at"], Value::from(NOW));
        let p = plan_entry("x.md", 1, NOW);
        assert_eq!(p["status"], Value::from("complete"));
        let s = SessionRecord {
            step: "execute".into(),
            phase: Some(1),
            commands: "/prime + /execute x.md".into(),
            session_id: Some("abc".into()),
            outcome: "success".into(),
            cost_usd: Some(0.5),
            model: None,
            num_turns: Some(3),
            duration_ms: None,
            finished_at: NOW.into(),
        };
        let v = s.to_value();
        assert_eq!(v["session_id"], Value::from("abc"));
        assert_eq!(v["duration_ms"], Value::Null);
        assert!(v.get("model").is_none() && v.get("cost_unknown").is_none());
        let unknown = SessionRecord {
            cost_usd: None,
            model: Some("claude-opus-5-5".into()),
            ..s
        }
        .to_value();
        assert_eq!(unknown["cost_usd"], Value::Null);
        assert_eq!(unknown["cost_unknown"], Value::from(true));
        assert_eq!(unknown["model"], Value::from("claude-opus-5-5"));
        let n = NotificationEntry {
            timestamp: NOW.into(),
            kind: "escalation".into(),
            severity: "critical".into(),
            category: "prd_gap".into(),
            phase: 1,
            details: "d".into(),
            blocking: true,
            action_taken: "a".into(),
        }
        .to_value();
        assert_eq!(n["type"], Value::from("escalation"));
    }

    #[test]
    fn ambiguous_scalars_survive_a_write() {
        let text = "phases: {}\nv:\n  - 'yes'\n  - 'no'\n  - 'y'\n  - '1'\n  - '01'\n  - '1e3'\n  - 'null'\n  - '~'\n  - '2026-01-01T00:00:00Z'\n  - 2026-01-01T00:00:00Z\n  - 'a: b'\n  - '- x'\n  - '#c'\n  - ''\n  - \"multi\\nline\"\n  - 0x1F\n  - 1.50\n  - true\n  - null\n  - 'True'\n  - 'off'\n";
        let m = Manifest::parse(text).unwrap();
        let again = Manifest::parse(&m.to_yaml()).unwrap();
        assert_eq!(again, m, "{}", m.to_yaml());
    }
}
