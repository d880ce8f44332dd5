//! Helpers shared by the benches that drive real `piv run` processes: where the built
//! binaries are, a throwaway project with its `piv` command line, waiting for a condition,
//! percentiles, and killing what a SIGKILLed instance left running.
//!
//! Included by each bench with `mod common;` (a directory module, so cargo does not take
//! it for a bench of its own).

#![allow(dead_code)]

#[path = "../../tests/support/pollers.rs"]
pub mod pollers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Scenario, LOG_ENV, SCRIPT_ENV, STATE_DIR_ENV};
use piv_testkit::project::{ready_manifest, scaffold};

/// `piv` and `piv-fake-claude` of this build: the bench runs from
/// `target/<profile>/deps/`, `piv` sits in `target/<profile>/` (cargo builds it for
/// `cargo bench`), the scripted claude is found and built by the testkit
/// (`target/<profile>/examples/`). `PIV_BIN`/`PIV_FAKE_CLAUDE_BIN` override.
pub fn binaries() -> (PathBuf, PathBuf) {
    let piv = std::env::var_os("PIV_BIN").map_or_else(
        || {
            piv_testkit::binaries::profile_dir()
                .expect("target/<profile>")
                .join("piv")
        },
        PathBuf::from,
    );
    assert!(
        piv.exists(),
        "{} is missing: run `cargo build --release --bins`",
        piv.display()
    );
    (piv, PathBuf::from(piv_testkit::binaries::fake_claude()))
}

/// One throwaway project for a `piv run`.
pub struct Project {
    pub prefix: String,
    pub dir: PathBuf,
    pub claude_log: PathBuf,
}

impl Project {
    /// A ready project with `phases` phases under `root/<prefix>`.
    pub fn new(root: &Path, prefix: &str, phases: u32) -> Project {
        let dir = root.join(prefix);
        scaffold(&dir, &ready_manifest(phases)).expect("scaffold project");
        let dir = std::fs::canonicalize(&dir).expect("canonical project dir");
        Project {
            prefix: prefix.to_string(),
            claude_log: root.join(format!("{prefix}.claude.jsonl")),
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(".agents/orchestrator.log")).unwrap_or_default()
    }

    /// Kills the process group of every session the scripted claude logged (what a
    /// SIGKILLed `piv run` leaves behind).
    pub fn kill_agents(&self) {
        let text = std::fs::read_to_string(&self.claude_log).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(pgid) = v["pgid"].as_i64().filter(|p| *p > 1) {
                // SAFETY: killpg only sends a signal.
                unsafe {
                    libc::killpg(pgid as i32, libc::SIGKILL);
                }
            }
        }
    }
}

/// Everything a `piv` process needs, Telegram included when `api_url` is given.
pub struct Env {
    pub piv: PathBuf,
    pub fake_claude: PathBuf,
    pub home: PathBuf,
    pub script: PathBuf,
    pub state_dir: PathBuf,
    pub telegram: Option<(String, String, i64)>,
    pub extra: Vec<(String, String)>,
}

impl Env {
    /// The binaries of this build, `scenario` written to `root/scenario.json`, `PIV_HOME`
    /// at `root/piv-home`, Telegram pointed at `telegram` (a stand-in, its token and chat)
    /// when given, no extra variables.
    pub fn new(
        root: &Path,
        scenario: Scenario,
        telegram: Option<(&BotApiStandIn, &str, i64)>,
    ) -> Env {
        let (piv, fake_claude) = binaries();
        let script = root.join("scenario.json");
        scenario.write(&script).unwrap();
        Env {
            piv,
            fake_claude,
            home: root.join("piv-home"),
            script,
            state_dir: root.to_path_buf(),
            telegram: telegram
                .map(|(api, token, chat)| (api.url().to_string(), token.to_string(), chat)),
            extra: vec![],
        }
    }

    pub fn command(&self, project: &Project, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.piv);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.state_dir)
            .env("IS_SANDBOX", "1")
            .env("PIV_PROJECT_DIR", &project.dir)
            .env("PIV_HOME", &self.home)
            .env("PIV_CLAUDE_BIN", &self.fake_claude)
            .env("PIV_KILL_GRACE_SECS", "2")
            .env("TELEGRAM_PROJECT_PREFIX", &project.prefix)
            .env(SCRIPT_ENV, &self.script)
            .env(LOG_ENV, &project.claude_log)
            .env(STATE_DIR_ENV, &self.state_dir)
            .env("GIT_AUTHOR_NAME", "piv-bench")
            .env("GIT_AUTHOR_EMAIL", "bench@piv")
            .env("GIT_COMMITTER_NAME", "piv-bench")
            .env("GIT_COMMITTER_EMAIL", "bench@piv")
            .env("RUST_LOG", "info")
            .current_dir(&project.dir);
        if let Some((url, token, chat)) = &self.telegram {
            cmd.env("TELEGRAM_API_URL", url)
                .env("TELEGRAM_BOT_TOKEN", token)
                .env("TELEGRAM_CHAT_ID", chat.to_string());
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// `piv run` for `project` in the background, output to files beside the project.
    pub fn spawn_run(&self, project: &Project) -> Child {
        let out = std::fs::File::create(project.dir.with_extension("out")).unwrap();
        let err = std::fs::File::create(project.dir.with_extension("err")).unwrap();
        self.command(project, &["run"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn piv run")
    }
}

/// Polls `cond` every millisecond until it holds; panics with `what` after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The `p`th percentile (0–100, nearest rank) of `samples`, in the same unit.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn max(samples: &[f64]) -> f64 {
    samples.iter().cloned().fold(f64::MIN, f64::max)
}

/// Prints one `name value unit` line.
pub fn figure(name: &str, value: impl std::fmt::Display, unit: &str) {
    println!("{name} {value} {unit}");
}

/// Whether a process still exists (a zombie counts: reap children first).
pub fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) only sends a signal.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

/// The published state of an instance (`.agents/orchestrator.state.json`).
pub fn state_of(project: &Project) -> Option<String> {
    piv::io::state_file::read(&project.dir).map(|s| s.state.as_str().to_string())
}

/// A bench setting from the environment (`PIV_BENCH_*`), or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
