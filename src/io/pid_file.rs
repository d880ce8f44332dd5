//! The per-project PID file `<project>/.agents/orchestrator.pid`
//! (`{"pid","startedAt","projectDir"}`, 2-space JSON, written atomically): it refuses a
//! second `piv run` on the same project while the first is alive, replaces a stale one,
//! and is removed on exit by the [`PidFile`] guard.
//!
//! Liveness here is `kill(pid, 0)` (success or `EPERM` = alive), as in the reference: the
//! file is a human-facing "who runs here" marker, and a reused PID at worst asks the
//! human to remove the file, which the refusal message says how to do. The check and the
//! write are not one atomic step; two `piv run` started within the same microseconds on
//! one project could both pass. The registry (one entry per project) makes that visible.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::atomic_file::{self, AtomicFileError};

/// The PID file's path relative to the project directory.
pub const PID_FILE: &str = ".agents/orchestrator.pid";

/// Failures of the PID-file adapter.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error(
        "another piv is already running on this project (pid {pid}, per {path}); \
         stop it first (`kill {pid}` or `piv signal <prefix> shutdown`), \
         or delete {path} if pid {pid} is not piv"
    )]
    AlreadyRunning { pid: u32, path: PathBuf },
    #[error("cannot {step} {path}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicFileError),
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PidRecord {
    pub pid: u32,
    pub started_at: String,
    pub project_dir: String,
}

/// This process's claim on the project; removes the file when released or dropped.
#[must_use = "the PID file is removed as soon as the guard is dropped"]
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    released: bool,
}

/// Whether `pid` names a live process (ours or another user's).
pub fn pid_is_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negatives address process groups, not a process.
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl PidFile {
    /// The PID file path of `project_dir`.
    pub fn path_for(project_dir: &Path) -> PathBuf {
        project_dir.join(PID_FILE)
    }

    /// Reads the current PID file of `project_dir`, if any and parseable.
    pub fn read(project_dir: &Path) -> Option<PidRecord> {
        let text = fs::read_to_string(Self::path_for(project_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Claims the project for this process, writing `{pid, startedAt: now_rfc3339,
    /// projectDir}`. Refuses if the file names another live process; replaces (and logs)
    /// a stale or unparseable file. Creates `.agents/` if missing.
    pub fn acquire(project_dir: &Path, now_rfc3339: &str) -> Result<PidFile, PidFileError> {
        let path = Self::path_for(project_dir);
        let io_err = |step: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| PidFileError::Io { path, step, source }
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        }
        let own_pid = std::process::id();
        match fs::read_to_string(&path) {
            Ok(text) => match serde_json::from_str::<PidRecord>(&text) {
                Ok(record) if record.pid != own_pid && pid_is_alive(record.pid) => {
                    return Err(PidFileError::AlreadyRunning {
                        pid: record.pid,
                        path,
                    });
                }
                Ok(record) => tracing::info!(path = %path.display(), stale_pid = record.pid,
                    "replacing stale PID file (process {} is gone)", record.pid),
                Err(e) => tracing::warn!(path = %path.display(), error = %e,
                    "replacing unparseable PID file"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &path)(e)),
        }
        let record = PidRecord {
            pid: own_pid,
            started_at: now_rfc3339.to_string(),
            project_dir: project_dir.to_string_lossy().into_owned(),
        };
        let mut text = serde_json::to_string_pretty(&record).expect("pid record serialises");
        text.push('\n');
        atomic_file::write(&path, text.as_bytes())?;
        Ok(PidFile {
            path,
            released: false,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file (if it is still ours: a human may have replaced it).
    pub fn release(mut self) -> Result<(), PidFileError> {
        self.released = true;
        self.remove()
    }

    fn remove(&self) -> Result<(), PidFileError> {
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| serde_json::from_str::<PidRecord>(&t).ok())
            .is_none_or(|r| r.pid == std::process::id());
        if !ours {
            tracing::warn!(path = %self.path.display(),
                "PID file now names another process; leaving it");
            return Ok(());
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PidFileError::Io {
                path: self.path.clone(),
                step: "remove",
                source,
            }),
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.remove() {
                tracing::warn!(error = %e, "cannot remove PID file on drop");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_liveness() {
        assert!(pid_is_alive(std::process::id()));
        assert!(pid_is_alive(1), "init exists (EPERM counts as alive)");
        assert!(!pid_is_alive(0));
        assert!(!pid_is_alive(u32::MAX));
    }

    #[test]
    fn acquire_writes_the_record_and_release_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let guard = PidFile::acquire(dir.path(), "2024-01-01T00:00:00Z").unwrap();
        let text = fs::read_to_string(guard.path()).unwrap();
        assert!(text.starts_with("{\n  \"pid\": "), "{text}");
        let record = PidFile::read(dir.path()).unwrap();
        assert_eq!(record.pid, std::process::id());
        assert_eq!(record.started_at, "2024-01-01T00:00:00Z");
        assert_eq!(record.project_dir, dir.path().to_string_lossy());
        let path = guard.path().to_path_buf();
        guard.release().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn drop_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let guard = PidFile::acquire(dir.path(), "t").unwrap();
            guard.path().to_path_buf()
        };
        assert!(!path.exists());
    }

    #[test]
    fn unparseable_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".agents")).unwrap();
        fs::write(PidFile::path_for(dir.path()), "garbage{").unwrap();
        let guard = PidFile::acquire(dir.path(), "t").unwrap();
        assert_eq!(PidFile::read(dir.path()).unwrap().pid, std::process::id());
        drop(guard);
    }
}
