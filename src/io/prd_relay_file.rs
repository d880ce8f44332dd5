//! The PRD relay's open mark, `.agents/prd-relay.json`: written by the instance while its
//! relay is open, read by the bot owner to route free text typed outside a topic (a
//! message goes to the chat's one open relay). The relay itself lives in memory and ends
//! with its run, so a mark left by a killed run is removed at the next start.

use std::path::{Path, PathBuf};

use crate::io::atomic_file::{self, AtomicFileError};

/// The mark's file name under `.agents/`.
pub const FILE_NAME: &str = "prd-relay.json";

pub fn path(project_dir: &Path) -> PathBuf {
    project_dir.join(".agents").join(FILE_NAME)
}

/// Marks the relay open; `since` (RFC 3339) is informational.
pub fn mark_open(project_dir: &Path, since: &str) -> Result<(), AtomicFileError> {
    let body = serde_json::json!({ "open": true, "since": since }).to_string();
    atomic_file::write(&path(project_dir), body.as_bytes())
}

/// Removes the mark (a missing mark is fine).
pub fn mark_closed(project_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(project_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether the instance on `project_dir` has its relay open.
pub fn is_open(project_dir: &Path) -> bool {
    path(project_dir).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_opens_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".agents")).unwrap();
        assert!(!is_open(dir.path()));
        mark_open(dir.path(), "2026-01-01T00:00:00Z").unwrap();
        assert!(is_open(dir.path()));
        mark_closed(dir.path()).unwrap();
        assert!(!is_open(dir.path()));
        mark_closed(dir.path()).unwrap();
    }
}
