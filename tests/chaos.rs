//! Chaos: three real `piv run` instances on one `$PIV_HOME` and one bot token (the Bot
//! API stand-in); the bot owner is SIGKILLed 20 times at random moments (seeded PRNG)
//! while chat commands and signals keep arriving, and a replacement instance is started
//! after each kill. Afterwards: every command was answered exactly once, the registry was
//! parseable and consistent at every read of a reader thread, no two pollers of this home
//! ever overlapped (the stand-in's 409s, leaving out the dangling poll of a killed owner,
//! which the stand-in cannot tell from a live one), and every signal sent to an instance
//! still alive was received.
//!
//! Each chat message is spaced ~1.1 s by the shared send budget, so the test's length is
//! mostly the chat's backlog draining (~70 messages).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use piv::core::control::ControlAction;
use piv::core::registry::Registry;
use piv::io::signal_queue;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use crate::support::pollers::current_poller;
use crate::support::*;

const TOKEN: &str = "246810:chaos-test-token-not-a-secret";
const CHAT: i64 = 31337;
const KILLS: usize = 20;
const SIGNALS: usize = 6;

struct Node {
    sb: Sandbox,
    prefix: String,
    child: Child,
    killed: bool,
}

impl Node {
    fn start(home_of: &Sandbox, prefix: &str, api: &str) -> Node {
        let sb = Sandbox::sharing_home(home_of, prefix, &ready_manifest(3));
        sb.scenario(Scenario::new().rule(Rule::new("", Action::Hang)));
        let out = std::fs::File::create(sb.root.path().join("run.stdout")).unwrap();
        let err = std::fs::File::create(sb.root.path().join("run.stderr")).unwrap();
        let child = sb
            .piv(&["run"])
            .env("TELEGRAM_API_URL", api)
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("TELEGRAM_CHAT_ID", CHAT.to_string())
            .env("TELEGRAM_PROJECT_PREFIX", prefix)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn piv run");
        Node {
            sb,
            prefix: prefix.to_string(),
            child,
            killed: false,
        }
    }

    /// SIGKILLs the instance and its agent's process group (once: a dead group's id may
    /// be reused by an unrelated process later).
    fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for call in self.sb.claude_calls() {
            if let Some(pgid) = call["pgid"].as_i64().filter(|p| *p > 1) {
                // SAFETY: killpg only sends a signal.
                unsafe {
                    libc::killpg(pgid as i32, libc::SIGKILL);
                }
            }
        }
    }

    /// The `from` of every signal this instance logged as received.
    fn received_from(&self) -> Vec<String> {
        self.sb
            .log()
            .lines()
            .filter(|l| l.contains("signal received"))
            .filter_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("from="))
                    .map(String::from)
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `registry.json` in a loop; returns (reads, problems).
fn registry_reader(home: &Path, stop: &AtomicBool) -> (usize, Vec<String>) {
    let mut reads = 0;
    let mut problems = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(text) = std::fs::read_to_string(home.join("registry.json")) {
            reads += 1;
            match Registry::parse(&text) {
                Ok(registry) => {
                    let projects: HashSet<_> =
                        registry.instances.iter().map(|i| &i.project_dir).collect();
                    let prefixes: HashSet<_> =
                        registry.instances.iter().map(|i| &i.prefix).collect();
                    if projects.len() != registry.instances.len()
                        || prefixes.len() != registry.instances.len()
                    {
                        problems.push(format!("duplicate entries: {text}"));
                    }
                }
                Err(e) => problems.push(format!("unparseable ({e}): {text}")),
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (reads, problems)
}

#[test]
fn owner_killed_20_times_loses_nothing() {
    let standin = BotApiStandIn::start(TOKEN);
    let api = standin.url().to_string();
    // Holds the shared PIV_HOME; never run itself.
    let base = Sandbox::new("base", &ready_manifest(1));
    let mut rng = Rng::new(0xc4a0_5eed);
    let mut next = 0;
    let mut spawn = |live: &mut Vec<Node>| {
        live.push(Node::start(&base, &format!("c{next:02}"), &api));
        next += 1;
    };
    let mut live: Vec<Node> = Vec::new();
    // Killed instances are kept (not dropped) until the end: their logs are evidence.
    let mut dead: Vec<Node> = Vec::new();
    for _ in 0..3 {
        spawn(&mut live);
    }

    let stop = AtomicBool::new(false);
    let commands_sent = Mutex::new(Vec::<String>::new());
    let mut killed: HashMap<u32, Instant> = HashMap::new();
    let mut signals: Vec<(String, String)> = Vec::new();
    let (reads, problems) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| registry_reader(&base.home, &stop));
        // Commands arrive on their own schedule, independent of the kills.
        scope.spawn(|| {
            let mut rng = Rng::new(0x00c0_ffee);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.range(500, 1800)));
                let command = format!("/k{n:03}");
                standin.inject_message(CHAT, &command);
                commands_sent.lock().unwrap().push(command);
                n += 1;
            }
        });
        for kill in 0..KILLS {
            std::thread::sleep(Duration::from_millis(rng.range(200, 1500)));
            if signals.len() < SIGNALS && kill % 3 == 1 {
                let target = &live[rng.range(0, live.len() as u64) as usize];
                let action = if signals.len().is_multiple_of(2) {
                    ControlAction::Pause
                } else {
                    ControlAction::Resume
                };
                let from = format!("chaos-s{}", signals.len());
                signal_queue::enqueue(&target.sb.project, action, &from).expect("enqueue");
                signals.push((target.prefix.clone(), from));
            }
            let live_pids: HashSet<u32> = live.iter().map(|n| n.child.id()).collect();
            let mut owner = None;
            assert!(
                wait_until(DEADLINE, || {
                    owner = current_poller(&standin.poll_starts(), &live_pids);
                    owner.is_some()
                }),
                "kill {kill}: no live instance polls"
            );
            let owner = owner.unwrap();
            let index = live.iter().position(|n| n.child.id() == owner).unwrap();
            let mut victim = live.remove(index);
            let at = Instant::now();
            victim.kill();
            killed.insert(owner, at);
            dead.push(victim);
            spawn(&mut live);
        }
        // A last command after the last kill, then let the injector go.
        stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let (reads, problems) = reader.join().unwrap();
        (reads, problems)
    });

    let commands = commands_sent.lock().unwrap().clone();
    assert!(commands.len() >= 10, "commands kept arriving: {commands:?}");
    let replies = |command: &str| {
        let needle = format!("Unknown command {command}.");
        standin
            .sent_messages()
            .into_iter()
            .filter(|m| m.text.contains(&needle))
            .collect::<Vec<_>>()
    };
    let all_answered = wait_until(Duration::from_secs(180), || {
        commands.iter().all(|c| !replies(c).is_empty())
    });
    // A late duplicate would arrive within a few budget slots.
    std::thread::sleep(Duration::from_secs(4));
    let lost: Vec<&String> = commands.iter().filter(|c| replies(c).is_empty()).collect();
    // The design is at-least-once: an owner killed after its reply went out but before
    // the update id reached bot-offset.json (one atomic write) is answered again by the
    // next owner. Such a repeat is counted, not failed; any other repeat is a bug.
    let mut repeated_after_kill = BTreeMap::new();
    let mut unexplained = BTreeMap::new();
    for command in &commands {
        let sent = replies(command);
        if sent.len() < 2 {
            continue;
        }
        let first = &sent[0];
        let explained = sent.len() == 2
            && first
                .pid
                .and_then(|pid| killed.get(&pid))
                .is_some_and(|killed_at| *killed_at >= first.at);
        let pids: Vec<_> = sent.iter().map(|m| m.pid).collect();
        if explained {
            repeated_after_kill.insert(command.clone(), pids);
        } else {
            unexplained.insert(command.clone(), pids);
        }
    }
    let overlaps: Vec<_> = standin
        .conflicts()
        .into_iter()
        .filter(|c| !c.terminated_pid.is_some_and(|p| killed.contains_key(&p)))
        .collect();
    let mut undelivered = Vec::new();
    for node in &live {
        for (_, from) in signals.iter().filter(|(p, _)| *p == node.prefix) {
            if !wait_until(DEADLINE, || node.received_from().contains(from)) {
                undelivered.push(from.clone());
            }
        }
    }
    eprintln!(
        "chaos: {} kills, {} commands ({} lost, {} repeated by the next owner after a kill \
         between reply and record, {} other repeats), {} signals, {} registry reads, \
         {} chat messages",
        killed.len(),
        commands.len(),
        lost.len(),
        repeated_after_kill.len(),
        unexplained.len(),
        signals.len(),
        reads,
        standin.sent_messages().len()
    );
    assert_eq!(killed.len(), KILLS, "every kill hit a distinct owner");
    assert!(all_answered && lost.is_empty(), "commands lost: {lost:?}");
    assert!(
        unexplained.is_empty(),
        "commands answered twice: {unexplained:?}"
    );
    assert!(problems.is_empty(), "registry problems: {problems:?}");
    assert!(reads > 100, "the reader did read: {reads}");
    assert!(
        overlaps.is_empty(),
        "two live pollers overlapped: {overlaps:?}"
    );
    assert!(
        undelivered.is_empty(),
        "signals to live instances lost: {undelivered:?}"
    );
    drop(live);
    drop(dead);
}
