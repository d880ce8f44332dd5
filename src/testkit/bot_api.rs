//! A local Bot API stand-in, written from the Bot API documentation, for the tests and the demo: long-poll getUpdates with offset confirmation, 409 for a second poller, per-chat 429 with retry_after, 400 over 4096 characters.
//!
//! [`BotApiStandIn::start`] binds `127.0.0.1:0` and serves `/bot<token>/<method>` (method
//! names case-insensitive, as Telegram matches them and as teloxide sends them:
//! `GetUpdates`). Parameters come as a JSON body, a form body or the query string.
//! Each request runs on its own thread, so a long poll never holds up a send.
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
//!
//! The test API (thread-safe methods on [`BotApiStandIn`]) injects chat messages and
//! reads back what was sent; the same is reachable over HTTP under `/__test/…` for a
//! driver in another process (see [`BotApiStandIn::test_url`]).
//!
//! Each request's process is identified from piv's `User-Agent` (`piv/<v> pid/<pid>`),
//! so a test can tell which instance polled or sent.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

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

/// A Bot API server on a local port. Stops when dropped.
pub struct BotApiStandIn {
    inner: Arc<Inner>,
    server: Arc<tiny_http::Server>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
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
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1:0"));
        let addr = server.server_addr().to_ip().expect("an IP listener");
        let inner = Arc::new(Inner {
            token: token.to_string(),
            state: Mutex::new(State {
                next_update_id: 100_000,
                next_message_id: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            started: Instant::now(),
        });
        let acceptor = {
            let server = server.clone();
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("bot-api-stand-in".into())
                .spawn(move || {
                    while let Ok(request) = server.recv() {
                        if inner.lock().stopping {
                            let _ = request.respond(reply(503, &api_error(503, "stopping", None)));
                            break;
                        }
                        let inner = inner.clone();
                        // One thread per request: a long poll must not hold up a send.
                        std::thread::spawn(move || handle(&inner, request));
                    }
                })
                .expect("spawn acceptor")
        };
        BotApiStandIn {
            inner,
            server,
            acceptor: Mutex::new(Some(acceptor)),
            url: format!("http://{addr}"),
        }
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
        self.server.unblock();
        if let Some(handle) = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for BotApiStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Updates

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn chat_json(chat_id: i64) -> Value {
    if chat_id < 0 {
        json!({"id": chat_id, "type": "group", "title": "piv test group"})
    } else {
        json!({"id": chat_id, "type": "private", "first_name": "Tester", "username": "tester"})
    }
}

fn user_json(chat_id: i64) -> Value {
    let id = if chat_id > 0 { chat_id } else { 4242 };
    json!({"id": id, "is_bot": false, "first_name": "Tester", "username": "tester", "language_code": "en"})
}

fn base_message(inner: &Inner, chat_id: i64) -> Value {
    let message_id = {
        let mut s = inner.lock();
        s.next_message_id += 1;
        s.next_message_id
    };
    json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat_json(chat_id),
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

// ---------------------------------------------------------------------------------------
// HTTP

type Params = Map<String, Value>;

fn reply(status: u16, body: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("static header");
    tiny_http::Response::from_data(serde_json::to_vec(body).expect("json"))
        .with_status_code(status)
        .with_header(header)
}

fn ok(result: Value) -> (u16, Value) {
    (200, json!({"ok": true, "result": result}))
}

fn api_error(code: u16, description: &str, retry_after: Option<u64>) -> Value {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(seconds) = retry_after {
        body["parameters"] = json!({"retry_after": seconds});
    }
    body
}

fn err(code: u16, description: &str) -> (u16, Value) {
    (code, api_error(code, description, None))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str, into: &mut Params) {
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        into.insert(percent_decode(k), Value::String(percent_decode(v)));
    }
}

fn param_i64(p: &Params, key: &str) -> Option<i64> {
    match p.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn param_str(p: &Params, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A JSON value that a form parameter carries as a JSON string.
fn param_json(p: &Params, key: &str) -> Option<Value> {
    match p.get(key)? {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        v => Some(v.clone()),
    }
}

fn pid_of(request: &tiny_http::Request) -> Option<u32> {
    let agent = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("User-Agent"))?
        .value
        .as_str()
        .to_string();
    agent
        .split_whitespace()
        .find_map(|part| part.strip_prefix("pid/"))
        .and_then(|pid| pid.parse().ok())
}

fn handle(inner: &Inner, mut request: tiny_http::Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut params = Params::new();
    parse_form(query, &mut params);
    let mut body = String::new();
    let _ = request.as_reader().take(8 << 20).read_to_string(&mut body);
    let is_json = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Content-Type") && h.value.as_str().starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&body) {
            params.extend(map);
        }
    } else if !body.is_empty() {
        parse_form(&body, &mut params);
    }
    let pid = pid_of(&request);
    let remote = request.remote_addr().copied();

    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let first = percent_decode(segments.next().unwrap_or(""));
    let method = segments.next().unwrap_or("").to_ascii_lowercase();
    let (status, body) = if first == "__test" {
        test_api(inner, &method, &params)
    } else if let Some(token) = first.strip_prefix("bot") {
        let outage = {
            let mut state = inner.lock();
            state.faults_log.push((method.clone(), Instant::now(), pid));
            let outage = state
                .faults
                .outage
                .filter(|(until, _)| Instant::now() < *until);
            if outage.is_none() {
                state.faults.outage = None;
            }
            outage.map(|(_, kind)| kind)
        };
        inner.changed.notify_all();
        if let Some(kind) = outage {
            fail_as(request, kind);
            return;
        }
        if token != inner.token {
            err(401, "Unauthorized")
        } else {
            match method.as_str() {
                "getme" => ok(json!({
                    "id": BOT_ID, "is_bot": true, "first_name": "Piv Test Bot",
                    "username": BOT_USERNAME, "can_join_groups": true,
                    "can_read_all_group_messages": false, "supports_inline_queries": false,
                    "can_connect_to_business": false, "has_main_web_app": false
                })),
                "getupdates" => get_updates(inner, &params, pid, remote),
                "sendmessage" => send_message(inner, &params, pid),
                "setmycommands" => set_my_commands(inner, &params),
                "deletewebhook" => ok(json!(true)),
                "getmycommands" => {
                    let last = inner.lock().commands.last().cloned().unwrap_or_default();
                    ok(json!(last
                        .iter()
                        .map(|(c, d)| json!({"command": c, "description": d}))
                        .collect::<Vec<_>>()))
                }
                _ => err(404, "Not Found"),
            }
        }
    } else {
        err(404, "Not Found")
    };
    let _ = request.respond(reply(status, &body));
}

/// Answers `request` as an outage would.
fn fail_as(request: tiny_http::Request, kind: Outage) {
    match kind {
        Outage::BadGateway => {
            let header =
                tiny_http::Header::from_bytes("Content-Type", "text/html").expect("static header");
            let _ = request.respond(
                tiny_http::Response::from_string("<html><body>502 Bad Gateway</body></html>")
                    .with_status_code(502)
                    .with_header(header),
            );
        }
        Outage::DroppedConnection => {
            // No valid status line: the client sees the connection fail mid-answer.
            use std::io::Write;
            let mut writer = request.into_writer();
            let _ = writer.write_all(b"BROKEN\r\n\r\n");
            let _ = writer.flush();
        }
    }
}

fn get_updates(
    inner: &Inner,
    params: &Params,
    pid: Option<u32>,
    remote: Option<SocketAddr>,
) -> (u16, Value) {
    let offset = param_i64(params, "offset");
    let timeout_secs = param_i64(params, "timeout")
        .unwrap_or(0)
        .clamp(0, MAX_POLL_SECS as i64) as u64;
    let limit = param_i64(params, "limit").unwrap_or(100).clamp(1, 100) as usize;
    let allowed: Option<Vec<String>> = param_json(params, "allowed_updates").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
    });
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);

    let mut state = inner.lock();
    state.poll_generation += 1;
    let generation = state.poll_generation;
    state.poll_starts.push(PollStart {
        at: Instant::now(),
        offset,
        timeout_secs,
        allowed_updates: allowed.clone(),
        pid,
        remote,
    });
    state.active_poll = Some((generation, pid, remote));
    if let Some(list) = allowed {
        state.allowed_updates = Some(list);
    }
    let instant = state.faults.instant_polls;
    if instant {
        let batch: Vec<Value> = state.updates.iter().take(limit).map(update_json).collect();
        state.active_poll = None;
        drop(state);
        inner.changed.notify_all();
        return ok(Value::Array(batch));
    }
    if let Some(offset) = offset {
        if offset >= 0 {
            state.updates.retain(|u| u.id >= offset);
        } else {
            // A negative offset keeps only the last |offset| updates.
            let keep = offset.unsigned_abs() as usize;
            let len = state.updates.len();
            if len > keep {
                state.updates.drain(..len - keep);
            }
        }
    }
    // Wakes a running poll so that it sees it was superseded.
    inner.changed.notify_all();
    loop {
        if state.stopping {
            return ok(json!([]));
        }
        if state.poll_generation != generation {
            let by_pid = state.active_poll.and_then(|(_, p, _)| p);
            state.conflicts.push(Conflict {
                at: Instant::now(),
                terminated_pid: pid,
                terminated_remote: remote,
                by_pid,
            });
            drop(state);
            inner.changed.notify_all();
            return err(409, CONFLICT_DESCRIPTION);
        }
        let allowed = state.allowed_updates.clone();
        let batch: Vec<Value> = state
            .updates
            .iter()
            .filter(|u| allowed.as_ref().is_none_or(|a| a.contains(&u.kind)))
            .take(limit)
            .map(update_json)
            .collect();
        let now = Instant::now();
        if !batch.is_empty() || now >= deadline {
            if state.active_poll.is_some_and(|(g, _, _)| g == generation) {
                state.active_poll = None;
            }
            return ok(Value::Array(batch));
        }
        state = inner
            .changed
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn send_message(inner: &Inner, params: &Params, pid: Option<u32>) -> (u16, Value) {
    let chat_id = param_i64(params, "chat_id");
    let text = param_str(params, "text");
    let parse_mode = param_str(params, "parse_mode");
    let now = Instant::now();
    let mut state = inner.lock();
    let reject = |state: &mut State, code: u16, description: String, retry: Option<u64>| {
        state.rejected.push(RejectedSend {
            chat_id,
            text: text.clone(),
            error_code: code,
            description: description.clone(),
            at: now,
            pid,
        });
        (code, api_error(code, &description, retry))
    };
    let Some(chat) = chat_id else {
        return reject(
            &mut state,
            400,
            "Bad Request: chat_id is empty".into(),
            None,
        );
    };
    let Some(body) = text.clone().filter(|t| !t.trim().is_empty()) else {
        return reject(
            &mut state,
            400,
            "Bad Request: message text is empty".into(),
            None,
        );
    };
    let visible = if parse_mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("html"))
    {
        match parse_telegram_html(&body) {
            Ok(v) => v,
            Err(e) => {
                return reject(
                    &mut state,
                    400,
                    format!("Bad Request: can't parse entities: {e}"),
                    None,
                )
            }
        }
    } else {
        body.clone()
    };
    if visible.chars().map(char::len_utf16).sum::<usize>() > MESSAGE_LIMIT {
        return reject(
            &mut state,
            400,
            "Bad Request: message is too long".into(),
            None,
        );
    }
    if state.force_429 > 0 {
        state.force_429 -= 1;
        let retry = state.faults.forced_retry_after.unwrap_or(1);
        return reject(
            &mut state,
            429,
            format!("Too Many Requests: retry after {retry}"),
            Some(retry),
        );
    }
    if let (Some(min), Some(last)) = (state.min_interval, state.last_send.get(&chat).copied()) {
        let since = now.saturating_duration_since(last);
        if since < min {
            let retry = (min - since).as_secs_f64().ceil().max(1.0) as u64;
            return reject(
                &mut state,
                429,
                format!("Too Many Requests: retry after {retry}"),
                Some(retry),
            );
        }
    }
    state.next_message_id += 1;
    let message_id = state.next_message_id;
    state.last_send.insert(chat, now);
    state.sent.push(SentMessage {
        message_id,
        chat_id: chat,
        text: body.clone(),
        parse_mode,
        at: now,
        pid,
    });
    drop(state);
    inner.changed.notify_all();
    ok(json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat_json(chat),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Piv Test Bot", "username": BOT_USERNAME},
        "text": visible,
    }))
}

fn set_my_commands(inner: &Inner, params: &Params) -> (u16, Value) {
    let Some(Value::Array(list)) = param_json(params, "commands") else {
        return err(400, "Bad Request: parameter \"commands\" is required");
    };
    let mut commands = Vec::new();
    for c in list {
        let command = c.get("command").and_then(Value::as_str).unwrap_or("");
        let description = c.get("description").and_then(Value::as_str).unwrap_or("");
        if command.is_empty()
            || command.len() > 32
            || !command
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        {
            return err(400, "Bad Request: BOT_COMMAND_INVALID");
        }
        if description.chars().count() < 1 || description.chars().count() > 256 {
            return err(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID");
        }
        commands.push((command.to_string(), description.to_string()));
    }
    inner.lock().commands.push(commands);
    inner.changed.notify_all();
    ok(json!(true))
}

fn test_api(inner: &Inner, what: &str, params: &Params) -> (u16, Value) {
    let ms = |at: Instant| at.saturating_duration_since(inner.started).as_millis() as u64;
    match what {
        "sent" => {
            let state = inner.lock();
            ok(json!(state
                .sent
                .iter()
                .map(|m| json!({
                    "message_id": m.message_id, "chat_id": m.chat_id, "text": m.text,
                    "parse_mode": m.parse_mode, "at_ms": ms(m.at), "pid": m.pid
                }))
                .collect::<Vec<_>>()))
        }
        "state" => {
            let state = inner.lock();
            ok(json!({
                "poll_starts": state.poll_starts.iter().map(|p| json!({
                    "at_ms": ms(p.at), "offset": p.offset, "pid": p.pid
                })).collect::<Vec<_>>(),
                "conflicts": state.conflicts.iter().map(|c| json!({
                    "at_ms": ms(c.at), "terminated_pid": c.terminated_pid, "by_pid": c.by_pid
                })).collect::<Vec<_>>(),
                "rejected": state.rejected.iter().map(|r| json!({
                    "at_ms": ms(r.at), "error_code": r.error_code, "description": r.description, "pid": r.pid
                })).collect::<Vec<_>>(),
                "pending_update_ids": state.updates.iter().map(|u| u.id).collect::<Vec<_>>(),
                "commands": state.commands,
            }))
        }
        "inject" => {
            let Some(chat_id) = param_i64(params, "chat_id") else {
                return err(400, "chat_id required");
            };
            let edited = params
                .get("edited")
                .is_some_and(|v| v == &json!(true) || v == "true");
            let id = match param_str(params, "text") {
                Some(text) => inject_text(inner, chat_id, &text, edited),
                None => {
                    let mut message = base_message(inner, chat_id);
                    message["photo"] =
                        json!([{"file_id": "x", "file_unique_id": "y", "width": 1, "height": 1}]);
                    inject_update(inner, "message", message)
                }
            };
            ok(json!({"update_id": id}))
        }
        "rate_limit" => {
            let interval = param_i64(params, "min_interval_ms")
                .filter(|ms| *ms > 0)
                .map(|ms| Duration::from_millis(ms as u64));
            inner.lock().min_interval = interval;
            ok(json!(true))
        }
        "force_429" => {
            inner.lock().force_429 = param_i64(params, "count").unwrap_or(0).max(0) as usize;
            ok(json!(true))
        }
        _ => err(404, "Not Found"),
    }
}

// ---------------------------------------------------------------------------------------
// Telegram HTML

const TELEGRAM_TAGS: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "tg-spoiler",
    "span",
    "tg-emoji",
    "blockquote",
];

/// Parses Telegram-flavoured HTML as the Bot API does and returns the visible text, or
/// the reason Telegram would give for refusing it.
pub fn parse_telegram_html(html: &str) -> Result<String, String> {
    let mut visible = String::with_capacity(html.len());
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &html[i..];
        let c = rest.chars().next().expect("in bounds");
        match c {
            '<' => {
                let Some(end) = rest.find('>') else {
                    return Err(format!("Unclosed start tag at byte offset {i}"));
                };
                let inner = &rest[1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    match stack.pop() {
                        Some(open) if open == name => {}
                        Some(open) => {
                            return Err(format!(
                                "Can't find end tag corresponding to start tag \"{open}\""
                            ))
                        }
                        None => return Err(format!("Unexpected end tag at byte offset {i}")),
                    }
                } else {
                    let name: String = inner
                        .chars()
                        .take_while(|ch| !ch.is_whitespace() && *ch != '/')
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if !TELEGRAM_TAGS.contains(&name.as_str()) {
                        return Err(format!(
                            "Unsupported start tag \"{name}\" at byte offset {i}"
                        ));
                    }
                    stack.push(name);
                }
                i += end + 1;
            }
            '&' => {
                let entity_end = rest[1..]
                    .char_indices()
                    .take(10)
                    .find(|(_, ch)| !(ch.is_ascii_alphanumeric() || *ch == '#'))
                    .filter(|(_, ch)| *ch == ';')
                    .map(|(j, _)| j + 1);
                let decoded = entity_end.and_then(|e| {
                    let name = &rest[1..e];
                    match name {
                        "lt" => Some('<'),
                        "gt" => Some('>'),
                        "amp" => Some('&'),
                        "quot" => Some('"'),
                        _ => name
                            .strip_prefix("#x")
                            .or_else(|| name.strip_prefix("#X"))
                            .map(|h| u32::from_str_radix(h, 16))
                            .or_else(|| name.strip_prefix('#').map(str::parse::<u32>))
                            .and_then(Result::ok)
                            .and_then(char::from_u32),
                    }
                    .map(|ch| (ch, e + 1))
                });
                match decoded {
                    Some((ch, len)) => {
                        visible.push(ch);
                        i += len;
                    }
                    None => {
                        // Telegram keeps a bare `&` as text.
                        visible.push('&');
                        i += 1;
                    }
                }
            }
            c => {
                visible.push(c);
                i += c.len_utf8();
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{open}\""
        ));
    }
    Ok(visible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html_parsing() {
        let cases = [
            ("plain", Ok("plain")),
            ("<b>bold</b> &amp; <i>it</i>", Ok("bold & it")),
            ("&lt;x&gt; &#65;&#x42;", Ok("<x> AB")),
            ("a & b", Ok("a & b")),
            ("<a href=\"http://x\">l</a>", Ok("l")),
            ("<b>open", Err(())),
            ("<b>x</i>", Err(())),
            ("<foo>x</foo>", Err(())),
            ("<b", Err(())),
            ("x</b>", Err(())),
        ];
        for (input, want) in cases {
            let got = parse_telegram_html(input);
            match want {
                Ok(v) => assert_eq!(got.as_deref(), Ok(v), "{input}"),
                Err(()) => assert!(got.is_err(), "{input}: {got:?}"),
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%3A"), "a b c:");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
