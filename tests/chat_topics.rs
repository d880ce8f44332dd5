//! A forum topic per project, end to end (issue 14): real `piv run` processes on one bot
//! token in a forum supergroup of the Bot API stand-in. Each instance gets one topic and
//! every one of its notifications lands there, untagged; `/pause` typed in a project's
//! topic pauses that project; a deleted topic is recreated; a restart and a takeover
//! reuse the topics; without topics (`PIV_TELEGRAM_TOPICS=off`, or no right to manage
//! them) messages stay in the chat, tagged.

use std::process::Child;
use std::time::Instant;

use piv_testkit::bot_api::{BotApiStandIn, ChatSetup, SentMessage, TopicInfo};

use crate::pause_visible::{held_execute, release_file, status_json, wait_held};
use crate::support::telegram_run::{output_of, slow, start_with_telegram, state_of, Kill};
use crate::support::*;

const TOKEN: &str = "777015:chat-topics-SECRET";
const FORUM: i64 = -1_002_000_000_015;

fn start(sb: &Sandbox, api: &BotApiStandIn, prefix: &str, env: &[(&str, &str)]) -> Child {
    start_with_telegram(sb, api, (TOKEN, FORUM), prefix, &[], env)
}

fn owner(sb: &Sandbox) -> Option<String> {
    let text = std::fs::read_to_string(sb.home.join("registry.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["instances"]
        .as_array()?
        .iter()
        .find(|i| i["isBotOwner"] == true)
        .and_then(|i| i["prefix"].as_str().map(String::from))
}

fn live_topic(api: &BotApiStandIn, name: &str) -> Option<TopicInfo> {
    api.topics()
        .into_iter()
        .find(|t| t.chat_id == FORUM && t.name == name && !t.deleted)
}

fn sent_by(api: &BotApiStandIn, pid: u32) -> Vec<SentMessage> {
    api.sent_messages()
        .into_iter()
        .filter(|m| m.pid == Some(pid))
        .collect()
}

/// Two instances, one topic each, every notification in its own topic; `/pause` in b's
/// topic pauses b; b's deleted topic is recreated; b restarted and a killed (b takes
/// over) reuse the topics, and `/status` in b's topic then answers about b.
#[test]
fn each_project_talks_in_its_own_topic() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let a = Sandbox::new("a", &ready_manifest(1));
    let b = Sandbox::sharing_home(&a, "b", &ready_manifest(2));
    a.scenario(slow(50));
    let release = release_file(&b);
    b.scenario(held_execute(&release));
    let mut procs = Kill(vec![start(&a, &api, "a", &[])]);
    assert!(
        wait_until(DEADLINE, || owner(&a).as_deref() == Some("a")),
        "a owns the bot\n{}",
        output_of(&a, "a")
    );
    procs.0.push(start(&b, &api, "b", &[]));
    wait_held(&b, &output_of(&b, "b"));
    let (pid_a, pid_b) = (procs.0[0].id(), procs.0[1].id());

    // One topic each, created once.
    assert!(
        wait_until(DEADLINE, || live_topic(&api, "a").is_some()
            && live_topic(&api, "b").is_some()),
        "two topics\n{:#?}\n{}",
        api.topics(),
        output_of(&b, "b")
    );
    let (topic_a, topic_b) = (
        live_topic(&api, "a").unwrap().thread_id,
        live_topic(&api, "b").unwrap().thread_id,
    );
    assert_ne!(topic_a, topic_b);
    assert!(
        wait_until(DEADLINE, || !sent_by(&api, pid_b).is_empty()),
        "b says something\n{}",
        output_of(&b, "b")
    );
    // Every notification so far is in its project's topic, untagged (the topic names it).
    for (pid, topic, tag) in [(pid_a, topic_a, "[a] "), (pid_b, topic_b, "[b] ")] {
        let sent = sent_by(&api, pid);
        assert!(!sent.is_empty());
        for m in sent {
            assert_eq!(m.thread_id, Some(topic), "{m:?}");
            assert!(!m.text.starts_with(tag), "{m:?}");
        }
    }

    // /pause typed in b's topic (no prefix) pauses b; the answer comes back in b's topic.
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic_b, "/pause");
    let answer = api
        .wait_for_sent(
            |m| m.at >= t && m.text.contains("Sent /pause signal to [b]"),
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("no routed answer\n{:#?}", api.sent_messages()));
    assert_eq!(answer.thread_id, Some(topic_b));
    assert!(
        wait_until(DEADLINE, || status_json(&b)["state"] == "pausing"),
        "{}",
        output_of(&b, "b")
    );
    assert!(
        wait_until(DEADLINE, || status_json(&a)["state"] != "pausing"
            && state_of(&a).as_deref() != Some("paused")),
        "a is not paused"
    );

    // b's topic is deleted; b's next message goes into a new topic named b.
    assert!(api.delete_topic(FORUM, topic_b));
    std::fs::write(&release, "go on").unwrap();
    assert!(
        wait_until(DEADLINE, || live_topic(&api, "b").is_some()),
        "b's topic is recreated\n{:#?}\n{}",
        api.topics(),
        output_of(&b, "b")
    );
    let topic_b2 = live_topic(&api, "b").unwrap().thread_id;
    assert_ne!(topic_b2, topic_b);
    assert!(
        wait_until(DEADLINE, || sent_by(&api, pid_b)
            .iter()
            .any(|m| m.thread_id == Some(topic_b2))),
        "b's messages go to the new topic\n{:#?}",
        api.sent_messages()
    );
    assert!(
        api.rejected_sends()
            .iter()
            .any(|r| r.description.contains("message thread not found")),
        "the deleted topic was tried first"
    );
    assert!(
        wait_until(DEADLINE, || state_of(&b).as_deref() == Some("paused")),
        "{}",
        output_of(&b, "b")
    );

    // Restart b: its topic is reused (no new topic), its messages go there.
    let topics_before = api.topics().len();
    let mut old_b = procs.0.remove(1);
    let _ = old_b.kill();
    let _ = old_b.wait();
    procs.0.push(start(&b, &api, "b", &[]));
    let pid_b2 = procs.0[1].id();
    assert!(
        wait_until(DEADLINE, || !sent_by(&api, pid_b2).is_empty()),
        "the restarted b says something\n{}",
        output_of(&b, "b")
    );
    // Kill a: b takes the bot over and reads the topics from the same store.
    let mut old_a = procs.0.remove(0);
    let _ = old_a.kill();
    let _ = old_a.wait();
    assert!(
        wait_until(DEADLINE, || owner(&b).as_deref() == Some("b")),
        "b takes over\n{}",
        output_of(&b, "b")
    );
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic_b2, "/status");
    let status = api
        .wait_for_sent(
            |m| m.at >= t && m.pid == Some(pid_b2) && m.text.contains("PIV Orchestrator Status"),
            DEADLINE,
        )
        .unwrap_or_else(|| {
            panic!(
                "no status\n{:#?}\n{}",
                api.sent_messages(),
                output_of(&b, "b")
            )
        });
    assert_eq!(status.thread_id, Some(topic_b2), "{status:?}");
    assert!(status.text.starts_with("[b] "), "{status:?}");
    for m in sent_by(&api, pid_b2) {
        assert_eq!(
            m.thread_id,
            Some(topic_b2),
            "{m:?}\n{:#?}\n{}",
            api.topics(),
            output_of(&b, "b")
        );
    }
    assert_eq!(api.topics().len(), topics_before, "no topic made again");
}

/// `PIV_TELEGRAM_TOPICS=off` in a forum, and a bot without the right to manage topics:
/// no topic, messages in General tagged; the missing right is said once.
#[test]
fn without_topics_messages_stay_in_general_tagged() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let off = Sandbox::new("off", &ready_manifest(1));
    let out = {
        let child = start_with_telegram(
            &off,
            &api,
            (TOKEN, FORUM),
            "off",
            &["--exit-when-done"],
            &[("PIV_TELEGRAM_TOPICS", "off")],
        );
        wait_output(child, DEADLINE)
    };
    assert!(out.status.success(), "{}", output_of(&off, "off"));
    let sent = api.sent_messages();
    assert!(!sent.is_empty());
    assert!(sent
        .iter()
        .all(|m| m.thread_id.is_none() && m.text.starts_with("[off] ")));
    assert!(api.topics().is_empty());

    api.set_topic_rights(FORUM, false);
    let t = Instant::now();
    let norights = Sandbox::new("nr", &ready_manifest(1));
    let child = start_with_telegram(
        &norights,
        &api,
        (TOKEN, FORUM),
        "nr",
        &["--exit-when-done"],
        &[],
    );
    let out = wait_output(child, DEADLINE);
    assert!(out.status.success(), "{}", output_of(&norights, "nr"));
    let sent: Vec<SentMessage> = api
        .sent_messages()
        .into_iter()
        .filter(|m| m.at >= t)
        .collect();
    assert!(sent.len() > 1, "{sent:#?}");
    assert!(
        sent.iter()
            .all(|m| m.thread_id.is_none() && m.text.starts_with("[nr] ")),
        "{sent:#?}"
    );
    let notices = sent
        .iter()
        .filter(|m| m.text.contains("Manage Topics"))
        .count();
    assert_eq!(notices, 1, "said once: {sent:#?}");
    assert!(api.topics().is_empty());
}

/// A topic closed by an admin is reopened and the message sent into it again.
#[test]
fn a_closed_topic_is_reopened() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let sb = Sandbox::new("shut", &ready_manifest(2));
    sb.scenario(slow(700));
    let _run = Kill(vec![start(&sb, &api, "shut", &[])]);
    assert!(
        wait_until(DEADLINE, || live_topic(&api, "shut").is_some()
            && !api.sent_messages().is_empty()),
        "{}",
        output_of(&sb, "shut")
    );
    let topic = live_topic(&api, "shut").unwrap().thread_id;
    assert!(api.close_topic(FORUM, topic));
    let closed_at = Instant::now();
    assert!(
        wait_until(DEADLINE, || api
            .sent_messages()
            .iter()
            .any(|m| m.at > closed_at && m.thread_id == Some(topic))),
        "a message lands in the reopened topic\n{:#?}\n{}",
        api.topics(),
        output_of(&sb, "shut")
    );
    let t = live_topic(&api, "shut").unwrap();
    assert_eq!(t.thread_id, topic, "the same topic");
    assert!(!t.closed);
    assert!(api
        .rejected_sends()
        .iter()
        .any(|r| r.description == "Bad Request: TOPIC_CLOSED"));
    assert_eq!(api.topics().len(), 1);
}
