//! One Claude Code session as a child process: spawn in its own process group, read stream-json line by line with bounded memory, enforce timeout and stall limits, stop the whole group.
//!
//! The child runs in a fresh process group so that stopping a session also stops every
//! tool process the agent started (test runners, dev servers, `sleep`s). Stdout is read
//! as it arrives through [`BoundedLines`], which never holds more than one line of at most
//! [`MAX_LINE_BYTES`]: sessions can print hundreds of MB. Stderr keeps only its last
//! [`STDERR_TAIL_BYTES`]. What the lines mean is decided in [`crate::core::stream`].
//! [`run_pairing`] chains the sessions of one PIV step (`/prime` then the real command)
//! through `--resume`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use crate::io::process_group::{
    agent_pgid_path, group_has_live_members, kill_all_groups_now, stop_child_group,
    stop_orphaned_agent, stop_process_group,
};
use crate::io::process_group::{SessionWatchdog, TrackedGroup};

use crate::core::stream::{
    parse_line, ExitInfo, SessionAccumulator, SessionError, SessionOutcome, StreamEvent,
};

pub use crate::io::cli_setup::{
    is_root, missing_commands, missing_commands_in, root_permission_problem,
    root_permission_problem_for, user_commands_dir,
};

/// Longest stdout line piv parses; longer ones are skipped (and logged), never buffered whole.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// After the child exits, how long leftovers holding its pipes get before the group is stopped.
const PIPE_LINGER: Duration = Duration::from_secs(2);
/// How much of the child's stderr is kept for error details.
pub const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// How to run the `claude` CLI for every session of a run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `PIV_CLAUDE_BIN`, default `claude`.
    pub bin: PathBuf,
    pub project_dir: PathBuf,
    /// `--model` (`PIV_MODEL`); None passes none and the CLI picks its default.
    pub model: Option<String>,
    pub max_turns: u32,
    /// Wall-clock limit of one session.
    pub timeout: Duration,
    /// No stdout for this long = stalled.
    pub stall: Duration,
    /// SIGTERM → SIGKILL grace when stopping the session's process group.
    pub kill_grace: Duration,
    /// Keep `ANTHROPIC_API_KEY` in the child's environment (`PIV_ALLOW_API_KEY=1`).
    pub allow_api_key: bool,
    /// `--permission-mode` (`PIV_PERMISSION_MODE`); `bypassPermissions` is sent as
    /// `--dangerously-skip-permissions`.
    pub permission_mode: String,
    /// How long the CLI may linger after its `result` line before piv stops it (it sometimes
    /// stays up, e.g. waiting on an MCP server); the result then decides the outcome.
    pub result_grace: Duration,
    /// Extra variables for the child (set before the removals above apply, so they
    /// cannot smuggle `ANTHROPIC_API_KEY` in). Tests point the stand-in at its script here.
    pub env: Vec<(String, String)>,
    /// Where to record the running session's process group (`piv run` uses
    /// [`agent_pgid_path`]), so a later run can stop an agent a killed one left behind.
    pub pgid_file: Option<PathBuf>,
    /// Where each assistant message's `tool_use` blocks go as they stream in (the phase
    /// runner feeds the live status card from them); none: nowhere.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Vec<crate::core::progress::ToolUse>>>,
}

impl AgentConfig {
    /// Defaults for everything but the program and the project: the CLI's default model,
    /// 200 turns, 60 min timeout, 10 min stall, 5 s kill grace, no API key, `acceptEdits`.
    pub fn new(bin: impl Into<PathBuf>, project_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            project_dir: project_dir.into(),
            model: None,
            max_turns: 200,
            timeout: Duration::from_secs(60 * 60),
            stall: Duration::from_secs(10 * 60),
            kill_grace: Duration::from_secs(5),
            allow_api_key: false,
            permission_mode: "acceptEdits".to_string(),
            result_grace: Duration::from_secs(15),
            env: Vec::new(),
            pgid_file: None,
            progress: None,
        }
    }

    /// Whether sessions run with every permission check bypassed.
    pub fn skips_permissions(&self) -> bool {
        self.permission_mode == "bypassPermissions"
    }
}

/// Variables removed from the agent's environment: a pay-per-token key (unless allowed)
/// and piv's own secrets, which piv may have loaded from `.env` into its environment.
pub const SECRET_ENV: &[&str] = &["TELEGRAM_BOT_TOKEN"];

/// The command line for one session (without the program name).
///
/// Unattended runs cannot answer permission prompts. `--dangerously-skip-permissions`
/// (`bypassPermissions`) lets the agent run any tool (what the earlier version did), but
/// the CLI refuses it as root unless `IS_SANDBOX=1`; `--permission-mode acceptEdits` works
/// everywhere but leaves non-edit tools (Bash) to the project's allow-list in
/// `.claude/settings.json`; `auto` (accepted as root) lets a classifier approve or block
/// each tool call. The caller picks, knowing whether it runs as root.
pub fn session_args(cfg: &AgentConfig, prompt: &str, resume: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-p".into(),
        prompt.into(),
        "--output-format".into(),
        "stream-json".into(),
        "--verbose".into(),
    ];
    if let Some(model) = &cfg.model {
        args.extend(["--model".into(), model.clone()]);
    }
    args.extend(["--max-turns".into(), cfg.max_turns.to_string()]);
    if cfg.skips_permissions() {
        args.push("--dangerously-skip-permissions".into());
    } else {
        args.extend(["--permission-mode".into(), cfg.permission_mode.clone()]);
    }
    if let Some(id) = resume {
        args.extend(["--resume".into(), id.into()]);
    }
    args
}

/// One item from [`BoundedLines`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineItem {
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded as they arrived.
    Oversized(usize),
}

/// A line reader whose memory is bounded by `max` rather than by the line length.
///
/// Cancel-safe: the only await is `fill_buf`, and progress is stored in `self` before and
/// after it, so it can sit in a `tokio::select!` beside timers.
pub struct BoundedLines<R> {
    reader: R,
    buf: Vec<u8>,
    max: usize,
    skipped: Option<usize>,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            max,
            skipped: None,
        }
    }

    /// The next line (without `\n`), or None at end of input.
    pub async fn next_line(&mut self) -> std::io::Result<Option<LineItem>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if let Some(n) = self.skipped.take() {
                    return Ok(Some(LineItem::Oversized(n)));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(LineItem::Line(std::mem::take(&mut self.buf))));
            }
            let (chunk, consumed, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            match self.skipped.as_mut() {
                Some(n) => *n += chunk.len(),
                None if self.buf.len() + chunk.len() > self.max => {
                    self.skipped = Some(self.buf.len() + chunk.len());
                    self.buf = Vec::new();
                }
                None => self.buf.extend_from_slice(chunk),
            }
            self.reader.consume(consumed);
            if complete {
                if let Some(n) = self.skipped.take() {
                    return Ok(Some(LineItem::Oversized(n)));
                }
                return Ok(Some(LineItem::Line(std::mem::take(&mut self.buf))));
            }
        }
    }
}

/// The last `cap` bytes written to it.
struct TailBuffer {
    bytes: VecDeque<u8>,
    cap: usize,
}

impl TailBuffer {
    fn new(cap: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(cap),
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(self.cap)..];
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut v = Vec::with_capacity(a.len() + b.len());
        v.extend_from_slice(a);
        v.extend_from_slice(b);
        String::from_utf8_lossy(&v).into_owned()
    }
}

/// Runs one session to its end and says how it went. Never panics and never returns an
/// `Err`: a spawn failure is an outcome too (`NonZeroExit` with the reason in `stderr_tail`).
pub async fn run_session(
    cfg: &AgentConfig,
    prompt: &str,
    resume: Option<&str>,
    mut cancel: watch::Receiver<bool>,
) -> SessionOutcome {
    // A slash command whose file is gone (deleted since the start-up check, e.g. by the
    // agent itself) is refused before the CLI starts: the CLI would send its text to the
    // model as a plain request, and stopping it at its init line can come too late.
    if let Some(name) = prompt
        .split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix('/'))
        .filter(|n| !n.is_empty())
    {
        if !missing_commands(&cfg.project_dir, dirs::home_dir().as_deref(), &[name]).is_empty() {
            warn!(
                command = name,
                "slash command file missing; session not started"
            );
            return SessionOutcome {
                error: Some(SessionError::UnknownCommand {
                    name: name.to_string(),
                }),
                // Nothing ran, nothing was spent.
                cost_usd: Some(0.0),
                ..SessionOutcome::default()
            };
        }
    }
    let started = Instant::now();
    let mut command = Command::new(&cfg.bin);
    command
        .args(session_args(cfg, prompt, resume))
        .current_dir(&cfg.project_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Last resort if piv itself is dropped mid-session; the group is stopped properly below.
        .kill_on_drop(true)
        .envs(cfg.env.iter().map(|(k, v)| (k, v)))
        // A nested CLI refuses to start when it thinks it runs inside Claude Code.
        .env_remove("CLAUDECODE");
    if !cfg.allow_api_key {
        // Subscription billing through CLAUDE_CODE_OAUTH_TOKEN, never a pay-per-token key by accident.
        command.env_remove("ANTHROPIC_API_KEY");
    }
    for name in SECRET_ENV {
        command.env_remove(name);
    }
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook only makes async-signal-safe calls (see `die_with_parent`).
    unsafe {
        command.pre_exec(move || crate::io::process_group::die_with_parent(parent));
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return SessionAccumulator::new().finish(ExitInfo {
                code: None,
                stderr_tail: format!("cannot start {}: {e}", cfg.bin.display()),
                ..ExitInfo::default()
            })
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    debug!(pid = pgid, resume, "agent session started");
    let _tracked = TrackedGroup::new(pgid, cfg.pgid_file.as_deref());
    // If piv dies mid-session, the watchdog stops the whole group (the parent-death
    // signal set above reaches only the CLI itself, not the tools it started).
    let watchdog = SessionWatchdog::spawn(pgid, cfg.kill_grace);
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        stop_child_group(&mut child, pgid, cfg.kill_grace).await;
        if let Some(w) = watchdog {
            w.disarm().await;
        }
        return SessionAccumulator::new().finish(ExitInfo {
            stderr_tail: "child pipes missing".into(),
            ..ExitInfo::default()
        });
    };
    let mut lines = BoundedLines::new(BufReader::with_capacity(64 * 1024, stdout), MAX_LINE_BYTES);
    let mut tail = TailBuffer::new(STDERR_TAIL_BYTES);
    let mut acc = SessionAccumulator::for_prompt(prompt);
    let mut stderr_chunk = vec![0u8; 4096];
    let mut stdout_open = true;
    let mut stderr_open = true;
    let mut status: Option<std::process::ExitStatus> = None;
    let mut exit = ExitInfo::default();
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let mut last_output = tokio::time::Instant::now();
    // The wait the CLI announced in its last line (an `api_retry`): the stall limit
    // counts from its end.
    let mut announced_wait = Duration::ZERO;
    // Set once the session is over in substance (the child exited, or it printed its
    // result): when it passes, whatever is left of the group is stopped.
    let mut linger_until: Option<tokio::time::Instant> = None;
    let mut result_seen = false;
    let mut cancel_open = true;
    if *cancel.borrow() {
        exit.cancelled = true;
    }

    while !exit.cancelled && (stdout_open || stderr_open || status.is_none()) {
        let stall_at = last_output + announced_wait + cfg.stall;
        let linger_at = linger_until.unwrap_or(deadline);
        tokio::select! {
            line = lines.next_line(), if stdout_open => {
                last_output = tokio::time::Instant::now();
                match line {
                    Ok(Some(LineItem::Line(bytes))) => {
                        if bytes.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        announced_wait = Duration::ZERO;
                        match parse_line(&bytes) {
                            Ok(event) => {
                                log_event(&event);
                                if let (Some(progress), StreamEvent::Assistant { tools, .. }) =
                                    (&cfg.progress, &event)
                                {
                                    // The runner may be gone at shutdown; nothing to do then.
                                    let _ = progress.send(tools.clone());
                                }
                                announced_wait = event.announced_wait();
                                if matches!(event, StreamEvent::Result(_)) && !result_seen {
                                    result_seen = true;
                                    let grace = tokio::time::Instant::now() + cfg.result_grace;
                                    linger_until = Some(linger_until.map_or(grace, |l| l.min(grace)));
                                }
                                acc.feed(event);
                                if let Some(why) = acc.abort() {
                                    warn!(reason = %why, "stopping the agent session at once");
                                    break;
                                }
                            }
                            Err(e) => {
                                acc.note_malformed();
                                warn!(error = %e, line = %preview(&bytes), "malformed stream-json line skipped");
                            }
                        }
                    }
                    Ok(Some(LineItem::Oversized(n))) => {
                        acc.note_malformed();
                        warn!(bytes = n, limit = MAX_LINE_BYTES, "oversized stream-json line skipped");
                    }
                    Ok(None) => stdout_open = false,
                    Err(e) => {
                        warn!(error = %e, "reading agent stdout failed");
                        stdout_open = false;
                    }
                }
            }
            n = stderr.read(&mut stderr_chunk), if stderr_open => match n {
                Ok(0) | Err(_) => stderr_open = false,
                Ok(n) => tail.push(&stderr_chunk[..n]),
            },
            st = child.wait(), if status.is_none() => {
                match st {
                    Ok(s) => status = Some(s),
                    Err(e) => {
                        warn!(error = %e, "waiting for the agent failed");
                        break;
                    }
                }
                let pipes = tokio::time::Instant::now() + PIPE_LINGER;
                linger_until = Some(linger_until.map_or(pipes, |l| l.min(pipes)));
            }
            changed = cancel.changed(), if cancel_open => match changed {
                Ok(()) => if *cancel.borrow() { exit.cancelled = true },
                // Sender gone: nobody can cancel any more; keep running.
                Err(_) => cancel_open = false,
            },
            _ = tokio::time::sleep_until(deadline) => {
                exit.timed_out = true;
                exit.limit_secs = cfg.timeout.as_secs();
                break;
            }
            _ = tokio::time::sleep_until(stall_at), if stdout_open && status.is_none() && !result_seen => {
                exit.stalled = true;
                exit.limit_secs = cfg.stall.as_secs();
                break;
            }
            _ = tokio::time::sleep_until(linger_at), if linger_until.is_some() => {
                if status.is_none() {
                    warn!("agent printed its result but did not exit; stopping it");
                    exit.stopped_after_result = true;
                } else {
                    debug!("agent exited but its pipes stay open; stopping leftovers");
                }
                break;
            }
        }
    }

    if exit.cancelled || exit.timed_out || exit.stalled || acc.abort().is_some() {
        info!(
            pgid,
            cancelled = exit.cancelled,
            timed_out = exit.timed_out,
            stalled = exit.stalled,
            "stopping agent session"
        );
    }
    // Always: also catches processes the agent left running in its group.
    stop_child_group(&mut child, pgid, cfg.kill_grace).await;
    if let Some(w) = watchdog {
        w.disarm().await;
    }
    if status.is_none() {
        status = child.try_wait().ok().flatten();
    }
    // Whatever stderr is still buffered (the child is gone now) completes the tail.
    if stderr_open {
        let drain = async {
            while let Ok(n) = stderr.read(&mut stderr_chunk).await {
                if n == 0 {
                    break;
                }
                tail.push(&stderr_chunk[..n]);
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
    }
    if let Some(s) = status {
        use std::os::unix::process::ExitStatusExt;
        exit.code = s.code();
        exit.signal = s.signal();
    }
    exit.stderr_tail = tail.text();
    let mut outcome = acc.finish(exit);
    if outcome.duration_ms == 0 {
        outcome.duration_ms = started.elapsed().as_millis() as u64;
    }
    outcome
}

fn log_event(event: &StreamEvent) {
    match event {
        StreamEvent::Init {
            session_id, model, ..
        } => {
            info!(
                session_id,
                model = model.as_deref().unwrap_or("?"),
                "agent session init"
            )
        }
        StreamEvent::ApiRetry {
            attempt,
            error_status,
            error,
            retry_delay_ms,
        } => warn!(
            attempt,
            ?error_status,
            ?error,
            ?retry_delay_ms,
            "agent API retry"
        ),
        StreamEvent::RateLimit(i) => info!(
            status = i.status,
            resets_at = ?i.resets_at,
            window = ?i.window,
            utilization = ?i.utilization,
            overage = i.is_overage(),
            "agent rate limit event"
        ),
        StreamEvent::AssistantError { error, .. } => warn!(error, "agent error message"),
        _ => {}
    }
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    s.into_owned()
}

/// One session of a pairing, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session_id: Option<String>,
    pub prompt: String,
    /// What this call cost: the session's reported total minus what the same session had
    /// reported before (a `--resume`d call reports the whole session). None: unknown (the
    /// session was stopped before its result).
    pub cost_usd: Option<f64>,
    /// The model the session reported in `system/init`.
    pub model: Option<String>,
    pub num_turns: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// The sessions of one PIV step and their sums.
#[derive(Debug, Clone)]
pub struct PairingOutcome {
    pub sessions: Vec<SessionRecord>,
    /// The sum of the sessions' known costs.
    pub cost_usd: f64,
    /// Some session's cost is unknown (stopped for timeout, stall or cancel before its
    /// result): `cost_usd` is then a lower bound.
    pub cost_unknown: bool,
    pub num_turns: u32,
    pub duration_ms: u64,
    /// A `--resume` found no conversation and the prompt ran in a fresh session instead.
    pub resume_fell_back: bool,
    /// The last session's outcome; its `error` is the pairing's.
    pub last: SessionOutcome,
    /// The last `rate_limit_event` of any of its sessions.
    pub rate_limit: Option<crate::core::rate_limit::RateLimitInfo>,
    /// Some session was paid from extra usage.
    pub used_overage: bool,
}

impl PairingOutcome {
    pub fn error(&self) -> Option<&SessionError> {
        self.last.error.as_ref()
    }
}

/// Sends `prompts` in order: the first starts a session, the others resume it. Stops at
/// the first error. When a resume names a conversation the CLI does not know, that prompt
/// runs once in a fresh session (and later prompts resume the new one).
pub async fn run_pairing(
    cfg: &AgentConfig,
    prompts: &[String],
    cancel: watch::Receiver<bool>,
) -> PairingOutcome {
    let turns = vec![cfg.max_turns; prompts.len()];
    run_pairing_budgeted(cfg, prompts, &turns, cancel).await
}

/// [`run_pairing`] with a `--max-turns` per prompt (`turns[i]` for `prompts[i]`; the
/// configuration's for any prompt beyond).
pub async fn run_pairing_budgeted(
    cfg: &AgentConfig,
    prompts: &[String],
    turns: &[u32],
    cancel: watch::Receiver<bool>,
) -> PairingOutcome {
    let mut rate_limit = None;
    let mut used_overage = false;
    let mut sessions = Vec::new();
    let mut last = SessionOutcome::default();
    let mut session_id: Option<String> = None;
    let mut resume_fell_back = false;
    let mut reported = crate::core::session_outcome::ReportedCosts::default();
    for (i, prompt) in prompts.iter().enumerate() {
        let budgeted;
        let cfg = match turns.get(i) {
            Some(&t) if t != cfg.max_turns => {
                budgeted = AgentConfig {
                    max_turns: t,
                    ..cfg.clone()
                };
                &budgeted
            }
            _ => cfg,
        };
        let mut outcome = run_session(cfg, prompt, session_id.as_deref(), cancel.clone()).await;
        if let (Some(SessionError::ResumeUnknown { session_id: lost }), false) =
            (&outcome.error, resume_fell_back)
        {
            warn!(session_id = %lost, prompt = %prompt, "resume failed; running the prompt in a fresh session");
            sessions.push(record(prompt, &outcome, &mut reported));
            resume_fell_back = true;
            outcome = run_session(cfg, prompt, None, cancel.clone()).await;
        }
        sessions.push(record(prompt, &outcome, &mut reported));
        used_overage |= outcome.used_overage;
        if outcome.rate_limit.is_some() {
            rate_limit.clone_from(&outcome.rate_limit);
        }
        if outcome.session_id.is_some() {
            session_id.clone_from(&outcome.session_id);
        }
        let failed = outcome.error.is_some();
        last = outcome;
        if failed {
            break;
        }
    }
    PairingOutcome {
        cost_usd: sessions.iter().filter_map(|s| s.cost_usd).sum(),
        cost_unknown: sessions.iter().any(|s| s.cost_usd.is_none()),
        num_turns: sessions.iter().map(|s| s.num_turns).sum(),
        duration_ms: sessions.iter().map(|s| s.duration_ms).sum(),
        sessions,
        resume_fell_back,
        last,
        rate_limit,
        used_overage,
    }
}

fn record(
    prompt: &str,
    o: &SessionOutcome,
    reported: &mut crate::core::session_outcome::ReportedCosts,
) -> SessionRecord {
    SessionRecord {
        session_id: o.session_id.clone(),
        prompt: prompt.to_string(),
        cost_usd: reported.call_cost(o.session_id.as_deref(), o.cost_usd),
        model: o.model.clone(),
        num_turns: o.num_turns,
        duration_ms: o.duration_ms,
        error: o.error.as_ref().map(SessionError::message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[tokio::test]
    async fn bounded_lines_skip_oversized_and_keep_the_rest() {
        let mut input = Vec::new();
        input.extend_from_slice(b"short\n");
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\nlast-no-newline");
        let reader = BufReader::with_capacity(7, &input[..]);
        let mut lines = BoundedLines::new(reader, 20);
        assert_eq!(
            lines.next_line().await.unwrap(),
            Some(LineItem::Line(b"short".to_vec()))
        );
        assert_eq!(
            lines.next_line().await.unwrap(),
            Some(LineItem::Oversized(100))
        );
        assert_eq!(
            lines.next_line().await.unwrap(),
            Some(LineItem::Line(b"last-no-newline".to_vec()))
        );
        assert_eq!(lines.next_line().await.unwrap(), None);
    }

    #[test]
    fn tail_buffer_keeps_the_end() {
        let mut t = TailBuffer::new(5);
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.text(), "cdefg");
        t.push(b"0123456789");
        assert_eq!(t.text(), "56789");
    }

    #[test]
    fn root_problem_table() {
        let cases = [
            (true, true, None, true),
            (true, true, Some(""), true),
            (true, true, Some("0"), true),
            (true, true, Some("1"), false),
            (true, false, None, false),
            (false, true, None, false),
        ];
        for (root, skip, sandbox, want) in cases {
            let got = root_permission_problem_for(root, skip, sandbox);
            assert_eq!(got.is_some(), want, "{root} {skip} {sandbox:?}");
            if let Some(msg) = got {
                assert!(msg.contains("IS_SANDBOX=1"));
                assert!(msg.contains("PIV_PERMISSION_MODE=auto"));
            }
        }
    }

    #[test]
    fn user_commands_are_where_the_cli_looks() {
        let home = Path::new("/home/u");
        let cases = [
            (None, Some(home), Some("/home/u/.claude/commands")),
            (Some("/cfg"), Some(home), Some("/cfg/commands")),
            (Some(""), Some(home), Some("/home/u/.claude/commands")),
            (Some("/cfg"), None, Some("/cfg/commands")),
            (None, None, None),
        ];
        for (config, home, want) in cases {
            assert_eq!(
                user_commands_dir(config.map(PathBuf::from), home),
                want.map(PathBuf::from),
                "{config:?} {home:?}"
            );
        }
    }

    #[test]
    fn args_follow_the_contract() {
        let cfg = AgentConfig {
            model: Some("m".into()),
            max_turns: 7,
            ..AgentConfig::new("claude", ".")
        };
        assert_eq!(
            session_args(&cfg, "/prime", Some("abc")).join(" "),
            "-p /prime --output-format stream-json --verbose --model m --max-turns 7 \
             --permission-mode acceptEdits --resume abc"
        );
        let cfg = AgentConfig {
            permission_mode: "bypassPermissions".into(),
            ..cfg
        };
        assert!(session_args(&cfg, "x", None).contains(&"--dangerously-skip-permissions".into()));
        let cfg = AgentConfig {
            permission_mode: "auto".into(),
            model: None,
            ..cfg
        };
        assert_eq!(
            session_args(&cfg, "/prime", None).join(" "),
            "-p /prime --output-format stream-json --verbose --max-turns 7 --permission-mode auto"
        );
    }
}
