//! Advisory file locks (flock-style, std `File::lock`): opening a lock file, taking it
//! exclusively with or without waiting, and the [`LockGuard`] that releases it.
//!
//! # Semantics
//! `File::lock`/`try_lock` are `flock(2)` on Unix: the lock belongs to the *open file
//! description*, so two opens of the same file conflict even inside one process (which is
//! what the registry's liveness check relies on when it probes its own instance lock),
//! and the kernel releases the lock the instant the holder closes the file or dies,
//! however it dies. The locks are advisory: they bind only processes that take them.
//! A lock is never taken on a file that gets renamed over (`registry.json`): a rename
//! swaps the inode under the lock. On NFS `flock` may be emulated or absent; `$PIV_HOME`
//! is expected on a local disk.
//!
//! # The lock files of piv
//! | file | held by | for | conflicts with |
//! |---|---|---|---|
//! | `$PIV_HOME/registry.lock` | any process doing a registry read-modify-write | the duration of one operation (milliseconds) | every other registry operation |
//! | `$PIV_HOME/instances/<prefix>-<pid>-<nonce>.lock` | one live `piv run` | its whole life: the entry is alive iff the lock is held | only liveness probes (`try_lock`, released at once) |
//! | `$PIV_HOME/bots/<bot id>/owner.lock` | the owner of that bot | as long as it polls `getUpdates` | standby instances of the same bot waiting to take over |
//! | `$PIV_HOME/bots/<bot id>/send-budget.lock` | any instance of that bot about to send a Telegram message | the read-modify-write of the bot's send budget | other senders of the bot |
//! | `$PIV_HOME/usage.lock` | any instance before an agent session or after one that reported on the subscription | the read-modify-write of `usage.json` (usage limit, resume order, overage, daily-cap message) | other instances checking or recording |
//!
//! A holder writes its pid into the lock file (only ever that), so a waiter can say whom
//! it waits for. All lock files are created with mode 0600 and never removed while in use (removing a
//! lock file that someone waits on would let a third process lock a new inode); only a
//! dead instance's own lock file is removed, by the registry prune, after a `try_lock`
//! proved nobody holds it.
//!
//! # Acquisition order
//! A process that needs several locks takes them in this order and releases in reverse:
//! the instance lock (first, for life), then its bot's `owner.lock`, then `registry.lock`,
//! `send-budget.lock` or `usage.lock` briefly (never two of them; never wait for another
//! lock while holding one). `registry.lock` is never held while waiting for `owner.lock`, so a
//! standby blocked on ownership cannot stall the registry. Bots are named by the token's
//! numeric id, never by the token.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Failures of the lock adapter; each names the lock file.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open lock file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock held on a lock file; released by [`LockGuard::release`] or on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct LockGuard {
    /// The open file description that owns the flock; closing it also releases the lock.
    file: Option<File>,
    path: PathBuf,
}

impl LockGuard {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this guard still locks the file now at its path. A lock file deleted or
    /// replaced behind our back (by hand, or by a cleanup) leaves the guard holding a lock
    /// on an orphaned inode while a newcomer locks the new file: both would believe they
    /// hold the lock. Compares device and inode of the open file and of the path.
    pub fn still_locks_its_path(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = &self.file else {
            return false;
        };
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(ours), Ok(now)) => ours.dev() == now.dev() && ours.ino() == now.ino(),
            _ => false,
        }
    }

    /// Releases the lock, reporting a failure to unlock (the file is closed either way,
    /// which releases the lock too).
    pub fn release(mut self) -> std::io::Result<()> {
        match self.file.take() {
            Some(file) => file.unlock(),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            if let Err(e) = file.unlock() {
                tracing::warn!(path = %self.path.display(), error = %e,
                    "cannot unlock; closing the file releases it anyway");
            }
        }
    }
}

/// Opens (creating with mode 0600) the lock file.
fn open_lock_file(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Records this process as the holder (the file's content is only ever this pid, read by
/// a waiter to say whom it waits for). Best effort: the lock works without it.
fn note_holder(file: &File) {
    let pid = format!("{}\n", std::process::id());
    let _ = file
        .set_len(0)
        .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
}

/// The pid a holder recorded, if readable.
fn recorded_holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Takes the lock without waiting: `Ok(None)` when another open file description holds
/// it (another process, or another open in this one); `Err` only for real failures.
pub fn try_lock_exclusive(path: &Path) -> Result<Option<LockGuard>, LockError> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {
            note_holder(&file);
            Ok(Some(LockGuard {
                file: Some(file),
                path: path.to_path_buf(),
            }))
        }
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(source)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Takes the lock, waiting as long as needed. Tries first, and only on contention logs
/// that it is waiting, so a hang is never silent. Blocks the calling thread: call it
/// from a plain thread or `spawn_blocking`, never on an actor's arbiter.
pub fn lock_exclusive(path: &Path) -> Result<LockGuard, LockError> {
    let file = open_lock_file(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = recorded_holder(path)
                .map(|pid| format!(" (held by pid {pid})"))
                .unwrap_or_default();
            tracing::info!(path = %path.display(), "waiting for lock on {}{holder}", path.display());
            file.lock().map_err(|source| LockError::Lock {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Err(TryLockError::Error(source)) => {
            return Err(LockError::Lock {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    note_holder(&file);
    Ok(LockGuard {
        file: Some(file),
        path: path.to_path_buf(),
    })
}

/// Whether someone currently holds the lock on `path` (probed with a `try_lock` that is
/// released at once). A missing file is not held. Conflicts with this process's own
/// guards too, since each open is a separate file description.
pub fn is_held(path: &Path) -> Result<bool, LockError> {
    // O_NONBLOCK: something that is not a lock file (a FIFO) must not hang the probe.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(LockError::Open {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(source)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_guard_notices_its_lock_file_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bot-owner.lock");
        let guard = try_lock_exclusive(&path).unwrap().expect("free");
        assert!(guard.still_locks_its_path());
        std::fs::remove_file(&path).unwrap();
        assert!(!guard.still_locks_its_path(), "deleted");
        // A newcomer now locks a new file at the same path.
        let newcomer = try_lock_exclusive(&path)
            .unwrap()
            .expect("the new file is free");
        assert!(!guard.still_locks_its_path(), "replaced");
        assert!(newcomer.still_locks_its_path());
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn try_lock_returns_none_on_contention_even_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let guard = try_lock_exclusive(&path).unwrap().expect("free lock");
        assert!(try_lock_exclusive(&path).unwrap().is_none());
        assert!(is_held(&path).unwrap());
        guard.release().unwrap();
        assert!(!is_held(&path).unwrap());
        let again = try_lock_exclusive(&path).unwrap();
        assert!(again.is_some());
        drop(again);
        assert!(!is_held(&path).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn missing_file_is_not_held() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_held(&dir.path().join("none.lock")).unwrap());
    }

    #[test]
    fn lock_exclusive_waits_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let guard = lock_exclusive(&path).unwrap();
        assert_eq!(recorded_holder(&path), Some(std::process::id()));
        let (tx, rx) = mpsc::channel();
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            let g = lock_exclusive(&waiter_path).unwrap();
            tx.send(()).unwrap();
            drop(g);
        });
        // Still held: the waiter cannot have got it.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        drop(guard);
        rx.recv_timeout(Duration::from_secs(30))
            .expect("waiter gets the lock once released");
        waiter.join().unwrap();
    }

    #[test]
    fn open_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("x.lock");
        let err = try_lock_exclusive(&path).unwrap_err().to_string();
        assert!(err.contains("missing-dir"), "{err}");
    }
}
