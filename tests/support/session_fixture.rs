//! A project with the PIV slash commands, a scenario for the scripted claude and its call
//! log: what the single-session tests (`agent`, `agent_cli`) run `run_session` against.

use std::path::PathBuf;
use std::time::Duration;

use piv::io::agent::AgentConfig;
use piv::testkit::fake_claude::{Scenario, LOG_ENV, SCRIPT_ENV, STATE_DIR_ENV};
use serde_json::Value;
use tokio::sync::watch;

use super::FAKE_CLAUDE;

pub struct SessionFixture {
    pub dir: tempfile::TempDir,
    pub project: PathBuf,
    pub script: PathBuf,
    pub log: PathBuf,
}

impl SessionFixture {
    pub fn new(scenario: Scenario) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        // The PIV slash commands, as a real project has them (the CLI lists them in init).
        let commands = project.join(".claude/commands");
        std::fs::create_dir_all(&commands).unwrap();
        for c in piv::testkit::project::COMMAND_FILES {
            std::fs::write(commands.join(format!("{c}.md")), format!("# /{c}\n")).unwrap();
        }
        let script = dir.path().join("scenario.json");
        scenario.write(&script).unwrap();
        Self {
            log: dir.path().join("fake.log"),
            script,
            project,
            dir,
        }
    }

    /// Generous limits (the tests that need tight ones set them) and the scripted claude.
    pub fn cfg(&self) -> AgentConfig {
        AgentConfig {
            timeout: Duration::from_secs(120),
            stall: Duration::from_secs(120),
            kill_grace: Duration::from_secs(2),
            env: vec![
                (SCRIPT_ENV.into(), self.script.display().to_string()),
                (LOG_ENV.into(), self.log.display().to_string()),
                (STATE_DIR_ENV.into(), self.dir.path().display().to_string()),
            ],
            ..AgentConfig::new(FAKE_CLAUDE, &self.project)
        }
    }

    /// Adds `.claude/commands/<name>.md` for each name (the CLI lists them in init).
    pub fn add_commands(&self, names: &[&str]) {
        for name in names {
            let path = self.project.join(format!(".claude/commands/{name}.md"));
            std::fs::write(path, format!("# /{name}\n")).unwrap();
        }
    }

    /// The scripted claude's calls so far.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A cancel channel that never fires (its sender lives for the whole test process: a
/// dropped sender would read as "never cancelled" too, but explicitly).
pub fn no_cancel() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}
