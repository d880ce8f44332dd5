//! Claude Code stream-json: parsing one stdout line into an event and accumulating a session's outcome (pure).
//!
//! The CLI's message union is large and grows with every release, so only the handful of
//! kinds a supervisor needs become events; everything else is [`StreamEvent::Other`]. A line
//! that is not JSON, or whose known fields have the wrong type, is a [`StreamLineError`]: the
//! caller logs it and carries on, because one bad line must never sink a session. The
//! [`SessionAccumulator`] turns the events plus how the process ended ([`ExitInfo`]) into one
//! [`SessionOutcome`], deciding which of the CLI's many ways of failing this was.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value};

/// Assistant text kept per session. Sessions can print hundreds of MB; only the tail matters
/// (hooks come last), so memory stays flat.
pub const ASSISTANT_TEXT_LIMIT: usize = 256 * 1024;

/// One stdout line of `claude -p --output-format stream-json --verbose`, reduced to what piv uses.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `system`/`init`: the first line of a session.
    Init {
        session_id: String,
        model: Option<String>,
    },
    /// An `assistant` message's text blocks, joined with newlines (may be empty for tool-only messages).
    AssistantText(String),
    /// A synthetic assistant message's `error` field (e.g. `authentication_failed`).
    AssistantError { error: String, text: String },
    /// The turn-complete `result` line.
    Result(ResultInfo),
    /// `rate_limit_event`: `status` is allowed, allowed_warning or rejected.
    RateLimit {
        status: String,
        resets_at: Option<i64>,
    },
    /// `system`/`api_retry`: the CLI is retrying a failed API call.
    ApiRetry {
        attempt: u32,
        error_status: Option<u16>,
    },
    /// Any message kind piv does not need.
    Other,
}

/// The fields of a `result` line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultInfo {
    pub subtype: String,
    pub is_error: bool,
    pub total_cost_usd: f64,
    pub num_turns: u32,
    pub duration_ms: u64,
    pub result: Option<String>,
    pub errors: Vec<String>,
    pub session_id: Option<String>,
}

/// Why a stdout line could not be turned into an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamLineError {
    #[error("stream line is not JSON: {0}")]
    NotJson(String),
    #[error("stream line is JSON but not an object")]
    NotObject,
    #[error("stream line has no string \"type\"")]
    MissingType,
    #[error("stream line of type {kind}: field {field} is not {expected}")]
    BadField {
        kind: &'static str,
        field: &'static str,
        expected: &'static str,
    },
}

fn bad(kind: &'static str, field: &'static str, expected: &'static str) -> StreamLineError {
    StreamLineError::BadField {
        kind,
        field,
        expected,
    }
}

fn opt_str(
    obj: &Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<String>, StreamLineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(kind, field, "a string")),
    }
}

fn opt_u64(
    obj: &Map<String, Value>,
    kind: &'static str,
    field: &'static str,
) -> Result<Option<u64>, StreamLineError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match (v.as_u64(), v.as_f64()) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Ok(Some(f as u64)),
            _ => Err(bad(kind, field, "a non-negative number")),
        },
    }
}

/// Parses one stdout line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<StreamEvent, StreamLineError> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| StreamLineError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(StreamLineError::NotObject);
    };
    let Some(Value::String(kind)) = obj.get("type") else {
        return Err(StreamLineError::MissingType);
    };
    match kind.as_str() {
        "system" => parse_system(&obj),
        "assistant" => parse_assistant(&obj),
        "result" => parse_result(&obj).map(StreamEvent::Result),
        "rate_limit_event" => parse_rate_limit(&obj),
        _ => Ok(StreamEvent::Other),
    }
}

fn parse_system(obj: &Map<String, Value>) -> Result<StreamEvent, StreamLineError> {
    match obj.get("subtype").and_then(Value::as_str) {
        Some("init") => {
            let session_id = opt_str(obj, "system/init", "session_id")?
                .ok_or_else(|| bad("system/init", "session_id", "a string"))?;
            let model = opt_str(obj, "system/init", "model")?;
            Ok(StreamEvent::Init { session_id, model })
        }
        Some("api_retry") => {
            let attempt = opt_u64(obj, "system/api_retry", "attempt")?.unwrap_or(0);
            let error_status = opt_u64(obj, "system/api_retry", "error_status")?;
            Ok(StreamEvent::ApiRetry {
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                error_status: error_status.and_then(|s| u16::try_from(s).ok()),
            })
        }
        _ => Ok(StreamEvent::Other),
    }
}

fn parse_assistant(obj: &Map<String, Value>) -> Result<StreamEvent, StreamLineError> {
    let message = match obj.get("message") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Ok(StreamEvent::AssistantText(String::new())),
        Some(_) => return Err(bad("assistant", "message", "an object")),
    };
    let mut texts: Vec<&str> = Vec::new();
    match message.get("content") {
        Some(Value::Array(blocks)) => {
            for block in blocks {
                if block.get("type").and_then(Value::as_str) == Some("text") {
                    match block.get("text") {
                        Some(Value::String(t)) => texts.push(t),
                        _ => return Err(bad("assistant", "content[].text", "a string")),
                    }
                }
            }
        }
        // The API also allows a plain string as content.
        Some(Value::String(s)) => texts.push(s),
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("assistant", "message.content", "an array")),
    }
    let text = texts.join("\n");
    match opt_str(obj, "assistant", "error")? {
        Some(error) => Ok(StreamEvent::AssistantError { error, text }),
        None => Ok(StreamEvent::AssistantText(text)),
    }
}

fn parse_result(obj: &Map<String, Value>) -> Result<ResultInfo, StreamLineError> {
    const K: &str = "result";
    let subtype = opt_str(obj, K, "subtype")?.ok_or_else(|| bad(K, "subtype", "a string"))?;
    let is_error = match obj.get("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad(K, "is_error", "a boolean")),
    };
    let total_cost_usd = match obj.get("total_cost_usd") {
        None | Some(Value::Null) => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| bad(K, "total_cost_usd", "a number"))?,
    };
    let num_turns = opt_u64(obj, K, "num_turns")?.unwrap_or(0);
    let duration_ms = opt_u64(obj, K, "duration_ms")?.unwrap_or(0);
    let result = opt_str(obj, K, "result")?;
    let errors = match obj.get("errors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(_) => return Err(bad(K, "errors", "an array")),
    };
    let session_id = opt_str(obj, K, "session_id")?;
    Ok(ResultInfo {
        subtype,
        is_error,
        total_cost_usd,
        num_turns: u32::try_from(num_turns).unwrap_or(u32::MAX),
        duration_ms,
        result,
        errors,
        session_id,
    })
}

fn parse_rate_limit(obj: &Map<String, Value>) -> Result<StreamEvent, StreamLineError> {
    const K: &str = "rate_limit_event";
    let info = match obj.get("rate_limit_info") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Ok(StreamEvent::Other),
        Some(_) => return Err(bad(K, "rate_limit_info", "an object")),
    };
    let status = opt_str(info, K, "status")?.unwrap_or_default();
    let resets_at = match info.get("resetsAt") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => s.trim().parse::<f64>().ok().map(epoch_secs),
        Some(v) => Some(epoch_secs(
            v.as_f64().ok_or_else(|| bad(K, "resetsAt", "a number"))?,
        )),
    };
    Ok(StreamEvent::RateLimit { status, resets_at })
}

/// `resetsAt` is documented as unix seconds; accept milliseconds too rather than waiting 1000x too long.
fn epoch_secs(n: f64) -> i64 {
    if n > 100_000_000_000.0 {
        (n / 1000.0) as i64
    } else {
        n as i64
    }
}

/// How the process ended, as seen by the session runner.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stalled: bool,
    pub cancelled: bool,
    /// The limit that fired (timeout or stall), in seconds, for the message.
    pub limit_secs: u64,
    /// The process printed its result but did not exit, so piv stopped it: the result
    /// decides, not the signal.
    pub stopped_after_result: bool,
    pub stderr_tail: String,
}

/// Why a session did not succeed. Every variant has a human [`message`](Self::message).
#[derive(Debug, Clone, PartialEq)]
pub enum SessionError {
    NotLoggedIn {
        message: String,
    },
    RootSkipPermissions,
    ResumeUnknown {
        session_id: String,
    },
    UnknownCommand {
        name: String,
    },
    UsageLimit {
        resets_at: Option<i64>,
    },
    ResultError {
        subtype: String,
        messages: Vec<String>,
    },
    NoResult,
    NonZeroExit {
        code: Option<i32>,
        signal: Option<i32>,
    },
    Timeout {
        after_secs: u64,
    },
    Stalled {
        after_secs: u64,
    },
    Cancelled,
    MissingVerbose,
    /// The API could not be reached or was overloaded (connection refused, DNS, 5xx, 529):
    /// an outage, not the work's fault. The runner waits it out and retries the step.
    ApiUnavailable {
        detail: String,
    },
}

impl SessionError {
    /// A sentence for a human: what happened and, where piv knows it, what to do.
    pub fn message(&self) -> String {
        match self {
            Self::NotLoggedIn { message } => format!(
                "Claude Code is not logged in ({message}). Set CLAUDE_CODE_OAUTH_TOKEN \
                 (from `claude setup-token`) or run `claude` once and /login, then resume."
            ),
            Self::RootSkipPermissions => "Claude Code refuses --dangerously-skip-permissions when run as \
                 root. Run piv as a normal user, or set IS_SANDBOX=1 if this machine is a disposable \
                 sandbox."
                .to_string(),
            Self::ResumeUnknown { session_id } => {
                format!("Claude Code has no conversation with session ID {session_id} to resume.")
            }
            Self::UnknownCommand { name } => format!(
                "Claude Code does not know the command /{name}: the project has no \
                 .claude/commands/{name}.md (nor ~/.claude/commands/{name}.md)."
            ),
            Self::UsageLimit { resets_at } => match resets_at {
                Some(ts) => format!(
                    "Claude usage limit reached; it resets at {}.",
                    chrono::DateTime::from_timestamp(*ts, 0)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| ts.to_string())
                ),
                None => "Claude usage limit reached; reset time unknown.".to_string(),
            },
            Self::ResultError { subtype, messages } => {
                if messages.is_empty() {
                    format!("Claude Code session ended with {subtype}.")
                } else {
                    format!(
                        "Claude Code session ended with {subtype}: {}",
                        messages.join("; ")
                    )
                }
            }
            Self::NoResult => {
                "Claude Code exited without a result message (the session did not finish)."
                    .to_string()
            }
            Self::NonZeroExit { code, signal } => match (code, signal) {
                (_, Some(s)) => format!("Claude Code was killed by signal {s}."),
                (Some(c), None) => format!("Claude Code exited with status {c}."),
                (None, None) => "Claude Code exited abnormally.".to_string(),
            },
            Self::Timeout { after_secs } => {
                format!("Claude Code session timed out after {after_secs} s and was stopped.")
            }
            Self::Stalled { after_secs } => format!(
                "Claude Code printed nothing for {after_secs} s (stalled) and was stopped."
            ),
            Self::Cancelled => "Claude Code session was cancelled.".to_string(),
            Self::MissingVerbose => "piv invoked Claude Code with stream-json but without --verbose \
                 (a bug in piv)."
                .to_string(),
            Self::ApiUnavailable { detail } => {
                format!("The Claude API could not be reached or was overloaded: {detail}")
            }
        }
    }

    /// Text for the taxonomy classifier: keeps the CLI's own words, which carry the
    /// keywords the classifier looks for (auth, rate limit, test failures, ...).
    pub fn error_text(&self) -> String {
        match self {
            Self::NotLoggedIn { message } => format!("authentication failed: {message}"),
            Self::RootSkipPermissions => {
                "setup error: --dangerously-skip-permissions refused as root".to_string()
            }
            Self::ResumeUnknown { session_id } => {
                format!("No conversation found with session ID: {session_id}")
            }
            Self::UnknownCommand { name } => format!("Unknown command: /{name}"),
            Self::UsageLimit { .. } => "rate limit: usage limit reached".to_string(),
            Self::ResultError { subtype, messages } => {
                if messages.is_empty() {
                    subtype.clone()
                } else {
                    messages.join("; ")
                }
            }
            other => other.message(),
        }
    }

    /// Stable short name, for logs and the manifest.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotLoggedIn { .. } => "not_logged_in",
            Self::RootSkipPermissions => "root_skip_permissions",
            Self::ResumeUnknown { .. } => "resume_unknown",
            Self::UnknownCommand { .. } => "unknown_command",
            Self::UsageLimit { .. } => "usage_limit",
            Self::ResultError { .. } => "result_error",
            Self::NoResult => "no_result",
            Self::NonZeroExit { .. } => "non_zero_exit",
            Self::Timeout { .. } => "timeout",
            Self::Stalled { .. } => "stalled",
            Self::Cancelled => "cancelled",
            Self::MissingVerbose => "missing_verbose",
            Self::ApiUnavailable { .. } => "api_unavailable",
        }
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Everything piv keeps from one session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionOutcome {
    pub session_id: Option<String>,
    /// The result text, else the accumulated (bounded) assistant text.
    pub text: String,
    pub hooks: BTreeMap<String, String>,
    pub cost_usd: f64,
    pub num_turns: u32,
    pub duration_ms: u64,
    pub error: Option<SessionError>,
    pub stderr_tail: String,
    /// Lines that could not be parsed (logged by the runner, counted here).
    pub malformed_lines: u64,
    /// `system/api_retry` lines seen.
    pub api_retries: u32,
}

impl SessionOutcome {
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Folds a session's events into a [`SessionOutcome`].
#[derive(Debug, Default)]
pub struct SessionAccumulator {
    session_id: Option<String>,
    model: Option<String>,
    text: BoundedText,
    assistant_error: Option<(String, String)>,
    result: Option<ResultInfo>,
    rate_limit_rejected: Option<Option<i64>>,
    api_retries: u32,
    malformed: u64,
}

impl SessionAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn feed(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Init { session_id, model } => {
                self.session_id = Some(session_id);
                self.model = model;
            }
            StreamEvent::AssistantText(text) => self.text.push_line(&text),
            StreamEvent::AssistantError { error, text } => {
                self.text.push_line(&text);
                self.assistant_error = Some((error, text));
            }
            StreamEvent::Result(info) => {
                if self.session_id.is_none() {
                    self.session_id.clone_from(&info.session_id);
                }
                // total_cost_usd is cumulative for the process: the latest one wins.
                self.result = Some(info);
            }
            StreamEvent::RateLimit { status, resets_at } => {
                if status == "rejected" {
                    self.rate_limit_rejected = Some(resets_at);
                }
            }
            StreamEvent::ApiRetry { .. } => self.api_retries += 1,
            StreamEvent::Other => {}
        }
    }

    /// Counts a line the runner could not parse.
    pub fn note_malformed(&mut self) {
        self.malformed += 1;
    }

    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn finish(self, exit: ExitInfo) -> SessionOutcome {
        let error = self.classify(&exit);
        let text = match &self.result {
            Some(ResultInfo {
                result: Some(r), ..
            }) => r.clone(),
            _ => self.text.to_string(),
        };
        let hooks = crate::core::hooks::parse_hooks(&text);
        let (cost_usd, num_turns, duration_ms) = self
            .result
            .as_ref()
            .map(|r| (r.total_cost_usd, r.num_turns, r.duration_ms))
            .unwrap_or_default();
        SessionOutcome {
            session_id: self.session_id,
            text,
            hooks,
            cost_usd,
            num_turns,
            duration_ms,
            error,
            stderr_tail: exit.stderr_tail,
            malformed_lines: self.malformed,
            api_retries: self.api_retries,
        }
    }

    /// Order matters: what piv did to the process first, then the CLI's recognisable
    /// refusals, then what the result says, then the bare exit status.
    fn classify(&self, exit: &ExitInfo) -> Option<SessionError> {
        if exit.cancelled {
            return Some(SessionError::Cancelled);
        }
        if exit.timed_out {
            return Some(SessionError::Timeout {
                after_secs: exit.limit_secs,
            });
        }
        if exit.stalled {
            return Some(SessionError::Stalled {
                after_secs: exit.limit_secs,
            });
        }
        let stderr = exit.stderr_tail.as_str();
        if stderr.contains("requires --verbose") {
            return Some(SessionError::MissingVerbose);
        }
        if stderr.contains("cannot be used with root/sudo privileges") {
            return Some(SessionError::RootSkipPermissions);
        }
        const NO_CONVERSATION: &str = "No conversation found with session ID";
        let result_texts = self
            .result
            .iter()
            .flat_map(|r| r.errors.iter().chain(r.result.iter()));
        if let Some(line) = result_texts
            .map(String::as_str)
            .chain(stderr.lines())
            .find(|t| t.contains(NO_CONVERSATION))
        {
            let session_id = line
                .split_once(NO_CONVERSATION)
                .map(|(_, rest)| rest.trim_start_matches(':').trim().to_string())
                .filter(|s| !s.is_empty())
                .or_else(|| self.result.as_ref().and_then(|r| r.session_id.clone()))
                .unwrap_or_default();
            return Some(SessionError::ResumeUnknown { session_id });
        }
        let result_text = self
            .result
            .as_ref()
            .and_then(|r| r.result.as_deref())
            .unwrap_or("");
        if let Some(resets_at) = self.rate_limit_rejected {
            return Some(SessionError::UsageLimit { resets_at });
        }
        let failed = self.result.as_ref().is_none_or(|r| r.is_error);
        if failed && says_usage_limit(result_text) {
            return Some(SessionError::UsageLimit { resets_at: None });
        }
        let auth_error = self
            .assistant_error
            .as_ref()
            .is_some_and(|(e, _)| e == "authentication_failed");
        if auth_error || (failed && result_text.contains("Not logged in")) {
            let message = if result_text.is_empty() {
                self.assistant_error
                    .as_ref()
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| "authentication failed".to_string())
            } else {
                result_text.to_string()
            };
            return Some(SessionError::NotLoggedIn { message });
        }
        if let Some(r) = &self.result {
            if r.subtype != "success" || r.is_error {
                let mut messages = r.errors.clone();
                if let Some(text) = &r.result {
                    if !text.is_empty() {
                        messages.push(text.clone());
                    }
                }
                return Some(SessionError::ResultError {
                    subtype: r.subtype.clone(),
                    messages,
                });
            }
            if let Some(name) = unknown_command(result_text) {
                return Some(SessionError::UnknownCommand { name });
            }
            if exit.code != Some(0) && !exit.stopped_after_result {
                return Some(SessionError::NonZeroExit {
                    code: exit.code,
                    signal: exit.signal,
                });
            }
            return None;
        }
        if exit.code == Some(0) {
            Some(SessionError::NoResult)
        } else {
            Some(SessionError::NonZeroExit {
                code: exit.code,
                signal: exit.signal,
            })
        }
    }
}

fn says_usage_limit(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("usage limit") || lower.contains("hit your limit")
}

/// `Unknown command: /<name>` is the whole result when the project lacks a slash command.
fn unknown_command(text: &str) -> Option<String> {
    let name = text.trim().strip_prefix("Unknown command: /")?;
    (!name.is_empty() && !name.contains(char::is_whitespace)).then(|| name.to_string())
}

/// The tail of the assistant text, capped at [`ASSISTANT_TEXT_LIMIT`] bytes.
#[derive(Debug, Default)]
struct BoundedText {
    chunks: VecDeque<String>,
    len: usize,
}

impl BoundedText {
    fn push_line(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let mut line = String::with_capacity(text.len().min(ASSISTANT_TEXT_LIMIT) + 1);
        let start = text.len().saturating_sub(ASSISTANT_TEXT_LIMIT);
        line.push_str(&text[ceil_char_boundary(text, start)..]);
        line.push('\n');
        self.len += line.len();
        self.chunks.push_back(line);
        while self.len > ASSISTANT_TEXT_LIMIT && self.chunks.len() > 1 {
            if let Some(old) = self.chunks.pop_front() {
                self.len -= old.len();
            }
        }
    }
}

impl std::fmt::Display for BoundedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for chunk in &self.chunks {
            f.write_str(chunk)?;
        }
        Ok(())
    }
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stdout: &str, exit: ExitInfo) -> SessionOutcome {
        let mut acc = SessionAccumulator::new();
        for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
            match parse_line(line.as_bytes()) {
                Ok(ev) => acc.feed(ev),
                Err(_) => acc.note_malformed(),
            }
        }
        acc.finish(exit)
    }

    fn exit(code: i32, stderr: &str) -> ExitInfo {
        ExitInfo {
            code: Some(code),
            stderr_tail: stderr.to_string(),
            ..ExitInfo::default()
        }
    }

    macro_rules! capture {
        ($name:literal) => {
            (
                include_str!(concat!(
                    "../../tests/fixtures/claude-cli/",
                    $name,
                    ".stdout"
                )),
                include_str!(concat!(
                    "../../tests/fixtures/claude-cli/",
                    $name,
                    ".stderr"
                )),
                include_str!(concat!("../../tests/fixtures/claude-cli/", $name, ".rc"))
                    .trim()
                    .parse::<i32>()
                    .unwrap(),
            )
        };
    }

    fn run_capture((stdout, stderr, rc): (&str, &str, i32)) -> SessionOutcome {
        run(stdout, exit(rc, stderr))
    }

    #[test]
    fn every_capture_is_classified() {
        let o = run_capture(capture!("noauth"));
        assert_eq!(
            o.error,
            Some(SessionError::NotLoggedIn {
                message: "Not logged in · Please run /login".into()
            })
        );
        assert_eq!(
            o.session_id.as_deref(),
            Some("3d6e8db5-5fca-4a63-8870-8ca3ef8231d6")
        );
        assert_eq!(o.num_turns, 1);

        let o = run_capture(capture!("resume-unknown"));
        assert_eq!(
            o.error,
            Some(SessionError::ResumeUnknown {
                session_id: "11111111-1111-4111-8111-111111111111".into()
            })
        );

        let o = run_capture(capture!("skip-perms-root"));
        assert_eq!(o.error, Some(SessionError::RootSkipPermissions));
        assert!(o.stderr_tail.contains("root/sudo"));

        let o = run_capture(capture!("unknown-command"));
        assert_eq!(
            o.error,
            Some(SessionError::UnknownCommand {
                name: "prime".into()
            })
        );

        let o = run_capture(capture!("no-verbose"));
        assert_eq!(o.error, Some(SessionError::MissingVerbose));

        let o = run_capture(capture!("bogus-token"));
        assert_eq!(o.api_retries, 10);
        match o.error {
            Some(SessionError::ResultError { subtype, messages }) => {
                assert_eq!(subtype, "success");
                assert_eq!(
                    messages,
                    vec!["API Error: Unable to connect to API (ConnectionRefused)".to_string()]
                );
            }
            other => panic!("bogus-token: {other:?}"),
        }
    }

    #[test]
    fn success_keeps_latest_cost_and_hooks() {
        let stdout = r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}
{"type":"assistant","message":{"content":[{"type":"text","text":"a"},{"type":"tool_use","id":"x","name":"Bash","input":{}},{"type":"text","text":"b"}]}}
{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"num_turns":2,"duration_ms":10,"result":"first"}
{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.75,"num_turns":3,"duration_ms":20,"result":"done\n## PIV-Automator-Hooks\nvalidation_status: pass\nBad Key: x\n## Next\nother: y"}
{"type":"mystery","x":1}
"#;
        let o = run(stdout, exit(0, ""));
        assert_eq!(o.error, None);
        assert_eq!(o.session_id.as_deref(), Some("s1"));
        assert_eq!(o.cost_usd, 0.75);
        assert_eq!(o.num_turns, 3);
        assert_eq!(o.duration_ms, 20);
        assert_eq!(
            o.hooks.get("validation_status").map(String::as_str),
            Some("pass")
        );
        assert_eq!(o.hooks.len(), 1);
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"not json",
            b"[1,2]",
            b"{}",
            b"{\"type\":5}",
            b"{\"type\":\"result\",\"subtype\":\"success\",\"num_turns\":\"many\"}",
            b"{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":\"yes\"}",
            b"{\"type\":\"result\",\"subtype\":\"success\",\"total_cost_usd\":\"1\"}",
            b"{\"type\":\"result\"}",
            b"{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":7}",
            b"{\"type\":\"assistant\",\"message\":{\"content\":7}}",
            b"{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":1}]}}",
            b"{\"type\":\"rate_limit_event\",\"rate_limit_info\":{\"resetsAt\":true}}",
            b"\xff\xfe",
        ];
        for case in cases {
            assert!(
                parse_line(case).is_err(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
        assert_eq!(
            parse_line(b"{\"type\":\"user\",\"message\":{}}"),
            Ok(StreamEvent::Other)
        );
    }

    #[test]
    fn outcome_precedence_table() {
        let init = r#"{"type":"system","subtype":"init","session_id":"s"}"#;
        let ok = r#"{"type":"result","subtype":"success","is_error":false,"result":"fine"}"#;
        let cases: Vec<(String, ExitInfo, Option<SessionError>)> = vec![
            (format!("{init}\n{ok}"), exit(0, ""), None),
            (
                format!("{init}\n{ok}"),
                exit(2, "boom"),
                Some(SessionError::NonZeroExit {
                    code: Some(2),
                    signal: None,
                }),
            ),
            (init.to_string(), exit(0, ""), Some(SessionError::NoResult)),
            (
                init.to_string(),
                ExitInfo {
                    signal: Some(9),
                    ..ExitInfo::default()
                },
                Some(SessionError::NonZeroExit {
                    code: None,
                    signal: Some(9),
                }),
            ),
            (
                format!(
                    "{init}\n{}",
                    r#"{"type":"result","subtype":"success","is_error":true,"result":"tests failed"}"#
                ),
                exit(0, ""),
                Some(SessionError::ResultError {
                    subtype: "success".into(),
                    messages: vec!["tests failed".into()],
                }),
            ),
            (
                format!(
                    "{init}\n{}",
                    r#"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["max turns"]}"#
                ),
                exit(1, ""),
                Some(SessionError::ResultError {
                    subtype: "error_max_turns".into(),
                    messages: vec!["max turns".into()],
                }),
            ),
            (
                format!(
                    "{init}\n{}\n{}",
                    r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1770000000}}"#,
                    r#"{"type":"result","subtype":"success","is_error":true,"result":"limit"}"#
                ),
                exit(1, ""),
                Some(SessionError::UsageLimit {
                    resets_at: Some(1_770_000_000),
                }),
            ),
            (
                format!(
                    "{init}\n{}",
                    r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1770000000}}"#
                ),
                exit(0, ""),
                Some(SessionError::NoResult),
            ),
            (
                format!(
                    "{init}\n{}",
                    r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|1770000000"}"#
                ),
                exit(1, ""),
                Some(SessionError::UsageLimit { resets_at: None }),
            ),
            (
                format!("{init}\n{ok}"),
                ExitInfo {
                    timed_out: true,
                    limit_secs: 5,
                    ..ExitInfo::default()
                },
                Some(SessionError::Timeout { after_secs: 5 }),
            ),
            (
                init.to_string(),
                ExitInfo {
                    stalled: true,
                    limit_secs: 3,
                    ..ExitInfo::default()
                },
                Some(SessionError::Stalled { after_secs: 3 }),
            ),
            (
                format!("{init}\n{ok}"),
                ExitInfo {
                    signal: Some(15),
                    stopped_after_result: true,
                    ..ExitInfo::default()
                },
                None,
            ),
            (
                init.to_string(),
                ExitInfo {
                    cancelled: true,
                    timed_out: true,
                    ..ExitInfo::default()
                },
                Some(SessionError::Cancelled),
            ),
        ];
        for (i, (stdout, exit, want)) in cases.into_iter().enumerate() {
            assert_eq!(run(&stdout, exit).error, want, "case {i}");
        }
    }

    #[test]
    fn assistant_text_is_bounded_and_used_without_result() {
        let mut acc = SessionAccumulator::new();
        let line = "x".repeat(100 * 1024);
        for _ in 0..50 {
            acc.feed(StreamEvent::AssistantText(line.clone()));
        }
        acc.feed(StreamEvent::AssistantText(
            "tail\n## PIV-Automator-Hooks\nvalidation_status: fail".into(),
        ));
        let o = acc.finish(exit(0, ""));
        assert!(o.text.len() <= ASSISTANT_TEXT_LIMIT + 1);
        assert_eq!(
            o.hooks.get("validation_status").map(String::as_str),
            Some("fail")
        );
        assert_eq!(o.error, Some(SessionError::NoResult));
    }

    #[test]
    fn error_text_feeds_the_classifier() {
        assert!(SessionError::NotLoggedIn {
            message: "Not logged in".into()
        }
        .error_text()
        .contains("auth"));
        assert!(SessionError::UsageLimit { resets_at: None }
            .error_text()
            .contains("rate limit"));
        for e in [
            SessionError::NoResult,
            SessionError::Cancelled,
            SessionError::MissingVerbose,
            SessionError::RootSkipPermissions,
            SessionError::Timeout { after_secs: 1 },
        ] {
            assert!(!e.message().is_empty());
            assert!(!e.kind().is_empty());
        }
    }
}
