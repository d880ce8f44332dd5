//! Poll rate bench: a release `piv run` (the bot owner) against a Bot API that answers `getUpdates` at once, ignoring `timeout` and `offset` (a misconfigured proxy, a broken self-hosted server): `getUpdates` per second and % of a core, next to a naïve loop (no pacing) against the same stand-in in the same run.
//!
//! The instance is a real `piv run` with Telegram on, its one phase done, staying up to
//! answer commands. One `/help` is answered first, so the instant server then resends an
//! update piv already handled on every call (the worst case: every answer is "nothing
//! new"). After `PIV_BENCH_SETTLE_SECS` (default 8: the pause grows 0.2 → 3.2 s) the
//! window of `PIV_BENCH_SECS` (default 20) counts the instance's `getUpdates` as the
//! stand-in saw them (by pid) and its CPU (utime+stime from `/proc/<pid>/stat`).
//!
//! The naïve loop is piv's own `TelegramClient::get_updates` called back to back on a
//! single-threaded tokio runtime for `PIV_BENCH_NAIVE_SECS` (default 5) after the
//! instance is stopped: what the owner did before pacing. Its CPU is the loop thread's
//! (`CLOCK_THREAD_CPUTIME_ID`); the stand-in serving it runs in the bench process too and
//! is not counted.
//!
//! `cargo bench --bench poll_rate`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::Scenario;

const TOKEN: &str = "736251:bench-poll-rate-token";
const CHAT: i64 = 7373;

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn polls_by(api: &BotApiStandIn, pid: u32, from: Instant, to: Instant) -> usize {
    api.poll_starts()
        .iter()
        .filter(|p| p.pid == Some(pid) && p.at >= from && p.at < to)
        .count()
}

/// The naïve loop: `getUpdates` back to back for `secs`; (calls per second, % of a core).
fn naive_loop(api: &BotApiStandIn, secs: u64) -> (f64, f64) {
    let url = api.url().to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let client = piv::io::telegram::TelegramClient::new(TOKEN, &url, 25).expect("client");
            let window = Duration::from_secs(secs);
            let cpu_before = thread_cpu_seconds();
            let start = Instant::now();
            let mut calls = 0u64;
            let mut offset = None;
            while start.elapsed() < window {
                if let Ok(updates) = client.get_updates(offset, 25).await {
                    offset = updates.last().map(|u| u.update_id + 1).or(offset);
                }
                calls += 1;
            }
            let elapsed = start.elapsed().as_secs_f64();
            let cpu = thread_cpu_seconds() - cpu_before;
            (calls as f64 / elapsed, cpu / elapsed * 100.0)
        })
    })
    .join()
    .expect("naive loop thread")
}

fn main() {
    let settle = Duration::from_secs(env_or("PIV_BENCH_SETTLE_SECS", 8u64));
    let window = Duration::from_secs(env_or("PIV_BENCH_SECS", 20u64));
    let naive_secs = env_or("PIV_BENCH_NAIVE_SECS", 5u64);
    let root = tempfile::tempdir().expect("tempdir");
    let api = BotApiStandIn::start(TOKEN);
    let env = Env::new(root.path(), Scenario::new(), Some((&api, TOKEN, CHAT)));
    let project = Project::new(root.path(), "poll", 1);
    let mut child = env.spawn_run(&project);
    let pid = child.id();
    wait_for(
        Duration::from_secs(120),
        "the run to finish its phase",
        || matches!(state_of(&project).as_deref(), Some("done" | "idle")),
    );
    let t = Instant::now();
    api.inject_message(CHAT, "/help");
    wait_for(Duration::from_secs(120), "the /help reply", || {
        api.sent_messages()
            .iter()
            .any(|m| m.at >= t && m.text.contains("/status"))
    });
    api.set_instant_polls(true);
    // Settling into the steady pause; not a synchronisation.
    std::thread::sleep(settle);
    let cpu_before = cpu_seconds(pid);
    let from = Instant::now();
    // The measurement window.
    std::thread::sleep(window);
    let to = Instant::now();
    let cpu = cpu_seconds(pid) - cpu_before;
    let elapsed = (to - from).as_secs_f64();
    let polls = polls_by(&api, pid, from, to);
    sigkill(pid);
    let _ = child.wait();
    println!(
        "poll rate against an instant getUpdates: piv run for {:.0} s after {:?} settling, \
         naive loop for {naive_secs} s",
        elapsed, settle
    );
    let piv_rate = polls as f64 / elapsed;
    let piv_cpu = cpu / elapsed * 100.0;
    figure("piv_getupdates_per_s", format!("{piv_rate:.2}"), "1/s");
    figure("piv_cpu", format!("{piv_cpu:.2}"), "% of a core");
    figure("piv_getupdates_in_window", polls, "calls");
    let (naive_rate, naive_cpu) = naive_loop(&api, naive_secs);
    figure("naive_getupdates_per_s", format!("{naive_rate:.0}"), "1/s");
    figure(
        "naive_client_cpu",
        format!("{naive_cpu:.1}"),
        "% of a core (client thread only)",
    );
    figure(
        "naive_over_piv_rate",
        format!("{:.0}", naive_rate / piv_rate.max(0.001)),
        "x",
    );
}
