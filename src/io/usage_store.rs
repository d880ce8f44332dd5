//! The usage record of one `$PIV_HOME` (`usage.json`), shared by every instance of the
//! home: read and changed under an exclusive lock on `usage.lock`, written atomically.
//!
//! Each change reads the record, drops the members whose process is gone, applies the
//! caller's change (a `core::usage` rule) and writes the record back with mode 0600. An
//! unparseable record is quarantined and the change starts from an empty one (worst case:
//! one more session meets the limit). The lock wait blocks: call it off the actor thread.

use std::path::{Path, PathBuf};

use crate::core::usage::UsageRecord;
use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::lock::{self, LockError};

/// Failures of the usage record; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum UsageStoreError {
    #[error("usage record: {0}")]
    Lock(#[from] LockError),
    #[error("usage record: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("usage record: {0}")]
    Write(#[from] AtomicFileError),
}

/// A handle on `$PIV_HOME/usage.json`.
#[derive(Debug, Clone)]
pub struct UsageStore {
    lock_path: PathBuf,
    path: PathBuf,
}

impl UsageStore {
    /// The record of `home` (which must exist).
    pub fn new(home: &Path) -> Self {
        UsageStore {
            lock_path: home.join("usage.lock"),
            path: home.join("usage.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the record, changes it with `f` and writes it back, all under the lock.
    pub fn update<T>(&self, f: impl FnOnce(&mut UsageRecord) -> T) -> Result<T, UsageStoreError> {
        let guard = lock::lock_exclusive(&self.lock_path)?;
        let mut record = self.read_unlocked()?;
        record.members.retain(|_, m| process_alive(m.pid));
        let out = f(&mut record);
        let mut json = serde_json::to_vec_pretty(&record).expect("usage record serialises");
        json.push(b'\n');
        atomic_file::write_with_mode(&self.path, &json, 0o600)?;
        drop(guard);
        Ok(out)
    }

    /// The record as it is (renames are atomic, so no lock is needed to read it).
    pub fn read(&self) -> Result<UsageRecord, UsageStoreError> {
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> Result<UsageRecord, UsageStoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => Ok(r),
                Err(e) => {
                    match atomic_file::quarantine(&self.path) {
                        Ok(to) => tracing::warn!(
                            "usage record {} unreadable ({e}); set aside as {}",
                            self.path.display(),
                            to.display()
                        ),
                        Err(q) => tracing::warn!("usage record unreadable ({e}); {q}"),
                    }
                    Ok(UsageRecord::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsageRecord::default()),
            Err(source) => Err(UsageStoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

/// Whether a process exists (a process of another user counts as alive).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::usage::Member;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn changes_are_kept_dead_members_dropped_and_garbage_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::new(dir.path());
        store
            .update(|r| {
                for (name, pid) in [("me", std::process::id()), ("dead", u32::MAX - 1)] {
                    r.members.insert(
                        name.into(),
                        Member {
                            pid,
                            priority: 0,
                            started_at: String::new(),
                        },
                    );
                }
            })
            .unwrap();
        let kept: Vec<String> = store
            .update(|r| r.members.keys().cloned().collect())
            .unwrap();
        assert_eq!(kept, ["me"]);
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(store.path(), "{not json").unwrap();
        assert_eq!(store.read().unwrap(), UsageRecord::default());
        let aside = std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("usage.json.corrupt-")
        });
        assert!(aside);
    }

    #[test]
    fn concurrent_updates_are_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = UsageStore::new(dir.path());
                std::thread::spawn(move || {
                    for i in 0..10 {
                        store
                            .update(|r| {
                                r.extra.insert(format!("k{t}-{i}"), serde_json::json!(1));
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(UsageStore::new(dir.path()).read().unwrap().extra.len(), 40);
    }
}
