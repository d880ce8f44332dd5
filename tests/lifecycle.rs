//! Several real `piv run` processes on one machine (issue 5) and their lifecycle (issue
//! 7): `piv status --all`, `piv signal` pause/resume/shutdown routed by prefix, signals
//! 1 ms apart, duplicate prefixes refused; SIGTERM/SIGINT running the whole shutdown with
//! an agent session hanging, a second Ctrl-C exiting at once, a panicking phase runner
//! restarted within (and past) its budget, and SIGKILL mid-step followed by a resume.
//!
//! Instances are kept up by the scripted claude's `Hang` action; a hanging session is
//! ended by killing the fake's process group (its pgid is in the fake's invocation log),
//! which the loop sees as a failed session and retries.

use std::path::Path;
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use piv::core::control::ControlAction;
use piv::core::status::{RunState, RuntimeState};
use piv::io::{signal_queue, state_file};
use piv_testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use crate::support::*;

/// A project with a `piv run` child; on drop the child and every agent process group
/// the scripted claude logged are killed, so a failing test leaves nothing behind.
struct Instance {
    sb: Sandbox,
    child: Option<Child>,
}

impl Instance {
    fn new(sb: Sandbox) -> Instance {
        Instance { sb, child: None }
    }

    fn start(&mut self, extra_env: &[(&str, &str)]) {
        let mut cmd = self.sb.piv(&["run"]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = std::fs::File::create(self.sb.root.path().join("run.stdout")).unwrap();
        let err = std::fs::File::create(self.sb.root.path().join("run.stderr")).unwrap();
        self.child = Some(cmd.stdout(out).stderr(err).spawn().expect("spawn piv run"));
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("started").id()
    }

    /// Waits for the run to exit within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut().expect("started");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit code, failing the test (with everything worth seeing) if the run does not
    /// end within the deadline.
    fn exit_code(&mut self) -> Option<i32> {
        let status = self.wait_exit(DEADLINE);
        assert!(status.is_some(), "piv run did not exit\n{}", self.sb.dump());
        status.unwrap().code()
    }

    /// The scripted claude's logged `Hang` invocations whose prompt starts with `prefix`.
    fn hangs(&self, prefix: &str) -> Vec<Value> {
        self.sb
            .claude_calls()
            .into_iter()
            .filter(|c| c["action"] == "hang")
            .filter(|c| c["prompt"].as_str().is_some_and(|p| p.starts_with(prefix)))
            .collect()
    }

    /// Waits until the `n`th hanging session on `prefix` has started; returns its pgid.
    fn wait_hang(&self, prefix: &str, n: usize) -> i32 {
        assert!(
            wait_until(DEADLINE, || self.hangs(prefix).len() >= n),
            "no hanging {prefix} session #{n}\n{}",
            self.sb.dump()
        );
        let pgid = self.hangs(prefix)[n - 1]["pgid"].as_i64().unwrap() as i32;
        assert!(pgid > 1, "a real process group: {pgid}");
        pgid
    }

    fn state(&self) -> Option<RuntimeState> {
        state_file::read(&self.sb.project)
    }

    fn wait_state(&self, want: RunState) {
        assert!(
            wait_until(DEADLINE, || self.state().is_some_and(|s| s.state == want)),
            "state never became {want:?}: {:?}\n{}",
            self.state(),
            self.sb.dump()
        );
    }

    fn registered(&self) -> bool {
        registry_entries(&self.sb.home)
            .iter()
            .any(|e| same_dir(e["projectDir"].as_str().unwrap_or(""), &self.sb.project))
    }

    fn wait_registered(&self) {
        assert!(
            wait_until(DEADLINE, || self.registered()),
            "never registered\n{}",
            self.sb.dump()
        );
    }

    fn pid_file_exists(&self) -> bool {
        self.sb.project.join(".agents/orchestrator.pid").exists()
    }

    fn wait_stdout(&self, needle: &str) {
        assert!(
            wait_until(DEADLINE, || self.sb.run_stdout().contains(needle)),
            "stdout never said {needle:?}\n{}",
            self.sb.dump()
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for call in self.sb.claude_calls() {
            if let Some(pgid) = call["pgid"].as_i64().filter(|p| *p > 1) {
                kill_group(pgid as i32);
            }
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: killpg only sends a signal.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

fn same_dir(a: &str, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(Path::new(a)) == canon(b)
}

/// The raw entries of `$PIV_HOME/registry.json` (empty when there is none).
fn registry_entries(home: &Path) -> Vec<Value> {
    std::fs::read(home.join("registry.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["instances"].as_array().cloned())
        .unwrap_or_default()
}

/// Runs a short `piv` command from `sb` (bounded by the deadline).
fn piv_cmd(sb: &Sandbox, args: &[&str]) -> Output {
    let child = sb
        .piv(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn piv");
    wait_output(child, DEADLINE)
}

fn signal(sb: &Sandbox, prefix: &str, action: &str) {
    let out = piv_cmd(sb, &["signal", prefix, action]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "piv signal {prefix} {action}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `piv status --all --json`, as instances keyed by prefix.
fn status_all(sb: &Sandbox) -> Vec<Value> {
    let out = piv_cmd(sb, &["status", "--all", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    v["instances"].as_array().cloned().expect("instances")
}

fn by_prefix<'a>(rows: &'a [Value], prefix: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["prefix"] == prefix)
        .unwrap_or_else(|| panic!("{prefix} not listed: {rows:?}"))
}

fn hang(prefix: &str) -> Rule {
    Rule::new(prefix, Action::Hang)
}

/// Everything a clean shutdown leaves: no registry entry, no PID file, no agent
/// process group, a parseable manifest with its next action.
fn assert_cleaned_up(inst: &Instance, pgid: i32) {
    assert!(
        !inst.registered(),
        "registry entry gone\n{}",
        inst.sb.dump()
    );
    assert!(!inst.pid_file_exists(), "PID file gone\n{}", inst.sb.dump());
    assert!(
        wait_until(DEADLINE, || !exists(-pgid)),
        "agent process group {pgid} still alive"
    );
    let m = inst.sb.manifest();
    assert!(
        m["next_action"]["command"].as_str().is_some(),
        "next_action written\n{}",
        inst.sb.dump()
    );
}

// ---------------------------------------------------------------------------------------
// Issue 5: several instances, `piv status`, `piv signal`.

/// Two instances on one home: both listed by `piv status --all --json`; `piv signal beta
/// pause` holds beta before its next step while alpha goes on; resume takes beta to done;
/// an unreadable manifest is shown with its error, not dropped; `piv signal alpha
/// shutdown` stops alpha cleanly.
#[test]
fn two_instances_are_listed_and_steered_by_prefix() {
    let mut a = Instance::new(Sandbox::new("alpha", &ready_manifest(1)));
    let mut b = Instance::new(Sandbox::sharing_home(&a.sb, "beta", &ready_manifest(1)));
    // alpha: its first session hangs (ended by the test), then every /execute hangs.
    a.sb.scenario(
        Scenario::new()
            .rule(hang("/prime").times(1))
            .rule(hang("/execute")),
    );
    // beta: its first session hangs, then everything succeeds.
    b.sb.scenario(Scenario::new().rule(hang("/prime").times(1)));
    a.start(&[]);
    b.start(&[]);
    let a_prime = a.wait_hang("/prime", 1);
    let b_prime = b.wait_hang("/prime", 1);
    a.wait_registered();
    b.wait_registered();

    let rows = status_all(&a.sb);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (inst, prefix) in [(&a, "alpha"), (&b, "beta")] {
        let row = by_prefix(&rows, prefix);
        assert_eq!(row["pid"], inst.pid(), "{row}");
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["phase"], 1, "{row}");
        assert_eq!(row["step"], "plan-feature", "{row}");
        assert!(row["error"].is_null(), "{row}");
        assert!(same_dir(
            row["projectDir"].as_str().unwrap(),
            &inst.sb.project
        ));
    }

    // Pause beta while its step runs; the pause takes effect before its next step.
    signal(&a.sb, "beta", "pause");
    b.wait_stdout("⏸ Pausing after");
    kill_group(b_prime);
    b.wait_state(RunState::Paused);
    assert_eq!(b.sb.claude_calls().len(), 1, "no step after the pause");

    // alpha is not paused: its loop goes on to the (hanging) execute step.
    kill_group(a_prime);
    let a_execute = a.wait_hang("/execute", 1);
    assert_eq!(a.state().map(|s| s.state), Some(RunState::Running));
    assert_eq!(b.state().map(|s| s.state), Some(RunState::Paused));
    assert_eq!(b.sb.claude_calls().len(), 1, "beta still holds");
    let rows = status_all(&a.sb);
    assert_eq!(by_prefix(&rows, "beta")["state"], "paused", "{rows:?}");
    assert_eq!(by_prefix(&rows, "alpha")["step"], "execute", "{rows:?}");

    // Resume beta: it goes on to done by itself.
    signal(&a.sb, "beta", "resume");
    assert_eq!(b.exit_code(), Some(0), "{}", b.sb.dump());
    assert_eq!(b.sb.manifest()["next_action"]["command"], "done");
    assert!(!b.registered());

    // An unreadable manifest is shown with its reason.
    let good = a.sb.manifest_text();
    std::fs::write(a.sb.manifest_path(), "phases: [unclosed\n").unwrap();
    let rows = status_all(&a.sb);
    let row = by_prefix(&rows, "alpha");
    assert!(
        row["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{row}"
    );
    assert_eq!(row["pid"], a.pid(), "{row}");
    std::fs::write(a.sb.manifest_path(), good).unwrap();

    // Shut alpha down from "a third terminal".
    signal(&b.sb, "alpha", "shutdown");
    assert_eq!(a.exit_code(), Some(0), "{}", a.sb.dump());
    assert_cleaned_up(&a, a_execute);
    assert!(registry_entries(&a.sb.home).is_empty());
}

/// Pause and resume enqueued 1 ms apart are both handled, in order: the run is not left
/// paused and goes on to done.
#[test]
fn two_signals_one_millisecond_apart_are_handled_in_order() {
    let mut inst = Instance::new(Sandbox::new("burst", &ready_manifest(1)));
    inst.sb
        .scenario(Scenario::new().rule(hang("/prime").times(1)));
    inst.start(&[]);
    let pgid = inst.wait_hang("/prime", 1);
    inst.wait_registered();
    signal_queue::enqueue(&inst.sb.project, ControlAction::Pause, "test").unwrap();
    std::thread::sleep(Duration::from_millis(1));
    signal_queue::enqueue(&inst.sb.project, ControlAction::Resume, "test").unwrap();
    inst.wait_stdout("Resuming execution");
    let stdout = inst.sb.run_stdout();
    let paused = stdout.find("⏸ Pausing after").expect("pause handled");
    let resumed = stdout.find("Resuming execution").unwrap();
    assert!(paused < resumed, "in order:\n{stdout}");
    kill_group(pgid);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    assert_eq!(inst.sb.manifest()["next_action"]["command"], "done");
    assert!(!inst.sb.run_stdout().contains("Paused ("), "never held");
}

/// A second project with the same prefix is refused at start, naming the other project.
#[test]
fn a_duplicate_prefix_is_refused_naming_the_other_project() {
    let mut first = Instance::new(Sandbox::new("first", &ready_manifest(1)));
    let second = Sandbox::sharing_home(&first.sb, "second", &ready_manifest(1));
    first.sb.scenario(Scenario::new().rule(hang("/prime")));
    first.start(&[("TELEGRAM_PROJECT_PREFIX", "shared")]);
    let pgid = first.wait_hang("/prime", 1);
    first.wait_registered();
    let child = second
        .piv(&["run"])
        .env("TELEGRAM_PROJECT_PREFIX", "shared")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_output(child, DEADLINE);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    let first_dir = std::fs::canonicalize(&first.sb.project).unwrap();
    assert!(
        text.contains(&first_dir.display().to_string()),
        "names the other project: {text}"
    );
    assert!(second.claude_calls().is_empty(), "nothing was run");
    assert!(!second.project.join(".agents/orchestrator.pid").exists());
    send_signal(first.pid(), libc::SIGTERM);
    assert_eq!(first.exit_code(), Some(0), "{}", first.sb.dump());
    assert_cleaned_up(&first, pgid);
}

// ---------------------------------------------------------------------------------------
// Issue 7: shutdown and crash safety.

/// SIGTERM or SIGINT while an agent session hangs: the whole ordered shutdown.
fn os_signal_runs_the_whole_shutdown(sig: i32, name: &str) {
    let mut inst = Instance::new(Sandbox::new(name, &ready_manifest(2)));
    inst.sb.scenario(Scenario::new().rule(hang("/execute")));
    inst.start(&[]);
    let pgid = inst.wait_hang("/execute", 1);
    inst.wait_registered();
    assert!(inst.pid_file_exists());
    send_signal(inst.pid(), sig);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    assert_cleaned_up(&inst, pgid);
    let m = inst.sb.manifest();
    assert_eq!(m["next_action"]["command"], "execute", "{m:?}");
    assert_eq!(m["phases"][1]["plan"], "complete", "{m:?}");
    assert_eq!(m["custom_notes"]["owner"], "keep-me");
}

#[test]
fn sigterm_runs_the_whole_shutdown() {
    os_signal_runs_the_whole_shutdown(libc::SIGTERM, "term");
}

#[test]
fn sigint_runs_the_whole_shutdown() {
    os_signal_runs_the_whole_shutdown(libc::SIGINT, "int");
}

/// A hangup (terminal closed, ssh dropped) runs the same ordered shutdown as SIGTERM.
#[test]
fn sighup_runs_the_whole_shutdown() {
    os_signal_runs_the_whole_shutdown(libc::SIGHUP, "hup");
}

/// The pid of the watchdog `piv run` keeps beside the session of group `pgid` (found by
/// its name and arguments in `/proc`).
fn watchdog_of(pgid: i32) -> Option<i32> {
    let want = format!("{}\0{pgid}\0", piv::io::process_group::WATCHDOG_NAME);
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&want)
            .then_some(pid)
    })
}

/// SIGKILL gives piv no chance to clean up, yet its agent session (the CLI and the tools
/// it started: the scripted claude's `sleep`) is gone within 10 s, so it cannot go on
/// working unrecorded.
#[test]
fn sigkill_of_piv_ends_its_agent_session_within_ten_seconds() {
    let mut inst = Instance::new(Sandbox::new("orphan", &ready_manifest(1)));
    inst.sb.scenario(Scenario::new().rule(hang("/execute")));
    inst.start(&[("PIV_KILL_GRACE_SECS", "2")]);
    let pgid = inst.wait_hang("/execute", 1);
    let call = inst.hangs("/execute")[0].clone();
    let agent = call["pid"].as_i64().unwrap() as i32;
    let tool = call["child_pid"]
        .as_i64()
        .expect("the fake started a sleep") as i32;
    assert!(exists(-pgid) && exists(tool));
    send_signal(inst.pid(), libc::SIGKILL);
    assert!(inst.wait_exit(DEADLINE).is_some());
    let killed = Instant::now();
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    assert!(
        wait_until(Duration::from_secs(10), || gone(agent) && gone(tool)),
        "the agent ({agent}) and its tool ({tool}) outlived piv by 10 s\n{}",
        inst.sb.dump()
    );
    assert!(
        wait_until(Duration::from_secs(10), || !exists(-pgid)),
        "agent process group {pgid} still exists"
    );
    assert!(killed.elapsed() < Duration::from_secs(20));
}

/// A claude that ignores SIGTERM (the disposition survives exec, also into its child).
fn stubborn_claude(sb: &Sandbox) -> std::path::PathBuf {
    let wrapper = sb.root.path().join("stubborn-claude");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntrap '' TERM\nexec '{FAKE_CLAUDE}' \"$@\"\n",
            FAKE_CLAUDE = fake_claude()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    wrapper
}

/// With an agent that ignores SIGTERM and a long kill grace, the first Ctrl-C's shutdown
/// waits on the agent; a second Ctrl-C exits at once and takes the agent down with it.
#[test]
fn a_second_sigint_exits_at_once() {
    let mut inst = Instance::new(Sandbox::new("twice", &ready_manifest(1)));
    inst.sb.scenario(Scenario::new().rule(hang("/execute")));
    let wrapper = stubborn_claude(&inst.sb);
    inst.start(&[
        ("PIV_CLAUDE_BIN", wrapper.to_str().unwrap()),
        ("PIV_KILL_GRACE_SECS", "300"),
    ]);
    let pgid = inst.wait_hang("/execute", 1);
    send_signal(inst.pid(), libc::SIGINT);
    assert!(
        wait_until(DEADLINE, || inst.sb.run_stderr().contains("Ctrl-C again")),
        "first Ctrl-C acknowledged\n{}",
        inst.sb.dump()
    );
    assert!(exists(-pgid), "the agent ignores SIGTERM");
    assert!(inst.wait_exit(Duration::from_millis(200)).is_none());
    let sent = Instant::now();
    send_signal(inst.pid(), libc::SIGINT);
    let status = inst.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "exits at once\n{}", inst.sb.dump());
    assert!(sent.elapsed() < Duration::from_secs(30));
    assert_eq!(status.unwrap().code(), Some(130));
    assert!(
        wait_until(DEADLINE, || !exists(-pgid)),
        "agent process group {pgid} killed"
    );
}

/// A phase runner that panics once is restarted; the crash is recorded and resolved by
/// the resumed loop, and the run ends done.
#[test]
fn a_panicking_phase_runner_is_restarted_and_the_run_ends_done() {
    let mut inst = Instance::new(Sandbox::new("panic-once", &ready_manifest(1)));
    inst.start(&[("PIV_FAULT_INJECT", "phase_runner_panic:1")]);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    let m = inst.sb.manifest();
    assert_eq!(m["next_action"]["command"], "done", "{}", inst.sb.dump());
    let failures = m["failures"].as_sequence().cloned().unwrap_or_default();
    let crash = failures
        .iter()
        .find(|f| f["error_category"] == "orchestrator_crash")
        .unwrap_or_else(|| panic!("crash recorded\n{}", inst.sb.dump()));
    assert_ne!(crash["resolution"], "pending", "{crash:?}");
    let stdout = inst.sb.run_stdout();
    assert!(
        stdout.contains("phase runner crashed (injected fault"),
        "the crash is named:\n{}",
        inst.sb.dump()
    );
    assert!(stdout.contains("restarting"), "{}", inst.sb.dump());
    assert!(!inst.pid_file_exists());
    assert!(!inst.registered());
}

/// A phase runner that keeps panicking exhausts the restart budget: a clean shutdown,
/// exit 1, and the reason said.
#[test]
fn a_phase_runner_that_keeps_panicking_ends_in_a_clean_shutdown() {
    let mut inst = Instance::new(Sandbox::new("panic-always", &ready_manifest(1)));
    inst.start(&[
        ("PIV_FAULT_INJECT", "phase_runner_panic:100"),
        ("PIV_MAX_RESTARTS", "2"),
    ]);
    assert_eq!(inst.exit_code(), Some(1), "{}", inst.sb.dump());
    let said = format!("{}{}", inst.sb.run_stdout(), inst.sb.run_stderr());
    assert!(
        said.contains("crashed more than 2 times"),
        "the reason is said:\n{said}"
    );
    assert!(said.contains("orchestrator_crash"), "{said}");
    assert!(!inst.pid_file_exists(), "{}", inst.sb.dump());
    assert!(!inst.registered(), "{}", inst.sb.dump());
    assert!(inst.sb.claude_calls().is_empty(), "no step ran");
    let m = inst.sb.manifest();
    assert!(m["failures"].as_sequence().is_some_and(|f| f
        .iter()
        .any(|f| f["error_category"] == "orchestrator_crash")));

    // The manifest is resumable: a plain `piv run` says it resumes after the crash (and
    // what it will do next, not the stale pre-resume action) and reaches done.
    inst.start(&[]);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    let stdout = inst.sb.run_stdout();
    let line = stdout
        .lines()
        .find(|l| l.contains("Resuming from"))
        .unwrap_or_else(|| panic!("says it resumes:\n{}", inst.sb.dump()));
    assert!(line.contains("crash"), "{line}");
    assert!(!line.contains("Phase 0"), "no phase 0: {line}");
    assert!(line.contains("plan-feature"), "the next step: {line}");
    let m = inst.sb.manifest();
    assert_eq!(m["next_action"]["command"], "done");
    assert!(m["failures"]
        .as_sequence()
        .unwrap()
        .iter()
        .all(|f| f["resolution"] != "pending"));
}

/// A panic outside the phase runner's loop (here the notifier, on its first event) runs
/// the best-effort part through the panic hook and the ordered shutdown: an
/// `orchestrator_crash` failure in the manifest, the registry entry and the PID file gone,
/// no agent left, exit 1 with the reason; the next run resumes to done.
#[test]
fn a_panic_outside_the_loop_ends_in_the_ordered_shutdown() {
    let mut inst = Instance::new(Sandbox::new("panic-elsewhere", &ready_manifest(1)));
    inst.sb.scenario(Scenario::new().rule(hang("/prime")));
    inst.start(&[("PIV_FAULT_INJECT", "notifier_panic")]);
    assert_eq!(inst.exit_code(), Some(1), "{}", inst.sb.dump());
    let said = format!("{}{}", inst.sb.run_stdout(), inst.sb.run_stderr());
    assert!(said.contains("injected fault: notifier panic"), "{said}");
    assert!(!inst.pid_file_exists(), "{}", inst.sb.dump());
    assert!(
        wait_until(DEADLINE, || !inst.registered()),
        "deregistered\n{}",
        inst.sb.dump()
    );
    for call in inst.sb.claude_calls() {
        if let Some(pgid) = call["pgid"].as_i64() {
            assert!(
                wait_until(DEADLINE, || !exists(-(pgid as i32))),
                "agent group {pgid} left running"
            );
        }
    }
    let m = inst.sb.manifest();
    assert!(
        m["failures"]
            .as_sequence()
            .is_some_and(
                |f| f.iter().any(|f| f["error_category"] == "orchestrator_crash"
                    && f["details"]
                        .as_str()
                        .unwrap_or("")
                        .contains("notifier panic"))
            ),
        "{}",
        inst.sb.dump()
    );
    inst.sb.scenario(Scenario::new());
    inst.start(&[]);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    assert_eq!(inst.sb.manifest()["next_action"]["command"], "done");
}

/// SIGKILL mid-step leaves a stale PID file and registry entry; `piv run` again replaces
/// them, says it is resuming, and reaches done.
#[test]
fn sigkill_mid_step_then_run_again_resumes_to_done() {
    let mut inst = Instance::new(Sandbox::new("killed", &ready_manifest(2)));
    inst.sb
        .scenario(Scenario::new().rule(hang("/execute").times(1)));
    inst.start(&[]);
    let pgid = inst.wait_hang("/execute", 1);
    inst.wait_registered();
    let old_pid = inst.pid();
    // Take the session's watchdog down first: then nothing stops what the agent started
    // when piv dies (the parent-death signal reaches only the CLI itself), and the next
    // run must find and stop it.
    let watchdog = watchdog_of(pgid).expect("a watchdog runs beside the session");
    send_signal(watchdog as u32, libc::SIGKILL);
    assert!(wait_until(DEADLINE, || !exists(watchdog)
        || watchdog_of(pgid).is_none()));
    send_signal(old_pid, libc::SIGKILL);
    assert!(inst.wait_exit(DEADLINE).is_some());
    // SIGKILL gave piv no chance to stop its agent's tools: they are still running.
    assert!(exists(-pgid), "the killed run's agent is still running");
    assert!(inst.pid_file_exists(), "the stale PID file is left");
    assert!(inst.registered(), "the stale registry entry is left");
    assert!(
        status_all(&inst.sb).is_empty(),
        "a dead instance is not listed"
    );

    inst.start(&[]);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    let stdout = inst.sb.run_stdout();
    // The new run stopped the agent the killed one left behind before starting its own.
    assert!(
        wait_until(DEADLINE, || !exists(-pgid)),
        "the orphaned agent group {pgid} was stopped"
    );
    assert!(
        stdout.contains(&format!("process group {pgid}) left running")),
        "{}",
        inst.sb.dump()
    );
    assert!(
        stdout.contains("Resuming from"),
        "says so:\n{}",
        inst.sb.dump()
    );
    assert!(
        inst.sb.log().contains("replacing stale PID file"),
        "{}",
        inst.sb.dump()
    );
    assert_eq!(inst.sb.manifest()["next_action"]["command"], "done");
    assert!(!inst.pid_file_exists());
    assert!(registry_entries(&inst.sb.home).is_empty());
}

/// An agent that ignores SIGTERM is killed after the grace period; the shutdown still
/// completes with exit 0 and nothing left running.
#[test]
fn sigterm_with_a_stubborn_agent_kills_it_after_the_grace() {
    let mut inst = Instance::new(Sandbox::new("stubborn", &ready_manifest(1)));
    inst.sb.scenario(Scenario::new().rule(hang("/execute")));
    let wrapper = stubborn_claude(&inst.sb);
    inst.start(&[
        ("PIV_CLAUDE_BIN", wrapper.to_str().unwrap()),
        ("PIV_KILL_GRACE_SECS", "1"),
    ]);
    let pgid = inst.wait_hang("/execute", 1);
    inst.wait_registered();
    send_signal(inst.pid(), libc::SIGTERM);
    assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
    assert_cleaned_up(&inst, pgid);
}

/// A paused instance (held between steps) still shuts down cleanly on SIGTERM and on a
/// `shutdown` signal.
#[test]
fn a_paused_instance_shuts_down_cleanly() {
    for (n, by_signal) in [(1, false), (2, true)] {
        let mut inst = Instance::new(Sandbox::new(&format!("held{n}"), &ready_manifest(1)));
        inst.sb
            .scenario(Scenario::new().rule(hang("/prime").times(1)));
        inst.start(&[]);
        let pgid = inst.wait_hang("/prime", 1);
        inst.wait_registered();
        signal(&inst.sb, &format!("held{n}"), "pause");
        inst.wait_stdout("⏸ Pausing after");
        kill_group(pgid);
        inst.wait_state(RunState::Paused);
        if by_signal {
            signal(&inst.sb, &format!("held{n}"), "shutdown");
        } else {
            send_signal(inst.pid(), libc::SIGTERM);
        }
        assert_eq!(inst.exit_code(), Some(0), "{}", inst.sb.dump());
        assert_cleaned_up(&inst, pgid);
        assert_eq!(inst.sb.manifest()["next_action"]["command"], "plan-feature");
    }
}
