//! What the scripted `claude` does for each [`Action`]: the PIV slash commands' effects on the project (plans, manifest entries, source files, commits, each reported as a `tool_use`), and the failures replayed from the captures.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::lines::{ApiFailure, Ctx};
use super::{new_uuid, Action, Out};

/// Delay between `api_retry` lines when the rule names none.
const DEFAULT_RETRY_DELAY_MS: u64 = 100;

impl Ctx<'_> {
    pub(super) fn act(&self, out: &mut Out) -> i32 {
        if let Some(ms) = self.rule.delay_ms {
            out.line(&self.assistant("Thinking...", &self.model(), None));
            std::thread::sleep(Duration::from_millis(ms));
        }
        let unknown = self.command_unknown();
        if unknown && self.version.is_old() {
            // 2.1.197 answers a command it does not list locally, before any model call.
            return self.unknown_command_answer(out);
        }
        if let Action::WaitForFile { path } = &self.rule.action {
            out.line(&self.assistant("Working on it...", &self.model(), None));
            let path = self.cwd.join(path);
            while !path.exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        match &self.rule.action {
            Action::Succeed | Action::WaitForFile { .. } if unknown => self.plain_text_answer(out),
            Action::Succeed | Action::WaitForFile { .. } => self.succeed(out),
            Action::Fail {
                subtype,
                is_error,
                message,
                exit_code,
            } => {
                out.line(&self.assistant(message, &self.model(), None));
                let line = if subtype == "success" {
                    let text = self.with_hooks(message, &BTreeMap::new());
                    self.result(subtype, *is_error, Some(&text), &[], 2, self.cost())
                } else {
                    self.result(
                        subtype,
                        *is_error,
                        None,
                        std::slice::from_ref(message),
                        2,
                        self.cost(),
                    )
                };
                out.line(&line);
                exit_code.unwrap_or(if *is_error { 1 } else { 0 })
            }
            Action::Exit { code, stderr } => {
                eprint!("{stderr}");
                let _ = std::io::stderr().flush();
                *code
            }
            Action::Hang => {
                out.line(&self.assistant("Working on it...", &self.model(), None));
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Action::Garbage => {
                out.raw(b"this is not json at all");
                out.raw(br#"{"type":"result","subtype":"success","num_turns":"many"}"#);
                out.raw(b"[1,2,3]");
                out.raw(br#"{"type":"assistant","message":{"content":7}}"#);
                out.raw(b"\xff\xfe\x00 binary noise");
                out.raw(br#"{"type":"some_future_kind","payload":{"x":1}}"#);
                self.succeed(out)
            }
            Action::BigOutput { bytes, line_bytes } => {
                let per_line = line_bytes.unwrap_or(64 * 1024).max(200);
                let template = self.assistant("@@TEXT@@", &self.model(), None).to_string();
                let filler = "y".repeat(per_line.saturating_sub(template.len()).max(1));
                let line = template.replace("@@TEXT@@", &filler);
                let mut written: u64 = 0;
                while written < *bytes {
                    out.raw(line.as_bytes());
                    written += line.len() as u64 + 1;
                }
                self.succeed(out)
            }
            Action::NotLoggedIn => {
                let text = "Not logged in · Please run /login";
                out.line(&self.assistant(text, "<synthetic>", Some("authentication_failed")));
                out.line(&self.result_with(
                    "success",
                    true,
                    Some(text),
                    &[],
                    1,
                    0.0,
                    "api_error",
                    &ApiFailure::default(),
                ));
                1
            }
            // 2.1.332 no longer answers locally: the init line did not list the command and
            // the text went to the model, which did something else.
            Action::UnknownCommand if !self.version.is_old() => self.plain_text_answer(out),
            Action::UnknownCommand => self.unknown_command_answer(out),
            Action::UsageLimit { resets_in_secs } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let mut info = json!({"status": "rejected"});
                if let Some(secs) = resets_in_secs {
                    info["resetsAt"] = json!(now + secs);
                }
                info["rateLimitType"] = json!("five_hour");
                info["utilization"] = json!(1.0);
                info["overageStatus"] = json!("rejected");
                info["overageDisabledReason"] = json!("org_level_disabled");
                info["isUsingOverage"] = json!(false);
                out.line(&json!({
                    "type": "rate_limit_event", "rate_limit_info": info,
                    "uuid": new_uuid(), "session_id": self.session_id,
                }));
                let text = "Claude AI usage limit reached";
                out.line(&self.assistant(text, "<synthetic>", Some("rate_limit")));
                out.line(&self.result("success", true, Some(text), &[], 1, 0.0));
                1
            }
            Action::RateLimitInfo {
                status,
                utilization,
                using_overage,
                resets_in_secs,
            } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let mut info = json!({
                    "status": status,
                    "resetsAt": now + resets_in_secs.unwrap_or(3600),
                    "rateLimitType": "five_hour",
                });
                if let Some(u) = utilization {
                    info["utilization"] = json!(u);
                }
                if *using_overage {
                    info["overageStatus"] = json!("allowed");
                    info["overageResetsAt"] = json!(now + 30 * 86_400);
                    info["isUsingOverage"] = json!(true);
                } else {
                    info["overageStatus"] = json!("rejected");
                    info["overageDisabledReason"] = json!("org_level_disabled");
                    info["isUsingOverage"] = json!(false);
                }
                out.line(&json!({
                    "type": "rate_limit_event", "rate_limit_info": info,
                    "uuid": new_uuid(), "session_id": self.session_id,
                }));
                self.succeed(out)
            }
            // Handled before init (it needs no session).
            Action::ResumeUnknown => 1,
            Action::LingerAfterResult => {
                self.succeed(out);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Action::ApiUnreachable { retries } => {
                self.retries(out, *retries, None, "unknown");
                let (text, api_error) = if self.version.is_old() {
                    (
                        "API Error: Unable to connect to API (ConnectionRefused)",
                        None,
                    )
                } else {
                    (
                        "API Error: Connection refused — a firewall or proxy may be blocking it (ECONNREFUSED)",
                        Some("connection_failed"),
                    )
                };
                let failure = ApiFailure {
                    api_error,
                    ..ApiFailure::default()
                };
                self.api_failure(out, text, "server_error", &failure)
            }
            Action::Overloaded { retries } => {
                self.retries(out, *retries, Some(529), "server_error");
                let text = r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
                let failure = ApiFailure {
                    status: Some(529),
                    api_error_type: Some("overloaded_error"),
                    ..ApiFailure::default()
                };
                self.api_failure(out, text, "server_error", &failure)
            }
            Action::AuthRetry => {
                let delay = self.rule.retry_delay_ms.unwrap_or(500);
                for attempt in 1.. {
                    out.line(&self.api_retry(attempt, delay, Some(401), "authentication_failed"));
                    std::thread::sleep(Duration::from_millis(delay));
                }
                1
            }
            Action::SucceedWithoutEffects => {
                let summary = format!(
                    "Looked at it; nothing to change for {}.",
                    first_line(self.prompt)
                );
                out.line(&self.assistant(&summary, &self.model(), None));
                let text = self.with_hooks(&summary, &BTreeMap::new());
                out.line(&self.result("success", false, Some(&text), &[], 2, self.cost()));
                0
            }
            Action::WriteThenFail { path } => {
                let written = self.write_file(path, "written by a session that then failed\n");
                self.print_tools(out);
                let msg = match written {
                    Ok(()) => format!("wrote {path}, then failed: tests are red"),
                    Err(e) => format!("could not write {path}: {e}"),
                };
                out.line(&self.assistant(&msg, &self.model(), None));
                out.line(&self.result(
                    "error_during_execution",
                    true,
                    None,
                    std::slice::from_ref(&msg),
                    2,
                    self.cost(),
                ));
                1
            }
        }
    }

    /// `retries` `system/api_retry` lines, each followed by its announced wait.
    fn retries(&self, out: &mut Out, retries: u32, status: Option<u16>, error: &str) {
        let delay = self.rule.retry_delay_ms.unwrap_or(DEFAULT_RETRY_DELAY_MS);
        for attempt in 1..=retries {
            out.line(&self.api_retry(attempt, delay, status, error));
            std::thread::sleep(Duration::from_millis(delay));
        }
    }

    /// The synthetic assistant message and the `api_error` result of a failed API call.
    fn api_failure(&self, out: &mut Out, text: &str, error: &str, failure: &ApiFailure) -> i32 {
        out.line(&self.api_error_assistant(text, error, failure));
        out.line(&self.result_with(
            "success",
            true,
            Some(text),
            &[],
            1,
            0.0,
            "api_error",
            failure,
        ));
        1
    }

    /// 2.1.197's local answer to a command it does not know: a "success" of 0 turns.
    fn unknown_command_answer(&self, out: &mut Out) -> i32 {
        let name = self.command_name().unwrap_or("");
        let text = format!("Unknown command: /{name}");
        out.line(&self.assistant(&text, "<synthetic>", None));
        out.line(&self.result("success", false, Some(&text), &[], 0, 0.0));
        0
    }

    /// The model's answer to a slash command it was sent as plain text (2.1.332): a paid
    /// success that did none of the command's work.
    fn plain_text_answer(&self, out: &mut Out) -> i32 {
        let name = self.command_name().unwrap_or("");
        let text = format!(
            "There is no /{name} command in this session, so I treated your message as a plain request and looked around the project."
        );
        out.line(&self.assistant(&text, &self.model(), None));
        out.line(&self.result("success", false, Some(&text), &[], 1, self.cost()));
        0
    }

    /// The tool uses the effects made, as `tool_use` and `tool_result` lines.
    fn print_tools(&self, out: &mut Out) {
        for (name, input) in self.tools.borrow_mut().drain(..) {
            for line in self.tool_lines(&name, &input) {
                out.line(&line);
            }
        }
    }

    /// The default effects of the PIV slash commands on the project, then a success result.
    fn succeed(&self, out: &mut Out) -> i32 {
        let mut default_hooks = BTreeMap::new();
        let command = self.prompt.split_whitespace().next().unwrap_or("");
        let effect = match command {
            "/prime" => {
                self.used_tool(
                    "Read",
                    json!({"file_path": self.cwd.join(".agents/manifest.yaml")}),
                );
                Ok("Project primed: read the PRD, the manifest and the codebase.".to_string())
            }
            "/plan-feature" => self.plan_feature(),
            "/execute" => self.execute(),
            "/validate-implementation" => {
                default_hooks.insert("validation_status".into(), "pass".into());
                self.validate()
            }
            "/commit" => self.commit(),
            "/research-stack" => self.research_stack(),
            "/preflight" => {
                default_hooks.insert("preflight_status".into(), "passed".into());
                self.preflight()
            }
            // The PRD conversation's first turn (piv's relay sends the user's first
            // message after the command); later turns are plain `--resume`d prompts.
            "/create-prd" => Ok(format!(
                "Let's write the PRD. You said: {}. Who are the users, and what must they be able to do first?",
                first_line(self.prompt.trim_start_matches("/create-prd").trim())
            )),
            _ => Ok(format!("Done: {}", first_line(self.prompt))),
        };
        self.print_tools(out);
        match effect {
            Ok(summary) => {
                out.line(&self.assistant(&summary, &self.model(), None));
                let text = self.with_hooks(&summary, &default_hooks);
                out.line(&self.result("success", false, Some(&text), &[], 3, self.cost()));
                0
            }
            Err(e) => {
                let msg = format!("piv-fake-claude could not apply {command}: {e}");
                out.line(&self.assistant(&msg, &self.model(), None));
                out.line(&self.result(
                    "error_during_execution",
                    true,
                    None,
                    std::slice::from_ref(&msg),
                    1,
                    self.cost(),
                ));
                1
            }
        }
    }

    fn manifest_path(&self) -> PathBuf {
        self.cwd.join(".agents/manifest.yaml")
    }

    fn edit_manifest(&self, edit: impl FnOnce(&mut serde_yaml::Mapping)) -> Result<(), String> {
        let path = self.manifest_path();
        let mut doc: serde_yaml::Value = match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                serde_yaml::from_str(&text).map_err(|e| format!("manifest: {e}"))?
            }
            _ => serde_yaml::Value::Mapping(Default::default()),
        };
        let map = doc
            .as_mapping_mut()
            .ok_or_else(|| "manifest is not a mapping".to_string())?;
        edit(map);
        let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
        self.used_tool(
            "Edit",
            json!({"file_path": path, "old_string": "", "new_string": text.lines().last().unwrap_or("")}),
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        piv::io::atomic_file::write(&path, text.as_bytes()).map_err(|e| e.to_string())
    }

    fn write_file(&self, rel: &str, text: &str) -> Result<(), String> {
        let path = self.cwd.join(rel);
        self.used_tool("Write", json!({"file_path": path, "content": text}));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The phase being worked on: the highest phase with a plan entry (plans come first).
    fn current_phase(&self) -> u64 {
        let Ok(text) = std::fs::read_to_string(self.manifest_path()) else {
            return 1;
        };
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            return 1;
        };
        doc.get("plans")
            .and_then(|p| p.as_sequence())
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("phase"))
            .filter_map(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .max()
            .unwrap_or(1)
    }

    fn plan_feature(&self) -> Result<String, String> {
        let phase = number_after(self.prompt, "Phase ").unwrap_or(1);
        let rel = format!(".agents/plans/phase-{phase}.md");
        self.write_file(
            &rel,
            &format!(
                "# Plan for {}\n\n## Tasks\n- [ ] Task 1: write src/phase_{phase}.txt\n- [ ] Task 2: test it\n",
                first_line(self.prompt)
            ),
        )?;
        let entry = yaml_map(&[
            ("path", rel.as_str().into()),
            ("phase", phase.into()),
            ("status", "complete".into()),
            ("generated_at", now_iso().into()),
        ]);
        self.edit_manifest(|m| push_to_list(m, "plans", entry))?;
        Ok(format!("Plan written to {rel}."))
    }

    fn execute(&self) -> Result<String, String> {
        let phase = number_after(self.prompt, "phase-")
            .or_else(|| number_after(self.prompt, "phase_"))
            .unwrap_or_else(|| self.current_phase());
        let rel = format!("src/phase_{phase}.txt");
        let previous = std::fs::read_to_string(self.cwd.join(&rel)).unwrap_or_default();
        self.write_file(
            &rel,
            &format!("{previous}phase {phase} implemented at {}\n", now_iso()),
        )?;
        Ok(format!("Executed the plan for phase {phase}: wrote {rel}."))
    }

    fn validate(&self) -> Result<String, String> {
        let phase = self.current_phase();
        let rel = format!(".agents/validation/phase-{phase}.md");
        self.write_file(
            &rel,
            &format!("# Validation of phase {phase}\n\nAll scenarios pass.\n"),
        )?;
        let entry = yaml_map(&[
            ("path", rel.as_str().into()),
            ("phase", phase.into()),
            ("status", "pass".into()),
            ("scenarios_passed", 3u64.into()),
            ("scenarios_failed", 0u64.into()),
            ("scenarios_skipped", 0u64.into()),
            ("completed_at", now_iso().into()),
        ]);
        self.edit_manifest(|m| push_to_list(m, "validations", entry))?;
        Ok(format!("Validation of phase {phase}: 3 passed, 0 failed."))
    }

    fn commit(&self) -> Result<String, String> {
        let phase = self.current_phase();
        let git = |args: &[&str]| -> Result<(), String> {
            let mut cmd = Command::new("git");
            cmd.args(args)
                .current_dir(&self.cwd)
                .env("GIT_TERMINAL_PROMPT", "0");
            for (k, v) in [
                ("GIT_AUTHOR_NAME", "piv-fake-claude"),
                ("GIT_AUTHOR_EMAIL", "fake-claude@piv.invalid"),
                ("GIT_COMMITTER_NAME", "piv-fake-claude"),
                ("GIT_COMMITTER_EMAIL", "fake-claude@piv.invalid"),
            ] {
                if std::env::var_os(k).is_none() {
                    cmd.env(k, v);
                }
            }
            let o = cmd.output().map_err(|e| e.to_string())?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        };
        let message = format!("feat: phase {phase}");
        self.used_tool(
            "Bash",
            json!({"command": format!("git add -A && git commit -m '{message}'"), "description": "Commit the phase"}),
        );
        git(&["add", "-A"])?;
        git(&["commit", "-q", "--allow-empty", "-m", &message])?;
        Ok(format!("Committed: {message}"))
    }

    fn research_stack(&self) -> Result<String, String> {
        let rel = ".agents/reference/fake-stack-profile.md";
        self.write_file(rel, "# Fake stack profile\n")?;
        let entry = yaml_map(&[
            ("path", rel.into()),
            ("generated_at", now_iso().into()),
            ("status", "complete".into()),
            ("freshness", "fresh".into()),
            ("used_in_phases", serde_yaml::Value::Sequence(Vec::new())),
        ]);
        self.edit_manifest(|m| {
            let profiles = m
                .entry("profiles".into())
                .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
            if !profiles.is_mapping() {
                *profiles = serde_yaml::Value::Mapping(Default::default());
            }
            if let Some(p) = profiles.as_mapping_mut() {
                p.insert("fake-stack".into(), entry);
            }
        })?;
        Ok("Researched the stack: profile fake-stack is fresh.".to_string())
    }

    fn preflight(&self) -> Result<String, String> {
        let entry = yaml_map(&[
            ("status", "passed".into()),
            ("completed_at", now_iso().into()),
            ("credentials_verified", 0u64.into()),
            (
                "technologies_checked",
                serde_yaml::Value::Sequence(Vec::new()),
            ),
        ]);
        self.edit_manifest(|m| {
            m.insert("preflight".into(), entry);
        })?;
        Ok("Preflight passed: no credentials needed.".to_string())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
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

fn yaml_map(pairs: &[(&str, serde_yaml::Value)]) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    for (k, v) in pairs {
        m.insert((*k).into(), v.clone());
    }
    serde_yaml::Value::Mapping(m)
}

fn push_to_list(map: &mut serde_yaml::Mapping, key: &str, entry: serde_yaml::Value) {
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
