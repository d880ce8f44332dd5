//! The manifest model: a YAML document kept as a value layer (so every key piv does not model survives read→write), typed views where piv decides, and pure update operations with the reference's merge rules.
//!
//! `.agents/manifest.yaml` is written mostly by the Claude Code slash commands, which add
//! keys piv has never heard of. So the document itself stays a [`serde_yaml::Mapping`]
//! (key order and unknown keys kept), decisions are taken from a typed [`ManifestView`]
//! built on demand (wrong types become [`ManifestError::WrongType`] naming the field, never
//! a panic), and every change is a [`ManifestUpdate`] applied in place. Phase keys may be
//! YAML ints or strings; they are matched numerically everywhere, as the earlier version
//! effectively did (JavaScript object keys are strings).

mod document;
mod entries;
#[cfg(test)]
mod tests;
mod value;
mod view;

pub use document::{ListSection, Manifest, ManifestError, ManifestUpdate};
pub use entries::{
    checkpoint_entry, execution_entry, plan_entry, Confidence, Failure, NextAction,
    NotificationEntry, SessionRecord,
};
pub use view::{
    Checkpoint, ExecutionEntry, ManifestView, Module, PhaseStatus, PlanEntry, Preflight, Profile,
    StepStatus, ValidationEntry, ValidationStatus,
};
