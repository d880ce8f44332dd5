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
}

impl ButtonAction {
    const ALL: [ButtonAction; 5] = [
        ButtonAction::Retry,
        ButtonAction::Rollback,
        ButtonAction::RollbackConfirmed,
        ButtonAction::Pause,
        ButtonAction::Resume,
    ];

    fn code(self) -> &'static str {
        match self {
            ButtonAction::Retry => "r",
            ButtonAction::Rollback => "b",
            ButtonAction::RollbackConfirmed => "B",
            ButtonAction::Pause => "p",
            ButtonAction::Resume => "u",
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
        let action = ButtonAction::ALL.into_iter().find(|a| a.code() == code)?;
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

/// The buttons of an open escalation, one row each: Retry and Rollback (when there is a
/// checkpoint to roll back to), then Pause or Resume as fits the run.
pub fn escalation_buttons(has_checkpoint: bool, paused: bool) -> Vec<ButtonAction> {
    let mut buttons = vec![ButtonAction::Retry];
    if has_checkpoint {
        buttons.push(ButtonAction::Rollback);
    }
    buttons.push(if paused {
        ButtonAction::Resume
    } else {
        ButtonAction::Pause
    });
    buttons
}

/// Whether a tap may act: only on the escalation that is open right now. A tap on an
/// older escalation (or after it was settled) gets an alert, never an action.
pub fn tap_is_current(tapped: u64, open: Option<u64>) -> bool {
    open == Some(tapped)
}

/// The buttons of an escalation as they are offered now: a run paused for a human (the
/// cost cap, an overage, the daily cap) gets Resume; a run stopped for one gets Retry
/// (running the loop again). `action` is the escalation's "action taken" text.
pub fn offered_buttons(action: &str) -> Vec<ButtonAction> {
    if action.trim_start().starts_with("Paused") {
        vec![ButtonAction::Resume]
    } else {
        vec![ButtonAction::Retry]
    }
}

/// What a tapped button asks the instance to do, as a control action (`None`: not
/// available from a button yet — the rollback with its confirmation).
pub fn control_of(action: ButtonAction) -> Option<crate::core::control::ControlAction> {
    use crate::core::control::ControlAction;
    match action {
        // Retrying an escalated step is running the loop again from the manifest.
        ButtonAction::Retry => Some(ControlAction::Go),
        ButtonAction::Pause => Some(ControlAction::Pause),
        ButtonAction::Resume => Some(ControlAction::Resume),
        ButtonAction::Rollback | ButtonAction::RollbackConfirmed => None,
    }
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
    format!(
        "\n\n<i>{} — chosen by {} at {} UTC</i>",
        crate::core::telegram_text::escape_html(action.label()),
        crate::core::telegram_text::escape_html(by),
        crate::core::telegram_text::escape_html(at_utc_hhmm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_escalations_offer_resume_stopped_ones_retry() {
        let cases = [
            ("Paused — resume to continue", vec![ButtonAction::Resume]),
            (
                "Paused — /resume (or `piv signal <prefix> resume`) to continue",
                vec![ButtonAction::Resume],
            ),
            ("Stopped", vec![ButtonAction::Retry]),
            (
                "Escalated immediately — check the credentials",
                vec![ButtonAction::Retry],
            ),
            (
                "Rolled back to checkpoint x; stopped",
                vec![ButtonAction::Retry],
            ),
        ];
        for (action, want) in cases {
            assert_eq!(offered_buttons(action), want, "{action}");
        }
    }

    #[test]
    fn what_a_tap_does_and_says() {
        use crate::core::control::ControlAction;
        let cases = [
            (ButtonAction::Retry, Some(ControlAction::Go)),
            (ButtonAction::Pause, Some(ControlAction::Pause)),
            (ButtonAction::Resume, Some(ControlAction::Resume)),
            (ButtonAction::Rollback, None),
            (ButtonAction::RollbackConfirmed, None),
        ];
        for (action, want) in cases {
            assert_eq!(control_of(action), want, "{action:?}");
        }
        assert_eq!(tap_taken(ButtonAction::Retry, "b"), "🔁 Retry sent to [b]");
        assert!(tap_stale("b").contains("no longer open"));
        assert_eq!(
            chosen_line(ButtonAction::Retry, "@a<b>", "21:05"),
            "\n\n<i>🔁 Retry — chosen by @a&lt;b&gt; at 21:05 UTC</i>"
        );
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
    fn an_escalation_offers_what_fits() {
        use ButtonAction::*;
        // (has checkpoint, paused, buttons)
        let cases = [
            (true, false, vec![Retry, Rollback, Pause]),
            (false, false, vec![Retry, Pause]),
            (true, true, vec![Retry, Rollback, Resume]),
            (false, true, vec![Retry, Resume]),
        ];
        for (checkpoint, paused, want) in cases {
            assert_eq!(escalation_buttons(checkpoint, paused), want);
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
}
