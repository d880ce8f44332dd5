//! How much a run says in the chat (`PIV_NOTIFY`): which run events become a new message,
//! and which only update the project's live status card.

use std::str::FromStr;

use crate::core::events::RunEvent;

/// `PIV_NOTIFY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyLevel {
    /// Only what needs a person: an escalation (retries exhausted, a category for a human,
    /// the cost cap) and a run that stopped before it was done.
    Quiet,
    /// What needs a person or closes something: also phase complete, usage-limit waits,
    /// outages, a restart after a crash and the run's end. Steps show on the live card.
    #[default]
    Normal,
    /// Every per-step line, as before the live card existed.
    Verbose,
}

impl FromStr for NotifyLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "quiet" => Ok(NotifyLevel::Quiet),
            "normal" => Ok(NotifyLevel::Normal),
            "verbose" => Ok(NotifyLevel::Verbose),
            other => Err(format!(
                "PIV_NOTIFY must be quiet, normal or verbose, not {other:?}"
            )),
        }
    }
}

/// Where an event goes in the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatDelivery {
    /// A message of its own.
    NewMessage,
    /// Only the live status card (edited in place) reflects it.
    CardOnly,
}

/// Whether an event gets a message of its own at this level.
pub fn delivery(level: NotifyLevel, event: &RunEvent) -> ChatDelivery {
    let needs_person = matches!(
        event,
        RunEvent::NeedsHuman { .. } | RunEvent::Stopped { .. }
    );
    let closes_something = matches!(
        event,
        RunEvent::PhaseComplete { .. }
            | RunEvent::UsageLimitWait { .. }
            | RunEvent::UsageLimitShared { .. }
            | RunEvent::OutageStarted { .. }
            | RunEvent::OutageEnded { .. }
            | RunEvent::Restarted { .. }
            | RunEvent::AllDone { .. }
            | RunEvent::Summary { .. }
    );
    if matches!(event, RunEvent::Activity { .. }) {
        return ChatDelivery::CardOnly;
    }
    let new = match level {
        NotifyLevel::Verbose => true,
        NotifyLevel::Normal => needs_person || closes_something,
        NotifyLevel::Quiet => needs_person,
    };
    if new {
        ChatDelivery::NewMessage
    } else {
        ChatDelivery::CardOnly
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use ChatDelivery::{CardOnly as C, NewMessage as N};

    #[test]
    fn parses_the_three_levels_and_names_bad_values() {
        assert_eq!("quiet".parse(), Ok(NotifyLevel::Quiet));
        assert_eq!(" Normal ".parse(), Ok(NotifyLevel::Normal));
        assert_eq!("VERBOSE".parse(), Ok(NotifyLevel::Verbose));
        let err = "loud".parse::<NotifyLevel>().unwrap_err();
        assert!(
            err.contains("quiet, normal or verbose") && err.contains("loud"),
            "{err}"
        );
        assert_eq!(NotifyLevel::default(), NotifyLevel::Normal);
    }

    #[test]
    fn each_event_by_level() {
        let step_ended = RunEvent::StepEnded {
            phase: Some(1),
            step: "execute".into(),
            elapsed: Duration::from_secs(3),
            cost_usd: 0.1,
            error: None,
        };
        let needs_human = RunEvent::NeedsHuman {
            phase: Some(1),
            category: "integration_auth".into(),
            details: "d".into(),
            action: "a".into(),
        };
        // (event, quiet, normal, verbose)
        let cases = [
            (step_ended, C, C, N),
            (
                RunEvent::PhaseStarted {
                    phase: 1,
                    name: "x".into(),
                },
                C,
                C,
                N,
            ),
            (
                RunEvent::Retrying {
                    phase: 1,
                    command: "execute".into(),
                    category: "syntax_error".into(),
                    attempt: 1,
                    details: "d".into(),
                },
                C,
                C,
                N,
            ),
            (RunEvent::Heartbeat { phase: Some(1) }, C, C, N),
            (RunEvent::Info("x".into()), C, C, N),
            (RunEvent::Activity { tools: vec![] }, C, C, C),
            (RunEvent::Paused { by: "chat".into() }, C, C, N),
            (
                RunEvent::PhaseComplete {
                    phase: 1,
                    cost_usd: 0.2,
                },
                C,
                N,
                N,
            ),
            (
                RunEvent::UsageLimitWait {
                    resets_at: "t".into(),
                },
                C,
                N,
                N,
            ),
            (
                RunEvent::AllDone {
                    phases: 2,
                    cost_usd: 1.0,
                },
                C,
                N,
                N,
            ),
            (needs_human, N, N, N),
            (RunEvent::Stopped { why: "w".into() }, N, N, N),
        ];
        for (event, quiet, normal, verbose) in cases {
            assert_eq!(delivery(NotifyLevel::Quiet, &event), quiet, "{event:?}");
            assert_eq!(delivery(NotifyLevel::Normal, &event), normal, "{event:?}");
            assert_eq!(delivery(NotifyLevel::Verbose, &event), verbose, "{event:?}");
        }
    }
}
