//! The overnight soak (issue 11): a multi-phase project driven by the real `piv run` and
//! the scripted claude through seeded random outages, usage limits, a hang and one SIGKILL
//! plus restart. It must reach done with no rollback caused by an outage or a limit, no
//! user file lost, every recorded session's cost known or marked unknown, and never two
//! agent sessions of the project alive at once. Bounded to a few minutes; the seed is
//! printed and can be replayed with `PIV_SOAK_SEED`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use piv_testkit::fake_claude::{Action, Rule, Scenario};
use piv_testkit::rng::Rng;

use crate::support::*;

/// The agent sessions working in `project` right now: the process groups of the scripted
/// claude's processes there. Counting groups, not processes: a session's own children
/// (the `git` it forks, which is briefly a copy of it before `exec`) are in its group;
/// two sessions never share one (each is started as its own group).
fn agent_sessions_in(project: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let groups: std::collections::BTreeSet<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
            let is_fake = exe
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("piv-fake-claude"));
            is_fake && std::fs::read_link(e.path().join("cwd")).ok().as_deref() == Some(project)
        })
        .filter_map(|e| {
            // /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().nth(2).map(str::to_string)
        })
        .collect();
    groups.len()
}

/// Watches the project's agent sessions until dropped; remembers the most seen at once.
struct OverlapWatch {
    stop: Arc<AtomicBool>,
    max_seen: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OverlapWatch {
    fn start(project: PathBuf) -> OverlapWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max_seen = Arc::new(AtomicUsize::new(0));
        let (s, m) = (stop.clone(), max_seen.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(agent_sessions_in(&project), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        OverlapWatch {
            stop,
            max_seen,
            thread: Some(thread),
        }
    }

    fn max_seen(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max_seen.load(Ordering::Relaxed)
    }
}

/// The faults of one soak, drawn from `seed`: outages and limits on every command (each a
/// few times), and a single hang (a counted failure the retry survives).
fn faulty_scenario(seed: u64) -> (Scenario, Vec<String>) {
    let mut rng = Rng::new(seed);
    let mut scenario = Scenario::new();
    let mut drawn = Vec::new();
    let commands = [
        "/prime",
        "/plan-feature",
        "/execute",
        "/validate-implementation",
        "/commit",
    ];
    for command in commands {
        for _ in 0..rng.range(1, 3) {
            let action = match rng.range(0, 5) {
                0 => Action::ApiUnreachable {
                    retries: rng.range(0, 3) as u32,
                },
                1 => Action::Overloaded {
                    retries: rng.range(0, 3) as u32,
                },
                2 => Action::UsageLimit {
                    resets_in_secs: Some(1),
                },
                3 => Action::UsageLimit {
                    resets_in_secs: Some(-30),
                },
                _ => Action::UsageLimit {
                    resets_in_secs: None,
                },
            };
            let times = rng.range(1, 3) as u32;
            drawn.push(format!("{command} {action:?} x{times}"));
            scenario = scenario.rule(
                Rule::new(command, action)
                    .times(times)
                    .retry_delay(Duration::from_millis(20)),
            );
        }
    }
    let hang_at = commands[rng.range(1, commands.len() as u64) as usize];
    drawn.push(format!("{hang_at} Hang x1"));
    // The hang comes after that command's outages, so the step's one retry covers it.
    scenario = scenario.rule(Rule::new(hang_at, Action::Hang).times(1));
    // A slow session now and then, so the kill can land mid-session.
    scenario =
        scenario.rule(Rule::new("/execute", Action::Succeed).delay(Duration::from_millis(300)));
    (scenario, drawn)
}

#[test]
fn a_night_of_outages_limits_a_hang_and_a_kill_ends_done_with_nothing_lost() {
    let seed = std::env::var("PIV_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let sb = Sandbox::new("soak", &ready_manifest(4));
    let p = sb.project.clone();
    std::fs::write(p.join(".gitignore"), ".env\n").unwrap();
    std::fs::write(p.join("NOTES.md"), "the user's notes\n").unwrap();
    git(&p, &["add", "-A"]);
    git(&p, &["commit", "-qm", "user files"]);
    std::fs::write(
        p.join("NOTES.md"),
        "the user's notes\nand an uncommitted line\n",
    )
    .unwrap();
    std::fs::write(p.join("scratch.txt"), "untracked user file\n").unwrap();
    std::fs::write(p.join(".env"), "SECRET=1\n").unwrap();
    let (scenario, drawn) = faulty_scenario(seed);
    eprintln!("soak seed {seed}: {drawn:#?}");
    sb.scenario(scenario);
    let env = [
        ("PIV_OUTAGE_BACKOFF_SECS", "1"),
        ("PIV_LIMIT_MIN_WAIT_SECS", "1"),
        // The hang is silent for ever; every other session prints at once.
        ("PIV_STALL_SECS", "4"),
    ];
    let watch = OverlapWatch::start(p.clone());

    // The first run, SIGKILLed in the middle of the night.
    let mut first = {
        let mut cmd = sb.piv(&["run"]);
        cmd.envs(env);
        cmd.stdout(std::fs::File::create(sb.root.path().join("run1.stdout")).unwrap())
            .stderr(std::fs::File::create(sb.root.path().join("run1.stderr")).unwrap())
            .spawn()
            .unwrap()
    };
    let kill_after = 12;
    let reached = wait_until(Duration::from_secs(240), || {
        sb.claude_calls().len() >= kill_after && agent_sessions_in(&p) == 1
    });
    assert!(
        reached,
        "the first run never got {kill_after} calls in\n{}",
        sb.dump()
    );
    send_signal(first.id(), libc::SIGKILL);
    let _ = first.wait();
    assert!(
        wait_until(DEADLINE, || agent_sessions_in(&p) == 0),
        "the killed run's agent session outlived it\n{}",
        sb.dump()
    );
    let calls_at_kill = sb.claude_calls().len();

    // The restart finishes the night.
    let out = {
        let mut cmd = sb.piv(&["run"]);
        cmd.envs(env);
        wait_output(
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
            Duration::from_secs(300),
        )
    };
    let max_at_once = watch.max_seen();
    let shown = format!("seed {seed}\n{}", show(&sb, &out));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let m = sb.manifest();
    for n in 1..=4usize {
        assert_eq!(m["phases"][n]["commit"], "complete", "phase {n}\n{shown}");
    }
    assert!(
        max_at_once <= 1,
        "{max_at_once} agent sessions at once\n{shown}"
    );
    assert!(sb.claude_calls().len() > calls_at_kill, "{shown}");

    // No rollback at all (outages and limits are never failures; the hang's retry worked).
    let failures = list(&m, "failures");
    assert!(
        failures.iter().all(|f| f["resolution"] != "rolled_back"),
        "{shown}"
    );
    assert!(
        failures.len() <= 1,
        "only the hang may be a failure: {failures:#?}\n{shown}"
    );

    // Nothing of the user's is lost.
    assert_eq!(
        std::fs::read_to_string(p.join("NOTES.md")).unwrap(),
        "the user's notes\nand an uncommitted line\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join("scratch.txt")).unwrap(),
        "untracked user file\n"
    );
    assert_eq!(
        std::fs::read_to_string(p.join(".env")).unwrap(),
        "SECRET=1\n"
    );

    // Every recorded session has its cost, or says it is unknown; and every session but
    // the ones the kill cut short (at most one pairing: two calls) is recorded.
    let sessions = list(&m, "sessions");
    for s in &sessions {
        assert!(
            s["cost_usd"].as_f64().is_some() || s["cost_unknown"] == true,
            "a session without its cost: {s:?}\n{shown}"
        );
    }
    assert!(
        sessions.len() + 2 >= sb.claude_calls().len(),
        "{} sessions recorded for {} calls\n{shown}",
        sessions.len(),
        sb.claude_calls().len()
    );
}
