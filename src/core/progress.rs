//! The progress of one running step, from its stream-json `tool_use` blocks: the one-line
//! description of each tool action (the earlier version's progress tracker, behaviour.md
//! §13 F1), the counters a live status card shows, and the card's text.
//!
//! Pure: the caller feeds each assistant message's tool uses ([`ToolUse::from_content`]
//! reads them from the message's `content` array) and passes `now`.

use std::collections::BTreeSet;
use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use crate::core::events::format_elapsed;
use crate::core::telegram_text::escape_html;

/// How many recent actions a status card lists.
pub const RECENT_ACTIONS: usize = 5;
/// A Bash command is cut to this many characters (then `...`), as the earlier version did.
pub const BASH_COMMAND_CHARS: usize = 80;
/// Any other target is cut here so one odd tool cannot fill a card.
const TARGET_CHARS: usize = 120;

/// One `tool_use` block of an assistant message.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub name: String,
    pub input: Value,
}

impl ToolUse {
    /// The `tool_use` blocks of an assistant message's `content` array, in order (other
    /// blocks, and blocks without a string `name`, are skipped).
    pub fn from_content(content: &Value) -> Vec<ToolUse> {
        let Some(blocks) = content.as_array() else {
            return Vec::new();
        };
        blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|b| {
                Some(ToolUse {
                    name: b.get("name")?.as_str()?.to_string(),
                    input: b.get("input").cloned().unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    fn field(&self, key: &str) -> Option<&str> {
        self.input.get(key).and_then(Value::as_str)
    }
}

/// Cuts `text` to `max` characters (never inside a UTF-8 sequence), adding `...` when cut,
/// and folds it onto one line.
fn cut(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max).collect();
        s.push_str("...");
        s
    }
}

/// The one-line description of a tool action: `Read src/main.rs`, `Bash cargo test` (cut to
/// 80 characters), `Edit path`, `Task description`, `WebSearch query`, … and the bare tool
/// name when it has no known target.
pub fn describe(tool: &ToolUse) -> String {
    let target = match tool.name.as_str() {
        "Read" | "Write" | "Edit" | "MultiEdit" => tool.field("file_path").map(str::to_string),
        "NotebookEdit" => tool.field("notebook_path").map(str::to_string),
        "Bash" => tool.field("command").map(|c| cut(c, BASH_COMMAND_CHARS)),
        "Glob" | "Grep" => tool.field("pattern").map(str::to_string),
        "Task" | "Agent" => tool.field("description").map(str::to_string),
        "WebSearch" => tool.field("query").map(str::to_string),
        "WebFetch" => tool.field("url").map(str::to_string),
        "Skill" => tool
            .field("skill")
            .or(tool.field("name"))
            .map(str::to_string),
        _ => None,
    };
    match target {
        Some(t) if !t.trim().is_empty() => format!("{} {}", tool.name, cut(&t, TARGET_CHARS)),
        _ => tool.name.clone(),
    }
}

/// What one running step has done so far.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepProgress {
    /// Assistant messages seen (the CLI's turns, as the earlier tracker counted them).
    pub turns: u32,
    pub tool_calls: u32,
    pub files_created: BTreeSet<String>,
    pub files_modified: BTreeSet<String>,
    pub subagents: u32,
    /// The last [`RECENT_ACTIONS`] descriptions, oldest first.
    pub recent: VecDeque<String>,
}

impl StepProgress {
    /// Records one assistant message with its tool uses.
    pub fn record_message(&mut self, tools: &[ToolUse]) {
        self.turns += 1;
        for tool in tools {
            self.record_tool(tool);
        }
    }

    fn record_tool(&mut self, tool: &ToolUse) {
        self.tool_calls += 1;
        let path = tool.field("file_path").map(str::to_string);
        match (tool.name.as_str(), path) {
            // A file written after being edited was not created by this step.
            ("Write", Some(p)) if !self.files_modified.contains(&p) => {
                self.files_created.insert(p);
            }
            ("Edit" | "MultiEdit", Some(p)) if !self.files_created.contains(&p) => {
                self.files_modified.insert(p);
            }
            ("Task" | "Agent", _) => self.subagents += 1,
            _ => {}
        }
        if self.recent.len() == RECENT_ACTIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(describe(tool));
    }
}

/// What a live status card shows besides the progress.
#[derive(Debug, Clone, PartialEq)]
pub struct CardHeader {
    /// `None` before the phase loop (research, preflight).
    pub phase: Option<u32>,
    pub step: String,
    pub elapsed: Duration,
    /// The run's cost so far, when known.
    pub cost_usd: Option<f64>,
}

/// The text (Telegram HTML) of a live status card.
pub fn card_text(header: &CardHeader, progress: &StepProgress) -> String {
    let phase = match header.phase {
        Some(n) => format!("Phase {n}"),
        None => "Pre-loop".to_string(),
    };
    let mut lines = vec![
        format!("📊 <b>{phase} — {}</b>", escape_html(&header.step)),
        format!(
            "Elapsed: {} | Turns: {} | Tools: {}",
            format_elapsed(header.elapsed),
            progress.turns,
            progress.tool_calls
        ),
    ];
    let mut files = Vec::new();
    if !progress.files_created.is_empty() {
        files.push(format!("created {}", progress.files_created.len()));
    }
    if !progress.files_modified.is_empty() {
        files.push(format!("modified {}", progress.files_modified.len()));
    }
    if progress.subagents > 0 {
        files.push(format!("sub-agents {}", progress.subagents));
    }
    if !files.is_empty() {
        lines.push(format!("Files: {}", files.join(", ")));
    }
    if let Some(cost) = header.cost_usd {
        lines.push(format!("Cost so far: ${cost:.2}"));
    }
    if !progress.recent.is_empty() {
        lines.push(String::new());
        for action in &progress.recent {
            lines.push(format!("• <code>{}</code>", escape_html(action)));
        }
    }
    lines.join("\n")
}

/// Whether a live card should be edited now: only when its text changed and at least
/// `min_interval` (3 s) passed since the last edit (`last_edit` None: never edited).
pub fn edit_due(
    last_text: Option<&str>,
    new_text: &str,
    last_edit: Option<Duration>,
    now: Duration,
    min_interval: Duration,
) -> bool {
    if last_text == Some(new_text) {
        return false;
    }
    match last_edit {
        None => true,
        Some(at) => now.saturating_sub(at) >= min_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(name: &str, input: Value) -> ToolUse {
        ToolUse {
            name: name.into(),
            input,
        }
    }

    #[test]
    fn describes_each_tool_as_the_earlier_tracker_did() {
        let long = "x".repeat(100);
        let cases = [
            (
                tool("Read", json!({"file_path": "src/main.rs"})),
                "Read src/main.rs".to_string(),
            ),
            (
                tool("Write", json!({"file_path": "a.txt", "content": "hi"})),
                "Write a.txt".into(),
            ),
            (
                tool("Edit", json!({"file_path": "b.rs"})),
                "Edit b.rs".into(),
            ),
            (
                tool("Bash", json!({"command": "cargo test"})),
                "Bash cargo test".into(),
            ),
            (
                tool("Bash", json!({ "command": long })),
                format!("Bash {}...", "x".repeat(80)),
            ),
            (tool("Bash", json!({"command": "a\nb"})), "Bash a b".into()),
            (
                tool("Glob", json!({"pattern": "**/*.rs"})),
                "Glob **/*.rs".into(),
            ),
            (
                tool("Grep", json!({"pattern": "fn main"})),
                "Grep fn main".into(),
            ),
            (
                tool("Task", json!({"description": "review"})),
                "Task review".into(),
            ),
            (
                tool("WebSearch", json!({"query": "nats kv"})),
                "WebSearch nats kv".into(),
            ),
            (
                tool("WebFetch", json!({"url": "https://x.y"})),
                "WebFetch https://x.y".into(),
            ),
            (tool("TodoWrite", json!({"todos": []})), "TodoWrite".into()),
            (tool("Read", json!({})), "Read".into()),
            (tool("Read", Value::Null), "Read".into()),
        ];
        for (t, want) in cases {
            assert_eq!(describe(&t), want, "{t:?}");
        }
    }

    #[test]
    fn cutting_never_splits_a_character() {
        let cmd = "é".repeat(90);
        let d = describe(&tool("Bash", json!({ "command": cmd })));
        assert_eq!(d, format!("Bash {}...", "é".repeat(80)));
    }

    #[test]
    fn reads_tool_uses_from_a_message_content() {
        let content = json!([
            {"type": "text", "text": "let me look"},
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {"file_path": "x"}},
            {"type": "tool_use", "id": "t2", "input": {}},
            {"type": "tool_use", "id": "t3", "name": "Bash", "input": {"command": "ls"}}
        ]);
        let tools = ToolUse::from_content(&content);
        assert_eq!(
            tools.iter().map(describe).collect::<Vec<_>>(),
            ["Read x", "Bash ls"]
        );
        assert!(ToolUse::from_content(&json!("text")).is_empty());
    }

    #[test]
    fn counts_turns_tools_files_and_keeps_the_last_actions() {
        let mut p = StepProgress::default();
        p.record_message(&[]);
        p.record_message(&[
            tool("Write", json!({"file_path": "new.rs"})),
            tool("Edit", json!({"file_path": "new.rs"})),
            tool("Edit", json!({"file_path": "old.rs"})),
            tool("Write", json!({"file_path": "old.rs"})),
        ]);
        p.record_message(&[tool("Task", json!({"description": "d"}))]);
        for i in 0..3 {
            p.record_message(&[tool("Bash", json!({ "command": format!("echo {i}") }))]);
        }
        assert_eq!(p.turns, 6);
        assert_eq!(p.tool_calls, 8);
        assert_eq!(p.files_created.iter().collect::<Vec<_>>(), ["new.rs"]);
        assert_eq!(p.files_modified.iter().collect::<Vec<_>>(), ["old.rs"]);
        assert_eq!(p.subagents, 1);
        assert_eq!(
            p.recent.iter().collect::<Vec<_>>(),
            [
                "Write old.rs",
                "Task d",
                "Bash echo 0",
                "Bash echo 1",
                "Bash echo 2"
            ]
        );
    }

    #[test]
    fn the_card_shows_step_counters_cost_and_actions_escaped() {
        let mut p = StepProgress::default();
        p.record_message(&[
            tool("Write", json!({"file_path": "a<b>.rs"})),
            tool("Bash", json!({"command": "echo 1 && echo 2"})),
        ]);
        let header = CardHeader {
            phase: Some(2),
            step: "execute".into(),
            elapsed: Duration::from_secs(125),
            cost_usd: Some(0.4),
        };
        assert_eq!(
            card_text(&header, &p),
            "📊 <b>Phase 2 — execute</b>\n\
             Elapsed: 2m 05s | Turns: 1 | Tools: 2\n\
             Files: created 1\n\
             Cost so far: $0.40\n\
             \n\
             • <code>Write a&lt;b&gt;.rs</code>\n\
             • <code>Bash echo 1 &amp;&amp; echo 2</code>"
        );
        let bare = CardHeader {
            phase: None,
            step: "research".into(),
            elapsed: Duration::from_secs(3),
            cost_usd: None,
        };
        assert_eq!(
            card_text(&bare, &StepProgress::default()),
            "📊 <b>Pre-loop — research</b>\nElapsed: 3.0s | Turns: 0 | Tools: 0"
        );
    }

    #[test]
    fn edits_only_changed_text_and_at_most_every_interval() {
        let s = Duration::from_secs;
        let every = s(3);
        // (last text, new text, last edit, now, due)
        let cases = [
            (None, "a", None, s(0), true),
            (Some("a"), "a", Some(s(0)), s(100), false),
            (Some("a"), "b", Some(s(10)), s(12), false),
            (Some("a"), "b", Some(s(10)), s(13), true),
            (Some("a"), "b", None, s(0), true),
            // A clock that went backwards never makes an edit due early.
            (Some("a"), "b", Some(s(10)), s(5), false),
        ];
        for (last, new, at, now, due) in cases {
            assert_eq!(
                edit_due(last, new, at, now, every),
                due,
                "{last:?} {new:?} {at:?} {now:?}"
            );
        }
    }
}
