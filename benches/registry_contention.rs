//! Registry contention bench: many processes registering and deregistering on one `$PIV_HOME` at once, counting operations per second and entries lost.
//!
//! The parent re-executes this binary as `PIV_BENCH_WORKERS` (default 32) worker processes;
//! each does `PIV_BENCH_ROUNDS` (default 100) × register → check its entry is in
//! `registry.json` → deregister through the real [`RegistryStore`]. An entry missing right
//! after its registration is a lost entry; so is any entry left once every worker is gone.
//! The naïve approach — read the file, change it, write it back atomically, no lock — runs
//! the same workload in the same run for comparison. Prints `name value unit` lines.
//!
//! `cargo bench --bench registry_contention`

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use piv::core::registry::{Instance, Registry};
use piv::io::atomic_file;
use piv::io::registry_store::{RegistryStore, REGISTRY_FILE};

const ROLE_ENV: &str = "PIV_BENCH_ROLE";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn read_registry(home: &Path) -> Registry {
    match std::fs::read_to_string(home.join(REGISTRY_FILE)) {
        Ok(text) => Registry::parse(&text).expect("registry.json always parses"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
        Err(e) => panic!("read registry: {e}"),
    }
}

fn has_entry(home: &Path, project: &str) -> bool {
    read_registry(home).find_project(project).is_some()
}

/// One worker with the real store; returns (entries lost, errors).
fn worker_locked(home: &Path, id: u64, rounds: u64) -> (u64, u64) {
    let store = RegistryStore::new(home.to_path_buf());
    let prefix = format!("w{id}");
    let project = format!("/bench/project-{id}");
    let (mut lost, mut errors) = (0, 0);
    for _ in 0..rounds {
        match store.register(&prefix, &project, "/bench/m.yaml", "2026-01-01T00:00:00Z") {
            Ok(reg) => {
                if !has_entry(home, &project) {
                    lost += 1;
                }
                if let Err(e) = reg.deregister() {
                    eprintln!("deregister: {e}");
                    errors += 1;
                }
            }
            Err(e) => {
                eprintln!("register: {e}");
                errors += 1;
            }
        }
    }
    (lost, errors)
}

/// The naïve read-then-write without a lock.
fn worker_naive(home: &Path, id: u64, rounds: u64) -> (u64, u64) {
    let path = home.join(REGISTRY_FILE);
    let project = format!("/bench/project-{id}");
    let mut lost = 0;
    let mut errors = 0;
    for _ in 0..rounds {
        let mut registry = read_registry(home);
        registry.upsert(Instance::new(
            format!("w{id}"),
            &project,
            std::process::id(),
            "2026-01-01T00:00:00Z",
            "/bench/m.yaml",
        ));
        if atomic_file::write(&path, registry.to_json_pretty().as_bytes()).is_err() {
            errors += 1;
        }
        if !has_entry(home, &project) {
            lost += 1;
        }
        let mut registry = read_registry(home);
        registry.remove(&project);
        if atomic_file::write(&path, registry.to_json_pretty().as_bytes()).is_err() {
            errors += 1;
        }
    }
    (lost, errors)
}

/// Starts every worker at once and waits; returns (seconds, lost, errors).
fn run(mode: &str, home: &Path, workers: u64, rounds: u64) -> (f64, u64, u64) {
    std::fs::create_dir_all(home).unwrap();
    let exe: PathBuf = std::env::current_exe().unwrap();
    let go = home.join("go");
    let children: Vec<_> = (0..workers)
        .map(|id| {
            Command::new(&exe)
                .env(ROLE_ENV, mode)
                .env("PIV_BENCH_HOME", home)
                .env("PIV_BENCH_ID", id.to_string())
                .env("PIV_BENCH_ROUNDS", rounds.to_string())
                .env("PIV_BENCH_GO", &go)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    // Every worker waits for the go file so process start-up is not measured.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = Instant::now();
    std::fs::write(&go, b"").unwrap();
    let (mut lost, mut errors) = (0, 0);
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut f = text.split_whitespace().map(|s| s.parse::<u64>().unwrap());
        lost += f.next().unwrap();
        errors += f.next().unwrap();
    }
    (started.elapsed().as_secs_f64(), lost, errors)
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        let home = PathBuf::from(std::env::var_os("PIV_BENCH_HOME").unwrap());
        let id = env_u64("PIV_BENCH_ID", 0);
        let rounds = env_u64("PIV_BENCH_ROUNDS", 100);
        let go = PathBuf::from(std::env::var_os("PIV_BENCH_GO").unwrap());
        while !go.exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (lost, errors) = match role.as_str() {
            "locked" => worker_locked(&home, id, rounds),
            "naive" => worker_naive(&home, id, rounds),
            other => panic!("unknown role {other}"),
        };
        println!("{lost} {errors}");
        return;
    }
    let workers = env_u64("PIV_BENCH_WORKERS", 32);
    let rounds = env_u64("PIV_BENCH_ROUNDS", 100);
    let dir = tempfile::tempdir().unwrap();
    let ops = (workers * rounds * 2) as f64;
    println!("registry_workers {workers} processes");
    println!("registry_rounds {rounds} per-process");

    let home = dir.path().join("home-locked");
    let (secs, lost, errors) = run("locked", &home, workers, rounds);
    let left = RegistryStore::new(home.clone()).list().unwrap().len() as u64;
    let left_raw = read_registry(&home).instances.len() as u64;
    println!("registry_ops_per_sec {:.0} ops/s", ops / secs);
    println!("registry_seconds {secs:.2} s");
    println!("registry_entries_lost {lost} entries");
    println!("registry_entries_left {} entries", left.max(left_raw));
    println!("registry_errors {errors} errors");

    let home = dir.path().join("home-naive");
    let (n_secs, n_lost, n_errors) = run("naive", &home, workers, rounds);
    let n_left = read_registry(&home).instances.len() as u64;
    println!("registry_naive_ops_per_sec {:.0} ops/s", ops / n_secs);
    println!("registry_naive_entries_lost {n_lost} entries");
    println!("registry_naive_entries_left {n_left} entries");
    println!("registry_naive_errors {n_errors} errors");
    println!(
        "registry_ops_ratio {:.2} x (locked / naive)",
        (ops / secs) / (ops / n_secs)
    );
}
