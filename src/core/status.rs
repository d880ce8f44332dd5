//! What an instance is doing, as other processes see it: the runtime state a running
//! instance publishes (`.agents/orchestrator.state.json`), the status object of
//! `piv status --json` (its field names are a contract) and how it is built from what
//! the registry and the files say. How it is shown is `status_report`'s.
//!
//! Pure: callers read the files and pass in `now`.

use serde::{Deserialize, Serialize};

use crate::core::next_action::NextAction;
use crate::core::registry::Instance;

/// The state of one instance. The names are part of `piv status --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A step is running or about to start.
    Running,
    /// A pause was asked for while a step runs: the step goes on to its end, then the
    /// state becomes `paused`. `step` names the step it waits for, `stepStartedAt` since
    /// when it runs, `pauseRequestedAt` when the pause was asked for.
    Pausing,
    /// Paused by a signal or a command; holds before the next step.
    Paused,
    /// Stopped for a human (escalation, exhausted retries, cost cap, missing PRD).
    WaitingForHuman,
    /// Up, with nothing to do (e.g. all done, waiting for `/go` with Telegram on).
    Idle,
    /// Every phase is done.
    Done,
    /// Not running (no live process).
    Stopped,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Pausing => "pausing",
            RunState::Paused => "paused",
            RunState::WaitingForHuman => "waiting_for_human",
            RunState::Idle => "idle",
            RunState::Done => "done",
            RunState::Stopped => "stopped",
        }
    }
}

/// Published by a running instance whenever its state changes; read by `piv status`
/// and the bot owner. Unknown fields are ignored on read (a newer piv may add some).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeState {
    pub pid: u32,
    pub prefix: String,
    pub state: RunState,
    pub phase: Option<u32>,
    pub step: Option<String>,
    /// Cost of this run so far (USD).
    pub cost_usd: f64,
    pub started_at: String,
    pub last_activity: String,
    /// Why the instance waits for a human, when it does.
    #[serde(default)]
    pub why: Option<String>,
    /// When the agent session of the current step started (RFC 3339); null between
    /// sessions.
    #[serde(default)]
    pub step_started_at: Option<String>,
    /// When a pause was asked for (RFC 3339), while `pausing` or `paused`.
    #[serde(default)]
    pub pause_requested_at: Option<String>,
    /// Who asked for the pause (`telegram`, `signal from <prefix>`), with
    /// `pause_requested_at`.
    #[serde(default)]
    pub pause_requested_by: Option<String>,
}

/// One instance in `piv status --json` (and the source of the table and `/status all`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    pub prefix: String,
    pub project_dir: String,
    pub pid: Option<u32>,
    pub is_bot_owner: bool,
    pub state: RunState,
    pub phase: Option<u32>,
    pub step: Option<String>,
    pub next: Option<NextAction>,
    pub cost_usd: f64,
    pub started_at: Option<String>,
    pub last_activity: Option<String>,
    pub uptime_secs: Option<u64>,
    /// Done phases out of all phases, from the manifest.
    pub phases_done: usize,
    pub phases_total: usize,
    /// Why the instance waits for a human, when it does.
    pub why: Option<String>,
    /// Null, or why the manifest could not be read.
    pub error: Option<String>,
    /// When the running agent session of `step` started; null between sessions.
    pub step_started_at: Option<String>,
    /// How long that session has run, in seconds (from `stepStartedAt` and now).
    pub step_running_secs: Option<u64>,
    /// When a pause was asked for, while the state is `pausing` or `paused`.
    pub pause_requested_at: Option<String>,
    /// Who asked for that pause.
    pub pause_requested_by: Option<String>,
}

/// The manifest-derived part of a status (computed by the caller from the manifest).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestSummary {
    pub next: Option<NextAction>,
    pub phases_done: usize,
    pub phases_total: usize,
    /// The phase the next action is about, when there is one.
    pub next_phase: Option<u32>,
}

/// What the registry (or the project itself) says about an instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFacts {
    pub prefix: String,
    pub project_dir: String,
    /// `None` when no live process runs the project.
    pub pid: Option<u32>,
    pub is_bot_owner: bool,
    pub started_at_unix_secs: Option<i64>,
}

impl InstanceFacts {
    /// What a registry entry says about its instance.
    pub fn of(instance: &Instance) -> InstanceFacts {
        InstanceFacts {
            prefix: instance.prefix.clone(),
            project_dir: instance.project_dir.clone(),
            pid: Some(instance.pid),
            is_bot_owner: instance.is_bot_owner,
            started_at_unix_secs: unix_secs(&instance.started_at),
        }
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp, if it parses.
pub fn unix_secs(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|d| d.timestamp())
}

/// Whole seconds from an RFC 3339 timestamp to `now_unix_secs` (0 if it lies ahead);
/// `None` if it does not parse.
pub fn secs_since(rfc3339: &str, now_unix_secs: i64) -> Option<u64> {
    unix_secs(rfc3339).map(|t| now_unix_secs.saturating_sub(t).max(0) as u64)
}

/// Builds one instance's status from what could be read. `runtime` is `None` when the
/// instance is not running (or has not published yet); `manifest` is the error text when
/// the manifest could not be read.
pub fn build_status(
    facts: &InstanceFacts,
    runtime: Option<&RuntimeState>,
    manifest: Result<ManifestSummary, String>,
    now_unix_secs: i64,
) -> InstanceStatus {
    let InstanceFacts {
        prefix,
        project_dir,
        pid,
        is_bot_owner,
        started_at_unix_secs,
    } = facts.clone();
    let (summary, error) = match manifest {
        Ok(s) => (s, None),
        Err(e) => (ManifestSummary::default(), Some(e)),
    };
    let state = match runtime {
        Some(r) if pid.is_some() => r.state,
        _ if pid.is_some() => RunState::Running,
        _ => {
            if summary.next.as_ref().is_some_and(|n| n.command == "done") {
                RunState::Done
            } else {
                RunState::Stopped
            }
        }
    };
    InstanceStatus {
        prefix,
        project_dir,
        pid,
        is_bot_owner,
        state,
        phase: runtime.and_then(|r| r.phase).or(summary.next_phase),
        step: runtime.and_then(|r| r.step.clone()),
        next: summary.next,
        cost_usd: runtime.map_or(0.0, |r| r.cost_usd),
        started_at: runtime.map(|r| r.started_at.clone()),
        last_activity: runtime.map(|r| r.last_activity.clone()),
        uptime_secs: started_at_unix_secs
            .filter(|_| pid.is_some())
            .map(|s| now_unix_secs.saturating_sub(s).max(0) as u64),
        phases_done: summary.phases_done,
        phases_total: summary.phases_total,
        why: runtime.and_then(|r| r.why.clone()),
        error,
        step_started_at: runtime.and_then(|r| r.step_started_at.clone()),
        step_running_secs: runtime
            .and_then(|r| r.step_started_at.as_deref())
            .and_then(|t| secs_since(t, now_unix_secs)),
        pause_requested_at: runtime.and_then(|r| r.pause_requested_at.clone()),
        pause_requested_by: runtime.and_then(|r| r.pause_requested_by.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::next_action::Confidence;

    fn next(cmd: &str, arg: Option<&str>) -> NextAction {
        NextAction {
            command: cmd.into(),
            argument: arg.map(String::from),
            reason: "r".into(),
            confidence: Confidence::High,
        }
    }

    fn facts(prefix: &str, pid: Option<u32>, owner: bool, started: Option<i64>) -> InstanceFacts {
        InstanceFacts {
            prefix: prefix.into(),
            project_dir: format!("/p/{prefix}"),
            pid,
            is_bot_owner: owner,
            started_at_unix_secs: started,
        }
    }

    fn runtime(state: RunState) -> RuntimeState {
        RuntimeState {
            pid: 42,
            prefix: "a".into(),
            state,
            phase: Some(2),
            step: Some("execute".into()),
            cost_usd: 1.5,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            last_activity: "2026-01-01T00:01:00.000Z".into(),
            why: None,
            step_started_at: None,
            pause_requested_at: None,
            pause_requested_by: None,
        }
    }

    #[test]
    fn running_instance_takes_state_from_its_runtime_file() {
        let s = build_status(
            &facts("a", Some(42), true, Some(900)),
            Some(&runtime(RunState::Paused)),
            Ok(ManifestSummary {
                next: Some(next("execute", Some("x.md"))),
                phases_done: 1,
                phases_total: 3,
                next_phase: Some(2),
            }),
            1000,
        );
        assert_eq!(s.state, RunState::Paused);
        assert_eq!(s.phase, Some(2));
        assert_eq!(s.step.as_deref(), Some("execute"));
        assert_eq!(s.uptime_secs, Some(100));
        assert_eq!(s.cost_usd, 1.5);
        assert!(s.error.is_none());
    }

    #[test]
    fn a_pending_pause_shows_its_step_since_when_and_who_asked() {
        let mut r = runtime(RunState::Pausing);
        r.step_started_at = Some("1970-01-01T00:01:00.000Z".into());
        r.pause_requested_at = Some("1970-01-01T00:04:00.000Z".into());
        r.pause_requested_by = Some("telegram".into());
        let s = build_status(
            &facts("a", Some(42), false, Some(0)),
            Some(&r),
            Ok(ManifestSummary::default()),
            300,
        );
        assert_eq!(s.state, RunState::Pausing);
        assert_eq!(s.step.as_deref(), Some("execute"));
        assert_eq!(s.step_running_secs, Some(240));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["state"], "pausing");
        assert_eq!(v["stepStartedAt"], "1970-01-01T00:01:00.000Z");
        assert_eq!(v["stepRunningSecs"], 240);
        assert_eq!(v["pauseRequestedAt"], "1970-01-01T00:04:00.000Z");
        assert_eq!(v["pauseRequestedBy"], "telegram");
        // No session running: nothing to time.
        let s = build_status(
            &facts("a", Some(42), false, Some(0)),
            Some(&runtime(RunState::Running)),
            Ok(ManifestSummary::default()),
            300,
        );
        assert_eq!((s.step_started_at, s.step_running_secs), (None, None));
    }

    #[test]
    fn state_names_table() {
        for (state, name) in [
            (RunState::Running, "running"),
            (RunState::Pausing, "pausing"),
            (RunState::Paused, "paused"),
            (RunState::WaitingForHuman, "waiting_for_human"),
            (RunState::Idle, "idle"),
            (RunState::Done, "done"),
            (RunState::Stopped, "stopped"),
        ] {
            assert_eq!(state.as_str(), name);
            assert_eq!(serde_json::to_value(state).unwrap(), name);
        }
    }

    #[test]
    fn a_state_file_of_an_older_piv_still_reads() {
        let old = r#"{"pid":1,"prefix":"a","state":"running","phase":null,"step":null,"costUsd":0.0,"startedAt":"x","lastActivity":"y","why":null}"#;
        let r: RuntimeState = serde_json::from_str(old).unwrap();
        assert_eq!(r.step_started_at, None);
        assert_eq!(r.pause_requested_at, None);
    }

    #[test]
    fn unreadable_manifest_is_reported_not_dropped() {
        let s = build_status(
            &facts("b", Some(7), false, None),
            None,
            Err("syntax error at line 3".into()),
            0,
        );
        assert_eq!(s.error.as_deref(), Some("syntax error at line 3"));
    }

    #[test]
    fn json_names_are_the_contract() {
        let s = build_status(
            &facts("a", None, false, None),
            None,
            Ok(ManifestSummary::default()),
            0,
        );
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "prefix",
            "projectDir",
            "pid",
            "isBotOwner",
            "state",
            "phase",
            "step",
            "next",
            "costUsd",
            "startedAt",
            "lastActivity",
            "error",
            "stepStartedAt",
            "stepRunningSecs",
            "pauseRequestedAt",
            "pauseRequestedBy",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["state"], "stopped");
        assert!(v["pid"].is_null());
    }

    #[test]
    fn facts_of_a_registry_entry() {
        let mut entry = Instance::new("a", "/p/a", 42, "1970-01-01T00:01:00.000Z", "m");
        entry.is_bot_owner = true;
        assert_eq!(
            InstanceFacts::of(&entry),
            facts("a", Some(42), true, Some(60))
        );
        entry.started_at = "yesterday".into();
        assert_eq!(InstanceFacts::of(&entry).started_at_unix_secs, None);
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(secs_since("1970-01-01T00:01:00.000Z", 300), Some(240));
        assert_eq!(secs_since("1970-01-01T00:01:00.000Z", 30), Some(0));
        assert_eq!(secs_since("soon", 30), None);
        assert_eq!(unix_secs("1970-01-01T00:01:00.000Z"), Some(60));
        assert_eq!(unix_secs("1970-01-01T01:01:00+01:00"), Some(60));
        assert_eq!(unix_secs("nope"), None);
    }

    #[test]
    fn not_running_and_done_is_done() {
        let s = build_status(
            &facts("a", None, false, None),
            None,
            Ok(ManifestSummary {
                next: Some(next("done", None)),
                ..Default::default()
            }),
            0,
        );
        assert_eq!(s.state, RunState::Done);
    }
}
