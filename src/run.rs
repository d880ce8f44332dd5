//! `piv run`: the checks that must pass before anything is spent (configuration, the
//! manifest, root and the permission flag, the slash commands, the PID file), then the
//! actor system under the SupervisorActor, then the exit code the supervisor chose.

use std::cell::Cell;
use std::rc::Rc;
use std::time::SystemTime;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::actors::supervisor::{install_panic_hook, CrashContext, SupervisorActor};
use crate::cli::{exit, RunArgs};
use crate::config::RunConfig;
use crate::core::step::PIV_COMMANDS;
use crate::io::clock::now_rfc3339;
use crate::io::{agent, git, log_file, manifest_file, pid_file::PidFile};

/// Runs `piv run` to its end and returns the exit code.
pub fn run(args: &RunArgs) -> i32 {
    let started_at = now_rfc3339();
    let started = SystemTime::now();
    let cfg = match RunConfig::from_args(args, started_at.clone()) {
        Ok(cfg) => cfg,
        Err(e) => return fail_usage(&e.to_string()),
    };
    let _log_guard = init_logging(&cfg);
    if let Err(code) = preflight_checks(&cfg) {
        return code;
    }
    if cfg.registry_enabled || cfg.telegram.is_some() {
        if let Err(e) = crate::io::home::ensure_home(&cfg.home) {
            return fail_usage(&e.to_string());
        }
    }
    let system = actix_rt::System::new();
    let mut cfg = cfg;
    if cfg.coordination.is_some() {
        // Connected inside the actor system's runtime: the client's tasks live there.
        let bot_id = cfg
            .telegram
            .as_ref()
            .and_then(|t| crate::core::lease::bot_id_of(&t.token))
            .map(str::to_string);
        let chosen = system.block_on(crate::io::coordination::choose(
            cfg.coordination.as_ref(),
            bot_id.as_deref(),
            &cfg.home,
            &cfg.project_dir,
        ));
        match chosen {
            Ok(chosen) => {
                if let Some(note) = &chosen.fallback_note {
                    crate::io::terminal::warn(&format!("piv: {note}"));
                }
                cfg.coordinator = Some(chosen);
            }
            Err(e) => return fail_usage(&e.to_string()),
        }
    }
    let pid_file = match PidFile::acquire(&cfg.project_dir, &started_at) {
        Ok(p) => p,
        Err(e) => return fail_usage(&e.to_string()),
    };
    tracing::info!(project = %cfg.project_dir.display(), prefix = %cfg.prefix, "piv run starting");
    if let Some(pgid) = agent::stop_orphaned_agent(&cfg.project_dir, cfg.agent.kill_grace) {
        crate::io::terminal::line(&format!(
            "stopped an agent session (process group {pgid}) left running by a killed piv run"
        ));
    }
    crate::io::terminal::line(&format!(
        "piv {} — project {} [{}]{}",
        env!("CARGO_PKG_VERSION"),
        cfg.project_dir.display(),
        cfg.prefix,
        if cfg.telegram.is_some() {
            " — Telegram on"
        } else {
            " — terminal only"
        }
    ));
    install_panic_hook(CrashContext {
        project_dir: cfg.project_dir.clone(),
    });
    let exit_code = Rc::new(Cell::new(exit::STOPPED));
    {
        let exit_code = exit_code.clone();
        system.block_on(async move {
            use actix::Actor;
            SupervisorActor::new(cfg, pid_file, started, exit_code).start();
        });
    }
    match system.run_with_code() {
        Ok(code) => code,
        Err(e) => {
            crate::io::terminal::warn(&format!("error: the actor system failed: {e}"));
            exit_code.get().max(exit::STOPPED)
        }
    }
}

fn fail_usage(message: &str) -> i32 {
    crate::io::terminal::warn(&format!("error: {message}"));
    exit::USAGE
}

/// Everything that would make the run fail later, checked before anything is spent.
fn preflight_checks(cfg: &RunConfig) -> Result<(), i32> {
    // The manifest must be readable and usable now (the loop re-reads it before every step).
    match manifest_file::read(&cfg.project_dir) {
        Ok(m) => {
            if let Err(e) = m.view() {
                return Err(fail_usage(&format!(
                    "{}: {e}",
                    manifest_file::manifest_path(&cfg.project_dir).display()
                )));
            }
        }
        Err(e) => return Err(fail_usage(&e.to_string())),
    }
    if let Some(problem) = agent::root_permission_problem(cfg.agent.skips_permissions()) {
        return Err(fail_usage(&problem));
    }
    let missing =
        agent::missing_commands(&cfg.project_dir, dirs::home_dir().as_deref(), PIV_COMMANDS);
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|m| format!(".claude/commands/{m}.md"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(fail_usage(&format!(
            "the project lacks the PIV slash commands piv sends: {list} (add them to the project's .claude/commands/ or ~/.claude/commands/); nothing was run"
        )));
    }
    ensure_runtime_files_ignored(&cfg.project_dir);
    match git::ensure_repo(&cfg.project_dir) {
        Ok(true) => tracing::info!("initialised a git repository for checkpoints"),
        Ok(false) => {}
        Err(e) => {
            return Err(fail_usage(&format!(
                "piv needs git for checkpoints and could not set up the repository: {e}"
            )))
        }
    }
    Ok(())
}

/// piv's runtime files must never be committed by `/commit`, nor deleted by a rollback's
/// `git clean -fd` (which keeps ignored files): `.agents/.gitignore` lists them.
fn ensure_runtime_files_ignored(project_dir: &std::path::Path) {
    const ENTRIES: &[&str] = &[
        "orchestrator.pid",
        "orchestrator.pid.corrupt-*",
        "orchestrator.lock",
        "orchestrator.signal",
        "orchestrator.log*",
        "orchestrator.state.json",
        "orchestrator.agent-pgid",
        "signals/",
        "telegram-outbox/",
        "prd-relay.json",
        ".*.tmp-*",
    ];
    let path = project_dir.join(".agents").join(".gitignore");
    if let Err(e) =
        crate::io::gitignore::ensure_lines(&path, "# piv runtime files (added by piv run)", ENTRIES)
    {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// Logs to `<project>/.agents/orchestrator.log` (size-capped, `RUST_LOG` filter, default
/// info) and to stderr (warnings only unless `RUST_LOG` says otherwise; the step lines go
/// to stdout). The returned guard flushes the file on drop: keep it alive.
fn init_logging(cfg: &RunConfig) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let path = cfg.project_dir.join(".agents").join("orchestrator.log");
    let file_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(stderr_filter);
    match log_file::CappedLogFile::open(&path, log_file::DEFAULT_CAP_BYTES, log_file::DEFAULT_KEEP)
    {
        Ok(file) => {
            let (writer, guard) = tracing_appender::non_blocking(file);
            let file_layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_filter(file_filter);
            let _ = tracing_subscriber::registry()
                .with(stderr_layer)
                .with(file_layer)
                .try_init();
            Some(guard)
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(stderr_layer).try_init();
            tracing::warn!("cannot open the log file {}: {e}", path.display());
            None
        }
    }
}
