//! The typed view of the manifest: what piv decides from ([`ManifestView`], phase and step statuses, the list entries it reads), built on demand, a wrong type being an error that names the field.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::document::{wrong, ManifestError};
use super::entries::{Confidence, Failure, NextAction};
use super::value::{number_of, phase_key_number, present, scalar_text, truthy};
use crate::core::taxonomy::{severity_for, Severity};

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

/// `preflight` as far as piv reads it. Only `status` decides anything; the rest is shown
/// by `/preflight` and read leniently (a value of the wrong type is left out, never an
/// error that would stop the run).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Preflight {
    pub status: Option<String>,
    pub credentials_verified: Option<u64>,
    pub technologies_checked: Vec<String>,
    pub notes: Option<String>,
    pub completed_at: Option<String>,
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

    pub(super) fn from_doc(doc: &Mapping) -> Result<ManifestView, ManifestError> {
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
                    credentials_verified: present(m, "credentials_verified")
                        .and_then(number_of)
                        .map(u64::from),
                    technologies_checked: match present(m, "technologies_checked") {
                        Some(Value::Sequence(items)) => {
                            items.iter().filter_map(scalar_text).collect()
                        }
                        _ => Vec::new(),
                    },
                    notes: present(m, "notes").and_then(scalar_text),
                    completed_at: present(m, "completed_at").and_then(scalar_text),
                }),
                Some(v) if truthy(v) => Some(Preflight::default()),
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
