//! The command line: clap definitions (every option also readable from the environment)
//! and the commands that need no actors, starting with `piv dry-run`.
//!
//! Commands return an exit code instead of exiting, so `main` stays a thin dispatcher and
//! the exit-code contract (design §5) lives in one place: [`exit`].

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::core::control::ControlAction;
use crate::core::manifest::ManifestError;
use crate::core::next_action::{next_action, NextAction};
use crate::io::manifest_file::{self, ManifestFileError};

/// Process exit codes (design §5).
pub mod exit {
    /// Done, or stopped on request.
    pub const OK: i32 = 0;
    /// Stopped for a human (escalation, cost cap) or a runtime failure.
    pub const STOPPED: i32 = 1;
    /// Usage or input error: bad flag, missing or unreadable manifest, unknown prefix,
    /// another instance already running on the project.
    pub const USAGE: i32 = 2;
}

/// piv drives Claude Code through a project's phases (plan → execute → validate → commit)
/// unattended, records every result in `.agents/manifest.yaml`, and reports to Telegram.
///
/// Every option can also be set through the environment variable named in its help, and a
/// `.env` file in the project directory is read if present (it never overrides variables
/// already set).
///
/// Exit codes: 0 done or stopped on request; 1 stopped for a human or a runtime failure;
/// 2 usage or input error (bad flag, missing or unreadable manifest, ...).
#[derive(Debug, Parser)]
#[command(name = "piv", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// piv's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the recommended next action for the project and exit, changing nothing.
    ///
    /// Reads `<project>/.agents/manifest.yaml` and applies the next-action rules (pending
    /// failure → retry or rollback, interrupted execution, research, preflight, PRD, then
    /// plan → execute → validate for the first unfinished phase). Nothing is written: no
    /// git init, no PID file, no manifest change, even when the manifest is broken.
    ///
    /// Exit code 0 with the action; 2 when the manifest is missing, empty or invalid
    /// (the message names the file, and the line and column of a YAML syntax error).
    DryRun(DryRunArgs),
    /// Drive the project through its phases, unattended, until done (the long-running
    /// foreground orchestrator).
    ///
    /// For each phase of `.agents/manifest.yaml`: plan → execute → validate → commit, each
    /// step a fresh Claude Code session; failures are retried, refactored or rolled back
    /// by the error taxonomy; everything is recorded in the manifest. Pause, resume and
    /// stop it with `piv signal <prefix> pause|resume|shutdown`, Ctrl-C (twice to exit at
    /// once), or Telegram (`/pause`, `/resume`, `/go`, `/status`).
    ///
    /// Exit code 0 when every phase is done (or stopped on request); 1 when it stops for a
    /// human (escalation, exhausted retries, cost cap) or on a runtime failure; 2 for a
    /// usage or input error (missing manifest, another instance on the project, a prefix
    /// already used by another project, missing slash commands, root without IS_SANDBOX).
    Run(Box<RunArgs>),
    /// Show what this project's piv instance (or, with --all, every registered instance)
    /// is doing; needs no Telegram.
    ///
    /// Reads the registry ($PIV_HOME/registry.json) for the pid, start time and bot-owner
    /// mark, the PID file `.agents/orchestrator.pid` when the project is not registered,
    /// the state a running instance publishes (`.agents/orchestrator.state.json`: running,
    /// pausing, paused, waiting_for_human, ...) and the manifest (phase, next action). An instance
    /// whose manifest cannot be read is shown as "manifest unavailable" with the reason,
    /// never dropped. Nothing is written (except pruning dead entries from the registry).
    ///
    /// `--json` prints exactly one JSON object: one instance object, or
    /// `{"instances":[...]}` with --all. Instance fields: prefix, projectDir, pid (null when
    /// not running), isBotOwner, state, phase, step, next, costUsd, startedAt,
    /// lastActivity, uptimeSecs, phasesDone, phasesTotal, why, error, stepStartedAt,
    /// stepRunningSecs, pauseRequestedAt, pauseRequestedBy. While a pause waits for the
    /// running step to end, state is `pausing` and step names that step.
    ///
    /// Exit code 0 when the status was printed (also when the manifest is missing: see
    /// `error`); 2 when the project directory does not exist, or with --all when the
    /// registry is disabled; 1 when the registry cannot be read.
    Status(StatusArgs),
    /// Send go, pause, resume or shutdown to a running instance, found by its prefix.
    ///
    /// The prefix is looked up in the registry ($PIV_HOME/registry.json): an exact match
    /// first, then a unique case-insensitive one. The signal is queued as one file in
    /// `<project>/.agents/signals/`; the instance handles it between steps (pause holds
    /// before the next step, resume continues, shutdown stops cleanly, go starts or
    /// continues the phases). prd_start and prd_end open and close the instance's PRD
    /// relay, as /create_prd and /end_prd do in the chat.
    ///
    /// With the registry disabled (PIV_REGISTRY_DISABLED=1), or with the prefix `-`,
    /// `--project DIR` names the target project directly: `piv signal - pause --project
    /// DIR`.
    ///
    /// Exit code 0 when queued; 2 for an unknown or ambiguous prefix (the message lists
    /// the running prefixes), a missing project directory, or the registry disabled
    /// without --project; 1 when the queue file cannot be written.
    Signal(SignalArgs),
    /// What the agent sessions of every project on this machine cost: today, the last 7
    /// days and this month, per project (and --since a day).
    ///
    /// Every `piv run` sharing $PIV_HOME appends each agent session's cost (per project,
    /// day and model) to the ledger, `$PIV_HOME/ledger/YYYY-MM.jsonl` (append-only JSON
    /// lines, one file per month, mode 0600). The figures are the CLI's own
    /// `total_cost_usd`, per call — the same as the `sessions` records in each project's
    /// manifest. Days are UTC. PIV_MAX_COST_PER_DAY_USD caps the sum of one day across
    /// every instance. Nothing is written.
    ///
    /// Exit code 0 when printed (an empty ledger prints zeros); 2 for a bad --since; 1 when
    /// the ledger cannot be read.
    Cost(CostArgs),
}

/// `piv run`'s options. Every one can also come from the environment or the project's
/// `.env`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The project directory (the one holding `.agents/manifest.yaml`). Default: the
    /// current directory.
    #[arg(long, env = "PIV_PROJECT_DIR", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Run only phase N (no research/preflight pre-loop).
    #[arg(long, env = "PIV_PHASE", value_name = "N")]
    pub phase: Option<u32>,
    /// With Telegram configured, exit when all phases are done instead of staying up to
    /// answer commands (`/go` runs phases added later).
    #[arg(long, env = "PIV_EXIT_WHEN_DONE", value_parser = clap::builder::FalseyValueParser::new())]
    pub exit_when_done: bool,
    /// The model every session uses (`--model`). Default: none is passed, and Claude Code
    /// uses its own default (each session's model is recorded in the manifest).
    #[arg(long, env = "PIV_MODEL", value_name = "MODEL")]
    pub model: Option<String>,
    /// Claude Code's permission mode for every session (`--permission-mode`):
    /// `bypassPermissions` (sent as `--dangerously-skip-permissions`: every tool runs;
    /// refused as root unless IS_SANDBOX=1), `auto` (a classifier approves or blocks each
    /// tool call; accepted as root), `acceptEdits` (edits run, other tools only if the
    /// project's settings allow them), or another mode the CLI accepts.
    #[arg(
        long,
        env = "PIV_PERMISSION_MODE",
        default_value = "bypassPermissions",
        value_name = "MODE"
    )]
    pub permission_mode: String,
    /// The Claude Code CLI to run.
    #[arg(
        long,
        env = "PIV_CLAUDE_BIN",
        default_value = "claude",
        value_name = "PATH"
    )]
    pub claude_bin: PathBuf,
    /// `--max-turns` for every session. Default: a turn budget per command from the plan's
    /// size and the prior phases (prime 30, plan 100, execute 50 + 6 per task up to 400,
    /// validate up to 200, commit up to 60), shown in the step line; a session that uses
    /// its budget up is retried once with twice the budget.
    #[arg(long, env = "PIV_MAX_TURNS")]
    pub max_turns: Option<u32>,
    /// One session's wall-clock limit, in seconds.
    #[arg(long, env = "PIV_SESSION_TIMEOUT_SECS", default_value_t = 3600)]
    pub session_timeout_secs: u64,
    /// A session with no output for this many seconds is stalled: it is stopped and
    /// counted as a failure.
    #[arg(long, env = "PIV_STALL_SECS", default_value_t = 900)]
    pub stall_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when stopping an agent's process group.
    #[arg(long, env = "PIV_KILL_GRACE_SECS", default_value_t = 5)]
    pub kill_grace_secs: u64,
    /// Cost cap for this run in USD: reaching it pauses the run and says so (a resume
    /// allows another cap's worth). Default: no cap.
    #[arg(long, env = "PIV_MAX_COST_USD", value_name = "USD")]
    pub max_cost_usd: Option<f64>,
    /// Seconds between "Still running" heartbeats while a phase runs (0: none).
    #[arg(long, env = "PIV_HEARTBEAT_SECS", default_value_t = 1800)]
    pub heartbeat_secs: u64,
    /// How often the signal queue is polled, in milliseconds, in case file events are
    /// unavailable (network file systems, watch limit reached).
    #[arg(long, env = "PIV_SIGNAL_POLL_MS", default_value_t = 2000)]
    pub signal_poll_ms: u64,
    /// Watch the signal queue with file events (`0`: poll only, every PIV_SIGNAL_POLL_MS).
    #[arg(long, env = "PIV_SIGNAL_NOTIFY", default_value = "1", value_name = "0|1", value_parser = switch_on_unless_zero)]
    pub signal_notify: bool,
    /// piv's per-user directory: the registry, the bot-owner lock, the send budget.
    /// Default: ~/.piv-orchestrator.
    #[arg(long, env = "PIV_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Single-instance mode: no registry, no routing to other instances.
    #[arg(long, env = "PIV_REGISTRY_DISABLED", value_parser = clap::builder::FalseyValueParser::new())]
    pub registry_disabled: bool,
    /// This project's tag in every message and its name for `piv signal` and `/pause`.
    /// Default: the project directory's name. Must be unique among running instances.
    #[arg(long, env = "TELEGRAM_PROJECT_PREFIX", value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// The Telegram bot token (from BotFather). With TELEGRAM_CHAT_ID it turns Telegram on.
    #[arg(
        long,
        env = "TELEGRAM_BOT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub telegram_bot_token: Option<String>,
    /// The one chat piv reports to and takes commands from.
    #[arg(long, env = "TELEGRAM_CHAT_ID", value_name = "ID")]
    pub telegram_chat_id: Option<String>,
    /// The Bot API server (a self-hosted Bot API server or a test server goes here).
    #[arg(
        long,
        env = "TELEGRAM_API_URL",
        default_value = "https://api.telegram.org",
        value_name = "URL"
    )]
    pub telegram_api_url: String,
    /// In a supergroup with topics on, give each project its own forum topic (`on`, the
    /// default) or keep every message in General with `[prefix] ` tags (`off`).
    #[arg(
        long,
        env = "PIV_TELEGRAM_TOPICS",
        default_value = "on",
        value_parser = ["on", "off"],
        value_name = "on|off"
    )]
    pub telegram_topics: String,
    /// How much the chat gets: `quiet` (only what needs a person), `normal` (also what
    /// closes something; steps show on one live status message per phase), `verbose`
    /// (also a line per step).
    #[arg(
        long,
        env = "PIV_NOTIFY",
        default_value = "normal",
        value_parser = ["quiet", "normal", "verbose"],
        value_name = "LEVEL"
    )]
    pub notify: String,
    /// Keep ANTHROPIC_API_KEY in the agent's environment (API billing). By default it is
    /// removed so sessions bill the subscription through CLAUDE_CODE_OAUTH_TOKEN.
    #[arg(long, env = "PIV_ALLOW_API_KEY", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_api_key: bool,
    /// Restart budget: at most this many restarts of a crashed component...
    #[arg(long, env = "PIV_MAX_RESTARTS", default_value_t = 3)]
    pub max_restarts: usize,
    /// ...within this many seconds; one more crash shuts piv down cleanly.
    #[arg(long, env = "PIV_RESTART_WINDOW_SECS", default_value_t = 60)]
    pub restart_window_secs: u64,
    /// At most this many agent sessions per phase in one run, whatever the path (retries,
    /// refactors, re-plans); then piv stops for a human, naming the step that kept failing.
    /// A session is one conversation: a step's `/prime` and its command, resumed, count once.
    #[arg(long, env = "PIV_MAX_SESSIONS_PER_PHASE", default_value_t = 20)]
    pub max_sessions_per_phase: u32,
    /// First wait, in seconds, after a session ended because the API could not be reached
    /// or was overloaded; each further wait doubles, up to 600. Outages are not counted as
    /// failures and never lead to a rollback.
    #[arg(long, env = "PIV_OUTAGE_BACKOFF_SECS", default_value_t = 30)]
    pub outage_backoff_secs: u64,
    /// After this many seconds of continuous outage, stop for a human.
    #[arg(long, env = "PIV_OUTAGE_MAX_SECS", default_value_t = 14_400)]
    pub outage_max_secs: u64,
    /// Shortest wait, in seconds, after a usage limit whose reset time is missing or already
    /// past; it doubles while the limit persists.
    #[arg(long, env = "PIV_LIMIT_MIN_WAIT_SECS", default_value_t = 60)]
    pub limit_min_wait_secs: u64,
    /// A test hook (`phase_runner_panic:N`, `notifier_panic` or `manifest_write_fail:N`;
    /// see `config::FaultInjection`). Not for normal use.
    #[arg(long, env = "PIV_FAULT_INJECT", value_name = "HOOK", hide = true)]
    pub fault_inject: Option<String>,
    /// This project's priority among the instances of $PIV_HOME (higher first): after a
    /// usage-limit reset the projects resume in this order (ties: start order).
    #[arg(
        long,
        env = "PIV_PRIORITY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i64,
    /// Seconds between two projects resuming after a usage-limit reset, so that they do not
    /// all start at once and burn the new window together.
    #[arg(long, env = "PIV_RESUME_STAGGER_SECS", default_value_t = 60)]
    pub resume_stagger_secs: u64,
    /// When a session reports the usage window this full (0..1; or the CLI's
    /// allowed_warning when it reports no utilization), projects whose priority is below
    /// PIV_PARK_BELOW_PRIORITY park until the reset.
    #[arg(long, env = "PIV_PARK_AT_UTILIZATION", default_value_t = 0.9)]
    pub park_at_utilization: f64,
    /// Projects with a priority below this park when the window is nearly full (default
    /// 0: with the default priority 0, nobody parks).
    #[arg(
        long,
        env = "PIV_PARK_BELOW_PRIORITY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub park_below_priority: i64,
    /// Go on when a session is paid from extra usage (overage). By default piv pauses
    /// before the next session and waits for a resume (or the subscription's reset).
    #[arg(long, env = "PIV_ALLOW_OVERAGE", value_parser = clap::builder::FalseyValueParser::new())]
    pub allow_overage: bool,
    /// A daily cost cap in USD across every instance of $PIV_HOME (from the cost ledger,
    /// UTC days): reaching it pauses every instance before its next session, with one
    /// message. A resume lets that instance go on for the rest of the day.
    #[arg(long, env = "PIV_MAX_COST_PER_DAY_USD", value_name = "USD")]
    pub max_cost_per_day_usd: Option<f64>,
    /// A Telegram /go, /pause or /resume older than this many seconds when piv reads it
    /// (typical after the first start: Telegram hands over up to 24 h of old messages) is
    /// not acted on; piv answers that it ignored it. /status and /help are always answered.
    #[arg(long, env = "PIV_STALE_COMMAND_SECS", default_value_t = 600)]
    pub stale_command_secs: u64,
    #[command(flatten)]
    pub coordination: CoordinationArgs,
}

/// Coordination across machines (opt-in): shared by `run`, `status` and `signal`.
#[derive(Debug, Clone, Default, Args)]
pub struct CoordinationArgs {
    /// NATS servers to coordinate instances on several machines with one bot token
    /// (`nats://host:port[,nats://host:port…]`, JetStream enabled, 2.11 or later). Unset:
    /// this machine only (kernel locks in PIV_HOME). Set but unreachable at start: exit 2,
    /// unless PIV_COORDINATION_OPTIONAL=1.
    #[arg(long, env = "PIV_COORDINATION", value_name = "URLS")]
    pub coordination: Option<String>,
    /// With PIV_COORDINATION: when no server answers at start, go on on this machine only
    /// (said on stderr, in the log and in the chat) instead of exiting with 2.
    #[arg(long, env = "PIV_COORDINATION_OPTIONAL", value_parser = clap::builder::FalseyValueParser::new())]
    pub coordination_optional: bool,
    /// NATS user name (with PIV_NATS_PASSWORD).
    #[arg(long, env = "PIV_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password (with PIV_NATS_USER).
    #[arg(
        long,
        env = "PIV_NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub nats_password: Option<String>,
    /// A NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(long, env = "PIV_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// Replicas of piv's buckets and streams. Default: min(3, cluster size).
    #[arg(long, env = "PIV_NATS_REPLICAS", value_name = "N")]
    pub nats_replicas: Option<usize>,
    /// The poller lease's TTL in seconds: a dead bot owner on another machine is replaced
    /// within about this long.
    #[arg(
        long,
        env = "PIV_LEASE_TTL_SECS",
        default_value_t = 5,
        value_name = "SECS"
    )]
    pub lease_ttl_secs: u64,
}

/// A switch that is on unless it is `0` (surrounding spaces ignored).
fn switch_on_unless_zero(value: &str) -> Result<bool, std::convert::Infallible> {
    Ok(value.trim() != "0")
}

/// Options of `piv cost`.
#[derive(Debug, Clone, Args)]
pub struct CostArgs {
    /// Print exactly one JSON object: `{"today","since","projects":[{"project","today",
    /// "last7Days","month","since","sessions","unknownCostSessions","byModel"}],"total"}`.
    #[arg(long)]
    pub json: bool,
    /// Also sum from this day on (YYYY-MM-DD, UTC), in a "since" column.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only projects whose prefix starts with P (case-insensitive).
    #[arg(long, value_name = "P")]
    pub project: Option<String>,
    /// piv's home directory holding the ledger; defaults to ~/.piv-orchestrator.
    #[arg(long, env = "PIV_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
}

/// Options of `piv dry-run`.
#[derive(Debug, Clone, Args)]
pub struct DryRunArgs {
    /// Project directory (the one containing `.agents/manifest.yaml`); defaults to the
    /// current directory.
    #[arg(long, env = "PIV_PROJECT_DIR", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Print exactly one JSON object `{"command","argument","reason","confidence"}`
    /// (`argument` is null when absent) instead of the human-readable block.
    #[arg(long)]
    pub json: bool,
}

/// Options of `piv status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Project directory to report on (ignored with --all); defaults to the current
    /// directory.
    #[arg(long, env = "PIV_PROJECT_DIR", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// Report every instance registered in $PIV_HOME instead of this project only.
    #[arg(long)]
    pub all: bool,
    /// Print exactly one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// piv's home directory holding the registry; defaults to ~/.piv-orchestrator.
    #[arg(long, env = "PIV_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Do not read the registry (single-instance mode): this project's pid then comes
    /// from its PID file only, and --all is refused.
    #[arg(long, env = "PIV_REGISTRY_DISABLED", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_registry: bool,
    /// The prefix of a project that is not registered and whose instance published none
    /// (what its `piv run` would use). Default: the project directory's name.
    #[arg(long, env = "TELEGRAM_PROJECT_PREFIX", value_name = "PREFIX")]
    pub project_prefix: Option<String>,
    #[command(flatten)]
    pub coordination: CoordinationArgs,
}

/// `piv signal`'s ACTION: the control vocabulary's wire names, each with its help (the
/// names and texts are [`ControlAction`]'s, so there is nothing to map by hand).
fn control_action_parser() -> impl clap::builder::TypedValueParser<Value = ControlAction> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        ControlAction::ALL
            .into_iter()
            .filter(|a| a.from_terminal())
            .map(|a| PossibleValue::new(a.as_str()).help(a.describe())),
    )
    .map(|name| ControlAction::from_name(&name).expect("only the actions' names are accepted"))
}

/// Options of `piv signal`.
#[derive(Debug, Clone, Args)]
pub struct SignalArgs {
    /// The target instance's prefix (as `piv status --all` shows it), or `-` to target
    /// the project given by --project.
    #[arg(value_name = "PREFIX")]
    pub prefix: String,
    /// What to ask the instance to do.
    #[arg(value_name = "ACTION", value_parser = control_action_parser())]
    pub action: ControlAction,
    /// Target this project directly instead of looking the prefix up in the registry;
    /// used when the prefix is `-` or the registry is disabled.
    #[arg(long, env = "PIV_PROJECT_DIR", value_name = "DIR")]
    pub project: Option<PathBuf>,
    /// piv's home directory holding the registry; defaults to ~/.piv-orchestrator.
    #[arg(long, env = "PIV_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Do not read the registry (single-instance mode): --project is then required.
    #[arg(long, env = "PIV_REGISTRY_DISABLED", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_registry: bool,
    /// The prefix of a project that is not registered and whose instance published none
    /// (what its `piv run` would use). Default: the project directory's name.
    #[arg(long, env = "TELEGRAM_PROJECT_PREFIX", value_name = "PREFIX")]
    pub project_prefix: Option<String>,
    /// Sender name recorded in the signal file (`from`).
    #[arg(long, value_name = "NAME", default_value = "terminal")]
    pub from: String,
    #[command(flatten)]
    pub coordination: CoordinationArgs,
}

/// The project directory: `--project` / `PIV_PROJECT_DIR`, else the current directory.
pub fn resolve_project_dir(project: Option<&Path>) -> PathBuf {
    match project {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
    }
}

/// Why a dry run could not produce an action; the message names the file and the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DryRunError {
    #[error("project directory {0} does not exist: pass --project DIR or set PIV_PROJECT_DIR")]
    NoProjectDir(PathBuf),
    #[error(transparent)]
    File(#[from] ManifestFileError),
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
}

/// Computes the next action for a project without side effects.
pub fn dry_run(project_dir: &Path) -> Result<NextAction, DryRunError> {
    if !project_dir.is_dir() {
        return Err(DryRunError::NoProjectDir(project_dir.to_path_buf()));
    }
    let manifest = manifest_file::read(project_dir)?;
    let view = manifest.view().map_err(|source| DryRunError::Manifest {
        path: manifest_file::manifest_path(project_dir),
        source,
    })?;
    Ok(next_action(&view))
}

/// The human-readable dry-run block (the earlier version's layout, without the emoji).
pub fn render_dry_run(action: &NextAction) -> String {
    format!(
        "Dry Run \u{2014} Recommended Next Action:\n   Command:    {}\n   Argument:   {}\n   Reason:     {}\n   Confidence: {}\n",
        action.command,
        action.argument.as_deref().unwrap_or("(none)"),
        action.reason,
        action.confidence.as_str(),
    )
}

/// `piv dry-run`: prints the action (text or JSON) on stdout, errors on stderr; returns
/// the exit code.
pub fn run_dry_run(args: &DryRunArgs) -> i32 {
    let project_dir = resolve_project_dir(args.project.as_deref());
    match dry_run(&project_dir) {
        Ok(action) => {
            let out = if args.json {
                let mut line =
                    serde_json::to_string(&action).expect("a next action always serialises");
                line.push('\n');
                line
            } else {
                render_dry_run(&action)
            };
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return exit::STOPPED;
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("piv: error: {e}");
            exit::USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::next_action::Confidence;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn signal_takes_every_action_by_its_wire_name() {
        for action in ControlAction::ALL.into_iter().filter(|a| a.from_terminal()) {
            let cli = Cli::try_parse_from(["piv", "signal", "b", action.as_str()]).unwrap();
            let Command::Signal(args) = cli.command else {
                panic!("signal parsed as another command");
            };
            assert_eq!(args.action, action);
        }
        // `prd_text` needs a message the command line does not take.
        for bad in ["Pause", "stop", "", "prd_text"] {
            assert!(
                Cli::try_parse_from(["piv", "signal", "b", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_dry_run_flags() {
        let cli = Cli::try_parse_from(["piv", "dry-run", "--project", "/x", "--json"]).unwrap();
        let Command::DryRun(args) = cli.command else {
            panic!("dry-run parsed as another command");
        };
        assert_eq!(args.project.as_deref(), Some(Path::new("/x")));
        assert!(args.json);
        assert!(Cli::try_parse_from(["piv", "dry-run", "--bogus"]).is_err());
    }

    #[test]
    fn human_block_shows_none_for_a_missing_argument() {
        let text = render_dry_run(&NextAction {
            command: "done".into(),
            argument: None,
            reason: "All phases complete".into(),
            confidence: Confidence::High,
        });
        assert!(text.contains("   Command:    done\n"), "{text}");
        assert!(text.contains("   Argument:   (none)\n"), "{text}");
        assert!(text.contains("   Confidence: high\n"), "{text}");
    }

    #[test]
    fn dry_run_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert_eq!(dry_run(&missing), Err(DryRunError::NoProjectDir(missing)));
        std::fs::create_dir(dir.path().join(".agents")).unwrap();
        std::fs::write(dir.path().join(".agents/manifest.yaml"), "prd: {}\n").unwrap();
        let msg = dry_run(dir.path()).unwrap_err().to_string();
        assert!(
            msg.contains("manifest.yaml") && msg.contains("manifest has no phases"),
            "{msg}"
        );
    }
}
