//! Agent sessions against real processes: the CLI captures replayed, the scripted
//! `piv-fake-claude`, process-group teardown, bounded memory, and git checkpoints.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use piv::core::stream::SessionError;
use piv::io::agent::{missing_commands, run_pairing, run_session, AgentConfig};
use piv::io::git;

use crate::support;
use piv::testkit::fake_claude::{Action, Rule, Scenario};
use tokio::sync::watch;

use crate::support::session_fixture::{no_cancel, SessionFixture};

type Fixture = SessionFixture;

/// The fixture's configuration plus a model and a turn cap (the argument tests read them).
fn cfg(fx: &Fixture) -> AgentConfig {
    AgentConfig {
        model: Some("claude-test-model".into()),
        max_turns: 9,
        ..fx.cfg()
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn group_gone(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn process_running(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude-cli")
}

/// Replays a capture as a real process: its stdout, its stderr, its exit status.
fn replay_bin(dir: &Path, name: &str) -> PathBuf {
    let fx = fixtures_dir();
    let rc = std::fs::read_to_string(fx.join(format!("{name}.rc"))).unwrap();
    let script = dir.join(format!("replay-{name}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat '{out}'\ncat '{err}' >&2\nexit {rc}\n",
            out = fx.join(format!("{name}.stdout")).display(),
            err = fx.join(format!("{name}.stderr")).display(),
            rc = rc.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test]
async fn every_capture_replayed_through_a_process_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    type Check = fn(&SessionError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        (
            "noauth",
            |e| matches!(e, SessionError::NotLoggedIn { message } if message.contains("Not logged in")),
        ),
        (
            "resume-unknown",
            |e| matches!(e, SessionError::ResumeUnknown { session_id } if session_id == "11111111-1111-4111-8111-111111111111"),
        ),
        ("skip-perms-root", |e| {
            matches!(e, SessionError::RootSkipPermissions)
        }),
        (
            "unknown-command",
            |e| matches!(e, SessionError::UnknownCommand { name } if name == "prime"),
        ),
        ("no-verbose", |e| matches!(e, SessionError::MissingVerbose)),
        // An outage: the runner waits it out instead of counting it against the step.
        (
            "bogus-token",
            |e| matches!(e, SessionError::ApiUnavailable { detail } if detail.contains("Unable to connect")),
        ),
    ];
    for (name, check) in cases {
        let cfg = AgentConfig::new(replay_bin(dir.path(), name), dir.path());
        let outcome = run_session(&cfg, "hello", None, no_cancel()).await;
        let err = outcome
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no error"));
        assert!(check(err), "{name}: {err:?}");
        assert!(!err.message().is_empty());
    }
}

#[tokio::test]
async fn scripted_success_reports_session_cost_turns_and_hooks() {
    let fx = Fixture::new(
        Scenario::new().rule(Rule::new("/validate-implementation", Action::Succeed).cost(0.25)),
    );
    let out = run_session(
        &cfg(&fx),
        "/validate-implementation --full",
        None,
        no_cancel(),
    )
    .await;
    assert_eq!(out.error, None, "{out:?}");
    assert_eq!(out.cost_usd, Some(0.25));
    assert_eq!(out.num_turns, 3);
    assert_eq!(
        out.hooks.get("validation_status").map(String::as_str),
        Some("pass")
    );
    let log = fx.calls();
    assert_eq!(log.len(), 1);
    assert_eq!(out.session_id.as_deref(), log[0]["session_id"].as_str());
    let argv: Vec<&str> = log[0]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        argv,
        [
            "-p",
            "/validate-implementation --full",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "claude-test-model",
            "--max-turns",
            "9",
            "--permission-mode",
            "acceptEdits"
        ]
    );
    let manifest = std::fs::read_to_string(fx.project.join(".agents/manifest.yaml")).unwrap();
    assert!(manifest.contains("validations"));
}

#[tokio::test]
async fn pairing_resumes_the_first_session() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new("", Action::Succeed).cost(0.1)));
    let prompts = vec![
        "/prime".to_string(),
        "/plan-feature \"Phase 1: Core\"".to_string(),
    ];
    let out = run_pairing(&cfg(&fx), &prompts, no_cancel()).await;
    assert!(out.error().is_none(), "{:?}", out.last);
    assert_eq!(out.sessions.len(), 2);
    assert!(!out.resume_fell_back);
    assert_eq!(out.sessions[0].session_id, out.sessions[1].session_id);
    assert!((out.cost_usd - 0.2).abs() < 1e-9);
    assert_eq!(out.num_turns, 6);
    let log = fx.calls();
    let first_id = log[0]["session_id"].as_str().unwrap();
    let argv1 = log[1]["argv"].as_array().unwrap();
    assert!(argv1
        .windows(2)
        .any(|w| w[0] == "--resume" && w[1] == first_id));
    assert!(fx.project.join(".agents/plans/phase-1.md").is_file());
}

#[tokio::test]
async fn unknown_resume_falls_back_to_a_fresh_session_once() {
    let fx =
        Fixture::new(Scenario::new().rule(Rule::new("/execute", Action::ResumeUnknown).times(1)));
    let prompts = vec![
        "/prime".to_string(),
        "/execute .agents/plans/phase-2.md".to_string(),
    ];
    let out = run_pairing(&cfg(&fx), &prompts, no_cancel()).await;
    assert!(out.error().is_none(), "{:?}", out.last);
    assert!(out.resume_fell_back);
    assert_eq!(out.sessions.len(), 3);
    assert!(out.sessions[1]
        .error
        .as_deref()
        .unwrap()
        .contains("no conversation"));
    assert_ne!(out.sessions[2].session_id, out.sessions[0].session_id);
    let log = fx.calls();
    assert!(!log[2]["argv"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--resume"));
    assert!(fx.project.join("src/phase_2.txt").is_file());
}

#[tokio::test]
async fn a_failed_first_command_stops_the_pairing() {
    let fail = Action::Fail {
        subtype: "error_max_turns".into(),
        is_error: true,
        message: "Reached maximum number of turns".into(),
        exit_code: None,
    };
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/prime", fail)));
    let prompts = vec!["/prime".to_string(), "/commit".to_string()];
    let out = run_pairing(&cfg(&fx), &prompts, no_cancel()).await;
    assert_eq!(out.sessions.len(), 1);
    assert!(matches!(
        out.error(),
        Some(SessionError::TurnBudgetExhausted { .. })
    ));
    assert_eq!(fx.calls().len(), 1);
}

async fn hang_and_check_group(
    cfg: AgentConfig,
    fx: &Fixture,
    cancel: watch::Receiver<bool>,
) -> SessionError {
    let out = run_session(&cfg, "/execute .agents/plans/phase-1.md", None, cancel).await;
    let log = fx.calls();
    let pgid = log[0]["pgid"].as_i64().unwrap() as i32;
    let pid = log[0]["pid"].as_i64().unwrap();
    let child = log[0]["child_pid"]
        .as_i64()
        .expect("the fake spawned a sleep");
    assert_eq!(pgid as i64, pid, "the agent leads its own process group");
    assert!(
        !process_running(pid) && !process_running(child),
        "no process of the group runs"
    );
    wait_until("the process group to be gone", || group_gone(pgid));
    out.error.expect("a hanging session is an error")
}

#[tokio::test]
async fn a_hanging_agent_is_killed_at_the_timeout_with_its_whole_group() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/execute", Action::Hang)));
    let cfg = AgentConfig {
        timeout: Duration::from_secs(2),
        kill_grace: Duration::from_secs(1),
        ..cfg(&fx)
    };
    let started = Instant::now();
    let err = hang_and_check_group(cfg, &fx, no_cancel()).await;
    assert_eq!(err, SessionError::Timeout { after_secs: 2 });
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// The hanging agent's silence never ends; the 3 s limit is long next to how fast even a
/// loaded machine starts it (it logs its start before its first line).
#[tokio::test]
async fn a_silent_agent_is_stopped_as_stalled() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/execute", Action::Hang)));
    let cfg = AgentConfig {
        stall: Duration::from_secs(3),
        ..cfg(&fx)
    };
    let err = hang_and_check_group(cfg, &fx, no_cancel()).await;
    assert_eq!(err, SessionError::Stalled { after_secs: 3 });
}

#[tokio::test]
async fn cancel_stops_the_session() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/execute", Action::Hang)));
    let (tx, rx) = watch::channel(false);
    let log = fx.log.clone();
    let canceller = std::thread::spawn(move || {
        wait_until("the fake to start", || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("child_pid\":"))
        });
        tx.send(true).unwrap();
        tx
    });
    let err = hang_and_check_group(cfg(&fx), &fx, rx).await;
    assert_eq!(err, SessionError::Cancelled);
    drop(canceller.join().unwrap());
}

/// After its result the CLI stays silent forever (the scripted silence is the controlled
/// quantity): the stall limit (3 s, generous for a loaded machine to start the CLI and
/// print its result) is shorter than the result grace (6 s), so a stall watchdog still
/// armed after the result would fire first and fail the session; it must not.
#[tokio::test]
async fn a_cli_that_lingers_after_its_result_is_stopped_and_the_result_counts() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/prime", Action::LingerAfterResult)));
    let cfg = AgentConfig {
        result_grace: Duration::from_secs(6),
        stall: Duration::from_secs(3),
        ..cfg(&fx)
    };
    let out = run_session(&cfg, "/prime", None, no_cancel()).await;
    assert_eq!(out.error, None, "{out:?}");
    assert!(out.text.contains("primed"));
    let pgid = fx.calls()[0]["pgid"].as_i64().unwrap() as i32;
    wait_until("the lingering CLI to be gone", || group_gone(pgid));
}

fn vm_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn fifty_megabytes_of_output_keep_memory_flat() {
    let fx = Fixture::new(Scenario::new().rule(Rule::new(
        "/execute",
        Action::BigOutput {
            bytes: 50 * 1024 * 1024,
            line_bytes: None,
        },
    )));
    let before = vm_kib("VmHWM:");
    let out = run_session(
        &cfg(&fx),
        "/execute .agents/plans/phase-1.md",
        None,
        no_cancel(),
    )
    .await;
    let after = vm_kib("VmHWM:");
    assert_eq!(out.error, None, "{:?}", out.stderr_tail);
    assert!(out.text.contains("phase 1"));
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("peak memory growth while reading 50 MB: {grown_mib} MiB");
    assert!(
        grown_mib < 40,
        "peak memory grew by {grown_mib} MiB while reading 50 MB"
    );
}

#[tokio::test]
async fn oversized_and_garbage_lines_are_skipped_not_fatal() {
    let fx = Fixture::new(
        Scenario::new()
            .rule(Rule::new(
                "/execute",
                Action::BigOutput {
                    bytes: 5 * 1024 * 1024,
                    line_bytes: Some(2 * 1024 * 1024),
                },
            ))
            .rule(Rule::new("/prime", Action::Garbage)),
    );
    let out = run_session(
        &cfg(&fx),
        "/execute .agents/plans/phase-1.md",
        None,
        no_cancel(),
    )
    .await;
    assert_eq!(out.error, None);
    assert!(out.malformed_lines >= 3, "{}", out.malformed_lines);
    let out = run_session(&cfg(&fx), "/prime", None, no_cancel()).await;
    assert_eq!(out.error, None, "{out:?}");
    assert!(out.malformed_lines >= 5, "{}", out.malformed_lines);
    assert!(out.session_id.is_some());
}

#[tokio::test]
async fn anthropic_api_key_is_removed_unless_allowed() {
    let fx = Fixture::new(Scenario::new());
    let mut cfg = cfg(&fx);
    cfg.env.push(("ANTHROPIC_API_KEY".into(), "sk-test".into()));
    cfg.env.push(("CLAUDECODE".into(), "1".into()));
    assert_eq!(
        run_session(&cfg, "/prime", None, no_cancel()).await.error,
        None
    );
    cfg.allow_api_key = true;
    assert_eq!(
        run_session(&cfg, "/prime", None, no_cancel()).await.error,
        None
    );
    let log = fx.calls();
    assert_eq!(log[0]["api_key_present"], false);
    assert_eq!(log[1]["api_key_present"], true);
    assert_eq!(log[0]["claudecode_present"], false);
    assert_eq!(log[1]["claudecode_present"], false);
}

#[tokio::test]
async fn scripted_failures_are_classified() {
    let fail = |subtype: &str, exit_code| Action::Fail {
        subtype: subtype.into(),
        is_error: true,
        message: "vitest: 3 tests failed".into(),
        exit_code,
    };
    let fx = Fixture::new(
        Scenario::new()
            .rule(Rule::new(
                "/a",
                Action::Exit {
                    code: 3,
                    stderr: "boom: disk full\n".into(),
                },
            ))
            .rule(Rule::new("/b", fail("success", Some(0))))
            .rule(Rule::new("/c", Action::NotLoggedIn))
            .rule(Rule::new("/d", Action::UnknownCommand))
            .rule(Rule::new(
                "/e",
                Action::UsageLimit {
                    resets_in_secs: Some(3600),
                },
            ))
            .rule(Rule::new("/f", fail("error_during_execution", None)).times(1)),
    );
    fx.add_commands(&["a", "b", "c", "d", "e", "f"]);
    let cfg = cfg(&fx);
    let run = |p: &'static str| run_session(&cfg, p, None, no_cancel());

    let out = run("/a").await;
    assert_eq!(
        out.error,
        Some(SessionError::NonZeroExit {
            code: Some(3),
            signal: None
        })
    );
    assert!(out.stderr_tail.contains("boom: disk full"));

    let out = run("/b").await;
    assert_eq!(
        out.error,
        Some(SessionError::ResultError {
            subtype: "success".into(),
            messages: vec!["vitest: 3 tests failed".into()]
        })
    );
    assert!(out.error.unwrap().error_text().contains("tests failed"));

    assert!(matches!(
        run("/c").await.error,
        Some(SessionError::NotLoggedIn { .. })
    ));
    assert_eq!(
        run("/d").await.error,
        Some(SessionError::UnknownCommand { name: "d".into() })
    );

    let now = chrono::Utc::now().timestamp();
    match run("/e").await.error {
        Some(SessionError::UsageLimit { resets_at: Some(t) }) => {
            assert!((t - now - 3600).abs() < 60)
        }
        other => panic!("usage limit: {other:?}"),
    }

    // `times: 1`: the first call fails, the second succeeds.
    assert!(matches!(
        run("/f").await.error,
        Some(SessionError::ResultError { .. })
    ));
    assert_eq!(run("/f").await.error, None);
}

#[tokio::test]
async fn a_missing_binary_is_an_error_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AgentConfig::new(dir.path().join("no-such-claude"), dir.path());
    // The command file exists: what is missing is the CLI itself.
    std::fs::create_dir_all(dir.path().join(".claude/commands")).unwrap();
    std::fs::write(dir.path().join(".claude/commands/prime.md"), "# /prime\n").unwrap();
    let out = run_session(&cfg, "/prime", None, no_cancel()).await;
    assert!(out.error.is_some());
    assert!(out.stderr_tail.contains("no-such-claude"));
}

#[test]
fn missing_commands_checks_project_then_home() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("p");
    let home = dir.path().join("h");
    std::fs::create_dir_all(project.join(".claude/commands")).unwrap();
    std::fs::create_dir_all(home.join(".claude/commands")).unwrap();
    std::fs::write(project.join(".claude/commands/prime.md"), "x").unwrap();
    std::fs::write(home.join(".claude/commands/commit.md"), "x").unwrap();
    let names = ["prime", "commit", "execute"];
    assert_eq!(
        missing_commands(&project, Some(&home), &names),
        vec!["execute"]
    );
    assert_eq!(
        missing_commands(&project, None, &names),
        vec!["commit", "execute"]
    );
}

#[test]
fn git_checkpoint_and_rollback_on_a_real_repo() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    assert_eq!(git::head(repo), None);
    assert!(git::ensure_repo(repo).unwrap());
    assert!(!git::ensure_repo(repo).unwrap());
    assert_eq!(support::commit_count(repo), 1);
    assert!(!support::has_uncommitted(repo));

    let now = chrono::DateTime::parse_from_rfc3339("2026-02-19T11:05:00.123Z")
        .unwrap()
        .to_utc();
    let tag = git::create_checkpoint(repo, 2, now).unwrap();
    assert_eq!(tag, "piv-checkpoint/phase-2-2026-02-19T110500Z");
    assert_eq!(
        git::create_checkpoint(repo, 2, now).unwrap(),
        format!("{tag}-2")
    );
    assert_eq!(
        git::create_checkpoint(repo, 2, now).unwrap(),
        format!("{tag}-3")
    );

    std::fs::write(repo.join("a.txt"), "changed\n").unwrap();
    std::fs::create_dir_all(repo.join("new/dir")).unwrap();
    std::fs::write(repo.join("new/dir/b.txt"), "untracked\n").unwrap();
    assert!(support::has_uncommitted(repo));
    git::rollback(repo, &tag).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.join("a.txt")).unwrap(),
        "one\n"
    );
    assert!(!repo.join("new").exists());
    assert!(!support::has_uncommitted(repo));

    let err = git::rollback(repo, "piv-checkpoint/no-such-tag")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reset") && err.contains("no-such-tag"),
        "{err}"
    );
}

#[test]
fn checkpoint_in_a_repo_without_commits_makes_one_first() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(repo)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(repo.join("x.txt"), "x").unwrap();
    let now = chrono::Utc::now();
    let tag = git::create_checkpoint(repo, 1, now).unwrap();
    assert!(tag.starts_with("piv-checkpoint/phase-1-"));
    assert!(!tag.contains(':') && !tag.contains('.'));
    assert_eq!(support::commit_count(repo), 1);
}

#[tokio::test]
async fn fake_commit_commits_the_project() {
    let fx = Fixture::new(Scenario::new());
    git::ensure_repo(&fx.project).unwrap();
    let cfg = cfg(&fx);
    for p in [
        "/plan-feature \"Phase 1: Core\"",
        "/execute .agents/plans/phase-1.md",
        "/commit",
    ] {
        let out = run_session(&cfg, p, None, no_cancel()).await;
        assert_eq!(out.error, None, "{p}: {out:?}");
    }
    assert_eq!(support::commit_count(&fx.project), 2);
    assert!(!support::has_uncommitted(&fx.project));
}
