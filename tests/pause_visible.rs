//! A pause is visible at once (issue 13, item 7): while the step it waits for still
//! runs, `piv status`, `piv status --json` (`state: pausing`, the step, since when), the
//! control reply and the chat's `/status` say that a pause is pending and which step it
//! waits for; once the step ends the state is `paused`. Real `piv run` processes, a
//! scripted claude whose execute session is held until the test creates a file.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use crate::support::telegram_run::{output_of, replies_after, start_with_telegram, Kill};
use crate::support::*;

const TOKEN: &str = "777013:pause-visible-SECRET";
const CHAT: i64 = 1313;

/// A scenario whose `/execute` session waits until `release` exists.
pub(crate) fn held_execute(release: &Path) -> Scenario {
    Scenario::new().rule(Rule::new(
        "/execute",
        Action::WaitForFile {
            path: release.display().to_string(),
        },
    ))
}

/// The file outside the project that releases the held session.
pub(crate) fn release_file(sb: &Sandbox) -> PathBuf {
    sb.root.path().join("release-execute")
}

pub(crate) fn held_sessions(sb: &Sandbox) -> usize {
    sb.claude_calls()
        .iter()
        .filter(|c| c["action"] == "wait_for_file")
        .count()
}

pub(crate) fn wait_held(sb: &Sandbox, what: &str) {
    assert!(
        wait_until(DEADLINE, || held_sessions(sb) == 1),
        "the execute session is never held\n{what}"
    );
}

pub(crate) fn piv_out(sb: &Sandbox, args: &[&str]) -> Output {
    let child = sb
        .piv(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn piv");
    wait_output(child, DEADLINE)
}

/// `piv status --json` of the sandbox's project.
pub(crate) fn status_json(sb: &Sandbox) -> Value {
    let out = piv_out(sb, &["status", "--json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn status_table(sb: &Sandbox) -> String {
    let out = piv_out(sb, &["status"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    stdout
}

fn calls_of(sb: &Sandbox, command: &str) -> usize {
    calls_starting(sb, command).len()
}

/// `piv signal <p> pause` while execute runs: `pausing` with the step and since when,
/// in the JSON, the table and the run's reply; the step is not cut short; once it ends,
/// `paused` and no further step starts; `resume` runs on to done.
#[test]
fn a_signalled_pause_is_pausing_until_the_step_ends_then_paused() {
    let sb = Sandbox::new("held", &ready_manifest(1));
    let release = release_file(&sb);
    sb.scenario(held_execute(&release));
    let mut run = Kill(vec![sb.spawn_run(&[])]);
    wait_held(&sb, &sb.dump());

    let before = status_json(&sb);
    assert_eq!(before["state"], "running", "{before}");
    assert_eq!(before["step"], "execute", "{before}");
    assert!(before["stepStartedAt"].is_string(), "{before}");
    assert!(before["pauseRequestedAt"].is_null(), "{before}");

    let out = piv_out(&sb, &["signal", "held", "pause"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    // The run's reply names the step it waits for.
    assert!(
        wait_until(DEADLINE, || sb
            .run_stdout()
            .contains("⏸ Pausing after execute, running ")),
        "the reply names the step\n{}",
        sb.dump()
    );

    // Visible at once, while the step still runs.
    let pausing = status_json(&sb);
    assert_eq!(pausing["state"], "pausing", "{pausing}");
    assert_eq!(pausing["step"], "execute", "{pausing}");
    assert_eq!(pausing["phase"], 1, "{pausing}");
    assert_eq!(
        pausing["stepStartedAt"], before["stepStartedAt"],
        "the same session: {pausing}"
    );
    assert!(pausing["stepRunningSecs"].is_u64(), "{pausing}");
    assert!(pausing["pauseRequestedAt"].is_string(), "{pausing}");
    assert!(
        pausing["pauseRequestedBy"]
            .as_str()
            .is_some_and(|by| by.starts_with("signal from")),
        "{pausing}"
    );
    let table = status_table(&sb);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains(" pausing "), "{table}");
    assert!(
        table.contains("[held] pausing after execute, running "),
        "{table}"
    );
    assert_eq!(held_sessions(&sb), 1, "the step is not cut short");

    // The step ends: paused, and no further step starts.
    let validations = calls_of(&sb, "/validate");
    std::fs::write(&release, "go on").unwrap();
    assert!(
        wait_until(DEADLINE, || status_json(&sb)["state"] == "paused"),
        "paused once the step ended\n{}",
        sb.dump()
    );
    let paused = status_json(&sb);
    assert!(paused["step"].is_null(), "{paused}");
    assert!(paused["stepStartedAt"].is_null(), "{paused}");
    assert!(paused["pauseRequestedAt"].is_string(), "{paused}");
    assert!(!status_table(&sb).contains("pausing"));
    assert_eq!(
        calls_of(&sb, "/validate"),
        validations,
        "held before validate"
    );

    let out = piv_out(&sb, &["signal", "held", "resume"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let status = wait_exit(&sb, &mut run.0[0]);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(sb.manifest()["next_action"]["command"], "done");
}

/// A resume while the pause still waits for its step calls it off: `running` again at
/// once, and the run never holds.
#[test]
fn a_resume_before_the_step_ends_calls_the_pause_off() {
    let sb = Sandbox::new("undo", &ready_manifest(1));
    let release = release_file(&sb);
    sb.scenario(held_execute(&release));
    let mut run = Kill(vec![sb.spawn_run(&[])]);
    wait_held(&sb, &sb.dump());
    let out = piv_out(&sb, &["signal", "undo", "pause"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        wait_until(DEADLINE, || status_json(&sb)["state"] == "pausing"),
        "{}",
        sb.dump()
    );
    let out = piv_out(&sb, &["signal", "undo", "resume"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        wait_until(DEADLINE, || status_json(&sb)["state"] == "running"),
        "{}",
        sb.dump()
    );
    let running = status_json(&sb);
    assert!(running["pauseRequestedAt"].is_null(), "{running}");
    std::fs::write(&release, "go on").unwrap();
    let status = wait_exit(&sb, &mut run.0[0]);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert!(!sb.run_stdout().contains("Paused ("), "never held");
}

/// `/pause` in the chat while execute runs: the reply names the step, `/status` shows
/// the pending pause; once the step ends `/status` says paused.
#[test]
fn the_chat_shows_the_pending_pause_and_then_paused() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("chat", &ready_manifest(1));
    let release = release_file(&sb);
    sb.scenario(held_execute(&release));
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, CHAT),
        "chat",
        &["--exit-when-done"],
        &[],
    )]);
    wait_held(&sb, &output_of(&sb, "chat"));

    let t = Instant::now();
    api.inject_message(CHAT, "/pause");
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t,
            "⏸ Pausing after execute, running "
        )
        .is_empty()),
        "the reply names the step\n{}",
        output_of(&sb, "chat")
    );

    let t = Instant::now();
    api.inject_message(CHAT, "/status");
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t,
            "<b>State:</b> pausing after execute, running "
        )
        .is_empty()),
        "/status shows the pending pause\n{:#?}",
        api.sent_messages()
    );

    std::fs::write(&release, "go on").unwrap();
    assert!(
        wait_until(DEADLINE, || status_json(&sb)["state"] == "paused"),
        "{}",
        output_of(&sb, "chat")
    );
    let t = Instant::now();
    api.inject_message(CHAT, "/status");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, t, "<b>State:</b> paused")
            .is_empty()),
        "/status shows paused\n{:#?}",
        api.sent_messages()
    );
}
