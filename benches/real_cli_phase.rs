//! Real-CLI phase bench: the time one phase takes through the real Claude Code CLI against the local Messages API stand-in versus through `piv-fake-claude`, and piv's own overhead per session.
//!
//! Each round runs `piv run` on a fresh 1-phase project (7 sessions: /prime + /plan-feature,
//! /prime + /execute, /prime + /validate-implementation, /commit) twice: once with the
//! real CLI (pinned in `.ci/claude-code.version`, found like the tests find it) talking to
//! the stand-in of `tests/support/messages_api/`, once with `piv-fake-claude`. The agent
//! binary is wrapped by this bench re-executed as a timing shim (`PIV_BENCH_ROLE=shim`),
//! which records each session process's spawn-to-exit wall time. From the manifest's
//! `sessions` (the CLI's `duration_ms`):
//!
//! - piv overhead per session = (phase wall − Σ agent process wall) / sessions: what piv
//!   itself adds (start-up, manifest reads and writes, git checkpoint, spawning);
//! - CLI start-up per session = (Σ agent process wall − Σ `duration_ms`) / sessions: what
//!   the CLI spends outside the time it reports.
//!
//! Prints `name value unit` lines (medians over the rounds). `cargo bench --bench
//! real_cli_phase`; `PIV_BENCH_ROUNDS` (default 5). Without the real CLI it says so and
//! prints nothing else.

#[path = "../tests/support/claude_cli.rs"]
mod claude_cli;
mod common;
#[path = "../tests/support/messages_api/mod.rs"]
mod messages_api;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::{Env, Project};
use piv_testkit::fake_claude::Scenario;

const ROLE_ENV: &str = "PIV_BENCH_ROLE";
const SHIM_TARGET_ENV: &str = "PIV_BENCH_SHIM_TARGET";
const SHIM_LOG_ENV: &str = "PIV_BENCH_SHIM_LOG";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// The timing shim: runs the real agent binary with our arguments and stdio, appends
/// `start_ns end_ns` to the log, exits with its status.
fn shim() -> ! {
    let target = std::env::var_os(SHIM_TARGET_ENV).expect("shim target");
    let log = std::env::var_os(SHIM_LOG_ENV).expect("shim log");
    let start = now_ns();
    let status = Command::new(target)
        .args(std::env::args_os().skip(1))
        .env_remove(ROLE_ENV)
        .status()
        .expect("run the agent");
    let end = now_ns();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{start} {end}");
    }
    std::process::exit(status.code().unwrap_or(1));
}

struct Round {
    wall_ms: f64,
    sessions: usize,
    agent_wall_ms: f64,
    duration_ms: f64,
}

/// One `piv run` of a fresh 1-phase project with `agent` (wrapped by the shim).
fn one_phase(root: &Path, name: &str, agent: &Path, extra: &[(String, String)]) -> Round {
    let env = Env::new(root, Scenario::new(), None);
    let project = Project::new(root, name, 1);
    messages_api::write_commands(&project.dir, piv_testkit::project::COMMAND_FILES).unwrap();
    piv_testkit::project::git(&project.dir, &["add", "-A"]).unwrap();
    piv_testkit::project::git(&project.dir, &["commit", "-qm", "commands"]).unwrap();
    let shim_log = root.join(format!("{name}.shim.log"));
    let mut cmd = env.command(&project, &["run"]);
    cmd.env("PIV_CLAUDE_BIN", std::env::current_exe().unwrap())
        .env(ROLE_ENV, "shim")
        .env(SHIM_TARGET_ENV, agent)
        .env(SHIM_LOG_ENV, &shim_log)
        .env("PIV_REGISTRY_DISABLED", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra {
        if k != "PIV_CLAUDE_BIN" {
            cmd.env(k, v);
        }
    }
    let started = Instant::now();
    let status = cmd.status().expect("piv run");
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(
        status.success(),
        "piv run failed in {}",
        project.dir.display()
    );
    let manifest: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(project.dir.join(".agents/manifest.yaml")).unwrap(),
    )
    .unwrap();
    let sessions = manifest["sessions"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let duration_ms = sessions
        .iter()
        .filter_map(|s| s["duration_ms"].as_u64())
        .sum::<u64>() as f64;
    let agent_wall_ms = std::fs::read_to_string(&shim_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((b.parse::<u128>().ok()? - a.parse::<u128>().ok()?) as f64 / 1e6)
        })
        .sum();
    Round {
        wall_ms,
        sessions: sessions.len(),
        agent_wall_ms,
        duration_ms,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn report(label: &str, rounds: &[Round]) {
    let n = rounds[0].sessions as f64;
    let pick = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    println!("{label}_sessions {} sessions", rounds[0].sessions);
    println!("{label}_phase_wall {:.0} ms", pick(&|r| r.wall_ms));
    println!(
        "{label}_agent_process_wall_per_session {:.0} ms",
        pick(&|r| r.agent_wall_ms / n)
    );
    println!(
        "{label}_reported_duration_per_session {:.0} ms",
        pick(&|r| r.duration_ms / n)
    );
    println!(
        "{label}_agent_startup_per_session {:.0} ms (process wall - duration_ms)",
        pick(&|r| (r.agent_wall_ms - r.duration_ms) / n)
    );
    println!(
        "{label}_piv_overhead_per_session {:.0} ms (phase wall - agent process wall)",
        pick(&|r| (r.wall_ms - r.agent_wall_ms) / n)
    );
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("shim") {
        shim();
    }
    let Some(real) = claude_cli::find_or_skip("real_cli_phase bench") else {
        return;
    };
    let rounds: usize = std::env::var("PIV_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (_, fake) = common::binaries();
    let mut real_rounds = Vec::new();
    let mut fake_rounds = Vec::new();
    for i in 0..rounds {
        let root = tempfile::tempdir().unwrap();
        let api = messages_api::MessagesApi::start(None, None);
        let env = claude_cli::env(&real, &api.base_url());
        let mut extra = env.clone();
        extra.push(("CLAUDE_CODE_MAX_RETRIES".into(), "1".into()));
        real_rounds.push(one_phase(root.path(), &format!("real{i}"), &real, &extra));
        fake_rounds.push(one_phase(root.path(), &format!("fake{i}"), &fake, &[]));
    }
    println!("real_cli_version {} -", claude_cli::pinned_version());
    println!("rounds {rounds} rounds");
    report("real_cli", &real_rounds);
    report("fake_claude", &fake_rounds);
    println!(
        "phase_wall_ratio {:.1} x (real CLI / piv-fake-claude)",
        median(real_rounds.iter().map(|r| r.wall_ms).collect())
            / median(fake_rounds.iter().map(|r| r.wall_ms).collect())
    );
}
