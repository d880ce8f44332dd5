//! `piv run`'s configuration in its second stage: the command line and environment
//! (`cli::RunArgs`, stage one: clap reads every variable) checked once and turned into a
//! [`RunConfig`] and the settings the actors take as they are. Nothing here starts
//! anything, and nothing here knows the actors: config sits below them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{CoordinationArgs, RunArgs};
use crate::core::waits::{LimitPolicy, OutagePolicy};
use crate::io::agent::AgentConfig;
use crate::io::coordination::CoordinationSettings;

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Canonical, absolute.
    pub project_dir: PathBuf,
    /// `TELEGRAM_PROJECT_PREFIX`, else the project directory's name.
    pub prefix: String,
    /// `$PIV_HOME`.
    pub home: PathBuf,
    pub registry_enabled: bool,
    /// RFC 3339, the instance's start.
    pub started_at: String,
    pub signal_poll: Duration,
    pub signal_notify: bool,
    pub telegram: Option<TelegramSettings>,
    /// `PIV_STALE_COMMAND_SECS`: chat commands older than this are not acted on.
    pub stale_command_secs: u64,
    pub agent: AgentConfig,
    pub only_phase: Option<u32>,
    pub max_cost_usd: Option<f64>,
    pub heartbeat: Duration,
    pub exit_when_done: bool,
    pub max_restarts: usize,
    pub restart_window: Duration,
    pub max_sessions_per_phase: u32,
    pub outage: OutagePolicy,
    pub limit: LimitPolicy,
    /// Test hooks (`PIV_FAULT_INJECT`).
    pub faults: FaultInjection,
    /// The shared subscription: priority, resume stagger, parking, overage, daily cap.
    pub usage: crate::core::usage::UsagePolicy,
    /// `PIV_MAX_TURNS` given: every session gets it; otherwise turn budgets per command.
    pub turn_budgets: bool,
    /// `PIV_COORDINATION` and its companions: None is this machine only.
    pub coordination: Option<CoordinationSettings>,
    /// The coordination chosen at start (`run` sets it once connected; None: this machine
    /// only).
    pub coordinator: Option<crate::io::coordination::Coordinator>,
}

/// How the instance reaches its Telegram chat.
#[derive(Clone)]
pub struct TelegramSettings {
    pub token: String,
    /// The token's numeric bot id: names the bot's directory in `$PIV_HOME`.
    pub bot_id: u64,
    pub chat_id: i64,
    pub api_url: String,
    /// A forum topic per project when the chat has topics (`PIV_TELEGRAM_TOPICS`).
    pub topics: bool,
    /// How much the chat gets (`PIV_NOTIFY`).
    pub notify: crate::core::notify_level::NotifyLevel,
}

impl std::fmt::Debug for TelegramSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSettings")
            .field("token", &"<redacted>")
            .field("bot_id", &self.bot_id)
            .field("chat_id", &self.chat_id)
            .field("api_url", &self.api_url)
            .field("topics", &self.topics)
            .field("notify", &self.notify)
            .finish()
    }
}

/// Everything the phase runner's loop needs to know, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub project_dir: PathBuf,
    pub prefix: String,
    pub agent: AgentConfig,
    pub only_phase: Option<u32>,
    pub max_cost_usd: Option<f64>,
    pub heartbeat: Duration,
    pub started_at: String,
    /// Test hook (`PIV_FAULT_INJECT=phase_runner_panic:N`): the loop panics at its start
    /// the first N times, to exercise crash recording and the restart budget.
    pub inject_panics: u32,
    /// Test hook (`PIV_FAULT_INJECT=manifest_write_fail:N`): every manifest write after
    /// the first N fails, as on a full disk.
    pub fail_manifest_writes_after: Option<u32>,
    /// At most this many agent sessions per phase in one run (`PIV_MAX_SESSIONS_PER_PHASE`).
    pub max_sessions_per_phase: u32,
    pub outage: OutagePolicy,
    pub limit: LimitPolicy,
    /// `$PIV_HOME` when instances share it (the usage record, the cost ledger); None in
    /// single-instance mode.
    pub home: Option<PathBuf>,
    pub usage: crate::core::usage::UsagePolicy,
    /// Turn budgets per command (`PIV_MAX_TURNS` unset).
    pub turn_budgets: bool,
    /// Telegram is on: a usage-limit wait is recorded as an open escalation, so that its
    /// Pause button on the shared message can act.
    pub chat_buttons: bool,
}

/// The test hooks of `PIV_FAULT_INJECT`, one of three forms (anything else injects
/// nothing): `phase_runner_panic:N`, `notifier_panic`, `manifest_write_fail:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// `phase_runner_panic:N`: the loop panics at its start the first N times (a crash
    /// inside the loop: crash record and restart budget).
    pub runner_panics: u32,
    /// `notifier_panic`: the notifier panics on its first event (a crash outside the
    /// loop: the ordered shutdown).
    pub notifier_panic: bool,
    /// `manifest_write_fail:N`: every manifest write after the first N fails, as on a
    /// full disk.
    pub manifest_writes_fail_after: Option<u32>,
}

impl FaultInjection {
    /// Parses `PIV_FAULT_INJECT` (`--fault-inject`); the counts may be padded.
    pub fn parse(value: Option<&str>) -> FaultInjection {
        let mut faults = FaultInjection::default();
        let Some(value) = value else {
            return faults;
        };
        let count = |form: &str| value.strip_prefix(form)?.trim().parse::<u32>().ok();
        if value == "notifier_panic" {
            faults.notifier_panic = true;
        } else if let Some(n) = count("phase_runner_panic:") {
            faults.runner_panics = n;
        } else if let Some(n) = count("manifest_write_fail:") {
            faults.manifest_writes_fail_after = Some(n);
        }
        faults
    }
}

/// The longest single wait of an outage backoff (the waits double up to it).
const OUTAGE_WAIT_CAP_SECS: u64 = 600;

/// A configuration problem, said plainly (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("project directory {0} does not exist (set --project or PIV_PROJECT_DIR)")]
    NoProjectDir(PathBuf),
    #[error("{0}")]
    Home(#[from] crate::io::home::HomeError),
    #[error("--max-cost-usd must be a positive number, got {0}")]
    BadCost(f64),
    #[error(
        "invalid prefix {0:?}: use letters, digits, '-', '_' or '.' (TELEGRAM_PROJECT_PREFIX)"
    )]
    BadPrefix(String),
    #[error("{0}")]
    BadToken(#[from] crate::core::bot_chats::BadToken),
    #[error("{0}")]
    Coordination(String),
}

impl RunConfig {
    pub fn from_args(args: &RunArgs, started_at: String) -> Result<RunConfig, ConfigError> {
        let dir = crate::cli::resolve_project_dir(args.project.as_deref());
        let project_dir = dir
            .canonicalize()
            .map_err(|_| ConfigError::NoProjectDir(dir.clone()))?;
        if !project_dir.is_dir() {
            return Err(ConfigError::NoProjectDir(dir));
        }
        let prefix = match &args.prefix {
            Some(p) if !p.trim().is_empty() => p.trim().to_string(),
            _ => default_prefix(&project_dir),
        };
        if !prefix
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::BadPrefix(prefix));
        }
        let home = crate::io::home::resolve_home(args.home.as_deref().map(Path::as_os_str))?;
        if let Some(cost) = args.max_cost_usd {
            if cost.is_nan() || cost <= 0.0 {
                return Err(ConfigError::BadCost(cost));
            }
        }
        let mut agent = AgentConfig::new(&args.claude_bin, &project_dir);
        agent.model = args
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string);
        agent.max_turns = args.max_turns.unwrap_or(agent.max_turns);
        agent.timeout = Duration::from_secs(args.session_timeout_secs.max(1));
        agent.stall = Duration::from_secs(args.stall_secs.max(1));
        agent.kill_grace = Duration::from_secs(args.kill_grace_secs);
        agent.allow_api_key = args.allow_api_key;
        // Unattended runs cannot answer permission prompts (the reference ran with
        // bypassPermissions, still the default); the root case is refused at start-up with
        // the fix.
        agent.permission_mode = args.permission_mode.trim().to_string();
        agent.pgid_file = Some(crate::io::agent::agent_pgid_path(&project_dir));
        Ok(RunConfig {
            project_dir,
            prefix,
            home,
            registry_enabled: !args.registry_disabled,
            started_at,
            signal_poll: Duration::from_millis(args.signal_poll_ms.max(10)),
            signal_notify: args.signal_notify,
            telegram: telegram_settings(args)?,
            coordination: coordination_settings(&args.coordination)?,
            coordinator: None,
            stale_command_secs: args.stale_command_secs,
            agent,
            only_phase: args.phase,
            max_cost_usd: args.max_cost_usd,
            heartbeat: Duration::from_secs(args.heartbeat_secs),
            exit_when_done: args.exit_when_done,
            max_restarts: args.max_restarts,
            restart_window: Duration::from_secs(args.restart_window_secs.max(1)),
            max_sessions_per_phase: args.max_sessions_per_phase.max(1),
            outage: OutagePolicy {
                first_wait_secs: args.outage_backoff_secs.max(1),
                cap_secs: OUTAGE_WAIT_CAP_SECS.max(args.outage_backoff_secs),
                max_secs: args.outage_max_secs,
            },
            limit: LimitPolicy {
                min_wait_secs: args.limit_min_wait_secs.max(1),
                ..Default::default()
            },
            faults: FaultInjection::parse(args.fault_inject.as_deref()),
            usage: usage_policy(args),
            turn_budgets: args.max_turns.is_none(),
        })
    }

    pub fn runner_settings(&self) -> RunnerSettings {
        RunnerSettings {
            project_dir: self.project_dir.clone(),
            prefix: self.prefix.clone(),
            agent: self.agent.clone(),
            only_phase: self.only_phase,
            max_cost_usd: self.max_cost_usd,
            heartbeat: self.heartbeat,
            started_at: self.started_at.clone(),
            inject_panics: self.faults.runner_panics,
            fail_manifest_writes_after: self.faults.manifest_writes_fail_after,
            max_sessions_per_phase: self.max_sessions_per_phase,
            outage: self.outage,
            limit: self.limit,
            home: self.registry_enabled.then(|| self.home.clone()),
            usage: self.usage.clone(),
            turn_budgets: self.turn_budgets,
            chat_buttons: self.telegram.is_some(),
        }
    }

    /// With Telegram on, a finished (or human-blocked) run stays up answering commands,
    /// unless `--exit-when-done`.
    pub fn stay_up_when_idle(&self) -> bool {
        self.telegram.is_some() && !self.exit_when_done
    }
}

/// The shared-subscription settings (`PIV_PRIORITY` ... `PIV_MAX_COST_PER_DAY_USD`).
fn usage_policy(args: &RunArgs) -> crate::core::usage::UsagePolicy {
    crate::core::usage::UsagePolicy {
        priority: args.priority,
        stagger_secs: args.resume_stagger_secs,
        park_at_utilization: args.park_at_utilization,
        park_below_priority: args.park_below_priority,
        allow_overage: args.allow_overage,
        max_cost_per_day_usd: args.max_cost_per_day_usd.filter(|c| *c > 0.0),
    }
}

/// The project directory's name, as the reference's default prefix.
pub fn default_prefix(project_dir: &Path) -> String {
    project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "piv".to_string())
}

/// `PIV_COORDINATION` checked: each server with its scheme, credentials one way or the
/// other, a TTL of at least a second. Unset (or empty): None, and no NATS code runs.
pub fn coordination_settings(
    args: &CoordinationArgs,
) -> Result<Option<CoordinationSettings>, ConfigError> {
    let Some(list) = args
        .coordination
        .as_deref()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    else {
        return Ok(None);
    };
    let servers: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = servers.iter().find(|s| {
        !["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| s.starts_with(scheme))
    }) {
        return Err(ConfigError::Coordination(format!(
            "PIV_COORDINATION: {bad:?} has no scheme; write each server as nats://host:port"
        )));
    }
    let user_password = match (&args.nats_user, &args.nats_password) {
        (Some(user), Some(password)) => Some((user.clone(), password.clone())),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Coordination(
                "PIV_NATS_USER and PIV_NATS_PASSWORD go together".into(),
            ))
        }
    };
    if args.lease_ttl_secs == 0 {
        return Err(ConfigError::Coordination(
            "PIV_LEASE_TTL_SECS must be at least 1".into(),
        ));
    }
    Ok(Some(CoordinationSettings {
        servers,
        user_password,
        creds_file: args.nats_creds.clone(),
        optional: args.coordination_optional,
        replicas: args.nats_replicas,
        lease_ttl: Duration::from_secs(args.lease_ttl_secs),
    }))
}

/// Telegram needs both the token and a numeric chat id; one without the other, or a bad
/// chat id, is a warning and terminal-only mode (as the reference). A token without a
/// numeric bot id before ':' is an error: the bot id names the bot's files.
fn telegram_settings(args: &RunArgs) -> Result<Option<TelegramSettings>, ConfigError> {
    let token = args
        .telegram_bot_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let chat = args
        .telegram_chat_id
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let bot_id = token.map(crate::core::bot_chats::bot_id_of).transpose()?;
    Ok(match (token, bot_id, chat) {
        (Some(token), Some(bot_id), Some(chat)) => match chat.parse::<i64>() {
            Ok(chat_id) => Some(TelegramSettings {
                token: token.to_string(),
                bot_id,
                chat_id,
                api_url: crate::io::telegram::normalise_api_url(&args.telegram_api_url),
                topics: args.telegram_topics != "off",
                notify: args.notify.parse().unwrap_or_default(),
            }),
            Err(_) => {
                eprintln!(
                    "piv: warning: TELEGRAM_CHAT_ID {chat:?} is not a number; running terminal-only"
                );
                None
            }
        },
        (None, _, None) => None,
        _ => {
            eprintln!(
                "piv: warning: Telegram needs both TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID; running terminal-only"
            );
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_injection_table() {
        let none = FaultInjection::default();
        let cases = [
            (None, none),
            (
                Some("phase_runner_panic:3"),
                FaultInjection {
                    runner_panics: 3,
                    ..none
                },
            ),
            (
                Some("phase_runner_panic: 2 "),
                FaultInjection {
                    runner_panics: 2,
                    ..none
                },
            ),
            (
                Some("notifier_panic"),
                FaultInjection {
                    notifier_panic: true,
                    ..none
                },
            ),
            (
                Some("manifest_write_fail:0"),
                FaultInjection {
                    manifest_writes_fail_after: Some(0),
                    ..none
                },
            ),
            (Some("something_else:3"), none),
            (Some("phase_runner_panic:x"), none),
            (Some("notifier_panic:1"), none),
            (Some(" notifier_panic"), none),
            (Some(""), none),
        ];
        for (value, want) in cases {
            assert_eq!(FaultInjection::parse(value), want, "{value:?}");
        }
    }

    #[test]
    fn settings_debug_hides_the_token() {
        let s = TelegramSettings {
            token: "123:secret-token-value".into(),
            bot_id: 123,
            chat_id: 1,
            api_url: "http://x".into(),
            topics: true,
            notify: Default::default(),
        };
        assert!(!format!("{s:?}").contains("secret-token-value"));
    }

    #[test]
    fn default_prefix_is_the_directory_name() {
        assert_eq!(default_prefix(Path::new("/work/my-app")), "my-app");
    }
}
