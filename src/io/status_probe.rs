//! Reads what an instance is doing from its files: the manifest (next action, phases
//! done) and the runtime state it publishes. Used by `piv status` and by the bot owner's
//! `/status`, so both show the same thing. Never fails: an unreadable manifest becomes the
//! status's `error`, never a dropped instance.

use std::path::Path;

use crate::core::next_action::next_action;
use crate::core::status::{build_status, InstanceFacts, InstanceStatus, ManifestSummary};
use crate::io::{manifest_file, state_file};

/// The manifest-derived part of a status, or why it could not be read.
pub fn summarise_manifest(project_dir: &Path) -> Result<ManifestSummary, String> {
    let manifest = manifest_file::read(project_dir).map_err(|e| e.to_string())?;
    let view = manifest.view().map_err(|e| e.to_string())?;
    let next = next_action(&view);
    let phases_total = view.phases.len();
    let phases_done = view.phases.values().filter(|p| p.is_complete()).count();
    let next_phase = view.next_phase_needing_work().map(|(n, _)| n);
    Ok(ManifestSummary {
        next: Some(next),
        phases_done,
        phases_total,
        next_phase,
    })
}

/// One instance's status from its files. `facts.pid` is `None` for a project without a
/// live instance; the published runtime state is only trusted when its pid matches.
pub fn probe(facts: &InstanceFacts, project_dir: &Path) -> InstanceStatus {
    let runtime = state_file::read(project_dir).filter(|r| facts.pid == Some(r.pid));
    let now = chrono::Utc::now().timestamp();
    build_status(
        facts,
        runtime.as_ref(),
        summarise_manifest(project_dir),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::status::RunState;

    #[test]
    fn unreadable_manifest_becomes_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".agents")).unwrap();
        std::fs::write(dir.path().join(".agents/manifest.yaml"), "phases: [\n").unwrap();
        let facts = InstanceFacts {
            prefix: "a".into(),
            project_dir: dir.path().display().to_string(),
            pid: Some(std::process::id()),
            ..Default::default()
        };
        let s = probe(&facts, dir.path());
        assert!(s.error.as_deref().unwrap_or("").contains("line"), "{s:?}");
        assert_eq!(s.state, RunState::Running);
    }

    #[test]
    fn reads_next_action_and_counts_phases() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".agents")).unwrap();
        std::fs::write(
            dir.path().join(".agents/manifest.yaml"),
            "prd: {path: p}\npreflight: {status: passed}\nprofiles: {x: {freshness: fresh}}\nphases:\n  1: {plan: complete, execution: complete, validation: pass}\n  2: {plan: not_started, execution: not_started, validation: not_run}\n",
        )
        .unwrap();
        let s = probe(&InstanceFacts::default(), dir.path());
        assert_eq!(s.phases_done, 1);
        assert_eq!(s.phases_total, 2);
        assert_eq!(s.next.as_ref().unwrap().command, "plan-feature");
        assert_eq!(s.phase, Some(2));
        assert_eq!(s.state, RunState::Stopped);
    }
}
