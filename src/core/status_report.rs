//! How a status is shown: the chat's `/status` and `/status all` (Telegram HTML), the
//! table of `piv status`, and the mapping from an instance's status (plus its manifest
//! view, for the phases table) to them. Every format of an [`InstanceStatus`] lives here.

use crate::core::commands::reply_status_unreadable;
use crate::core::control::pausing_words;
use crate::core::manifest::ManifestView;
use crate::core::status::{InstanceStatus, RunState};
use crate::core::telegram_text::escape_html;

// ---------------------------------------------------------------------------------------
// The chat's status messages (behaviour.md §9.3)

/// One row of the phases table: statuses as the manifest spells them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PhaseRow {
    pub number: u32,
    pub plan: String,
    pub execution: String,
    pub validation: String,
}

/// The recommended next action as shown in a status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NextLine {
    pub command: String,
    pub argument: Option<String>,
    pub reason: String,
}

/// A pending failure as shown in a status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FailureLine {
    pub phase: u32,
    pub category: String,
    pub details: String,
}

/// What a single-project status shows; built by the caller from the manifest.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatusInput {
    pub phases: Vec<PhaseRow>,
    pub next: Option<NextLine>,
    pub pending_failures: Vec<FailureLine>,
    pub last_updated: Option<String>,
    /// `running`, `paused`, `waiting_for_human`, ... when known.
    pub state: Option<String>,
}

fn step_icon(status: &str) -> &'static str {
    match status {
        "complete" => "✅",
        "in_progress" => "🟡",
        _ => "⚪",
    }
}

fn validation_icon(status: &str) -> &'static str {
    match status {
        "pass" => "✅",
        "partial" => "🟡",
        "fail" => "🔴",
        _ => "⚪",
    }
}

/// The single-project status (HTML, untagged).
pub fn format_status(input: &StatusInput) -> String {
    let mut lines = vec!["<b>PIV Orchestrator Status</b>".to_string()];
    if let Some(state) = &input.state {
        lines.push(format!("<b>State:</b> {}", escape_html(state)));
    }
    lines.push(String::new());
    lines.push("<b>Phases:</b>".to_string());
    for row in &input.phases {
        lines.push(format!(
            "  Phase {}: {} Plan {} Exec {} Val",
            row.number,
            step_icon(&row.plan),
            step_icon(&row.execution),
            validation_icon(&row.validation)
        ));
    }
    if let Some(next) = &input.next {
        lines.push(String::new());
        lines.push(format!(
            "<b>Next:</b> {} {}",
            escape_html(&next.command),
            escape_html(next.argument.as_deref().unwrap_or(""))
        ));
        lines.push(format!("<i>{}</i>", escape_html(&next.reason)));
    }
    if !input.pending_failures.is_empty() {
        lines.push(String::new());
        lines.push("<b>Active Failures:</b>".to_string());
        for f in &input.pending_failures {
            lines.push(format!(
                "  🔴 Phase {} ({}): {}",
                f.phase,
                escape_html(&f.category),
                escape_html(&f.details)
            ));
        }
    }
    if let Some(updated) = &input.last_updated {
        lines.push(String::new());
        lines.push(format!("<i>Updated: {}</i>", escape_html(updated)));
    }
    lines.join("\n")
}

/// One instance in `/status all`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MultiStatusEntry {
    pub prefix: String,
    pub pid: Option<u32>,
    pub is_bot_owner: bool,
    pub phase: Option<u32>,
    pub step: Option<String>,
    pub paused: bool,
    /// A pending pause, worded ("pausing after execute, running 4m").
    pub pausing: Option<String>,
    pub done_phases: usize,
    pub total_phases: usize,
    /// Next action: command and argument.
    pub next: Option<(String, Option<String>)>,
    /// Why the manifest could not be read; the rest is then unknown.
    pub error: Option<String>,
}

/// Marks the instance that polls Telegram.
pub const OWNER_MARK: &str = "👑";

/// The every-instance status (HTML, untagged: each line names its instance).
pub fn format_multi_status(entries: &[MultiStatusEntry]) -> String {
    let mut lines = vec![
        "<b>PIV Orchestrator — All Instances</b>".to_string(),
        String::new(),
    ];
    if entries.is_empty() {
        lines.push("<i>No active instances found.</i>".to_string());
        return lines.join("\n");
    }
    for e in entries {
        let mut line = format!("<b>[{}]</b>", escape_html(&e.prefix));
        if e.is_bot_owner {
            line.push(' ');
            line.push_str(OWNER_MARK);
        }
        match e.pid {
            Some(pid) => line.push_str(&format!(" PID {pid}")),
            None => line.push_str(" not running"),
        }
        if let Some(error) = &e.error {
            line.push_str(&format!(
                " — <i>manifest unavailable</i>: {}",
                escape_html(error)
            ));
            lines.push(line);
            continue;
        }
        line.push_str(&format!(" — {}/{} phases", e.done_phases, e.total_phases));
        if let Some(phase) = e.phase {
            line.push_str(&format!(" — Phase {phase}"));
            if let Some(step) = &e.step {
                line.push_str(&format!(": {}", escape_html(step)));
            }
        }
        if e.paused {
            line.push_str(" — ⏸ paused");
        }
        if let Some(pausing) = &e.pausing {
            line.push_str(&format!(" — ⏸ {}", escape_html(pausing)));
        }
        match &e.next {
            Some((cmd, arg)) => {
                line.push_str(&format!(" → {}", escape_html(cmd)));
                if let Some(arg) = arg {
                    line.push_str(&format!(" {}", escape_html(arg)));
                }
            }
            None => line.push_str(" → idle"),
        }
        lines.push(line);
    }
    if entries.iter().any(|e| e.is_bot_owner) {
        lines.push(String::new());
        lines.push(format!("<i>{OWNER_MARK} = answers this chat</i>"));
    }
    lines.join("\n")
}

/// `/status` for one instance: the reference's layout plus a state line, or why its
/// manifest could not be read. `view` is its manifest (for the phases table).
pub fn status_reply(status: &InstanceStatus, view: Option<&ManifestView>) -> String {
    match &status.error {
        Some(error) => reply_status_unreadable(error),
        None => format_status(&status_input(status, view)),
    }
}

/// `/status all`: one line per instance, in the order given.
pub fn multi_status_reply(statuses: &[InstanceStatus]) -> String {
    let entries: Vec<MultiStatusEntry> = statuses.iter().map(multi_entry).collect();
    format_multi_status(&entries)
}

/// A pending pause in words, when the status has one.
fn pausing(status: &InstanceStatus) -> Option<String> {
    (status.state == RunState::Pausing)
        .then(|| pausing_words(status.step.as_deref(), status.step_running_secs))
}

/// "running · Phase 2 · execute · $1.23 this run"; while a pause waits for a step,
/// "pausing after execute, running 4m · Phase 2 · $1.23 this run".
fn state_line(status: &InstanceStatus) -> String {
    let pending = pausing(status);
    let mut parts = vec![pending
        .clone()
        .unwrap_or_else(|| status.state.as_str().to_string())];
    if let Some(phase) = status.phase {
        parts.push(format!("Phase {phase}"));
    }
    if let Some(step) = status.step.as_ref().filter(|_| pending.is_none()) {
        parts.push(step.clone());
    }
    parts.push(format!("${:.2} this run", status.cost_usd));
    let mut line = parts.join(" · ");
    if let Some(why) = &status.why {
        line.push_str(&format!(" — {why}"));
    }
    line
}

fn status_input(status: &InstanceStatus, view: Option<&ManifestView>) -> StatusInput {
    StatusInput {
        phases: view
            .map(|v| {
                v.phases
                    .iter()
                    .map(|(number, p)| PhaseRow {
                        number: *number,
                        plan: p.plan.as_str().to_string(),
                        execution: p.execution.as_str().to_string(),
                        validation: p.validation.as_str().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        next: status.next.as_ref().map(|n| NextLine {
            command: n.command.clone(),
            argument: n.argument.clone(),
            reason: n.reason.clone(),
        }),
        pending_failures: view
            .map(|v| {
                v.failures
                    .iter()
                    .filter(|f| f.is_pending())
                    .map(|f| FailureLine {
                        phase: f.phase,
                        category: f.error_category.clone(),
                        details: f.details.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        last_updated: view.and_then(|v| v.last_updated.clone()),
        state: Some(state_line(status)),
    }
}

fn multi_entry(status: &InstanceStatus) -> MultiStatusEntry {
    MultiStatusEntry {
        prefix: status.prefix.clone(),
        pid: status.pid,
        is_bot_owner: status.is_bot_owner,
        phase: status.phase,
        step: status.step.clone(),
        paused: status.state == RunState::Paused,
        pausing: pausing(status),
        done_phases: status.phases_done,
        total_phases: status.phases_total,
        next: status
            .next
            .as_ref()
            .map(|n| (n.command.clone(), n.argument.clone())),
        error: status.error.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// The table of `piv status`

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
        if let Some(words) = pausing(r) {
            let asked = match (&r.pause_requested_by, &r.pause_requested_at) {
                (Some(by), Some(at)) => format!(" (asked by {by} at {at})"),
                (None, Some(at)) => format!(" (asked at {at})"),
                _ => String::new(),
            };
            out.push_str(&format!("[{}] {words}{asked}\n", r.prefix));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::next_action::{Confidence, NextAction};

    fn status(state: RunState) -> InstanceStatus {
        InstanceStatus {
            prefix: "a".into(),
            project_dir: "/p/a".into(),
            pid: Some(7),
            is_bot_owner: true,
            state,
            phase: Some(2),
            step: Some("execute".into()),
            next: Some(NextAction {
                command: "execute".into(),
                argument: Some("plan.md".into()),
                reason: "r".into(),
                confidence: Confidence::High,
            }),
            cost_usd: 1.234,
            started_at: None,
            last_activity: None,
            uptime_secs: None,
            phases_done: 1,
            phases_total: 3,
            why: None,
            error: None,
            step_started_at: None,
            step_running_secs: None,
            pause_requested_at: None,
            pause_requested_by: None,
        }
    }

    fn pausing_status() -> InstanceStatus {
        let mut s = status(RunState::Pausing);
        s.step_started_at = Some("2026-01-01T00:00:00.000Z".into());
        s.step_running_secs = Some(240);
        s.pause_requested_at = Some("2026-01-01T00:04:00.000Z".into());
        s.pause_requested_by = Some("telegram".into());
        s
    }

    #[test]
    fn a_pending_pause_is_shown_everywhere_with_its_step() {
        let s = pausing_status();
        let chat = status_reply(&s, None);
        assert!(
            chat.contains(
                "<b>State:</b> pausing after execute, running 4m · Phase 2 · $1.23 this run"
            ),
            "{chat}"
        );
        let all = multi_status_reply(std::slice::from_ref(&s));
        assert!(
            all.contains("Phase 2: execute — ⏸ pausing after execute, running 4m → execute"),
            "{all}"
        );
        assert!(!all.contains("⏸ paused"), "{all}");
        let table = render_table(std::slice::from_ref(&s));
        let row = table.lines().nth(1).unwrap();
        assert!(row.contains(" pausing "), "{table}");
        assert!(
            table.contains(
                "[a] pausing after execute, running 4m (asked by telegram at 2026-01-01T00:04:00.000Z)"
            ),
            "{table}"
        );
        // Once paused, no pending pause is shown.
        let mut paused = s.clone();
        paused.state = RunState::Paused;
        assert!(!render_table(&[paused.clone()]).contains("pausing"));
        assert!(multi_status_reply(&[paused]).contains("⏸ paused"));
    }

    #[test]
    fn single_status_carries_state_step_and_cost() {
        let text = status_reply(&status(RunState::Running), None);
        assert!(
            text.contains("<b>State:</b> running · Phase 2 · execute · $1.23 this run"),
            "{text}"
        );
        assert!(text.contains("<b>Next:</b> execute plan.md"), "{text}");
        let mut broken = status(RunState::Running);
        broken.error = Some("no <manifest>".into());
        assert_eq!(
            status_reply(&broken, None),
            "⚠️ Could not read status: no &lt;manifest&gt;"
        );
    }

    #[test]
    fn multi_entry_maps_pause_and_owner() {
        let e = multi_entry(&status(RunState::Paused));
        assert!(e.paused && e.is_bot_owner);
        assert_eq!((e.done_phases, e.total_phases), (1, 3));
        assert_eq!(e.next, Some(("execute".into(), Some("plan.md".into()))));
    }

    #[test]
    fn table_shows_why_the_manifest_is_unavailable() {
        let mut s = status(RunState::Running);
        s.error = Some("syntax error at line 3".into());
        let table = render_table(&[s]);
        assert!(table.contains("manifest unavailable: syntax error at line 3"));
    }

    #[test]
    fn table_marks_the_owner_and_lists_why() {
        let mut s = status(RunState::WaitingForHuman);
        s.why = Some("integration_auth: not logged in".into());
        let t = render_table(&[s]);
        assert!(t.lines().nth(1).unwrap().contains(" * "), "{t}");
        assert!(t.contains("waiting for a human: integration_auth"), "{t}");
    }

    #[test]
    fn status_message_matches_the_reference_layout() {
        let input = StatusInput {
            phases: vec![
                PhaseRow {
                    number: 1,
                    plan: "complete".into(),
                    execution: "complete".into(),
                    validation: "pass".into(),
                },
                PhaseRow {
                    number: 2,
                    plan: "complete".into(),
                    execution: "in_progress".into(),
                    validation: "not_run".into(),
                },
            ],
            next: Some(NextLine {
                command: "execute".into(),
                argument: Some(".agents/plans/p2.md".into()),
                reason: "Plan exists — execute <it>".into(),
            }),
            pending_failures: vec![FailureLine {
                phase: 2,
                category: "test_failure".into(),
                details: "a < b".into(),
            }],
            last_updated: Some("2025-01-01T00:00:00Z".into()),
            state: None,
        };
        let want = "<b>PIV Orchestrator Status</b>\n\n<b>Phases:</b>\n  Phase 1: ✅ Plan ✅ Exec ✅ Val\n  Phase 2: ✅ Plan 🟡 Exec ⚪ Val\n\n<b>Next:</b> execute .agents/plans/p2.md\n<i>Plan exists — execute &lt;it&gt;</i>\n\n<b>Active Failures:</b>\n  🔴 Phase 2 (test_failure): a &lt; b\n\n<i>Updated: 2025-01-01T00:00:00Z</i>";
        assert_eq!(format_status(&input), want);
    }

    #[test]
    fn status_message_minimal_and_with_state() {
        let input = StatusInput {
            next: Some(NextLine {
                command: "done".into(),
                argument: None,
                reason: "All phases complete".into(),
            }),
            state: Some("paused".into()),
            ..Default::default()
        };
        let text = format_status(&input);
        assert!(text.contains("<b>State:</b> paused"));
        assert!(
            text.contains("<b>Next:</b> done \n"),
            "trailing space as the reference: {text}"
        );
        assert!(!text.contains("Active Failures"));
        assert!(!text.contains("Updated"));
    }

    #[test]
    fn validation_icons() {
        let row = |v: &str| PhaseRow {
            number: 1,
            plan: "x".into(),
            execution: "x".into(),
            validation: v.into(),
        };
        for (v, icon) in [
            ("pass", "✅"),
            ("partial", "🟡"),
            ("fail", "🔴"),
            ("not_run", "⚪"),
        ] {
            let text = format_status(&StatusInput {
                phases: vec![row(v)],
                ..Default::default()
            });
            assert!(text.contains(&format!("⚪ Exec {icon} Val")), "{v}: {text}");
        }
    }

    #[test]
    fn multi_status_lists_every_instance() {
        let entries = vec![
            MultiStatusEntry {
                prefix: "a".into(),
                pid: Some(10),
                is_bot_owner: true,
                phase: Some(2),
                step: Some("execute".into()),
                done_phases: 1,
                total_phases: 3,
                next: Some(("execute".into(), Some("p.md".into()))),
                ..Default::default()
            },
            MultiStatusEntry {
                prefix: "b&c".into(),
                pid: Some(11),
                paused: true,
                done_phases: 0,
                total_phases: 2,
                ..Default::default()
            },
            MultiStatusEntry {
                prefix: "d".into(),
                pid: None,
                error: Some("yaml: line 3 <bad>".into()),
                ..Default::default()
            },
        ];
        let text = format_multi_status(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "<b>PIV Orchestrator — All Instances</b>");
        assert_eq!(
            lines[2],
            "<b>[a]</b> 👑 PID 10 — 1/3 phases — Phase 2: execute → execute p.md"
        );
        assert_eq!(
            lines[3],
            "<b>[b&amp;c]</b> PID 11 — 0/2 phases — ⏸ paused → idle"
        );
        assert_eq!(
            lines[4],
            "<b>[d]</b> not running — <i>manifest unavailable</i>: yaml: line 3 &lt;bad&gt;"
        );
        assert!(text.ends_with("<i>👑 = answers this chat</i>"));
    }

    #[test]
    fn multi_status_empty() {
        assert_eq!(
            format_multi_status(&[]),
            "<b>PIV Orchestrator — All Instances</b>\n\n<i>No active instances found.</i>"
        );
    }
}
