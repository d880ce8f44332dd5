//! The instance registry, PID file and registry actor with real processes: concurrent
//! registration from 16 processes, pruning of killed instances (also under PID reuse),
//! quarantine and rebuild of a corrupt registry, duplicate prefixes, the PID file guard.
//!
//! Child processes are this test binary re-executed on the ignored [`child_worker`] test
//! (`--exact registry::child_worker --ignored`), told what to do through environment
//! variables: real, separate processes with their own locks.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use piv::actors::registry::{InstanceIdentity, ListInstances, Register, RegistryActor};
use piv::core::registry::{Instance, Registry};
use piv::io::pid_file::{PidFile, PidFileError};
use piv::io::registry_store::{RegistryError, RegistryStore};

/// Generous: the machine is small and shared.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A child process running one `child_worker` mode; its stdout lines arrive on `lines`.
pub struct Worker {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    /// Re-executes this test binary on `test` (a full test path) with `env`.
    pub fn spawn(test: &str, env: &[(&str, String)]) -> Worker {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                test,
                "--nocapture",
                "--ignored",
                "--test-threads=1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn child test process");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Worker {
            child,
            stdin,
            lines,
        }
    }

    /// Waits until the child prints a line containing `marker`.
    pub fn wait_for(&mut self, marker: &str) {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return,
                Ok(_) => {}
                Err(_) => panic!(
                    "child {} did not print {marker:?} within {DEADLINE:?} (status {:?})",
                    self.child.id(),
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Closes the child's stdin (its cue to finish) and waits for a successful exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"))
}

fn wait_stdin_closed() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Not a test: the body of the child processes the tests below spawn. Without
/// `PIV_TEST_CHILD` it does nothing.
#[test]
#[ignore = "child process of the multi-process registry tests"]
fn child_worker() {
    let Ok(mode) = std::env::var("PIV_TEST_CHILD") else {
        return;
    };
    match mode.as_str() {
        // Register/list/deregister `rounds` times, then register and hold until stdin
        // closes, then deregister.
        "cycle" | "hold" => {
            let store = RegistryStore::new(PathBuf::from(env_var("PIV_TEST_HOME")));
            let prefix = env_var("PIV_TEST_PREFIX");
            let project = env_var("PIV_TEST_PROJECT");
            let rounds: usize = std::env::var("PIV_TEST_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let mine = |store: &RegistryStore| {
                store
                    .list()
                    .unwrap()
                    .iter()
                    .any(|i| i.project_dir == project && i.pid == std::process::id())
            };
            for _ in 0..rounds {
                let reg = store.register(&prefix, &project, "m.yaml", "t").unwrap();
                assert!(mine(&store), "own entry listed after register");
                reg.deregister().unwrap();
                assert!(!mine(&store), "own entry gone after deregister");
            }
            let reg = store.register(&prefix, &project, "m.yaml", "t").unwrap();
            println!("REGISTERED");
            wait_stdin_closed();
            reg.deregister().unwrap();
            println!("DEREGISTERED");
        }
        "pidfile" => {
            let guard = PidFile::acquire(Path::new(&env_var("PIV_TEST_PROJECT")), "t").unwrap();
            println!("REGISTERED");
            wait_stdin_closed();
            guard.release().unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn holder(home: &Path, prefix: &str, project: &str, rounds: usize) -> Worker {
    Worker::spawn(
        "registry::child_worker",
        &[
            ("PIV_TEST_CHILD", "cycle".into()),
            ("PIV_TEST_HOME", home.display().to_string()),
            ("PIV_TEST_PREFIX", prefix.into()),
            ("PIV_TEST_PROJECT", project.into()),
            ("PIV_TEST_ROUNDS", rounds.to_string()),
        ],
    )
}

fn prefixes(instances: &[Instance]) -> Vec<String> {
    let mut p: Vec<String> = instances.iter().map(|i| i.prefix.clone()).collect();
    p.sort();
    p
}

fn lock_files(home: &Path) -> Vec<PathBuf> {
    fs::read_dir(home.join("instances"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// 16 processes registering and deregistering at once lose no entry, and a reader that
/// never takes the lock always sees a complete, parseable registry.json.
#[test]
fn sixteen_processes_register_concurrently_without_losing_entries_or_tearing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = RegistryStore::new(home.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, path) = (stop.clone(), reads.clone(), store.registry_path());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(text) = fs::read_to_string(&path) {
                    assert!(!text.is_empty(), "registry.json seen empty");
                    Registry::parse(&text)
                        .unwrap_or_else(|e| panic!("torn registry.json: {e}\n{text}"));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::yield_now();
            }
        })
    };

    let mut workers: Vec<Worker> = (0..16)
        .map(|n| holder(&home, &format!("p{n:02}"), &format!("/proj/{n:02}"), 4))
        .collect();
    for w in &mut workers {
        w.wait_for("REGISTERED");
    }
    let listed = store.list().unwrap();
    let expected: Vec<String> = (0..16).map(|n| format!("p{n:02}")).collect();
    assert_eq!(prefixes(&listed), expected, "every holder is listed");
    assert_eq!(
        lock_files(&home).len(),
        16,
        "one lock file per live instance"
    );

    // Half leave cleanly, half are killed: all must be gone after the next operation.
    for (n, mut w) in workers.into_iter().enumerate() {
        if n % 2 == 0 {
            w.finish();
        } else {
            w.child.kill().unwrap();
            w.child.wait().unwrap();
        }
    }
    assert!(store.list().unwrap().is_empty());
    assert!(lock_files(&home).is_empty(), "{:?}", lock_files(&home));

    stop.store(true, Ordering::Relaxed);
    reader.join().expect("reader saw only complete files");
    assert!(
        reads.load(Ordering::Relaxed) > 0,
        "the reader read the file"
    );
}

/// A killed instance is pruned on the next operation, and so is an entry whose PID now
/// belongs to an unrelated live process but whose instance lock nobody holds. Entries
/// without an instance lock (older writers) fall back to the PID.
#[test]
fn killed_instance_is_pruned_even_when_its_pid_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = RegistryStore::new(home.clone());

    let mut victim = holder(&home, "victim", "/proj/victim", 0);
    victim.wait_for("REGISTERED");
    assert_eq!(prefixes(&store.list().unwrap()), vec!["victim"]);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    assert!(store.list().unwrap().is_empty(), "killed instance pruned");
    assert!(lock_files(&home).is_empty());

    // PID reuse: a live unrelated process owns the recorded pid.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let live_pid = sleeper.id();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();

    let unheld_lock = home
        .join("instances")
        .join(format!("ghost-{live_pid}-1-0.lock"));
    fs::write(&unheld_lock, "").unwrap();
    let mut registry = Registry::default();
    let mut ghost = Instance::new("ghost", "/proj/ghost", live_pid, "t", "m");
    ghost.instance_lock = Some(unheld_lock.display().to_string());
    registry.upsert(ghost);
    registry.upsert(Instance::new(
        "old-live",
        "/proj/old-live",
        live_pid,
        "t",
        "m",
    ));
    registry.upsert(Instance::new(
        "old-dead",
        "/proj/old-dead",
        dead_pid,
        "t",
        "m",
    ));
    fs::write(store.registry_path(), registry.to_json_pretty()).unwrap();

    let pruned = prefixes(&store.prune().unwrap());
    assert_eq!(pruned, vec!["ghost", "old-dead"]);
    assert_eq!(prefixes(&store.list().unwrap()), vec!["old-live"]);
    assert!(!unheld_lock.exists(), "a dead entry's lock file is removed");

    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

/// A corrupt registry.json is kept as registry.json.corrupt-* and the registry is rebuilt
/// with the live instance, both by a direct check and by the actor's periodic one.
#[test]
fn corrupt_registry_is_quarantined_and_rebuilt_with_the_live_instance() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = RegistryStore::new(home.clone());
    let reg = store.register("alive", "/proj/alive", "m", "t").unwrap();

    fs::write(store.registry_path(), "{\"instances\": [ torn").unwrap();
    assert!(
        store.ensure_registered(&reg).unwrap(),
        "had to re-add itself"
    );
    let corrupt: Vec<PathBuf> =
        crate::support::files_starting_with(&home, "registry.json.corrupt-");
    assert_eq!(corrupt.len(), 1);
    assert_eq!(
        fs::read_to_string(&corrupt[0]).unwrap(),
        "{\"instances\": [ torn"
    );
    assert_eq!(prefixes(&store.list().unwrap()), vec!["alive"]);
    assert!(!store.ensure_registered(&reg).unwrap(), "already present");
    reg.deregister().unwrap();
}

/// The actor's periodic check puts its instance back after the registry was rebuilt
/// from scratch by someone else.
#[actix_rt::test]
async fn registry_actor_re_adds_itself_after_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = RegistryStore::new(home.clone());
    let identity = InstanceIdentity {
        prefix: "act".into(),
        project_dir: "/proj/act".into(),
        manifest_path: "/proj/act/.agents/manifest.yaml".into(),
        started_at: "2024-01-01T00:00:00Z".into(),
        chat: None,
    };
    let addr = actix::Actor::start(RegistryActor::new(
        store.clone(),
        identity,
        Duration::from_millis(100),
    ));
    let instance = addr.send(Register).await.unwrap().unwrap();
    assert_eq!(instance.prefix, "act");
    assert_eq!(addr.send(ListInstances).await.unwrap().unwrap().len(), 1);

    fs::write(store.registry_path(), "not json").unwrap();
    let end = Instant::now() + DEADLINE;
    loop {
        let text = fs::read_to_string(store.registry_path()).unwrap_or_default();
        if Registry::parse(&text).is_ok_and(|r| r.find_prefix("act").is_some()) {
            break;
        }
        assert!(Instant::now() < end, "actor did not re-register: {text}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    addr.send(piv::actors::registry::Deregister)
        .await
        .unwrap()
        .unwrap();
    assert!(store.list().unwrap().is_empty());
    assert!(lock_files(&home).is_empty());
}

/// A prefix held by a live instance of another project is refused, naming that project
/// (and a second instance of the same project is refused); once that instance is gone
/// the prefix is free.
#[test]
fn duplicate_prefix_is_refused_naming_the_other_project() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = RegistryStore::new(home.clone());
    let mut other = holder(&home, "dup", "/proj/first", 0);
    other.wait_for("REGISTERED");

    let err = store
        .register("dup", "/proj/second", "m", "t")
        .expect_err("duplicate refused");
    match &err {
        RegistryError::DuplicatePrefix {
            prefix,
            other_project,
        } => {
            assert_eq!(prefix, "dup");
            assert_eq!(other_project, "/proj/first");
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(err.to_string().contains("/proj/first"), "{err}");
    assert_eq!(
        lock_files(&home).len(),
        1,
        "the refused attempt left no lock file"
    );

    other.finish();
    let reg = store.register("dup", "/proj/second", "m", "t").unwrap();
    reg.deregister().unwrap();
}

/// A second PID file holder is refused with the first one's PID; a stale file is
/// replaced; release removes the file.
#[test]
fn pid_file_refuses_a_live_holder_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    fs::create_dir_all(&project).unwrap();
    let mut first = Worker::spawn(
        "registry::child_worker",
        &[
            ("PIV_TEST_CHILD", "pidfile".into()),
            ("PIV_TEST_PROJECT", project.display().to_string()),
        ],
    );
    first.wait_for("REGISTERED");
    let first_pid = first.child.id();
    let err = PidFile::acquire(&project, "t").expect_err("refused");
    assert!(
        matches!(err, PidFileError::AlreadyRunning { pid, .. } if pid == first_pid),
        "{err}"
    );
    assert!(err.to_string().contains(&first_pid.to_string()), "{err}");

    // Killed without cleanup: the file stays, stale.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(PidFile::path_for(&project).exists());
    let guard = PidFile::acquire(&project, "2024-02-02T00:00:00Z").unwrap();
    let record = PidFile::read(&project).unwrap();
    assert_eq!(record.pid, std::process::id());
    assert_eq!(record.started_at, "2024-02-02T00:00:00Z");
    guard.release().unwrap();
    assert!(!PidFile::path_for(&project).exists());
}
