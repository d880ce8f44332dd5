//! The inline buttons of an escalation: which buttons an open escalation carries, their
//! `callback_data` (at most 64 bytes, naming the project and the escalation), reading a
//! tapped button back, and whether a tap may still act.

use std::fmt;

/// Telegram's limit on `callback_data`, in bytes.
pub const CALLBACK_DATA_MAX_BYTES: usize = 64;
/// Every piv button's data starts with this, so foreign buttons are told apart.
const TAG: &str = "piv";

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    Retry,
    /// First tap on Rollback: asks to confirm, naming the checkpoint.
    Rollback,
    /// The confirmation of a rollback.
    RollbackConfirmed,
    Pause,
    Resume,
    /// Calls off a rollback's confirmation: the escalation's own buttons come back.
    Cancel,
    /// The overage stop: go on, paid from extra usage, for this one decision (a resume).
    ContinueOverage,
    /// The overage stop: spend no extra usage, wait for the subscription's reset like a
    /// usage-limit wait, then go on by itself (a resume that chose to wait).
    WaitForReset,
}

impl ButtonAction {
    const ALL: [ButtonAction; 8] = [
        ButtonAction::Retry,
        ButtonAction::Rollback,
        ButtonAction::RollbackConfirmed,
        ButtonAction::Pause,
        ButtonAction::Resume,
        ButtonAction::Cancel,
        ButtonAction::ContinueOverage,
        ButtonAction::WaitForReset,
    ];

    /// The action of a code (the `callback_data` part, also kept in the escalation file).
    pub fn from_code(code: &str) -> Option<ButtonAction> {
        ButtonAction::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Its short code in `callback_data`.
    pub fn code(self) -> &'static str {
        match self {
            ButtonAction::Retry => "r",
            ButtonAction::Rollback => "b",
            ButtonAction::RollbackConfirmed => "B",
            ButtonAction::Pause => "p",
            ButtonAction::Resume => "u",
            ButtonAction::Cancel => "c",
            ButtonAction::ContinueOverage => "o",
            ButtonAction::WaitForReset => "w",
        }
    }

    /// The button's label.
    pub fn label(self) -> &'static str {
        match self {
            ButtonAction::Retry => "🔁 Retry",
            ButtonAction::Rollback => "⏪ Rollback",
            ButtonAction::RollbackConfirmed => "⚠️ Yes, roll back",
            ButtonAction::Pause => "⏸ Pause",
            ButtonAction::Resume => "▶️ Resume",
            ButtonAction::Cancel => "Cancel",
            ButtonAction::ContinueOverage => "💳 Continue on extra usage",
            ButtonAction::WaitForReset => "⏳ Wait for the reset",
        }
    }
}

/// Who a button is for: the project by its prefix, or — when the prefix is too long for 64
/// bytes — by a short hash of it (`#` and 8 hex digits), matched against the live prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    Prefix(String),
    Hash(String),
}

impl ProjectRef {
    /// Whether this reference names `prefix`.
    pub fn names(&self, prefix: &str) -> bool {
        match self {
            ProjectRef::Prefix(p) => p == prefix,
            ProjectRef::Hash(h) => *h == prefix_hash(prefix),
        }
    }
}

/// One tapped (or to-be-sent) button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Button {
    pub action: ButtonAction,
    pub escalation: u64,
    pub project: ProjectRef,
}

fn prefix_hash(prefix: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in prefix.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

impl Button {
    pub fn new(action: ButtonAction, escalation: u64, prefix: &str) -> Self {
        Self {
            action,
            escalation,
            project: ProjectRef::Prefix(prefix.to_string()),
        }
    }

    /// The `callback_data`: `piv:<action>:<escalation>:<prefix>`, or `…:#<hash>` when the
    /// prefix would make it longer than 64 bytes.
    pub fn callback_data(&self) -> String {
        let head = format!("{TAG}:{}:{}:", self.action.code(), self.escalation);
        match &self.project {
            ProjectRef::Prefix(p) if head.len() + p.len() <= CALLBACK_DATA_MAX_BYTES => {
                format!("{head}{p}")
            }
            ProjectRef::Prefix(p) => format!("{head}#{}", prefix_hash(p)),
            ProjectRef::Hash(h) => format!("{head}#{h}"),
        }
    }

    /// Reads a tapped button's data; `None` for anything piv did not send.
    pub fn parse(data: &str) -> Option<Button> {
        let mut parts = data.splitn(4, ':');
        if parts.next()? != TAG {
            return None;
        }
        let code = parts.next()?;
        let action = ButtonAction::from_code(code)?;
        let escalation = parts.next()?.parse().ok()?;
        let project = parts.next()?;
        let project = match project.strip_prefix('#') {
            Some(h) if h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                ProjectRef::Hash(h.to_string())
            }
            Some(_) => return None,
            None if !project.is_empty() => ProjectRef::Prefix(project.to_string()),
            None => return None,
        };
        Some(Button {
            action,
            escalation,
            project,
        })
    }
}

impl fmt::Display for ButtonAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether a tap may act: only on the escalation that is open right now. A tap on an
/// older escalation (or after it was settled) gets an alert, never an action.
pub fn tap_is_current(tapped: u64, open: Option<u64>) -> bool {
    open == Some(tapped)
}

/// The buttons of an escalation as they are offered now: a run paused for a human (the
/// cost cap, the daily cap, a login) gets Resume — the overage stop "Continue on extra
/// usage", which is the same resume, and "Wait for the reset"; a run stopped for one gets Retry (running the loop
/// again) and, when the failure left a checkpoint to go back to, Rollback. `category` and
/// `action` are the escalation's category and "action taken" text.
pub fn offered_buttons(
    category: &str,
    action: &str,
    checkpoint: Option<&str>,
) -> Vec<ButtonAction> {
    if action.trim_start().starts_with("Paused") {
        if category == "overage" {
            vec![ButtonAction::ContinueOverage, ButtonAction::WaitForReset]
        } else {
            vec![ButtonAction::Resume]
        }
    } else if checkpoint.is_some() {
        vec![ButtonAction::Retry, ButtonAction::Rollback]
    } else {
        vec![ButtonAction::Retry]
    }
}

/// The buttons an event's message carries, if any: an escalation's (above); a wait the run
/// gets through on its own (an API outage, the usage limit) offers Pause, so a human can
/// hold the run where it is. `checkpoint` is the one a Rollback would go back to.
pub fn event_buttons(
    event: &crate::core::events::RunEvent,
    checkpoint: Option<&str>,
) -> Option<Vec<ButtonAction>> {
    use crate::core::events::RunEvent;
    match event {
        RunEvent::NeedsHuman {
            category, action, ..
        } => Some(offered_buttons(category, action, checkpoint)),
        RunEvent::OutageStarted { .. } | RunEvent::UsageLimitWait { .. } => {
            Some(vec![ButtonAction::Pause])
        }
        _ => None,
    }
}

/// The label of a project's Pause button on the one usage-limit message shared by every
/// waiting project: it names the project.
pub fn project_pause_label(prefix: &str) -> String {
    format!("{} [{prefix}]", ButtonAction::Pause.label())
}

/// The buttons of the shared usage-limit message: one ⏸ Pause row per waiting project (in
/// the order given), all carrying the wait's one escalation id (`core::usage::
/// limit_escalation`), each checked against its own project's open escalation.
pub fn shared_wait_buttons(escalation: u64, prefixes: &[String]) -> Vec<Vec<(String, String)>> {
    prefixes
        .iter()
        .map(|p| {
            let button = Button::new(ButtonAction::Pause, escalation, p);
            vec![(project_pause_label(p), button.callback_data())]
        })
        .collect()
}

/// The projects whose Pause stays on the shared message after a tap acted on one of them:
/// the others still waiting on the same escalation (their open one is `tapped`), in the
/// order the message names them (`text`). `others` are (prefix, open escalation).
pub fn still_waiting(tapped: u64, others: &[(String, Option<u64>)], text: &str) -> Vec<String> {
    let mut left: Vec<&String> = others
        .iter()
        .filter(|(_, open)| *open == Some(tapped))
        .map(|(p, _)| p)
        .collect();
    left.sort_by_key(|p| text.find(&format!(" {p} at ")).unwrap_or(usize::MAX));
    left.into_iter().cloned().collect()
}

/// The checkpoint an escalation of `phase` may roll back to: the newest failure of that
/// phase was escalated (not retried, not already rolled back) with a checkpoint that is
/// still active.
pub fn rollback_checkpoint(
    view: &crate::core::manifest::ManifestView,
    phase: Option<u32>,
) -> Option<String> {
    let phase = phase?;
    let failure = view.failures.iter().rev().find(|f| f.phase == phase)?;
    let tag = failure.checkpoint.as_deref().filter(|t| !t.is_empty())?;
    let active = view
        .checkpoints
        .iter()
        .any(|c| c.tag == tag && c.status == "active");
    (failure.resolution == "escalated_blocking" && active).then(|| tag.to_string())
}

/// What the owner does with a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapPlan {
    /// Ask to confirm (Rollback): the message gains the question and Yes / Cancel.
    Confirm,
    /// Call off the confirmation (Cancel): the escalation's own buttons come back.
    Restore,
    /// Claim the escalation and send this to the instance.
    Signal(crate::core::control::ControlAction),
}

/// What a tapped button makes the owner do.
pub fn tap_plan(action: ButtonAction) -> TapPlan {
    use crate::core::control::ControlAction;
    match action {
        ButtonAction::Rollback => TapPlan::Confirm,
        ButtonAction::Cancel => TapPlan::Restore,
        // Retrying an escalated step is running the loop again from the manifest.
        ButtonAction::Retry => TapPlan::Signal(ControlAction::Go),
        ButtonAction::Pause => TapPlan::Signal(ControlAction::Pause),
        // The overage stop holds as a pause; resuming is going on past it, once — or,
        // with the choice claimed in the escalation file, waiting for the reset.
        ButtonAction::Resume | ButtonAction::ContinueOverage | ButtonAction::WaitForReset => {
            TapPlan::Signal(ControlAction::Resume)
        }
        ButtonAction::RollbackConfirmed => TapPlan::Signal(ControlAction::Rollback),
    }
}

/// Marks where the confirmation question starts in a message's (plain) text.
const QUESTION_HEAD: &str = "\n\n⏪ Roll back [";

/// The confirmation asked under the escalation (HTML): it names the checkpoint.
pub fn rollback_question(prefix: &str, tag: &str) -> String {
    use crate::core::telegram_text::escape_html;
    format!(
        "{}{}] to checkpoint <code>{}</code>? Uncommitted work since then is discarded.",
        escape_html(QUESTION_HEAD),
        escape_html(prefix),
        escape_html(tag)
    )
}

/// The confirmation's buttons.
pub fn confirmation_buttons() -> Vec<ButtonAction> {
    vec![ButtonAction::RollbackConfirmed, ButtonAction::Cancel]
}

/// A message's text without the confirmation question (what Cancel puts back).
pub fn without_question(text: &str) -> &str {
    text.rfind(QUESTION_HEAD).map_or(text, |at| &text[..at])
}

/// The alert for a Rollback when the escalation has no checkpoint on record.
pub fn no_checkpoint(prefix: &str) -> String {
    format!("[{prefix}] has no checkpoint to roll back to.")
}

/// The short answer to a tap that acted (shown at once).
pub fn tap_taken(action: ButtonAction, prefix: &str) -> String {
    format!("{} sent to [{prefix}]", action.label())
}

/// The alert for a tap on an escalation that is no longer open.
pub fn tap_stale(prefix: &str) -> String {
    format!("This escalation of [{prefix}] is no longer open: nothing was done.")
}

/// The line added under an escalation once a button acted: who chose what, when (UTC).
pub fn chosen_line(action: ButtonAction, by: &str, at_utc_hhmm: &str) -> String {
    chosen_line_labelled(action.label(), by, at_utc_hhmm)
}

/// [`chosen_line`] under the shared usage-limit message, which has a Pause per project:
/// the line names the project.
pub fn chosen_for_line(action: ButtonAction, prefix: &str, by: &str, at_utc_hhmm: &str) -> String {
    chosen_line_labelled(&format!("{} [{prefix}]", action.label()), by, at_utc_hhmm)
}

fn chosen_line_labelled(label: &str, by: &str, at_utc_hhmm: &str) -> String {
    format!(
        "\n\n<i>{} — chosen by {} at {} UTC</i>",
        crate::core::telegram_text::escape_html(label),
        crate::core::telegram_text::escape_html(by),
        crate::core::telegram_text::escape_html(at_utc_hhmm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_escalations_offer_resume_stopped_ones_retry_and_rollback() {
        use ButtonAction::*;
        let tag = Some("piv-checkpoint/phase-1-x");
        // (action taken, checkpoint, buttons)
        let cases = [
            ("Paused — resume to continue", None, vec![Resume]),
            ("Paused — resume to continue", tag, vec![Resume]),
            (
                "Paused — /resume (or `piv signal <prefix> resume`) to continue",
                None,
                vec![Resume],
            ),
            ("Stopped", None, vec![Retry]),
            ("Stopped", tag, vec![Retry, Rollback]),
            (
                "Escalated immediately — check the credentials",
                tag,
                vec![Retry, Rollback],
            ),
            (
                "Escalated immediately — check the credentials",
                None,
                vec![Retry],
            ),
        ];
        for (action, checkpoint, want) in cases {
            assert_eq!(
                offered_buttons("cost_cap", action, checkpoint),
                want,
                "{action}"
            );
        }
        // The overage stop: going on paid from extra usage is its resume.
        let overage = "Paused — /resume (or `piv signal <prefix> resume`) to continue";
        assert_eq!(
            offered_buttons("overage", overage, None),
            vec![ContinueOverage, WaitForReset]
        );
        assert_eq!(offered_buttons("overage", "Stopped", None), vec![Retry]);
    }

    #[test]
    fn waits_the_run_gets_through_offer_pause_escalations_their_own() {
        use crate::core::events::RunEvent;
        use ButtonAction::*;
        let escalation = RunEvent::NeedsHuman {
            phase: Some(1),
            category: "integration_auth".into(),
            details: "401".into(),
            action: "Escalated immediately".into(),
        };
        let outage = RunEvent::OutageStarted {
            phase: Some(1),
            step: "plan".into(),
            detail: "unreachable".into(),
            retry_in_secs: 30,
        };
        let limit = RunEvent::UsageLimitWait {
            resets_at: "2026-12-01T05:00:00Z".into(),
        };
        // (event, checkpoint, buttons)
        let cases = [
            (escalation.clone(), Some("t"), Some(vec![Retry, Rollback])),
            (escalation, None, Some(vec![Retry])),
            (outage, Some("t"), Some(vec![Pause])),
            (limit, None, Some(vec![Pause])),
            (RunEvent::Info("x".into()), None, None),
            (RunEvent::Stopped { why: "x".into() }, None, None),
        ];
        for (event, checkpoint, want) in cases {
            assert_eq!(event_buttons(&event, checkpoint), want, "{event:?}");
        }
    }

    #[test]
    fn what_a_tap_does_and_says() {
        use crate::core::control::ControlAction;
        let cases = [
            (ButtonAction::Retry, TapPlan::Signal(ControlAction::Go)),
            (ButtonAction::Pause, TapPlan::Signal(ControlAction::Pause)),
            (ButtonAction::Resume, TapPlan::Signal(ControlAction::Resume)),
            (ButtonAction::Rollback, TapPlan::Confirm),
            (
                ButtonAction::RollbackConfirmed,
                TapPlan::Signal(ControlAction::Rollback),
            ),
            (ButtonAction::Cancel, TapPlan::Restore),
            (
                ButtonAction::ContinueOverage,
                TapPlan::Signal(ControlAction::Resume),
            ),
            (
                ButtonAction::WaitForReset,
                TapPlan::Signal(ControlAction::Resume),
            ),
        ];
        assert_eq!(cases.len(), ButtonAction::ALL.len());
        for (action, want) in cases {
            assert_eq!(tap_plan(action), want, "{action:?}");
            assert_eq!(ButtonAction::from_code(action.code()), Some(action));
        }
        assert_eq!(tap_taken(ButtonAction::Retry, "b"), "🔁 Retry sent to [b]");
        assert!(tap_stale("b").contains("no longer open"));
        assert_eq!(
            chosen_line(ButtonAction::Retry, "@a<b>", "21:05"),
            "\n\n<i>🔁 Retry — chosen by @a&lt;b&gt; at 21:05 UTC</i>"
        );
    }

    #[test]
    fn the_confirmation_names_the_checkpoint_and_cancel_takes_it_away() {
        let question = rollback_question("b<1>", "piv-checkpoint/phase-1-x");
        assert_eq!(
            question,
            "\n\n⏪ Roll back [b&lt;1&gt;] to checkpoint <code>piv-checkpoint/phase-1-x</code>? Uncommitted work since then is discarded."
        );
        // The tapped message's text is plain: the question as the chat shows it.
        let shown = "🔴 Phase 1 needs a human\n\n⏪ Roll back [b] to checkpoint t? Uncommitted work since then is discarded.";
        assert_eq!(without_question(shown), "🔴 Phase 1 needs a human");
        assert_eq!(without_question("no question"), "no question");
        assert_eq!(
            confirmation_buttons(),
            vec![ButtonAction::RollbackConfirmed, ButtonAction::Cancel]
        );
    }

    #[test]
    fn rollback_is_offered_for_an_escalated_failure_with_an_active_checkpoint() {
        let failure = |resolution: &str, checkpoint: &str| {
            format!("  - {{command: execute, phase: 1, error_category: integration_auth, retry_count: 0, resolution: {resolution}, checkpoint: {checkpoint}, details: x}}\n")
        };
        let doc = |failures: &[String], status: &str| {
            format!(
                "phases: {{}}\ncheckpoints:\n  - {{tag: t1, phase: 1, status: {status}}}\nfailures:\n{}",
                failures.concat()
            )
        };
        // (manifest, phase, checkpoint offered)
        let cases = [
            (
                doc(&[failure("escalated_blocking", "t1")], "active"),
                Some(1),
                Some("t1"),
            ),
            (
                doc(&[failure("escalated_blocking", "t1")], "resolved"),
                Some(1),
                None,
            ),
            (
                doc(&[failure("escalated_blocking", "t1")], "active"),
                Some(2),
                None,
            ),
            (
                doc(&[failure("escalated_blocking", "t1")], "active"),
                None,
                None,
            ),
            (
                doc(&[failure("rolled_back", "t1")], "active"),
                Some(1),
                None,
            ),
            (doc(&[failure("pending", "t1")], "active"), Some(1), None),
            (
                doc(&[failure("escalated_blocking", "other")], "active"),
                Some(1),
                None,
            ),
            // The newest failure of the phase decides.
            (
                doc(
                    &[
                        failure("escalated_blocking", "t1"),
                        failure("rolled_back", "t1"),
                    ],
                    "active",
                ),
                Some(1),
                None,
            ),
            (
                doc(
                    &[
                        failure("rolled_back", "t1"),
                        failure("escalated_blocking", "t1"),
                    ],
                    "active",
                ),
                Some(1),
                Some("t1"),
            ),
        ];
        for (text, phase, want) in cases {
            let manifest = crate::core::manifest::Manifest::parse(&text).unwrap();
            let view = manifest.view().unwrap();
            assert_eq!(
                rollback_checkpoint(&view, phase).as_deref(),
                want,
                "{text} {phase:?}"
            );
        }
    }

    #[test]
    fn data_round_trips_and_stays_within_64_bytes() {
        let long = "p".repeat(80);
        let cases = [
            (ButtonAction::Retry, 7, "beta"),
            (ButtonAction::RollbackConfirmed, u64::MAX, "alpha-service"),
            (ButtonAction::Pause, 0, "日本"),
            (ButtonAction::Resume, 12, long.as_str()),
        ];
        for (action, id, prefix) in cases {
            let button = Button::new(action, id, prefix);
            let data = button.callback_data();
            assert!(data.len() <= CALLBACK_DATA_MAX_BYTES, "{data}");
            let back = Button::parse(&data).expect(&data);
            assert_eq!(back.action, action);
            assert_eq!(back.escalation, id);
            assert!(back.project.names(prefix), "{data}");
            assert!(!back.project.names("other"), "{data}");
        }
    }

    #[test]
    fn short_prefixes_travel_as_themselves() {
        assert_eq!(
            Button::new(ButtonAction::Retry, 3, "beta").callback_data(),
            "piv:r:3:beta"
        );
        let hashed = Button::new(ButtonAction::Retry, 3, &"x".repeat(60)).callback_data();
        assert!(hashed.starts_with("piv:r:3:#"), "{hashed}");
    }

    #[test]
    fn foreign_or_broken_data_is_not_a_button() {
        for data in [
            "",
            "t3a_stripe",
            "piv",
            "piv:r",
            "piv:r:3",
            "piv:r:3:",
            "piv:x:3:beta",
            "piv:r:-1:beta",
            "piv:r:three:beta",
            "piv:r:3:#xyz",
            "other:r:3:beta",
        ] {
            assert_eq!(Button::parse(data), None, "{data}");
        }
    }

    #[test]
    fn only_the_open_escalation_acts() {
        // (tapped, open, acts)
        let cases = [
            (4, Some(4), true),
            (3, Some(4), false),
            (4, None, false),
            (5, Some(4), false),
        ];
        for (tapped, open, acts) in cases {
            assert_eq!(tap_is_current(tapped, open), acts, "{tapped} {open:?}");
        }
    }

    #[test]
    fn the_shared_limit_message_has_a_pause_per_project_with_one_escalation() {
        let long = "q".repeat(70);
        // (projects, escalation)
        let cases: [(Vec<String>, u64); 3] = [
            (
                vec!["high".into(), "mid".into(), "hitter".into()],
                1_764_550_000_000,
            ),
            (vec![long.clone()], u64::MAX),
            (vec![], 5),
        ];
        for (projects, id) in cases {
            let rows = shared_wait_buttons(id, &projects);
            assert_eq!(rows.len(), projects.len());
            for (row, p) in rows.iter().zip(&projects) {
                assert_eq!(row.len(), 1, "one button a row");
                let (label, data) = &row[0];
                assert_eq!(*label, project_pause_label(p));
                assert!(data.len() <= CALLBACK_DATA_MAX_BYTES, "{data}");
                let back = Button::parse(data).unwrap();
                assert_eq!(
                    (back.action, back.escalation),
                    (ButtonAction::Pause, id),
                    "{data}"
                );
                assert!(back.project.names(p));
            }
        }
        assert_eq!(project_pause_label("b"), "⏸ Pause [b]");
    }

    #[test]
    fn after_a_tap_the_others_still_waiting_keep_their_pause() {
        let text = "Usage limit reached … resume one by one: 1. high at 05:00; 2. mid at 05:01; 3. hitter at 05:02";
        let s = |p: &str, open: Option<u64>| (p.to_string(), open);
        // (others, left)
        let cases = [
            (
                vec![s("hitter", Some(7)), s("mid", Some(7))],
                vec!["mid", "hitter"],
            ),
            // Resumed already (closed), or waiting on something else: gone.
            (vec![s("hitter", None), s("mid", Some(7))], vec!["mid"]),
            (vec![s("hitter", Some(8)), s("mid", Some(7))], vec!["mid"]),
            (vec![], vec![]),
            // Not named by the message: last.
            (
                vec![s("zed", Some(7)), s("high", Some(7))],
                vec!["high", "zed"],
            ),
        ];
        for (others, want) in cases {
            assert_eq!(still_waiting(7, &others, text), want, "{others:?}");
        }
        assert_eq!(
            chosen_for_line(ButtonAction::Pause, "mid", "@x", "05:00"),
            "\n\n<i>⏸ Pause [mid] — chosen by @x at 05:00 UTC</i>"
        );
    }
}
