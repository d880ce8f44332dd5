//! Agent stream bench: how fast, and in how little memory, piv reads a huge stream-json session from a real child process.
//!
//! The producer is `piv-fake-claude` with a `big_output` scenario (realistic `assistant`
//! lines, then a `result`); the reader is the real [`run_session`] (its `BoundedLines`,
//! `parse_line` and accumulator). The naïve approach — read all stdout into one buffer,
//! then split and parse — is measured in the same run on a smaller stream because it needs
//! memory proportional to the session. Each side runs in a fresh copy of this binary so its
//! peak RSS (`VmHWM`) is its own. Prints `name value unit` lines.
//!
//! `cargo bench --bench agent_stream`; sizes via `PIV_BENCH_STREAM_MIB` (default 1024),
//! `PIV_BENCH_NAIVE_MIB` (default 256) and `PIV_BENCH_LINE_BYTES` (default 4096).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use piv::core::stream::{parse_line, ExitInfo, SessionAccumulator};
use piv::io::agent::{run_session, session_args, AgentConfig};
use piv_testkit::binaries::fake_claude;
use piv_testkit::fake_claude::{Action, Rule, Scenario, SCRIPT_ENV};

const ROLE_ENV: &str = "PIV_BENCH_ROLE";
const PROMPT: &str = "/execute .agents/plans/phase-1.md";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn config(project: &Path, script: &Path) -> AgentConfig {
    AgentConfig {
        timeout: Duration::from_secs(3600),
        stall: Duration::from_secs(600),
        model: Some("claude-bench".into()),
        env: vec![(SCRIPT_ENV.into(), script.display().to_string())],
        ..AgentConfig::new(fake_claude(), project)
    }
}

/// Streaming: the real session runner on a current-thread runtime, as the agent actor uses.
fn role_stream(project: &Path, script: &Path) -> (f64, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let outcome = runtime.block_on(run_session(&config(project, script), PROMPT, None, rx));
    let secs = started.elapsed().as_secs_f64();
    assert!(outcome.is_ok(), "session failed: {:?}", outcome.error);
    assert_eq!(outcome.malformed_lines, 0);
    (secs, vm_hwm_kib())
}

/// Naïve: all of stdout in one buffer, then split into lines and parse each.
fn role_naive(project: &Path, script: &Path) -> (f64, u64) {
    let cfg = config(project, script);
    let started = Instant::now();
    let output = Command::new(&cfg.bin)
        .args(session_args(&cfg, PROMPT, None))
        .current_dir(project)
        .env(SCRIPT_ENV, script)
        .stdin(Stdio::null())
        .output()
        .expect("run the fake");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    let mut acc = SessionAccumulator::new();
    for line in &lines {
        match parse_line(line.as_bytes()) {
            Ok(event) => acc.feed(event),
            Err(_) => acc.note_malformed(),
        }
    }
    let outcome = acc.finish(ExitInfo {
        code: output.status.code(),
        ..ExitInfo::default()
    });
    let secs = started.elapsed().as_secs_f64();
    assert!(outcome.is_ok(), "session failed: {:?}", outcome.error);
    (secs, vm_hwm_kib())
}

/// Runs one role in a fresh copy of this binary; returns (seconds, peak RSS KiB).
fn run_role(role: &str, mib: u64, line_bytes: u64, dir: &Path) -> (f64, u64) {
    let project = dir.join(format!("project-{role}"));
    // The command the prompt sends, where the CLI finds it (it lists it in init).
    std::fs::create_dir_all(project.join(".claude/commands")).unwrap();
    std::fs::write(project.join(".claude/commands/execute.md"), "# /execute\n").unwrap();
    let script = dir.join(format!("scenario-{role}.json"));
    Scenario::new()
        .rule(Rule::new(
            "/execute",
            Action::BigOutput {
                bytes: mib * 1024 * 1024,
                line_bytes: Some(line_bytes as usize),
            },
        ))
        .write(&script)
        .unwrap();
    let exe: PathBuf = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .env(ROLE_ENV, role)
        .env("PIV_BENCH_PROJECT", &project)
        .env("PIV_BENCH_SCRIPT", &script)
        .stderr(Stdio::inherit())
        .output()
        .expect("re-exec the bench");
    assert!(out.status.success(), "{role} worker failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let secs: f64 = fields.next().and_then(|s| s.parse().ok()).expect("secs");
    let kib: u64 = fields.next().and_then(|s| s.parse().ok()).expect("kib");
    (secs, kib)
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let project = PathBuf::from(std::env::var_os("PIV_BENCH_PROJECT").unwrap());
        let script = PathBuf::from(std::env::var_os("PIV_BENCH_SCRIPT").unwrap());
        let (secs, kib) = match role.as_str() {
            "stream" => role_stream(&project, &script),
            "naive" => role_naive(&project, &script),
            other => panic!("unknown role {other}"),
        };
        println!("{secs} {kib}");
        return;
    }
    let stream_mib = env_u64("PIV_BENCH_STREAM_MIB", 1024);
    let naive_mib = env_u64("PIV_BENCH_NAIVE_MIB", 256);
    let line_bytes = env_u64("PIV_BENCH_LINE_BYTES", 4096);
    let dir = tempfile::tempdir().unwrap();

    let (secs, kib) = run_role("stream", stream_mib, line_bytes, dir.path());
    let mb = (stream_mib * 1024 * 1024) as f64 / 1e6;
    let throughput = mb / secs;
    let rss_mib = kib as f64 / 1024.0;
    println!("agent_stream_bytes {stream_mib} MiB");
    println!("agent_stream_line_bytes {line_bytes} B");
    println!("agent_stream_seconds {secs:.2} s");
    println!("agent_stream_throughput {throughput:.1} MB/s");
    println!("agent_stream_peak_rss {rss_mib:.1} MiB");

    let (n_secs, n_kib) = run_role("naive", naive_mib, line_bytes, dir.path());
    let n_mb = (naive_mib * 1024 * 1024) as f64 / 1e6;
    let n_throughput = n_mb / n_secs;
    let n_rss_mib = n_kib as f64 / 1024.0;
    println!("agent_stream_naive_bytes {naive_mib} MiB");
    println!("agent_stream_naive_seconds {n_secs:.2} s");
    println!("agent_stream_naive_throughput {n_throughput:.1} MB/s");
    println!("agent_stream_naive_peak_rss {n_rss_mib:.1} MiB");
    println!(
        "agent_stream_throughput_ratio {:.2} x (streaming / naive)",
        throughput / n_throughput
    );
    println!(
        "agent_stream_peak_rss_ratio {:.1} x (naive on {naive_mib} MiB / streaming on {stream_mib} MiB)",
        n_rss_mib / rss_mib
    );
}
