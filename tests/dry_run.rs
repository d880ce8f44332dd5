//! `piv dry-run` end to end: the real binary on the earlier version's sample manifests,
//! on shapes of every next-action rule, and on bad input (exit 2, file untouched).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples")
}

/// A temp project whose manifest holds `text`.
fn project(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".agents")).unwrap();
    fs::write(dir.path().join(".agents/manifest.yaml"), text).unwrap();
    dir
}

fn piv(args: &[&str], project: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_piv"))
        .args(args)
        .arg("--project")
        .arg(project)
        .env_remove("PIV_PROJECT_DIR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run piv")
}

/// Runs `dry-run --json` and returns the one JSON object it printed.
fn dry_run_json(project: &Path) -> Value {
    let out = piv(&["dry-run", "--json"], project);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(stdout.lines().count(), 1, "exactly one line: {stdout:?}");
    let value: Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["command", "argument", "reason", "confidence"]);
    value
}

fn action(command: &str, argument: Option<&str>, reason: &str, confidence: &str) -> Value {
    serde_json::json!({
        "command": command, "argument": argument, "reason": reason, "confidence": confidence
    })
}

#[test]
fn every_sample_manifest_gives_the_reference_answer() {
    let expected = fs::read_to_string(samples_dir().join("expected-next-action.jsonl")).unwrap();
    let mut checked = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let mut want: Value = serde_json::from_str(line).unwrap();
        let file = want
            .as_object_mut()
            .unwrap()
            .remove("file")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        let text = fs::read_to_string(samples_dir().join(&file)).unwrap();
        let dir = project(&text);
        assert_eq!(dry_run_json(dir.path()), want, "sample {file}");
        assert_eq!(
            fs::read_to_string(dir.path().join(".agents/manifest.yaml")).unwrap(),
            text,
            "dry-run left {file} untouched"
        );
        checked += 1;
    }
    let yaml_samples = fs::read_dir(samples_dir())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("yaml".as_ref()))
        .count();
    assert_eq!(checked, yaml_samples, "every sample has an expected answer");
}

const READY: &str = "prd: {path: .agents/PRD.md}\nprofiles:\n  sdk: {freshness: fresh}\npreflight: {status: passed}\n";
const TODO: &str =
    "phases:\n  '1': {plan: not_started, execution: not_started, validation: not_run}\n";

/// One shape per rule of behaviour.md §3 (the samples cover rules 1, 3, 4, 10, 11, 12).
#[test]
fn every_rule_shape_gives_its_answer() {
    let em = "\u{2014}";
    let cases: Vec<(String, Value)> = vec![
        (
            format!("{READY}{TODO}failures:\n  - {{command: execute, phase: 1, error_category: test_failure, retry_count: 2, checkpoint: cp-1, resolution: pending, details: 'vitest: 3 failed'}}\n"),
            action("rollback", Some("cp-1"), "Retries exhausted for test_failure: vitest: 3 failed", "high"),
        ),
        (
            // Deviation: a missing retry_count is a first failure, not an exhausted one.
            format!("{READY}{TODO}failures:\n  - {{command: plan-feature, phase: 1, error_category: syntax_error, resolution: pending, details: x}}\n"),
            action("plan-feature", Some("retry"), "Fix: x", "medium"),
        ),
        (
            format!("{READY}{TODO}failures:\n  - {{command: orchestrator, phase: 0, error_category: orchestrator_crash, retry_count: 0, resolution: pending, details: boom}}\n"),
            action("rollback", None, "Retries exhausted for orchestrator_crash: boom", "high"),
        ),
        (
            format!("{READY}{TODO}checkpoints:\n  - {{tag: t, phase: 1, status: active}}\n"),
            action("execute", Some("resume"), &format!("Execution interrupted {em} resume from last completed step"), "high"),
        ),
        (
            format!("prd: {{}}\npreflight: {{status: passed}}\nprofiles:\n  a: {{freshness: stale}}\n  b: {{}}\n  c: {{freshness: stale}}\n{TODO}"),
            action("research-stack", Some("--refresh"), "Stale profiles: a, c", "high"),
        ),
        (
            format!("{READY}research: {{pending: [redis, kafka]}}\n{TODO}"),
            action("research-stack", None, "Pending research for new technologies: redis, kafka", "high"),
        ),
        (
            format!("prd: {{}}\nprofiles:\n  a: {{}}\n{TODO}"),
            action("preflight", None, &format!("Preflight not yet run {em} verify credentials before execution"), "high"),
        ),
        (
            format!("prd: {{}}\nprofiles:\n  a: {{}}\npreflight: {{status: blocked}}\n{TODO}"),
            action("preflight", None, &format!("Preflight was blocked {em} re-verify credentials"), "high"),
        ),
        (
            format!("profiles:\n  a: {{}}\npreflight: {{status: passed}}\n{TODO}"),
            action("create-prd", None, &format!("No PRD found {em} create requirements document first"), "high"),
        ),
        (
            format!("{READY}phases: {{}}\n"),
            action("done", None, "All phases complete", "high"),
        ),
        (
            format!("{READY}phases:\n  1: {{plan: complete, execution: complete, validation: fail}}\n"),
            action("validate-implementation", Some("--full"), &format!("Phase 1 executed {em} needs validation"), "high"),
        ),
        (
            format!("{READY}phases:\n  2: {{plan: complete, execution: in_progress, validation: not_run}}\n"),
            action("execute", Some(".agents/plans/phase-2.md"), &format!("Phase 2 plan complete {em} ready for execution"), "high"),
        ),
        (
            // Deviation: a plan entry with the string phase '2' matches phase 2.
            format!("{READY}phases:\n  2: {{plan: complete, execution: in_progress, validation: not_run}}\nplans:\n  - {{path: p2.md, phase: '2'}}\n"),
            action("execute", Some("p2.md"), &format!("Phase 2 plan complete {em} ready for execution"), "high"),
        ),
        (
            format!("{READY}{TODO}project: {{structure: context-monorepo}}\nmodules:\n  api:\n    slices:\n      s1: {{plan: not_started}}\n"),
            action("plan-feature", Some("--module api --slice s1"), "Module api / Slice s1 needs a plan", "high"),
        ),
        (
            format!("{READY}{TODO}project: {{structure: context-monorepo}}\nmodules:\n  api:\n    slices:\n      s1: {{plan: complete, execution: complete, validation: pass}}\n"),
            action("done", None, "All slices complete", "high"),
        ),
    ];
    for (text, want) in cases {
        let dir = project(&text);
        assert_eq!(dry_run_json(dir.path()), want, "manifest:\n{text}");
    }
}

#[test]
fn human_output_lists_the_action() {
    let dir = project(&format!("{READY}{TODO}"));
    let out = piv(&["dry-run"], dir.path());
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("Command:    plan-feature"), "{stdout}");
    assert!(stdout.contains("Argument:   Phase 1"), "{stdout}");
    assert!(
        stdout.contains("Reason:     Phase 1 needs a plan"),
        "{stdout}"
    );
    assert!(stdout.contains("Confidence: high"), "{stdout}");
}

#[test]
fn project_dir_comes_from_the_environment() {
    let dir = project(&format!("{READY}phases: {{}}\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_piv"))
        .args(["dry-run", "--json"])
        .env("PIV_PROJECT_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("\"done\""));
}

/// Runs dry-run on a bad manifest (or none): exit 2, nothing on stdout, the message on
/// stderr contains every `needles`, and the file is byte-identical afterwards.
fn assert_rejected(text: Option<&str>, needles: &[&str]) {
    let dir = match text {
        Some(t) => project(t),
        None => tempfile::tempdir().unwrap(),
    };
    for args in [&["dry-run", "--json"][..], &["dry-run"][..]] {
        let out = piv(args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
        assert!(out.stdout.is_empty(), "nothing on stdout");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} in {stderr}");
        }
    }
    let manifest = dir.path().join(".agents/manifest.yaml");
    match text {
        Some(t) => assert_eq!(fs::read(&manifest).unwrap(), t.as_bytes()),
        None => assert!(!dir.path().join(".agents").exists(), "nothing created"),
    }
    let entries = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        entries,
        usize::from(text.is_some()),
        "no other files created"
    );
}

#[test]
fn missing_manifest_exits_2_naming_the_path() {
    assert_rejected(
        None,
        &[".agents/manifest.yaml", "no manifest found", "/prime"],
    );
}

#[test]
fn yaml_syntax_error_exits_2_with_line_and_column_and_leaves_the_file() {
    assert_rejected(
        Some("phases:\n  '1': {plan: complete\nprd: x\n"),
        &["manifest.yaml", "line 3", "column"],
    );
}

#[test]
fn empty_manifest_exits_2() {
    assert_rejected(Some(""), &["manifest.yaml", "empty"]);
}

#[test]
fn manifest_without_phases_exits_2() {
    assert_rejected(
        Some("prd: {path: x}\n"),
        &["manifest.yaml", "manifest has no phases"],
    );
}

#[test]
fn non_numeric_phase_key_exits_2_naming_the_key() {
    assert_rejected(
        Some("phases:\n  first: {plan: complete}\n"),
        &["manifest.yaml", "\"first\"", "not a number"],
    );
}

#[test]
fn wrong_types_exit_2_naming_the_field() {
    assert_rejected(
        Some("phases: {}\nfailures:\n  - {resolution: pending}\n  - {retry_count: lots, resolution: pending}\n"),
        &["failures[1].retry_count", "whole number"],
    );
    assert_rejected(Some("- just\n- a list\n"), &["manifest.yaml", "not a map"]);
    assert_rejected(
        Some("phases:\n  1: done\n"),
        &["phases.1", "plan, execution and validation"],
    );
}

#[test]
fn missing_project_dir_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = piv(&["dry-run"], &dir.path().join("absent"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent"));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = piv(&["dry-run", "--bogus"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}
