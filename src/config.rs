//! `piv run`'s configuration in its second stage: the command line and environment
//! (`cli::RunArgs`, stage one) checked once and turned into a [`RunConfig`] that the
//! actors use as is. Nothing here starts anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actors::notifier::TelegramSettings;
use crate::actors::phase_runner::RunnerSettings;
use crate::cli::RunArgs;
use crate::io::agent::AgentConfig;

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
    pub agent: AgentConfig,
    pub only_phase: Option<u32>,
    pub max_cost_usd: Option<f64>,
    pub heartbeat: Duration,
    pub exit_when_done: bool,
    pub max_restarts: usize,
    pub restart_window: Duration,
    pub inject_panics: u32,
    /// Test hook (`PIV_FAULT_INJECT=manifest_write_fail:N`).
    pub fail_manifest_writes_after: Option<u32>,
    pub max_sessions_per_phase: u32,
    pub outage: crate::core::waits::OutagePolicy,
    pub limit: crate::core::waits::LimitPolicy,
    /// Test hook (`PIV_FAULT_INJECT=notifier_panic`): the notifier panics on its first
    /// event.
    pub inject_notifier_panic: bool,
    /// The shared subscription: priority, resume stagger, parking, overage, daily cap.
    pub usage: crate::core::usage::UsagePolicy,
    /// `PIV_MAX_TURNS` given: every session gets it; otherwise turn budgets per command.
    pub turn_budgets: bool,
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
            signal_notify: std::env::var("PIV_SIGNAL_NOTIFY").map_or(true, |v| v.trim() != "0"),
            telegram: telegram_settings(args),
            agent,
            only_phase: args.phase,
            max_cost_usd: args.max_cost_usd,
            heartbeat: Duration::from_secs(args.heartbeat_secs),
            exit_when_done: args.exit_when_done,
            max_restarts: args.max_restarts,
            restart_window: Duration::from_secs(args.restart_window_secs.max(1)),
            inject_panics: fault_injection(std::env::var("PIV_FAULT_INJECT").ok().as_deref()),
            fail_manifest_writes_after: std::env::var("PIV_FAULT_INJECT")
                .ok()
                .and_then(|v| v.strip_prefix("manifest_write_fail:")?.trim().parse().ok()),
            max_sessions_per_phase: args.max_sessions_per_phase.max(1),
            outage: crate::core::waits::OutagePolicy {
                first_wait_secs: args.outage_backoff_secs.max(1),
                cap_secs: OUTAGE_WAIT_CAP_SECS.max(args.outage_backoff_secs),
                max_secs: args.outage_max_secs,
            },
            limit: crate::core::waits::LimitPolicy {
                min_wait_secs: args.limit_min_wait_secs.max(1),
                ..Default::default()
            },
            inject_notifier_panic: std::env::var("PIV_FAULT_INJECT").as_deref()
                == Ok("notifier_panic"),
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
            inject_panics: self.inject_panics,
            fail_manifest_writes_after: self.fail_manifest_writes_after,
            max_sessions_per_phase: self.max_sessions_per_phase,
            outage: self.outage,
            limit: self.limit,
            home: self.registry_enabled.then(|| self.home.clone()),
            usage: self.usage.clone(),
            turn_budgets: self.turn_budgets,
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

/// Telegram needs both the token and a numeric chat id; one without the other, or a bad
/// chat id, is a warning and terminal-only mode (as the reference).
fn telegram_settings(args: &RunArgs) -> Option<TelegramSettings> {
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
    match (token, chat) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            eprintln!(
                "piv: warning: Telegram needs both TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID; running terminal-only"
            );
            None
        }
        (Some(token), Some(chat)) => match chat.parse::<i64>() {
            Ok(chat_id) => Some(TelegramSettings {
                token: token.to_string(),
                chat_id,
                api_url: crate::io::telegram::normalise_api_url(&args.telegram_api_url),
            }),
            Err(_) => {
                eprintln!(
                    "piv: warning: TELEGRAM_CHAT_ID {chat:?} is not a number; running terminal-only"
                );
                None
            }
        },
    }
}

/// `PIV_FAULT_INJECT=phase_runner_panic:N` (a test hook): the loop panics N times.
/// (`PIV_FAULT_INJECT=notifier_panic` is the other hook: a panic outside the loop.)
fn fault_injection(value: Option<&str>) -> u32 {
    value
        .and_then(|v| v.strip_prefix("phase_runner_panic:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_injection_parses_only_its_own_form() {
        assert_eq!(fault_injection(Some("phase_runner_panic:3")), 3);
        assert_eq!(fault_injection(Some("something_else:3")), 0);
        assert_eq!(fault_injection(None), 0);
    }

    #[test]
    fn default_prefix_is_the_directory_name() {
        assert_eq!(default_prefix(Path::new("/work/my-app")), "my-app");
    }
}
