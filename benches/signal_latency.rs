//! Signal latency bench: `piv signal <prefix> pause|resume` → the running instance receives it, with file notifications and with the 2 s polling fallback only; and a burst of 1000 signals, delivered and in order.
//!
//! One real `piv run` per mode, its agent hanging mid-step (scripted claude `Hang`), no
//! Telegram. A sample is timed from just before the bench spawns `piv signal` (so the
//! CLI's own start-up is included) to the timestamp the instance's SignalWatcher logs with
//! "signal received" in `.agents/orchestrator.log` (tracing's UTC timestamp, µs). Pause
//! and resume alternate. The polling-only mode (`PIV_SIGNAL_NOTIFY=0`,
//! `PIV_SIGNAL_POLL_MS=2000`) is the naïve 2 s polling watcher.
//!
//! The burst enqueues 1000 signals through `signal_queue::enqueue` (what `piv signal`
//! calls) as fast as it can, alternating pause/resume, each signed `from=bNNNN`; the log
//! must then show all 1000 "signal received" lines in send order.
//!
//! In polling-only mode each sample first sleeps a random 0–2 s, so samples land at a
//! random phase of the poll tick (without it every sample waits the full 2 s).
//!
//! `cargo bench --bench signal_latency` (`PIV_BENCH_SAMPLES` default 100 with notify,
//! `PIV_BENCH_POLL_SAMPLES` default 40 polling only).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use piv::core::control::ControlAction;
use piv::io::signal_queue;
use piv_testkit::fake_claude::{Action, Rule, Scenario};
use piv_testkit::rng::Rng;

const STEP: Duration = Duration::from_secs(60);
const BURST: usize = 1000;

/// `(timestamp, action, from)` of every "signal received" line in the log, in order.
fn received(project: &Project) -> Vec<(SystemTime, String, String)> {
    project
        .log()
        .lines()
        .filter(|l| l.contains("signal received"))
        .filter_map(|l| {
            let ts = l.split_whitespace().next()?;
            let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string()
            };
            Some((SystemTime::from(t), field("action"), field("from")))
        })
        .collect()
}

struct ModeResult {
    latencies_ms: Vec<f64>,
    burst_delivered: usize,
    burst_in_order: bool,
    burst_seconds: f64,
}

fn run_mode(name: &str, notify: bool, samples: usize) -> ModeResult {
    let root = tempfile::tempdir().unwrap();
    let mut env = Env::new(
        root.path(),
        Scenario::new().rule(Rule::new("", Action::Hang)),
        None,
    );
    env.extra = vec![("PIV_SIGNAL_POLL_MS".to_string(), "2000".to_string())];
    if !notify {
        env.extra.push(("PIV_SIGNAL_NOTIFY".into(), "0".into()));
    }
    let project = Project::new(root.path(), name, 3);
    let mut child = env.spawn_run(&project);
    wait_for(STEP, "the instance to run a step", || {
        state_of(&project).as_deref() == Some("running")
            && std::fs::read_to_string(&project.claude_log).is_ok_and(|t| t.contains("hang"))
    });

    let mut latencies_ms = Vec::new();
    let mut rng = Rng::new(0x51a1_0001);
    for i in 0..samples {
        // Polling only: a random phase against the 2 s tick, or every sample would be sent
        // just after a poll and wait the full interval.
        if !notify {
            std::thread::sleep(Duration::from_millis(rng.range(0, 2000)));
        }
        let action = if i.is_multiple_of(2) {
            "pause"
        } else {
            "resume"
        };
        let before = received(&project).len();
        let sent = SystemTime::now();
        let status = env
            .command(&project, &["signal", name, action])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("piv signal");
        assert!(status.success(), "piv signal {name} {action}: {status}");
        wait_for(STEP, "the signal to be received", || {
            received(&project).len() > before
        });
        let (at, got, _) = received(&project)[before].clone();
        assert_eq!(got, action, "the signal received is the one sent");
        let latency = at.duration_since(sent).unwrap_or_default();
        latencies_ms.push(latency.as_secs_f64() * 1000.0);
    }

    let before = received(&project).len();
    let burst_start = SystemTime::now();
    for i in 0..BURST {
        let action = if i.is_multiple_of(2) {
            ControlAction::Pause
        } else {
            ControlAction::Resume
        };
        signal_queue::enqueue(&project.dir, action, &format!("b{i:04}")).expect("enqueue");
    }
    let burst_done = std::panic::catch_unwind(|| {
        wait_for(Duration::from_secs(180), "the burst to be received", || {
            received(&project).len() >= before + BURST
        })
    })
    .is_ok();
    let got: Vec<_> = received(&project).into_iter().skip(before).collect();
    let burst_in_order = burst_done
        && got.len() == BURST
        && got.iter().enumerate().all(|(i, (_, action, from))| {
            *from == format!("b{i:04}")
                && action
                    == if i.is_multiple_of(2) {
                        "pause"
                    } else {
                        "resume"
                    }
        });
    let burst_seconds = got
        .last()
        .map(|(t, _, _)| t.duration_since(burst_start).unwrap_or_default())
        .unwrap_or_default()
        .as_secs_f64();

    sigkill(child.id());
    let _ = child.wait();
    project.kill_agents();
    ModeResult {
        latencies_ms,
        burst_delivered: got.len(),
        burst_in_order,
        burst_seconds,
    }
}

fn main() {
    let fast = run_mode("sig", true, env_or("PIV_BENCH_SAMPLES", 100));
    let slow = run_mode("sigpoll", false, env_or("PIV_BENCH_POLL_SAMPLES", 40));

    let p = |r: &ModeResult, q: f64| percentile(&r.latencies_ms, q);
    figure("signal_samples", fast.latencies_ms.len(), "signals");
    figure("signal_p50", format!("{:.1}", p(&fast, 50.0)), "ms");
    figure("signal_p99", format!("{:.1}", p(&fast, 99.0)), "ms");
    figure(
        "signal_max",
        format!("{:.1}", max(&fast.latencies_ms)),
        "ms",
    );
    figure("signal_burst_sent", BURST, "signals");
    figure("signal_burst_delivered", fast.burst_delivered, "signals");
    figure("signal_burst_in_order", fast.burst_in_order, "bool");
    figure(
        "signal_burst_seconds",
        format!("{:.2}", fast.burst_seconds),
        "s",
    );
    figure("signal_naive_samples", slow.latencies_ms.len(), "signals");
    figure("signal_naive_p50", format!("{:.1}", p(&slow, 50.0)), "ms");
    figure("signal_naive_p99", format!("{:.1}", p(&slow, 99.0)), "ms");
    figure(
        "signal_naive_burst_delivered",
        slow.burst_delivered,
        "signals",
    );
    figure("signal_naive_burst_in_order", slow.burst_in_order, "bool");
    figure(
        "signal_p50_ratio",
        format!("{:.1}", p(&slow, 50.0) / p(&fast, 50.0)),
        "x (polling only / notify)",
    );
    figure(
        "signal_p99_ratio",
        format!("{:.1}", p(&slow, 99.0) / p(&fast, 99.0)),
        "x (polling only / notify)",
    );
}
