//! The instance's open escalation, `.agents/telegram-outbox/open-escalation.json`
//! (`{"open": <id>}`): written by the instance's notifier when it posts an escalation with
//! buttons, cleared when the run goes on; read (and cleared once a button acted) by the bot
//! owner, so a tap acts only on the escalation still open, exactly once, across a takeover.
//! It lives in the outbox directory (piv's git-ignored chat files of the instance; the
//! outbox reads only its numbered entries).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::io::atomic_file::{self, AtomicFileError};

/// The file's name in the outbox directory.
pub const ESCALATION_FILE: &str = "open-escalation.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct EscalationFile {
    #[serde(default)]
    open: Option<u64>,
    /// Fields a newer piv wrote, kept.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The file of the project in `project_dir`.
pub fn path_in_project(project_dir: &Path) -> PathBuf {
    project_dir
        .join(".agents")
        .join(crate::io::outbox::OUTBOX_DIR)
        .join(ESCALATION_FILE)
}

/// The open escalation's id (none: no file, nothing open, or unreadable).
pub fn read_open(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<EscalationFile>(&text).ok()?.open
}

/// Records `open` (none: nothing open).
pub fn write_open(path: &Path, open: Option<u64>) -> Result<(), AtomicFileError> {
    let mut file = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<EscalationFile>(&t).ok())
        .unwrap_or_default();
    file.open = open;
    let json = serde_json::to_vec(&file).expect("escalation file serialises");
    atomic_file::write_with_mode(path, &json, 0o600)
}

/// Clears `id` if it is still the open one (a button acted on it); `false` when it was not.
pub fn close_if_open(path: &Path, id: u64) -> Result<bool, AtomicFileError> {
    if read_open(path) != Some(id) {
        return Ok(false);
    }
    write_open(path, None)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_and_keep_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        assert_eq!(read_open(&path), None);
        write_open(&path, Some(7)).unwrap();
        assert_eq!(read_open(&path), Some(7));
        assert!(!close_if_open(&path, 6).unwrap(), "not the open one");
        assert_eq!(read_open(&path), Some(7));
        std::fs::write(&path, r#"{"open":7,"newer":1}"#).unwrap();
        assert!(close_if_open(&path, 7).unwrap());
        assert!(!close_if_open(&path, 7).unwrap(), "exactly once");
        assert_eq!(read_open(&path), None);
        assert!(std::fs::read_to_string(&path).unwrap().contains("newer"));
    }
}
