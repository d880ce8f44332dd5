//! The Bot API stand-in's control room (issue 14), driven through piv's own adapters
//! (`io::telegram`, `io::telegram_room`, parsed by teloxide 0.13): forum chats, topics and
//! their error texts, sends into topics with buttons, edits, button taps and their answers.

use std::sync::Arc;
use std::time::Duration;

use piv::core::forum::{icon_color, topic_recovery, TopicRecovery};
use piv::io::telegram::{TelegramClient, TelegramError};
use piv::io::telegram_room::ButtonRows;
use piv_testkit::bot_api::{BotApiStandIn, ChatSetup};

const TOKEN: &str = "4343:room-stand-in-secret";
const FORUM: i64 = -1_001_234_567_890;
const GROUP: i64 = -4_000_001;
const PRIVATE: i64 = 777;
const PATIENCE: Duration = Duration::from_secs(30);

fn setup() -> (Arc<BotApiStandIn>, TelegramClient) {
    let api = Arc::new(BotApiStandIn::start(TOKEN));
    api.set_chat(FORUM, ChatSetup::Forum);
    api.set_chat(GROUP, ChatSetup::Group);
    let client = TelegramClient::new(TOKEN, api.url(), 30).unwrap();
    (api, client)
}

fn api_text(error: TelegramError) -> String {
    match error {
        TelegramError::Api(text) => text,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// getChat's answer parses as teloxide's ChatFullInfo, and says which chat has topics.
#[tokio::test]
async fn get_chat_tells_forums_apart() {
    let (_api, client) = setup();
    assert!(client.chat_is_forum(FORUM).await.unwrap());
    assert!(!client.chat_is_forum(GROUP).await.unwrap());
    assert!(!client.chat_is_forum(PRIVATE).await.unwrap());
}

/// A topic is created (teloxide parses the ForumTopic), a send into it records its thread
/// and its buttons; a topic cannot be made in a chat without topics.
#[tokio::test]
async fn topics_are_created_and_sent_into() {
    let (api, client) = setup();
    let colour = icon_color("beta");
    let thread = client
        .create_forum_topic(FORUM, "beta", colour)
        .await
        .unwrap();
    let topics = api.topics();
    assert_eq!(topics.len(), 1);
    assert_eq!(
        (topics[0].thread_id, topics[0].name.as_str()),
        (thread, "beta")
    );
    assert_eq!(topics[0].icon_color, Some(colour));

    let rows: ButtonRows = vec![vec![
        ("Retry".into(), "piv:r:beta:7".into()),
        ("Pause".into(), "piv:p:beta:7".into()),
    ]];
    let id = client
        .send_html_in(FORUM, Some(thread), "<b>beta</b> needs you", &rows)
        .await
        .unwrap();
    let general = client
        .send_html_in(FORUM, None, "hello", &Vec::new())
        .await
        .unwrap();
    // General (thread 1) is never sent as a thread.
    let general_too = client
        .send_html_in(FORUM, Some(1), "again", &Vec::new())
        .await
        .unwrap();
    let sent = api.sent_messages();
    let find = |id: i64| sent.iter().find(|m| m.message_id == id).unwrap();
    assert_eq!(find(id).thread_id, Some(thread));
    assert_eq!(
        find(id).buttons[0][0],
        ("Retry".into(), "piv:r:beta:7".into())
    );
    assert_eq!(find(id).buttons[0].len(), 2);
    assert_eq!(find(general).thread_id, None);
    assert_eq!(find(general_too).thread_id, None);

    let refused = api_text(
        client
            .create_forum_topic(GROUP, "x", colour)
            .await
            .unwrap_err(),
    );
    assert!(refused.contains("the chat is not a forum"), "{refused}");
}

/// A deleted topic answers "message thread not found" (→ recreate), a closed one
/// TOPIC_CLOSED (→ reopen, after which sends work), a bot without the right cannot create
/// (→ General).
#[tokio::test]
async fn topic_errors_read_as_their_recovery() {
    let (api, client) = setup();
    let gone = client
        .create_forum_topic(FORUM, "alpha", 0x6FB9F0)
        .await
        .unwrap();
    assert!(api.delete_topic(FORUM, gone));
    let e = api_text(
        client
            .send_html_in(FORUM, Some(gone), "x", &Vec::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(topic_recovery(&e), Some(TopicRecovery::Recreate), "{e}");
    let e = api_text(client.reopen_forum_topic(FORUM, gone).await.unwrap_err());
    assert!(e.contains("TOPIC_ID_INVALID"), "{e}");

    let shut = client
        .create_forum_topic(FORUM, "beta", 0x6FB9F0)
        .await
        .unwrap();
    assert!(api.close_topic(FORUM, shut));
    let e = api_text(
        client
            .send_html_in(FORUM, Some(shut), "x", &Vec::new())
            .await
            .unwrap_err(),
    );
    assert_eq!(topic_recovery(&e), Some(TopicRecovery::Reopen), "{e}");
    client.reopen_forum_topic(FORUM, shut).await.unwrap();
    client
        .send_html_in(FORUM, Some(shut), "x", &Vec::new())
        .await
        .unwrap();
    let e = api_text(client.reopen_forum_topic(FORUM, shut).await.unwrap_err());
    assert!(e.contains("TOPIC_NOT_MODIFIED"), "{e}");

    api.set_topic_rights(FORUM, false);
    let e = api_text(
        client
            .create_forum_topic(FORUM, "gamma", 0x6FB9F0)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        topic_recovery(&e),
        Some(TopicRecovery::FallBackToGeneral),
        "{e}"
    );
    // Every refusal was recorded with Telegram's text.
    assert_eq!(
        api.rejected_sends()
            .iter()
            .map(|r| r.description.as_str())
            .collect::<Vec<_>>(),
        vec![
            "Bad Request: message thread not found",
            "Bad Request: TOPIC_CLOSED"
        ]
    );
}

/// An edit replaces the text and buttons; an identical edit is "not modified" (success for
/// piv, nothing recorded); an unknown message cannot be edited.
#[tokio::test]
async fn edits_in_place() {
    let (api, client) = setup();
    let id = client
        .send_html_in(PRIVATE, None, "step 1", &Vec::new())
        .await
        .unwrap();
    client
        .edit_html(PRIVATE, id, "step <b>2</b>", &Vec::new())
        .await
        .unwrap();
    client
        .edit_html(PRIVATE, id, "step <b>2</b>", &Vec::new())
        .await
        .unwrap();
    let edits = api.edits();
    assert_eq!(edits.len(), 1, "{edits:?}");
    assert_eq!(
        (edits[0].message_id, edits[0].text.as_str()),
        (id, "step <b>2</b>")
    );
    // The same text with other buttons is a change.
    let rows: ButtonRows = vec![vec![("Retry".into(), "d".into())]];
    client
        .edit_html(PRIVATE, id, "step <b>2</b>", &rows)
        .await
        .unwrap();
    assert_eq!(api.edits().len(), 2);
    let e = api_text(
        client
            .edit_html(PRIVATE, 9999, "x", &Vec::new())
            .await
            .unwrap_err(),
    );
    assert!(e.contains("message to edit not found"), "{e}");
}

/// A topic message and a button tap come through getUpdates parsed: the topic, and the
/// tap's query id, data, user and message; the answer is recorded; an unknown query id is
/// refused with Telegram's text.
#[tokio::test]
async fn topic_messages_and_taps_come_through() {
    let (api, client) = setup();
    let thread = client
        .create_forum_topic(FORUM, "beta", 0x6FB9F0)
        .await
        .unwrap();
    let rows: ButtonRows = vec![vec![("Retry".into(), "piv:r:beta:7".into())]];
    let message = client
        .send_html_in(FORUM, Some(thread), "stuck", &rows)
        .await
        .unwrap();
    api.inject_topic_message(FORUM, thread, "/pause");
    api.inject_message(FORUM, "/status all");
    let tap = api.inject_tap(message, "piv:r:beta:7", 31337).unwrap();
    let got = client.get_updates(None, 0).await.unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[0].topic, got[0].text.as_deref()),
        (Some(thread), Some("/pause"))
    );
    assert_eq!(got[1].topic, None);
    let t = got[2].tap.clone().expect("a tap");
    assert_eq!(t.callback_id, tap);
    assert_eq!(t.data, "piv:r:beta:7");
    assert_eq!((t.chat_id, t.message_id), (Some(FORUM), Some(message)));
    assert_eq!(t.from_username.as_deref(), Some("tester"));

    client
        .answer_callback(&tap, "Retrying beta", false)
        .await
        .unwrap();
    let answer = api.wait_for_callback_answer(&tap, PATIENCE).unwrap();
    assert_eq!(answer.text.as_deref(), Some("Retrying beta"));
    assert!(!answer.show_alert);
    assert!(api.tap_answered_after(&tap).is_some());
    let e = api_text(client.answer_callback("nope", "x", true).await.unwrap_err());
    assert!(e.contains("query ID is invalid"), "{e}");
}
