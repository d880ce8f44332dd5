//! Overnight safety on the real `piv run` with the scripted claude (issue 11): no spend
//! loop, a failed manifest write stops the run, outages and usage limits waited out in
//! every step, rollbacks that keep the user's work, secrets out of git, honest costs.

use piv::testkit::fake_claude::{Action, Rule, Scenario};

use crate::support::*;

/// A success that changes nothing in the project (the slash command "forgot" its work).
fn hollow_success() -> Action {
    Action::Fail {
        subtype: "success".into(),
        is_error: false,
        message: "Planned. (But no plans entry was written.)".into(),
        exit_code: Some(0),
    }
}

/// `/plan-feature` that succeeds without writing its `plans` entry is a failure of the
/// plan step, counted like any other: the run stops after the plan step's retries instead
/// of cycling plan → execute forever, and no failure is ever marked `auto_fixed`.
#[test]
fn a_plan_without_its_entry_is_a_counted_failure_not_a_loop() {
    let sb = Sandbox::new("hollowplan", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/plan-feature", hollow_success())));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let plans = calls_starting(&sb, "/plan-feature").len();
    // partial_execution allows one retry: two plan sessions, then a human.
    assert_eq!(plans, 2, "{shown}");
    assert!(calls_starting(&sb, "/execute").is_empty(), "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "plan-feature");
    assert_eq!(f.len(), 2, "{shown}");
    assert!(f.iter().all(|f| f["resolution"] != "auto_fixed"), "{shown}");
    assert_eq!(f[1]["retry_count"].as_u64(), Some(1), "{shown}");
    assert!(
        f[0]["details"]
            .as_str()
            .unwrap_or("")
            .contains("wrote no plans entry for phase 1"),
        "{shown}"
    );
    let (stdout, _) = text(&out);
    assert!(stdout.contains("retries exhausted"), "{stdout}");
}

/// Whatever the path, a phase gets at most `PIV_MAX_SESSIONS_PER_PHASE` agent sessions in
/// a run; then piv stops and names the step that kept failing and why.
#[test]
fn the_session_budget_stops_a_phase_that_keeps_failing() {
    let sb = Sandbox::new("budget", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(
        Rule::new("/validate-implementation", Action::Succeed).hook("validation_status", "fail"),
    ));
    let out = run_with_env(&sb, &[], &[("PIV_MAX_SESSIONS_PER_PHASE", "7")]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    // Each session starts with /prime (plan, execute, validate, fix, validate, fix,
    // validate: 7) and none after the budget.
    assert_eq!(calls_starting(&sb, "/prime").len(), 7, "{shown}");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("reached its limit of 7 agent sessions")
            && stdout.contains("/validate-implementation — validation fail"),
        "{stdout}"
    );
    let m = sb.manifest();
    assert!(
        escalations(&m).iter().any(|n| n["details"]
            .as_str()
            .unwrap_or("")
            .contains("PIV_MAX_SESSIONS_PER_PHASE")),
        "{shown}"
    );
}

/// A manifest write that fails stops the run at once with exit 1 and the reason, instead
/// of going on without its memory of retries.
#[test]
fn a_failed_manifest_write_stops_the_run() {
    let sb = Sandbox::new("nowrite", &ready_manifest(2));
    // The first three writes succeed (the plan's sessions, the plan status, the
    // execute's checkpoint); every later one fails, as on a full disk.
    let out = run_with_env(&sb, &[], &[("PIV_FAULT_INJECT", "manifest_write_fail:3")]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let (stdout, stderr) = text(&out);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("cannot write .agents/manifest.yaml") && all.contains("injected fault"),
        "{shown}"
    );
    // It stopped right there: no second phase, no validate after the failed record.
    assert!(
        calls_starting(&sb, "/validate-implementation").is_empty(),
        "{shown}"
    );
    assert!(
        !calls_starting(&sb, "/plan-feature")
            .iter()
            .any(|c| c["prompt"].as_str().unwrap_or("").contains("Phase 2")),
        "{shown}"
    );
}
