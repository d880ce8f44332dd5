//! What one Claude Code session came to (pure): the events of its stream-json lines plus how the process ended, folded into a [`SessionOutcome`] whose [`SessionError`] says which of the CLI's many ways of failing this was.
//!
//! The decision is made from the CLI's fields — `terminal_reason`, `api_error`,
//! `api_error_status`, the `error_max_turns` / `error_max_budget_usd` subtypes, the
//! `api_retry` events, the init line's `slash_commands` — and from message texts only where
//! an older CLI (2.1.197) gives nothing else. Some verdicts come before the end: the
//! [`SessionAccumulator`] says when the session must be stopped at once
//! ([`SessionAccumulator::abort`]) — a command the session does not list, or credentials
//! the API rejects (the CLI would retry them for minutes).

use std::collections::{BTreeMap, VecDeque};

use crate::core::stream::{ResultInfo, StreamEvent};

/// Assistant text kept per session. Sessions can print hundreds of MB; only the tail matters
/// (hooks come last), so memory stays flat.
pub const ASSISTANT_TEXT_LIMIT: usize = 256 * 1024;

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
    /// The session ended at its `--max-turns` (the `error_max_turns` subtype or
    /// `terminal_reason: max_turns`): the turn budget was too small, not a crash. The runner
    /// retries once with a larger budget.
    TurnBudgetExhausted {
        turns: u32,
        messages: Vec<String>,
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
                 root. Run piv as a normal user; or set PIV_PERMISSION_MODE=auto (accepted as root: \
                 a classifier then approves or blocks each tool call, so risky actions are refused \
                 and a step may fail on them); or set IS_SANDBOX=1 if this machine is a disposable \
                 sandbox."
                .to_string(),
            Self::ResumeUnknown { session_id } => {
                format!("Claude Code has no conversation with session ID {session_id} to resume.")
            }
            Self::UnknownCommand { name } => format!(
                "Claude Code does not know the command /{name}: the project has no \
                 .claude/commands/{name}.md (nor ~/.claude/commands/{name}.md, or \
                 $CLAUDE_CONFIG_DIR/commands/{name}.md when that is set)."
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
            Self::TurnBudgetExhausted { turns, messages } => {
                let why = if messages.is_empty() {
                    String::new()
                } else {
                    format!(": {}", messages.join("; "))
                };
                format!("Turn budget exhausted after {turns} turns (--max-turns){why}.")
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
            Self::TurnBudgetExhausted { .. } => "turn_budget_exhausted",
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
    /// The `total_cost_usd` of the session's last result: the whole session's cost so far,
    /// including earlier calls a `--resume` continued. None: no result, cost unknown.
    pub cost_usd: Option<f64>,
    /// The model the session reported in `system/init`.
    pub model: Option<String>,
    pub num_turns: u32,
    pub duration_ms: u64,
    pub error: Option<SessionError>,
    pub stderr_tail: String,
    /// Lines that could not be parsed (logged by the runner, counted here).
    pub malformed_lines: u64,
    /// `system/api_retry` lines seen.
    pub api_retries: u32,
    /// The last `rate_limit_event` of the session.
    pub rate_limit: Option<crate::core::rate_limit::RateLimitInfo>,
    /// Some `rate_limit_event` said the session was paid from extra usage.
    pub used_overage: bool,
}

/// The command `prompt` starts with (without `/`) when `slash_commands`, the session's
/// list, lacks it: the CLI would send the text to the model as a plain request.
pub fn unknown_slash_command(prompt: &str, slash_commands: &[String]) -> Option<String> {
    let name = prompt.split_whitespace().next()?.strip_prefix('/')?;
    if name.is_empty() || slash_commands.iter().any(|c| c == name) {
        return None;
    }
    Some(name.to_string())
}

/// What each session has reported so far (`total_cost_usd` by session id), so that a
/// call is counted as its session's reported total minus what that session had already
/// reported: a `--resume`d call's total covers the whole session.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReportedCosts {
    totals: BTreeMap<String, f64>,
}

impl ReportedCosts {
    /// This call's own cost, given its session and the total it reported; None when the
    /// total is unknown (no result). A total below the session's earlier one (a CLI that
    /// reports per call) counts as the call's own.
    pub fn call_cost(&mut self, session_id: Option<&str>, reported: Option<f64>) -> Option<f64> {
        let total = reported?;
        let Some(id) = session_id else {
            return Some(total);
        };
        let before = self.totals.insert(id.to_string(), total).unwrap_or(0.0);
        Some(if total >= before {
            total - before
        } else {
            total
        })
    }
}

/// An `api_retry` for rejected credentials: retrying cannot help.
fn auth_retry(error: Option<&str>, status: Option<u16>) -> bool {
    error == Some("authentication_failed") || matches!(status, Some(401 | 403))
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
    rate_limit: Option<crate::core::rate_limit::RateLimitInfo>,
    used_overage: bool,
    api_retries: u32,
    malformed: u64,
    /// The command the prompt sends (without `/`), checked against the init line.
    command: Option<String>,
    abort: Option<SessionError>,
}

impl SessionAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// An accumulator for a session sent `prompt`: when the prompt is a slash command the
    /// session's init line does not list, the session is to be stopped ([`Self::abort`]).
    pub fn for_prompt(prompt: &str) -> Self {
        let command = prompt
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix('/'))
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        Self {
            command,
            ..Self::default()
        }
    }

    /// Set once the session must be stopped at once, before it spends more: the reason.
    pub fn abort(&self) -> Option<&SessionError> {
        self.abort.as_ref()
    }

    pub fn feed(&mut self, event: StreamEvent) {
        match event {
            StreamEvent::Init {
                session_id,
                model,
                slash_commands,
            } => {
                self.session_id = Some(session_id);
                self.model = model;
                if let (Some(command), Some(list), None) =
                    (&self.command, &slash_commands, &self.abort)
                {
                    if let Some(name) = unknown_slash_command(&format!("/{command}"), list) {
                        self.abort = Some(SessionError::UnknownCommand { name });
                    }
                }
            }
            StreamEvent::Assistant { text, .. } => self.text.push_line(&text),
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
            StreamEvent::RateLimit(info) => {
                if info.is_rejected() {
                    self.rate_limit_rejected = Some(info.resets_at);
                }
                self.used_overage |= info.is_overage();
                self.rate_limit = Some(info);
            }
            StreamEvent::ApiRetry {
                error_status,
                error,
                ..
            } => {
                self.api_retries += 1;
                if self.abort.is_none() && auth_retry(error.as_deref(), error_status) {
                    let cause = match (error_status, error.as_deref()) {
                        (Some(s), Some(e)) => format!("{s} {e}"),
                        (Some(s), None) => s.to_string(),
                        (None, Some(e)) => e.to_string(),
                        (None, None) => "rejected".to_string(),
                    };
                    self.abort = Some(SessionError::NotLoggedIn {
                        message: format!(
                            "the API rejected the credentials ({cause}); piv stopped the session at the CLI's first retry"
                        ),
                    });
                }
            }
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
        let (num_turns, duration_ms) = self
            .result
            .as_ref()
            .map(|r| (r.num_turns, r.duration_ms))
            .unwrap_or_default();
        SessionOutcome {
            session_id: self.session_id,
            text,
            hooks,
            cost_usd: self.result.as_ref().map(|r| r.total_cost_usd),
            model: self.model,
            num_turns,
            duration_ms,
            error,
            stderr_tail: exit.stderr_tail,
            malformed_lines: self.malformed,
            api_retries: self.api_retries,
            rate_limit: self.rate_limit,
            used_overage: self.used_overage,
        }
    }

    /// Order matters: what piv did to the process first (and why it stopped it early), then
    /// the CLI's recognisable refusals, then what the result says, then the bare exit status.
    fn classify(&self, exit: &ExitInfo) -> Option<SessionError> {
        if exit.cancelled {
            return Some(SessionError::Cancelled);
        }
        if let Some(e) = &self.abort {
            return Some(e.clone());
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
            .is_some_and(|(e, _)| e == "authentication_failed")
            || self.result.as_ref().is_some_and(|r| {
                matches!(r.api_error_status, Some(401 | 403))
                    || r.api_error_type.as_deref() == Some("authentication_error")
                    || r.api_error.as_deref() == Some("authentication_failed")
            });
        // 2.1.197 said "Not logged in" only in the text.
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
        if let Some(detail) = self.outage(result_text) {
            return Some(SessionError::ApiUnavailable { detail });
        }
        if let Some(r) = &self.result {
            if r.subtype == "error_max_turns" || r.terminal_reason.as_deref() == Some("max_turns") {
                return Some(SessionError::TurnBudgetExhausted {
                    turns: r.num_turns,
                    messages: r.errors.clone(),
                });
            }
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

impl SessionAccumulator {
    /// The API could not be reached or was overloaded: the result failed with
    /// `terminal_reason: api_error` (auth is decided before), a typed `api_error`, an
    /// `api_error_status` of 5xx or 529, or after `api_retry` events; 2.1.197, which said
    /// `completed` for all of these, by its synthetic `server_error` message or its
    /// "API Error: … connect / overloaded" text. A turn or budget limit is never an outage.
    fn outage(&self, result_text: &str) -> Option<String> {
        let r = self.result.as_ref()?;
        if !(r.is_error || r.subtype != "success")
            || matches!(
                r.subtype.as_str(),
                "error_max_turns" | "error_max_budget_usd"
            )
            || matches!(
                r.terminal_reason.as_deref(),
                Some("max_turns" | "budget_exhausted")
            )
        {
            return None;
        }
        let by_fields = r.terminal_reason.as_deref() == Some("api_error")
            || r.api_error.is_some()
            || r.api_error_status.is_some_and(|s| s >= 500)
            || r.api_error_type.as_deref() == Some("overloaded_error");
        let server_error = self
            .assistant_error
            .as_ref()
            .is_some_and(|(e, _)| e == "server_error");
        let lower = result_text.to_ascii_lowercase();
        let by_text = lower.starts_with("api error")
            && (lower.contains("connect")
                || lower.contains("connection")
                || lower.contains("reach the api")
                || lower.contains("overloaded"));
        let after_retries = self.api_retries > 0 && r.subtype == "success";
        if !(by_fields || server_error || by_text || after_retries) {
            return None;
        }
        let mut detail = if result_text.is_empty() {
            r.errors.join("; ")
        } else {
            result_text.to_string()
        };
        if detail.is_empty() {
            detail = r
                .api_error
                .clone()
                .or_else(|| r.api_error_status.map(|s| format!("HTTP {s}")))
                .unwrap_or_else(|| "API error".to_string());
        }
        if self.api_retries > 0 {
            detail.push_str(&format!(" (after {} retries)", self.api_retries));
        }
        Some(detail)
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
mod tests;
