//! A local Bot API stand-in, written from the Bot API documentation, for the tests and the demo: long-poll getUpdates with offset confirmation, 409 for a second poller, per-chat 429 with retry_after, 400 over 4096 characters.
//!
//! [`BotApiStandIn::start`] binds `127.0.0.1:0` and serves `/bot<token>/<method>` (method
//! names case-insensitive, as Telegram matches them and as teloxide sends them:
//! `GetUpdates`). Parameters come as a JSON body, a form body or the query string.
//! Each connection is served on its own thread (`http1`), so a long poll never holds up a
//! send.
//!
//! What it reproduces, and why a test cares:
//! - `getUpdates`: `offset` confirms (forgets) every update below it; `timeout` long-polls
//!   and returns as soon as an update arrives; `allowed_updates` is remembered across
//!   calls like Telegram does; a second `getUpdates` on the token ends the running one
//!   with 409 `Conflict: terminated by other getUpdates request; …`.
//! - `sendMessage`: 400 over 4096 characters (counted as Telegram does, after HTML
//!   parsing, in UTF-16 units), 400 for HTML Telegram would not parse (an unbalanced or
//!   cut tag), 429 with `parameters.retry_after` when a chat's minimum interval is not
//!   respected or a forced 429 storm is on.
//! - `getMe` with every field teloxide requires; `setMyCommands` recorded.
//! - A wrong token gets 401 `Unauthorized`.
//! - Several bots on one port ([`BotApiStandIn::start_bots`]): each token has its own
//!   updates, polls (a 409 ends only a poll on the same token), sends and test API handle.
//! - The chat control room (issue 14, `forum.rs`): chats set up as forum / group /
//!   private (`getChat`), forum topics and their errors, `message_thread_id` on sends and
//!   updates, `editMessageText`, inline keyboards, button taps (`callback_query`) and
//!   `answerCallbackQuery`.
//!
//! The test API (thread-safe methods on [`BotApiStandIn`]) injects chat messages and
//! reads back what was sent; the same is reachable over HTTP under `/__test/…` for a
//! driver in another process (see [`BotApiStandIn::test_url`]).
//!
//! Each request's process is identified from piv's `User-Agent` (`piv/<v> pid/<pid>`),
//! so a test can tell which instance polled or sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

mod forum;
mod html;
mod http;

pub use forum::{CallbackAnswer, ChatSetup, EditedMessage, TopicInfo, FORUM_ICON_COLORS};
pub use html::parse_telegram_html;
use http::{api_error, handle, respond};

/// Telegram's limit on a message's text.
const MESSAGE_LIMIT: usize = 4096;
/// Telegram caps a long poll at 50 s.
const MAX_POLL_SECS: u64 = 50;
const CONFLICT_DESCRIPTION: &str =
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";
/// The stand-in bot's identity, as `getMe` reports it.
pub const BOT_USERNAME: &str = "piv_test_bot";
pub const BOT_ID: i64 = 7_000_001;

/// A message the bot sent (accepted by the stand-in).
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    pub at: Instant,
    /// The sending process, from its User-Agent.
    pub pid: Option<u32>,
    /// The forum topic it was sent into (`message_thread_id`; none: General or no topics).
    pub thread_id: Option<i64>,
    /// Its inline keyboard: rows of (label, callback data).
    pub buttons: Vec<Vec<(String, String)>>,
}

/// A `sendMessage` the stand-in refused (400 or 429).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSend {
    pub chat_id: Option<i64>,
    pub text: Option<String>,
    pub error_code: u16,
    pub description: String,
    pub at: Instant,
    pub pid: Option<u32>,
}

/// One `getUpdates` call as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct PollStart {
    pub at: Instant,
    pub offset: Option<i64>,
    pub timeout_secs: u64,
    pub allowed_updates: Option<Vec<String>>,
    pub pid: Option<u32>,
    pub remote: Option<SocketAddr>,
}

/// One `getUpdates` call from its arrival to its answer, as the stand-in saw it (a
/// poll still waiting is not listed yet). A killed caller's poll ends when the stand-in
/// answers it, which may be long after the caller died: a test compares spans by time
/// and cuts a killed caller's span at the kill.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSpan {
    pub pid: Option<u32>,
    pub started: Instant,
    pub ended: Instant,
    /// The HTTP status of the answer (200, or 409 when a newer poll ended it).
    pub status: u16,
}

/// A running `getUpdates` ended with 409 by a newer one. The stand-in cannot see that a
/// killed poller's socket is gone, so a dead poller's pending poll is counted too; the
/// pids let a test tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub at: Instant,
    pub terminated_pid: Option<u32>,
    pub terminated_remote: Option<SocketAddr>,
    pub by_pid: Option<u32>,
}

#[derive(Debug, Clone)]
struct StoredUpdate {
    id: i64,
    kind: String,
    payload: Value,
}

#[derive(Debug, Default)]
struct State {
    stopping: bool,
    next_update_id: i64,
    next_message_id: i64,
    /// Unconfirmed updates, by id.
    updates: Vec<StoredUpdate>,
    /// The `allowed_updates` of the last call that named them (Telegram remembers it).
    allowed_updates: Option<Vec<String>>,
    /// Bumped by every `getUpdates`; a waiting poll that sees it move was superseded.
    poll_generation: u64,
    active_poll: Option<(u64, Option<u32>, Option<SocketAddr>)>,
    poll_starts: Vec<PollStart>,
    poll_spans: Vec<PollSpan>,
    conflicts: Vec<Conflict>,
    sent: Vec<SentMessage>,
    rejected: Vec<RejectedSend>,
    min_interval: Option<Duration>,
    last_send: HashMap<i64, Instant>,
    force_429: usize,
    commands: Vec<Vec<(String, String)>>,
    /// The fault modes of issue 13 (see [`Faults`]).
    faults: Faults,
    /// Every Bot API method call: (lowercase method, arrival, caller's pid).
    faults_log: Vec<(String, Instant, Option<u32>)>,
    /// Forum topics, edits, button taps (issue 14; see `forum`).
    room: forum::RoomState,
}

/// Misbehaviours a test can switch on (issue 13): a server that answers `getUpdates` at
/// once, an outage, a long flood ban.
#[derive(Debug, Default, Clone)]
struct Faults {
    /// `getUpdates` answers at once with every stored update, ignoring `timeout` and
    /// `offset` (a misconfigured proxy, a broken self-hosted server).
    instant_polls: bool,
    /// Until then every Bot API call fails as the outage says.
    outage: Option<(Instant, Outage)>,
    /// The `retry_after` (seconds) of the forced 429s; 1 when unset.
    forced_retry_after: Option<u64>,
}

/// How an outage shows itself to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// `502 Bad Gateway` from a proxy in front of the API.
    BadGateway,
    /// The connection is closed without a valid HTTP answer.
    DroppedConnection,
}

struct Inner {
    token: String,
    state: Mutex<State>,
    /// Notified on every state change: new updates, new polls, sends, stop.
    changed: Condvar,
    started: Instant,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Bot API server on a local port, or one bot of a server serving several
/// ([`BotApiStandIn::start_bots`]). Stops when dropped (the first bot of a server stops
/// them all).
pub struct BotApiStandIn {
    inner: Arc<Inner>,
    /// The HTTP server (only in the first handle, which stops it).
    server: Mutex<Option<crate::http1::Server>>,
    /// Every bot of the server, stopped with it (only the handle owning the server).
    all: Vec<Arc<Inner>>,
    url: String,
}

impl std::fmt::Debug for BotApiStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotApiStandIn")
            .field("url", &self.url)
            .finish()
    }
}

impl BotApiStandIn {
    /// Serves the Bot API for `token` on `127.0.0.1` at a free port.
    pub fn start(token: &str) -> BotApiStandIn {
        Self::start_bots(&[token]).remove(0)
    }

    /// Serves several bots on one port (one `TELEGRAM_API_URL` for instances with
    /// different tokens): one handle per token, in order, each with its own updates,
    /// polls, 409s and sends. A request is routed by the token in its path (an unknown
    /// token gets 401 from the first bot); `/__test/…` reaches the first bot. Dropping
    /// the first handle stops the server.
    pub fn start_bots(tokens: &[&str]) -> Vec<BotApiStandIn> {
        assert!(!tokens.is_empty(), "at least one token");
        let bots: Vec<Arc<Inner>> = tokens
            .iter()
            .map(|token| {
                Arc::new(Inner {
                    token: token.to_string(),
                    state: Mutex::new(State {
                        next_update_id: 100_000,
                        next_message_id: 1,
                        ..State::default()
                    }),
                    changed: Condvar::new(),
                    started: Instant::now(),
                })
            })
            .collect();
        let server = {
            let bots = bots.clone();
            crate::http1::Server::start("bot-api-stand-in", move |request| {
                let inner = bot_for(&bots, request.url()).clone();
                if inner.lock().stopping {
                    respond(request, 503, &api_error(503, "stopping", None));
                    return;
                }
                handle(&inner, request);
            })
            .expect("bind 127.0.0.1:0")
        };
        let addr = server.addr();
        let url = format!("http://{addr}");
        let mut server = Some(server);
        bots.iter()
            .enumerate()
            .map(|(i, inner)| BotApiStandIn {
                inner: inner.clone(),
                server: Mutex::new(server.take()),
                all: if i == 0 { bots.clone() } else { Vec::new() },
                url: url.clone(),
            })
            .collect()
    }

    /// The API base URL, for `TELEGRAM_API_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the HTTP test API lives (`<url>/__test`): `GET sent`, `GET state`,
    /// `POST inject {chat_id, text, edited?}`, `POST rate_limit {min_interval_ms}`,
    /// `POST force_429 {count}`.
    pub fn test_url(&self) -> String {
        format!("{}/__test", self.url)
    }

    /// Queues a text message from `chat_id` (a private chat when positive, a group when
    /// negative) and returns its update id.
    pub fn inject_message(&self, chat_id: i64, text: &str) -> i64 {
        inject_text(&self.inner, chat_id, text, false)
    }

    /// Queues an `edited_message` update.
    pub fn inject_edited_message(&self, chat_id: i64, text: &str) -> i64 {
        inject_text(&self.inner, chat_id, text, true)
    }

    /// Queues a message without text (a photo).
    pub fn inject_message_without_text(&self, chat_id: i64) -> i64 {
        let mut message = base_message(&self.inner, chat_id);
        message["photo"] = json!([{
            "file_id": "AgACAgIAAxkBAAIB", "file_unique_id": "AQADAgAT",
            "file_size": 1234, "width": 90, "height": 90
        }]);
        inject_update(&self.inner, "message", message)
    }

    /// Queues any update: `kind` is its field name (`message`, `callback_query`, …).
    pub fn inject_update(&self, kind: &str, payload: Value) -> i64 {
        inject_update(&self.inner, kind, payload)
    }

    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.inner.lock().sent.clone()
    }

    pub fn rejected_sends(&self) -> Vec<RejectedSend> {
        self.inner.lock().rejected.clone()
    }

    /// How many sends got a 429.
    pub fn rejected_429(&self) -> usize {
        self.inner
            .lock()
            .rejected
            .iter()
            .filter(|r| r.error_code == 429)
            .count()
    }

    /// The first sent message matching `pred` (earlier ones included), waiting up to `timeout`.
    pub fn wait_for_sent(
        &self,
        pred: impl Fn(&SentMessage) -> bool,
        timeout: Duration,
    ) -> Option<SentMessage> {
        self.wait_until(timeout, |s| s.sent.iter().find(|m| pred(m)).cloned())
    }

    /// Waits until at least `n` `getUpdates` calls have started.
    pub fn wait_for_poll_starts(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |s| (s.poll_starts.len() >= n).then_some(()))
            .is_some()
    }

    fn wait_until<T>(&self, timeout: Duration, check: impl Fn(&State) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn poll_starts(&self) -> Vec<PollStart> {
        self.inner.lock().poll_starts.clone()
    }

    /// Every answered `getUpdates`, from arrival to answer, in the order answered.
    pub fn poll_spans(&self) -> Vec<PollSpan> {
        self.inner.lock().poll_spans.clone()
    }

    /// How many running polls were ended with 409 by a newer one.
    pub fn conflicts_409(&self) -> usize {
        self.inner.lock().conflicts.len()
    }

    pub fn conflicts(&self) -> Vec<Conflict> {
        self.inner.lock().conflicts.clone()
    }

    /// Updates not yet confirmed by an offset.
    pub fn pending_update_ids(&self) -> Vec<i64> {
        self.inner.lock().updates.iter().map(|u| u.id).collect()
    }

    /// A minimum interval between two sends to one chat (`None`: no limit); a send that
    /// comes sooner gets 429 with the seconds left (at least 1) as `retry_after`.
    pub fn set_rate_limit(&self, min_interval: Option<Duration>) {
        self.inner.lock().min_interval = min_interval;
    }

    /// The next `n` sends get 429 `retry_after: 1`, whatever their timing.
    pub fn force_429(&self, n: usize) {
        self.inner.lock().force_429 = n;
    }

    /// Every `setMyCommands` list received: (command, description).
    pub fn commands_set(&self) -> Vec<Vec<(String, String)>> {
        self.inner.lock().commands.clone()
    }

    /// `getUpdates` answers at once with every update still stored, ignoring `timeout`
    /// and `offset` (nothing is ever confirmed) while `on`.
    pub fn set_instant_polls(&self, on: bool) {
        self.inner.lock().faults.instant_polls = on;
        self.inner.changed.notify_all();
    }

    /// For the next `duration`, every Bot API call fails as `kind` says (test calls work).
    pub fn outage_for(&self, duration: Duration, kind: Outage) {
        self.inner.lock().faults.outage = Some((Instant::now() + duration, kind));
    }

    /// Ends an outage at once.
    pub fn end_outage(&self) {
        self.inner.lock().faults.outage = None;
    }

    /// The next `n` sends get 429 with `retry_after` = `seconds` (an hour-long flood ban).
    pub fn force_429_retry_after(&self, n: usize, seconds: u64) {
        let mut state = self.inner.lock();
        state.force_429 = n;
        state.faults.forced_retry_after = Some(seconds);
    }

    /// Queues a text message from `chat_id` whose `date` is `age` in the past (what
    /// Telegram hands over after a long time without polling).
    pub fn inject_message_sent_ago(&self, chat_id: i64, text: &str, age: Duration) -> i64 {
        let mut message = base_message(&self.inner, chat_id);
        message["date"] = json!(unix_now() - age.as_secs() as i64);
        message["text"] = json!(text);
        if text.starts_with('/') {
            let command = text.split_whitespace().next().unwrap_or("");
            let length: usize = command.chars().map(char::len_utf16).sum();
            message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
        }
        inject_update(&self.inner, "message", message)
    }

    /// Every request to a Bot API method, in arrival order: (lowercase method, when, the
    /// caller's pid).
    pub fn requests(&self) -> Vec<(String, Instant, Option<u32>)> {
        self.inner.lock().faults_log.clone()
    }

    /// Stops serving: running long polls return empty, the port is released when the
    /// stand-in is dropped. Idempotent.
    pub fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.changed.notify_all();
        if self.all.is_empty() {
            // Another bot's handle owns the server.
            return;
        }
        for bot in &self.all {
            bot.lock().stopping = true;
            bot.changed.notify_all();
        }
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(server);
    }
}

impl Drop for BotApiStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bot a request is for: the one whose token is in the path (`/bot<token>/…`), else
/// the first (which answers 401 to a wrong token, and serves `/__test`).
fn bot_for<'a>(bots: &'a [Arc<Inner>], url: &str) -> &'a Arc<Inner> {
    let first = url.trim_start_matches('/').split('/').next().unwrap_or("");
    let token = http::percent_decode(first);
    token
        .strip_prefix("bot")
        .and_then(|t| bots.iter().find(|b| b.token == t))
        .unwrap_or(&bots[0])
}

/// The bot id of a token (the digits before ':'), as `getMe` reports it; [`BOT_ID`] for
/// a token without one.
fn bot_id_of(token: &str) -> i64 {
    token
        .split_once(':')
        .and_then(|(id, _)| id.parse().ok())
        .unwrap_or(BOT_ID)
}

// ---------------------------------------------------------------------------------------
// Updates

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn user_json(chat_id: i64) -> Value {
    let id = if chat_id > 0 { chat_id } else { 4242 };
    json!({"id": id, "is_bot": false, "first_name": "Tester", "username": "tester", "language_code": "en"})
}

fn base_message(inner: &Inner, chat_id: i64) -> Value {
    let (message_id, chat) = {
        let mut s = inner.lock();
        s.next_message_id += 1;
        (s.next_message_id, forum::chat_json_in(&s.room, chat_id))
    };
    json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat,
        "from": user_json(chat_id),
    })
}

fn inject_text(inner: &Inner, chat_id: i64, text: &str, edited: bool) -> i64 {
    let mut message = base_message(inner, chat_id);
    message["text"] = json!(text);
    if text.starts_with('/') {
        // Telegram marks the command as an entity, its length in UTF-16 units.
        let command = text.split_whitespace().next().unwrap_or("");
        let length: usize = command.chars().map(char::len_utf16).sum();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": length}]);
    }
    if edited {
        message["edit_date"] = json!(unix_now());
        inject_update(inner, "edited_message", message)
    } else {
        inject_update(inner, "message", message)
    }
}

fn inject_update(inner: &Inner, kind: &str, payload: Value) -> i64 {
    let id = {
        let mut s = inner.lock();
        s.next_update_id += 1;
        let id = s.next_update_id;
        s.updates.push(StoredUpdate {
            id,
            kind: kind.to_string(),
            payload,
        });
        id
    };
    inner.changed.notify_all();
    id
}

fn update_json(u: &StoredUpdate) -> Value {
    let mut obj = Map::new();
    obj.insert("update_id".into(), json!(u.id));
    obj.insert(u.kind.clone(), u.payload.clone());
    Value::Object(obj)
}
