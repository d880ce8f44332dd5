//! Telegram with real `piv run` processes sharing one bot token, against the Bot API
//! stand-in (issue 6): one poller, tagged messages from both, `/status all`, routed
//! `/pause`, takeover after SIGKILL with a command answered exactly once, a 429 storm,
//! an outsider poller, and a chat that is not allowed.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Instant;

use piv_testkit::bot_api::{parse_telegram_html, BotApiStandIn};

use crate::support::telegram_run::{
    output_of, replies_after, slow, start_with_telegram, state_of, Kill,
};
use crate::support::*;

const TOKEN: &str = "777001:e2e-token-SECRET-xyz";
const CHAT: i64 = 424_242;

/// A `piv run` with Telegram on, pointed at the stand-in.
fn start(sb: &Sandbox, api: &BotApiStandIn, prefix: &str, extra: &[&str]) -> Child {
    start_with_telegram(sb, api, (TOKEN, CHAT), prefix, extra, &[])
}

fn registry_owner(sb: &Sandbox) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(sb.home.join("registry.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["instances"].as_array()?.iter().find_map(|i| {
        i["isBotOwner"].as_bool().filter(|o| *o).map(|_| {
            (
                i["prefix"].as_str().unwrap_or("").to_string(),
                i["pid"].as_u64().unwrap_or(0) as u32,
            )
        })
    })
}

fn registered_count(sb: &Sandbox) -> usize {
    std::fs::read_to_string(sb.home.join("registry.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["instances"].as_array().map(|a| a.len()))
        .unwrap_or(0)
}

/// Two instances on one token: one poller, both send tagged messages, `/status all`
/// lists both, `/pause b` pauses b (routed through its queue) and not a, a chat not on
/// the allow-list gets nothing; then the owner is SIGKILLed, a command sent at once is
/// answered by the other instance exactly once.
#[test]
fn two_instances_share_one_token() {
    let api = BotApiStandIn::start(TOKEN);
    let a = Sandbox::new("a", &ready_manifest(2));
    let b = Sandbox::sharing_home(&a, "b", &ready_manifest(3));
    a.scenario(slow(300));
    b.scenario(slow(500));
    // a stays up after its phases (Telegram on, no --exit-when-done): it owns the bot
    // until the test kills it.
    let mut procs = Kill(vec![start(&a, &api, "a", &[])]);
    assert!(
        wait_until(DEADLINE, || registry_owner(&a).is_some()),
        "a becomes owner\n{}",
        output_of(&a, "a")
    );
    procs.0.push(start(&b, &api, "b", &["--exit-when-done"]));
    assert!(
        wait_until(DEADLINE, || registered_count(&a) == 2),
        "both registered"
    );
    let (owner, owner_pid) = registry_owner(&a).unwrap();
    assert_eq!(owner, "a", "the first instance owns the bot");

    // `/pause b` is routed to b through its queue and pauses b, not a. (First, so that b
    // is held for the rest of the test.)
    let t = Instant::now();
    api.inject_message(CHAT, "/pause b");
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t,
            "Sent /pause signal to [b]"
        )
        .is_empty()),
        "routed and confirmed in the chat\n{}",
        output_of(&a, "a")
    );
    assert!(
        wait_until(DEADLINE, || state_of(&b).as_deref() == Some("paused")),
        "b pauses\n{}",
        output_of(&b, "b")
    );
    assert_ne!(state_of(&a).as_deref(), Some("paused"), "a does not pause");

    // Only one process polls.
    let pollers: BTreeSet<u32> = api.poll_starts().iter().filter_map(|p| p.pid).collect();
    assert_eq!(
        pollers,
        BTreeSet::from([owner_pid]),
        "one poller, the owner"
    );

    // Both send, each message tagged with its own prefix.
    assert!(
        wait_until(DEADLINE, || {
            let sent = api.sent_messages();
            sent.iter().any(|m| m.text.starts_with("[a] "))
                && sent.iter().any(|m| m.text.starts_with("[b] "))
        }),
        "tagged messages from both"
    );

    // `/status all` answers with both.
    let t = Instant::now();
    api.inject_message(CHAT, "/status all");
    assert!(wait_until(DEADLINE, || !replies_after(
        &api,
        t,
        "All Instances"
    )
    .is_empty()));
    let status = replies_after(&api, t, "All Instances").remove(0);
    assert!(status.contains("[a]") && status.contains("[b]"), "{status}");

    // A chat that is not allowed gets nothing.
    let t = Instant::now();
    api.inject_message(CHAT + 1, "/status all");
    // Then an allowed command: once it is answered, the other one was seen first.
    api.inject_message(CHAT, "/help");
    assert!(wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()));
    assert!(
        api.sent_messages().iter().all(|m| m.chat_id == CHAT),
        "nothing is sent to a chat that is not allowed"
    );
    assert_eq!(replies_after(&api, t, "All Instances").len(), 0);

    // Kill the owner; a command sent at once is answered by b, exactly once.
    let killed = Instant::now();
    let mut owner_child = procs.0.remove(0);
    owner_child.kill().unwrap();
    owner_child.wait().unwrap();
    api.inject_message(CHAT, "/resume b");
    let b_pid = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || api
            .poll_starts()
            .iter()
            .any(|p| p.pid == Some(b_pid) && p.at > killed)),
        "b takes over polling\n{}",
        output_of(&b, "b")
    );
    assert!(wait_until(DEADLINE, || !replies_after(
        &api, killed, "Resuming"
    )
    .is_empty()));
    // Give a double answer every chance to show up: b finishing proves it polled on.
    let status = wait_output(procs.0.remove(0), DEADLINE).status;
    assert_eq!(status.code(), Some(0), "{}", output_of(&b, "b"));
    assert_eq!(
        replies_after(&api, killed, "Resuming").len(),
        1,
        "answered exactly once"
    );
    assert_eq!(registry_owner(&a), None);
}

/// A 429 storm: every notification still arrives, in order (the order the terminal
/// printed them).
#[test]
fn a_429_storm_loses_no_notification_and_keeps_order() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("storm", &ready_manifest(1));
    api.force_429(6);
    let child = start(&sb, &api, "storm", &["--exit-when-done"]);
    let out = wait_output(child, DEADLINE);
    assert_eq!(out.status.code(), Some(0), "{}", output_of(&sb, "storm"));
    assert!(api.rejected_429() >= 6, "the storm happened");
    // As the chat shows them (HTML rendered to text).
    let chat: String = api
        .sent_messages()
        .iter()
        .map(|m| parse_telegram_html(&m.text).expect("valid Telegram HTML"))
        .collect::<Vec<_>>()
        .join("\n");
    // The terminal's step-end lines, in order, each appear in the chat in the same order.
    let terminal = std::fs::read_to_string(sb.root.path().join("storm.out")).unwrap();
    let mut at = 0;
    for line in terminal.lines().filter(|l| l.starts_with('✔')) {
        let step = line.split(" · ").nth(1).unwrap();
        let needle = format!("{step} done");
        let found = chat[at..].find(&needle);
        assert!(found.is_some(), "{needle:?} after byte {at} in:\n{chat}");
        at += found.unwrap() + needle.len();
    }
    assert!(chat.contains("Phase 1 Complete"), "{chat}");
    assert!(chat.contains("All phases complete"), "{chat}");
}

/// Another process outside this PIV_HOME polls the same token: piv warns once, keeps
/// trying, and its run is not disturbed.
#[test]
fn an_outsider_poller_is_survived() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("outsider", &ready_manifest(1));
    sb.scenario(slow(400));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outsider = {
        let (url, stop) = (api.url().to_string(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let client = piv::io::telegram::TelegramClient::new(TOKEN, &url, 1).unwrap();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = rt.block_on(client.get_updates(None, 1));
            }
        })
    };
    let child = start(&sb, &api, "outsider", &["--exit-when-done"]);
    let out = wait_output(child, DEADLINE);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    outsider.join().unwrap();
    let all = output_of(&sb, "outsider");
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(api.conflicts_409() > 0, "the two pollers did conflict");
    let warnings = sb.log().matches("outside this PIV_HOME").count()
        + std::fs::read_to_string(sb.root.path().join("outsider.err"))
            .unwrap_or_default()
            .matches("outside this PIV_HOME")
            .count();
    assert!(warnings >= 1, "warned about the outsider:\n{all}");
    assert!(!all.contains(TOKEN), "the token never appears");
}

/// The bot-owner lock file is deleted behind the owner's back and a newcomer locks a new
/// one: both poll, Telegram answers one of them with 409, the old owner sees that it no
/// longer holds the real lock, stops polling and waits; one poller is left.
#[test]
fn an_owner_whose_lock_file_was_replaced_steps_down_on_409() {
    let api = BotApiStandIn::start(TOKEN);
    let a = Sandbox::new("a", &ready_manifest(1));
    let c = Sandbox::sharing_home(&a, "c", &ready_manifest(1));
    a.scenario(slow(200));
    c.scenario(slow(200));
    let mut procs = Kill(vec![start(&a, &api, "a", &[])]);
    let a_pid = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || api
            .poll_starts()
            .iter()
            .any(|p| p.pid == Some(a_pid))),
        "a polls\n{}",
        output_of(&a, "a")
    );
    std::fs::remove_file(piv::io::home::owner_lock_path(
        &a.home,
        piv::core::bot_chats::bot_id_of(TOKEN).unwrap(),
    ))
    .unwrap();
    procs.0.push(start(&c, &api, "c", &[]));
    let c_pid = procs.0[1].id();
    assert!(
        wait_until(DEADLINE, || api
            .poll_starts()
            .iter()
            .any(|p| p.pid == Some(c_pid))),
        "the newcomer got the new lock file and polls\n{}",
        output_of(&c, "c")
    );
    assert!(
        wait_until(DEADLINE, || a.log().contains("deleted or replaced")),
        "a noticed on the 409\n{}",
        output_of(&a, "a")
    );
    let t = Instant::now();
    api.inject_message(CHAT, "/help");
    assert!(wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()));
    assert!(
        !api.poll_starts()
            .iter()
            .any(|p| p.pid == Some(a_pid) && p.at > t),
        "a no longer polls"
    );
    assert_eq!(replies_after(&api, t, "/status").len(), 1, "one answer");
}

/// `/cost` in the chat answers the same report as `piv cost` (issue 15): the cost ledger
/// of the home, per project.
#[test]
fn cost_in_the_chat_is_the_ledger_report() {
    let api = BotApiStandIn::start(TOKEN);
    let a = Sandbox::new("a", &ready_manifest(1));
    let _procs = Kill(vec![start(&a, &api, "a", &[])]);
    assert!(
        wait_until(DEADLINE, || state_of(&a).as_deref() == Some("done")),
        "a never finished\n{}",
        output_of(&a, "a")
    );
    let table = a.piv(&["cost"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with("a "))
        .unwrap_or_else(|| panic!("no row for a in piv cost:\n{table}"))
        .trim()
        .to_string();
    let t = Instant::now();
    api.inject_message(CHAT, "/cost");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, t, &row).is_empty()),
        "no /cost reply with {row:?}\n{table}\n{:#?}\n{}",
        api.sent_messages()
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>(),
        output_of(&a, "a")
    );
}
