//! The runtime state a running instance publishes for `piv status` and the bot owner:
//! `<project>/.agents/orchestrator.state.json`, written atomically by the PhaseRunner
//! (its only writer) whenever its state changes.

use std::path::{Path, PathBuf};

use crate::core::status::RuntimeState;
use crate::io::atomic_file::{self, AtomicFileError};

pub fn path_for(project_dir: &Path) -> PathBuf {
    project_dir.join(".agents").join("orchestrator.state.json")
}

pub fn write(project_dir: &Path, state: &RuntimeState) -> Result<(), AtomicFileError> {
    let path = path_for(project_dir);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut text = serde_json::to_string_pretty(state).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    atomic_file::write(&path, text.as_bytes())
}

/// The published state, or `None` when there is none or it cannot be parsed (it is
/// rewritten on the next change, so a bad file is not worth keeping).
pub fn read(project_dir: &Path) -> Option<RuntimeState> {
    let text = std::fs::read_to_string(path_for(project_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn remove(project_dir: &Path) {
    let _ = std::fs::remove_file(path_for(project_dir));
}
