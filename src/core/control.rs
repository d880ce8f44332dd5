//! The control vocabulary: what a human (chat, `piv signal`, another instance) can ask a
//! run to do ([`ControlAction`]) and what the run answers ([`ControlReply`]).
//!
//! One action has one name everywhere: the chat command (`/pause`), the `piv signal`
//! argument, and the `action` field of a signal file (`"pause"`: that JSON name is a
//! file format and never changes). Adding an action is adding a variant here and its
//! line in each table below; the runner then handles it in one place.

use serde::{Deserialize, Serialize};

/// What a run is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlAction {
    /// Start (or continue) running phases.
    Go,
    /// Hold before the next step.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Stop cleanly (the supervisor's ordered shutdown).
    Shutdown,
    /// Roll back to the checkpoint of the escalation still open (from its confirmed
    /// button: the signal names the escalation).
    Rollback,
    /// Open the project's PRD relay (`/create_prd`).
    #[serde(rename = "prd_start")]
    PrdStart,
    /// A message for the open PRD relay (free text in the chat; the signal's `text`).
    #[serde(rename = "prd_text")]
    PrdText,
    /// Close the PRD relay (`/end_prd`).
    #[serde(rename = "prd_end")]
    PrdEnd,
}

impl ControlAction {
    /// Every action, in the order help texts list them.
    pub const ALL: [ControlAction; 8] = [
        ControlAction::Go,
        ControlAction::Pause,
        ControlAction::Resume,
        ControlAction::Shutdown,
        ControlAction::Rollback,
        ControlAction::PrdStart,
        ControlAction::PrdText,
        ControlAction::PrdEnd,
    ];

    /// The wire name (`go`, `pause`, `resume`, `shutdown`): the chat command without `/`,
    /// the `piv signal` argument and the signal file's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Go => "go",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Shutdown => "shutdown",
            ControlAction::Rollback => "rollback",
            ControlAction::PrdStart => "prd_start",
            ControlAction::PrdText => "prd_text",
            ControlAction::PrdEnd => "prd_end",
        }
    }

    /// The chat command that sends it (`create_prd` for `prd_start`); the wire name for
    /// the others. Free text has no command: `prd_text` keeps its wire name.
    pub fn command_name(self) -> &'static str {
        match self {
            ControlAction::PrdStart => "create_prd",
            ControlAction::PrdEnd => "end_prd",
            other => other.as_str(),
        }
    }

    /// The actions of the PRD relay, which the relay handles instead of the phase runner.
    pub fn is_prd(self) -> bool {
        matches!(
            self,
            ControlAction::PrdStart | ControlAction::PrdText | ControlAction::PrdEnd
        )
    }

    /// Whether `piv signal` offers it: all but `prd_text`, which needs a message the
    /// command line does not take, and `rollback`, which names an escalation (only its
    /// confirmed button sends one).
    pub fn from_terminal(self) -> bool {
        !matches!(self, ControlAction::PrdText | ControlAction::Rollback)
    }

    /// Parses a wire name, exactly (lowercase); `None` for anything else.
    pub fn from_name(name: &str) -> Option<ControlAction> {
        ControlAction::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// What the action does, for help texts.
    pub fn describe(self) -> &'static str {
        match self {
            ControlAction::Go => "Start (or continue) running phases.",
            ControlAction::Pause => "Hold before the next step.",
            ControlAction::Resume => "Continue after a pause.",
            ControlAction::Shutdown => "Stop cleanly.",
            ControlAction::Rollback => {
                "Roll back to the open escalation's checkpoint (its confirmed button)."
            }
            ControlAction::PrdStart => "Open the PRD relay (its answers go to the chat).",
            ControlAction::PrdText => "A message for the open PRD relay.",
            ControlAction::PrdEnd => "Close the PRD relay.",
        }
    }

    /// Whether the chat offers it as a command named by its wire name (`/go`, `/pause`,
    /// `/resume`; shutting an instance down stays with its terminal and `piv signal`; the
    /// relay's actions have commands of their own, [`command_name`](Self::command_name)).
    pub fn in_chat(self) -> bool {
        matches!(
            self,
            ControlAction::Go | ControlAction::Pause | ControlAction::Resume
        )
    }

    /// The icon of the chat's confirmations.
    pub fn icon(self) -> &'static str {
        match self {
            ControlAction::Go => "🚀",
            ControlAction::Pause => "⏸",
            ControlAction::Resume => "▶️",
            ControlAction::Shutdown => "🛑",
            ControlAction::Rollback => "⏪",
            ControlAction::PrdStart | ControlAction::PrdText | ControlAction::PrdEnd => "📝",
        }
    }
}

impl std::fmt::Display for ControlAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long something has been running, in the short form of the replies and statuses:
/// `12s`, `4m`, `1h05m`.
pub fn running_for(secs: u64) -> String {
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

/// The one wording of a pending pause, for the control reply and every status:
/// "pausing after execute, running 4m". `step` is the step the pause waits for (its
/// label, as in the status); `running_secs` how long that step has run. Without a known
/// step (between steps, or a wait) the pause waits for "the current step".
pub fn pausing_words(step: Option<&str>, running_secs: Option<u64>) -> String {
    match (step, running_secs) {
        (Some(step), Some(secs)) => {
            format!("pausing after {step}, running {}", running_for(secs))
        }
        (Some(step), None) => format!("pausing after {step}"),
        (None, _) => "pausing after the current step".to_string(),
    }
}

/// What a control action did; [`text`](Self::text) is the reply shown in the chat or
/// the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlReply {
    /// The pause is taken; no step was running, so it holds before the next one.
    Paused,
    /// The pause is taken and waits for `step`, which has run `running_secs` (the state
    /// is `pausing` until it ends).
    Pausing {
        step: String,
        running_secs: u64,
    },
    AlreadyPaused,
    Resumed,
    NotPaused,
    Started,
    AlreadyRunning,
    NothingRunning,
    /// The ordered shutdown has begun (it announces itself).
    ShuttingDown,
    /// The phase runner did not take the message (it is restarting or gone).
    RunnerUnavailable,
    /// The work was rolled back to the checkpoint `tag`; the run stays stopped.
    RolledBack {
        tag: String,
    },
    /// A rollback was asked for and not done (a stale escalation, a step running, no
    /// checkpoint, git failed): `why`.
    NotRolledBack {
        why: String,
    },
    /// `/go` or `/resume` while the project's PRD relay is open: one agent per project.
    PrdOpen,
    /// A relay action reached the runner, which does not handle it.
    NotForRunner,
}

impl ControlReply {
    /// The answer to a pause that was taken: it names the step it waits for when a
    /// step's session is running (`step` and `step_started_at`, RFC 3339, as the runner
    /// publishes them), else it holds before the next step.
    pub fn pause_taken(
        step: Option<&str>,
        step_started_at: Option<&str>,
        now_unix_secs: i64,
    ) -> ControlReply {
        match (step, step_started_at) {
            (Some(step), Some(started)) => ControlReply::Pausing {
                step: step.to_string(),
                running_secs: crate::core::status::secs_since(started, now_unix_secs).unwrap_or(0),
            },
            _ => ControlReply::Paused,
        }
    }

    /// The reply texts, as the earlier version words them; a pause that waits for a
    /// running step names it ([`pausing_words`]).
    pub fn text(&self) -> String {
        let text = match self {
            ControlReply::RolledBack { tag } => {
                return format!("⏪ Rolled back to {tag}. Stopped: /go (or Retry) runs again.")
            }
            ControlReply::NotRolledBack { why } => return format!("⚠️ Not rolled back: {why}"),
            ControlReply::Pausing { step, running_secs } => {
                let words = pausing_words(Some(step), Some(*running_secs));
                // "pausing …" starts the reply, capitalised.
                return format!("⏸ P{}...", &words[1..]);
            }
            ControlReply::Paused => "⏸ Pausing after current step completes...",
            ControlReply::AlreadyPaused => "⚠️ Already paused.",
            ControlReply::Resumed => "▶️ Resuming execution...",
            ControlReply::NotPaused => "⚠️ Not currently paused.",
            ControlReply::Started => "🚀 Autonomous execution starting...",
            ControlReply::AlreadyRunning => "⚠️ Execution already in progress.",
            ControlReply::NothingRunning => "⚠️ Nothing is running to pause.",
            ControlReply::ShuttingDown => "🛑 Shutting down...",
            ControlReply::RunnerUnavailable => "⚠️ Could not reach the runner.",
            ControlReply::PrdOpen => {
                "⚠️ A PRD session is open in this project. Send /end_prd first, then /go or /resume."
            }
            ControlReply::NotForRunner => "⚠️ The runner does not handle that action.",
        };
        text.to_string()
    }

    /// What a signal's receiver tells its terminal and chat about it: the reply text,
    /// except for a shutdown (the ordered shutdown announces itself) and a runner that
    /// could not be reached (logged, not announced).
    pub fn announcement(&self) -> Option<String> {
        match self {
            // A rollback is said by the run itself, as an escalation with its Retry.
            ControlReply::ShuttingDown
            | ControlReply::RunnerUnavailable
            | ControlReply::RolledBack { .. }
            | ControlReply::NotForRunner => None,
            other => Some(other.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_table() {
        // (action, wire name, in the chat, icon)
        let table = [
            (ControlAction::Go, "go", true, "🚀"),
            (ControlAction::Pause, "pause", true, "⏸"),
            (ControlAction::Resume, "resume", true, "▶️"),
            (ControlAction::Shutdown, "shutdown", false, "🛑"),
            (ControlAction::Rollback, "rollback", false, "⏪"),
            (ControlAction::PrdStart, "prd_start", false, "📝"),
            (ControlAction::PrdText, "prd_text", false, "📝"),
            (ControlAction::PrdEnd, "prd_end", false, "📝"),
        ];
        assert_eq!(table.len(), ControlAction::ALL.len());
        for (action, name, in_chat, icon) in table {
            assert_eq!(action.as_str(), name);
            assert_eq!(action.to_string(), name);
            assert_eq!(ControlAction::from_name(name), Some(action));
            assert_eq!(action.in_chat(), in_chat, "{name}");
            assert_eq!(action.icon(), icon, "{name}");
            assert!(action.describe().ends_with('.'), "{name}");
            // The JSON name is the signal file's format.
            assert_eq!(
                serde_json::to_string(&action).unwrap(),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn relay_actions_have_commands_of_their_own() {
        // (action, chat command, a relay action, `piv signal` offers it)
        let table = [
            (ControlAction::Go, "go", false, true),
            (ControlAction::Shutdown, "shutdown", false, true),
            (ControlAction::PrdStart, "create_prd", true, true),
            (ControlAction::PrdText, "prd_text", true, false),
            (ControlAction::PrdEnd, "end_prd", true, true),
        ];
        for (action, command, prd, terminal) in table {
            assert_eq!(action.command_name(), command);
            assert_eq!(action.is_prd(), prd, "{action}");
            assert_eq!(action.from_terminal(), terminal, "{action}");
        }
    }

    #[test]
    fn names_are_exact() {
        for name in ["Go", "PAUSE", " go", "stop", ""] {
            assert_eq!(ControlAction::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn reply_table() {
        let table = [
            (
                ControlReply::Paused,
                "⏸ Pausing after current step completes...",
                true,
            ),
            (ControlReply::AlreadyPaused, "⚠️ Already paused.", true),
            (ControlReply::Resumed, "▶️ Resuming execution...", true),
            (ControlReply::NotPaused, "⚠️ Not currently paused.", true),
            (
                ControlReply::Started,
                "🚀 Autonomous execution starting...",
                true,
            ),
            (
                ControlReply::AlreadyRunning,
                "⚠️ Execution already in progress.",
                true,
            ),
            (
                ControlReply::NothingRunning,
                "⚠️ Nothing is running to pause.",
                true,
            ),
            (ControlReply::ShuttingDown, "🛑 Shutting down...", false),
            (
                ControlReply::RunnerUnavailable,
                "⚠️ Could not reach the runner.",
                false,
            ),
            (
                ControlReply::PrdOpen,
                "⚠️ A PRD session is open in this project. Send /end_prd first, then /go or /resume.",
                true,
            ),
            (
                ControlReply::NotForRunner,
                "⚠️ The runner does not handle that action.",
                false,
            ),
        ];
        let rolled = ControlReply::RolledBack {
            tag: "piv-checkpoint/phase-1-x".into(),
        };
        assert_eq!(
            rolled.text(),
            "⏪ Rolled back to piv-checkpoint/phase-1-x. Stopped: /go (or Retry) runs again."
        );
        assert_eq!(rolled.announcement(), None, "the run says it itself");
        let refused = ControlReply::NotRolledBack {
            why: "that escalation is no longer open".into(),
        };
        assert_eq!(
            refused.announcement().as_deref(),
            Some("⚠️ Not rolled back: that escalation is no longer open")
        );
        for (reply, text, announced) in table {
            assert_eq!(reply.text(), text);
            assert_eq!(
                reply.announcement().as_deref(),
                announced.then_some(text),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn pausing_reply_names_the_step_and_how_long_it_runs() {
        // (step, running secs, reply)
        let table = [
            ("execute", 240, "⏸ Pausing after execute, running 4m..."),
            (
                "plan-feature",
                12,
                "⏸ Pausing after plan-feature, running 12s...",
            ),
            ("validate", 0, "⏸ Pausing after validate, running 0s..."),
            ("commit", 3900, "⏸ Pausing after commit, running 1h05m..."),
        ];
        for (step, running_secs, text) in table {
            let reply = ControlReply::Pausing {
                step: step.into(),
                running_secs,
            };
            assert_eq!(reply.text(), text);
            assert_eq!(reply.announcement().as_deref(), Some(text));
        }
    }

    #[test]
    fn pause_taken_table() {
        let started = "1970-01-01T00:01:00Z";
        let pausing = |step: &str, running_secs| ControlReply::Pausing {
            step: step.into(),
            running_secs,
        };
        // (step, step started at, now, reply)
        let table = [
            (Some("execute"), Some(started), 300, pausing("execute", 240)),
            (Some("validate"), Some(started), 60, pausing("validate", 0)),
            // A clock that went back: not negative.
            (Some("validate"), Some(started), 0, pausing("validate", 0)),
            // An unreadable start: the step is still named.
            (
                Some("commit"),
                Some("a while ago"),
                300,
                pausing("commit", 0),
            ),
            // No session running (between steps): held before the next one.
            (Some("execute"), None, 300, ControlReply::Paused),
            (None, None, 300, ControlReply::Paused),
            (None, Some(started), 300, ControlReply::Paused),
        ];
        for (step, at, now, want) in table {
            assert_eq!(
                ControlReply::pause_taken(step, at, now),
                want,
                "{step:?} {at:?}"
            );
        }
    }

    #[test]
    fn pausing_words_table() {
        // (step, running secs, words)
        let table = [
            (
                Some("execute"),
                Some(240),
                "pausing after execute, running 4m",
            ),
            (
                Some("execute"),
                Some(59),
                "pausing after execute, running 59s",
            ),
            (
                Some("execute"),
                Some(60),
                "pausing after execute, running 1m",
            ),
            (
                Some("execute"),
                Some(3599),
                "pausing after execute, running 59m",
            ),
            (
                Some("execute"),
                Some(7200),
                "pausing after execute, running 2h00m",
            ),
            (Some("execute"), None, "pausing after execute"),
            (None, Some(5), "pausing after the current step"),
            (None, None, "pausing after the current step"),
        ];
        for (step, secs, words) in table {
            assert_eq!(pausing_words(step, secs), words, "{step:?} {secs:?}");
        }
    }
}
