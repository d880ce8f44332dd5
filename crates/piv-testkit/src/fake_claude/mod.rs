//! A scripted stand-in for the `claude` CLI that speaks real stream-json: told per command to succeed, fail, exit non-zero, hang, wait for a file, print garbage, or fail the way the API fails (unreachable, overloaded, rejected credentials, usage limits).
//!
//! It accepts the real CLI's flags, refuses what the real CLI refuses (stream-json without
//! `--verbose`, `--dangerously-skip-permissions` as root without `IS_SANDBOX`, `--resume`
//! of an unknown conversation) with the same texts as the captures in
//! `tests/fixtures/claude-cli/`, and by default mimics what the PIV slash commands do to a
//! project (plans, manifest entries, source files, commits) so a whole `piv run` can be
//! driven without an account. Lines are shaped like the captures of the CLI version the
//! scenario names (`cli_version`, default the newest, 2.1.332: see [`lines`]); like the real
//! CLI, a `--resume`d call reports the session's cumulative `total_cost_usd`.
//!
//! Behaviour per prompt comes from a JSON [`Scenario`] at `$PIV_FAKE_CLAUDE_SCRIPT`: the
//! first rule whose `match` is a prefix of the prompt (and whose `times` budget is not used
//! up) decides. Without a script every command succeeds. Every invocation is appended as
//! one JSON line to `$PIV_FAKE_CLAUDE_LOG` when set.

mod effects;
pub mod lines;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use lines::{CliVersion, Ctx};

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
    /// Answer like the CLI does for a slash command the project lacks: 2.1.197 answers
    /// "Unknown command: /name" (a success of 0 turns); 2.1.332 leaves the name out of the
    /// init line's `slash_commands` and sends the text to the model, which "succeeds".
    UnknownCommand,
    /// A rejected `rate_limit_event` resetting in `resets_in_secs` (None: no `resetsAt`;
    /// negative: in the past), then an is_error result.
    UsageLimit {
        #[serde(default)]
        resets_in_secs: Option<i64>,
    },
    /// A `rate_limit_event` in the newest CLI's shape (`status`, `resetsAt` in
    /// `resets_in_secs`, `rateLimitType: five_hour`, `utilization`, the overage fields with
    /// `isUsingOverage: using_overage`), then the command succeeds as [`Action::Succeed`].
    RateLimitInfo {
        #[serde(default = "allowed")]
        status: String,
        #[serde(default)]
        utilization: Option<f64>,
        #[serde(default)]
        using_overage: bool,
        #[serde(default)]
        resets_in_secs: Option<i64>,
    },
    /// Answer as if the `--resume` id were unknown, whatever it is.
    ResumeUnknown,
    /// Succeed, then stay up without printing anything (a CLI that does not exit).
    LingerAfterResult,
    /// The bogus-token capture: `retries` `system/api_retry` lines (`error: "unknown"`, each
    /// followed by its announced wait, [`Rule::retry_delay_ms`]), then the error result
    /// "API Error: Unable to connect to API (ConnectionRefused)" (2.1.197, `terminal_reason:
    /// completed`) or "API Error: Connection refused …" (2.1.332, `terminal_reason:
    /// api_error`, `api_error: connection_failed`).
    ApiUnreachable { retries: u32 },
    /// `retries` `api_retry` lines with `error_status` 529, then the result with
    /// `api_error_status: 529` and `terminal_reason: api_error`.
    Overloaded { retries: u32 },
    /// The mock-401 capture without its end: `api_retry` lines with `error:
    /// authentication_failed` and `error_status` 401 every [`Rule::retry_delay_ms`]
    /// (default 500), forever unless stopped.
    AuthRetry,
    /// A success result whose command changed nothing in the project (e.g. `/plan-feature`
    /// that writes no `plans` entry).
    SucceedWithoutEffects,
    /// Writes `path` (relative to the project), then an error result.
    WriteThenFail { path: String },
    /// Print `init` and a line of work, then wait until `path` exists (absolute, or
    /// relative to the project), then succeed as [`Action::Succeed`]: a step held until
    /// the test releases it, without killing anything.
    WaitForFile { path: String },
}

fn default_fail_subtype() -> String {
    "error_during_execution".to_string()
}

fn yes() -> bool {
    true
}

fn allowed() -> String {
    "allowed".to_string()
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
    /// The wait announced in (and kept after) each `api_retry` line of `ApiUnreachable`,
    /// `Overloaded` and `AuthRetry` (default 100 ms, 500 ms for `AuthRetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
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
            retry_delay_ms: None,
        }
    }

    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay_ms = Some(d.as_millis() as u64);
        self
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
    /// Whose shapes to print: `"2.1.197"` or `"2.1.332"` (None: the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli_version: Option<String>,
    /// Record the whole environment (names and values) in each log entry's `env`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dump_env: bool,
}

impl Scenario {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Prints the shapes of CLI `version` (`"2.1.197"` or `"2.1.332"`).
    pub fn cli_version(mut self, version: &str) -> Self {
        self.cli_version = Some(version.to_string());
        self
    }

    /// Records the fake's environment in the invocation log (`env`).
    pub fn dump_env(mut self) -> Self {
        self.dump_env = true;
        self
    }

    /// Writes the scenario where `$PIV_FAKE_CLAUDE_SCRIPT` will point, resetting its `times` counters.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let _ = std::fs::remove_file(state_path(path));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        piv::io::atomic_file::write(path, &text).map_err(std::io::Error::other)
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
        log_invocation(
            &args,
            &prompt,
            "refused_no_verbose",
            None,
            None,
            None,
            false,
        );
        eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
        return 1;
    }
    let bypass =
        inv.skip_permissions || inv.permission_mode.as_deref() == Some("bypassPermissions");
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if bypass && root && std::env::var("IS_SANDBOX").map_or(true, |v| v.is_empty()) {
        log_invocation(&args, &prompt, "refused_root", None, None, None, false);
        eprintln!(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons"
        );
        return 1;
    }

    let script = std::env::var_os(SCRIPT_ENV).map(PathBuf::from);
    let (rule_index, rule, settings) = match &script {
        Some(path) => match choose_rule(path, &prompt) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("piv-fake-claude: bad scenario {}: {e}", path.display());
                return 3;
            }
        },
        None => (None, Rule::new("", Action::Succeed), Scenario::default()),
    };
    let version = CliVersion::parse(settings.cli_version.as_deref().unwrap_or(""));
    let sessions = sessions_dir(script.as_deref());

    let mut out = Out::new();
    let resume_unknown = matches!(rule.action, Action::ResumeUnknown)
        || inv
            .resume
            .as_ref()
            .is_some_and(|id| !sessions.join(sanitize(id)).exists());
    if let (true, Some(id)) = (resume_unknown, inv.resume.as_ref()) {
        log_invocation(
            &args,
            &prompt,
            "resume_unknown",
            rule_index,
            Some(id),
            None,
            settings.dump_env,
        );
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
    // Each session's file holds the total it has reported so far: a resumed call reports
    // that plus its own cost, as the real CLI does.
    let session_file = sessions.join(sanitize(&session_id));
    let prior_cost = std::fs::read_to_string(&session_file)
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let _ = std::fs::write(
        &session_file,
        format!("{}\n", prior_cost + call_cost(&rule)),
    );

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
        settings.dump_env,
    );

    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut slash_commands = lines::listed_commands(&cwd);
    if rule.action == Action::UnknownCommand {
        if let Some(name) = lines::command_name(&prompt) {
            slash_commands.retain(|c| c != name);
        }
    }
    let ctx = Ctx {
        inv: &inv,
        prompt: &prompt,
        session_id: &session_id,
        rule: &rule,
        started,
        cwd,
        version,
        prior_cost,
        slash_commands,
        tools: RefCell::new(Vec::new()),
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
        Action::RateLimitInfo { .. } => "rate_limit_info",
        Action::ResumeUnknown => "resume_unknown",
        Action::LingerAfterResult => "linger_after_result",
        Action::ApiUnreachable { .. } => "api_unreachable",
        Action::Overloaded { .. } => "overloaded",
        Action::AuthRetry => "auth_retry",
        Action::SucceedWithoutEffects => "succeed_without_effects",
        Action::WriteThenFail { .. } => "write_then_fail",
        Action::WaitForFile { .. } => "wait_for_file",
    }
}

/// What a call adds to its session's total: the rule's cost for the actions that reach
/// the model, nothing for those the CLI answers without it.
fn call_cost(rule: &Rule) -> f64 {
    match rule.action {
        Action::NotLoggedIn
        | Action::UsageLimit { .. }
        | Action::ApiUnreachable { .. }
        | Action::Overloaded { .. }
        | Action::AuthRetry
        | Action::ResumeUnknown
        | Action::Exit { .. } => 0.0,
        _ => rule.cost.unwrap_or(0.01),
    }
}

/// Picks the rule for `prompt`, counting `times` in a state file beside the script under
/// an exclusive lock (several fakes may run at once).
fn choose_rule(script: &Path, prompt: &str) -> Result<(Option<usize>, Rule, Scenario), String> {
    let text = std::fs::read(script).map_err(|e| e.to_string())?;
    let scenario: Scenario = match serde_json::from_slice::<Scenario>(&text) {
        Ok(s) => s,
        Err(_) => Scenario {
            rules: serde_json::from_slice::<Vec<Rule>>(&text).map_err(|e| e.to_string())?,
            ..Scenario::default()
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
    piv::io::atomic_file::write(&state_file, &bytes).map_err(|e| e.to_string())?;
    drop(lock);
    let settings = Scenario {
        rules: Vec::new(),
        ..scenario
    };
    Ok((chosen.0, chosen.1, settings))
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
    dump_env: bool,
) {
    let Some(path) = std::env::var_os(LOG_ENV) else {
        return;
    };
    // SAFETY: getpgrp(2) has no preconditions.
    let pgid = unsafe { libc::getpgrp() };
    let mut entry = json!({
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
        "at_ms": SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        "session_id": session_id,
    });
    if dump_env {
        let env: serde_json::Map<String, Value> = std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    Value::from(v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        entry["env"] = Value::Object(env);
    }
    let mut line = entry.to_string();
    line.push('\n');
    // One write of an O_APPEND file: concurrent fakes never interleave within a line.
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// A UUID-shaped random id (no dependency needed for a stand-in).
pub(crate) fn new_uuid() -> String {
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

#[cfg(test)]
mod tests {
    use super::effects::number_after;
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
    fn new_actions_and_versions_parse() {
        let rules: Vec<Rule> = serde_json::from_str(
            r#"[{"action":{"type":"usage_limit"}},{"action":{"type":"usage_limit","resets_in_secs":-5}},
                {"action":{"type":"api_unreachable","retries":3}},{"action":{"type":"auth_retry"}},
                {"action":{"type":"write_then_fail","path":"src/x.txt"}},{"action":{"type":"succeed_without_effects"}}]"#,
        )
        .unwrap();
        assert_eq!(
            rules[0].action,
            Action::UsageLimit {
                resets_in_secs: None
            }
        );
        assert_eq!(
            rules[1].action,
            Action::UsageLimit {
                resets_in_secs: Some(-5)
            }
        );
        assert_eq!(rules[2].action, Action::ApiUnreachable { retries: 3 });
        assert_eq!(rules[3].action, Action::AuthRetry);
        let s: Scenario = serde_json::from_str(r#"{"rules":[],"cli_version":"2.1.197"}"#).unwrap();
        assert_eq!(s.cli_version.as_deref(), Some("2.1.197"));
        assert!(CliVersion::parse("2.1.197").is_old());
        assert!(!CliVersion::parse("").is_old());
        assert_eq!(lines::command_name("/execute x.md"), Some("execute"));
        assert_eq!(lines::command_name("Fix this"), None);
        assert_eq!(call_cost(&Rule::new("", Action::AuthRetry).cost(1.0)), 0.0);
        assert_eq!(call_cost(&Rule::new("", Action::Succeed).cost(1.0)), 1.0);
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
