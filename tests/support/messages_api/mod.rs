//! A local stand-in for Anthropic's Messages API that plays a scripted model, so the real Claude Code CLI can run whole PIV phases offline.
//!
//! Written from the Messages API documentation: `POST /v1/messages` answers JSON, or
//! server-sent events when the body asks for `stream` (`message_start`,
//! `content_block_start` / `content_block_delta` (`text_delta`, `input_json_delta`) /
//! `content_block_stop`, `message_delta` with `stop_reason` and usage, `message_stop`);
//! errors are `{"type":"error","error":{"type":…,"message":…}}`. Other paths are logged
//! and answered 404 (the CLI tolerates it, even for its start-up `HEAD /api/hello`).
//!
//! The "model" recognises the PIV command the CLI is running from the expanded command
//! text: the fixture's `.claude/commands/<name>.md` bodies (see [`command_body`]) start
//! with `PIV-COMMAND: <name>`. Each command is a short script of tool calls that the real
//! CLI executes (Read the manifest, Write the plan / code / manifest, Bash `git commit`),
//! one tool call per response, then a final text with a PIV-Automator-Hooks block. The
//! script position is derived from the conversation each request carries, so the server
//! keeps no per-session state. Faults ([`Fault`]) are set per test.
//!
//! Every request is recorded ([`MessagesApi::requests`]) and appended as one JSON line to
//! an optional log file.
//!
//! Used by the real-CLI tests and the `real_cli_phase` bench (included by path).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

mod script;
use script::*;

/// The marker every fixture command body starts with.
pub const MARKER: &str = "PIV-COMMAND: ";

/// A fixture command body the stand-in recognises (`$ARGUMENTS` is expanded by the CLI).
pub fn command_body(name: &str) -> String {
    format!(
        "---\ndescription: PIV test command {name}\n---\n{MARKER}{name}\nPIV-ARGS: $ARGUMENTS\nDo what the PIV /{name} command does for this project.\n"
    )
}

/// Writes [`command_body`] for each of `names` into `<project>/.claude/commands/`.
pub fn write_commands(project: &Path, names: &[&str]) -> std::io::Result<()> {
    let dir = project.join(".claude/commands");
    std::fs::create_dir_all(&dir)?;
    for name in names {
        std::fs::write(dir.join(format!("{name}.md")), command_body(name))?;
    }
    Ok(())
}

/// What a request gets instead of the scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 401 `authentication_error`.
    Unauthorized,
    /// 529 `overloaded_error`.
    Overloaded,
    /// 429 `rate_limit_error` with a `retry-after` header.
    RateLimited { retry_after_secs: u64 },
    /// Headers and `message_start`, then the connection is closed mid-stream.
    DropConnection,
    /// The scripted answer, with this pause before every event.
    SlowStream { per_event: Duration },
    /// A final text at once, never calling a tool.
    NoToolCall,
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Unauthorized => "unauthorized",
            Fault::Overloaded => "overloaded",
            Fault::RateLimited { .. } => "rate_limited",
            Fault::DropConnection => "drop_connection",
            Fault::SlowStream { .. } => "slow_stream",
            Fault::NoToolCall => "no_tool_call",
        }
    }
}

/// A fault for the requests of one PIV command (or every `/v1/messages` request), at most
/// `times` of them.
#[derive(Debug, Clone)]
struct FaultRule {
    command: Option<String>,
    times: Option<u32>,
    used: u32,
    fault: Fault,
}

/// One request as the stand-in saw and answered it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query (`/v1/messages`).
    pub path: String,
    pub query: String,
    /// `X-Claude-Code-Session-Id`.
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
    pub api_key: Option<String>,
    pub body: Value,
    /// The PIV command the conversation is running (None for a free prompt, a side
    /// request or another path).
    pub command: Option<String>,
    /// The arguments the CLI expanded into the command body.
    pub args: Option<String>,
    /// The position in the command's script (assistant turns already taken).
    pub step: usize,
    /// The tool the answer called, if any.
    pub tool: Option<String>,
    pub status: u16,
    pub fault: Option<&'static str>,
    /// The usage served: (input_tokens, output_tokens).
    pub usage: Option<(u64, u64)>,
    /// Whether the conversation carried an earlier `/prime` exchange (its command body and
    /// its final answer): what a `--resume`d call must show.
    pub saw_prime: bool,
    /// The conversation's messages count.
    pub messages: usize,
    /// A scripted request of a PIV conversation (not a side request such as a title).
    pub scripted: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<FaultRule>>,
    extra_bash: Mutex<BTreeMap<String, Vec<String>>>,
    requests: Mutex<Vec<Recorded>>,
    log: Option<PathBuf>,
    fallback_project: Option<PathBuf>,
}

/// The running stand-in; stops when dropped.
pub struct MessagesApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

impl MessagesApi {
    /// Starts on 127.0.0.1 (a free port). `log`: a JSON-lines file of every request.
    /// `project`: the working directory assumed when a request does not name one.
    pub fn start(log: Option<&Path>, project: Option<&Path>) -> MessagesApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Messages API stand-in");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            log: log.map(Path::to_path_buf),
            fallback_project: project.map(Path::to_path_buf),
            ..Shared::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    let stop = stop.clone();
                    std::thread::spawn(move || serve_connection(conn, &shared, &stop));
                }
            })
        };
        MessagesApi {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// The value for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the requests of `command` (None: every `/v1/messages` request) with `fault`,
    /// at most `times` times (None: always). Earlier rules win.
    pub fn fault(&self, command: Option<&str>, times: Option<u32>, fault: Fault) {
        self.shared.faults.lock().unwrap().push(FaultRule {
            command: command.map(String::from),
            times,
            used: 0,
            fault,
        });
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Makes `command`'s script run `bash` (in the project) before its final answer.
    pub fn extra_bash(&self, command: &str, bash: &str) {
        self.shared
            .extra_bash
            .lock()
            .unwrap()
            .entry(command.to_string())
            .or_default()
            .push(bash.to_string());
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The scripted `/v1/messages` requests of `command`.
    pub fn requests_for(&self, command: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.scripted && r.command.as_deref() == Some(command))
            .collect()
    }

    /// A short listing of every request, for failure messages.
    pub fn summary(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "{} {}{} session={} command={:?} args={:?} step={} tool={:?} status={} fault={:?} usage={:?} saw_prime={} msgs={}\n",
                    r.method,
                    r.path,
                    r.query,
                    r.session_id.as_deref().unwrap_or("-"),
                    r.command,
                    r.args,
                    r.step,
                    r.tool,
                    r.status,
                    r.fault,
                    r.usage,
                    r.saw_prime,
                    r.messages,
                )
            })
            .collect()
    }
}

impl Drop for MessagesApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1, just enough: keep-alive, Content-Length or chunked request bodies, chunked
// event streams (so a dropped stream is visible to the client as a truncated body).

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            req.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = req.header("content-length").and_then(|v| v.parse().ok()) {
        let mut body = vec![0; n];
        reader.read_exact(&mut body).ok()?;
        req.body = body;
    }
    Some(req)
}

fn serve_connection(conn: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    while !stop.load(Ordering::SeqCst) {
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        if !handle(&req, &mut writer, shared) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn write_json(w: &mut TcpStream, status: u16, extra: &[(&str, String)], body: &Value) -> bool {
    let text = body.to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nrequest-id: req_standin_{}\r\n",
        reason(status),
        text.len(),
        next_id()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).is_ok() && w.write_all(text.as_bytes()).is_ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        529 => "Overloaded",
        _ => "Status",
    }
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Handles one request; false closes the connection.
fn handle(req: &Request, w: &mut TcpStream, shared: &Shared) -> bool {
    let (path, query) = match req.target.split_once('?') {
        Some((p, q)) => (p.to_string(), format!("?{q}")),
        None => (req.target.clone(), String::new()),
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut rec = Recorded {
        method: req.method.clone(),
        path: path.clone(),
        query,
        session_id: req.header("x-claude-code-session-id").map(String::from),
        user_agent: req.header("user-agent").map(String::from),
        api_key: req.header("x-api-key").map(String::from),
        body: body.clone(),
        command: None,
        args: None,
        step: 0,
        tool: None,
        status: 200,
        fault: None,
        usage: None,
        saw_prime: false,
        messages: 0,
        scripted: false,
    };
    let keep = if req.method == "POST" && path == "/v1/messages" {
        messages(&body, &mut rec, w, shared)
    } else {
        // Anything else (the CLI's `HEAD /api/hello` probe included) is not the Messages
        // API: logged, and answered as the API answers an unknown path.
        rec.status = 404;
        write_json(
            w,
            404,
            &[],
            &error_body("not_found_error", &format!("no such path: {path}")),
        )
    };
    record(shared, rec);
    keep
}

fn record(shared: &Shared, rec: Recorded) {
    if let Some(log) = &shared.log {
        let line = json!({
            "method": rec.method, "path": rec.path, "query": rec.query,
            "session_id": rec.session_id, "user_agent": rec.user_agent,
            "model": rec.body.get("model"), "stream": rec.body.get("stream"),
            "max_tokens": rec.body.get("max_tokens"),
            "tools": rec.body.get("tools").and_then(Value::as_array).map(Vec::len),
            "command": rec.command, "args": rec.args, "step": rec.step, "tool": rec.tool,
            "status": rec.status, "fault": rec.fault, "usage": rec.usage,
            "saw_prime": rec.saw_prime, "messages": rec.messages, "scripted": rec.scripted,
            "last_user_text": last_user_text(&rec.body),
        });
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
    shared.requests.lock().unwrap().push(rec);
}

/// The last user text of a request (truncated), to see side requests in the log.
fn last_user_text(body: &Value) -> Option<String> {
    let msgs = body.get("messages")?.as_array()?;
    let last = msgs.iter().rev().find(|m| m["role"] == "user")?;
    let text = blocks(last)
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" | ");
    Some(text.chars().take(300).collect())
}

fn messages(body: &Value, rec: &mut Recorded, w: &mut TcpStream, shared: &Shared) -> bool {
    let conv = conversation(body, shared.fallback_project.as_deref());
    rec.command = conv.command.clone();
    rec.args = conv.command.as_ref().map(|_| conv.args.clone());
    rec.step = conv.step;
    rec.saw_prime = conv.saw_prime;
    rec.messages = body["messages"].as_array().map_or(0, Vec::len);
    // Side requests (titles, summaries, ...) come without tools; a PIV conversation's do.
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    rec.scripted = has_tools;

    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| {
                (f.command.is_none() || f.command == conv.command)
                    && f.times.is_none_or(|t| f.used < t)
            })
            .map(|f| {
                f.used += 1;
                f.fault.clone()
            })
    };
    rec.fault = fault.as_ref().map(Fault::name);
    match &fault {
        Some(Fault::Unauthorized) => {
            rec.status = 401;
            return write_json(
                w,
                401,
                &[],
                &error_body("authentication_error", "invalid x-api-key"),
            );
        }
        Some(Fault::Overloaded) => {
            rec.status = 529;
            return write_json(w, 529, &[], &error_body("overloaded_error", "Overloaded"));
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            rec.status = 429;
            return write_json(
                w,
                429,
                &[("retry-after", retry_after_secs.to_string())],
                &error_body(
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit",
                ),
            );
        }
        _ => {}
    }

    let turn = if !has_tools {
        Turn::Text("PIV test session".into())
    } else if fault == Some(Fault::NoToolCall) {
        Turn::Text("I will not call any tool.".into())
    } else {
        let extra = conv
            .command
            .as_ref()
            .and_then(|c| shared.extra_bash.lock().unwrap().get(c).cloned())
            .unwrap_or_default();
        let script = script(&conv, &extra);
        script
            .get(conv.step)
            .cloned()
            .unwrap_or_else(|| script.last().cloned().expect("a script ends with text"))
    };
    if let Turn::Tool { name, .. } = &turn {
        rec.tool = Some(name.to_string());
    }
    // Distinct usage per request so sums can be checked against the CLI's figures.
    let n = next_id();
    let usage = (1000 + n % 97, 50 + n % 13);
    rec.usage = Some(usage);
    let model = body["model"].as_str().unwrap_or("claude-test").to_string();
    let msg_id = format!("msg_standin_{n}");
    if body["stream"] == true {
        let per_event = match &fault {
            Some(Fault::SlowStream { per_event }) => Some(*per_event),
            _ => None,
        };
        let drop = fault == Some(Fault::DropConnection);
        stream(w, &model, &msg_id, n, &turn, usage, per_event, drop)
    } else {
        let (content, stop) = match &turn {
            Turn::Tool { name, input } => (
                json!([{"type": "tool_use", "id": format!("toolu_standin_{n}"), "name": name, "input": input}]),
                "tool_use",
            ),
            Turn::Text(t) => (json!([{"type": "text", "text": t}]), "end_turn"),
        };
        write_json(
            w,
            200,
            &[],
            &json!({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": usage.0, "output_tokens": usage.1},
            }),
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn stream(
    w: &mut TcpStream,
    model: &str,
    msg_id: &str,
    n: u64,
    turn: &Turn,
    usage: (u64, u64),
    per_event: Option<Duration>,
    drop: bool,
) -> bool {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\nrequest-id: req_standin_{n}\r\n\r\n"
    );
    if w.write_all(head.as_bytes()).is_err() {
        return false;
    }
    let mut events: Vec<(&str, Value)> = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": usage.0, "output_tokens": 1},
            }}),
        ),
        ("ping", json!({"type": "ping"})),
    ];
    let stop = match turn {
        Turn::Tool { name, input } => {
            let text = input.to_string();
            let cut = text.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": format!("toolu_standin_{n}"), "name": name, "input": {},
                }}),
            ));
            for part in [&text[..cut], &text[cut..]] {
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": part}}),
                ));
            }
            "tool_use"
        }
        Turn::Text(t) => {
            events.push((
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            let mut rest = t.as_str();
            while !rest.is_empty() {
                let mut cut = rest.len().min(40);
                while !rest.is_char_boundary(cut) {
                    cut += 1;
                }
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": &rest[..cut]}}),
                ));
                rest = &rest[cut..];
            }
            "end_turn"
        }
    };
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": usage.1}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    for (i, (event, data)) in events.iter().enumerate() {
        if drop && i == 2 {
            // Mid-stream: close without the terminating chunk.
            let _ = w.flush();
            return false;
        }
        if let Some(d) = per_event {
            std::thread::sleep(d);
        }
        let payload = format!("event: {event}\ndata: {data}\n\n");
        let chunk = format!("{:x}\r\n{payload}\r\n", payload.len());
        if w.write_all(chunk.as_bytes()).is_err() || w.flush().is_err() {
            return false;
        }
    }
    w.write_all(b"0\r\n\r\n").is_ok() && w.flush().is_ok()
}
