//! Takeover bench: how fast a standby `piv run` starts polling Telegram after the bot owner is SIGKILLed, and whether a command sent meanwhile is answered exactly once.
//!
//! Three real `piv run` instances share one `$PIV_HOME` and one bot token against the Bot
//! API stand-in; their agents hang (scripted claude `Hang`), so every instance stays up
//! mid-step. Each round SIGKILLs the current owner (the last poller), injects an unknown
//! command `/tNNN` at once, measures kill → the first `getUpdates` of another live
//! instance (the stand-in's `poll_starts`, by pid), starts a replacement instance on a new
//! project, and waits for the command's reply. At the end every `/tNNN` must have exactly
//! one reply.
//!
//! Naïve comparison, in the same run: a watcher thread that checks every 2 s whether the
//! owner is still alive and would claim the bot when it is not (a registry-polling
//! claim). Its figure is the detection delay only — the claim and the first poll would
//! come on top — so the ratio flatters the naïve approach.
//!
//! `cargo bench --bench takeover` (`PIV_BENCH_KILLS`, default 50).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pollers::current_poller;
use common::*;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};
use piv_testkit::rng::Rng;

const TOKEN: &str = "918273:bench-takeover-token";
const CHAT: i64 = 4242;
const STEP: Duration = Duration::from_secs(60);
const NAIVE_POLL: Duration = Duration::from_secs(2);

struct Live {
    project: Project,
    child: Child,
}

/// One kill, as the naïve watcher sees it.
struct NaiveKill {
    pid: u32,
    at: Instant,
    detected: Option<Duration>,
}

fn main() {
    let kills: usize = common::env_or("PIV_BENCH_KILLS", 50);
    let root = tempfile::tempdir().unwrap();
    let standin = BotApiStandIn::start(TOKEN);
    let mut env = Env::new(
        root.path(),
        Scenario::new().rule(Rule::new("", Action::Hang)),
        Some((&standin, TOKEN, CHAT)),
    );
    env.extra = vec![("PIV_SIGNAL_POLL_MS".into(), "2000".into())];

    let mut next_project = 0;
    let mut start = |live: &mut Vec<Live>| {
        let project = Project::new(root.path(), &format!("p{next_project:03}"), 3);
        next_project += 1;
        let child = env.spawn_run(&project);
        // Ready = registered and waiting on (or holding) the owner lock.
        wait_for(STEP, "a new instance to reach the owner lock", || {
            let log = project.log();
            log.contains("waiting to become bot owner") || log.contains("bot owner now")
        });
        live.push(Live { project, child });
    };
    let mut live = Vec::new();
    for _ in 0..3 {
        start(&mut live);
    }

    let naive: Arc<Mutex<Vec<NaiveKill>>> = Arc::default();
    let naive_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let naive = naive.clone();
        let done = naive_done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(NAIVE_POLL);
                let now = Instant::now();
                for k in naive.lock().unwrap().iter_mut() {
                    if k.detected.is_none() && !alive(k.pid) {
                        k.detected = Some(now - k.at);
                    }
                }
            }
        })
    };

    // Wait for the previous command's update id in the bot's offset.json before the next kill
    // (default), or kill as soon as its reply is seen (`PIV_BENCH_KILL_AFTER_RECORD=0`,
    // which lands kills in the window between a reply and its record).
    let after_record = std::env::var("PIV_BENCH_KILL_AFTER_RECORD").map_or(true, |v| v != "0");
    let offset_path = piv::io::home::bot_dir(
        &env.home,
        piv::core::bot_chats::bot_id_of(TOKEN).expect("a bot id"),
    )
    .join(piv::io::bot_offset::OFFSET_FILE);
    let recorded = || -> i64 {
        std::fs::read(&offset_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["lastUpdateId"].as_i64())
            .unwrap_or(0)
    };
    let mut last_update = None;
    let mut takeover_ms = Vec::new();
    let mut death_ms = Vec::new();
    let mut exit_to_poll_ms = Vec::new();
    let mut reply_ms = Vec::new();
    let mut killed: HashSet<u32> = HashSet::new();
    let mut rng = Rng::new(0x7a6e_0001);
    for round in 0..kills {
        if let (true, Some(id)) = (after_record, last_update) {
            wait_for(STEP, "the last command recorded as handled", || {
                recorded() >= id
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
        let inject_at = Instant::now();
        last_update = Some(standin.inject_message(CHAT, &command));
        let _ = victim.child.wait();
        let exited_at = Instant::now();
        death_ms.push((exited_at - kill_at).as_secs_f64() * 1000.0);
        killed.insert(owner);
        naive.lock().unwrap().push(NaiveKill {
            pid: owner,
            at: kill_at,
            detected: None,
        });

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
        exit_to_poll_ms.push(
            first
                .unwrap()
                .saturating_duration_since(exited_at)
                .as_secs_f64()
                * 1000.0,
        );

        victim.project.kill_agents();
        start(&mut live);

        let needle = format!("Unknown command {command}.");
        if let Some(reply) = standin.wait_for_sent(|m| m.text.contains(&needle), STEP) {
            reply_ms.push((reply.at - inject_at).as_secs_f64() * 1000.0);
        }
        // Not in lockstep with the naïve watcher's 2 s tick.
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
    }

    // Late duplicates would show up here.
    std::thread::sleep(Duration::from_secs(5));
    naive_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();

    let mut replies: BTreeMap<usize, usize> = (0..kills).map(|r| (r, 0)).collect();
    for m in standin.sent_messages() {
        for (round, count) in replies.iter_mut() {
            if m.text.contains(&format!("Unknown command /t{round:03}.")) {
                *count += 1;
            }
        }
    }
    let answered = replies.values().filter(|c| **c >= 1).count();
    let lost = replies.values().filter(|c| **c == 0).count();
    let twice = replies.values().filter(|c| **c > 1).count();
    let live_conflicts = standin
        .conflicts()
        .iter()
        .filter(|c| !c.terminated_pid.is_some_and(|p| killed.contains(&p)))
        .count();

    for mut l in live {
        sigkill(l.child.id());
        let _ = l.child.wait();
        l.project.kill_agents();
    }
    standin.stop();

    let naive_ms: Vec<f64> = naive
        .lock()
        .unwrap()
        .iter()
        .filter_map(|k| k.detected)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();

    figure("takeover_kills", kills, "kills");
    figure(
        "takeover_p50",
        format!("{:.1}", percentile(&takeover_ms, 50.0)),
        "ms",
    );
    figure(
        "takeover_p99",
        format!("{:.1}", percentile(&takeover_ms, 99.0)),
        "ms",
    );
    figure("takeover_max", format!("{:.1}", max(&takeover_ms)), "ms");
    figure(
        "takeover_p90",
        format!("{:.1}", percentile(&takeover_ms, 90.0)),
        "ms",
    );
    figure(
        "takeover_over_100ms",
        takeover_ms.iter().filter(|t| **t > 100.0).count(),
        "kills",
    );
    figure(
        "takeover_kill_to_exit_p50",
        format!("{:.1}", percentile(&death_ms, 50.0)),
        "ms (SIGKILL → the killed owner reaped)",
    );
    figure(
        "takeover_kill_to_exit_p99",
        format!("{:.1}", percentile(&death_ms, 99.0)),
        "ms (SIGKILL → the killed owner reaped)",
    );
    figure(
        "takeover_exit_to_poll_p50",
        format!("{:.1}", percentile(&exit_to_poll_ms, 50.0)),
        "ms (owner reaped → new owner's getUpdates)",
    );
    figure(
        "takeover_exit_to_poll_p99",
        format!("{:.1}", percentile(&exit_to_poll_ms, 99.0)),
        "ms (owner reaped → new owner's getUpdates)",
    );
    figure("takeover_kill_after_record", after_record, "bool");
    figure("takeover_commands_answered", answered, "commands");
    figure("takeover_commands_lost", lost, "commands");
    figure("takeover_commands_answered_twice", twice, "commands");
    figure(
        "takeover_conflicts_between_live_pollers",
        live_conflicts,
        "409s",
    );
    if !reply_ms.is_empty() {
        figure(
            "takeover_reply_p50",
            format!("{:.0}", percentile(&reply_ms, 50.0)),
            "ms (inject → reply, includes the shared send budget)",
        );
        figure(
            "takeover_reply_p99",
            format!("{:.0}", percentile(&reply_ms, 99.0)),
            "ms (inject → reply, includes the shared send budget)",
        );
    }
    figure(
        "takeover_naive_detect_p50",
        format!("{:.1}", percentile(&naive_ms, 50.0)),
        "ms (2 s liveness poll, detection only)",
    );
    figure(
        "takeover_naive_detect_p99",
        format!("{:.1}", percentile(&naive_ms, 99.0)),
        "ms (2 s liveness poll, detection only)",
    );
    figure(
        "takeover_p50_ratio",
        format!(
            "{:.1}",
            percentile(&naive_ms, 50.0) / percentile(&takeover_ms, 50.0)
        ),
        "x (naive detection / piv takeover)",
    );
    figure(
        "takeover_p99_ratio",
        format!(
            "{:.1}",
            percentile(&naive_ms, 99.0) / percentile(&takeover_ms, 99.0)
        ),
        "x (naive detection / piv takeover)",
    );
}
