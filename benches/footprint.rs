//! Footprint bench: what an idle, paused `piv run` costs (RSS and CPU time over 60 s), and the wall time of the one-shot commands `piv status` and `piv dry-run` from a fresh process.
//!
//! The instance is a real `piv run` with Telegram on (the Bot API stand-in, so the owner's
//! long poll is part of the idle cost), paused by `piv signal` during its first step (the
//! scripted claude works 3 s), so it holds before the next step with no agent running.
//! CPU is utime+stime from `/proc/<pid>/stat` at the start and the end of the window; RSS
//! is `VmRSS` sampled every second (the max is printed) and `VmHWM` (the peak since start).
//! The one-shot commands run against the same project while the instance is up; each is a
//! new process (page cache warm), median of `PIV_BENCH_RUNS` (default 20).
//!
//! `cargo bench --bench footprint` (`PIV_BENCH_IDLE_SECS` default 60).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

const TOKEN: &str = "192837:bench-footprint-token";
const CHAT: i64 = 6161;
const STEP: Duration = Duration::from_secs(60);

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after the name and state.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// A `kB` field of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("field in /proc status");
    kb / 1024.0
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn median_ms(env: &Env, project: &Project, args: &[&str], runs: usize) -> (f64, f64, f64) {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let out = env
            .command(project, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run piv");
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(out.success(), "piv {args:?}: {out}");
    }
    (
        percentile(&samples, 50.0),
        percentile(&samples, 0.0),
        max(&samples),
    )
}

fn main() {
    let idle_secs: u64 = common::env_or("PIV_BENCH_IDLE_SECS", 60);
    let runs: usize = common::env_or("PIV_BENCH_RUNS", 20);
    let root = tempfile::tempdir().unwrap();
    let standin = BotApiStandIn::start(TOKEN);
    let env = Env::new(
        root.path(),
        Scenario::new().rule(Rule::new("", Action::Succeed).delay(Duration::from_secs(3))),
        Some((&standin, TOKEN, CHAT)),
    );
    let project = Project::new(root.path(), "idle", 3);
    let mut child = env.spawn_run(&project);
    let pid = child.id();
    wait_for(STEP, "the first step to start", || {
        std::fs::read_to_string(&project.claude_log).is_ok_and(|t| !t.is_empty())
    });
    let status = env
        .command(&project, &["signal", "idle", "pause"])
        .status()
        .unwrap();
    assert!(status.success(), "piv signal idle pause: {status}");
    wait_for(STEP, "the instance to pause", || {
        state_of(&project).as_deref() == Some("paused")
    });
    // No agent left: the scripted claude's process group is gone.
    let pgid = std::fs::read_to_string(&project.claude_log)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["pgid"].as_i64())
        .expect("pgid in the claude log") as i32;
    // SAFETY: kill with signal 0 only checks for existence.
    wait_for(STEP, "the agent to finish", || unsafe {
        libc::kill(-pgid, 0) != 0
    });
    std::thread::sleep(Duration::from_secs(2));

    let cpu_start = cpu_seconds(pid);
    let window = Instant::now();
    let mut rss_max: f64 = 0.0;
    while window.elapsed() < Duration::from_secs(idle_secs) {
        rss_max = rss_max.max(status_mib(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu = cpu_seconds(pid) - cpu_start;
    let seconds = window.elapsed().as_secs_f64();
    let rss_end = status_mib(pid, "VmRSS:");
    let hwm = status_mib(pid, "VmHWM:");
    let thread_count = threads(pid);
    let still_paused = state_of(&project).as_deref() == Some("paused");

    let status = median_ms(&env, &project, &["status"], runs);
    let status_all = median_ms(&env, &project, &["status", "--all"], runs);
    let dry_run = median_ms(&env, &project, &["dry-run"], runs);
    let dry_run_json = median_ms(&env, &project, &["dry-run", "--json"], runs);

    sigkill(pid);
    let _ = child.wait();
    project.kill_agents();
    standin.stop();

    figure("idle_window", format!("{seconds:.0}"), "s");
    figure("idle_still_paused", still_paused, "bool");
    figure("idle_rss", format!("{rss_end:.1}"), "MiB");
    figure("idle_rss_max_in_window", format!("{rss_max:.1}"), "MiB");
    figure(
        "idle_rss_peak_since_start",
        format!("{hwm:.1}"),
        "MiB (VmHWM)",
    );
    figure("idle_threads", thread_count, "threads");
    figure("idle_cpu", format!("{:.3}", cpu), "s (utime+stime)");
    figure(
        "idle_cpu_share",
        format!("{:.4}", cpu / seconds * 100.0),
        "% of one core",
    );
    for (name, (median, min, max)) in [
        ("cold_status", status),
        ("cold_status_all", status_all),
        ("cold_dry_run", dry_run),
        ("cold_dry_run_json", dry_run_json),
    ] {
        figure(&format!("{name}_median"), format!("{median:.1}"), "ms");
        figure(&format!("{name}_min"), format!("{min:.1}"), "ms");
        figure(&format!("{name}_max"), format!("{max:.1}"), "ms");
    }
    figure("cold_runs", runs, "runs each");
}
