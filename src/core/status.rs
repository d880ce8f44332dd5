//! What an instance is doing, as other processes see it: the runtime state a running
//! instance publishes (`.agents/orchestrator.state.json`), the status object of
//! `piv status --json` (its field names are a contract), and the table for people.
//!
//! Pure: callers read the files and pass in `now`.

use serde::{Deserialize, Serialize};

use crate::core::next_action::NextAction;

/// The state of one instance. The names are part of `piv status --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A step is running or about to start.
    Running,
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
    }
}

fn format_uptime(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// The human table of `piv status [--all]`.
pub fn render_table(rows: &[InstanceStatus]) -> String {
    if rows.is_empty() {
        return "No running piv instances.\n".to_string();
    }
    let header = [
        "PREFIX", "PID", "OWNER", "STATE", "PHASE", "STEP", "DONE", "COST", "UPTIME", "NEXT",
    ];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
        let next = match (&r.error, &r.next) {
            (Some(e), _) => format!("manifest unavailable: {e}"),
            (None, Some(n)) => match &n.argument {
                Some(a) => format!("{} {a}", n.command),
                None => n.command.clone(),
            },
            (None, None) => "-".to_string(),
        };
        table.push(vec![
            r.prefix.clone(),
            r.pid.map_or("-".into(), |p| p.to_string()),
            if r.is_bot_owner {
                "*".into()
            } else {
                "".into()
            },
            r.state.as_str().to_string(),
            r.phase.map_or("-".into(), |p| p.to_string()),
            r.step.clone().unwrap_or_else(|| "-".into()),
            format!("{}/{}", r.phases_done, r.phases_total),
            format!("${:.2}", r.cost_usd),
            r.uptime_secs.map_or("-".into(), format_uptime),
            next,
        ]);
    }
    let widths: Vec<usize> = (0..header.len() - 1)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    for r in rows {
        if let Some(why) = &r.why {
            out.push_str(&format!("[{}] waiting for a human: {why}\n", r.prefix));
        }
    }
    out
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
    fn unreadable_manifest_is_reported_not_dropped() {
        let s = build_status(
            &facts("b", Some(7), false, None),
            None,
            Err("syntax error at line 3".into()),
            0,
        );
        assert_eq!(s.error.as_deref(), Some("syntax error at line 3"));
        let table = render_table(&[s]);
        assert!(table.contains("manifest unavailable: syntax error at line 3"));
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
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["state"], "stopped");
        assert!(v["pid"].is_null());
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

    #[test]
    fn table_marks_the_owner_and_lists_why() {
        let mut r = runtime(RunState::WaitingForHuman);
        r.why = Some("integration_auth: not logged in".into());
        let s = build_status(
            &facts("a", Some(42), true, None),
            Some(&r),
            Ok(Default::default()),
            0,
        );
        let t = render_table(&[s]);
        assert!(t.lines().nth(1).unwrap().contains(" * "), "{t}");
        assert!(t.contains("waiting for a human: integration_auth"), "{t}");
    }
}
