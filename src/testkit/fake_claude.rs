//! A scripted stand-in for the `claude` CLI that speaks real stream-json: told per command to succeed, fail, exit non-zero, hang or print garbage.
//!
//! It accepts the real CLI's flags, refuses what the real CLI refuses (stream-json without
//! `--verbose`, `--dangerously-skip-permissions` as root without `IS_SANDBOX`, `--resume`
//! of an unknown conversation) with the same texts as the captures in
//! `tests/fixtures/claude-cli/`, and by default mimics what the PIV slash commands do to a
//! project (plans, manifest entries, source files, commits) so a whole `piv run` can be
//! driven without an account.
//!
//! Behaviour per prompt comes from a JSON [`Scenario`] at `$PIV_FAKE_CLAUDE_SCRIPT`: the
//! first rule whose `match` is a prefix of the prompt (and whose `times` budget is not used
//! up) decides. Without a script every command succeeds. Every invocation is appended as
//! one JSON line to `$PIV_FAKE_CLAUDE_LOG` when set.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Env var naming the scenario file.
pub const SCRIPT_ENV: &str = "PIV_FAKE_CLAUDE_SCRIPT";
/// Env var naming the invocation log (JSON lines).
pub const LOG_ENV: &str = "PIV_FAKE_CLAUDE_LOG";
/// Env var naming where known session ids are kept when there is no script.
pub const STATE_DIR_ENV: &str = "PIV_FAKE_CLAUDE_STATE_DIR";

/// What the fake does for the prompts a rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// The default: mimic the slash command's effects on the project and succeed.
    #[default]
    Succeed,
    /// A result error. With subtype `success` the message is the `result` text, otherwise it
    /// goes to `errors`. Exit status 1 when `is_error` unless `exit_code` says otherwise.
    Fail {
        #[serde(default = "default_fail_subtype")]
        subtype: String,
        #[serde(default = "yes")]
        is_error: bool,
        #[serde(default)]
        message: String,
        #[serde(default)]
        exit_code: Option<i32>,
    },
    /// Print `init`, then `stderr`, and exit with `code` without a result.
    Exit {
        code: i32,
        #[serde(default)]
        stderr: String,
    },
    /// Print `init`, start a child `sleep` in the same process group, and never finish.
    Hang,
    /// Print malformed lines, then succeed.
    Garbage,
    /// Stream `bytes` of assistant text in lines of `line_bytes` (default 64 KiB), then succeed.
    BigOutput {
        bytes: u64,
        #[serde(default)]
        line_bytes: Option<usize>,
    },
    /// Replay the no-credentials capture.
    NotLoggedIn,
    /// Answer like the CLI does for a slash command the project lacks.
    UnknownCommand,
    /// A rejected `rate_limit_event` resetting in `resets_in_secs`, then an is_error result.
    UsageLimit { resets_in_secs: i64 },
    /// Answer as if the `--resume` id were unknown, whatever it is.
    ResumeUnknown,
    /// Succeed, then stay up without printing anything (a CLI that does not exit).
    LingerAfterResult,
}

fn default_fail_subtype() -> String {
    "error_during_execution".to_string()
}

fn yes() -> bool {
    true
}

/// One scripted behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// A prefix of the prompt, e.g. `/execute`; empty matches every prompt.
    #[serde(rename = "match", default)]
    pub prefix: String,
    /// Apply only to the first N matching calls (counted across processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(default)]
    pub action: Action,
    /// Added as a PIV-Automator-Hooks block to the final text (overriding default hooks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, String>,
    /// `total_cost_usd` reported for the call (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Work for this long (printing a line first) before the action: a session that
    /// takes time, for demos and for tests that steer a run while a step is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

impl Rule {
    pub fn new(prefix: &str, action: Action) -> Self {
        Self {
            prefix: prefix.to_string(),
            times: None,
            action,
            hooks: BTreeMap::new(),
            cost: None,
            delay_ms: None,
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay_ms = Some(d.as_millis() as u64);
        self
    }

    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    pub fn hook(mut self, key: &str, value: &str) -> Self {
        self.hooks.insert(key.to_string(), value.to_string());
        self
    }

    pub fn cost(mut self, usd: f64) -> Self {
        self.cost = Some(usd);
        self
    }
}

/// An ordered list of rules; the first applicable one wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Scenario {
    pub rules: Vec<Rule>,
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Writes the scenario where `$PIV_FAKE_CLAUDE_SCRIPT` will point, resetting its `times` counters.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(state_path(path));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::io::atomic_file::write(path, &text).map_err(std::io::Error::other)
    }
}

fn state_path(script: &Path) -> PathBuf {
    append_ext(script, "state.json")
}

fn append_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The flags of one invocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Invocation {
    pub prompt: Option<String>,
    pub output_format: Option<String>,
    pub verbose: bool,
    pub model: Option<String>,
    pub max_turns: Option<u32>,
    pub resume: Option<String>,
    pub skip_permissions: bool,
    pub permission_mode: Option<String>,
}

/// Parses the subset of the real CLI's flags piv uses; anything else is an error like the CLI's.
pub fn parse_args(args: &[String]) -> Result<Invocation, String> {
    let mut inv = Invocation::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("error: option '{name}' argument missing"))
        };
        match arg.as_str() {
            "-p" | "--print" => inv.prompt = Some(value("-p")?),
            "--output-format" => inv.output_format = Some(value("--output-format")?),
            "--verbose" => inv.verbose = true,
            "--model" => inv.model = Some(value("--model")?),
            "--max-turns" => {
                let v = value("--max-turns")?;
                inv.max_turns = Some(
                    v.parse()
                        .map_err(|_| format!("error: invalid --max-turns '{v}'"))?,
                );
            }
            "--resume" | "-r" => inv.resume = Some(value("--resume")?),
            "--dangerously-skip-permissions" => inv.skip_permissions = true,
            "--permission-mode" => inv.permission_mode = Some(value("--permission-mode")?),
            other => return Err(format!("error: unknown option '{other}'")),
        }
    }
    Ok(inv)
}

/// The stand-in's `main`: returns the exit status.
pub fn main_entry() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    let inv = match parse_args(&args) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("{e}");
            return 1;
        }
    };
    let Some(prompt) = inv.prompt.clone() else {
        eprintln!("Error: piv-fake-claude only supports print mode (-p)");
        return 1;
    };
    let stream = inv.output_format.as_deref() == Some("stream-json");
    if stream && !inv.verbose {
        log_invocation(&args, &prompt, "refused_no_verbose", None, None, None);
        eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
        return 1;
    }
    let bypass =
        inv.skip_permissions || inv.permission_mode.as_deref() == Some("bypassPermissions");
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if bypass && root && std::env::var("IS_SANDBOX").map_or(true, |v| v.is_empty()) {
        log_invocation(&args, &prompt, "refused_root", None, None, None);
        eprintln!(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
        );
        return 1;
    }

    let script = std::env::var_os(SCRIPT_ENV).map(PathBuf::from);
    let (rule_index, rule) = match &script {
        Some(path) => match choose_rule(path, &prompt) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("piv-fake-claude: bad scenario {}: {e}", path.display());
                return 3;
            }
        },
        None => (None, Rule::new("", Action::Succeed)),
    };
    let sessions = sessions_dir(script.as_deref());

    let mut out = Out::new();
    let resume_unknown = matches!(rule.action, Action::ResumeUnknown)
        || inv
            .resume
            .as_ref()
            .is_some_and(|id| !sessions.join(sanitize(id)).exists());
    if let (true, Some(id)) = (resume_unknown, inv.resume.as_ref()) {
        log_invocation(&args, &prompt, "resume_unknown", rule_index, Some(id), None);
        out.line(&json!({
            "type": "result", "subtype": "error_during_execution", "duration_ms": 0,
            "duration_api_ms": 0, "is_error": true, "num_turns": 0, "stop_reason": null,
            "session_id": id, "total_cost_usd": 0, "usage": {}, "modelUsage": {},
            "permission_denials": [], "uuid": new_uuid(),
            "errors": [format!("No conversation found with session ID: {id}")],
        }));
        eprintln!("No conversation found with session ID: {id}");
        return 1;
    }

    let session_id = inv.resume.clone().unwrap_or_else(new_uuid);
    let _ = std::fs::create_dir_all(&sessions);
    let _ = File::create(sessions.join(sanitize(&session_id)));

    let mut child_pid = None;
    let mut hang_child = None;
    if rule.action == Action::Hang {
        match Command::new("sleep").arg("100000").spawn() {
            Ok(c) => {
                child_pid = Some(c.id());
                hang_child = Some(c);
            }
            Err(e) => eprintln!("piv-fake-claude: cannot spawn sleep: {e}"),
        }
    }
    log_invocation(
        &args,
        &prompt,
        action_name(&rule.action),
        rule_index,
        Some(&session_id),
        child_pid,
    );

    let ctx = Ctx {
        inv: &inv,
        prompt: &prompt,
        session_id: &session_id,
        rule: &rule,
        started,
        cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    };
    out.line(&ctx.init_line());
    let code = ctx.act(&mut out);
    drop(hang_child);
    code
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Succeed => "succeed",
        Action::Fail { .. } => "fail",
        Action::Exit { .. } => "exit",
        Action::Hang => "hang",
        Action::Garbage => "garbage",
        Action::BigOutput { .. } => "big_output",
        Action::NotLoggedIn => "not_logged_in",
        Action::UnknownCommand => "unknown_command",
        Action::UsageLimit { .. } => "usage_limit",
        Action::ResumeUnknown => "resume_unknown",
        Action::LingerAfterResult => "linger_after_result",
    }
}

/// Picks the rule for `prompt`, counting `times` in a state file beside the script under
/// an exclusive lock (several fakes may run at once).
fn choose_rule(script: &Path, prompt: &str) -> Result<(Option<usize>, Rule), String> {
    let text = std::fs::read(script).map_err(|e| e.to_string())?;
    let scenario: Scenario = match serde_json::from_slice::<Scenario>(&text) {
        Ok(s) => s,
        Err(_) => Scenario {
            rules: serde_json::from_slice::<Vec<Rule>>(&text).map_err(|e| e.to_string())?,
        },
    };
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(append_ext(script, "lock"))
        .map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let state_file = state_path(script);
    let mut counts: BTreeMap<String, u32> = std::fs::read(&state_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut chosen = (None, Rule::new("", Action::Succeed));
    for (i, rule) in scenario.rules.iter().enumerate() {
        if !prompt.starts_with(&rule.prefix) {
            continue;
        }
        if let Some(limit) = rule.times {
            let used = counts.entry(i.to_string()).or_insert(0);
            if *used >= limit {
                continue;
            }
            *used += 1;
        }
        chosen = (Some(i), rule.clone());
        break;
    }
    let bytes = serde_json::to_vec(&counts).map_err(|e| e.to_string())?;
    crate::io::atomic_file::write(&state_file, &bytes).map_err(|e| e.to_string())?;
    drop(lock);
    Ok(chosen)
}

fn sessions_dir(script: Option<&Path>) -> PathBuf {
    let base = match (
        script.and_then(Path::parent),
        std::env::var_os(STATE_DIR_ENV),
    ) {
        (_, Some(dir)) => PathBuf::from(dir),
        (Some(parent), None) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => std::env::temp_dir().join("piv-fake-claude"),
    };
    base.join("fake-claude-sessions")
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn log_invocation(
    args: &[String],
    prompt: &str,
    action: &str,
    rule: Option<usize>,
    session_id: Option<&str>,
    child_pid: Option<u32>,
) {
    let Some(path) = std::env::var_os(LOG_ENV) else {
        return;
    };
    // SAFETY: getpgrp(2) has no preconditions.
    let pgid = unsafe { libc::getpgrp() };
    let entry = json!({
        "argv": args,
        "prompt": prompt,
        "cwd": std::env::current_dir().ok(),
        "api_key_present": std::env::var_os("ANTHROPIC_API_KEY").is_some(),
        "claudecode_present": std::env::var_os("CLAUDECODE").is_some(),
        "pid": std::process::id(),
        "pgid": pgid,
        "child_pid": child_pid,
        "action": action,
        "rule": rule,
        "session_id": session_id,
    });
    let mut line = entry.to_string();
    line.push('\n');
    // One write of an O_APPEND file: concurrent fakes never interleave within a line.
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// A UUID-shaped random id (no dependency needed for a stand-in).
fn new_uuid() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let a = splitmix(nanos ^ (u64::from(std::process::id()) << 32) ^ c);
    let b = splitmix(a ^ nanos.rotate_left(17));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Stdout, flushed per line so the reader sees output as it happens.
struct Out {
    stdout: std::io::Stdout,
}

impl Out {
    fn new() -> Self {
        Self {
            stdout: std::io::stdout(),
        }
    }

    fn line(&mut self, value: &Value) {
        self.raw(value.to_string().as_bytes());
    }

    fn raw(&mut self, bytes: &[u8]) {
        let mut lock = self.stdout.lock();
        let _ = lock.write_all(bytes);
        let _ = lock.write_all(b"\n");
        let _ = lock.flush();
    }
}

struct Ctx<'a> {
    inv: &'a Invocation,
    prompt: &'a str,
    session_id: &'a str,
    rule: &'a Rule,
    started: Instant,
    cwd: PathBuf,
}

impl Ctx<'_> {
    fn model(&self) -> String {
        self.inv
            .model
            .clone()
            .unwrap_or_else(|| "claude-sonnet-5".to_string())
    }

    fn init_line(&self) -> Value {
        let permission_mode = if self.inv.skip_permissions {
            "bypassPermissions".to_string()
        } else {
            self.inv
                .permission_mode
                .clone()
                .unwrap_or_else(|| "default".to_string())
        };
        json!({
            "type": "system", "subtype": "init", "cwd": self.cwd, "session_id": self.session_id,
            "tools": ["Task", "Bash", "Edit", "Read", "Write"], "mcp_servers": [],
            "model": self.model(), "permissionMode": permission_mode,
            "slash_commands": ["prime", "plan-feature", "execute", "validate-implementation", "commit"],
            "apiKeySource": if std::env::var_os("ANTHROPIC_API_KEY").is_some() { "ANTHROPIC_API_KEY" } else { "none" },
            "claude_code_version": "2.1.197-piv-fake", "output_style": "default",
            "agents": [], "skills": [], "plugins": [], "uuid": new_uuid(), "fast_mode_state": "off",
        })
    }

    fn assistant(&self, text: &str, model: &str, error: Option<&str>) -> Value {
        let mut v = json!({
            "type": "assistant",
            "message": {
                "id": new_uuid(), "container": null, "model": model, "role": "assistant",
                "stop_reason": null, "stop_sequence": null, "type": "message",
                "usage": {"input_tokens": 10, "output_tokens": 20},
                "content": [{"type": "text", "text": text}], "context_management": null,
            },
            "parent_tool_use_id": null, "session_id": self.session_id, "uuid": new_uuid(),
        });
        if let Some(e) = error {
            v["error"] = json!(e);
        }
        v
    }

    fn result(
        &self,
        subtype: &str,
        is_error: bool,
        text: Option<&str>,
        errors: &[String],
        turns: u32,
        cost: f64,
    ) -> Value {
        let mut v = json!({
            "type": "result", "subtype": subtype, "is_error": is_error,
            "api_error_status": null,
            "duration_ms": self.started.elapsed().as_millis() as u64,
            "duration_api_ms": 0, "num_turns": turns, "stop_reason": "end_turn",
            "session_id": self.session_id, "total_cost_usd": cost,
            "usage": {"input_tokens": 10, "output_tokens": 20}, "modelUsage": {},
            "permission_denials": [], "terminal_reason": "completed", "uuid": new_uuid(),
        });
        if let Some(t) = text {
            v["result"] = json!(t);
        }
        if !errors.is_empty() {
            v["errors"] = json!(errors);
        }
        v
    }

    fn cost(&self) -> f64 {
        self.rule.cost.unwrap_or(0.01)
    }

    fn with_hooks(&self, text: &str, defaults: &BTreeMap<String, String>) -> String {
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

    fn act(&self, out: &mut Out) -> i32 {
        if let Some(ms) = self.rule.delay_ms {
            out.line(&self.assistant("Thinking...", &self.model(), None));
            std::thread::sleep(Duration::from_millis(ms));
        }
        match &self.rule.action {
            Action::Succeed => self.succeed(out),
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
                out.line(&self.result("success", true, Some(text), &[], 1, 0.0));
                1
            }
            Action::UnknownCommand => {
                let name = self
                    .prompt
                    .split_whitespace()
                    .next()
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let text = format!("Unknown command: /{name}");
                out.line(&self.assistant(&text, "<synthetic>", None));
                out.line(&self.result("success", false, Some(&text), &[], 0, 0.0));
                0
            }
            Action::UsageLimit { resets_in_secs } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                out.line(&json!({
                    "type": "rate_limit_event",
                    "rate_limit_info": {"status": "rejected", "resetsAt": now + resets_in_secs,
                                         "rateLimitType": "five_hour"},
                    "uuid": new_uuid(), "session_id": self.session_id,
                }));
                let text = "Claude AI usage limit reached";
                out.line(&self.assistant(text, "<synthetic>", Some("rate_limit")));
                out.line(&self.result("success", true, Some(text), &[], 1, 0.0));
                1
            }
            // Handled before init (it needs no session).
            Action::ResumeUnknown => 1,
            Action::LingerAfterResult => {
                self.succeed(out);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
    }

    /// The default effects of the PIV slash commands on the project, then a success result.
    fn succeed(&self, out: &mut Out) -> i32 {
        let mut default_hooks = BTreeMap::new();
        let command = self.prompt.split_whitespace().next().unwrap_or("");
        let effect = match command {
            "/prime" => {
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
            _ => Ok(format!("Done: {}", first_line(self.prompt))),
        };
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
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        crate::io::atomic_file::write(&path, text.as_bytes()).map_err(|e| e.to_string())
    }

    fn write_file(&self, rel: &str, text: &str) -> Result<(), String> {
        let path = self.cwd.join(rel);
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
        git(&["add", "-A"])?;
        let message = format!("feat: phase {phase}");
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

fn number_after(text: &str, marker: &str) -> Option<u64> {
    let at = text.find(marker)? + marker.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn now_iso() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_round_trips_and_accepts_a_bare_list() {
        let s = Scenario::new()
            .rule(
                Rule::new(
                    "/execute",
                    Action::Fail {
                        subtype: "success".into(),
                        is_error: true,
                        message: "vitest: 3 tests failed".into(),
                        exit_code: None,
                    },
                )
                .times(1)
                .cost(0.5),
            )
            .rule(Rule::new("/validate", Action::Succeed).hook("validation_status", "fail"));
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Scenario>(&text).unwrap(), s);
        let bare = r#"[{"match":"/prime","action":{"type":"hang"}},{"match":"/x"}]"#;
        let rules: Vec<Rule> = serde_json::from_str(bare).unwrap();
        assert_eq!(rules[0].action, Action::Hang);
        assert_eq!(rules[1].action, Action::Succeed);
    }

    #[test]
    fn args_and_helpers() {
        let args: Vec<String> = [
            "-p",
            "/prime",
            "--output-format",
            "stream-json",
            "--verbose",
            "--max-turns",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let inv = parse_args(&args).unwrap();
        assert_eq!(inv.prompt.as_deref(), Some("/prime"));
        assert_eq!(inv.max_turns, Some(3));
        assert!(parse_args(&["--bogus".to_string()]).is_err());
        assert_eq!(
            number_after("/plan-feature \"Phase 12: x\"", "Phase "),
            Some(12)
        );
        assert_eq!(
            number_after("/execute .agents/plans/phase-3.md", "phase-"),
            Some(3)
        );
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_ne!(id, new_uuid());
    }
}
