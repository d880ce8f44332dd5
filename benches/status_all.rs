//! `/status all` at scale: 50 registered instances plus the real bot owner; time from the command injected into the Bot API stand-in to the reply the owner sends.
//!
//! The 50 instances are light processes (this bench binary re-executed as a worker) that
//! register through `RegistryStore::register` — holding their instance lock, so they are
//! live — and publish a manifest and `.agents/orchestrator.state.json`, like
//! `tests/status_signal.rs` does. The owner is a real `piv run` whose agent hangs
//! mid-step. The reply lists 51 instances and may be split into several messages; the
//! shared send budget spaces those ~1.1 s apart to a private chat, so the bench reports
//! both the first part (piv's own work: registry list, 51 probes, formatting, one send)
//! and the complete reply (the budget's share on top). Between two commands it waits out
//! the budget interval so one reply never queues behind the previous one.
//!
//! `cargo bench --bench status_all` (`PIV_BENCH_INSTANCES` default 50,
//! `PIV_BENCH_ROUNDS` default 30).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use piv::core::status::{RunState, RuntimeState};
use piv::io::registry_store::RegistryStore;
use piv::io::send_budget::PRIVATE_CHAT_INTERVAL;
use piv::io::state_file;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};
use piv_testkit::project::ready_manifest;

const ROLE_ENV: &str = "PIV_BENCH_ROLE";
const TOKEN: &str = "564738:bench-status-all-token";
const CHAT: i64 = 5151;
const STEP: Duration = Duration::from_secs(60);

/// The worker: register, publish state, hold the registration until stdin closes.
fn worker() {
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("worker needs {n}"));
    let home = PathBuf::from(var("PIV_BENCH_HOME"));
    let project = PathBuf::from(var("PIV_BENCH_PROJECT"));
    let prefix = var("PIV_BENCH_PREFIX");
    std::fs::create_dir_all(project.join(".agents")).unwrap();
    let manifest = project.join(".agents/manifest.yaml");
    std::fs::write(&manifest, ready_manifest(3)).unwrap();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let registration = RegistryStore::new(home)
        .register(
            &prefix,
            project.to_str().unwrap(),
            manifest.to_str().unwrap(),
            &now,
        )
        .expect("register");
    state_file::write(
        &project,
        &RuntimeState {
            pid: std::process::id(),
            prefix,
            state: RunState::Running,
            phase: Some(1),
            step: Some("plan".into()),
            cost_usd: 0.12,
            started_at: now.clone(),
            last_activity: now,
            why: None,
            step_started_at: None,
            pause_requested_at: None,
            pause_requested_by: None,
        },
    )
    .unwrap();
    println!("REGISTERED");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    registration.deregister().unwrap();
}

fn spawn_worker(home: &Path, root: &Path, prefix: &str) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, "instance")
        .env("PIV_BENCH_HOME", home)
        .env("PIV_BENCH_PROJECT", root.join(prefix))
        .env("PIV_BENCH_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "REGISTERED",
        "worker {prefix} did not register"
    );
    child
}

fn main() {
    if std::env::var(ROLE_ENV).is_ok() {
        worker();
        return;
    }
    let instances: usize = env_or("PIV_BENCH_INSTANCES", 50);
    let rounds: usize = env_or("PIV_BENCH_ROUNDS", 30);

    let root = tempfile::tempdir().unwrap();
    let standin = BotApiStandIn::start(TOKEN);
    let env = Env::new(
        root.path(),
        Scenario::new().rule(Rule::new("", Action::Hang)),
        Some((&standin, TOKEN, CHAT)),
    );
    let home = env.home.clone();

    let mut workers: Vec<Child> = (0..instances)
        .map(|i| spawn_worker(&home, root.path(), &format!("inst{i:02}")))
        .collect();
    let owner = Project::new(root.path(), "owner", 3);
    let mut child = env.spawn_run(&owner);
    let owner_pid = child.id();
    wait_for(STEP, "the owner's first getUpdates", || {
        standin
            .poll_starts()
            .iter()
            .any(|p| p.pid == Some(owner_pid))
    });
    // Let the start-up messages (phase started, …) go out first.
    wait_for(STEP, "the owner's agent to start", || {
        std::fs::read_to_string(&owner.claude_log).is_ok_and(|t| t.contains("hang"))
    });
    std::thread::sleep(PRIVATE_CHAT_INTERVAL * 3);

    let prefixes: Vec<String> = std::iter::once("owner".to_string())
        .chain((0..instances).map(|i| format!("inst{i:02}")))
        .collect();
    let mut first_ms = Vec::new();
    let mut complete_ms = Vec::new();
    let mut parts_seen = Vec::new();
    for _ in 0..rounds {
        let before = standin.sent_messages().len();
        let injected = Instant::now();
        standin.inject_message(CHAT, "/status all");
        let mut parts = Vec::new();
        wait_for(STEP, "every instance in the /status all reply", || {
            parts = standin
                .sent_messages()
                .into_iter()
                .skip(before)
                .filter(|m| m.pid == Some(owner_pid))
                .collect();
            let text: String = parts.iter().map(|m| m.text.as_str()).collect();
            text.contains("All Instances") && prefixes.iter().all(|p| text.contains(p.as_str()))
        });
        first_ms.push((parts[0].at - injected).as_secs_f64() * 1000.0);
        complete_ms.push((parts.last().unwrap().at - injected).as_secs_f64() * 1000.0);
        parts_seen.push(parts.len());
        std::thread::sleep(PRIVATE_CHAT_INTERVAL + Duration::from_millis(200));
    }

    sigkill(owner_pid);
    let _ = child.wait();
    owner.kill_agents();
    for w in workers.iter_mut() {
        drop(w.stdin.take());
    }
    for mut w in workers {
        let _ = w.wait();
    }
    standin.stop();

    figure("status_all_instances", instances + 1, "instances");
    figure("status_all_rounds", rounds, "commands");
    figure(
        "status_all_reply_parts",
        parts_seen.iter().max().unwrap(),
        "messages",
    );
    figure(
        "status_all_first_part_p50",
        format!("{:.1}", percentile(&first_ms, 50.0)),
        "ms",
    );
    figure(
        "status_all_first_part_p99",
        format!("{:.1}", percentile(&first_ms, 99.0)),
        "ms",
    );
    figure(
        "status_all_complete_p50",
        format!("{:.1}", percentile(&complete_ms, 50.0)),
        "ms (all parts; the send budget spaces parts 1.1 s apart)",
    );
    figure(
        "status_all_complete_p99",
        format!("{:.1}", percentile(&complete_ms, 99.0)),
        "ms (all parts; the send budget spaces parts 1.1 s apart)",
    );
}
