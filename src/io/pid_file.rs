//! The per-project PID file `<project>/.agents/orchestrator.pid`
//! (`{"pid","startedAt","projectDir"}`, 2-space JSON, written atomically): it refuses a
//! second `piv run` on the same project while the first is alive, replaces a stale one,
//! and is removed on exit by the [`PidFile`] guard.
//!
//! Whether piv runs here is decided by a kernel lock, not by the PID: the running `piv run`
//! holds `.agents/orchestrator.lock` for its whole life (the kernel drops it however the
//! process dies), so a PID reused after a crash or a reboot never blocks the next start,
//! and two `piv run` started at the same instant cannot both win. The PID file stays the
//! human-facing "who runs here" marker. An unparseable PID file (bad JSON, bytes that are
//! not UTF-8) is quarantined like every other state file, never silently overwritten.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::lock::{self, LockError, LockGuard};
use crate::io::PathIoError;

/// The PID file's path relative to the project directory.
pub const PID_FILE: &str = ".agents/orchestrator.pid";
/// The lock a running `piv run` holds on its project, relative to the project directory.
pub const LOCK_FILE: &str = ".agents/orchestrator.lock";

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
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl PathIoError for PidFileError {
    fn from_io(path: PathBuf, step: &'static str, source: std::io::Error) -> Self {
        PidFileError::Io { path, step, source }
    }
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
    /// The project lock: held as long as this guard lives.
    _lock: LockGuard,
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
        let bytes = fs::read(Self::path_for(project_dir)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The pid of the `piv run` that holds `project_dir` now, if one does (the project
    /// lock is held); the PID file's pid when readable, else the lock holder's note.
    pub fn running(project_dir: &Path) -> Option<u32> {
        let lock_path = project_dir.join(LOCK_FILE);
        if !lock::is_held(&lock_path).unwrap_or(false) {
            return None;
        }
        Self::read(project_dir).map(|r| r.pid).or_else(|| {
            fs::read_to_string(&lock_path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
    }

    /// Claims the project for this process: takes the project lock, then writes `{pid,
    /// startedAt: now_rfc3339, projectDir}`. Refuses while another `piv run` holds the
    /// lock; replaces a stale PID file and quarantines an unparseable one. Creates
    /// `.agents/` if missing.
    pub fn acquire(project_dir: &Path, now_rfc3339: &str) -> Result<PidFile, PidFileError> {
        let path = Self::path_for(project_dir);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(PidFileError::io("create directory", dir))?;
        }
        let own_pid = std::process::id();
        let lock_path = project_dir.join(LOCK_FILE);
        let Some(lock) = lock::try_lock_exclusive(&lock_path)? else {
            let pid = Self::read(project_dir)
                .map(|r| r.pid)
                .or_else(|| {
                    fs::read_to_string(&lock_path)
                        .ok()
                        .and_then(|t| t.trim().parse().ok())
                })
                .unwrap_or(0);
            return Err(PidFileError::AlreadyRunning { pid, path });
        };
        // The lock is ours: whatever PID file is there was left by a piv that is gone.
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<PidRecord>(&bytes) {
                Ok(record) if record.pid == own_pid => {}
                Ok(record) => tracing::info!(path = %path.display(), stale_pid = record.pid,
                    "replacing stale PID file (no piv holds the project lock)"),
                Err(e) => {
                    let moved = atomic_file::quarantine(&path)?;
                    tracing::warn!(path = %path.display(), error = %e, quarantined = %moved.display(),
                        "unparseable PID file quarantined");
                    crate::io::terminal::warn(&format!(
                        "piv: warning: {} could not be parsed ({e}); moved it to {}",
                        path.display(),
                        moved.display()
                    ));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PidFileError::io("read", &path)(e)),
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
            _lock: lock,
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
        let ours = fs::read(&self.path)
            .ok()
            .and_then(|t| serde_json::from_slice::<PidRecord>(&t).ok())
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
    fn unparseable_files_are_quarantined_then_replaced() {
        for bad in [&b"garbage{"[..], &[0xff, 0xfe, 0x00, 0x9f][..]] {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join(".agents")).unwrap();
            fs::write(PidFile::path_for(dir.path()), bad).unwrap();
            let guard = PidFile::acquire(dir.path(), "t").unwrap();
            assert_eq!(PidFile::read(dir.path()).unwrap().pid, std::process::id());
            let quarantined: Vec<_> = fs::read_dir(dir.path().join(".agents"))
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("orchestrator.pid.corrupt-")
                })
                .collect();
            assert_eq!(quarantined.len(), 1);
            assert_eq!(fs::read(quarantined[0].path()).unwrap(), bad);
            drop(guard);
        }
    }

    #[test]
    fn a_live_pid_without_the_lock_does_not_block_and_the_lock_does() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".agents")).unwrap();
        // pid 1 is alive but is not a piv of this project (a reused PID).
        let record = PidRecord {
            pid: 1,
            started_at: "t".into(),
            project_dir: "x".into(),
        };
        fs::write(
            PidFile::path_for(dir.path()),
            serde_json::to_string(&record).unwrap(),
        )
        .unwrap();
        assert_eq!(PidFile::running(dir.path()), None);
        let guard = PidFile::acquire(dir.path(), "t").unwrap();
        assert_eq!(PidFile::running(dir.path()), Some(std::process::id()));
        match PidFile::acquire(dir.path(), "t") {
            Err(PidFileError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, std::process::id())
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        drop(guard);
        assert_eq!(PidFile::running(dir.path()), None);
    }
}
