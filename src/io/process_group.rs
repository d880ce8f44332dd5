//! The process group of an agent session: whether it still runs, stopping it (TERM, grace, KILL), the groups this process runs (for the immediate exit), the project's agent-pgid file (to stop an agent a killed run left behind), and the watchdog that stops the group when piv itself dies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Child;
use tracing::warn;

fn group_signal(pgid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: killpg(2) has no memory-safety preconditions.
    if unsafe { libc::killpg(pgid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether any process of group `pgid` is still running. Zombies do not count: a killed
/// grandchild stays a zombie until init reaps it, but it runs nothing.
pub fn group_has_live_members(pgid: i32) -> bool {
    if group_signal(pgid, 0).is_err() {
        return false;
    }
    if std::fs::read_dir("/proc").is_err() {
        return true;
    }
    !live_group_members(pgid).is_empty()
}

/// The pids of the group's members that are not zombies (from `/proc`).
fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let pgrp = fields.nth(1).and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            members.push(pid);
        }
    }
    members
}

/// `.agents/orchestrator.agent-pgid`: the process group of the session running now, so
/// that a `piv run` started after a killed one (SIGKILL leaves no chance to clean up) can
/// stop the agent it left behind instead of running a second agent beside it.
pub fn agent_pgid_path(project_dir: &Path) -> PathBuf {
    project_dir.join(".agents").join("orchestrator.agent-pgid")
}

/// Stops an agent a killed `piv run` left running in `project_dir`, if there is one:
/// the recorded group must still have a member whose working directory is the project
/// (so a reused group id of an unrelated process is never signalled). Call it only
/// while holding the project's PID file. Returns the group it stopped.
pub fn stop_orphaned_agent(project_dir: &Path, grace: Duration) -> Option<i32> {
    let path = agent_pgid_path(project_dir);
    let pgid = std::fs::read_to_string(&path)
        .ok()?
        .trim()
        .parse::<i32>()
        .ok();
    let _ = std::fs::remove_file(&path);
    let pgid = pgid.filter(|p| *p > 1)?;
    let project = project_dir.canonicalize().ok()?;
    let ours = live_group_members(pgid).into_iter().any(|pid| {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .and_then(|cwd| cwd.canonicalize().ok())
            .is_some_and(|cwd| cwd == project)
    });
    if !ours {
        return None;
    }
    tracing::warn!(pgid, "stopping an agent left running by a killed piv run");
    stop_process_group(pgid, grace);
    Some(pgid)
}

/// Process groups of agent sessions still running in this process, so that the
/// immediate-exit path (a second Ctrl-C) can kill them without waiting for anything.
static LIVE_GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Keeps a group in [`LIVE_GROUPS`] and in the project's agent-pgid file for as long
/// as its session runs.
pub(crate) struct TrackedGroup {
    pgid: i32,
    file: Option<PathBuf>,
}

impl TrackedGroup {
    pub(crate) fn new(pgid: i32, file: Option<&Path>) -> Self {
        if pgid > 0 {
            LIVE_GROUPS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pgid);
            if let Some(file) = file {
                if let Err(e) = crate::io::atomic_file::write(file, format!("{pgid}\n").as_bytes())
                {
                    warn!("cannot record the agent's process group: {e}");
                }
            }
        }
        TrackedGroup {
            pgid,
            file: file.map(Path::to_path_buf),
        }
    }
}

impl Drop for TrackedGroup {
    fn drop(&mut self) {
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| *g != self.pgid);
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// SIGKILL to every agent process group this process still runs (no grace): for the
/// immediate exit on a second Ctrl-C.
pub fn kill_all_groups_now() {
    let groups = LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for pgid in groups {
        // SAFETY: killpg only sends a signal; a stale group id yields ESRCH.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// Stops every process of group `pgid`: SIGTERM, up to `grace` for them to go, then
/// SIGKILL and wait until none is left running. Blocking; for a child you spawned, use
/// [`stop_child_group`] so it is also reaped.
pub fn stop_process_group(pgid: i32, grace: Duration) {
    if pgid <= 1 {
        return;
    }
    let _ = group_signal(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !group_has_live_members(pgid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = group_signal(pgid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_has_live_members(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async [`stop_process_group`] for a child piv spawned as its group leader: the child is
/// reaped too, so no process of the group remains when this returns.
pub async fn stop_child_group(child: &mut Child, pgid: i32, grace: Duration) {
    if pgid <= 1 {
        let _ = child.kill().await;
        return;
    }
    let _ = group_signal(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        let _ = child.try_wait();
        if !group_has_live_members(pgid) {
            break;
        }
        if Instant::now() >= deadline {
            let _ = group_signal(pgid, libc::SIGKILL);
            let _ = child.wait().await;
            let deadline = Instant::now() + Duration::from_secs(10);
            while group_has_live_members(pgid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.wait().await;
}

/// How long the watchdog gives the group between SIGTERM and SIGKILL at most, so that
/// an orphaned session is gone within 10 s of piv's death.
const WATCHDOG_MAX_GRACE: Duration = Duration::from_secs(5);

/// The watchdog's script: `$1` the group, `$2` the grace in tenths of a second. It waits
/// on its stdin, whose only writer is piv: `done` means the session ended normally; EOF
/// without it means piv is gone (killed, crashed) or dropped the session, so the group
/// is stopped. It ignores the terminal's signals: a hangup must not take it first. It
/// polls the group in half-second steps: on a loaded machine every `sleep` it forks is
/// slow to start, so few steps keep the grace close to what it says.
const WATCHDOG_SCRIPT: &str = r#"trap '' HUP INT TERM
IFS= read -r line
[ "$line" = done ] && exit 0
kill -TERM -"$1" 2>/dev/null || exit 0
i=0
while [ "$i" -lt "$2" ] && kill -0 -"$1" 2>/dev/null; do sleep 0.5; i=$((i+5)); done
kill -KILL -"$1" 2>/dev/null
exit 0
"#;

/// The name the watchdog runs under (`$0`), so a person (or a test) can find it in `ps`.
pub const WATCHDOG_NAME: &str = "piv-agent-watchdog";

/// A small process (`sh`, in its own process group) that stops an agent's process group
/// when piv dies without stopping it. `PR_SET_PDEATHSIG` on the agent only reaches the
/// agent itself; the tools it started (test runners, dev servers, `sleep`s) would live on,
/// so the watchdog stops the whole group. [`SessionWatchdog::disarm`] at the session's
/// normal end; dropping it armed (the session future was dropped) stops the group too.
pub struct SessionWatchdog {
    child: tokio::process::Child,
}

impl SessionWatchdog {
    /// Starts the watchdog for group `pgid`; None (logged) if it cannot start.
    pub fn spawn(pgid: i32, grace: Duration) -> Option<SessionWatchdog> {
        if pgid <= 1 {
            return None;
        }
        let tenths = grace.min(WATCHDOG_MAX_GRACE).as_millis() / 100;
        let spawned = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg(WATCHDOG_NAME)
            .arg(pgid.to_string())
            .arg(tenths.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => Some(SessionWatchdog { child }),
            Err(e) => {
                warn!("cannot start the agent watchdog (sh): {e}");
                None
            }
        }
    }

    /// The session ended and its group was stopped: the watchdog exits without a signal.
    pub async fn disarm(mut self) {
        use tokio::io::AsyncWriteExt;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"done\n").await;
            let _ = stdin.flush().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// For `pre_exec` in the agent's child: SIGKILL it when the thread that spawned it dies.
/// The kernel ties the parent-death signal to the spawning *thread*, so the session must
/// be spawned on a thread that lives as long as the session: `piv run` spawns on the
/// actix system thread (the main thread), the tests on their runtime's thread. If piv is
/// already gone when the child gets here, the child exits at once.
///
/// # Safety
/// Only async-signal-safe calls (prctl, getppid, _exit), as `pre_exec` requires.
pub unsafe fn die_with_parent(parent: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid have no memory-safety preconditions.
    unsafe {
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}
