//! Claude Code stream-json: parsing one stdout line into an event (pure).
//!
//! The CLI's message union is large and grows with every release, so only the handful of
//! kinds a supervisor needs become events; everything else is [`StreamEvent::Other`]. A line
//! that is not JSON, or whose known fields have the wrong type, is a [`StreamLineError`]: the
//! caller logs it and carries on, because one bad line must never sink a session. Lines are
//! recognised by their parsed `type`, never by where it sits (2.1.332 moved `"type"` out of
//! the first place in `result` lines). What a session's events add up to is decided in
//! [`crate::core::session_outcome`] (re-exported here).

use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::core::progress::ToolUse;
pub use crate::core::rate_limit::RateLimitInfo;

pub use crate::core::session_outcome::{
    unknown_slash_command, ExitInfo, SessionAccumulator, SessionError, SessionOutcome,
    ASSISTANT_TEXT_LIMIT,
};

/// One stdout line of `claude -p --output-format stream-json --verbose`, reduced to what piv uses.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `system`/`init`: the first line of a session.
    Init {
        session_id: String,
        model: Option<String>,
        /// The commands the session knows (None when the CLI does not say).
        slash_commands: Option<Vec<String>>,
    },
    /// An `assistant` message: its text blocks joined with newlines (may be empty for
    /// tool-only messages) and its `tool_use` blocks, in order (for the progress card).
    Assistant { text: String, tools: Vec<ToolUse> },
    /// A synthetic assistant message's `error` field (e.g. `authentication_failed`).
    AssistantError { error: String, text: String },
    /// The turn-complete `result` line.
    Result(ResultInfo),
    /// `rate_limit_event`: the window's status (allowed, allowed_warning or rejected), its
    /// reset, how full it is, and whether extra usage pays for the session.
    RateLimit(RateLimitInfo),
    /// `system`/`api_retry`: the CLI is retrying a failed API call.
    ApiRetry {
        attempt: u32,
        error_status: Option<u16>,
        /// The CLI's cause: `unknown` (connection), `authentication_failed`, ...
        error: Option<String>,
        /// How long the CLI waits before the next attempt (an integer since 2.1.332, a
        /// float before; kept in whole milliseconds).
        retry_delay_ms: Option<u64>,
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
    /// Why the turn ended: `completed`, `api_error`, `max_turns`, `budget_exhausted`, ...
    pub terminal_reason: Option<String>,
    /// The HTTP status of a failed API call (401, 529, ...).
    pub api_error_status: Option<u16>,
    /// The typed cause of an API failure, e.g. `connection_failed` (2.1.332).
    pub api_error: Option<String>,
    /// The API's error type, e.g. `authentication_error`, `overloaded_error`.
    pub api_error_type: Option<String>,
}

impl StreamEvent {
    /// How much longer than the stall limit the CLI may stay silent after this line: an
    /// `api_retry` announces its wait before the next attempt.
    pub fn announced_wait(&self) -> Duration {
        match self {
            StreamEvent::ApiRetry {
                retry_delay_ms: Some(ms),
                ..
            } => Duration::from_millis(*ms),
            _ => Duration::ZERO,
        }
    }
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
            let slash_commands = match obj.get("slash_commands") {
                None | Some(Value::Null) => None,
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                ),
                Some(_) => return Err(bad("system/init", "slash_commands", "an array")),
            };
            Ok(StreamEvent::Init {
                session_id,
                model,
                slash_commands,
            })
        }
        Some("api_retry") => {
            let attempt = opt_u64(obj, "system/api_retry", "attempt")?.unwrap_or(0);
            let error_status = opt_u64(obj, "system/api_retry", "error_status")?;
            let error = opt_str(obj, "system/api_retry", "error")?;
            let retry_delay_ms = opt_u64(obj, "system/api_retry", "retry_delay_ms")?;
            Ok(StreamEvent::ApiRetry {
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                error_status: error_status.and_then(|s| u16::try_from(s).ok()),
                error,
                retry_delay_ms,
            })
        }
        _ => Ok(StreamEvent::Other),
    }
}

fn parse_assistant(obj: &Map<String, Value>) -> Result<StreamEvent, StreamLineError> {
    let message = match obj.get("message") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Ok(StreamEvent::Assistant {
                text: String::new(),
                tools: Vec::new(),
            })
        }
        Some(_) => return Err(bad("assistant", "message", "an object")),
    };
    let mut texts: Vec<&str> = Vec::new();
    let tools = message
        .get("content")
        .map(ToolUse::from_content)
        .unwrap_or_default();
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
        None => Ok(StreamEvent::Assistant { text, tools }),
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
    let terminal_reason = opt_str(obj, K, "terminal_reason")?;
    let api_error_status = opt_u64(obj, K, "api_error_status")?.and_then(|s| u16::try_from(s).ok());
    let api_error = opt_str(obj, K, "api_error")?;
    let api_error_type = opt_str(obj, K, "api_error_type")?;
    Ok(ResultInfo {
        subtype,
        is_error,
        total_cost_usd,
        num_turns: u32::try_from(num_turns).unwrap_or(u32::MAX),
        duration_ms,
        result,
        errors,
        session_id,
        terminal_reason,
        api_error_status,
        api_error,
        api_error_type,
    })
}

fn parse_rate_limit(obj: &Map<String, Value>) -> Result<StreamEvent, StreamLineError> {
    const K: &str = "rate_limit_event";
    let info = match obj.get("rate_limit_info") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Ok(StreamEvent::Other),
        Some(_) => return Err(bad(K, "rate_limit_info", "an object")),
    };
    RateLimitInfo::from_json(info)
        .map(StreamEvent::RateLimit)
        .map_err(|field| bad(K, field, "of the documented type"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn assistant_messages_carry_their_text_and_tool_uses() {
        let line = br#"{"type":"assistant","message":{"content":[{"type":"text","text":"Looking"},{"type":"tool_use","id":"t1","name":"Read","input":{"file_path":"src/lib.rs"}},{"type":"text","text":"then"},{"type":"tool_use","id":"t2","name":"Bash","input":{"command":"cargo test"}}]},"parent_tool_use_id":null,"session_id":"s"}"#;
        let StreamEvent::Assistant { text, tools } = parse_line(line).unwrap() else {
            panic!("not an assistant event")
        };
        assert_eq!(text, "Looking\nthen");
        let described: Vec<String> = tools.iter().map(crate::core::progress::describe).collect();
        assert_eq!(described, ["Read src/lib.rs", "Bash cargo test"]);
        assert_eq!(
            parse_line(br#"{"type":"assistant","message":{"content":"plain"}}"#),
            Ok(StreamEvent::Assistant {
                text: "plain".into(),
                tools: Vec::new()
            })
        );
    }

    /// 2.1.332 moved `"type"` out of the first place of `result` lines: they are found by
    /// parsing, with their new fields.
    #[test]
    fn latest_result_lines_are_found_by_parsing() {
        let stdout = include_str!(
            "../../tests/fixtures/claude-cli-latest/conn-refused-max-retries-1.stdout"
        );
        let events: Vec<StreamEvent> = stdout
            .lines()
            .map(|l| parse_line(l.as_bytes()).unwrap())
            .collect();
        assert!(!stdout.lines().last().unwrap().starts_with("{\"type\""));
        match &events[..] {
            [StreamEvent::Init {
                model,
                slash_commands: Some(commands),
                ..
            }, StreamEvent::ApiRetry {
                attempt: 1,
                error_status: None,
                error: Some(error),
                retry_delay_ms: Some(608),
            }, StreamEvent::AssistantError { error: server, .. }, StreamEvent::Result(r)] => {
                assert_eq!(model.as_deref(), Some("claude-opus-5-5"));
                assert!(commands.iter().any(|c| c == "clear"));
                assert_eq!(error, "unknown");
                assert_eq!(server, "server_error");
                assert_eq!(r.terminal_reason.as_deref(), Some("api_error"));
                assert_eq!(r.api_error.as_deref(), Some("connection_failed"));
                assert_eq!(r.api_error_status, None);
                assert!(r.is_error);
            }
            other => panic!("{other:?}"),
        }
        let stdout = include_str!("../../tests/fixtures/claude-cli-latest/mock-401.stdout");
        let last = parse_line(stdout.lines().last().unwrap().as_bytes()).unwrap();
        let StreamEvent::Result(r) = last else {
            panic!("{last:?}")
        };
        assert_eq!(r.api_error_status, Some(401));
        assert_eq!(r.api_error_type.as_deref(), Some("authentication_error"));
        // 2.1.197's float delay is kept in whole milliseconds.
        let old = br#"{"type":"system","subtype":"api_retry","attempt":1,"retry_delay_ms":618.55,"error_status":null,"error":"unknown"}"#;
        let ev = parse_line(old).unwrap();
        assert_eq!(ev.announced_wait(), Duration::from_millis(618));
        assert_eq!(StreamEvent::Other.announced_wait(), Duration::ZERO);
    }
}
