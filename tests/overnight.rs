//! Overnight safety on the real `piv run` with the scripted claude (issue 11): no spend
//! loop, a failed manifest write stops the run, outages and usage limits waited out in
//! every step, rollbacks that keep the user's work, secrets out of git, honest costs.

use piv_testkit::fake_claude::{Action, Rule, Scenario};

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

/// A PID file that names a live process which is not a piv of this project (a PID reused
/// after a reboot: here, the test process itself) does not block the start, and a PID
/// file that is not even UTF-8 is quarantined byte for byte, not overwritten.
#[test]
fn a_reused_pid_or_an_unparseable_pid_file_does_not_block_the_start() {
    let sb = Sandbox::new("pidreuse", &ready_manifest(1));
    let pid_path = sb.project.join(".agents/orchestrator.pid");
    std::fs::write(
        &pid_path,
        format!(
            "{{\"pid\":{},\"startedAt\":\"2026-01-01T00:00:00.000Z\",\"projectDir\":\"{}\"}}",
            std::process::id(),
            sb.project.display()
        ),
    )
    .unwrap();
    let out = sb.run_to_end(&["--phase", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));

    let garbage: &[u8] = &[0xff, 0xfe, b'{', 0x00, 0x9f, b'\n'];
    std::fs::write(&pid_path, garbage).unwrap();
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let quarantined = files_starting_with(&sb.project.join(".agents"), "orchestrator.pid.corrupt-");
    assert_eq!(quarantined.len(), 1, "{shown}");
    assert_eq!(std::fs::read(&quarantined[0]).unwrap(), garbage);
    let (_, stderr) = text(&out);
    assert!(stderr.contains("could not be parsed"), "{stderr}");
    assert!(
        !pid_path.exists(),
        "the run removes its own PID file at exit"
    );
}

/// When piv makes a project's first commit it never commits `.env` or `.env*`: it adds
/// them to `.gitignore` first.
#[test]
fn the_first_commit_piv_makes_leaves_secret_files_out() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("fresh");
    std::fs::create_dir_all(project.join(".agents")).unwrap();
    std::fs::create_dir_all(project.join(".claude/commands")).unwrap();
    for c in piv_testkit::project::COMMAND_FILES {
        std::fs::write(project.join(format!(".claude/commands/{c}.md")), "# c\n").unwrap();
    }
    std::fs::write(project.join(".agents/manifest.yaml"), ready_manifest(1)).unwrap();
    std::fs::write(project.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(project.join(".env.local"), "SECRET=2\n").unwrap();
    std::fs::write(project.join("main.rs"), "fn main() {}\n").unwrap();
    let sb = Sandbox::new("unused", &ready_manifest(1));
    let out = wait_output(
        sb.piv(&["run"])
            .env("PIV_PROJECT_DIR", &project)
            .current_dir(&project)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        DEADLINE,
    );
    let (o, e) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
    let tracked = std::process::Command::new("git")
        .args(["log", "--all", "--name-only", "--format="])
        .current_dir(&project)
        .output()
        .unwrap();
    let tracked = String::from_utf8_lossy(&tracked.stdout).into_owned();
    assert!(tracked.lines().any(|l| l == "main.rs"), "{tracked}");
    assert!(
        !tracked.lines().any(|l| l.starts_with(".env")),
        "a secret file was committed:\n{tracked}"
    );
    let ignore = std::fs::read_to_string(project.join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == ".env*"), "{ignore}");
    assert_eq!(
        std::fs::read_to_string(project.join(".env")).unwrap(),
        "SECRET=1\n"
    );
}

/// The cost cap is checked before every agent session, not only between steps: a refactor
/// pairing inside a failed validation does not start once the cap is reached, and
/// `piv status` shows the run's cost.
#[test]
fn the_cost_cap_is_checked_before_every_session() {
    let sb = Sandbox::new("capsession", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(
        Rule::new("/validate-implementation", Action::Succeed).hook("validation_status", "fail"),
    ));
    // Every call costs $0.01: plan + execute = $0.04, the validate pairing makes $0.06.
    let mut child = spawn_with_env(&sb, &[("PIV_MAX_COST_USD", "0.05")]);
    let paused = wait_until(DEADLINE, || state_file(&sb)["state"] == "paused");
    if !paused {
        let _ = child.kill();
        let _ = child.wait();
        panic!("never paused\n{}", sb.dump());
    }
    assert_eq!(calls_starting(&sb, "/validate-implementation").len(), 1);
    assert!(
        calls_starting(&sb, "Fix the following").is_empty(),
        "the refactor pairing started past the cap\n{}",
        sb.dump()
    );
    let status = sb.piv(&["status", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let cost = status["costUsd"].as_f64().unwrap_or(-1.0);
    assert!((cost - 0.06).abs() < 1e-9, "costUsd {cost}: {status}");
    let signal = sb
        .piv(&["signal", "capsession", "shutdown"])
        .output()
        .unwrap();
    assert!(signal.status.success(), "{}", text(&signal).1);
    let status = wait_exit(&sb, &mut child);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
}

/// A terminal that goes away (ssh dropped: the reader of piv's output is gone) does not
/// crash the run: every phase is still done and recorded, with no crash record.
#[test]
fn a_vanished_terminal_does_not_stop_the_run() {
    let sb = Sandbox::new("noterm", &ready_manifest(2));
    let mut child = sb
        .piv(&["run"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close both read ends at once: every later write of piv fails with EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let status = wait_exit(&sb, &mut child);
    let m = sb.manifest();
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(m["phases"][1]["commit"], "complete", "{}", sb.dump());
    assert_eq!(m["phases"][2]["commit"], "complete", "{}", sb.dump());
    assert!(
        failures_of(&m, "orchestrator").is_empty(),
        "a crash was recorded\n{}",
        sb.dump()
    );
}

/// An API outage during execute is waited out: not recorded as a failure, never rolled
/// back, announced once when it starts and once when it ends; then the run goes on to done.
#[test]
fn an_outage_is_waited_out_not_counted_and_never_rolled_back() {
    let sb = Sandbox::new("outage", &ready_manifest(1));
    sb.scenario(
        Scenario::new()
            .rule(
                Rule::new("/execute", Action::ApiUnreachable { retries: 2 })
                    .retry_delay(std::time::Duration::from_millis(50))
                    .times(2),
            )
            .rule(
                Rule::new(
                    "/validate-implementation",
                    Action::Overloaded { retries: 1 },
                )
                .times(1),
            ),
    );
    let out = run_with_env(&sb, &[], &[("PIV_OUTAGE_BACKOFF_SECS", "1")]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let m = sb.manifest();
    assert_eq!(m["phases"][1]["commit"], "complete", "{shown}");
    assert!(
        m["failures"].as_sequence().is_none_or(|f| f.is_empty()),
        "an outage was recorded as a failure\n{shown}"
    );
    assert_eq!(calls_starting(&sb, "/execute").len(), 3, "{shown}");
    let (stdout, _) = text(&out);
    // Two outages (execute, then validate), each announced once at its start and end.
    assert_eq!(
        stdout.matches("unreachable or overloaded").count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("The Claude API is back").count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains("Rolled back"), "{stdout}");
}

/// An outage longer than `PIV_OUTAGE_MAX_SECS` stops for a human, still without a
/// recorded failure or a rollback.
#[test]
fn an_endless_outage_stops_for_a_human_after_the_maximum() {
    let sb = Sandbox::new("longoutage", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/execute", Action::Overloaded { retries: 0 })));
    let out = run_with_env(
        &sb,
        &[],
        &[
            ("PIV_OUTAGE_BACKOFF_SECS", "1"),
            ("PIV_OUTAGE_MAX_SECS", "3"),
        ],
    );
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("PIV_OUTAGE_MAX_SECS=3"), "{stdout}");
    assert!(!stdout.contains("Rolled back"), "{stdout}");
    let m = sb.manifest();
    assert!(
        m["failures"].as_sequence().is_none_or(|f| f.is_empty()),
        "{shown}"
    );
    assert!(calls_starting(&sb, "/execute").len() >= 2, "{shown}");
}

/// A manifest whose pre-loop still needs `/preflight`.
fn manifest_needing_preflight() -> String {
    ready_manifest(1).replace("preflight:\n  status: passed\n", "")
}

/// A usage limit in the pre-loop (`/preflight`) is waited out and the step retried, like in
/// the phases; a reset time in the past or missing waits the minimum, doubling — never a
/// one-second loop, never an escalation.
#[test]
fn a_usage_limit_in_the_pre_loop_is_waited_out() {
    for resets_in_secs in [Some(-3600), None] {
        let sb = Sandbox::new("limitpre", &manifest_needing_preflight());
        sb.scenario(
            Scenario::new()
                .rule(Rule::new("/preflight", Action::UsageLimit { resets_in_secs }).times(2)),
        );
        let started = std::time::Instant::now();
        let out = run_with_env(&sb, &[], &[("PIV_LIMIT_MIN_WAIT_SECS", "1")]);
        let shown = show(&sb, &out);
        assert_eq!(out.status.code(), Some(0), "{resets_in_secs:?}\n{shown}");
        assert_eq!(calls_starting(&sb, "/preflight").len(), 3, "{shown}");
        // 1 s, then 2 s: the second wait doubled.
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(3),
            "waited only {:?}\n{shown}",
            started.elapsed()
        );
        let m = sb.manifest();
        assert!(escalations(&m).is_empty(), "{shown}");
        assert_eq!(m["phases"][1]["commit"], "complete", "{shown}");
        let (stdout, _) = text(&out);
        assert_eq!(stdout.matches("Usage limit reached").count(), 2, "{stdout}");
    }
}

/// Rollback keeps the user's work: an uncommitted edit to a tracked file, an untracked
/// user file and an ignored `.env` are as before after execute failed until rollback;
/// the failed attempt's file is gone, and the messages name the snapshot.
#[test]
fn a_rollback_keeps_the_users_uncommitted_work() {
    let sb = Sandbox::new("keepwork", &ready_manifest(1));
    let p = &sb.project;
    std::fs::write(p.join(".gitignore"), ".env\n").unwrap();
    std::fs::write(p.join("README.md"), "committed\n").unwrap();
    git(p, &["add", "-A"]);
    git(p, &["commit", "-qm", "user files"]);
    std::fs::write(p.join("README.md"), "committed\nan uncommitted edit\n").unwrap();
    std::fs::write(p.join("ideas.txt"), "untracked user notes\n").unwrap();
    std::fs::write(p.join(".env"), "SECRET=1\n").unwrap();
    sb.scenario(Scenario::new().rule(Rule::new(
        "/execute",
        Action::WriteThenFail {
            path: "src/attempt.rs".into(),
        },
    )));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(calls_starting(&sb, "/execute").len() >= 2, "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    assert_eq!(f.last().unwrap()["resolution"], "rolled_back", "{shown}");
    assert_eq!(
        std::fs::read_to_string(p.join("README.md")).unwrap(),
        "committed\nan uncommitted edit\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("ideas.txt")).unwrap(),
        "untracked user notes\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert!(!p.join("src/attempt.rs").exists(), "{shown}");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("refs/piv/snapshots/piv-checkpoint/phase-1-"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("uncommitted changes at checkpoint").count(),
        1,
        "{stdout}"
    );
}
