//! The Bot API stand-in, driven through piv's own `TelegramClient`: what teloxide sends
//! is what the stand-in understands, and each Telegram behaviour piv depends on (long
//! poll, offset confirmation, 409, 429, 400 too long, 401) surfaces as the right
//! `TelegramError`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use piv::core::commands::command_menu;
use piv::core::telegram_text::{split_tagged, TELEGRAM_LIMIT};
use piv::io::telegram::{TelegramClient, TelegramError};
use piv_testkit::bot_api::{BotApiStandIn, BOT_USERNAME};

const TOKEN: &str = "4242:stand-in-secret-token";
const CHAT: i64 = 555;
/// Generous: the machine is shared and loaded.
const PATIENCE: Duration = Duration::from_secs(30);

fn setup() -> (Arc<BotApiStandIn>, TelegramClient) {
    let api = Arc::new(BotApiStandIn::start(TOKEN));
    let client = TelegramClient::new(TOKEN, api.url(), 30).unwrap();
    (api, client)
}

/// Waits (off the async thread) until the stand-in has seen `n` polls start.
async fn polls_started(api: &Arc<BotApiStandIn>, n: usize) {
    let api = api.clone();
    let seen = tokio::task::spawn_blocking(move || api.wait_for_poll_starts(n, PATIENCE))
        .await
        .unwrap();
    assert!(seen, "{n} polls never started");
}

/// getMe is parsed strictly by teloxide; the stand-in's reply satisfies it.
#[tokio::test]
async fn get_me_gives_the_username() {
    let (_api, client) = setup();
    assert_eq!(client.get_me().await.unwrap(), BOT_USERNAME);
}

/// A trailing slash on TELEGRAM_API_URL still reaches the API.
#[tokio::test]
async fn api_url_with_trailing_slash_works() {
    let api = BotApiStandIn::start(TOKEN);
    let client = TelegramClient::new(TOKEN, &format!("{}/", api.url()), 5).unwrap();
    assert_eq!(client.get_me().await.unwrap(), BOT_USERNAME);
}

/// A wrong token is Unauthorized, and the error text carries neither token.
#[tokio::test]
async fn wrong_token_is_unauthorized_without_leaking_it() {
    let api = BotApiStandIn::start(TOKEN);
    let wrong = "9999:the-wrong-secret-value";
    let client = TelegramClient::new(wrong, api.url(), 5).unwrap();
    for err in [
        client.get_me().await.unwrap_err(),
        client.send_html(CHAT, "x").await.unwrap_err(),
        client.get_updates(None, 0).await.unwrap_err(),
    ] {
        assert_eq!(err, TelegramError::Unauthorized);
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("the-wrong-secret-value") && !text.contains(TOKEN),
            "{text}"
        );
    }
    assert!(api.sent_messages().is_empty());
}

/// A sent message is recorded with its chat, text, HTML parse mode and our pid.
#[tokio::test]
async fn send_is_recorded() {
    let (api, client) = setup();
    client
        .send_html(CHAT, "[a] <b>hello</b> &amp; bye")
        .await
        .unwrap();
    let sent = api.sent_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].chat_id, CHAT);
    assert_eq!(sent[0].text, "[a] <b>hello</b> &amp; bye");
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(sent[0].pid, Some(std::process::id()));
}

/// A long poll returns as soon as a message arrives, not at its timeout.
#[tokio::test]
async fn long_poll_returns_on_inject() {
    let (api, client) = setup();
    let started = Instant::now();
    let injector = async {
        polls_started(&api, 1).await;
        api.inject_message(CHAT, "/status all")
    };
    let (updates, id) = tokio::join!(client.get_updates(None, 25), injector);
    let updates = updates.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "returned on the message"
    );
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].update_id, id);
    assert_eq!(updates[0].chat_id, Some(CHAT));
    assert_eq!(updates[0].text.as_deref(), Some("/status all"));
    assert_eq!(updates[0].from_username.as_deref(), Some("tester"));
    let polls = api.poll_starts();
    assert_eq!(polls[0].timeout_secs, 25);
    assert_eq!(
        polls[0].allowed_updates,
        Some(vec!["message".to_string(), "callback_query".to_string()])
    );
}

/// An update stays until a later offset confirms it; then it is gone for good.
#[tokio::test]
async fn offset_confirms_updates() {
    let (api, client) = setup();
    let first = api.inject_message(CHAT, "one");
    let second = api.inject_message(-100, "two");
    let got = client.get_updates(None, 0).await.unwrap();
    assert_eq!(
        got.iter().map(|u| u.update_id).collect::<Vec<_>>(),
        vec![first, second]
    );
    assert_eq!(got[1].chat_id, Some(-100));
    // Unconfirmed: delivered again.
    assert_eq!(client.get_updates(None, 0).await.unwrap().len(), 2);
    // Confirming the first only.
    let got = client
        .get_updates(Some(got[0].next_offset()), 0)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].update_id, second);
    let got = client
        .get_updates(Some(got[0].next_offset()), 0)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(api.pending_update_ids().is_empty());
}

/// With allowed_updates ["message", "callback_query"], edits are not delivered; a message without text is,
/// with no text, so its id can be confirmed.
#[tokio::test]
async fn only_messages_are_delivered() {
    let (api, client) = setup();
    api.inject_edited_message(CHAT, "edited");
    let photo = api.inject_message_without_text(CHAT);
    let odd = api.inject_update("message", serde_json::json!({"nonsense": true}));
    let got = client.get_updates(None, 0).await.unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].update_id, photo);
    assert_eq!(got[0].chat_id, Some(CHAT));
    assert_eq!(got[0].text, None);
    // An update teloxide cannot parse still comes through with its id.
    assert_eq!(got[1].update_id, odd);
    assert_eq!(got[1].chat_id, None);
}

/// A second poller on the token ends the first one's poll with 409 (teloxide:
/// TerminatedByOtherGetUpdates → TelegramError::Conflict); the second one carries on.
#[tokio::test]
async fn second_poller_ends_the_first_with_conflict() {
    let (api, first) = setup();
    let second = TelegramClient::new(TOKEN, api.url(), 30).unwrap();
    let intruder = async {
        polls_started(&api, 1).await;
        second.get_updates(None, 0).await
    };
    let (first_result, second_result) = tokio::join!(first.get_updates(None, 25), intruder);
    assert_eq!(first_result.unwrap_err(), TelegramError::Conflict);
    assert!(second_result.unwrap().is_empty());
    assert_eq!(api.conflicts_409(), 1);
    let conflict = &api.conflicts()[0];
    assert_eq!(conflict.terminated_pid, Some(std::process::id()));
}

/// Sends faster than the chat's minimum interval get 429 with retry_after, surfaced as
/// RetryAfter; a forced storm gives retry_after 1 to the next K sends.
#[tokio::test]
async fn rate_limit_surfaces_as_retry_after() {
    let (api, client) = setup();
    api.set_rate_limit(Some(Duration::from_secs(10)));
    client.send_html(CHAT, "first").await.unwrap();
    match client.send_html(CHAT, "too soon").await {
        Err(TelegramError::RetryAfter(d)) => {
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(10),
                "{d:?}"
            )
        }
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    // Another chat has its own allowance.
    client.send_html(CHAT + 1, "other chat").await.unwrap();
    api.set_rate_limit(None);
    api.force_429(2);
    for _ in 0..2 {
        assert_eq!(
            client.send_html(CHAT, "storm").await.unwrap_err(),
            TelegramError::RetryAfter(Duration::from_secs(1))
        );
    }
    client.send_html(CHAT, "after the storm").await.unwrap();
    assert_eq!(api.rejected_429(), 3);
    let texts: Vec<String> = api.sent_messages().into_iter().map(|m| m.text).collect();
    assert_eq!(texts, vec!["first", "other chat", "after the storm"]);
}

/// Over 4096 visible characters is refused as too long; markup does not count.
#[tokio::test]
async fn over_the_limit_is_too_long() {
    let (api, client) = setup();
    let exact = "a".repeat(TELEGRAM_LIMIT);
    client
        .send_html(CHAT, &format!("<b>{exact}</b>"))
        .await
        .unwrap();
    assert_eq!(
        client
            .send_html(CHAT, &format!("{exact}b"))
            .await
            .unwrap_err(),
        TelegramError::TooLong
    );
    assert_eq!(api.sent_messages().len(), 1);
}

/// HTML Telegram would refuse (a tag cut by a bad split) is a 400 from the stand-in.
#[tokio::test]
async fn broken_html_is_refused() {
    let (_api, client) = setup();
    let err = client.send_html(CHAT, "[a] <b>cut").await.unwrap_err();
    assert!(
        matches!(&err, TelegramError::Api(t) if t.contains("parse entities")),
        "{err:?}"
    );
}

/// Every part of a long tagged message is accepted: under the limit, valid HTML, tagged.
#[tokio::test]
async fn split_messages_are_all_accepted() {
    let (api, client) = setup();
    let mut text = String::new();
    for i in 0..400 {
        text.push_str(&format!(
            "<b>Step {i}</b> — <i>details &amp; more {}</i>\n",
            "🚀".repeat(i % 5)
        ));
        if i % 9 == 0 {
            text.push('\n');
        }
    }
    text.push_str(&format!("<code>{}</code>", "x".repeat(5000)));
    let parts = split_tagged("proj", &text, TELEGRAM_LIMIT);
    assert!(parts.len() >= 3);
    for part in &parts {
        client.send_html(CHAT, part).await.unwrap();
    }
    let sent = api.sent_messages();
    assert_eq!(sent.len(), parts.len());
    assert!(sent.iter().all(|m| m.text.starts_with("[proj] ")));
}

/// setMyCommands with piv's menu is accepted and recorded.
#[tokio::test]
async fn commands_are_recorded() {
    let (api, client) = setup();
    client.set_my_commands(&command_menu()).await.unwrap();
    let set = api.commands_set();
    assert_eq!(set.len(), 1);
    let names: Vec<&str> = set[0].iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "status",
            "go",
            "pause",
            "resume",
            "cost",
            "preflight",
            "logs",
            "create_prd",
            "end_prd",
            "help"
        ]
    );
}

/// Telegram matches method names case-insensitively and takes form and query
/// parameters too; the HTTP test API serves a driver in another process.
#[tokio::test]
async fn raw_http_forms_and_test_api() {
    let api = BotApiStandIn::start(TOKEN);
    let http = reqwest::Client::new();
    for method in ["getMe", "GETME", "getme"] {
        let body: serde_json::Value = http
            .get(format!("{}/bot{TOKEN}/{method}", api.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["result"]["username"], BOT_USERNAME, "{method}");
    }
    let status = http
        .post(format!(
            "{}/bot{TOKEN}/sendMessage?chat_id={CHAT}",
            api.url()
        ))
        .form(&[("text", "form & query")])
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let unknown = http
        .post(format!("{}/bot{TOKEN}/noSuchMethod", api.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(unknown, 404);

    let injected: serde_json::Value = http
        .post(format!("{}/inject", api.test_url()))
        .json(&serde_json::json!({"chat_id": CHAT, "text": "/go b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = injected["result"]["update_id"].as_i64().unwrap();
    assert_eq!(api.pending_update_ids(), vec![id]);
    let sent: serde_json::Value = http
        .get(format!("{}/sent", api.test_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["result"][0]["text"], "form & query");
    assert_eq!(sent["result"][0]["chat_id"], CHAT);
}

/// Stopping ends a running long poll at once.
#[tokio::test]
async fn stop_ends_running_polls() {
    let (api, client) = setup();
    let started = Instant::now();
    let stopper = async {
        polls_started(&api, 1).await;
        let api = api.clone();
        tokio::task::spawn_blocking(move || api.stop())
            .await
            .unwrap();
    };
    let (result, ()) = tokio::join!(client.get_updates(None, 25), stopper);
    assert!(started.elapsed() < Duration::from_secs(20));
    // Either an empty answer or a refused connection: never a hang.
    if let Ok(updates) = result {
        assert!(updates.is_empty());
    }
}
