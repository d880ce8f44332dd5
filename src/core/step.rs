//! Which step `piv run` takes next: the state machine's next action turned into
//! something the PhaseRunner can carry out, plus the run's own memory (what it already
//! tried this run) and `--phase N`. Also the prompts of each pairing.
//!
//! The state machine (`next_action`) answers "what should a human do next"; this module
//! answers "what does the loop run now", which differs where a human must act (rollback,
//! missing PRD, monorepo) or where the run already tried a pre-loop step once.

use crate::core::manifest::{ManifestView, StepStatus, ValidationStatus};
use crate::core::next_action::NextAction;

/// One thing the loop can run, or a reason to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Research {
        refresh: bool,
    },
    Preflight,
    Plan {
        phase: u32,
        name: String,
    },
    /// `plan_path` is `None` when the manifest has no plan entry for the phase (a recorded
    /// failure, not a silent skip). `checkpoint` is the active checkpoint to reuse.
    Execute {
        phase: u32,
        plan_path: Option<String>,
        checkpoint: Option<String>,
    },
    Validate {
        phase: u32,
    },
    Commit {
        phase: u32,
    },
    /// A human has to act; `category` names the kind for the message.
    StopForHuman {
        why: String,
        category: String,
    },
    Done,
}

impl Step {
    /// The PIV command name of the step (as in failures' `command`).
    pub fn command(&self) -> &'static str {
        match self {
            Step::Research { .. } => "research-stack",
            Step::Preflight => "preflight",
            Step::Plan { .. } => "plan-feature",
            Step::Execute { .. } => "execute",
            Step::Validate { .. } => "validate-implementation",
            Step::Commit { .. } => "commit",
            Step::StopForHuman { .. } => "stop",
            Step::Done => "done",
        }
    }

    pub fn phase(&self) -> Option<u32> {
        match self {
            Step::Plan { phase, .. }
            | Step::Execute { phase, .. }
            | Step::Validate { phase }
            | Step::Commit { phase } => Some(*phase),
            _ => None,
        }
    }
}

/// What this run has already done, so that a pre-loop step that did not change the
/// manifest is not run again and again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunMemory {
    pub research_tried: bool,
    pub preflight_tried: bool,
    /// `--phase N`: only this phase, no pre-loop.
    pub only_phase: Option<u32>,
}

/// Whether phase `n` has been committed. A phase without a `commit` key counts as
/// committed (manifests written before piv, and the reference, have none); piv writes
/// `commit: pending` when validation passes and `commit: complete` after `/commit`.
fn commit_pending(view: &ManifestView, n: u32) -> bool {
    view.phases
        .get(&n)
        .and_then(|p| p.commit.as_ref())
        .is_some_and(|c| *c != StepStatus::Complete)
}

/// The step phase `n` needs, or `None` when it is complete and committed.
pub fn phase_step(view: &ManifestView, n: u32) -> Option<Step> {
    let status = view.phases.get(&n)?;
    let name = status.name.clone().unwrap_or_else(|| format!("Phase {n}"));
    if status.plan != StepStatus::Complete {
        return Some(Step::Plan { phase: n, name });
    }
    if status.execution != StepStatus::Complete {
        return Some(Step::Execute {
            phase: n,
            plan_path: view.plan_path_for(n).map(str::to_string),
            checkpoint: view.active_checkpoint_for(n).map(str::to_string),
        });
    }
    if status.validation != ValidationStatus::Pass {
        return Some(Step::Validate { phase: n });
    }
    if commit_pending(view, n) {
        return Some(Step::Commit { phase: n });
    }
    None
}

/// The first phase (numeric order) that still needs a step.
fn first_phase_step(view: &ManifestView) -> Step {
    view.phases
        .keys()
        .find_map(|&n| phase_step(view, n))
        .unwrap_or(Step::Done)
}

fn step_for_failed_command(view: &ManifestView, command: &str, phase: u32) -> Step {
    let by_status = || phase_step(view, phase).unwrap_or(Step::Done);
    match command {
        "plan-feature" => Step::Plan {
            phase,
            name: view
                .phases
                .get(&phase)
                .and_then(|p| p.name.clone())
                .unwrap_or_else(|| format!("Phase {phase}")),
        },
        "execute" => Step::Execute {
            phase,
            plan_path: view.plan_path_for(phase).map(str::to_string),
            checkpoint: view.active_checkpoint_for(phase).map(str::to_string),
        },
        "validate-implementation" => Step::Validate { phase },
        "commit" => Step::Commit { phase },
        "research-stack" => Step::Research { refresh: false },
        "preflight" => Step::Preflight,
        // `orchestrator` (a crash) or anything else: pick up where the phase stands.
        _ => by_status(),
    }
}

/// Decides the next step. `next` is `next_action(view)`, passed in so callers that
/// already computed it (for the status) do not compute it twice.
pub fn decide_step(view: &ManifestView, next: &NextAction, memory: &RunMemory) -> Step {
    if let Some(n) = memory.only_phase {
        return decide_for_phase(view, n);
    }
    match next.command.as_str() {
        "rollback" => {
            let failure = view.first_pending_failure(None);
            let (category, details, phase) = failure
                .map(|f| (f.error_category.clone(), f.details.clone(), f.phase))
                .unwrap_or_default();
            let how = match &next.argument {
                Some(tag) => format!(
                    "roll back with `git reset --hard {tag} && git clean -fd`, or fix it by hand; then set the failure's resolution in .agents/manifest.yaml and run piv again"
                ),
                None => "fix it by hand, set the failure's resolution in .agents/manifest.yaml, and run piv again".to_string(),
            };
            Step::StopForHuman {
                why: format!(
                    "retries exhausted for {category} in phase {phase}: {details} — {how}"
                ),
                category,
            }
        }
        "create-prd" => Step::StopForHuman {
            why: "no PRD: piv cannot write the requirements. Run /create-prd in Claude Code, then run piv again".to_string(),
            category: "prd_gap".to_string(),
        },
        "mission-controller" => Step::StopForHuman {
            why: "monorepo manifests (modules and slices) are not driven by piv; run the Mission Controller or convert to phases".to_string(),
            category: "prd_gap".to_string(),
        },
        "research-stack" if !memory.research_tried => Step::Research {
            refresh: next.argument.as_deref() == Some("--refresh"),
        },
        // Research already ran this run and did not satisfy the state machine: a failed
        // research is not fatal (as in the reference), so go on to the preflight and phases.
        "research-stack" => decide_after_research(view, memory),
        "preflight" if !memory.preflight_tried => Step::Preflight,
        "preflight" => Step::StopForHuman {
            why: "preflight is still blocked after /preflight: provide the missing credentials and run piv again".to_string(),
            category: "integration_auth".to_string(),
        },
        _ if next.argument.as_deref() == Some("retry") => match view.first_pending_failure(None) {
            Some(f) => step_for_failed_command(view, &f.command, f.phase),
            None => first_phase_step(view),
        },
        "execute" if next.reason.starts_with("Execution interrupted") => {
            // The checkpoint stays active until the phase is committed: resume that phase
            // where its status says (execute again only if execution is not complete).
            match view.active_checkpoint().and_then(|c| c.phase) {
                Some(phase) => phase_step(view, phase).unwrap_or_else(|| first_phase_step(view)),
                None => first_phase_step(view),
            }
        }
        _ if view.is_monorepo() => Step::StopForHuman {
            why: "monorepo manifests (modules and slices) are not driven by piv yet".to_string(),
            category: "prd_gap".to_string(),
        },
        // plan-feature / execute / validate-implementation / commit / done: the first
        // phase that needs work (this also picks up a pending commit, which the reference
        // state machine cannot see).
        _ => first_phase_step(view),
    }
}

/// After research was tried once: the preflight and PRD rules still apply.
fn decide_after_research(view: &ManifestView, memory: &RunMemory) -> Step {
    match view.preflight_status() {
        None | Some("blocked") if !memory.preflight_tried => Step::Preflight,
        None | Some("blocked") => Step::StopForHuman {
            why: "preflight is still blocked after /preflight: provide the missing credentials and run piv again".to_string(),
            category: "integration_auth".to_string(),
        },
        _ if !view.has_prd => Step::StopForHuman {
            why: "no PRD: piv cannot write the requirements. Run /create-prd in Claude Code, then run piv again".to_string(),
            category: "prd_gap".to_string(),
        },
        _ => first_phase_step(view),
    }
}

/// `--phase N`: a pending failure of that phase decides first, then its status.
fn decide_for_phase(view: &ManifestView, n: u32) -> Step {
    if !view.phases.contains_key(&n) {
        return Step::StopForHuman {
            why: format!("phase {n} is not in the manifest"),
            category: "prd_gap".to_string(),
        };
    }
    if let Some(f) = view.pending_failures().find(|f| f.phase == n) {
        if f.retry_count < crate::core::taxonomy::max_retries_for(&f.error_category) {
            return step_for_failed_command(view, &f.command, n);
        }
        return Step::StopForHuman {
            why: format!(
                "retries exhausted for {} in phase {n}: {}",
                f.error_category, f.details
            ),
            category: f.error_category.clone(),
        };
    }
    phase_step(view, n).unwrap_or(Step::Done)
}

/// The prompts of a step's pairing (one session; later prompts resume it).
pub fn pairing_prompts(step: &Step) -> Vec<String> {
    match step {
        Step::Research { refresh: true } => vec!["/research-stack --refresh".into()],
        Step::Research { refresh: false } => vec!["/research-stack".into()],
        Step::Preflight => vec!["/preflight".into()],
        Step::Plan { phase, name } => vec![
            "/prime".into(),
            format!("/plan-feature \"Phase {phase}: {name}\""),
        ],
        Step::Execute {
            plan_path: Some(path),
            ..
        } => vec!["/prime".into(), format!("/execute {path}")],
        Step::Validate { .. } => vec!["/prime".into(), "/validate-implementation --full".into()],
        Step::Commit { .. } => vec!["/commit".into()],
        Step::Execute {
            plan_path: None, ..
        }
        | Step::StopForHuman { .. }
        | Step::Done => vec![],
    }
}

/// The refactor pairing after a fixable validation failure.
pub fn refactor_prompts(error: &str) -> Vec<String> {
    vec![
        "/prime".into(),
        format!("Fix the following validation error and re-run tests: {error}"),
    ]
}

/// The slash commands `piv run` will send, checked at start-up.
pub const PIV_COMMANDS: &[&str] = &[
    "prime",
    "plan-feature",
    "execute",
    "validate-implementation",
    "commit",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::Manifest;
    use crate::core::next_action::next_action;

    const READY: &str =
        "prd: {path: p}\npreflight: {status: passed}\nprofiles: {x: {freshness: fresh}}\n";

    fn decide_with(yaml: &str, memory: &RunMemory) -> Step {
        let view = Manifest::parse(yaml).unwrap().view().unwrap();
        decide_step(&view, &next_action(&view), memory)
    }

    fn decide(yaml: &str) -> Step {
        decide_with(yaml, &RunMemory::default())
    }

    fn with_phases(phases: &str) -> String {
        format!("{READY}phases:\n{phases}")
    }

    #[test]
    fn phase_steps_follow_plan_execute_validate_commit() {
        let plan = with_phases(
            "  1: {plan: not_started, execution: not_started, validation: not_run, name: Core}\n",
        );
        assert_eq!(
            decide(&plan),
            Step::Plan {
                phase: 1,
                name: "Core".into()
            }
        );
        let exec = format!(
            "{}plans:\n  - {{path: .agents/plans/p1.md, phase: 1}}\n",
            with_phases("  1: {plan: complete, execution: not_started, validation: not_run}\n")
        );
        assert_eq!(
            decide(&exec),
            Step::Execute {
                phase: 1,
                plan_path: Some(".agents/plans/p1.md".into()),
                checkpoint: None
            }
        );
        let no_plan_entry =
            with_phases("  1: {plan: complete, execution: not_started, validation: not_run}\n");
        assert_eq!(
            decide(&no_plan_entry),
            Step::Execute {
                phase: 1,
                plan_path: None,
                checkpoint: None
            }
        );
        let validate =
            with_phases("  1: {plan: complete, execution: complete, validation: fail}\n");
        assert_eq!(decide(&validate), Step::Validate { phase: 1 });
        let commit = with_phases(
            "  1: {plan: complete, execution: complete, validation: pass, commit: pending}\n",
        );
        assert_eq!(decide(&commit), Step::Commit { phase: 1 });
        let done = with_phases(
            "  1: {plan: complete, execution: complete, validation: pass, commit: complete}\n  2: {plan: complete, execution: complete, validation: pass}\n",
        );
        assert_eq!(decide(&done), Step::Done);
    }

    #[test]
    fn a_pending_failure_with_retries_left_reruns_its_command() {
        let yaml = format!(
            "{}failures:\n  - {{command: execute, phase: 1, error_category: test_failure, retry_count: 0, resolution: pending, details: x}}\nplans:\n  - {{path: p.md, phase: 1}}\ncheckpoints:\n  - {{tag: t1, phase: 1, status: active}}\n",
            with_phases("  1: {plan: complete, execution: not_started, validation: not_run}\n")
        );
        assert_eq!(
            decide(&yaml),
            Step::Execute {
                phase: 1,
                plan_path: Some("p.md".into()),
                checkpoint: Some("t1".into())
            }
        );
    }

    #[test]
    fn an_active_checkpoint_resumes_its_phase_where_it_stands() {
        let base = "checkpoints:\n  - {tag: t1, phase: 1, status: active}\nplans:\n  - {path: p.md, phase: 1}\n";
        let interrupted = format!(
            "{base}{}",
            with_phases("  1: {plan: complete, execution: in_progress, validation: not_run}\n")
        );
        assert_eq!(
            decide(&interrupted),
            Step::Execute {
                phase: 1,
                plan_path: Some("p.md".into()),
                checkpoint: Some("t1".into())
            }
        );
        let executed = format!(
            "{base}{}",
            with_phases("  1: {plan: complete, execution: complete, validation: not_run}\n")
        );
        assert_eq!(decide(&executed), Step::Validate { phase: 1 });
    }

    #[test]
    fn exhausted_failures_and_missing_prd_stop_for_a_human() {
        let yaml = format!(
            "{}failures:\n  - {{command: execute, phase: 1, error_category: test_failure, retry_count: 2, resolution: pending, details: boom, checkpoint: t1}}\n",
            with_phases("  1: {plan: complete, execution: not_started, validation: not_run}\n")
        );
        match decide(&yaml) {
            Step::StopForHuman { why, category } => {
                assert_eq!(category, "test_failure");
                assert!(why.contains("git reset --hard t1"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let no_prd = "preflight: {status: passed}\nprofiles: {x: {freshness: fresh}}\nphases:\n  1: {plan: not_started}\n";
        assert!(
            matches!(decide(no_prd), Step::StopForHuman { category, .. } if category == "prd_gap")
        );
    }

    #[test]
    fn pre_loop_steps_run_once_per_run() {
        let no_profiles =
            "prd: {path: p}\npreflight: {status: passed}\nphases:\n  1: {plan: not_started}\n";
        assert_eq!(decide(no_profiles), Step::Research { refresh: false });
        let tried = RunMemory {
            research_tried: true,
            ..RunMemory::default()
        };
        assert!(matches!(
            decide_with(no_profiles, &tried),
            Step::Plan { phase: 1, .. }
        ));
        let stale = "prd: {path: p}\npreflight: {status: passed}\nprofiles: {x: {freshness: stale}}\nphases:\n  1: {plan: not_started}\n";
        assert_eq!(decide(stale), Step::Research { refresh: true });
        let blocked = "prd: {path: p}\npreflight: {status: blocked}\nprofiles: {x: {freshness: fresh}}\nphases:\n  1: {plan: not_started}\n";
        assert_eq!(decide(blocked), Step::Preflight);
        let tried = RunMemory {
            preflight_tried: true,
            ..RunMemory::default()
        };
        assert!(
            matches!(decide_with(blocked, &tried), Step::StopForHuman { category, .. } if category == "integration_auth")
        );
    }

    #[test]
    fn only_phase_skips_the_pre_loop_and_other_phases() {
        let yaml = "phases:\n  1: {plan: not_started}\n  2: {plan: complete, execution: complete, validation: not_run}\n";
        let only2 = RunMemory {
            only_phase: Some(2),
            ..RunMemory::default()
        };
        assert_eq!(decide_with(yaml, &only2), Step::Validate { phase: 2 });
        let only3 = RunMemory {
            only_phase: Some(3),
            ..RunMemory::default()
        };
        assert!(matches!(
            decide_with(yaml, &only3),
            Step::StopForHuman { .. }
        ));
    }

    #[test]
    fn prompts_of_each_pairing() {
        assert_eq!(
            pairing_prompts(&Step::Plan {
                phase: 2,
                name: "Telegram".into()
            }),
            vec![
                "/prime".to_string(),
                "/plan-feature \"Phase 2: Telegram\"".to_string()
            ]
        );
        assert_eq!(
            pairing_prompts(&Step::Execute {
                phase: 2,
                plan_path: Some("a.md".into()),
                checkpoint: None
            }),
            vec!["/prime".to_string(), "/execute a.md".to_string()]
        );
        assert_eq!(
            pairing_prompts(&Step::Commit { phase: 1 }),
            vec!["/commit".to_string()]
        );
        assert!(refactor_prompts("E1")[1].contains("E1"));
    }
}
