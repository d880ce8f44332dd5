//! The stand-in's chat control room (issue 14), from the Bot API documentation: chats set up as forum supergroup / private / group (`getChat` → `is_forum`), forum topics (create, edit, close, reopen, a test hook to delete), `message_thread_id` checks on sends, `editMessageText`, inline keyboards, `callback_query` updates and `answerCallbackQuery`, with Telegram's error texts.
//!
//! Error texts a client must recognise (as Telegram words them):
//! - a send into a deleted topic: `Bad Request: message thread not found`;
//! - a send into a closed topic: `Bad Request: TOPIC_CLOSED`;
//! - `createForumTopic` without the right: `Bad Request: not enough rights to create a topic`;
//!   `closeForumTopic`/`reopenForumTopic`/`editForumTopic` without it:
//!   `Bad Request: CHAT_ADMIN_REQUIRED`;
//! - `createForumTopic` in a chat without topics: `Bad Request: the chat is not a forum`;
//! - an edit that changes nothing: `Bad Request: message is not modified: …`;
//! - an edit of an unknown message: `Bad Request: message to edit not found`;
//! - an edit failed on purpose (`fail_edits`, a deleted message): `Bad Request: message to
//!   edit not found`;
//! - an unknown callback query id: `Bad Request: query is too old and response timeout
//!   expired or query ID is invalid`.

use super::http::{err, ok, param_i64, param_json, param_str, Params};
use super::*;

/// What kind of chat an id is (set by a test; by default a positive id is a private chat
/// and a negative one a basic group, as before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatSetup {
    Private,
    Group,
    /// A supergroup with topics on.
    Forum,
}

/// One forum topic as the stand-in keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicInfo {
    pub chat_id: i64,
    pub thread_id: i64,
    pub name: String,
    pub icon_color: Option<u32>,
    pub closed: bool,
    pub deleted: bool,
    /// The caller that created it (its pid).
    pub created_by: Option<u32>,
}

/// An accepted `editMessageText`.
#[derive(Debug, Clone, PartialEq)]
pub struct EditedMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub text: String,
    pub buttons: Vec<Vec<(String, String)>>,
    pub at: Instant,
    pub pid: Option<u32>,
}

/// An `answerCallbackQuery` received.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: Option<String>,
    pub show_alert: bool,
    pub at: Instant,
    pub pid: Option<u32>,
}

/// An injected button tap, and when it was injected (to time the answer).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct InjectedTap {
    pub id: String,
    pub at: Instant,
}

/// Rows of inline buttons: (label, callback data).
pub type Buttons = Vec<Vec<(String, String)>>;

/// The control-room part of the stand-in's state.
#[derive(Debug, Default)]
pub(super) struct RoomState {
    pub chats: HashMap<i64, ChatSetup>,
    /// Chats whose bot lacks the Manage Topics right.
    pub no_topic_rights: Vec<i64>,
    pub topics: Vec<TopicInfo>,
    pub edits: Vec<EditedMessage>,
    pub answers: Vec<CallbackAnswer>,
    pub taps: Vec<InjectedTap>,
    pub next_callback: u64,
    /// The next this many `editMessageText` fail with "message to edit not found" (as if
    /// someone deleted the message); each failure is recorded.
    pub fail_edits: usize,
    pub failed_edits: Vec<(i64, Instant)>,
    /// Messages' current text and keyboard, by (chat, message id): what an edit compares.
    pub current: HashMap<(i64, i64), (String, Buttons)>,
}

impl RoomState {
    pub fn setup(&self, chat_id: i64) -> ChatSetup {
        self.chats.get(&chat_id).copied().unwrap_or(if chat_id < 0 {
            ChatSetup::Group
        } else {
            ChatSetup::Private
        })
    }

    fn topic_mut(&mut self, chat_id: i64, thread_id: i64) -> Option<&mut TopicInfo> {
        self.topics
            .iter_mut()
            .find(|t| t.chat_id == chat_id && t.thread_id == thread_id)
    }
}

/// The `chat` object of a message in `chat_id`.
pub(super) fn chat_json_in(room: &RoomState, chat_id: i64) -> Value {
    match room.setup(chat_id) {
        ChatSetup::Private => {
            json!({"id": chat_id, "type": "private", "first_name": "Tester", "username": "tester"})
        }
        ChatSetup::Group => json!({"id": chat_id, "type": "group", "title": "piv test group"}),
        ChatSetup::Forum => json!({
            "id": chat_id, "type": "supergroup", "title": "piv test forum", "is_forum": true
        }),
    }
}

/// Inline keyboard rows from a `reply_markup` parameter: (label, callback data).
pub(super) fn buttons_of(params: &Params) -> Vec<Vec<(String, String)>> {
    let Some(markup) = param_json(params, "reply_markup") else {
        return Vec::new();
    };
    markup
        .get("inline_keyboard")
        .and_then(Value::as_array)
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    row.as_array()
                        .map(|buttons| {
                            buttons
                                .iter()
                                .map(|b| {
                                    let field = |k: &str| {
                                        b.get(k).and_then(Value::as_str).unwrap_or("").to_string()
                                    };
                                    (field("text"), field("callback_data"))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `reply_markup` of a message carrying `buttons` (none when empty).
pub(super) fn markup_json(buttons: &[Vec<(String, String)>]) -> Option<Value> {
    (!buttons.is_empty()).then(|| {
        json!({"inline_keyboard": buttons.iter().map(|row| row.iter().map(|(text, data)| {
            json!({"text": text, "callback_data": data})
        }).collect::<Vec<_>>()).collect::<Vec<_>>()})
    })
}

/// Why a send into `thread` of `chat` is refused, if it is (Telegram's texts).
pub(super) fn thread_refusal(room: &RoomState, chat: i64, thread: Option<i64>) -> Option<String> {
    let thread = thread?;
    if room.setup(chat) != ChatSetup::Forum {
        // Telegram ignores a thread id in a chat without topics unless it names a message.
        return None;
    }
    if thread == 1 {
        // General's id is accepted by Telegram only for some methods; piv must omit it.
        return Some("Bad Request: message thread not found".into());
    }
    match room
        .topics
        .iter()
        .find(|t| t.chat_id == chat && t.thread_id == thread)
    {
        None => Some("Bad Request: message thread not found".into()),
        Some(t) if t.deleted => Some("Bad Request: message thread not found".into()),
        Some(t) if t.closed => Some("Bad Request: TOPIC_CLOSED".into()),
        Some(_) => None,
    }
}

pub(super) fn get_chat(inner: &Inner, params: &Params) -> (u16, Value) {
    let Some(chat_id) = param_i64(params, "chat_id") else {
        return err(400, "Bad Request: chat_id is empty");
    };
    let state = inner.lock();
    let mut chat = chat_json_in(&state.room, chat_id);
    chat["accent_color_id"] = json!(0);
    chat["max_reaction_count"] = json!(11);
    chat["accepted_gift_types"] = json!({
        "unlimited_gifts": false, "limited_gifts": false,
        "unique_gifts": false, "premium_subscription": false
    });
    ok(chat)
}

pub(super) fn create_forum_topic(inner: &Inner, params: &Params, pid: Option<u32>) -> (u16, Value) {
    let Some(chat_id) = param_i64(params, "chat_id") else {
        return err(400, "Bad Request: chat_id is empty");
    };
    let name = param_str(params, "name").unwrap_or_default();
    if name.is_empty() || name.chars().count() > 128 {
        return err(400, "Bad Request: TOPIC_TITLE_EMPTY");
    }
    let icon_color = param_i64(params, "icon_color").map(|c| c as u32);
    if icon_color.is_some_and(|c| !FORUM_ICON_COLORS.contains(&c)) {
        return err(400, "Bad Request: invalid icon_color specified");
    }
    let mut state = inner.lock();
    if state.room.setup(chat_id) != ChatSetup::Forum {
        return err(400, "Bad Request: the chat is not a forum");
    }
    if state.room.no_topic_rights.contains(&chat_id) {
        return err(400, "Bad Request: not enough rights to create a topic");
    }
    // Topic ids are message ids of the topic's service message.
    state.next_message_id += 1;
    let thread_id = state.next_message_id;
    state.room.topics.push(TopicInfo {
        chat_id,
        thread_id,
        name: name.clone(),
        icon_color,
        closed: false,
        deleted: false,
        created_by: pid,
    });
    drop(state);
    inner.changed.notify_all();
    ok(json!({
        "message_thread_id": thread_id, "name": name,
        "icon_color": icon_color.unwrap_or(FORUM_ICON_COLORS[0])
    }))
}

/// `editForumTopic`, `closeForumTopic`, `reopenForumTopic`.
pub(super) fn change_forum_topic(inner: &Inner, method: &str, params: &Params) -> (u16, Value) {
    let (Some(chat_id), Some(thread_id)) = (
        param_i64(params, "chat_id"),
        param_i64(params, "message_thread_id"),
    ) else {
        return err(400, "Bad Request: chat_id or message_thread_id is empty");
    };
    let mut state = inner.lock();
    if state.room.setup(chat_id) != ChatSetup::Forum {
        return err(400, "Bad Request: the chat is not a forum");
    }
    if state.room.no_topic_rights.contains(&chat_id) {
        return err(400, "Bad Request: CHAT_ADMIN_REQUIRED");
    }
    let Some(topic) = state
        .room
        .topic_mut(chat_id, thread_id)
        .filter(|t| !t.deleted)
    else {
        return err(400, "Bad Request: TOPIC_ID_INVALID");
    };
    match method {
        "closeforumtopic" if topic.closed => return err(400, "Bad Request: TOPIC_NOT_MODIFIED"),
        "closeforumtopic" => topic.closed = true,
        "reopenforumtopic" if !topic.closed => return err(400, "Bad Request: TOPIC_NOT_MODIFIED"),
        "reopenforumtopic" => topic.closed = false,
        _ => {
            if let Some(name) = param_str(params, "name").filter(|n| !n.is_empty()) {
                topic.name = name;
            }
        }
    }
    drop(state);
    inner.changed.notify_all();
    ok(json!(true))
}

pub(super) fn edit_message_text(inner: &Inner, params: &Params, pid: Option<u32>) -> (u16, Value) {
    let (Some(chat_id), Some(message_id)) = (
        param_i64(params, "chat_id"),
        param_i64(params, "message_id"),
    ) else {
        return err(400, "Bad Request: message identifier is not specified");
    };
    let Some(text) = param_str(params, "text").filter(|t| !t.trim().is_empty()) else {
        return err(400, "Bad Request: message text is empty");
    };
    let html = param_str(params, "parse_mode").is_some_and(|m| m.eq_ignore_ascii_case("html"));
    let visible = if html {
        match parse_telegram_html(&text) {
            Ok(v) => v,
            Err(e) => return err(400, &format!("Bad Request: can't parse entities: {e}")),
        }
    } else {
        text.clone()
    };
    if visible.chars().map(char::len_utf16).sum::<usize>() > MESSAGE_LIMIT {
        return err(400, "Bad Request: MESSAGE_TOO_LONG");
    }
    let buttons = buttons_of(params);
    let mut state = inner.lock();
    if state.room.fail_edits > 0 {
        state.room.fail_edits -= 1;
        state.room.failed_edits.push((message_id, Instant::now()));
        return err(400, "Bad Request: message to edit not found");
    }
    let Some(current) = state.room.current.get(&(chat_id, message_id)) else {
        return err(400, "Bad Request: message to edit not found");
    };
    if current.0 == text && current.1 == buttons {
        return err(
            400,
            "Bad Request: message is not modified: specified new message content and reply \
             markup are exactly the same as a current content and reply markup of the message",
        );
    }
    state
        .room
        .current
        .insert((chat_id, message_id), (text.clone(), buttons.clone()));
    state.room.edits.push(EditedMessage {
        chat_id,
        message_id,
        text: text.clone(),
        buttons: buttons.clone(),
        at: Instant::now(),
        pid,
    });
    let chat = chat_json_in(&state.room, chat_id);
    drop(state);
    inner.changed.notify_all();
    let mut message = json!({
        "message_id": message_id, "date": unix_now(), "edit_date": unix_now(), "chat": chat,
        "from": bot_user_json(inner), "text": visible,
    });
    if let Some(markup) = markup_json(&buttons) {
        message["reply_markup"] = markup;
    }
    ok(message)
}

pub(super) fn answer_callback_query(
    inner: &Inner,
    params: &Params,
    pid: Option<u32>,
) -> (u16, Value) {
    let id = param_str(params, "callback_query_id").unwrap_or_default();
    let mut state = inner.lock();
    if !state.room.taps.iter().any(|t| t.id == id) {
        return err(
            400,
            "Bad Request: query is too old and response timeout expired or query ID is invalid",
        );
    }
    let show_alert = params
        .get("show_alert")
        .is_some_and(|v| v == &json!(true) || v == "true");
    state.room.answers.push(CallbackAnswer {
        callback_query_id: id,
        text: param_str(params, "text"),
        show_alert,
        at: Instant::now(),
        pid,
    });
    drop(state);
    inner.changed.notify_all();
    ok(json!(true))
}

pub(super) fn bot_user_json(inner: &Inner) -> Value {
    json!({"id": bot_id_of(&inner.token), "is_bot": true, "first_name": "Piv Test Bot", "username": BOT_USERNAME})
}

/// Queues a text message typed inside a topic.
pub(super) fn inject_topic_text(inner: &Inner, chat_id: i64, thread_id: i64, text: &str) -> i64 {
    let mut message = base_message(inner, chat_id);
    message["text"] = json!(text);
    message["message_thread_id"] = json!(thread_id);
    message["is_topic_message"] = json!(true);
    if text.starts_with('/') {
        let command = text.split_whitespace().next().unwrap_or("");
        let length: usize = command.chars().map(char::len_utf16).sum();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
    }
    inject_update(inner, "message", message)
}

/// Queues a button tap (see [`BotApiStandIn::inject_tap`]).
pub(super) fn inject_tap(
    inner: &Inner,
    message_id: i64,
    data: &str,
    user_id: i64,
) -> Option<String> {
    let (message, id) = {
        let mut state = inner.lock();
        let sent = state
            .sent
            .iter()
            .find(|m| m.message_id == message_id)?
            .clone();
        let (text, buttons) = state
            .room
            .current
            .get(&(sent.chat_id, message_id))
            .cloned()
            .unwrap_or((sent.text.clone(), sent.buttons.clone()));
        state.room.next_callback += 1;
        let id = format!("{}{:06}", bot_id_of(&inner.token), state.room.next_callback);
        state.room.taps.push(InjectedTap {
            id: id.clone(),
            at: Instant::now(),
        });
        let mut message = json!({
            "message_id": message_id, "date": unix_now(),
            "chat": chat_json_in(&state.room, sent.chat_id),
            "from": bot_user_json(inner),
            "text": parse_telegram_html(&text).unwrap_or(text),
        });
        if let Some(thread) = sent.thread_id {
            message["message_thread_id"] = json!(thread);
            message["is_topic_message"] = json!(true);
        }
        if let Some(markup) = markup_json(&buttons) {
            message["reply_markup"] = markup;
        }
        (message, id)
    };
    let user =
        json!({"id": user_id, "is_bot": false, "first_name": "Tester", "username": "tester"});
    inject_update(
        inner,
        "callback_query",
        json!({
            "id": id, "from": user, "message": message,
            "chat_instance": "-5550001", "data": data,
        }),
    );
    Some(id)
}

/// The control room's HTTP test API: `GET room` (topics, edits, callback answers), `POST
/// chat {chat_id, setup: forum|group|private}`, `POST tap {message_id, data, user_id?}`.
pub(super) fn test_api(inner: &Inner, what: &str, params: &Params) -> (u16, Value) {
    match what {
        "room" => {
            let state = inner.lock();
            ok(json!({
                "topics": state.room.topics.iter().map(|t| json!({
                    "chat_id": t.chat_id, "thread_id": t.thread_id, "name": t.name,
                    "icon_color": t.icon_color, "closed": t.closed, "deleted": t.deleted
                })).collect::<Vec<_>>(),
                "edits": state.room.edits.iter().map(|e| json!({
                    "chat_id": e.chat_id, "message_id": e.message_id, "text": e.text,
                    "buttons": e.buttons
                })).collect::<Vec<_>>(),
                "callback_answers": state.room.answers.iter().map(|a| json!({
                    "id": a.callback_query_id, "text": a.text, "show_alert": a.show_alert
                })).collect::<Vec<_>>(),
            }))
        }
        "chat" => {
            let Some(chat_id) = param_i64(params, "chat_id") else {
                return err(400, "chat_id required");
            };
            let setup = match param_str(params, "setup").as_deref() {
                Some("forum") => ChatSetup::Forum,
                Some("group") => ChatSetup::Group,
                Some("private") => ChatSetup::Private,
                _ => return err(400, "setup: forum|group|private"),
            };
            inner.lock().room.chats.insert(chat_id, setup);
            ok(json!(true))
        }
        _ => {
            let (Some(message_id), Some(data)) =
                (param_i64(params, "message_id"), param_str(params, "data"))
            else {
                return err(400, "message_id and data required");
            };
            let user = param_i64(params, "user_id").unwrap_or(4242);
            match inject_tap(inner, message_id, data.as_str(), user) {
                Some(id) => ok(json!({"callback_query_id": id})),
                None => err(404, "no such message"),
            }
        }
    }
}

/// The icon colours `createForumTopic` accepts.
pub const FORUM_ICON_COLORS: [u32; 6] =
    [0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F];

/// The control-room test API.
impl BotApiStandIn {
    /// Sets what kind of chat `chat_id` is (`getChat`, the `chat` of its messages, and
    /// whether topics can be made in it).
    pub fn set_chat(&self, chat_id: i64, setup: ChatSetup) {
        self.inner.lock().room.chats.insert(chat_id, setup);
    }

    /// Whether the bot may manage topics in `chat_id` (it may, unless told otherwise).
    pub fn set_topic_rights(&self, chat_id: i64, allowed: bool) {
        let mut state = self.inner.lock();
        state.room.no_topic_rights.retain(|c| *c != chat_id);
        if !allowed {
            state.room.no_topic_rights.push(chat_id);
        }
    }

    /// Every topic ever created (deleted ones marked).
    pub fn topics(&self) -> Vec<TopicInfo> {
        self.inner.lock().room.topics.clone()
    }

    /// Deletes a topic, as a chat admin would: sends into it fail with "message thread not
    /// found". Returns whether it existed.
    pub fn delete_topic(&self, chat_id: i64, thread_id: i64) -> bool {
        let mut state = self.inner.lock();
        let found = state
            .room
            .topic_mut(chat_id, thread_id)
            .map(|t| t.deleted = true);
        drop(state);
        self.inner.changed.notify_all();
        found.is_some()
    }

    /// Closes a topic, as a chat admin would: sends into it fail with `TOPIC_CLOSED`.
    pub fn close_topic(&self, chat_id: i64, thread_id: i64) -> bool {
        let mut state = self.inner.lock();
        let found = state
            .room
            .topic_mut(chat_id, thread_id)
            .map(|t| t.closed = true);
        drop(state);
        self.inner.changed.notify_all();
        found.is_some()
    }

    /// Queues a text message typed inside topic `thread_id` of forum chat `chat_id`.
    pub fn inject_topic_message(&self, chat_id: i64, thread_id: i64, text: &str) -> i64 {
        inject_topic_text(&self.inner, chat_id, thread_id, text)
    }

    /// Queues a tap on the button with callback data `data` of sent message `message_id`,
    /// by user `user_id`; returns the callback query's id (None: no such message).
    pub fn inject_tap(&self, message_id: i64, data: &str, user_id: i64) -> Option<String> {
        inject_tap(&self.inner, message_id, data, user_id)
    }

    /// The next `n` edits fail with "message to edit not found".
    pub fn fail_edits(&self, n: usize) {
        self.inner.lock().room.fail_edits = n;
    }

    /// The edits failed by [`BotApiStandIn::fail_edits`]: (message id, when).
    pub fn failed_edits(&self) -> Vec<(i64, Instant)> {
        self.inner.lock().room.failed_edits.clone()
    }

    /// Every accepted `editMessageText`, in order.
    pub fn edits(&self) -> Vec<EditedMessage> {
        self.inner.lock().room.edits.clone()
    }

    /// Every `answerCallbackQuery` received, in order.
    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.inner.lock().room.answers.clone()
    }

    /// How long after its injection tap `id` was answered (None: not yet).
    pub fn tap_answered_after(&self, id: &str) -> Option<Duration> {
        let state = self.inner.lock();
        let tap = state.room.taps.iter().find(|t| t.id == id)?;
        let answer = state
            .room
            .answers
            .iter()
            .find(|a| a.callback_query_id == id)?;
        Some(answer.at.saturating_duration_since(tap.at))
    }

    /// Waits until `check` finds something in the edits, up to `timeout`.
    pub fn wait_for_edit(
        &self,
        pred: impl Fn(&EditedMessage) -> bool,
        timeout: Duration,
    ) -> Option<EditedMessage> {
        self.wait_until(timeout, |s| s.room.edits.iter().find(|e| pred(e)).cloned())
    }

    /// Waits until a callback answer for `id` arrives, up to `timeout`.
    pub fn wait_for_callback_answer(&self, id: &str, timeout: Duration) -> Option<CallbackAnswer> {
        self.wait_until(timeout, |s| {
            s.room
                .answers
                .iter()
                .find(|a| a.callback_query_id == id)
                .cloned()
        })
    }

    /// Waits until at least `n` live topics exist in `chat_id`.
    pub fn wait_for_topics(&self, chat_id: i64, n: usize, timeout: Duration) -> Vec<TopicInfo> {
        self.wait_until(timeout, |s| {
            let live: Vec<TopicInfo> = s
                .room
                .topics
                .iter()
                .filter(|t| t.chat_id == chat_id && !t.deleted)
                .cloned()
                .collect();
            (live.len() >= n).then_some(live)
        })
        .unwrap_or_else(|| {
            self.topics()
                .into_iter()
                .filter(|t| t.chat_id == chat_id && !t.deleted)
                .collect()
        })
    }
}
