//! The scripted model of the Messages API stand-in: which PIV command a conversation runs
//! (from the expanded command text), where in its script it is (derived from the
//! conversation itself, so the server keeps no per-session state), and the script of each
//! command: tool calls the real CLI executes, one per response, then a final text with a
//! PIV-Automator-Hooks block.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::MARKER;

/// One response: tool calls are made one per response.
#[derive(Debug, Clone)]
pub(super) enum Turn {
    Tool { name: &'static str, input: Value },
    Text(String),
}

pub(super) fn blocks(message: &Value) -> Vec<Value> {
    match &message["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    }
}

pub(super) fn is_prompt(message: &Value) -> bool {
    message["role"] == "user" && !blocks(message).iter().any(|b| b["type"] == "tool_result")
}

pub(super) fn tool_result_text(block: &Value) -> String {
    match &block["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The command name and arguments of a prompt message, from its expanded command body.
pub(super) fn command_of(message: &Value) -> Option<(String, String)> {
    for b in blocks(message) {
        let Some(text) = b.get("text").and_then(Value::as_str) else {
            continue;
        };
        // The body itself (the skills listing also quotes the marker, never at a start).
        let body = text.trim_start();
        let body = body.strip_prefix("---").map_or(body, |rest| {
            rest.split_once("\n---")
                .map_or(rest, |(_, after)| after)
                .trim_start()
        });
        if let Some(rest) = body.strip_prefix(MARKER) {
            let name = rest.lines().next().unwrap_or("").trim().to_string();
            let args = body
                .lines()
                .find_map(|l| l.strip_prefix("PIV-ARGS:"))
                .unwrap_or("")
                .trim()
                .to_string();
            return Some((name, args));
        }
    }
    None
}

/// The working directory the CLI announces (`Primary working directory: …`).
pub(super) fn working_dir(body: &Value) -> Option<PathBuf> {
    let text = body.to_string();
    let at = text.find("Primary working directory: ")? + "Primary working directory: ".len();
    let rest = &text[at..];
    let end = rest.find("\\n").or_else(|| rest.find('"'))?;
    Some(PathBuf::from(&rest[..end]))
}

/// The file text of a Read tool result (`N\tline` lines).
pub(super) fn read_result_text(result: &str) -> String {
    let mut out = String::new();
    for line in result.lines() {
        let t = line.trim_start();
        if let Some((num, rest)) = t.split_once('\t') {
            if !num.is_empty() && num.chars().all(|c| c.is_ascii_digit()) {
                out.push_str(rest);
                out.push('\n');
            }
        }
    }
    out
}

pub(super) fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

pub(super) fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The highest phase with a plan entry (the phase being worked on).
pub(super) fn current_phase(manifest: &serde_yaml::Value) -> u64 {
    manifest
        .get("plans")
        .and_then(|p| p.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("phase"))
        .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .max()
        .unwrap_or(1)
}

pub(super) fn push_entry(manifest: &str, key: &str, entry: serde_yaml::Value) -> String {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(manifest).unwrap_or(serde_yaml::Value::Mapping(Default::default()));
    if let Some(map) = doc.as_mapping_mut() {
        let list = map
            .entry(key.into())
            .or_insert_with(|| serde_yaml::Value::Sequence(Vec::new()));
        if !list.is_sequence() {
            *list = serde_yaml::Value::Sequence(Vec::new());
        }
        if let Some(seq) = list.as_sequence_mut() {
            seq.push(entry);
        }
    }
    serde_yaml::to_string(&doc).unwrap_or_default()
}

pub(super) fn yaml_map(pairs: &[(&str, serde_yaml::Value)]) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    for (k, v) in pairs {
        m.insert((*k).into(), v.clone());
    }
    serde_yaml::Value::Mapping(m)
}

pub(super) fn hooks(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut t = format!("{text}\n\n## PIV-Automator-Hooks\n");
    for (k, v) in pairs {
        t.push_str(&format!("{k}: {v}\n"));
    }
    t
}

/// What the conversation says so far about the command being run.
pub(super) struct Conversation {
    pub(super) command: Option<String>,
    pub(super) args: String,
    /// Assistant turns since the prompt.
    pub(super) step: usize,
    /// The manifest as the first Read of this command returned it.
    pub(super) manifest: Option<String>,
    pub(super) project: PathBuf,
    pub(super) saw_prime: bool,
}

pub(super) fn conversation(body: &Value, fallback: Option<&Path>) -> Conversation {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let prompt_at = msgs.iter().rposition(is_prompt).unwrap_or(0);
    let (command, args) = msgs
        .get(prompt_at)
        .and_then(command_of)
        .map_or((None, String::new()), |(c, a)| (Some(c), a));
    let after = &msgs[(prompt_at + 1).min(msgs.len())..];
    let step = after.iter().filter(|m| m["role"] == "assistant").count();
    // The first tool call of the command is the Read of the manifest.
    let read_id = after
        .iter()
        .filter(|m| m["role"] == "assistant")
        .flat_map(blocks)
        .find(|b| b["type"] == "tool_use" && b["name"] == "Read")
        .and_then(|b| b["id"].as_str().map(String::from));
    let manifest = read_id.and_then(|id| {
        after
            .iter()
            .flat_map(blocks)
            .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == id.as_str())
            .map(|b| read_result_text(&tool_result_text(&b)))
    });
    // An earlier /prime exchange: its command body, then an answer of ours after it.
    let before = &msgs[..prompt_at];
    let prime_at = before
        .iter()
        .position(|m| command_of(m).is_some_and(|(c, _)| c == "prime"));
    let saw_prime = prime_at.is_some_and(|at| {
        before[at..].iter().any(|m| {
            m["role"] == "assistant"
                && blocks(m).iter().any(|b| {
                    b.get("text")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t.starts_with("Primed:"))
                })
        })
    });
    let project = working_dir(body)
        .or_else(|| fallback.map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    Conversation {
        command,
        args,
        step,
        manifest,
        project,
        saw_prime,
    }
}

pub(super) fn read_manifest(c: &Conversation) -> Turn {
    Turn::Tool {
        name: "Read",
        input: json!({"file_path": c.project.join(".agents/manifest.yaml")}),
    }
}

pub(super) fn write(c: &Conversation, rel: &str, content: String) -> Turn {
    Turn::Tool {
        name: "Write",
        input: json!({"file_path": c.project.join(rel), "content": content}),
    }
}

pub(super) fn bash(command: &str, description: &str) -> Turn {
    Turn::Tool {
        name: "Bash",
        input: json!({"command": command, "description": description}),
    }
}

/// The command's script: the tool calls it makes, then its final answer.
pub(super) fn script(c: &Conversation, extra: &[String]) -> Vec<Turn> {
    let manifest_text = c.manifest.clone().unwrap_or_default();
    let manifest: serde_yaml::Value =
        serde_yaml::from_str(&manifest_text).unwrap_or(serde_yaml::Value::Null);
    let mut turns = match c.command.as_deref() {
        Some("prime") => vec![
            read_manifest(c),
            Turn::Text("Primed: read the manifest and the project layout.".into()),
        ],
        Some("plan-feature") => {
            let phase = number_after(&c.args, "Phase ").unwrap_or(1);
            let rel = format!(".agents/plans/phase-{phase}.md");
            let entry = yaml_map(&[
                ("path", rel.as_str().into()),
                ("phase", phase.into()),
                ("status", "complete".into()),
                ("generated_at", now_iso().into()),
            ]);
            vec![
                read_manifest(c),
                write(
                    c,
                    &rel,
                    format!(
                        "# Plan for {}\n\n## Tasks\n- [ ] Task 1: write src/phase_{phase}.txt\n- [ ] Task 2: test it\n",
                        c.args
                    ),
                ),
                write(
                    c,
                    ".agents/manifest.yaml",
                    push_entry(&manifest_text, "plans", entry),
                ),
                Turn::Text(format!("Plan written to {rel}.")),
            ]
        }
        Some("execute") => {
            let phase = number_after(&c.args, "phase-").unwrap_or_else(|| current_phase(&manifest));
            let rel = format!("src/phase_{phase}.txt");
            vec![
                read_manifest(c),
                write(c, &rel, format!("phase {phase} implemented\n")),
                Turn::Text(format!("Executed the plan for phase {phase}: wrote {rel}.")),
            ]
        }
        Some("validate-implementation") => {
            let phase = current_phase(&manifest);
            let rel = format!(".agents/validation/phase-{phase}.md");
            let entry = yaml_map(&[
                ("path", rel.as_str().into()),
                ("phase", phase.into()),
                ("status", "pass".into()),
                ("scenarios_passed", 3u64.into()),
                ("scenarios_failed", 0u64.into()),
                ("scenarios_skipped", 0u64.into()),
                ("completed_at", now_iso().into()),
            ]);
            vec![
                read_manifest(c),
                write(
                    c,
                    &rel,
                    format!("# Validation of phase {phase}\n\nAll scenarios pass.\n"),
                ),
                write(
                    c,
                    ".agents/manifest.yaml",
                    push_entry(&manifest_text, "validations", entry),
                ),
                Turn::Text(hooks(
                    &format!("Validation of phase {phase}: 3 passed, 0 failed."),
                    &[("validation_status", "pass")],
                )),
            ]
        }
        Some("commit") => {
            let phase = current_phase(&manifest);
            vec![
                read_manifest(c),
                bash(
                    &format!("git add -A && git commit -q -m 'feat: phase {phase}'"),
                    "Commit the phase",
                ),
                Turn::Text(format!("Committed: feat: phase {phase}")),
            ]
        }
        Some(other) => vec![Turn::Text(format!("Done: /{other} {}", c.args))],
        None => vec![Turn::Text("Done.".into())],
    };
    let at = turns.len() - 1;
    for (i, b) in extra.iter().enumerate() {
        turns.insert(at + i, bash(b, "Extra step for this test"));
    }
    turns
}
