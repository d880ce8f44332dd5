//! The stream-json lines the scripted `claude` prints, shaped like the captures of the CLI version the scenario names (`system/init`, assistant text and `tool_use`, `system/api_retry`, `result`).
//!
//! 2.1.332 (the default) prints the `result` line with `"type"` in the middle (key order as
//! in `tests/fixtures/claude-cli-latest/`), a `terminal_reason` of `api_error` for API
//! failures plus the typed `api_error`, and integer `retry_delay_ms`; 2.1.197 puts `"type"`
//! first, says `completed` even for API failures, and prints float delays.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use super::{new_uuid, Invocation, Rule};

/// Which CLI's shapes to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CliVersion {
    V2_1_197,
    V2_1_332,
}

impl CliVersion {
    /// `"2.1.197"` picks the old shapes; anything else the newest.
    pub fn parse(s: &str) -> CliVersion {
        if s.trim() == "2.1.197" {
            CliVersion::V2_1_197
        } else {
            CliVersion::V2_1_332
        }
    }

    pub fn is_old(self) -> bool {
        self == CliVersion::V2_1_197
    }
}

/// Built-in slash commands every session lists after the project's and the user's.
const BUILTIN_COMMANDS: &[&str] = &[
    "clear",
    "compact",
    "config",
    "context",
    "init",
    "review",
    "security-review",
    "usage",
];

/// The extra fields of an API failure's result.
#[derive(Debug, Clone, Default)]
pub(super) struct ApiFailure {
    pub status: Option<u16>,
    pub api_error: Option<&'static str>,
    pub api_error_type: Option<&'static str>,
}

pub(super) struct Ctx<'a> {
    pub inv: &'a Invocation,
    pub prompt: &'a str,
    pub session_id: &'a str,
    pub rule: &'a Rule,
    pub started: Instant,
    pub cwd: PathBuf,
    pub version: CliVersion,
    /// What the session had reported before this call (`--resume` reports the total).
    pub prior_cost: f64,
    /// The session's slash commands as the init line lists them.
    pub slash_commands: Vec<String>,
    /// Tool uses the scripted effects made, printed before the final text.
    pub tools: RefCell<Vec<(String, Value)>>,
}

impl Ctx<'_> {
    pub fn model(&self) -> String {
        self.inv.model.clone().unwrap_or_else(|| {
            if self.version.is_old() {
                "claude-sonnet-5".to_string()
            } else {
                "claude-opus-5-5".to_string()
            }
        })
    }

    /// The command the prompt starts with, without `/` (None for plain text).
    pub fn command_name(&self) -> Option<&str> {
        command_name(self.prompt)
    }

    /// Whether the prompt is a slash command this session does not list.
    pub fn command_unknown(&self) -> bool {
        self.command_name()
            .is_some_and(|n| !self.slash_commands.iter().any(|c| c == n))
    }

    pub fn init_line(&self) -> Value {
        let permission_mode = if self.inv.skip_permissions {
            "bypassPermissions".to_string()
        } else {
            self.inv
                .permission_mode
                .clone()
                .unwrap_or_else(|| "default".to_string())
        };
        let api_key_source = if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
            "ANTHROPIC_API_KEY"
        } else {
            "none"
        };
        let tools = ["Task", "Bash", "Edit", "Read", "Write"];
        if self.version.is_old() {
            return json!({
                "type": "system", "subtype": "init", "cwd": self.cwd, "session_id": self.session_id,
                "tools": tools, "mcp_servers": [],
                "model": self.model(), "permissionMode": permission_mode,
                "slash_commands": self.slash_commands,
                "apiKeySource": api_key_source,
                "claude_code_version": "2.1.197-piv-fake", "output_style": "default",
                "agents": [], "skills": [], "plugins": [], "uuid": new_uuid(), "fast_mode_state": "off",
            });
        }
        json!({
            "type": "system", "subtype": "init", "cwd": self.cwd, "session_id": self.session_id,
            "tools": tools, "mcp_servers": [],
            "model": self.model(), "permissionMode": permission_mode,
            "slash_commands": self.slash_commands,
            "terminal_slash_commands": ["doctor", "color", "focus", "reload-plugins"],
            "apiKeySource": api_key_source,
            "claude_code_version": "2.1.332-piv-fake", "output_style": "default",
            "agents": ["claude", "Explore", "general-purpose", "Plan"], "skills": [],
            "plugins": [], "capabilities": [], "analytics_disabled": false,
            "product_feedback_disabled": false, "served_by_anthropic": false,
            "uuid": new_uuid(), "sandbox_enabled": false, "memory_paths": {},
            "original_cwd": self.cwd, "additional_directories": [],
            "fast_mode_state": "off",
        })
    }

    pub fn assistant(&self, text: &str, model: &str, error: Option<&str>) -> Value {
        self.assistant_content(json!([{"type": "text", "text": text}]), model, error)
    }

    fn assistant_content(&self, content: Value, model: &str, error: Option<&str>) -> Value {
        let mut v = json!({
            "type": "assistant",
            "message": {
                "id": new_uuid(), "container": null, "model": model, "role": "assistant",
                "stop_reason": null, "stop_sequence": null, "type": "message",
                "usage": {"input_tokens": 10, "output_tokens": 20},
                "content": content, "context_management": null,
            },
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": new_uuid(),
        });
        if !self.version.is_old() {
            v["timestamp"] = json!(super::effects::now_iso());
        }
        if let Some(e) = error {
            v["error"] = json!(e);
            if !self.version.is_old() {
                v["is_api_error_message"] = json!(true);
            }
        }
        v
    }

    /// A synthetic API-error assistant message (2.1.332 adds `api_error`/`api_error_status`).
    pub fn api_error_assistant(&self, text: &str, error: &str, failure: &ApiFailure) -> Value {
        let mut v = self.assistant(text, "<synthetic>", Some(error));
        if !self.version.is_old() {
            if let Some(s) = failure.status {
                v["api_error_status"] = json!(s);
            }
            if let Some(t) = failure.api_error_type {
                v["api_error_type"] = json!(t);
            }
            if let Some(e) = failure.api_error {
                v["api_error"] = json!(e);
            }
        }
        v
    }

    /// An assistant `tool_use` block and the `user` line with its result.
    pub fn tool_lines(&self, name: &str, input: &Value) -> [Value; 2] {
        let id = format!("toolu_{}", new_uuid().replace('-', ""));
        let call = self.assistant_content(
            json!([{"type": "tool_use", "id": id, "name": name, "input": input}]),
            &self.model(),
            None,
        );
        let result = json!({
            "type": "user",
            "message": {"role": "user", "content": [
                {"type": "tool_result", "content": "ok", "is_error": false, "tool_use_id": id}
            ]},
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": new_uuid(),
        });
        [call, result]
    }

    /// Records a tool use made by a scripted effect.
    pub fn used_tool(&self, name: &str, input: Value) {
        self.tools.borrow_mut().push((name.to_string(), input));
    }

    /// `system/api_retry`, as captured (float delays in 2.1.197, integers in 2.1.332).
    pub fn api_retry(
        &self,
        attempt: u32,
        delay_ms: u64,
        status: Option<u16>,
        error: &str,
    ) -> Value {
        let delay = if self.version.is_old() {
            json!(delay_ms as f64 + 0.55)
        } else {
            json!(delay_ms)
        };
        json!({
            "type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10,
            "retry_delay_ms": delay, "error_status": status, "error": error,
            "session_id": self.session_id, "uuid": new_uuid(),
        })
    }

    /// The session total this call reports: what the session had reported plus `cost`.
    pub fn total(&self, cost: f64) -> f64 {
        self.prior_cost + cost
    }

    pub fn result(
        &self,
        subtype: &str,
        is_error: bool,
        text: Option<&str>,
        errors: &[String],
        turns: u32,
        cost: f64,
    ) -> Value {
        let terminal = match subtype {
            "error_max_turns" => "max_turns",
            "error_max_budget_usd" => "budget_exhausted",
            _ => "completed",
        };
        self.result_with(
            subtype,
            is_error,
            text,
            errors,
            turns,
            cost,
            terminal,
            &ApiFailure::default(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn result_with(
        &self,
        subtype: &str,
        is_error: bool,
        text: Option<&str>,
        errors: &[String],
        turns: u32,
        cost: f64,
        terminal_reason: &str,
        failure: &ApiFailure,
    ) -> Value {
        let total = self.total(cost);
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let usage = json!({"input_tokens": 10, "output_tokens": 20});
        if self.version.is_old() {
            // 2.1.197 said `completed` even when the API failed.
            let terminal = if terminal_reason == "api_error" {
                "completed"
            } else {
                terminal_reason
            };
            let mut v = json!({
                "type": "result", "subtype": subtype, "is_error": is_error,
                "api_error_status": failure.status,
                "duration_ms": duration_ms,
                "duration_api_ms": 0, "num_turns": turns, "stop_reason": "end_turn",
                "session_id": self.session_id, "total_cost_usd": total,
                "usage": usage, "modelUsage": {},
                "permission_denials": [], "terminal_reason": terminal, "uuid": new_uuid(),
            });
            if let Some(t) = text {
                v["result"] = json!(t);
            }
            if !errors.is_empty() {
                v["errors"] = json!(errors);
            }
            return v;
        }
        let mut v = json!({
            "duration_api_ms": 0, "stop_reason": "end_turn", "session_id": self.session_id,
            "total_cost_usd": total, "usage": usage, "modelUsage": {},
            "permission_denials": [], "terminal_reason": terminal_reason,
            "fast_mode_state": "off", "safety_stops": 0,
            "is_error": is_error, "num_turns": turns, "subtype": subtype,
        });
        if !errors.is_empty() {
            v["errors"] = json!(errors);
        } else {
            v["api_error_status"] = json!(failure.status);
        }
        if let Some(t) = failure.api_error_type {
            v["api_error_type"] = json!(t);
        }
        if let Some(e) = failure.api_error {
            v["api_error"] = json!(e);
        }
        if let Some(t) = text {
            v["result"] = json!(t);
        }
        v["type"] = json!("result");
        v["duration_ms"] = json!(duration_ms);
        v["uuid"] = json!(new_uuid());
        v["queued_turn_count"] = json!(0);
        v["result_index"] = json!(0);
        v["model_usage_since_last_result"] = json!({});
        v
    }

    pub fn cost(&self) -> f64 {
        self.rule.cost.unwrap_or(0.01)
    }

    pub fn with_hooks(&self, text: &str, defaults: &BTreeMap<String, String>) -> String {
        let mut hooks = defaults.clone();
        hooks.extend(self.rule.hooks.clone());
        if hooks.is_empty() {
            return text.to_string();
        }
        let mut t = format!("{text}\n\n## PIV-Automator-Hooks\n");
        for (k, v) in hooks {
            t.push_str(&format!("{k}: {v}\n"));
        }
        t
    }
}

/// The command a prompt starts with, without `/` (None for plain text).
pub fn command_name(prompt: &str) -> Option<&str> {
    let first = prompt.split_whitespace().next()?;
    let name = first.strip_prefix('/')?;
    (!name.is_empty()).then_some(name)
}

/// The slash commands a session in `cwd` lists: the project's `.claude/commands/*.md`,
/// then the user's (`$CLAUDE_CONFIG_DIR/commands`, else `~/.claude/commands`), then the
/// built-in ones.
pub fn listed_commands(cwd: &Path) -> Vec<String> {
    let user_dir = match std::env::var_os("CLAUDE_CONFIG_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d).join("commands")),
        _ => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".claude/commands")),
    };
    let mut names = Vec::new();
    for dir in std::iter::once(cwd.join(".claude/commands")).chain(user_dir) {
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".md").map(str::to_string)
            })
            .collect();
        found.sort();
        for n in found {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.extend(BUILTIN_COMMANDS.iter().map(|s| s.to_string()));
    names
}
