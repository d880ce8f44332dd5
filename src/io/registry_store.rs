//! The registry on disk: every read-modify-write of `$PIV_HOME/registry.json` under the
//! exclusive `$PIV_HOME/registry.lock`, liveness by per-instance locks, pruning of dead
//! entries, and the [`Registration`] guard of one running instance.
//!
//! # Liveness that survives PID reuse
//! Each registered instance holds an exclusive flock on its own, uniquely named file
//! `$PIV_HOME/instances/<prefix>-<pid>-<nanos>-<seq>.lock` for its whole life, and records
//! the path as `instanceLock` in its entry. An entry is alive iff that lock is held right
//! now (a `try_lock` that fails with `WouldBlock`); the kernel drops the lock when the
//! process dies, however it dies, so a recycled PID cannot keep a dead entry alive.
//! flock conflicts between two opens of one file even inside one process, so probing our
//! own entry correctly reports it alive. An entry without `instanceLock` (written by the
//! reference implementation) falls back to `kill(pid, 0)`.
//!
//! Dead entries are pruned at the start of every operation, and their lock files (and any
//! orphaned, unheld lock file in `instances/`) removed. New lock files are created and
//! locked only while `registry.lock` is held, so that sweep never races a registration.
//!
//! # Corruption
//! A `registry.json` that does not parse is quarantined (`registry.json.corrupt-*`, reason
//! logged) and the operation continues from an empty registry. Every live instance
//! re-adds itself through [`RegistryStore::ensure_registered`] (the registry actor calls it
//! every few seconds), so the registry is rebuilt from the live instances, never silently
//! emptied for good.
//!
//! `PIV_REGISTRY_DISABLED=1` is handled by the callers: they simply do not build a store.
//! Everything here blocks on `registry.lock`: call it off the actor threads.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::bot_chats::BotChat;
use crate::core::registry::{Instance, Registry};
use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::home::{self, HomeError};
use crate::io::lock::{self, LockError, LockGuard};
use crate::io::pid_file::pid_is_alive;

/// File names inside `$PIV_HOME`.
pub const REGISTRY_FILE: &str = "registry.json";
pub const REGISTRY_LOCK: &str = "registry.lock";

/// Distinguishes the lock files of several registrations made by one process (tests).
static LOCK_SEQ: AtomicU64 = AtomicU64::new(0);

/// Failures of the registry store.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicFileError),
    #[error(
        "prefix {prefix:?} is already used by the running instance of {other_project}; \
         set TELEGRAM_PROJECT_PREFIX to a different prefix"
    )]
    DuplicatePrefix {
        prefix: String,
        other_project: String,
    },
    #[error("registry operation did not finish: {0}")]
    Background(String),
    #[error(
        "{project_dir} is already registered by the running process {pid}; \
         stop it first (`piv signal {prefix} shutdown`)"
    )]
    ProjectRunning {
        project_dir: String,
        prefix: String,
        pid: u32,
    },
}

/// `$PIV_HOME`'s registry: cheap to clone, holds no open file between operations.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    home: PathBuf,
}

/// What one locked operation found before applying its change.
struct Loaded {
    registry: Registry,
    /// The file was missing or quarantined: write even if nothing else changed, so the
    /// file exists again.
    must_write: bool,
}

impl RegistryStore {
    /// A store over `home` (created with its `instances/` on first use).
    pub fn new(home: PathBuf) -> Self {
        RegistryStore { home }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn registry_path(&self) -> PathBuf {
        self.home.join(REGISTRY_FILE)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.home.join(REGISTRY_LOCK)
    }

    fn instances_dir(&self) -> PathBuf {
        home::instances_dir(&self.home)
    }

    /// Registers this process for `project_dir`: takes a fresh instance lock, prunes dead
    /// entries, refuses a prefix used by another live project, and adds or updates the
    /// entry of `project_dir`.
    pub fn register(
        &self,
        prefix: &str,
        project_dir: &str,
        manifest_path: &str,
        started_at: &str,
    ) -> Result<Registration, RegistryError> {
        self.register_reporting_to(prefix, project_dir, manifest_path, started_at, None)
    }

    /// [`register`](Self::register), recording the Telegram bot and chat the instance
    /// reports to (`botId`, `chatId`): the bot's owner answers that chat and shows it
    /// this instance.
    pub fn register_reporting_to(
        &self,
        prefix: &str,
        project_dir: &str,
        manifest_path: &str,
        started_at: &str,
        chat: Option<BotChat>,
    ) -> Result<Registration, RegistryError> {
        let pid = std::process::id();
        let mut taken_lock = None;
        let instance = self.modify(|registry, store| {
            if let Some(other) = registry.duplicate_prefix(prefix, project_dir) {
                return Err(RegistryError::DuplicatePrefix {
                    prefix: prefix.to_string(),
                    other_project: other.project_dir.clone(),
                });
            }
            if let Some(existing) = registry.find_project(project_dir) {
                if existing.pid != pid {
                    return Err(RegistryError::ProjectRunning {
                        project_dir: project_dir.to_string(),
                        prefix: existing.prefix.clone(),
                        pid: existing.pid,
                    });
                }
            }
            // Created under registry.lock so the orphan sweep cannot see it unlocked.
            let (guard, path) = store.new_instance_lock(prefix)?;
            let mut instance = Instance::new(prefix, project_dir, pid, started_at, manifest_path);
            instance.instance_lock = Some(path.to_string_lossy().into_owned());
            instance.bot_id = chat.map(|c| c.bot_id);
            instance.chat_id = chat.map(|c| c.chat_id);
            registry.upsert(instance.clone());
            taken_lock = Some(guard);
            Ok(instance)
        });
        let instance = match instance {
            Ok(i) => i,
            Err(e) => {
                // A lock file taken before a failed write would be an orphan; drop it now.
                if let Some(guard) = taken_lock {
                    let path = guard.path().to_path_buf();
                    drop(guard);
                    let _ = fs::remove_file(path);
                }
                return Err(e);
            }
        };
        let lock = taken_lock.expect("lock taken when registration succeeded");
        tracing::info!(prefix, project_dir, pid, "registered instance");
        Ok(Registration {
            store: self.clone(),
            instance,
            lock: Some(lock),
            done: false,
        })
    }

    /// Re-adds `registration`'s entry if it is missing (after a quarantine) or no longer
    /// ours; returns whether it had to. Also prunes, like every operation.
    pub fn ensure_registered(&self, registration: &Registration) -> Result<bool, RegistryError> {
        let ours = &registration.instance;
        self.modify(|registry, _| {
            let present = registry
                .find_project(&ours.project_dir)
                .is_some_and(|i| i.instance_lock == ours.instance_lock && i.prefix == ours.prefix);
            if present {
                return Ok(false);
            }
            if let Some(other) = registry.duplicate_prefix(&ours.prefix, &ours.project_dir) {
                return Err(RegistryError::DuplicatePrefix {
                    prefix: ours.prefix.clone(),
                    other_project: other.project_dir.clone(),
                });
            }
            registry.upsert(ours.clone());
            if ours.is_bot_owner {
                registry.set_bot_owner(&ours.project_dir, true);
            }
            tracing::info!(prefix = %ours.prefix, "re-added this instance to the registry");
            Ok(true)
        })
    }

    /// The live instances (dead ones are pruned first).
    pub fn list(&self) -> Result<Vec<Instance>, RegistryError> {
        self.modify(|registry, _| Ok(registry.instances.clone()))
    }

    /// Prunes dead entries and returns them.
    pub fn prune(&self) -> Result<Vec<Instance>, RegistryError> {
        let mut pruned = Vec::new();
        self.locked(|loaded, store| {
            pruned = store.prune_dead(&mut loaded.registry);
            Ok(())
        })?;
        Ok(pruned)
    }

    /// Sets the `isBotOwner` mark of `project_dir` (clearing everyone else's when
    /// `true`); returns whether the entry exists.
    pub fn set_bot_owner(&self, project_dir: &str, is_owner: bool) -> Result<bool, RegistryError> {
        self.modify(|registry, _| Ok(registry.set_bot_owner(project_dir, is_owner)))
    }

    /// Removes `instance`'s entry if it is still the one with its lock.
    fn remove_entry(&self, instance: &Instance) -> Result<(), RegistryError> {
        self.modify(|registry, _| {
            if registry
                .find_project(&instance.project_dir)
                .is_some_and(|i| i.instance_lock == instance.instance_lock)
            {
                registry.remove(&instance.project_dir);
            }
            Ok(())
        })
    }

    /// One read-prune-modify-write under `registry.lock`.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Registry, &RegistryStore) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut out = None;
        self.locked(|loaded, store| {
            store.prune_dead(&mut loaded.registry);
            out = Some(change(&mut loaded.registry, store)?);
            Ok(())
        })?;
        Ok(out.expect("set when locked() succeeds"))
    }

    /// Loads the registry under `registry.lock`, applies `body`, and writes the result
    /// atomically if it changed (or the file must be recreated). `body`'s error aborts
    /// without writing.
    fn locked(
        &self,
        body: impl FnOnce(&mut Loaded, &RegistryStore) -> Result<(), RegistryError>,
    ) -> Result<(), RegistryError> {
        home::ensure_home(&self.home)?;
        let guard = lock::lock_exclusive(&self.lock_path())?;
        let mut loaded = self.load()?;
        let before = loaded.registry.clone();
        body(&mut loaded, self)?;
        if loaded.must_write || loaded.registry != before {
            loaded.registry.last_updated =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            atomic_file::write(
                &self.registry_path(),
                loaded.registry.to_json_pretty().as_bytes(),
            )?;
        }
        self.sweep_orphan_locks(&loaded.registry);
        if let Err(e) = guard.release() {
            tracing::warn!(error = %e, "cannot unlock registry.lock; closing releases it");
        }
        Ok(())
    }

    /// Reads `registry.json`; quarantines it (logging why) if it does not parse.
    fn load(&self) -> Result<Loaded, RegistryError> {
        let path = self.registry_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    registry: Registry::default(),
                    must_write: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Not UTF-8: as corrupt as bad JSON.
                return self.quarantined(&path, &e.to_string());
            }
            Err(source) => return Err(RegistryError::Read { path, source }),
        };
        match Registry::parse(&text) {
            Ok(registry) => Ok(Loaded {
                registry,
                must_write: false,
            }),
            Err(e) => self.quarantined(&path, &e.to_string()),
        }
    }

    fn quarantined(&self, path: &Path, reason: &str) -> Result<Loaded, RegistryError> {
        let kept = atomic_file::quarantine(path)?;
        tracing::warn!(path = %path.display(), kept = %kept.display(), reason,
            "registry.json is corrupt: kept a copy and rebuilding it from the live instances");
        Ok(Loaded {
            registry: Registry::default(),
            must_write: true,
        })
    }

    /// Removes dead entries, deletes their lock files, and returns them.
    fn prune_dead(&self, registry: &mut Registry) -> Vec<Instance> {
        let dead = registry.prune(|i| self.is_alive(i));
        for instance in &dead {
            tracing::info!(prefix = %instance.prefix, pid = instance.pid,
                project_dir = %instance.project_dir, "pruned dead instance from the registry");
            if let Some(path) = self.owned_lock_path(instance) {
                remove_quietly(&path);
            }
        }
        dead
    }

    /// Whether `instance` is running: its instance lock is held, or (entries without
    /// one) its PID exists. An unreadable lock file counts as alive: pruning a live
    /// instance would be worse than keeping a dead one a little longer.
    fn is_alive(&self, instance: &Instance) -> bool {
        match self.owned_lock_path(instance) {
            Some(path) => lock::is_held(&path).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot probe an instance lock; keeping the entry");
                true
            }),
            None => pid_is_alive(instance.pid),
        }
    }

    /// The entry's lock path if it is a lock file of ours (inside `instances/`, ending in
    /// `.lock`); anything else in a hand-edited registry is neither probed nor deleted.
    fn owned_lock_path(&self, instance: &Instance) -> Option<PathBuf> {
        let path = PathBuf::from(instance.instance_lock.as_deref()?);
        let name = path.file_name()?.to_str()?;
        (path.parent() == Some(self.instances_dir().as_path())
            && name.ends_with(".lock")
            && !name.starts_with('.'))
        .then_some(path)
    }

    /// Deletes lock files in `instances/` that nobody holds and no entry names (left by a
    /// crash between taking the lock and writing the registry). Runs under
    /// `registry.lock`, which every lock-file creation also holds.
    fn sweep_orphan_locks(&self, registry: &Registry) {
        let Ok(entries) = fs::read_dir(self.instances_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_lock = path.extension().is_some_and(|e| e == "lock");
            let named = registry
                .instances
                .iter()
                .any(|i| i.instance_lock.as_deref() == path.to_str());
            if is_lock && !named && matches!(lock::is_held(&path), Ok(false)) {
                remove_quietly(&path);
            }
        }
    }

    /// Creates and locks a new, uniquely named instance lock file.
    fn new_instance_lock(&self, prefix: &str) -> Result<(LockGuard, PathBuf), RegistryError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = self.instances_dir().join(format!(
            "{}-{}-{nanos}-{}.lock",
            sanitise_prefix(prefix),
            std::process::id(),
            LOCK_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match lock::try_lock_exclusive(&path)? {
            Some(guard) => Ok((guard, path)),
            // A brand-new name cannot be held; if it is, something else is badly wrong.
            None => Err(RegistryError::Lock(LockError::Lock {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "a fresh instance lock is already held",
                ),
            })),
        }
    }
}

/// A prefix reduced to characters safe in a file name, at most 32 of them.
fn sanitise_prefix(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    if clean.is_empty() {
        "instance".to_string()
    } else {
        clean
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale lock file");
        }
    }
}

/// One running instance's place in the registry. Holds the instance lock that keeps the
/// entry alive; [`Registration::deregister`] removes the entry and the lock file, and
/// dropping the guard does the same, best effort.
#[must_use = "the instance is deregistered as soon as the guard is dropped"]
#[derive(Debug)]
pub struct Registration {
    store: RegistryStore,
    instance: Instance,
    lock: Option<LockGuard>,
    done: bool,
}

impl Registration {
    /// The entry as this instance registered it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    pub fn store(&self) -> &RegistryStore {
        &self.store
    }

    /// The instance lock file this registration holds.
    pub fn lock_path(&self) -> Option<&Path> {
        self.lock.as_ref().map(|l| l.path())
    }

    /// Marks (or unmarks) this instance as the bot owner, in the registry and in the entry
    /// `ensure_registered` would re-add.
    pub fn set_bot_owner(&mut self, is_owner: bool) -> Result<(), RegistryError> {
        self.instance.is_bot_owner = is_owner;
        self.store
            .set_bot_owner(&self.instance.project_dir, is_owner)?;
        Ok(())
    }

    /// Removes the entry, releases the instance lock and deletes its file.
    pub fn deregister(mut self) -> Result<(), RegistryError> {
        self.done = true;
        self.release_all()
    }

    fn release_all(&mut self) -> Result<(), RegistryError> {
        let result = self.store.remove_entry(&self.instance);
        if let Some(lock) = self.lock.take() {
            let path = lock.path().to_path_buf();
            if let Err(e) = lock.release() {
                tracing::warn!(path = %path.display(), error = %e, "cannot unlock instance lock");
            }
            remove_quietly(&path);
        }
        if result.is_ok() {
            tracing::info!(prefix = %self.instance.prefix, "deregistered instance");
        }
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.release_all() {
                tracing::warn!(error = %e, "cannot deregister on drop; the entry will be pruned");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitise_table() {
        for (input, expected) in [
            ("alpha", "alpha"),
            ("a b/c", "a_b_c"),
            ("../x", "___x"),
            ("", "instance"),
            ("é", "_"),
        ] {
            assert_eq!(sanitise_prefix(input), expected, "{input}");
        }
        assert_eq!(sanitise_prefix(&"x".repeat(100)).len(), 32);
    }

    #[test]
    fn register_list_deregister() {
        let dir = tempfile::tempdir().unwrap();
        let store = RegistryStore::new(dir.path().join("home"));
        assert!(store.list().unwrap().is_empty());
        let reg = store.register("a", "/p/a", "/p/a/m.yaml", "t0").unwrap();
        let lock_path = reg.lock_path().unwrap().to_path_buf();
        assert!(lock_path.exists());
        let listed = store.list().unwrap();
        assert_eq!(
            listed.len(),
            1,
            "own entry is alive: flock conflicts in-process"
        );
        assert_eq!(listed[0].prefix, "a");
        assert_eq!(listed[0].instance_lock.as_deref(), lock_path.to_str());
        reg.deregister().unwrap();
        assert!(store.list().unwrap().is_empty());
        assert!(!lock_path.exists());
    }

    #[test]
    fn a_lock_path_outside_instances_is_never_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let victim = dir.path().join("precious.lock");
        fs::write(&victim, "keep").unwrap();
        home::ensure_home(&home).unwrap();
        let mut registry = Registry::default();
        let mut i = Instance::new("x", "/p/x", u32::MAX, "t", "m");
        i.instance_lock = Some(victim.to_string_lossy().into_owned());
        registry.upsert(i);
        fs::write(home.join(REGISTRY_FILE), registry.to_json_pretty()).unwrap();
        let store = RegistryStore::new(home);
        let pruned = store.prune().unwrap();
        assert_eq!(pruned.len(), 1, "dead by pid fallback");
        assert!(victim.exists());
    }
}
