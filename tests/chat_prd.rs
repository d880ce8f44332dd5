//! The PRD relay, end to end (issue 14 item 4, behaviour.md §9.1): `/create_prd` opens a
//! relay for a project, free text typed in its topic (or, in a chat without topics, while
//! exactly one relay is open) goes to a Claude session running `/create-prd` — the first
//! message starts it, later ones `--resume` it — and the answers come back in the chat;
//! `/end_prd` closes it. Real `piv run` processes, the scripted claude, the Bot API
//! stand-in.

use std::time::Instant;

use piv_testkit::bot_api::{BotApiStandIn, ChatSetup, SentMessage};
use piv_testkit::fake_claude::{Action, Rule};
use serde_json::Value;

use crate::pause_visible::{held_execute, release_file, wait_held};

use crate::support::telegram_run::{done_in_forum, output_of, start_with_telegram, state_of, Kill};
use crate::support::*;

const TOKEN: &str = "777021:chat-prd-SECRET";
const FORUM: i64 = -1_002_000_000_021;
const PRIVATE: i64 = 4_242_021;

const STARTED: &str = "PRD creation started. Send your messages and I'll relay them to Claude.";
const ALREADY_OPEN: &str = "PRD session already in progress. Send /end_prd to stop it.";
const NOT_OPEN: &str = "No active PRD session.";
const ENDED: &str = "PRD session ended.";
const RELAYING: &str = "Relaying to Claude...";
const FIRST_ANSWER: &str = "Let's write the PRD. You said: a todo app";

/// A project as a PIV project has it: with the `/create-prd` command.
fn project(name: &str, home_of: Option<&Sandbox>) -> Sandbox {
    let sb = match home_of {
        Some(other) => Sandbox::sharing_home(other, name, &ready_manifest(1)),
        None => Sandbox::new(name, &ready_manifest(1)),
    };
    std::fs::write(
        sb.project.join(".claude/commands/create-prd.md"),
        "# /create-prd\n",
    )
    .unwrap();
    sb
}

/// The first message sent since `t` that contains `needle`.
fn wait_sent(api: &BotApiStandIn, t: Instant, needle: &str, why: &str) -> SentMessage {
    api.wait_for_sent(|m| m.at >= t && m.text.contains(needle), DEADLINE)
        .unwrap_or_else(|| {
            panic!(
                "{why}: no message with {needle:?}\n{:#?}",
                api.sent_messages()
            )
        })
}

/// The scripted claude's calls whose prompt is a PRD turn (not a phase's session).
fn relay_calls(sb: &Sandbox, prompts: &[&str]) -> Vec<Value> {
    sb.claude_calls()
        .into_iter()
        .filter(|c| {
            let p = c["prompt"].as_str().unwrap_or("");
            prompts.iter().any(|want| p.starts_with(want))
        })
        .collect()
}

fn argv(call: &Value) -> Vec<String> {
    call["argv"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// In a project's forum topic: text before `/create_prd` is ignored; `/create_prd` opens
/// the relay (twice: already open); the first message starts `/create-prd` and its answer
/// comes back in the topic; the second resumes the same session; `/go` is refused while
/// the relay is open; `/end_prd` ends it, after which text is ignored again.
#[test]
fn a_prd_conversation_in_a_projects_topic() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let sb = project("prd", None);
    let (_run, topic) = done_in_forum(&sb, &api, (TOKEN, FORUM), "prd");

    // Before any relay: ignored (the updates are handled in order, so once /create_prd's
    // answer is out, this message was seen and dropped).
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "too early for a PRD");
    api.inject_topic_message(FORUM, topic, "/create_prd");
    let started = wait_sent(&api, t, STARTED, "the relay opens");
    assert_eq!(started.thread_id, Some(topic), "{started:?}");
    assert!(started.text.contains("Send /end_prd when finished."));

    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "/create_prd");
    let again = wait_sent(&api, t, ALREADY_OPEN, "a second /create_prd");
    assert_eq!(again.thread_id, Some(topic));

    // The first message starts the /create-prd session; its answer lands in the topic.
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "a todo app");
    assert_eq!(
        wait_sent(&api, t, RELAYING, "relaying").thread_id,
        Some(topic)
    );
    let answer = wait_sent(&api, t, FIRST_ANSWER, "Claude's first answer");
    assert_eq!(answer.thread_id, Some(topic), "{answer:?}");

    // The second message resumes the same session.
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "for me & my family");
    let second = wait_sent(
        &api,
        t,
        "Done: for me &amp; my family",
        "the resumed answer",
    );
    assert_eq!(second.thread_id, Some(topic));
    let calls = relay_calls(&sb, &["/create-prd", "for me & my family", "too early"]);
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0]["prompt"], "/create-prd a todo app");
    assert!(!argv(&calls[0]).contains(&"--resume".to_string()));
    let id = calls[0]["session_id"].as_str().expect("a session id");
    let resumed = argv(&calls[1]);
    let at = resumed
        .iter()
        .position(|a| a == "--resume")
        .expect("--resume");
    assert_eq!(resumed[at + 1], id, "{resumed:?}");
    assert!(resumed.contains(&"stream-json".to_string()), "{resumed:?}");
    // The relay's turns are in the cost ledger, like any session.
    let ledger = || {
        files_starting_with(&piv::io::ledger_file::ledger_dir(&sb.home), "")
            .into_iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
            .collect::<String>()
    };
    assert!(
        wait_until(DEADLINE, || ledger().matches("\"create-prd\"").count() == 2),
        "{}",
        ledger()
    );

    // One agent per project: no /go while the relay is open.
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "/go");
    wait_sent(&api, t, "Send /end_prd first", "/go refused");

    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "/end_prd");
    assert_eq!(
        wait_sent(&api, t, ENDED, "the relay ends").thread_id,
        Some(topic)
    );
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "too late for a PRD");
    api.inject_topic_message(FORUM, topic, "/end_prd");
    wait_sent(&api, t, NOT_OPEN, "nothing left to end");
    assert!(
        relay_calls(&sb, &["too early", "too late"]).is_empty(),
        "text outside the relay reached claude"
    );
    // The command menu lists the relay's commands.
    let menu = api.commands_set().last().cloned().unwrap_or_default();
    for c in ["create_prd", "end_prd"] {
        assert!(menu.iter().any(|(name, _)| name == c), "{c}: {menu:?}");
    }
    let relaying: usize = api
        .sent_messages()
        .iter()
        .map(|m| m.text.matches(RELAYING).count())
        .sum();
    assert_eq!(relaying, 2, "one relaying note per relayed message");
}

/// In a private chat (no topics) with two projects: `/create_prd b` opens b's relay; free
/// text then goes to b, the only open relay, and b's answer comes back tagged `[b]`; b
/// refuses `/go b` while its relay is open, visibly at the default notify level.
#[test]
fn a_prd_conversation_in_a_private_chat_with_a_prefix() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(PRIVATE, ChatSetup::Private);
    let a = project("a", None);
    let b = project("b", Some(&a));
    let mut runs = Kill(vec![start_with_telegram(
        &a,
        &api,
        (TOKEN, PRIVATE),
        "a",
        &[],
        &[],
    )]);
    assert!(
        wait_until(DEADLINE, || state_of(&a).as_deref() == Some("done")),
        "{}",
        output_of(&a, "a")
    );
    runs.0.push(start_with_telegram(
        &b,
        &api,
        (TOKEN, PRIVATE),
        "b",
        &[],
        // The relay's messages, and its refusal of `/go`, are sent at the default level.
        &[("PIV_NOTIFY", "normal")],
    ));
    assert!(
        wait_until(DEADLINE, || state_of(&b).as_deref() == Some("done")),
        "{}",
        output_of(&b, "b")
    );

    // Without a prefix, with two projects: which one?
    let t = Instant::now();
    api.inject_message(PRIVATE, "/create_prd");
    wait_sent(&api, t, "/create_prd &lt;prefix&gt;", "ask which");

    let t = Instant::now();
    api.inject_message(PRIVATE, "/create_prd b");
    let started = wait_sent(&api, t, STARTED, "b's relay opens");
    assert!(started.text.starts_with("[b] "), "{started:?}");

    let t = Instant::now();
    api.inject_message(PRIVATE, "a todo app");
    let answer = wait_sent(&api, t, FIRST_ANSWER, "b's answer");
    assert!(answer.text.starts_with("[b] "), "{answer:?}");
    assert_eq!(relay_calls(&b, &["/create-prd"]).len(), 1);
    assert!(relay_calls(&a, &["/create-prd", "a todo app"]).is_empty());

    // `/go b` reaches b through its signal queue, and b refuses it while its relay is open.
    let t = Instant::now();
    api.inject_message(PRIVATE, "/go b");
    let refused = wait_sent(&api, t, "Send /end_prd first", "b refuses /go");
    assert!(refused.text.starts_with("[b] "), "{refused:?}");

    let t = Instant::now();
    api.inject_message(PRIVATE, "/end_prd b");
    let ended = wait_sent(&api, t, ENDED, "b's relay ends");
    assert!(ended.text.starts_with("[b] "), "{ended:?}");
}

/// One agent per project: `/create_prd` is refused while a step's session runs; once the
/// run is done it opens, and a turn that fails is reported as a relay error (the relay
/// stays open for the next message).
#[test]
fn no_relay_beside_a_running_step_and_a_failed_turn_is_reported() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(PRIVATE, ChatSetup::Private);
    let sb = project("held", None);
    let release = release_file(&sb);
    sb.scenario(held_execute(&release).rule(Rule::new(
        "/create-prd",
        Action::Fail {
            subtype: "error_during_execution".into(),
            is_error: true,
            message: "the model gave up".into(),
            exit_code: None,
        },
    )));
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, PRIVATE),
        "held",
        &[],
        &[],
    )]);
    wait_held(&sb, &output_of(&sb, "held"));

    let t = Instant::now();
    api.inject_message(PRIVATE, "/create_prd");
    wait_sent(
        &api,
        t,
        "A step is running in this project",
        "refused beside a step",
    );
    // Refused means not opened: text is still ignored.
    assert!(!sb.project.join(".agents/prd-relay.json").exists());

    std::fs::write(&release, "go on").unwrap();
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("done")),
        "{}",
        output_of(&sb, "held")
    );
    let t = Instant::now();
    api.inject_message(PRIVATE, "/create_prd");
    wait_sent(&api, t, STARTED, "opens once the run is done");
    assert!(sb.project.join(".agents/prd-relay.json").exists());

    let t = Instant::now();
    api.inject_message(PRIVATE, "a todo app");
    let error = wait_sent(&api, t, "⚠️ PRD relay error: ", "the failed turn");
    assert!(error.text.contains("the model gave up"), "{error:?}");
    assert!(!error.text.contains("SECRET"), "{error:?}");

    let t = Instant::now();
    api.inject_message(PRIVATE, "/end_prd");
    wait_sent(&api, t, ENDED, "ends");
    assert!(
        wait_until(DEADLINE, || !sb
            .project
            .join(".agents/prd-relay.json")
            .exists()),
        "the open mark is removed"
    );
}
