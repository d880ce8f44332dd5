//! The manifest document and its updates: the YAML mapping kept as is (key order and unknown keys survive read→write), parsing, and the pure [`ManifestUpdate`]s applied in place with the reference's merge rules.

use std::fmt;

use serde_yaml::{Mapping, Value};

use super::entries::NextAction;
use super::value::{kind_of, number_of, phase_key_number, scalar_text};
use super::view::{ManifestView, StepStatus, ValidationStatus};

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

pub(super) fn wrong(field: impl Into<String>, expected: &'static str) -> ManifestError {
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
                self.doc.insert("next_action".into(), action.to_value());
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

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}
