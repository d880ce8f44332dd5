//! Steering another instance from the chat, end to end (issue 13): the bot owner routes
//! `/pause b`, `/resume b` and `/go b` to instance b through b's signal queue, and b acts
//! on each; and a `/go` after a finished run runs the phases added to the manifest since.
//! Real `piv run` processes on one bot token, the Bot API stand-in, the scripted claude.

use std::process::Child;
use std::time::Instant;

use piv_testkit::bot_api::BotApiStandIn;
use serde_yaml::Value as Yaml;

use crate::pause_visible::{held_execute, release_file, status_json, wait_held};
use crate::support::telegram_run::{
    output_of, replies_after, slow, start_with_telegram, state_of, Kill,
};
use crate::support::*;

const TOKEN: &str = "777014:remote-control-SECRET";
const CHAT: i64 = 1414;

fn start(sb: &Sandbox, api: &BotApiStandIn, prefix: &str) -> Child {
    // Telegram on and no --exit-when-done: both stay up after their phases.
    start_with_telegram(sb, api, (TOKEN, CHAT), prefix, &[], &[])
}

/// The prefix of the instance marked as bot owner in the registry.
fn owner(sb: &Sandbox) -> Option<String> {
    let text = std::fs::read_to_string(sb.home.join("registry.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["instances"]
        .as_array()?
        .iter()
        .find(|i| i["isBotOwner"] == true)
        .and_then(|i| i["prefix"].as_str().map(String::from))
}

fn registered(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.home.join("registry.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["instances"].as_array().map(|a| a.len()))
        .unwrap_or(0)
}

/// Sends `command` to the chat and waits for the owner's confirmation that it was routed.
fn route(api: &BotApiStandIn, command: &str, confirmation: &str, owner_sb: &Sandbox) {
    let t = Instant::now();
    api.inject_message(CHAT, command);
    assert!(
        wait_until(DEADLINE, || !replies_after(api, t, confirmation).is_empty()),
        "{command}: no {confirmation:?} in the chat\n{:#?}\n{}",
        api.sent_messages(),
        output_of(owner_sb, "a")
    );
}

fn wait_state(sb: &Sandbox, prefix: &str, want: &str) {
    assert!(
        wait_until(DEADLINE, || state_of(sb).as_deref() == Some(want)),
        "{prefix} never became {want}: {:?}\n{}",
        state_of(sb),
        output_of(sb, prefix)
    );
}

/// Adds phase `n` (not started) to the manifest, written atomically as an editor or a
/// slash command would.
fn add_phase(sb: &Sandbox, n: u64) {
    let mut manifest = sb.manifest();
    let phases = manifest["phases"].as_mapping_mut().expect("phases");
    let phase: Yaml = serde_yaml::from_str(&format!(
        "plan: not_started\nexecution: not_started\nvalidation: not_run\nname: Added later {n}\n"
    ))
    .unwrap();
    phases.insert(Yaml::from(n), phase);
    let temp = sb.project.join(".agents/.manifest.yaml.edit");
    std::fs::write(&temp, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    std::fs::rename(&temp, sb.manifest_path()).unwrap();
}

fn phase_complete(sb: &Sandbox, n: u64) -> bool {
    let m = sb.manifest();
    let p = phase(&m, n);
    p["execution"] == "complete" && p["validation"] == "pass"
}

/// a owns the bot; b's execute is held. `/pause b` (routed) → b pauses after the step;
/// `/resume b` (routed) → b runs to its end; a phase is added to b's manifest and
/// `/go b` (routed) → b runs it. a is never steered.
#[test]
fn remote_pause_resume_and_go_are_routed_and_acted_on() {
    let api = BotApiStandIn::start(TOKEN);
    let a = Sandbox::new("a", &ready_manifest(1));
    let b = Sandbox::sharing_home(&a, "b", &ready_manifest(1));
    a.scenario(slow(100));
    let release = release_file(&b);
    b.scenario(held_execute(&release));
    let mut procs = Kill(vec![start(&a, &api, "a")]);
    assert!(
        wait_until(DEADLINE, || owner(&a).as_deref() == Some("a")),
        "a owns the bot\n{}",
        output_of(&a, "a")
    );
    procs.0.push(start(&b, &api, "b"));
    assert!(wait_until(DEADLINE, || registered(&a) == 2), "both up");
    wait_held(&b, &output_of(&b, "b"));

    // /pause b: routed; b says which step it waits for, and pauses once it ends.
    let t = Instant::now();
    route(&api, "/pause b", "Sent /pause signal to [b]", &a);
    assert!(
        wait_until(DEADLINE, || replies_after(
            &api,
            t,
            "⏸ Pausing after execute, running "
        )
        .iter()
        .any(|m| m.starts_with("[b] "))),
        "b's answer names the step\n{:#?}",
        api.sent_messages()
    );
    assert!(
        wait_until(DEADLINE, || status_json(&b)["state"] == "pausing"),
        "{}",
        output_of(&b, "b")
    );
    std::fs::write(&release, "go on").unwrap();
    wait_state(&b, "b", "paused");
    let validations = calls_starting(&b, "/validate").len();

    // /resume b: routed; b goes on and finishes its phase.
    route(&api, "/resume b", "Sent /resume signal to [b]", &a);
    assert!(
        wait_until(DEADLINE, || phase_complete(&b, 1)
            && state_of(&b).as_deref() == Some("done")),
        "b resumes and finishes\n{}",
        output_of(&b, "b")
    );
    assert!(calls_starting(&b, "/validate").len() > validations);
    assert!(procs.0[1].try_wait().unwrap().is_none(), "b stays up");

    // A phase is added; /go b runs it.
    let plans_before = calls_starting(&b, "/plan-feature").len();
    add_phase(&b, 2);
    route(&api, "/go b", "Sent /go signal to [b]", &a);
    assert!(
        wait_until(DEADLINE, || phase_complete(&b, 2)
            && state_of(&b).as_deref() == Some("done")),
        "b runs the added phase\n{}",
        output_of(&b, "b")
    );
    assert_eq!(
        calls_starting(&b, "/plan-feature").len(),
        plans_before + 1,
        "one plan, for the added phase"
    );

    // a was never steered: it did not pause or run anything again.
    let a_out = std::fs::read_to_string(a.root.path().join("a.out")).unwrap();
    assert!(!a_out.contains("Pausing"), "{a_out}");
    assert_eq!(owner(&a).as_deref(), Some("a"));
}

/// Without Telegram routing: a finished run that stays up (Telegram on) runs a phase
/// added to its manifest on `piv signal <p> go`.
#[test]
fn a_later_go_signal_runs_phases_added_to_the_manifest() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("later", &ready_manifest(1));
    let _run = Kill(vec![start(&sb, &api, "later")]);
    assert!(
        wait_until(DEADLINE, || phase_complete(&sb, 1)
            && state_of(&sb).as_deref() == Some("done")),
        "{}",
        output_of(&sb, "later")
    );
    let plans_before = calls_starting(&sb, "/plan-feature").len();
    add_phase(&sb, 2);
    let out = wait_output(
        sb.piv(&["signal", "later", "go"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        DEADLINE,
    );
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert!(
        wait_until(DEADLINE, || phase_complete(&sb, 2)
            && state_of(&sb).as_deref() == Some("done")),
        "the added phase runs\n{}",
        output_of(&sb, "later")
    );
    assert!(calls_starting(&sb, "/plan-feature").len() > plans_before);
}
