//! Chaos: three real `piv run` instances on one `$PIV_HOME` and one bot token (the Bot
//! API stand-in); the bot owner is SIGKILLed 20 times at random moments (seeded PRNG)
//! while chat commands and signals keep arriving, and a replacement instance is started
//! after each kill. Afterwards:
//!
//! - **Commands**: every command sent was checked; "lost" (never answered) is counted
//!   apart from "answered twice". A repeat by the next owner after a kill that fell
//!   between the reply and the offset's record is the at-least-once design and counted on
//!   its own; any other repeat fails.
//! - **Pollers, by time**: the stand-in records every `getUpdates` from arrival to answer
//!   with the caller's pid. A killed caller's poll is cut at the moment the test sent the
//!   SIGKILL (the stand-in cannot see a dead socket; the process could not poll after
//!   it). No two callers' spans may overlap in time.
//! - **Signals**: every signal sent to every node is checked, including nodes killed
//!   later. The rule: a signal counts as delivered if its node logged it as received
//!   (the log is written by the live process, so that happened before any kill), or, for
//!   a node killed since, if the file is still in that node's queue on disk (not taken,
//!   not lost: the watcher had not run yet). A signal sent to the owner about to be
//!   killed is given 300 ms to be taken; if it was, the kill waits for its log line. A
//!   node killed while it took the file loses that signal with the rest of its memory
//!   (the queue is at most once across a crash): a `.claimed-` file left behind, or a
//!   file seen queued at the last look before the kill and gone after it without a log
//!   line, is reported as taken at the kill, not failed. Anything else is lost and
//!   fails; received twice is counted apart and fails.
//! - The registry was parseable and consistent at every read of a reader thread.
//!
//! Each chat message is spaced ~1.1 s by the shared send budget, so the test's length is
//! mostly the chat's backlog draining (~80 messages).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use piv::core::control::ControlAction;
use piv::core::registry::Registry;
use piv::io::signal_queue;
use piv_testkit::bot_api::{BotApiStandIn, PollSpan};
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use crate::support::pollers::current_poller;
use crate::support::*;

const TOKEN: &str = "246810:chaos-test-token-not-a-secret";
const CHAT: i64 = 31337;
const KILLS: usize = 20;
/// One signal at every odd kill: alternately to the owner about to be killed and to
/// another live node.
const SIGNALS: usize = KILLS / 2;
/// At least this many commands must have been sent and checked.
const MIN_COMMANDS: usize = 10;

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
    let mut signals: Vec<SentSignal> = Vec::new();
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
            if kill % 2 == 1 {
                // To the owner about to be killed, or to another live node.
                let target = if kill % 4 == 1 || live.len() == 1 {
                    &live[index]
                } else {
                    let others: Vec<&Node> =
                        live.iter().filter(|n| n.child.id() != owner).collect();
                    others[rng.range(0, others.len() as u64) as usize]
                };
                let action = if signals.len().is_multiple_of(2) {
                    ControlAction::Pause
                } else {
                    ControlAction::Resume
                };
                let from = format!("chaos-s{:02}", signals.len());
                let file =
                    signal_queue::enqueue(&target.sb.project, action, &from).expect("enqueue");
                let mut on_disk_at_kill = false;
                if target.child.id() == owner {
                    // Give it a moment to take the signal; once taken, its log line
                    // follows while it lives. Still queued after that: killed with it
                    // on disk (the watcher may take it in the instant of the kill).
                    if wait_until(TAKE_WINDOW, || !file.exists()) {
                        wait_until(DEADLINE, || live[index].received_from().contains(&from));
                    } else {
                        on_disk_at_kill = true;
                    }
                }
                signals.push(SentSignal {
                    prefix: target.prefix.clone(),
                    from,
                    file,
                    on_disk_at_kill,
                });
            }
            let mut victim = live.remove(index);
            // Before the SIGKILL: the victim polls no more after this instant.
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
    let mut commands_checked = 0;
    let mut lost = Vec::new();
    // The design is at-least-once: an owner killed after its reply went out but before
    // the update id reached bot-offset.json (one atomic write) is answered again by the
    // next owner. Such a repeat is counted, not failed; any other repeat is a bug.
    let mut repeated_after_kill = BTreeMap::new();
    let mut answered_twice = BTreeMap::new();
    for command in &commands {
        commands_checked += 1;
        let sent = replies(command);
        if sent.is_empty() {
            lost.push(command.clone());
            continue;
        }
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
            answered_twice.insert(command.clone(), pids);
        }
    }

    // Pollers compared by time.
    let spans = standin.poll_spans();
    let overlaps = overlapping_polls(&spans, &killed);
    let pollers: HashSet<u32> = spans.iter().filter_map(|s| s.pid).collect();

    // Every signal to every node.
    let nodes: HashMap<&str, &Node> = live
        .iter()
        .chain(dead.iter())
        .map(|n| (n.prefix.as_str(), n))
        .collect();
    let mut signal_outcomes: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for signal in &signals {
        let node = nodes[signal.prefix.as_str()];
        let received = |n: &Node| {
            n.received_from()
                .iter()
                .filter(|f| **f == signal.from)
                .count()
        };
        let outcome = if node.killed {
            match received(node) {
                1 => "received before the kill",
                0 if signal.file.exists() => "still queued on disk at the kill",
                0 if claimed_file(&signal.file).exists() => "claimed at the kill",
                0 if signal.on_disk_at_kill => "taken in the instant of the kill",
                0 => "lost",
                _ => "received twice",
            }
        } else {
            wait_until(DEADLINE, || received(node) > 0);
            match received(node) {
                1 => "received by a live node",
                0 => "lost",
                _ => "received twice",
            }
        };
        signal_outcomes
            .entry(outcome)
            .or_default()
            .push(format!("{}→{}", signal.from, signal.prefix));
    }
    let signals_to_killed = signals
        .iter()
        .filter(|s| nodes[s.prefix.as_str()].killed)
        .count();

    eprintln!(
        "chaos: {} kills; {} commands checked ({} lost, {} answered twice, {} repeated by \
         the next owner after a kill between reply and record); {} polls started, {} \
         answered ({} with 409) by {} pollers, {} overlapping; {} signals checked ({} to nodes killed later): {:?}; {} registry \
         reads; {} chat messages",
        killed.len(),
        commands_checked,
        lost.len(),
        answered_twice.len(),
        repeated_after_kill.len(),
        standin.poll_starts().len(),
        spans.len(),
        spans.iter().filter(|s| s.status == 409).count(),
        pollers.len(),
        overlaps.len(),
        signals.len(),
        signals_to_killed,
        signal_outcomes
            .iter()
            .map(|(k, v)| (*k, v.len()))
            .collect::<BTreeMap<_, _>>(),
        reads,
        standin.sent_messages().len()
    );
    assert_eq!(killed.len(), KILLS, "every kill hit a distinct owner");
    // Enough was checked for the verdicts below to mean something.
    assert!(
        commands_checked >= MIN_COMMANDS,
        "commands checked: {commands_checked} < {MIN_COMMANDS}"
    );
    assert_eq!(signals.len(), SIGNALS, "signals checked");
    assert!(
        signals_to_killed >= SIGNALS / 2,
        "signals to nodes killed later: {signals_to_killed}"
    );
    assert!(
        pollers.len() > KILLS,
        "every owner polled (and was seen to): {} pollers",
        pollers.len()
    );
    assert!(all_answered && lost.is_empty(), "commands lost: {lost:?}");
    assert!(
        answered_twice.is_empty(),
        "commands answered twice: {answered_twice:?}"
    );
    assert!(problems.is_empty(), "registry problems: {problems:?}");
    assert!(reads > 100, "the reader did read: {reads}");
    assert!(
        overlaps.is_empty(),
        "two pollers overlapped in time: {overlaps:#?}"
    );
    assert!(
        !signal_outcomes.contains_key("lost"),
        "signals lost: {signal_outcomes:?}"
    );
    assert!(
        !signal_outcomes.contains_key("received twice"),
        "signals received twice: {signal_outcomes:?}"
    );
    drop(live);
    drop(dead);
}

/// A signal the test queued: to which node, signed how, in which file; and, for one sent
/// to the owner about to be killed, whether it was still queued at the last look before
/// the kill.
struct SentSignal {
    prefix: String,
    from: String,
    file: std::path::PathBuf,
    on_disk_at_kill: bool,
}

/// How long the owner about to be killed is given to take a signal sent to it.
const TAKE_WINDOW: Duration = Duration::from_millis(300);

/// Where the watcher moves a queue file while it takes it (`io::signal_queue`).
fn claimed_file(file: &Path) -> std::path::PathBuf {
    let name = file.file_name().unwrap().to_string_lossy();
    file.with_file_name(format!(".claimed-{name}"))
}

/// Pairs of `getUpdates` calls by different processes whose spans overlap in time. A
/// killed process's span ends at its kill at the latest (`killed`: pid → the instant
/// just before the SIGKILL); a span that starts after that is not its own poll.
fn overlapping_polls(spans: &[PollSpan], killed: &HashMap<u32, Instant>) -> Vec<String> {
    let effective: Vec<(u32, Instant, Instant)> = spans
        .iter()
        .filter_map(|s| {
            let pid = s.pid?;
            let end = killed.get(&pid).map_or(s.ended, |k| s.ended.min(*k));
            (end > s.started).then_some((pid, s.started, end))
        })
        .collect();
    let mut overlaps = Vec::new();
    for (i, a) in effective.iter().enumerate() {
        for b in &effective[i + 1..] {
            if a.0 != b.0 && a.1 < b.2 && b.1 < a.2 {
                overlaps.push(format!(
                    "pid {} [{:?}..{:?}] and pid {} [{:?}..{:?}]",
                    a.0, a.1, a.2, b.0, b.1, b.2
                ));
            }
        }
    }
    overlaps
}

#[test]
fn overlap_is_decided_by_time_and_a_kill_cuts_a_span() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let span = |pid: u32, from: u64, to: u64| PollSpan {
        pid: Some(pid),
        started: at(from),
        ended: at(to),
        status: 200,
    };
    let none = HashMap::new();
    // One after the other: fine.
    assert!(overlapping_polls(&[span(1, 0, 10), span(2, 10, 20)], &none).is_empty());
    // The same process back to back: fine.
    assert!(overlapping_polls(&[span(1, 0, 10), span(1, 5, 20)], &none).is_empty());
    // Two processes at once: an overlap.
    assert_eq!(
        overlapping_polls(&[span(1, 0, 10), span(2, 5, 20)], &none).len(),
        1
    );
    // The first was killed at 4 ms: its poll answered at 10 ms was a dead socket.
    let killed = HashMap::from([(1, at(4))]);
    assert!(overlapping_polls(&[span(1, 0, 10), span(2, 5, 20)], &killed).is_empty());
    // Killed at 6 ms, the other started at 5 ms: both polled at once.
    let killed = HashMap::from([(1, at(6))]);
    assert_eq!(
        overlapping_polls(&[span(1, 0, 10), span(2, 5, 20)], &killed).len(),
        1
    );
}
