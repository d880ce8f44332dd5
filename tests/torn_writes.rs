//! Torn writes: a process SIGKILLed in the middle of manifest and registry writes never
//! leaves a torn file. Each round re-executes this test binary on the ignored
//! [`torn_writer`] test, which loops real writes (`manifest_file::update`, or
//! `RegistryStore::register` / `Registration::deregister`) and prints the number of each
//! completed one; the parent kills it at a random moment (seeded PRNG) and then checks
//! the file parses and holds the last reported content or the next one — never anything
//! else, and nothing is quarantined.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use piv::core::manifest::{Manifest, ManifestUpdate};
use piv::core::registry::Registry;
use piv::io::manifest_file;
use piv::io::registry_store::{RegistryStore, REGISTRY_FILE};

use crate::support::{ready_manifest, Rng, DEADLINE};

const ROUNDS: usize = 100;
/// How many registrations the registry writer keeps at once.
const WINDOW: u64 = 3;

fn counter_of(manifest_text: &str) -> Option<u64> {
    let value: serde_yaml::Value = serde_yaml::from_str(manifest_text).ok()?;
    value.get("torn_counter")?.as_u64()
}

/// Not a test: the writer a round kills. Does nothing without `PIV_TORN_ROLE`.
#[test]
#[ignore = "child process of the torn-write tests"]
fn torn_writer() {
    let Ok(role) = std::env::var("PIV_TORN_ROLE") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("PIV_TORN_DIR").unwrap());
    println!("ready");
    match role.as_str() {
        "manifest" => {
            let mut n = counter_of(&manifest_file::manifest_path(&dir).pipe_read()).unwrap_or(0);
            loop {
                n += 1;
                let mut update = serde_yaml::Mapping::new();
                update.insert("torn_counter".into(), n.into());
                manifest_file::update(
                    &dir,
                    &[ManifestUpdate::Merge(update)],
                    "2026-01-01T00:00:00Z",
                )
                .expect("manifest update");
                println!("{n}");
            }
        }
        "registry" => {
            let store = RegistryStore::new(dir);
            let mut held = std::collections::VecDeque::new();
            for op in 0u64.. {
                if op.is_multiple_of(2) {
                    let i = op / 2;
                    let reg = store
                        .register(&format!("w{i}"), &format!("/torn/w{i}"), "m.yaml", "t")
                        .expect("register");
                    held.push_back(reg);
                } else if held.len() as u64 >= WINDOW {
                    held.pop_front().unwrap().deregister().expect("deregister");
                } else {
                    // A no-op keeps the op numbering simple.
                }
                println!("{op}");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

trait PipeRead {
    fn pipe_read(&self) -> String;
}

impl PipeRead for PathBuf {
    fn pipe_read(&self) -> String {
        std::fs::read_to_string(self).unwrap_or_default()
    }
}

/// The registry's project set after op `op` of the registry writer (`None`: before any).
fn expected_registry(op: Option<u64>) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    let mut held = std::collections::VecDeque::new();
    let Some(last) = op else { return set };
    for k in 0..=last {
        if k.is_multiple_of(2) {
            held.push_back(k / 2);
        } else if held.len() as u64 >= WINDOW {
            held.pop_front();
        }
    }
    for i in held {
        set.insert(format!("/torn/w{i}"));
    }
    set
}

/// Runs one writer round: waits until it has completed `min_ops` writes, lets it run a
/// random while, SIGKILLs it; returns the last completed op it reported.
fn killed_round(role: &str, dir: &Path, rng: &mut Rng) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "torn_writes::torn_writer",
            "--nocapture",
            "--ignored",
            "--test-threads=1",
        ])
        .env("PIV_TORN_ROLE", role)
        .env("PIV_TORN_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    loop {
        match rx.recv_timeout(DEADLINE) {
            // libtest prints "test <name> ... " before the test's own output.
            Ok(line) if line.ends_with("ready") => break,
            Ok(_) => {}
            Err(e) => panic!("writer never got ready: {e}"),
        }
        assert!(start.elapsed() < DEADLINE, "writer never got ready");
    }
    // Anywhere within the first few dozen writes (each is a couple of fsyncs).
    std::thread::sleep(Duration::from_micros(rng.range(0, 40_000)));
    // SAFETY: kill(2) only sends a signal.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the writer was killed, not ended: {status}"
    );
    reader.join().unwrap();
    rx.try_iter().filter_map(|l| l.parse::<u64>().ok()).last()
}

fn quarantined(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".corrupt-"))
        .collect()
}

#[test]
fn manifest_killed_mid_write_is_old_or_new() {
    let root = tempfile::tempdir().unwrap();
    let project = root.path().join("proj");
    std::fs::create_dir_all(project.join(".agents")).unwrap();
    std::fs::write(manifest_file::manifest_path(&project), ready_manifest(3)).unwrap();
    let mut rng = Rng::new(0x5eed_0001);
    let mut kills_mid_run = 0;
    for round in 0..ROUNDS {
        let before = counter_of(&manifest_file::manifest_path(&project).pipe_read()).unwrap_or(0);
        let last = killed_round("manifest", &project, &mut rng).unwrap_or(before);
        let text = manifest_file::manifest_path(&project).pipe_read();
        let manifest = Manifest::parse(&text)
            .unwrap_or_else(|e| panic!("round {round}: manifest does not parse: {e}\n{text}"));
        let now = counter_of(&text).unwrap_or(0);
        assert!(
            now == last || now == last + 1,
            "round {round}: counter {now}, last completed write {last}"
        );
        if now == last + 1 {
            kills_mid_run += 1;
        }
        assert_eq!(
            manifest.view().unwrap().phases.len(),
            3,
            "round {round}: phases intact"
        );
        assert!(
            text.contains("owner: keep-me"),
            "round {round}: unknown keys kept"
        );
        assert!(quarantined(&project.join(".agents")).is_empty());
    }
    let total = counter_of(&manifest_file::manifest_path(&project).pipe_read()).unwrap();
    eprintln!("torn_writes manifest: {ROUNDS} kills, {total} writes, {kills_mid_run} kills after a rename but before its report");
    assert!(total >= ROUNDS as u64 / 2, "the writers did write: {total}");
}

#[test]
fn registry_killed_mid_write_is_old_or_new() {
    let root = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(0x5eed_0002);
    let mut ops = 0;
    for round in 0..ROUNDS {
        // A fresh home per round: the killed writer's entries are not pruned by the next.
        let home = root.path().join(format!("home-{round}"));
        std::fs::create_dir_all(&home).unwrap();
        let last = killed_round("registry", &home, &mut rng);
        ops += last.map_or(0, |l| l + 1);
        let path = home.join(REGISTRY_FILE);
        let projects: BTreeSet<String> = match std::fs::read_to_string(&path) {
            Ok(text) => Registry::parse(&text)
                .unwrap_or_else(|e| panic!("round {round}: registry does not parse: {e}\n{text}"))
                .instances
                .into_iter()
                .map(|i| i.project_dir)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => panic!("read registry: {e}"),
        };
        let old = expected_registry(last);
        let new = expected_registry(Some(last.map_or(0, |l| l + 1)));
        assert!(
            projects == old || projects == new,
            "round {round}: registry {projects:?}, expected {old:?} or {new:?}"
        );
        assert!(
            quarantined(&home).is_empty(),
            "round {round}: nothing quarantined"
        );
        // What a later instance sees: the dead writer's entries pruned, file still sound.
        let listed = RegistryStore::new(home.clone()).list().expect("list");
        assert!(
            listed.is_empty(),
            "round {round}: dead entries pruned: {listed:?}"
        );
    }
    eprintln!("torn_writes registry: {ROUNDS} kills, {ops} completed operations");
    assert!(ops >= ROUNDS as u64 / 2, "the writers did write: {ops}");
}
