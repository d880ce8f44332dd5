//! What a run tells the human: one typed event per thing worth saying, and the terminal
//! line for each. The Telegram text for the same event is built by the notifier from
//! `telegram_text`; both read the same event so the two channels never disagree.

use std::time::Duration;

/// One thing the run has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A step (one pairing of agent sessions) starts.
    StepStarted {
        phase: Option<u32>,
        step: String,
    },
    /// A step ended; `error` is `None` on success.
    StepEnded {
        phase: Option<u32>,
        step: String,
        elapsed: Duration,
        cost_usd: f64,
        error: Option<String>,
    },
    PhaseStarted {
        phase: u32,
        name: String,
    },
    PhaseComplete {
        phase: u32,
        cost_usd: f64,
    },
    /// A failure that will be retried.
    Retrying {
        phase: u32,
        command: String,
        category: String,
        attempt: u32,
        details: String,
    },
    /// A human is needed: escalation, retries exhausted (with or without rollback), a
    /// missing PRD or slash command, the cost cap.
    NeedsHuman {
        phase: Option<u32>,
        category: String,
        details: String,
        action: String,
    },
    /// The agent's usage limit was reached: the run waits until `resets_at` and then goes on.
    UsageLimitWait {
        resets_at: String,
    },
    Heartbeat {
        phase: Option<u32>,
    },
    /// The run resumed from an earlier run's state (crash, pending failure, checkpoint).
    Restarted {
        phase: Option<u32>,
        reason: String,
    },
    Paused {
        by: String,
    },
    Resumed {
        by: String,
    },
    /// Every phase is done.
    AllDone {
        phases: usize,
        cost_usd: f64,
    },
    /// The run stopped before being done; `why` says why.
    Stopped {
        why: String,
    },
    /// Free text (already safe for the terminal; escaped for Telegram by the notifier).
    Info(String),
}

fn phase_label(phase: Option<u32>) -> String {
    match phase {
        Some(n) => format!("Phase {n}"),
        None => "Pre-loop".to_string(),
    }
}

/// Formats seconds as `1m 05s` / `42s`.
pub fn format_elapsed(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m {:02}s", secs / 60, secs % 60)
    } else {
        format!("{}.{}s", secs, d.subsec_millis() / 100)
    }
}

/// The one terminal line for an event.
pub fn terminal_line(event: &RunEvent) -> String {
    match event {
        RunEvent::StepStarted { phase, step } => {
            format!("▶ {} · {step} · started", phase_label(*phase))
        }
        RunEvent::StepEnded {
            phase,
            step,
            elapsed,
            cost_usd,
            error,
        } => match error {
            None => format!(
                "✔ {} · {step} · done in {} · ${cost_usd:.2}",
                phase_label(*phase),
                format_elapsed(*elapsed)
            ),
            Some(e) => format!(
                "✘ {} · {step} · failed after {} · ${cost_usd:.2} · {e}",
                phase_label(*phase),
                format_elapsed(*elapsed)
            ),
        },
        RunEvent::PhaseStarted { phase, name } => format!("🚀 Phase {phase} starting: {name}"),
        RunEvent::PhaseComplete { phase, cost_usd } => {
            format!("✅ Phase {phase} complete (cost: ${cost_usd:.2})")
        }
        RunEvent::Retrying {
            phase,
            command,
            category,
            attempt,
            details,
        } => format!("↻ Phase {phase} · {command} failed ({category}), retry {attempt}: {details}"),
        RunEvent::NeedsHuman {
            phase,
            category,
            details,
            action,
        } => format!(
            "🔴 {} needs a human ({category}): {details} — {action}",
            phase_label(*phase)
        ),
        RunEvent::UsageLimitWait { resets_at } => {
            format!("⏳ Usage limit reached — waiting until {resets_at}, then continuing")
        }
        RunEvent::Heartbeat { phase } => match phase {
            Some(n) => format!("💓 Still running — Phase {n} in progress"),
            None => "💓 Still running — Phase ? in progress".to_string(),
        },
        RunEvent::Restarted { phase, reason } => format!(
            "🔄 Resuming from {}: {reason}",
            phase.map_or("the manifest".to_string(), |n| format!("Phase {n}"))
        ),
        RunEvent::Paused { by } => format!("⏸ Paused ({by}) — holding before the next step"),
        RunEvent::Resumed { by } => format!("▶️ Resumed ({by})"),
        RunEvent::AllDone { phases, cost_usd } => {
            format!("✅ All phases complete ({phases} phases, total cost ${cost_usd:.2})")
        }
        RunEvent::Stopped { why } => format!("🛑 Stopped: {why}"),
        RunEvent::Info(text) => text.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_carry_phase_step_elapsed_and_cost() {
        let line = terminal_line(&RunEvent::StepEnded {
            phase: Some(2),
            step: "execute".into(),
            elapsed: Duration::from_secs(75),
            cost_usd: 1.234,
            error: None,
        });
        assert_eq!(line, "✔ Phase 2 · execute · done in 1m 15s · $1.23");
        let failed = terminal_line(&RunEvent::StepEnded {
            phase: None,
            step: "preflight".into(),
            elapsed: Duration::from_millis(2500),
            cost_usd: 0.0,
            error: Some("boom".into()),
        });
        assert_eq!(
            failed,
            "✘ Pre-loop · preflight · failed after 2.5s · $0.00 · boom"
        );
    }

    #[test]
    fn heartbeat_matches_the_reference_text() {
        assert_eq!(
            terminal_line(&RunEvent::Heartbeat { phase: Some(3) }),
            "💓 Still running — Phase 3 in progress"
        );
        assert_eq!(
            terminal_line(&RunEvent::Heartbeat { phase: None }),
            "💓 Still running — Phase ? in progress"
        );
    }

    #[test]
    fn every_event_has_a_non_empty_line() {
        let events = vec![
            RunEvent::StepStarted {
                phase: Some(1),
                step: "plan".into(),
            },
            RunEvent::PhaseStarted {
                phase: 1,
                name: "Core".into(),
            },
            RunEvent::PhaseComplete {
                phase: 1,
                cost_usd: 0.5,
            },
            RunEvent::Retrying {
                phase: 1,
                command: "execute".into(),
                category: "test_failure".into(),
                attempt: 1,
                details: "x".into(),
            },
            RunEvent::NeedsHuman {
                phase: Some(1),
                category: "integration_auth".into(),
                details: "not logged in".into(),
                action: "log in".into(),
            },
            RunEvent::UsageLimitWait {
                resets_at: "soon".into(),
            },
            RunEvent::Restarted {
                phase: Some(2),
                reason: "crash".into(),
            },
            RunEvent::Paused { by: "b".into() },
            RunEvent::Resumed { by: "b".into() },
            RunEvent::AllDone {
                phases: 3,
                cost_usd: 1.0,
            },
            RunEvent::Stopped { why: "x".into() },
            RunEvent::Info("hello".into()),
        ];
        for e in events {
            assert!(!terminal_line(&e).trim().is_empty(), "{e:?}");
        }
    }
}
