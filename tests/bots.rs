//! Issue 13 item 5 on the real `piv` binary: ownership belongs to the bot, not to
//! `$PIV_HOME`. Two tokens on one home make two owners, each polling its own bot with its
//! own offset; one token with two chat ids answers each chat in that chat and shows it only
//! its own instances; no token ends up in a file name (or file) under `$PIV_HOME`. Also
//! the stand-in's two-token mode itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use piv::core::bot_chats::bot_id_of;
use piv_testkit::bot_api::BotApiStandIn;

use crate::support::telegram_run::{
    output_of, replies_after, slow, start_with_telegram, state_of, Kill,
};
use crate::support::*;

const TOKEN_A: &str = "551001:bots-token-A-SECRET-aaa";
const TOKEN_B: &str = "551002:bots-token-B-SECRET-bbb";
const CHAT_A: i64 = 61_001;
const CHAT_B: i64 = -61_002;

/// Every path under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// No file name under `home` holds any part of a token's secret (or the whole token), and
/// no file holds the secret; returns how many paths were checked.
fn assert_no_token_under(home: &Path, tokens: &[&str]) -> usize {
    let paths = walk(home);
    for path in &paths {
        let name = path.to_string_lossy();
        for token in tokens {
            let secret = token.split_once(':').unwrap().1;
            assert!(
                !name.contains(secret) && !name.contains(token),
                "a token in a file name: {name}"
            );
            if path.is_file() {
                let bytes = std::fs::read(path).unwrap_or_default();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(secret),
                    "a token inside {name}"
                );
            }
        }
    }
    paths.len()
}

fn last_handled(home: &Path, token: &str) -> Option<i64> {
    let dir = piv::io::home::bot_dir(home, bot_id_of(token).unwrap());
    piv::io::bot_offset::read_last_handled(&dir)
}

fn pollers(api: &BotApiStandIn) -> BTreeSet<u32> {
    api.poll_starts().iter().filter_map(|p| p.pid).collect()
}

/// The registry's entries as (prefix, botId, chatId).
fn registered(home: &Path) -> Vec<(String, Option<u64>, Option<i64>)> {
    let text = std::fs::read_to_string(home.join("registry.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    (
                        i["prefix"].as_str().unwrap_or("").to_string(),
                        i["botId"].as_u64(),
                        i["chatId"].as_i64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The stand-in's two-token mode: separate updates and sends per token, and a second
/// `getUpdates` ends only a poll on the same token with 409. (Two workers: the test
/// blocks one waiting for the stand-in while the long poll runs on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_serves_two_bots_apart() {
    use piv::io::telegram::{TelegramClient, TelegramError};
    let apis = BotApiStandIn::start_bots(&[TOKEN_A, TOKEN_B]);
    let (a, b) = (&apis[0], &apis[1]);
    assert_eq!(a.url(), b.url(), "one port");
    let ca = TelegramClient::new(TOKEN_A, a.url(), 30).unwrap();
    let cb = TelegramClient::new(TOKEN_B, b.url(), 30).unwrap();
    let ua = a.inject_message(CHAT_A, "/help");
    let got_a = ca.get_updates(None, 0).await.unwrap();
    let got_b = cb.get_updates(None, 0).await.unwrap();
    assert_eq!(
        got_a.iter().map(|u| u.update_id).collect::<Vec<_>>(),
        vec![ua]
    );
    assert!(got_b.is_empty(), "b sees none of a's updates");
    ca.send_html(CHAT_A, "to a").await.unwrap();
    cb.send_html(CHAT_B, "to b").await.unwrap();
    assert_eq!(
        a.sent_messages()
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["to a"]
    );
    assert_eq!(
        b.sent_messages()
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["to b"]
    );
    // A long poll on a is not ended by a poll on b, only by another poll on a.
    let long = tokio::spawn({
        let ca = ca.clone();
        async move { ca.get_updates(Some(ua + 1), 20).await }
    });
    let started = a.wait_for_poll_starts(2, std::time::Duration::from_secs(30));
    assert!(started, "the long poll started");
    cb.get_updates(None, 0).await.unwrap();
    assert_eq!(a.conflicts_409() + b.conflicts_409(), 0);
    let _ = ca.get_updates(Some(ua + 1), 0).await;
    assert!(matches!(long.await.unwrap(), Err(TelegramError::Conflict)));
    assert_eq!((a.conflicts_409(), b.conflicts_409()), (1, 0));
    // A token the server does not serve is refused.
    let stranger = TelegramClient::new("9:nobody", a.url(), 5).unwrap();
    assert_eq!(
        stranger.get_me().await.unwrap_err(),
        TelegramError::Unauthorized
    );
}

/// Two instances with different tokens on one home: both own their bot (neither waits
/// for the other), each polls only its own bot, each bot's offset is its own, an offset
/// file of an earlier version (no bot id) is not adopted, and no token is in a file name.
#[test]
fn two_tokens_on_one_home_make_two_owners() {
    let apis = BotApiStandIn::start_bots(&[TOKEN_A, TOKEN_B]);
    let (api_a, api_b) = (&apis[0], &apis[1]);
    let a = Sandbox::new("a", &ready_manifest(1));
    let b = Sandbox::sharing_home(&a, "b", &ready_manifest(1));
    // What an earlier version left: an offset past everything either stand-in hands out.
    // A new token adopting it would skip every command below.
    std::fs::create_dir_all(&a.home).unwrap();
    std::fs::write(
        a.home.join("bot-offset.json"),
        r#"{"lastUpdateId":999999999}"#,
    )
    .unwrap();
    let procs = Kill(vec![
        start_with_telegram(&a, api_a, (TOKEN_A, CHAT_A), "a", &[], &[]),
        start_with_telegram(&b, api_b, (TOKEN_B, CHAT_B), "b", &[], &[]),
    ]);
    let (pid_a, pid_b) = (procs.0[0].id(), procs.0[1].id());
    assert!(
        wait_until(DEADLINE, || pollers(api_a).contains(&pid_a)
            && pollers(api_b).contains(&pid_b)),
        "each polls its own bot\n{}\n{}",
        output_of(&a, "a"),
        output_of(&b, "b")
    );

    let t = Instant::now();
    api_a.inject_message(CHAT_A, "/help");
    let second_a = api_a.inject_message(CHAT_A, "/status");
    let only_b = api_b.inject_message(CHAT_B, "/help");
    assert!(
        wait_until(DEADLINE, || !replies_after(api_a, t, "commands</b>")
            .is_empty()
            && !replies_after(api_a, t, "PIV Orchestrator Status").is_empty()
            && !replies_after(api_b, t, "commands</b>").is_empty()),
        "each bot answers its own chat\n{}\n{}",
        output_of(&a, "a"),
        output_of(&b, "b")
    );
    assert!(
        wait_until(DEADLINE, || last_handled(&a.home, TOKEN_A)
            == Some(second_a)
            && last_handled(&a.home, TOKEN_B) == Some(only_b)),
        "each bot's offset is its own: a {:?}, b {:?}",
        last_handled(&a.home, TOKEN_A),
        last_handled(&a.home, TOKEN_B)
    );
    assert_eq!(
        pollers(api_a),
        BTreeSet::from([pid_a]),
        "only a polls bot A"
    );
    assert_eq!(
        pollers(api_b),
        BTreeSet::from([pid_b]),
        "only b polls bot B"
    );
    assert_eq!(api_a.conflicts_409() + api_b.conflicts_409(), 0);
    assert!(api_a.sent_messages().iter().all(|m| m.chat_id == CHAT_A));
    assert!(api_b.sent_messages().iter().all(|m| m.chat_id == CHAT_B));
    // The registry says which bot and chat each instance reports to.
    let mut entries = registered(&a.home);
    entries.sort();
    assert_eq!(
        entries,
        vec![
            ("a".to_string(), Some(551_001), Some(CHAT_A)),
            ("b".to_string(), Some(551_002), Some(CHAT_B)),
        ]
    );
    drop(procs);
    let checked = assert_no_token_under(&a.home, &[TOKEN_A, TOKEN_B]);
    assert!(checked >= 8, "only {checked} paths under the home");
    assert!(piv::io::home::owner_lock_path(&a.home, 551_001).exists());
    assert!(piv::io::home::owner_lock_path(&a.home, 551_002).exists());
}

/// One token, two chat ids: the owner (a, chat A) answers b's chat too, in that chat;
/// `/status all` in each chat lists that chat's instances only; a prefix-less `/pause` in
/// b's chat goes to b, its only instance; a chat nobody reports to is still ignored.
#[test]
fn one_token_two_chats_each_answered_in_its_own() {
    let api = BotApiStandIn::start(TOKEN_A);
    let a = Sandbox::new("a", &ready_manifest(1));
    let b = Sandbox::sharing_home(&a, "b", &ready_manifest(3));
    b.scenario(slow(400));
    let mut procs = Kill(vec![start_with_telegram(
        &a,
        &api,
        (TOKEN_A, CHAT_A),
        "a",
        &[],
        &[],
    )]);
    let pid_a = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || pollers(&api).contains(&pid_a)),
        "a owns the bot\n{}",
        output_of(&a, "a")
    );
    procs.0.push(start_with_telegram(
        &b,
        &api,
        (TOKEN_A, CHAT_B),
        "b",
        &[],
        &[],
    ));
    assert!(
        wait_until(DEADLINE, || registered(&a.home)
            .iter()
            .any(|e| e.0 == "b" && e.2 == Some(CHAT_B))),
        "b registered with its chat\n{}",
        output_of(&b, "b")
    );

    // `/status all` in b's chat: answered there, listing b and not a.
    let t = Instant::now();
    api.inject_message(CHAT_B, "/status all");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, t, "All Instances")
            .is_empty()),
        "answered in b's chat\n{}",
        output_of(&a, "a")
    );
    let in_b: Vec<_> = api
        .sent_messages()
        .into_iter()
        .filter(|m| m.at >= t && m.text.contains("All Instances"))
        .collect();
    assert_eq!(in_b.len(), 1, "{in_b:?}");
    assert_eq!(in_b[0].chat_id, CHAT_B, "answered in the chat it came from");
    assert!(
        in_b[0].text.contains("[b]") && !in_b[0].text.contains("[a]"),
        "{}",
        in_b[0].text
    );

    // `/status all` in a's chat lists a, not b.
    let t = Instant::now();
    api.inject_message(CHAT_A, "/status all");
    assert!(wait_until(DEADLINE, || !replies_after(
        &api,
        t,
        "All Instances"
    )
    .is_empty()));
    let in_a = api
        .sent_messages()
        .into_iter()
        .find(|m| m.at >= t && m.text.contains("All Instances"))
        .unwrap();
    assert_eq!(in_a.chat_id, CHAT_A);
    assert!(
        in_a.text.contains("[a]") && !in_a.text.contains("[b]"),
        "{}",
        in_a.text
    );

    // A prefix-less `/pause` in b's chat is for b, its only instance; the confirmation
    // goes to b's chat.
    let t = Instant::now();
    api.inject_message(CHAT_B, "/pause");
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t,
            "Sent /pause signal to [b]"
        )
        .is_empty()),
        "routed to b\n{}",
        output_of(&a, "a")
    );
    let confirmation = api
        .sent_messages()
        .into_iter()
        .find(|m| m.at >= t && m.text.contains("Sent /pause signal to [b]"))
        .unwrap();
    assert_eq!(confirmation.chat_id, CHAT_B);
    assert!(
        wait_until(DEADLINE, || state_of(&b).as_deref() == Some("paused")),
        "b pauses\n{}",
        output_of(&b, "b")
    );
    assert_ne!(state_of(&a).as_deref(), Some("paused"), "a does not pause");

    // A chat no instance reports to gets nothing.
    let stranger = 61_003;
    let t = Instant::now();
    api.inject_message(stranger, "/status all");
    api.inject_message(CHAT_A, "/help");
    assert!(wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()));
    assert!(api.sent_messages().iter().all(|m| m.chat_id != stranger));
    // One poller throughout.
    assert_eq!(pollers(&api), BTreeSet::from([pid_a]));
}

/// A token without a numeric bot id is a configuration error at start, named without the
/// token; nothing runs and nothing is written for a bot.
#[test]
fn a_token_without_a_bot_id_is_refused_at_start() {
    let sb = Sandbox::new("badtoken", &ready_manifest(1));
    for token in ["no-bot-id-SECRET-zzz", "abc:SECRET-zzz", "123:"] {
        let out = run_with_env(
            &sb,
            &[],
            &[("TELEGRAM_BOT_TOKEN", token), ("TELEGRAM_CHAT_ID", "42")],
        );
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{token}: {stdout}{stderr}");
        assert!(
            stderr.contains("TELEGRAM_BOT_TOKEN"),
            "{token}: the variable is named\n{stderr}"
        );
        assert!(
            !stdout.contains("SECRET") && !stderr.contains("SECRET"),
            "{token}: the token is not quoted\n{stdout}{stderr}"
        );
        assert!(sb.claude_calls().is_empty(), "{token}: nothing ran");
    }
    assert!(!sb.home.join("bots").exists());
}
