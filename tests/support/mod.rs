//! Shared helpers for tests that drive real `piv run` processes: a [`Sandbox`] (a
//! temporary project with a manifest, the PIV slash commands and a git repo, plus its own
//! `PIV_HOME`), a builder for the real `piv` binary with a scrubbed environment pointing
//! at the scripted `claude`, and [`wait_until`] (never a bare sleep).

#![allow(dead_code)]

pub mod pollers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use piv_testkit::fake_claude::{Action, Scenario, LOG_ENV, SCRIPT_ENV, STATE_DIR_ENV};
use serde_json::Value;
use serde_yaml::Value as Yaml;

pub const PIV: &str = env!("CARGO_BIN_EXE_piv");
/// The scripted claude (`examples/piv-fake-claude.rs`), found and built by the testkit.
pub use piv_testkit::binaries::fake_claude;

/// A generous deadline for conditions on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub use piv_testkit::project::ready_manifest;

/// A temporary project (git repo, PIV slash commands, manifest) with its own
/// `PIV_HOME`, scenario file and fake-claude log.
pub struct Sandbox {
    pub root: tempfile::TempDir,
    pub project: PathBuf,
    pub home: PathBuf,
    pub script: PathBuf,
    pub claude_log: PathBuf,
}

impl Sandbox {
    /// A project named `name` with `manifest` as `.agents/manifest.yaml`.
    pub fn new(name: &str, manifest: &str) -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join("piv-home");
        Sandbox::with_home(root, name, manifest, home)
    }

    /// A second project sharing `other`'s `PIV_HOME` (several instances, one machine).
    pub fn sharing_home(other: &Sandbox, name: &str, manifest: &str) -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        Sandbox::with_home(root, name, manifest, other.home.clone())
    }

    fn with_home(root: tempfile::TempDir, name: &str, manifest: &str, home: PathBuf) -> Sandbox {
        let project = root.path().join(name);
        piv_testkit::project::scaffold(&project, manifest).expect("scaffold project");
        let script = root.path().join("scenario.json");
        Scenario::new().write(&script).unwrap();
        let claude_log = root.path().join("claude-calls.jsonl");
        Sandbox {
            root,
            project,
            home,
            script,
            claude_log,
        }
    }

    pub fn scenario(&self, scenario: Scenario) {
        scenario.write(&self.script).unwrap();
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.project.join(".agents/manifest.yaml")
    }

    pub fn manifest_text(&self) -> String {
        std::fs::read_to_string(self.manifest_path()).unwrap_or_default()
    }

    pub fn manifest(&self) -> serde_yaml::Value {
        serde_yaml::from_str(&self.manifest_text()).expect("manifest parses")
    }

    /// `piv <args>` with a scrubbed environment: this sandbox's project, home and the
    /// scripted claude; fast polling; no Telegram unless the caller adds it.
    pub fn piv(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(PIV);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.path())
            .env("IS_SANDBOX", "1")
            .env("PIV_PROJECT_DIR", &self.project)
            .env("PIV_HOME", &self.home)
            .env("PIV_CLAUDE_BIN", fake_claude())
            .env("PIV_SIGNAL_POLL_MS", "200")
            .env("PIV_KILL_GRACE_SECS", "2")
            .env(SCRIPT_ENV, &self.script)
            .env(LOG_ENV, &self.claude_log)
            .env(STATE_DIR_ENV, self.root.path())
            .env("GIT_AUTHOR_NAME", "piv-test")
            .env("GIT_AUTHOR_EMAIL", "piv@test")
            .env("GIT_COMMITTER_NAME", "piv-test")
            .env("GIT_COMMITTER_EMAIL", "piv@test")
            .env("RUST_LOG", "info")
            .current_dir(&self.project);
        cmd
    }

    /// Runs `piv run` to its end, bounded by [`DEADLINE`].
    pub fn run_to_end(&self, extra: &[&str]) -> Output {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        let child = self
            .piv(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn piv run");
        wait_output(child, DEADLINE)
    }

    /// Starts `piv run` in the background (stdout/stderr to files in the sandbox).
    pub fn spawn_run(&self, extra: &[&str]) -> Child {
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        let out = std::fs::File::create(self.root.path().join("run.stdout")).unwrap();
        let err = std::fs::File::create(self.root.path().join("run.stderr")).unwrap();
        self.piv(&args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn piv run")
    }

    pub fn run_stdout(&self) -> String {
        std::fs::read_to_string(self.root.path().join("run.stdout")).unwrap_or_default()
    }

    pub fn run_stderr(&self) -> String {
        std::fs::read_to_string(self.root.path().join("run.stderr")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.project.join(".agents/orchestrator.log")).unwrap_or_default()
    }

    /// Every invocation of the scripted claude, as logged by it.
    pub fn claude_calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.claude_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn git_log(&self) -> Vec<String> {
        let out = Command::new("git")
            .args(["log", "--format=%s"])
            .current_dir(&self.project)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Everything worth seeing when a test fails.
    pub fn dump(&self) -> String {
        format!(
            "--- manifest ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- log ---\n{}",
            self.manifest_text(),
            self.run_stdout(),
            self.run_stderr(),
            self.log()
        )
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    piv_testkit::project::git(dir, args).expect("git");
}

/// Whether `git status --porcelain` shows anything in `dir`.
pub fn has_uncommitted(dir: &Path) -> bool {
    !git_output(dir, &["status", "--porcelain"]).is_empty()
}

/// The number of commits reachable from HEAD in `dir` (0 without commits).
pub fn commit_count(dir: &Path) -> u64 {
    git_output(dir, &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Waits for a child with a deadline (killing it if the deadline passes) and collects
/// its output.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait: {e}"),
        }
    }
    child.wait_with_output().expect("output")
}

/// Sends a Unix signal to a process.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) only sends a signal.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Whether a process (or, with a negative id, a process group) still exists.
pub fn exists(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// The files in `dir` whose name starts with `prefix` (e.g. quarantined copies,
/// `registry.json.corrupt-`).
pub fn files_starting_with(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub use piv_testkit::rng::Rng;

// ---------------------------------------------------------------------------------------
// Reading a finished run: the manifest's lists, the scripted claude's calls, the output.

pub fn phase(m: &Yaml, n: u64) -> &Yaml {
    m["phases"].get(Yaml::from(n)).expect("phase entry")
}

pub fn list<'a>(m: &'a Yaml, key: &str) -> Vec<&'a Yaml> {
    m[key]
        .as_sequence()
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

pub fn failures_of<'a>(m: &'a Yaml, command: &str) -> Vec<&'a Yaml> {
    list(m, "failures")
        .into_iter()
        .filter(|f| f["command"] == command)
        .collect()
}

pub fn escalations(m: &Yaml) -> Vec<&Yaml> {
    list(m, "notifications")
        .into_iter()
        .filter(|n| n["type"] == "escalation")
        .collect()
}

/// Calls of the scripted claude whose prompt starts with `prefix`.
pub fn calls_starting(sb: &Sandbox, prefix: &str) -> Vec<Value> {
    sb.claude_calls()
        .into_iter()
        .filter(|c| c["prompt"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

pub fn fail(message: &str) -> Action {
    Action::Fail {
        subtype: "success".into(),
        is_error: true,
        message: message.into(),
        exit_code: None,
    }
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Everything worth seeing for a finished `run_to_end`.
pub fn show(sb: &Sandbox, out: &Output) -> String {
    let (o, e) = text(out);
    format!(
        "exit {:?}\n--- stdout ---\n{o}\n--- stderr ---\n{e}\n{}\n--- calls ---\n{:#?}",
        out.status.code(),
        sb.dump(),
        sb.claude_calls()
            .iter()
            .map(|c| format!("{} [{}]", c["prompt"], c["action"]))
            .collect::<Vec<_>>()
    )
}

/// `piv run` with extra environment, to its end (bounded by [`DEADLINE`]).
pub fn run_with_env(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let mut cmd = sb.piv(&all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn piv run");
    wait_output(child, DEADLINE)
}

/// `piv run` in the background with extra environment (stdout/stderr to the sandbox).
pub fn spawn_with_env(sb: &Sandbox, env: &[(&str, &str)]) -> Child {
    let out = std::fs::File::create(sb.root.path().join("run.stdout")).unwrap();
    let err = std::fs::File::create(sb.root.path().join("run.stderr")).unwrap();
    let mut cmd = sb.piv(&["run"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(out).stderr(err).spawn().expect("spawn piv run")
}

/// Waits for a background child to exit within [`DEADLINE`]; kills it otherwise.
pub fn wait_exit(sb: &Sandbox, child: &mut Child) -> std::process::ExitStatus {
    let mut status = None;
    let ended = wait_until(DEADLINE, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("piv run did not end in time\n{}", sb.dump());
    }
    status.unwrap()
}

pub fn git_output(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn state_file(sb: &Sandbox) -> Value {
    std::fs::read_to_string(sb.project.join(".agents/orchestrator.state.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

pub fn pid_gone(pid: i64) -> bool {
    // A zombie (reaped late by its parent) counts as gone: it runs nothing.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

pub mod claude_cli;
pub mod messages_api;
pub mod nats_cluster;
pub mod session_fixture;
pub mod telegram_run;
