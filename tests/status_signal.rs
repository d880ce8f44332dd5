//! `piv status` and `piv signal` end to end: the real binary against a real registry
//! whose live entries are real processes.
//!
//! The running instances are stand-ins (no `piv run` needed): this test binary re-executed
//! on the ignored [`fake_instance`] test registers through `RegistryStore::register`,
//! publishes `.agents/orchestrator.state.json` with its own pid, and holds its instance
//! lock until its stdin closes or it is killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use piv::core::control::ControlAction;
use piv::core::signal::parse_signal;
use piv::core::status::{RunState, RuntimeState};
use piv::io::registry_store::RegistryStore;
use piv::io::{signal_queue, state_file};
use serde_json::Value;

use crate::registry::Worker;

/// Phase 1 done, phase 2 not started: the next action is `plan-feature` for phase 2.
const MANIFEST: &str = "prd: {path: p}\npreflight: {status: passed}\nprofiles: {x: {freshness: fresh}}\nphases:\n  1: {plan: complete, execution: complete, validation: pass}\n  2: {plan: not_started, execution: not_started, validation: not_run}\n";

fn env_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("fake instance needs {name}"))
}

/// Not a test: the body of a fake running instance. Without `PIV_TEST_INSTANCE` it does
/// nothing.
#[test]
#[ignore = "child process of the status/signal tests"]
fn fake_instance() {
    let Ok(state) = std::env::var("PIV_TEST_INSTANCE") else {
        return;
    };
    let state: RunState = serde_json::from_value(Value::String(state)).unwrap();
    let store = RegistryStore::new(PathBuf::from(env_var("PIV_TEST_HOME")));
    let prefix = env_var("PIV_TEST_PREFIX");
    let project = PathBuf::from(env_var("PIV_TEST_PROJECT"));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let manifest = project.join(".agents/manifest.yaml");
    let registration = store
        .register(
            &prefix,
            project.to_str().unwrap(),
            manifest.to_str().unwrap(),
            &now,
        )
        .unwrap();
    state_file::write(
        &project,
        &RuntimeState {
            pid: std::process::id(),
            prefix: prefix.clone(),
            state,
            phase: Some(2),
            step: Some("plan".into()),
            cost_usd: 0.25,
            started_at: now.clone(),
            last_activity: now,
            why: None,
            step_started_at: None,
            pause_requested_at: None,
            pause_requested_by: None,
        },
    )
    .unwrap();
    println!("REGISTERED");
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    registration.deregister().unwrap();
}

/// A temp project (canonical path) whose manifest holds `manifest`.
fn project(root: &Path, name: &str, manifest: &str) -> PathBuf {
    let dir = root.join(name);
    fs::create_dir_all(dir.join(".agents")).unwrap();
    fs::write(dir.join(".agents/manifest.yaml"), manifest).unwrap();
    fs::canonicalize(dir).unwrap()
}

/// Starts a fake instance of `project` under `prefix` and waits until it is registered.
fn instance(home: &Path, prefix: &str, project: &Path, state: &str) -> Worker {
    let mut worker = Worker::spawn(
        "status_signal::fake_instance",
        &[
            ("PIV_TEST_INSTANCE", state.into()),
            ("PIV_TEST_HOME", home.display().to_string()),
            ("PIV_TEST_PREFIX", prefix.into()),
            ("PIV_TEST_PROJECT", project.display().to_string()),
        ],
    );
    worker.wait_for("REGISTERED");
    worker
}

/// Runs the real `piv` with a clean environment plus `env`, from `cwd`.
fn piv(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_piv"));
    command.args(args).current_dir(cwd);
    for var in [
        "PIV_PROJECT_DIR",
        "PIV_HOME",
        "PIV_REGISTRY_DISABLED",
        "TELEGRAM_PROJECT_PREFIX",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("run piv")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `piv` expecting exit 0 and exactly one line of JSON on stdout.
fn piv_json(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> Value {
    let out = piv(args, cwd, env);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: stderr {}",
        text(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout:?}");
    serde_json::from_str(&stdout).unwrap()
}

/// The queue files in `project`'s signal directory.
fn queued(project: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(signal_queue::signals_dir(project))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

fn by_prefix<'a>(instances: &'a [Value], prefix: &str) -> &'a Value {
    instances
        .iter()
        .find(|i| i["prefix"] == prefix)
        .unwrap_or_else(|| panic!("{prefix} missing from {instances:?}"))
}

#[test]
fn status_all_lists_running_instances_marks_a_bad_manifest_and_forgets_the_killed() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a_dir = project(dir.path(), "proj-a", MANIFEST);
    let b_dir = project(dir.path(), "proj-b", MANIFEST);
    let c_dir = project(dir.path(), "proj-c", "phases: [\n");
    let a = instance(&home, "a", &a_dir, "running");
    let mut b = instance(&home, "b", &b_dir, "paused");
    let c = instance(&home, "c", &c_dir, "running");
    let env = [("PIV_HOME", home.as_path())];

    let all = piv_json(&["status", "--all", "--json"], dir.path(), &env);
    let keys: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["instances"]);
    let instances = all["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{all}");
    let prefixes: Vec<&Value> = instances.iter().map(|i| &i["prefix"]).collect();
    assert_eq!(prefixes, ["a", "b", "c"], "sorted by prefix");

    for (prefix, worker, project_dir, state) in
        [("a", &a, &a_dir, "running"), ("b", &b, &b_dir, "paused")]
    {
        let i = by_prefix(instances, prefix);
        assert_eq!(i["pid"], worker.child.id(), "{i}");
        assert_eq!(i["projectDir"], project_dir.to_str().unwrap(), "{i}");
        assert_eq!(i["state"], state, "{i}");
        assert_eq!(i["phase"], 2, "{i}");
        assert_eq!(i["step"], "plan", "{i}");
        assert_eq!(i["next"]["command"], "plan-feature", "{i}");
        assert_eq!(i["costUsd"], 0.25, "{i}");
        assert_eq!(i["isBotOwner"], false, "{i}");
        assert!(i["error"].is_null(), "{i}");
        assert!(i["startedAt"].is_string() && i["lastActivity"].is_string());
    }
    let broken = by_prefix(instances, "c");
    assert_eq!(broken["pid"], c.child.id());
    let error = broken["error"].as_str().expect("error set for c");
    assert!(error.contains("manifest.yaml"), "{error}");

    let table = piv(&["status", "--all"], dir.path(), &env);
    assert_eq!(table.status.code(), Some(0));
    let table = text(&table.stdout);
    assert!(table.contains("manifest unavailable"), "{table}");
    assert!(table.contains("paused"), "{table}");

    // This project only: found through the registry by its (canonical) directory.
    let one = piv_json(
        &["status", "--json", "--project", a_dir.to_str().unwrap()],
        dir.path(),
        &env,
    );
    assert_eq!(one["prefix"], "a");
    assert_eq!(one["pid"], a.child.id());
    assert_eq!(one["state"], "running");
    assert_eq!(one["next"]["command"], "plan-feature");
    // ... also from inside the project, through PIV_PROJECT_DIR's default (the cwd).
    let from_cwd = piv_json(&["status", "--json"], &b_dir, &env);
    assert_eq!(from_cwd["prefix"], "b");
    assert_eq!(from_cwd["state"], "paused");

    // A killed instance is gone from the next listing.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    let after = piv_json(&["status", "--all", "--json"], dir.path(), &env);
    let left: Vec<&Value> = after["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["prefix"])
        .collect();
    assert_eq!(left, ["a", "c"], "{after}");
    // Its project, asked directly, is stopped (its state file names a dead pid).
    let stopped = piv_json(
        &["status", "--json", "--project", b_dir.to_str().unwrap()],
        dir.path(),
        &env,
    );
    assert!(stopped["pid"].is_null(), "{stopped}");
    assert_eq!(stopped["state"], "stopped");

    a.finish();
    c.finish();
    let empty = piv_json(&["status", "--all", "--json"], dir.path(), &env);
    assert_eq!(empty, serde_json::json!({"instances": []}));
}

#[test]
fn signal_reaches_only_the_named_instance() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let a_dir = project(dir.path(), "proj-a", MANIFEST);
    let b_dir = project(dir.path(), "proj-b", MANIFEST);
    let a = instance(&home, "a", &a_dir, "running");
    let b = instance(&home, "Bee", &b_dir, "running");
    let home_arg = home.to_str().unwrap();

    let out = piv(
        &["signal", "Bee", "pause", "--home", home_arg],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("sent pause to Bee ({})\n", b_dir.display())
    );
    let files = queued(&b_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let message = parse_signal(&fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(message.action, ControlAction::Pause);
    assert_eq!(message.from, "terminal");
    assert!(queued(&a_dir).is_empty(), "nothing for a");

    // A unique case-insensitive match, and a chosen sender name.
    let out = piv(
        &[
            "signal", "bee", "resume", "--from", "ops", "--home", home_arg,
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let files = queued(&b_dir);
    assert_eq!(files.len(), 2);
    let second = parse_signal(&fs::read(&files[1]).unwrap()).unwrap();
    assert_eq!(
        (second.action, second.from.as_str()),
        (ControlAction::Resume, "ops")
    );

    // An unknown prefix names the running ones and sends nothing.
    let out = piv(
        &["signal", "zed", "go", "--home", home_arg],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("\"zed\"") && stderr.contains("Bee, a"),
        "{stderr}"
    );
    assert_eq!(queued(&b_dir).len() + queued(&a_dir).len(), 2);

    // An invalid action is a usage error from clap.
    let out = piv(
        &["signal", "a", "reboot", "--home", home_arg],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("reboot"));

    a.finish();
    b.finish();
    let out = piv(&["signal", "a", "go", "--home", home_arg], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "a is gone");
    assert!(text(&out.stderr).contains("no piv instances are running"));
}

#[test]
fn registry_disabled_targets_the_project_directly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let proj = project(dir.path(), "solo", MANIFEST);
    let env = [
        ("PIV_HOME", home.as_path()),
        ("PIV_REGISTRY_DISABLED", Path::new("1")),
    ];
    let proj_arg = proj.to_str().unwrap();

    let out = piv(
        &["signal", "-", "shutdown", "--project", proj_arg],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("sent shutdown to solo ({})\n", proj.display())
    );
    let files = queued(&proj);
    assert_eq!(files.len(), 1);
    let message = parse_signal(&fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(message.action, ControlAction::Shutdown);

    // Any prefix goes with --project (PIV_PROJECT_DIR here) when the registry is off.
    let out = piv(
        &["signal", "whatever", "go"],
        dir.path(),
        &[env[0], env[1], ("PIV_PROJECT_DIR", proj.as_path())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(queued(&proj).len(), 2);

    // Without --project there is nothing to look the prefix up in.
    let out = piv(&["signal", "solo", "go"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--project"),
        "{}",
        text(&out.stderr)
    );

    // status --all has no list to show.
    let out = piv(&["status", "--all", "--json"], dir.path(), &env);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("registry is off"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // This project's status comes from its PID file (a live pid: this test process,
    // which holds the project lock as a running `piv run` would).
    let _project_lock = piv::io::lock::try_lock_exclusive(&proj.join(piv::io::pid_file::LOCK_FILE))
        .unwrap()
        .expect("the project lock is free");
    let pid_record = serde_json::json!({
        "pid": std::process::id(),
        "startedAt": "2026-01-01T00:00:00.000Z",
        "projectDir": proj_arg,
    });
    fs::write(
        proj.join(".agents/orchestrator.pid"),
        pid_record.to_string(),
    )
    .unwrap();
    let status = piv_json(
        &["status", "--json", "--project", proj_arg],
        dir.path(),
        &env,
    );
    assert_eq!(status["prefix"], "solo");
    assert_eq!(status["pid"], std::process::id());
    assert_eq!(status["next"]["command"], "plan-feature");
    assert!(status["error"].is_null());
    assert!(!home.exists(), "the registry was never touched");

    // A missing manifest still prints a status, with the error; a missing dir is exit 2.
    fs::remove_file(proj.join(".agents/manifest.yaml")).unwrap();
    let status = piv_json(
        &["status", "--json", "--project", proj_arg],
        dir.path(),
        &env,
    );
    assert!(
        status["error"].as_str().unwrap().contains("manifest.yaml"),
        "{status}"
    );
    let gone = dir.path().join("gone");
    let out = piv(
        &["status", "--project", gone.to_str().unwrap()],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("gone"));
    let out = piv(
        &["signal", "-", "go", "--project", gone.to_str().unwrap()],
        dir.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!gone.exists(), "signalling does not create the project");
}

#[test]
fn help_names_the_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    for (command, vars) in [
        (
            "status",
            &["PIV_PROJECT_DIR", "PIV_HOME", "PIV_REGISTRY_DISABLED"][..],
        ),
        (
            "signal",
            &["PIV_PROJECT_DIR", "PIV_HOME", "PIV_REGISTRY_DISABLED"][..],
        ),
    ] {
        let out = piv(&[command, "--help"], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        for var in vars {
            assert!(help.contains(var), "{command} --help lacks {var}:\n{help}");
        }
    }
    let out = piv(&["signal", "--help"], dir.path(), &[]);
    let help = text(&out.stdout);
    for action in ["go", "pause", "resume", "shutdown"] {
        assert!(help.contains(action), "{help}");
    }
}
