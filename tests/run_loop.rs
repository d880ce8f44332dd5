//! `piv run` against the scripted claude: the PIV loop end to end, real processes, real
//! git repos (issue 4).

use std::process::Stdio;

use piv_testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Helpers.

// ---------------------------------------------------------------------------------------
// The happy path.

/// A 3-phase project goes from nothing to every phase committed, and the manifest tells
/// the story (and keeps what piv does not model).
#[test]
fn three_phases_run_from_nothing_to_all_committed() {
    let sb = Sandbox::new("three", &ready_manifest(3));
    let out = sb.run_to_end(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", sb.dump());
    let log = sb.git_log();
    for n in 1..=3 {
        assert!(
            log.iter().any(|l| l == &format!("feat: phase {n}")),
            "phase {n} committed: {log:?}"
        );
    }
    let m = sb.manifest();
    for n in 1..=3u64 {
        let p = phase(&m, n);
        assert_eq!(p["plan"], "complete", "{p:?}");
        assert_eq!(p["execution"], "complete");
        assert_eq!(p["validation"], "pass");
        assert_eq!(p["commit"], "complete");
        assert_eq!(p["name"], format!("Phase number {n}"));
    }
    assert_eq!(m["custom_notes"]["owner"], "keep-me");
    assert!(m["sessions"].as_sequence().is_some_and(|s| s.len() >= 9));
    assert_eq!(m["next_action"]["command"], "done");
    assert!(stdout.contains("All phases complete"), "{stdout}");
    assert!(!sb.project.join(".agents/orchestrator.pid").exists());
}

// ---------------------------------------------------------------------------------------
// The taxonomy paths.

/// A test failure in `/execute` is recorded, retried, and resolved `auto_fixed` when the
/// retry succeeds; the phase completes.
#[test]
fn a_test_failure_is_retried_and_then_auto_fixed() {
    let sb = Sandbox::new("retry", &ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(Rule::new("/execute", fail("vitest: 3 tests failed")).times(1)),
    );
    let out = sb.run_to_end(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    assert_eq!(f.len(), 1, "{}", show(&sb, &out));
    assert_eq!(f[0]["error_category"], "test_failure");
    assert_eq!(f[0]["retry_count"], 0);
    assert_eq!(f[0]["resolution"], "auto_fixed");
    assert_eq!(f[0]["phase"], 1);
    assert_eq!(calls_starting(&sb, "/execute").len(), 2);
    assert_eq!(phase(&m, 1)["commit"], "complete");
    assert!(escalations(&m).is_empty());
}

/// `/execute` always fails with a test failure: after max_retries + 1 attempts the work
/// is rolled back to the checkpoint, an escalation is recorded and the run stops (exit 1).
#[test]
fn exhausted_retries_roll_back_to_the_checkpoint_and_stop() {
    let sb = Sandbox::new("rollback", &ready_manifest(1));
    std::fs::create_dir_all(sb.project.join("src")).unwrap();
    std::fs::write(sb.project.join("src/keep.txt"), "original\n").unwrap();
    git(&sb.project, &["add", "-A"]);
    git(&sb.project, &["commit", "-qm", "keep"]);
    // The failing execute damages a tracked file and leaves a new one, as a real agent would.
    let wrapper = sb.root.path().join("claude-wrapper.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in /execute*) echo broken >> src/keep.txt; echo junk > src/junk.txt;; esac; done\nexec '{FAKE_CLAUDE}' \"$@\"\n",
            FAKE_CLAUDE = fake_claude()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&wrapper).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    sb.scenario(Scenario::new().rule(Rule::new("/execute", fail("vitest: 3 tests failed"))));
    let out = run_with_env(&sb, &[], &[("PIV_CLAUDE_BIN", wrapper.to_str().unwrap())]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    // test_failure allows 2 retries: 3 attempts in all.
    assert_eq!(calls_starting(&sb, "/execute").len(), 3, "{shown}");
    assert_eq!(
        std::fs::read_to_string(sb.project.join("src/keep.txt")).unwrap(),
        "original\n",
        "{shown}"
    );
    assert!(!sb.project.join("src/junk.txt").exists(), "{shown}");
    // Only piv's records differ from the checkpoint; its runtime files stay ignored.
    let status = git_output(&sb.project, &["status", "--porcelain"]);
    assert!(
        status.lines().all(|l| l[3..].starts_with(".agents/")),
        "{status}\n{shown}"
    );
    assert!(!status.contains("orchestrator."), "{status}");
    // The rollback undid the work, not the record: plans, sessions and every attempt stay.
    assert!(
        sb.project.join(".agents/plans/phase-1.md").exists(),
        "{shown}"
    );
    assert!(sb.project.join(".agents/.gitignore").exists(), "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    let last = f.last().expect("failure recorded");
    assert_eq!(last["resolution"], "rolled_back", "{shown}");
    assert_eq!(last["error_category"], "test_failure");
    assert_eq!(last["retry_count"], 2);
    let retried: Vec<_> = f.iter().map(|f| f["resolution"].clone()).collect();
    assert_eq!(retried, ["retried", "retried", "rolled_back"], "{shown}");
    assert_eq!(phase(&m, 1)["plan"], "complete", "{shown}");
    assert!(list(&m, "sessions").len() >= 8, "{shown}");
    let tag = last["checkpoint"].as_str().expect("checkpoint tag");
    assert!(tag.starts_with("piv-checkpoint/phase-1-"), "{tag}");
    assert!(git_output(&sb.project, &["tag"]).contains(tag));
    assert!(!escalations(&m).is_empty(), "{shown}");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("retries exhausted"), "{stdout}");
    assert!(stdout.contains(tag), "{stdout}");

    // Once the human has fixed things, the next run executes again from the checkpoint
    // (the record of the rollback stays) and finishes the phase.
    sb.scenario(Scenario::new());
    let again = sb.run_to_end(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", show(&sb, &again));
    let m = sb.manifest();
    assert_eq!(phase(&m, 1)["commit"], "complete", "{}", show(&sb, &again));
    assert_eq!(
        failures_of(&m, "execute").last().unwrap()["resolution"],
        "rolled_back"
    );
    assert!(list(&m, "checkpoints")
        .iter()
        .all(|c| c["status"] == "resolved"));
}

/// A 401 during planning is `integration_auth`: no retry, an escalation, exit 1.
#[test]
fn an_auth_failure_escalates_at_once_without_retry() {
    let sb = Sandbox::new("auth", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/plan-feature", fail("HTTP 401 Unauthorized"))));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 1, "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "plan-feature");
    assert_eq!(f.len(), 1, "{shown}");
    assert_eq!(f[0]["error_category"], "integration_auth");
    assert_eq!(f[0]["resolution"], "escalated_blocking");
    let e = escalations(&m);
    assert_eq!(e.len(), 1, "{shown}");
    assert_eq!(e[0]["category"], "integration_auth");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("integration_auth"), "{stdout}");
    assert!(stdout.contains("401 Unauthorized"), "{stdout}");
}

/// The CLI not logged in: `integration_auth` recorded, no retry, the human told what to
/// do, and the run pauses (it stays up) instead of stopping; a shutdown ends it.
#[test]
fn not_logged_in_pauses_and_says_how_to_log_in() {
    let sb = Sandbox::new("nologin", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/plan-feature", Action::NotLoggedIn)));
    let mut child = sb.spawn_run(&[]);
    // The escalation's terminal line goes through the notifier actor, so it may print
    // just after the state file says `paused`: wait for both.
    assert!(
        wait_until(DEADLINE, || state_file(&sb)["state"] == "paused"
            && sb.run_stdout().contains("CLAUDE_CODE_OAUTH_TOKEN")
            && sb.run_stdout().contains("integration_auth")),
        "{}",
        sb.dump()
    );
    assert_eq!(
        calls_starting(&sb, "/plan-feature").len(),
        1,
        "{}",
        sb.dump()
    );
    let m = sb.manifest();
    let f = failures_of(&m, "plan-feature");
    assert_eq!(f.len(), 1, "{}", sb.dump());
    assert_eq!(f[0]["error_category"], "integration_auth");
    assert_eq!(escalations(&m).len(), 1, "{}", sb.dump());
    let stdout = sb.run_stdout();
    assert!(
        stdout.contains("integration_auth") && stdout.contains("/login"),
        "{stdout}"
    );
    let out = sb.piv(&["signal", "nologin", "shutdown"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(wait_exit(&sb, &mut child).code(), Some(0), "{}", sb.dump());
}

/// `validation_status: fail` from a session that itself succeeded is a failed validation:
/// a refactor session carries the error, validation runs again and the phase commits.
#[test]
fn a_failed_validation_runs_a_refactor_then_commits() {
    let sb = Sandbox::new("validate", &ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(
            Rule::new("/validate-implementation", Action::Succeed)
                .times(1)
                .hook("validation_status", "fail"),
        ),
    );
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let fixes = calls_starting(&sb, "Fix the following validation error");
    assert_eq!(fixes.len(), 1, "{shown}");
    assert_eq!(calls_starting(&sb, "/validate-implementation").len(), 2);
    // The refactor came between the two validations.
    let order: Vec<String> = sb
        .claude_calls()
        .iter()
        .filter_map(|c| c["prompt"].as_str().map(String::from))
        .filter(|p| !p.starts_with("/prime"))
        .collect();
    let first_validate = order
        .iter()
        .position(|p| p.starts_with("/validate"))
        .unwrap();
    let fix = order
        .iter()
        .position(|p| p.starts_with("Fix the following"))
        .unwrap();
    let second_validate = order
        .iter()
        .rposition(|p| p.starts_with("/validate"))
        .unwrap();
    assert!(first_validate < fix && fix < second_validate, "{order:?}");
    let m = sb.manifest();
    assert_eq!(phase(&m, 1)["validation"], "pass");
    assert_eq!(phase(&m, 1)["commit"], "complete");
    assert!(sb.git_log().iter().any(|l| l == "feat: phase 1"));
}

// ---------------------------------------------------------------------------------------
// Hanging and silent agents.

/// A hanging `/execute` is stopped at the session timeout with its whole process group
/// (the `sleep` it started included); the failure is recorded and the retry succeeds.
#[test]
fn a_hanging_agent_is_killed_at_the_timeout_with_its_process_group() {
    let sb = Sandbox::new("hang", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/execute", Action::Hang).times(1)));
    // The hang is silent for ever; every other session prints at once. 8 s is far above what
    // a loaded machine needs to start the scripted claude, so only the hang can time out.
    let out = run_with_env(
        &sb,
        &[],
        &[("PIV_SESSION_TIMEOUT_SECS", "8"), ("PIV_STALL_SECS", "600")],
    );
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let hang = sb
        .claude_calls()
        .into_iter()
        .find(|c| c["action"] == "hang")
        .expect("the hang was logged");
    let pgid = hang["pgid"].as_i64().expect("pgid");
    let sleeper = hang["child_pid"].as_i64().expect("child pid");
    assert!(
        wait_until(DEADLINE, || !exists(-(pgid as i32))),
        "process group {pgid} still exists"
    );
    assert!(pid_gone(sleeper), "the hang's child {sleeper} survived");
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    assert_eq!(f.len(), 1, "{shown}");
    assert!(
        f[0]["details"].as_str().unwrap_or("").contains("timed out"),
        "{shown}"
    );
    assert_eq!(f[0]["resolution"], "auto_fixed");
    assert_eq!(phase(&m, 1)["commit"], "complete");
}

/// A session that prints nothing for `PIV_STALL_SECS` is stopped as stalled, well before
/// the overall timeout.
#[test]
fn a_silent_agent_is_stopped_by_the_stall_watchdog() {
    let sb = Sandbox::new("stall", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/execute", Action::Hang).times(1)));
    let out = run_with_env(
        &sb,
        &[],
        // The hang is silent for ever; other sessions print within milliseconds, so 4 s of
        // silence can only be the hang, however loaded the machine.
        &[("PIV_STALL_SECS", "4"), ("PIV_SESSION_TIMEOUT_SECS", "600")],
    );
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let hang = sb
        .claude_calls()
        .into_iter()
        .find(|c| c["action"] == "hang")
        .expect("the hang was logged");
    let pgid = hang["pgid"].as_i64().expect("pgid") as i32;
    assert!(
        wait_until(DEADLINE, || !exists(-pgid)),
        "group {pgid} lives"
    );
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    assert_eq!(f.len(), 1, "{shown}");
    assert!(
        f[0]["details"].as_str().unwrap_or("").contains("stalled"),
        "{shown}"
    );
    assert_eq!(phase(&m, 1)["commit"], "complete");
}

// ---------------------------------------------------------------------------------------
// Output volume and environment.

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// 50 MB of agent output goes through `piv run` while piv's peak memory stays flat.
#[test]
fn fifty_megabytes_of_agent_output_keep_piv_memory_flat() {
    let sb = Sandbox::new("big", &ready_manifest(2));
    sb.scenario(
        Scenario::new().rule(
            Rule::new(
                "/execute",
                Action::BigOutput {
                    bytes: 50 * 1024 * 1024,
                    line_bytes: None,
                },
            )
            .times(1),
        ),
    );
    let mut child = sb.spawn_run(&[]);
    let pid = child.id();
    let mut peak = 0u64;
    // Samples taken once the big session is over (its validation has started): VmHWM is
    // the process's high-water mark, so any of them shows the peak.
    let mut after_big = 0u32;
    let mut status = None;
    let ended = wait_until(DEADLINE * 2, || {
        let past = !calls_starting(&sb, "/validate-implementation").is_empty();
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
            if past {
                after_big += 1;
            }
        }
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("piv run did not end\n{}", sb.dump());
    }
    assert_eq!(status.unwrap().code(), Some(0), "{}", sb.dump());
    assert!(after_big > 0, "no memory sample after the big session");
    let peak_mib = peak / 1024;
    eprintln!("piv peak RSS with 50 MB of agent output: {peak_mib} MiB");
    assert!(peak_mib < 60, "piv's peak RSS was {peak_mib} MiB");
    assert_eq!(phase(&sb.manifest(), 2)["commit"], "complete");
}

/// `ANTHROPIC_API_KEY` never reaches the agent (it would bill the API instead of the
/// subscription) unless `PIV_ALLOW_API_KEY=1`.
#[test]
fn the_api_key_is_kept_from_the_agent_unless_allowed() {
    for (allow, expected) in [(None, false), (Some("1"), true)] {
        let sb = Sandbox::new("apikey", &ready_manifest(1));
        let mut env = vec![("ANTHROPIC_API_KEY", "sk-ant-test-key")];
        if let Some(a) = allow {
            env.push(("PIV_ALLOW_API_KEY", a));
        }
        let out = run_with_env(&sb, &[], &env);
        assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
        let calls = sb.claude_calls();
        // plan and execute and validate pairings, one commit session.
        assert!(calls.len() >= 7, "{calls:?}");
        for c in &calls {
            assert_eq!(c["api_key_present"], expected, "allow={allow:?}: {c}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// The PID file.

/// While one `piv run` works on a project, a second one refuses (exit 2) naming the
/// running PID; a stale PID file (dead process) is replaced and the run proceeds.
#[test]
fn a_second_run_is_refused_and_a_stale_pid_file_is_replaced() {
    let sb = Sandbox::new("pidfile", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/prime", Action::Hang)));
    let mut first = spawn_with_env(
        &sb,
        &[
            ("PIV_SESSION_TIMEOUT_SECS", "600"),
            ("PIV_STALL_SECS", "600"),
            ("PIV_HEARTBEAT_SECS", "1"),
        ],
    );
    let first_pid = first.id();
    assert!(
        wait_until(DEADLINE, || sb
            .claude_calls()
            .iter()
            .any(|c| c["action"] == "hang")),
        "the first run never reached its session\n{}",
        sb.dump()
    );
    let pid_path = sb.project.join(".agents/orchestrator.pid");
    let record: Value = serde_json::from_str(&std::fs::read_to_string(&pid_path).unwrap()).unwrap();
    assert_eq!(record["pid"], first_pid);
    let second = wait_output(
        sb.piv(&["run"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        DEADLINE,
    );
    let (o, e) = text(&second);
    assert_eq!(second.status.code(), Some(2), "{o}\n{e}");
    assert!(e.contains(&first_pid.to_string()), "{e}");
    assert_eq!(
        sb.claude_calls().len(),
        1,
        "the second run started a session"
    );
    // The refused run left the running one's PID file alone.
    let again: Value = serde_json::from_str(&std::fs::read_to_string(&pid_path).unwrap()).unwrap();
    assert_eq!(again["pid"], first_pid);

    // A long session is not silence: the heartbeat says the run is alive.
    assert!(
        wait_until(DEADLINE, || sb.run_stdout().contains("Still running")),
        "no heartbeat\n{}",
        sb.dump()
    );

    // SIGTERM ends the first run, its agent's group with it.
    let pgid = sb.claude_calls()[0]["pgid"].as_i64().unwrap() as i32;
    send_signal(first_pid, libc::SIGTERM);
    let status = wait_exit(&sb, &mut first);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert!(
        wait_until(DEADLINE, || !exists(-pgid)),
        "group {pgid} lives"
    );
    assert!(!pid_path.exists());

    // A stale PID file: the process it names is dead.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    std::fs::write(
        &pid_path,
        format!(
            "{{\"pid\":{dead_pid},\"startedAt\":\"2026-01-01T00:00:00.000Z\",\"projectDir\":\"{}\"}}",
            sb.project.display()
        ),
    )
    .unwrap();
    sb.scenario(Scenario::new());
    let out = sb.run_to_end(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    assert_eq!(phase(&sb.manifest(), 1)["commit"], "complete");
    assert!(!pid_path.exists());
}

// ---------------------------------------------------------------------------------------
// The manifest.

/// Keys piv does not model survive a full run: at the top level, inside a phase and
/// inside a list entry.
#[test]
fn unknown_manifest_keys_survive_a_full_run() {
    let mut manifest = ready_manifest(2).replace(
        "    name: Phase number 1\n",
        "    name: Phase number 1\n    reviewer: alice\n    extra_map:\n      depth: 2\n",
    );
    manifest.push_str(
        "settings:\n  mode: autonomous\n  future_knob: 42\nnotifications:\n  - timestamp: 2026-01-01T00:00:00Z\n    type: info\n    details: hello\n    custom_tag: keep-this\n",
    );
    manifest.push_str("x_future_section:\n  - a\n  - b\n");
    let sb = Sandbox::new("unknown", &manifest);
    let out = sb.run_to_end(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    let m = sb.manifest();
    assert_eq!(m["custom_notes"]["owner"], "keep-me");
    assert_eq!(m["x_future_section"][1], "b");
    assert_eq!(m["settings"]["future_knob"], 42);
    assert_eq!(m["settings"]["mode"], "autonomous");
    let p1 = phase(&m, 1);
    assert_eq!(p1["reviewer"], "alice");
    assert_eq!(p1["extra_map"]["depth"], 2);
    assert_eq!(p1["commit"], "complete");
    assert_eq!(phase(&m, 2)["commit"], "complete");
    let first = &list(&m, "notifications")[0];
    assert_eq!(first["custom_tag"], "keep-this");
    assert_eq!(first["details"], "hello");
}

// ---------------------------------------------------------------------------------------
// The run's options and start-up checks.

/// `--phase 2` runs phase 2 only.
#[test]
fn phase_option_runs_only_that_phase() {
    let sb = Sandbox::new("onlytwo", &ready_manifest(3));
    let out = sb.run_to_end(&["--phase", "2"]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let m = sb.manifest();
    assert_eq!(phase(&m, 2)["commit"], "complete", "{shown}");
    for n in [1, 3] {
        assert_eq!(phase(&m, n)["plan"], "not_started", "{shown}");
        assert_eq!(phase(&m, n)["execution"], "not_started");
    }
    let plans = calls_starting(&sb, "/plan-feature");
    assert_eq!(plans.len(), 1, "{shown}");
    assert!(plans[0]["prompt"].as_str().unwrap().contains("Phase 2"));
    for c in calls_starting(&sb, "/execute") {
        assert!(c["prompt"].as_str().unwrap().contains("phase-2"), "{c}");
    }
    assert_eq!(sb.git_log()[0], "feat: phase 2");
}

/// A slash command the CLI does not know stops the run and names the file to add.
#[test]
fn an_unknown_slash_command_stops_naming_the_file() {
    let sb = Sandbox::new("unknowncmd", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/prime", Action::UnknownCommand)));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let (stdout, _) = text(&out);
    assert!(stdout.contains(".claude/commands/prime.md"), "{shown}");
    assert_eq!(sb.claude_calls().len(), 1, "{shown}");
}

/// A missing slash command file is found before anything is spent.
#[test]
fn a_missing_command_file_is_refused_before_any_session() {
    let sb = Sandbox::new("nocmd", &ready_manifest(1));
    std::fs::remove_file(sb.project.join(".claude/commands/execute.md")).unwrap();
    let out = sb.run_to_end(&[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains(".claude/commands/execute.md"), "{stderr}");
    assert!(sb.claude_calls().is_empty());
    assert!(!sb.project.join(".agents/orchestrator.pid").exists());
}

/// A usage limit pauses until its reset time (read from the event), says so, and the run
/// then continues by itself to the end.
#[test]
fn a_usage_limit_waits_for_the_reset_then_continues() {
    let sb = Sandbox::new("usage", &ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(
            Rule::new(
                "/plan-feature",
                Action::UsageLimit {
                    resets_in_secs: Some(2),
                },
            )
            .times(1),
        ),
    );
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let (stdout, _) = text(&out);
    assert!(stdout.to_lowercase().contains("usage limit"), "{shown}");
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 2, "{shown}");
    let m = sb.manifest();
    assert_eq!(phase(&m, 1)["commit"], "complete");
    assert!(escalations(&m).is_empty(), "{shown}");
}

/// Reaching `PIV_MAX_COST_USD` pauses the run and says so; a shutdown signal ends it.
#[test]
fn the_cost_cap_pauses_the_run() {
    let sb = Sandbox::new("costcap", &ready_manifest(2));
    sb.scenario(Scenario::new().rule(Rule::new("", Action::Succeed).cost(0.03)));
    let mut child = spawn_with_env(&sb, &[("PIV_MAX_COST_USD", "0.05")]);
    let paused = wait_until(DEADLINE, || state_file(&sb)["state"] == "paused");
    if !paused {
        let _ = child.kill();
        let _ = child.wait();
        panic!("never paused\n{}", sb.dump());
    }
    let calls_at_pause = sb.claude_calls().len();
    // The terminal line is printed by the notifier, after the state is published.
    assert!(
        wait_until(DEADLINE, || sb
            .run_stdout()
            .to_lowercase()
            .contains("cost cap")),
        "{}",
        sb.dump()
    );
    assert!(
        state_file(&sb)["why"]
            .as_str()
            .unwrap_or("")
            .contains("cost cap"),
        "{}",
        state_file(&sb)
    );
    assert!(child.try_wait().unwrap().is_none(), "a paused run stays up");
    // A resume lifts the cap for another PIV_MAX_COST_USD: one more pairing, then a pause.
    let resume = sb.piv(&["signal", "costcap", "resume"]).output().unwrap();
    assert!(resume.status.success(), "{}", text(&resume).1);
    assert!(
        wait_until(DEADLINE, || sb.claude_calls().len() > calls_at_pause
            && state_file(&sb)["state"] == "paused"),
        "no second pause\n{}",
        sb.dump()
    );
    let calls_at_pause = sb.claude_calls().len();
    let signal = sb.piv(&["signal", "costcap", "shutdown"]).output().unwrap();
    assert!(signal.status.success(), "{}", text(&signal).1);
    let status = wait_exit(&sb, &mut child);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(
        sb.claude_calls().len(),
        calls_at_pause,
        "no session after the pause"
    );
    assert_ne!(phase(&sb.manifest(), 2)["commit"], "complete");
}

// ---------------------------------------------------------------------------------------
// The real CLI's other failure modes, through `piv run`.

/// A CLI that exits non-zero without a result: the failure carries its stderr, is
/// classified from it, and the retry succeeds.
#[test]
fn a_crashing_cli_is_classified_from_its_stderr_and_retried() {
    let sb = Sandbox::new("exitcode", &ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(
            Rule::new(
                "/execute",
                Action::Exit {
                    code: 3,
                    stderr: "SyntaxError: Unexpected token '}' in src/app.ts".into(),
                },
            )
            .times(1),
        ),
    );
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "execute");
    assert_eq!(f.len(), 1, "{shown}");
    assert_eq!(f[0]["error_category"], "syntax_error", "{shown}");
    assert!(
        f[0]["details"]
            .as_str()
            .unwrap_or("")
            .contains("Unexpected token"),
        "{shown}"
    );
    assert_eq!(f[0]["resolution"], "auto_fixed");
    assert_eq!(phase(&m, 1)["commit"], "complete");
}

/// `--resume` of a session the CLI does not know: the pairing starts a fresh session
/// for the second command instead of failing the step.
#[test]
fn an_unknown_resume_falls_back_to_a_fresh_session() {
    let sb = Sandbox::new("resume", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/execute", Action::ResumeUnknown).times(1)));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let executes = calls_starting(&sb, "/execute");
    assert_eq!(executes.len(), 2, "{shown}");
    assert_eq!(executes[0]["action"], "resume_unknown");
    let fresh = executes[1]["argv"].as_array().unwrap();
    assert!(
        !fresh.iter().any(|a| a == "--resume"),
        "the fallback resumed again: {fresh:?}"
    );
    let m = sb.manifest();
    assert!(failures_of(&m, "execute").is_empty(), "{shown}");
    assert_eq!(phase(&m, 1)["commit"], "complete");
}

/// Garbage and unknown message kinds in the stream are skipped, never fatal.
#[test]
fn garbage_in_the_stream_does_not_stop_the_run() {
    let sb = Sandbox::new("garbage", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/prime", Action::Garbage)));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(calls_starting(&sb, "/prime").len() >= 3);
    let m = sb.manifest();
    assert!(list(&m, "failures").is_empty(), "{shown}");
    assert_eq!(phase(&m, 1)["commit"], "complete");
}

/// As root, Claude Code refuses the unattended permission flag: piv says so at start-up,
/// with the fix, before any session (as a normal user the run simply works).
#[test]
fn root_without_sandbox_is_refused_at_start_with_the_fix() {
    let sb = Sandbox::new("root", &ready_manifest(1));
    let mut cmd = sb.piv(&["run"]);
    cmd.env_remove("IS_SANDBOX");
    let out = wait_output(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        DEADLINE,
    );
    let (o, e) = text(&out);
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(out.status.code(), Some(2), "{o}\n{e}");
        assert!(e.contains("IS_SANDBOX=1") && e.contains("root"), "{e}");
        assert!(sb.claude_calls().is_empty());
    } else {
        assert_eq!(out.status.code(), Some(0), "{o}\n{e}");
        assert!(sb
            .claude_calls()
            .iter()
            .all(|c| c["action"] != "refused_root"));
    }
}

/// A validation that keeps failing: refactors, a retry, then a stop for a human without
/// a rollback (the reference rolls back only failed executions); nothing is committed.
#[test]
fn a_validation_that_keeps_failing_stops_for_a_human() {
    let sb = Sandbox::new("valfail", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(
        Rule::new("/validate-implementation", Action::Succeed).hook("validation_status", "fail"),
    ));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let validations = calls_starting(&sb, "/validate-implementation").len();
    let fixes = calls_starting(&sb, "Fix the following validation error").len();
    assert!(validations >= 3 && fixes >= 2, "{shown}");
    let m = sb.manifest();
    let f = failures_of(&m, "validate-implementation");
    let last = f.last().expect("failure recorded");
    assert_eq!(last["resolution"], "escalated_blocking", "{shown}");
    assert!(!escalations(&m).is_empty(), "{shown}");
    assert_ne!(phase(&m, 1)["validation"], "pass");
    assert!(!sb.git_log().iter().any(|l| l == "feat: phase 1"));
    assert!(sb.project.join("src/phase_1.txt").exists(), "{shown}");
    let (stdout, _) = text(&out);
    assert!(stdout.contains("retries exhausted"), "{stdout}");
}
