//! The next-action state machine: the earlier version's rules, order and exact texts, with piv's declared deviations.
//!
//! [`next_action`] is what `piv dry-run` prints, what `piv status` and Telegram's `/status`
//! show as "next", and what the runner writes to `next_action` at the end of a run. The
//! rules are behaviour.md §3 in its order (first match wins), reasons verbatim with their
//! U+2014 em dashes. The deviations (deviations.md) live in the view: a missing
//! `retry_count` reads as 0 and a plan's `phase: '2'` matches phase 2.

// The recommendation itself is a manifest entry (`next_action`), so its type lives with
// the manifest; re-exported here where the rules that choose one live.
pub use crate::core::manifest::{Confidence, NextAction};
use crate::core::manifest::{ManifestView, StepStatus, ValidationStatus};
use crate::core::taxonomy::max_retries_for;

impl NextAction {
    fn high(command: &str, argument: Option<String>, reason: String) -> NextAction {
        NextAction {
            command: command.to_string(),
            argument,
            reason,
            confidence: Confidence::High,
        }
    }
}

/// The recommended next action for a manifest (behaviour.md §3, first matching rule wins).
pub fn next_action(view: &ManifestView) -> NextAction {
    // Rules 1–2: a pending failure comes first, whatever else the manifest says.
    if let Some(f) = view.first_pending_failure(None) {
        if f.retry_count < max_retries_for(&f.error_category) {
            return NextAction {
                command: f.command.clone(),
                argument: Some("retry".to_string()),
                reason: format!("Fix: {}", f.details),
                confidence: Confidence::Medium,
            };
        }
        return NextAction::high(
            "rollback",
            f.checkpoint.clone(),
            format!("Retries exhausted for {}: {}", f.error_category, f.details),
        );
    }
    // Rule 3: an interrupted execution.
    if let Some(c) = view.active_checkpoint() {
        let plan = c.phase.and_then(|p| view.plan_path_for(p));
        return NextAction::high(
            "execute",
            Some(plan.unwrap_or("resume").to_string()),
            "Execution interrupted \u{2014} resume from last completed step".to_string(),
        );
    }
    // Rules 4–6: research.
    if view.profiles.is_empty() {
        return NextAction::high(
            "research-stack",
            None,
            "No technology profiles \u{2014} run research before planning".to_string(),
        );
    }
    let stale: Vec<&str> = view
        .profiles
        .iter()
        .filter(|p| p.is_stale())
        .map(|p| p.name.as_str())
        .collect();
    if !stale.is_empty() {
        return NextAction::high(
            "research-stack",
            Some("--refresh".to_string()),
            format!("Stale profiles: {}", stale.join(", ")),
        );
    }
    if !view.research_pending.is_empty() {
        return NextAction::high(
            "research-stack",
            None,
            format!(
                "Pending research for new technologies: {}",
                view.research_pending.join(", ")
            ),
        );
    }
    // Rules 7, 7b: preflight.
    match &view.preflight {
        None => {
            return NextAction::high(
                "preflight",
                None,
                "Preflight not yet run \u{2014} verify credentials before execution".to_string(),
            )
        }
        Some(p) if p.status.as_deref() == Some("blocked") => {
            return NextAction::high(
                "preflight",
                None,
                "Preflight was blocked \u{2014} re-verify credentials".to_string(),
            )
        }
        Some(_) => {}
    }
    // Rule 8.
    if !view.has_prd {
        return NextAction::high(
            "create-prd",
            None,
            "No PRD found \u{2014} create requirements document first".to_string(),
        );
    }
    // Rule 9.
    if view.is_monorepo() {
        return monorepo_next_action(view);
    }
    // Rules 10–14.
    // piv's deviation: a phase whose validation passed but whose `commit` is still
    // pending (piv's own key) makes rule 14 reachable; without the key, as the reference.
    let Some((n, commit_only)) = view.next_phase_needing_work() else {
        return NextAction::high("done", None, "All phases complete".to_string());
    };
    let status = &view.phases[&n];
    if commit_only {
        NextAction::high(
            "commit",
            None,
            format!("Phase {n} validated \u{2014} ready to commit"),
        )
    } else if status.plan != StepStatus::Complete {
        NextAction::high(
            "plan-feature",
            Some(format!("Phase {n}")),
            format!("Phase {n} needs a plan"),
        )
    } else if status.execution != StepStatus::Complete {
        let plan = view
            .plan_path_for(n)
            .map_or_else(|| format!(".agents/plans/phase-{n}.md"), str::to_string);
        NextAction::high(
            "execute",
            Some(plan),
            format!("Phase {n} plan complete \u{2014} ready for execution"),
        )
    } else if status.validation != ValidationStatus::Pass {
        NextAction::high(
            "validate-implementation",
            Some("--full".to_string()),
            format!("Phase {n} executed \u{2014} needs validation"),
        )
    } else {
        // Unreachable in classic mode (a passed phase is never unfinished); kept as the
        // reference has it.
        NextAction::high(
            "commit",
            None,
            format!("Phase {n} validated \u{2014} ready to commit"),
        )
    }
}

/// Rule 9: the first unfinished slice, modules by name and slices by id.
fn monorepo_next_action(view: &ManifestView) -> NextAction {
    let next = view.modules.iter().flatten().find_map(|(m, module)| {
        module
            .slices
            .iter()
            .find(|(_, s)| !s.is_complete())
            .map(|(s, status)| (m, s, status))
    });
    let Some((m, s, status)) = next else {
        return NextAction::high("done", None, "All slices complete".to_string());
    };
    if view.has_architecture_md {
        return NextAction::high(
            "mission-controller",
            None,
            "Monorepo with architecture.md \u{2014} Mission Controller handles parallel execution"
                .to_string(),
        );
    }
    if status.plan != StepStatus::Complete {
        NextAction::high(
            "plan-feature",
            Some(format!("--module {m} --slice {s}")),
            format!("Module {m} / Slice {s} needs a plan"),
        )
    } else if status.execution != StepStatus::Complete {
        let plan = view
            .plans
            .iter()
            .find(|p| p.module.as_deref() == Some(m) && p.slice.as_deref() == Some(s))
            .and_then(|p| p.path.clone())
            .unwrap_or_else(|| format!("context/modules/{m}/slices/{s}/plan.md"));
        NextAction::high(
            "execute",
            Some(plan),
            format!("Module {m} / Slice {s} plan complete \u{2014} ready for execution"),
        )
    } else if status.validation != ValidationStatus::Pass {
        NextAction::high(
            "validate-implementation",
            Some("--full".to_string()),
            format!("Module {m} / Slice {s} executed \u{2014} needs validation"),
        )
    } else {
        NextAction::high(
            "commit",
            None,
            format!("Module {m} / Slice {s} validated \u{2014} ready to commit"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::Manifest;

    const PRD: &str = "prd: {path: .agents/PRD.md, status: validated}";
    const PROFILES: &str = "profiles:\n  sdk: {path: a.md, freshness: fresh}\n  bot: {path: b.md}";
    const PREFLIGHT: &str = "preflight: {status: passed}";
    const P1_TODO: &str = "phases:\n  '1': {plan: not_started, execution: not_started, validation: not_run}\n  '2': {plan: not_started, execution: not_started, validation: not_run}";
    const P1_DONE_P2_PLANNED: &str = "phases:\n  '1': {plan: complete, execution: complete, validation: pass}\n  '2': {plan: complete, execution: not_started, validation: not_run}";
    const PLANS: &str = "plans:\n  - {path: .agents/plans/p1.md, phase: 1}\n  - {path: .agents/plans/p2.md, phase: 2}";
    const READY: [&str; 3] = [PRD, PROFILES, PREFLIGHT];

    fn decide(parts: &[&str]) -> NextAction {
        let text = parts.join("\n") + "\n";
        let manifest = Manifest::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        next_action(&manifest.view().unwrap_or_else(|e| panic!("{e}\n{text}")))
    }

    fn ready(extra: &[&str]) -> NextAction {
        let mut parts = READY.to_vec();
        parts.extend_from_slice(extra);
        decide(&parts)
    }

    fn want(
        command: &str,
        argument: Option<&str>,
        reason: &str,
        confidence: Confidence,
    ) -> NextAction {
        NextAction {
            command: command.into(),
            argument: argument.map(Into::into),
            reason: reason.into(),
            confidence,
        }
    }

    fn high(command: &str, argument: Option<&str>, reason: &str) -> NextAction {
        want(command, argument, reason, Confidence::High)
    }

    fn failure(category: &str, retry: &str, extra: &str) -> String {
        format!(
            "failures:\n  - {{command: execute, phase: 2, error_category: {category}, {retry} resolution: pending, details: 'boom: x'{extra}}}"
        )
    }

    #[test]
    fn rule1_retry_wins_over_everything_else() {
        // No profiles, no preflight, no prd and an active checkpoint: the failure still wins.
        let f = failure("syntax_error", "retry_count: 1,", "");
        let got = decide(&[
            P1_TODO,
            &f,
            "checkpoints:\n  - {tag: t, phase: 1, status: active}",
        ]);
        assert_eq!(
            got,
            want("execute", Some("retry"), "Fix: boom: x", Confidence::Medium)
        );
    }

    #[test]
    fn rule1_echoes_the_command_verbatim() {
        let got = ready(&[
            P1_TODO,
            "failures:\n  - {command: orchestrator-ish, phase: 0, error_category: test_failure, retry_count: 0, resolution: pending, details: d}",
        ]);
        assert_eq!(got.command, "orchestrator-ish");
    }

    #[test]
    fn rule1_missing_retry_count_is_a_first_failure_deviation() {
        let f = failure("test_failure", "", "");
        assert_eq!(
            ready(&[P1_TODO, &f]),
            want("execute", Some("retry"), "Fix: boom: x", Confidence::Medium)
        );
    }

    #[test]
    fn rule1_string_retry_count_is_coerced() {
        let f = failure("syntax_error", "retry_count: '1',", "");
        assert_eq!(ready(&[P1_TODO, &f]).argument.as_deref(), Some("retry"));
        let f = failure("syntax_error", "retry_count: '2',", "");
        assert_eq!(ready(&[P1_TODO, &f]).command, "rollback");
    }

    #[test]
    fn rule2_rollback_when_retries_are_exhausted() {
        let f = failure(
            "syntax_error",
            "retry_count: 2,",
            ", checkpoint: piv-checkpoint/phase-2-x",
        );
        assert_eq!(
            decide(&[P1_TODO, &f]),
            high(
                "rollback",
                Some("piv-checkpoint/phase-2-x"),
                "Retries exhausted for syntax_error: boom: x"
            )
        );
        // No checkpoint: no argument.
        let f = failure("test_failure", "retry_count: 5,", "");
        assert_eq!(
            ready(&[P1_TODO, &f]),
            high(
                "rollback",
                None,
                "Retries exhausted for test_failure: boom: x"
            )
        );
    }

    #[test]
    fn rule2_zero_retry_categories_roll_back_at_once() {
        for cat in [
            "orchestrator_crash",
            "manifest_corruption",
            "integration_auth",
            "prd_gap",
            "not_a_category",
        ] {
            let f = failure(cat, "retry_count: 0,", "");
            let got = ready(&[P1_TODO, &f]);
            assert_eq!(got.command, "rollback", "{cat}");
            assert_eq!(got.reason, format!("Retries exhausted for {cat}: boom: x"));
        }
    }

    #[test]
    fn only_the_first_pending_failure_counts() {
        let text = "failures:\n  - {command: plan-feature, phase: 1, error_category: prd_gap, retry_count: 0, resolution: escalated, details: old}\n  - {command: validate-implementation, phase: 1, error_category: test_failure, retry_count: 0, resolution: pending, details: first}\n  - {command: execute, phase: 1, error_category: prd_gap, retry_count: 0, resolution: pending, details: second}";
        assert_eq!(
            ready(&[P1_TODO, text]),
            want(
                "validate-implementation",
                Some("retry"),
                "Fix: first",
                Confidence::Medium
            )
        );
        // All resolved: rules below apply.
        let resolved = "failures:\n  - {command: execute, phase: 1, error_category: test_failure, retry_count: 0, resolution: auto_fixed, details: x}";
        assert_eq!(ready(&[P1_TODO, resolved]).command, "plan-feature");
    }

    #[test]
    fn rule3_active_checkpoint_resumes_execute() {
        let cp = "checkpoints:\n  - {tag: a, phase: 1, status: resolved}\n  - {tag: b, phase: 2, status: active}";
        let reason = "Execution interrupted \u{2014} resume from last completed step";
        // Beats missing profiles, preflight and prd.
        assert_eq!(
            decide(&[P1_DONE_P2_PLANNED, PLANS, cp]),
            high("execute", Some(".agents/plans/p2.md"), reason)
        );
        // No plan for that phase: `resume`.
        assert_eq!(
            decide(&[P1_DONE_P2_PLANNED, cp]),
            high("execute", Some("resume"), reason)
        );
        // A string plan phase matches numerically (deviation).
        let plans = "plans:\n  - {path: .agents/plans/p2s.md, phase: '2'}";
        assert_eq!(
            decide(&[P1_DONE_P2_PLANNED, plans, cp]).argument.as_deref(),
            Some(".agents/plans/p2s.md")
        );
        // Only resolved checkpoints: no rule 3.
        let resolved = "checkpoints:\n  - {tag: a, phase: 2, status: resolved}";
        assert_eq!(
            ready(&[P1_DONE_P2_PLANNED, PLANS, resolved]).command,
            "execute"
        );
        assert_eq!(
            ready(&[P1_DONE_P2_PLANNED, PLANS, resolved]).reason,
            "Phase 2 plan complete \u{2014} ready for execution"
        );
    }

    #[test]
    fn rule4_no_profiles() {
        let expected = high(
            "research-stack",
            None,
            "No technology profiles \u{2014} run research before planning",
        );
        assert_eq!(decide(&[P1_TODO]), expected);
        // Beats pending research, missing preflight and prd.
        assert_eq!(
            decide(&[P1_TODO, "research: {pending: [x]}", "profiles: {}"]),
            expected
        );
    }

    #[test]
    fn research_profiles_are_the_fallback() {
        let research = "research:\n  profiles:\n    - {name: sdk, path: a.md, freshness: stale}\n    - {name: bot, path: b.md, freshness: fresh}";
        assert_eq!(
            decide(&[P1_TODO, research]),
            high("research-stack", Some("--refresh"), "Stale profiles: sdk")
        );
    }

    #[test]
    fn rule5_stale_profiles_in_map_order() {
        let profiles = "profiles:\n  zeta: {freshness: stale}\n  alpha: {freshness: fresh}\n  beta: {freshness: stale}";
        let expected = high(
            "research-stack",
            Some("--refresh"),
            "Stale profiles: zeta, beta",
        );
        assert_eq!(
            decide(&[P1_TODO, profiles, "research: {pending: [x]}"]),
            expected
        );
        // A date never makes a profile stale, nor does a missing freshness.
        let dated = "profiles:\n  a: {generated_at: '1999-01-01T00:00:00Z'}";
        assert_eq!(
            decide(&[PRD, PREFLIGHT, P1_TODO, dated]).command,
            "plan-feature"
        );
    }

    #[test]
    fn rule6_pending_research() {
        let mut parts = vec![PROFILES, P1_TODO, "research: {pending: [redis, kafka]}"];
        let expected = high(
            "research-stack",
            None,
            "Pending research for new technologies: redis, kafka",
        );
        assert_eq!(decide(&parts), expected);
        parts.push(PREFLIGHT);
        parts.push(PRD);
        assert_eq!(decide(&parts), expected);
        // Empty list: no rule 6.
        assert_eq!(
            ready(&[P1_TODO, "research: {pending: []}"]).command,
            "plan-feature"
        );
    }

    #[test]
    fn rule7_preflight_missing_or_blocked() {
        assert_eq!(
            decide(&[PROFILES, P1_TODO]),
            high(
                "preflight",
                None,
                "Preflight not yet run \u{2014} verify credentials before execution"
            )
        );
        assert_eq!(
            decide(&[PROFILES, P1_TODO, "preflight: {status: blocked}"]),
            high(
                "preflight",
                None,
                "Preflight was blocked \u{2014} re-verify credentials"
            )
        );
        // Passed but no prd: rule 8.
        assert_eq!(
            decide(&[PROFILES, PREFLIGHT, P1_TODO]).command,
            "create-prd"
        );
    }

    #[test]
    fn rule8_no_prd() {
        assert_eq!(
            decide(&[PROFILES, PREFLIGHT, P1_TODO]),
            high(
                "create-prd",
                None,
                "No PRD found \u{2014} create requirements document first"
            )
        );
        // Even when all phases are done.
        let done = "phases:\n  1: {plan: complete, execution: complete, validation: pass}";
        assert_eq!(decide(&[PROFILES, PREFLIGHT, done]).command, "create-prd");
    }

    #[test]
    fn rule10_done_including_empty_phases() {
        let done = "phases:\n  1: {plan: complete, execution: complete, validation: pass}";
        assert_eq!(ready(&[done]), high("done", None, "All phases complete"));
        assert_eq!(
            ready(&["phases: {}"]),
            high("done", None, "All phases complete")
        );
    }

    #[test]
    fn rules11_to_13_walk_the_first_unfinished_phase() {
        let cases: &[(&str, NextAction)] = &[
            (
                "phases:\n  1: {plan: in_progress, execution: not_started, validation: not_run}",
                high("plan-feature", Some("Phase 1"), "Phase 1 needs a plan"),
            ),
            (
                "phases:\n  1: {plan: complete, execution: in_progress, validation: not_run}",
                high(
                    "execute",
                    Some(".agents/plans/p1.md"),
                    "Phase 1 plan complete \u{2014} ready for execution",
                ),
            ),
            (
                "phases:\n  1: {plan: complete, execution: complete, validation: not_run}",
                high(
                    "validate-implementation",
                    Some("--full"),
                    "Phase 1 executed \u{2014} needs validation",
                ),
            ),
            (
                "phases:\n  1: {plan: complete, execution: complete, validation: fail}",
                high(
                    "validate-implementation",
                    Some("--full"),
                    "Phase 1 executed \u{2014} needs validation",
                ),
            ),
            (
                "phases:\n  1: {plan: complete, execution: complete, validation: partial}",
                high(
                    "validate-implementation",
                    Some("--full"),
                    "Phase 1 executed \u{2014} needs validation",
                ),
            ),
            (
                "phases:\n  1: {plan: complete, execution: complete, validation: pass}\n  2: {plan: complete, execution: complete, validation: pass}\n  10: {plan: complete}\n  3: {plan: weird}",
                high("plan-feature", Some("Phase 3"), "Phase 3 needs a plan"),
            ),
            (
                "phases:\n  '10': {plan: complete}\n  '2': {plan: complete, execution: complete, validation: pass}",
                high(
                    "execute",
                    Some(".agents/plans/phase-10.md"),
                    "Phase 10 plan complete \u{2014} ready for execution",
                ),
            ),
        ];
        for (phases, expected) in cases {
            assert_eq!(&ready(&[phases, PLANS]), expected, "{phases}");
        }
    }

    #[test]
    fn rule12_plan_lookup_uses_the_first_matching_entry_and_string_phases() {
        let phases = "phases:\n  2: {plan: complete, execution: not_started, validation: not_run}";
        let plans = "plans:\n  - {path: first.md, phase: '2'}\n  - {path: second.md, phase: 2}";
        assert_eq!(
            ready(&[phases, plans]).argument.as_deref(),
            Some("first.md")
        );
    }

    const MONO: &str = "project: {name: x, structure: context-monorepo}";

    #[test]
    fn rule9_monorepo_branch() {
        let modules = |a: &str, b: &str| {
            format!("modules:\n  zeta:\n    slices:\n      '01': {a}\n  alpha:\n    slices:\n      b2: {b}\n      a1: {{plan: complete, execution: complete, validation: pass}}")
        };
        let done = "{plan: complete, execution: complete, validation: pass}";
        let cases: Vec<(String, Vec<&str>, NextAction)> = vec![
            (
                modules("{plan: not_started}", "{plan: not_started}"),
                vec![],
                high("plan-feature", Some("--module alpha --slice b2"), "Module alpha / Slice b2 needs a plan"),
            ),
            (
                modules("{plan: not_started}", "{plan: complete, execution: not_started}"),
                vec![],
                high(
                    "execute",
                    Some("context/modules/alpha/slices/b2/plan.md"),
                    "Module alpha / Slice b2 plan complete \u{2014} ready for execution",
                ),
            ),
            (
                modules("{plan: not_started}", "{plan: complete, execution: not_started}"),
                vec!["plans:\n  - {path: p.md, module: alpha, slice: b2}"],
                high(
                    "execute",
                    Some("p.md"),
                    "Module alpha / Slice b2 plan complete \u{2014} ready for execution",
                ),
            ),
            (
                modules("{plan: not_started}", "{plan: complete, execution: complete, validation: fail}"),
                vec![],
                high(
                    "validate-implementation",
                    Some("--full"),
                    "Module alpha / Slice b2 executed \u{2014} needs validation",
                ),
            ),
            (
                modules("{plan: not_started}", done),
                vec![],
                high("plan-feature", Some("--module zeta --slice 01"), "Module zeta / Slice 01 needs a plan"),
            ),
            (modules(done, done), vec![], high("done", None, "All slices complete")),
            (
                modules("{plan: not_started}", done),
                vec!["_hasArchitectureMd: true"],
                high(
                    "mission-controller",
                    None,
                    "Monorepo with architecture.md \u{2014} Mission Controller handles parallel execution",
                ),
            ),
            (
                modules(done, done),
                vec!["_hasArchitectureMd: true"],
                high("done", None, "All slices complete"),
            ),
        ];
        for (modules, extra, expected) in cases {
            let mut parts = vec![MONO, P1_TODO, modules.as_str()];
            parts.extend(extra);
            assert_eq!(ready(&parts), expected, "{modules}");
        }
    }

    #[test]
    fn monorepo_needs_both_structure_and_modules_and_comes_after_rules_1_to_8() {
        let modules = "modules:\n  a:\n    slices:\n      s: {plan: not_started}";
        // No modules: classic.
        assert_eq!(ready(&[MONO, P1_TODO]).command, "plan-feature");
        assert_eq!(ready(&[MONO, P1_TODO]).argument.as_deref(), Some("Phase 1"));
        // Classic structure with modules: classic.
        let classic = "project: {structure: classic}";
        assert_eq!(
            ready(&[classic, modules, P1_TODO]).argument.as_deref(),
            Some("Phase 1")
        );
        // A failure still wins; a missing prd still wins.
        let f = failure("test_failure", "retry_count: 0,", "");
        assert_eq!(
            ready(&[MONO, modules, P1_TODO, &f]).argument.as_deref(),
            Some("retry")
        );
        assert_eq!(
            decide(&[PROFILES, PREFLIGHT, MONO, modules, P1_TODO]).command,
            "create-prd"
        );
    }

    #[test]
    fn serialises_as_the_dry_run_json_object() {
        let a = high("done", None, "All phases complete");
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"command":"done","argument":null,"reason":"All phases complete","confidence":"high"}"#
        );
        let b = want("execute", Some("retry"), "Fix: x", Confidence::Medium);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"command":"execute","argument":"retry","reason":"Fix: x","confidence":"medium"}"#
        );
    }
}
