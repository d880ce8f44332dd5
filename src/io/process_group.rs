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

/// Stops every process of group `pgid`: SIGTERM, up to `grace` for them to go, then
/// SIGKILL and wait until none is left running. Blocking; for a child you spawned, use
/// [`stop_child_group`] so it is also reaped.
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
