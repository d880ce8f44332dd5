//! Cross-machine takeover bench: how fast another machine starts polling Telegram after
//! the bot owner is SIGKILLed, with coordination on a real 3-node NATS JetStream cluster,
//! against the lease TTL — side by side, in the same run, with the single-machine kernel
//! lock (the same three instances sharing one `$PIV_HOME`, no NATS).
//!
//! "Machines" are `piv run`s with their own `$PIV_HOME` and project tree; their agents
//! hang (scripted claude `Hang`), so each stays up mid-step. Each round SIGKILLs the
//! current owner (the last poller), injects an unknown command `/tNNN` at once, measures
//! kill → the first `getUpdates` of another live instance (the stand-in's `poll_starts`,
//! by pid), starts a replacement on the killed machine, and waits for the reply. At the
//! end every command must have exactly one reply.
//!
//! `cargo bench --bench nats_takeover` (`PIV_BENCH_KILLS`, default 20;
//! `PIV_BENCH_TTL_SECS`, default 5, piv's default). Needs nats-server (see README).

mod common;

#[path = "../tests/support/nats_cluster.rs"]
mod nats_cluster;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use common::pollers::current_poller;
use common::*;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

const CHAT: i64 = 4243;
const STEP: Duration = Duration::from_secs(120);

struct Live {
    machine: usize,
    project: Project,
    child: Child,
}

/// What one series of kills measured.
struct Series {
    takeover_ms: Vec<f64>,
    answered: usize,
    lost: usize,
    twice: usize,
}

/// `kills` rounds over `machines` (one `Env` each; the same home for the kernel-lock
/// series), with `ready` telling from a project's log that an instance stands by.
fn series(
    root: &Path,
    standin: &BotApiStandIn,
    machines: &[Env],
    kills: usize,
    ready: fn(&str) -> bool,
) -> Series {
    let mut next_project = 0;
    let mut start = |machine: usize, live: &mut Vec<Live>| {
        let project = Project::new(
            &root.join(format!("m{machine}")),
            &format!("p{next_project:03}"),
            3,
        );
        next_project += 1;
        let child = machines[machine].spawn_run(&project);
        wait_for(STEP, "a new instance to stand by or poll", || {
            ready(&project.log())
        });
        live.push(Live {
            machine,
            project,
            child,
        });
    };
    let mut live = Vec::new();
    for machine in 0..3 {
        std::fs::create_dir_all(root.join(format!("m{machine}"))).unwrap();
        start(machine, &mut live);
    }
    let first_round_at = Instant::now();
    let mut takeover_ms = Vec::new();
    let mut last_reply_seen = None;
    for round in 0..kills {
        if let Some(seen) = last_reply_seen {
            // The owner has recorded the last command (its next poll asks past it).
            let live_pids: HashSet<u32> = live.iter().map(|l| l.child.id()).collect();
            wait_for(STEP, "the last command recorded", || {
                standin.poll_starts().iter().any(|p| {
                    p.at > seen
                        && p.pid.is_some_and(|pid| live_pids.contains(&pid))
                        && p.offset.is_some()
                })
            });
        }
        let live_pids: HashSet<u32> = live.iter().map(|l| l.child.id()).collect();
        let mut owner = None;
        wait_for(STEP, "an owner among the live instances", || {
            owner = current_poller(&standin.poll_starts(), &live_pids);
            owner.is_some()
        });
        let owner = owner.unwrap();
        let index = live.iter().position(|l| l.child.id() == owner).unwrap();
        let mut victim = live.remove(index);
        let kill_at = Instant::now();
        sigkill(owner);
        let command = format!("/t{round:03}");
        standin.inject_message(CHAT, &command);
        let _ = victim.child.wait();
        let standby: HashSet<u32> = live.iter().map(|l| l.child.id()).collect();
        let mut first = None;
        wait_for(STEP, "a standby's first getUpdates", || {
            first = standin
                .poll_starts()
                .iter()
                .find(|p| p.at > kill_at && p.pid.is_some_and(|pid| standby.contains(&pid)))
                .map(|p| p.at);
            first.is_some()
        });
        takeover_ms.push((first.unwrap() - kill_at).as_secs_f64() * 1000.0);
        victim.project.kill_agents();
        start(victim.machine, &mut live);
        let needle = format!("Unknown command {command}.");
        last_reply_seen = standin
            .wait_for_sent(|m| m.text.contains(&needle), STEP)
            .map(|m| m.at);
    }
    // Late duplicates would show up here.
    std::thread::sleep(Duration::from_secs(3));
    let mut replies: BTreeMap<usize, usize> = (0..kills).map(|r| (r, 0)).collect();
    for m in standin.sent_messages() {
        if m.at < first_round_at {
            continue;
        }
        for (round, count) in replies.iter_mut() {
            if m.text.contains(&format!("Unknown command /t{round:03}.")) {
                *count += 1;
            }
        }
    }
    for mut l in live {
        sigkill(l.child.id());
        let _ = l.child.wait();
        l.project.kill_agents();
    }
    Series {
        takeover_ms,
        answered: replies.values().filter(|c| **c >= 1).count(),
        lost: replies.values().filter(|c| **c == 0).count(),
        twice: replies.values().filter(|c| **c > 1).count(),
    }
}

fn report(name: &str, s: &Series) {
    figure(
        &format!("{name}_p50"),
        format!("{:.1}", percentile(&s.takeover_ms, 50.0)),
        "ms",
    );
    figure(
        &format!("{name}_p99"),
        format!("{:.1}", percentile(&s.takeover_ms, 99.0)),
        "ms",
    );
    figure(
        &format!("{name}_max"),
        format!("{:.1}", max(&s.takeover_ms)),
        "ms",
    );
    figure(&format!("{name}_commands_answered"), s.answered, "commands");
    figure(&format!("{name}_commands_lost"), s.lost, "commands");
    figure(
        &format!("{name}_commands_answered_twice"),
        s.twice,
        "commands",
    );
}

fn main() {
    let kills: usize = common::env_or("PIV_BENCH_KILLS", 20);
    let ttl: u64 = common::env_or("PIV_BENCH_TTL_SECS", 5);
    let Some(cluster) = nats_cluster::NatsCluster::start_or_skip("bench nats_takeover") else {
        return;
    };
    let scenario = || Scenario::new().rule(Rule::new("", Action::Hang));

    // Across machines: three homes, one cluster.
    let token = "918274:bench-nats-takeover-token";
    let standin = BotApiStandIn::start(token);
    let root = tempfile::tempdir().unwrap();
    let machines: Vec<Env> = (0..3)
        .map(|m| {
            let dir = root.path().join(format!("m{m}"));
            std::fs::create_dir_all(&dir).unwrap();
            let mut env = Env::new(&dir, scenario(), Some((&standin, token, CHAT)));
            env.extra = vec![
                ("PIV_SIGNAL_POLL_MS".into(), "2000".into()),
                ("PIV_COORDINATION".into(), cluster.urls()),
                ("PIV_LEASE_TTL_SECS".into(), ttl.to_string()),
                ("RUST_LOG".into(), "info,async_nats=warn".into()),
            ];
            env
        })
        .collect();
    let nats = series(root.path(), &standin, &machines, kills, |log| {
        log.contains("standing by") || log.contains("won the poller lease")
    });
    standin.stop();

    // One machine: the kernel lock, the same three instances on one home.
    let token = "918275:bench-kernel-lock-token";
    let standin = BotApiStandIn::start(token);
    let root = tempfile::tempdir().unwrap();
    let mut env = Env::new(root.path(), scenario(), Some((&standin, token, CHAT)));
    env.extra = vec![("PIV_SIGNAL_POLL_MS".into(), "2000".into())];
    let shared: Vec<Env> = (0..3)
        .map(|_| Env {
            piv: env.piv.clone(),
            fake_claude: env.fake_claude.clone(),
            home: env.home.clone(),
            script: env.script.clone(),
            state_dir: env.state_dir.clone(),
            telegram: env.telegram.clone(),
            extra: env.extra.clone(),
        })
        .collect();
    let kernel = series(root.path(), &standin, &shared, kills, |log| {
        log.contains("waiting to become bot owner") || log.contains("bot owner now")
    });
    standin.stop();

    figure("nats_takeover_kills", kills, "kills");
    figure("nats_takeover_ttl", ttl * 1000, "ms");
    report("nats_takeover", &nats);
    report("kernel_lock_takeover", &kernel);
    figure(
        "nats_takeover_p50_over_ttl",
        format!(
            "{:.2}",
            percentile(&nats.takeover_ms, 50.0) / (ttl as f64 * 1000.0)
        ),
        "x TTL",
    );
}
