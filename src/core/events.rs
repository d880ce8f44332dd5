//! What a run tells the human: one typed event per thing worth saying, and the terminal
//! line for each, and its Telegram HTML (built from `telegram_text`'s formats); both read
//! the same event so the two channels never disagree.

use std::time::Duration;

use crate::core::telegram_text::{
    escape_html, format_escalation, format_heartbeat, format_phase_complete, format_phase_start,
    format_restart,
};

/// One thing the run has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// A step (one pairing of agent sessions) starts; `max_turns` is its command's turn
    /// budget (None: not shown).
    StepStarted {
        phase: Option<u32>,
        step: String,
        max_turns: Option<u32>,
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
    /// A usage limit recorded for every instance of the home: the one message naming the
    /// window, the reset and the projects in their resume order (`core::usage`).
    UsageLimitShared {
        text: String,
        /// The wait's escalation id (`core::usage::limit_escalation`): every waiting
        /// project's Pause button on the message carries it.
        escalation: u64,
        /// The projects offered a Pause, in resume order.
        waiting: Vec<String>,
    },
    /// A session ended because the API could not be reached or was overloaded: the first
    /// of a continuous outage (later ones are silent). The step runs again after the wait.
    OutageStarted {
        phase: Option<u32>,
        step: String,
        detail: String,
        retry_in_secs: u64,
    },
    /// The API answered again after an outage of `lasted_secs`.
    OutageEnded {
        lasted_secs: u64,
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
    /// The end of a run of the loop, whatever ended it.
    Summary {
        phases_done: usize,
        phases_total: usize,
        cost_usd: f64,
        failures: usize,
    },
    /// Free text (already safe for the terminal; escaped for Telegram by the notifier).
    Info(String),
    /// One assistant message of the running step, with its `tool_use` blocks: feeds the
    /// project's live status card (`core::progress`), never a message of its own.
    Activity {
        tools: Vec<crate::core::progress::ToolUse>,
    },
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
        RunEvent::StepStarted {
            phase,
            step,
            max_turns,
        } => match max_turns {
            Some(t) => format!("▶ {} · {step} · started · max {t} turns", phase_label(*phase)),
            None => format!("▶ {} · {step} · started", phase_label(*phase)),
        },
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
        RunEvent::UsageLimitShared { text, .. } => format!("⏳ {text}"),
        RunEvent::OutageStarted {
            phase,
            step,
            detail,
            retry_in_secs,
        } => format!(
            "📡 {} · {step}: the Claude API is unreachable or overloaded ({detail}) — not counted as a failure; retrying in {retry_in_secs}s, backing off while it lasts",
            phase_label(*phase)
        ),
        RunEvent::OutageEnded { lasted_secs } => {
            format!("📡 The Claude API is back after {lasted_secs}s — carrying on")
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
        RunEvent::Summary {
            phases_done,
            phases_total,
            cost_usd,
            failures,
        } => format!(
            "Σ {phases_done}/{phases_total} phases done · ${cost_usd:.2} this run · {failures} failure(s) recorded this run"
        ),
        RunEvent::Info(text) => text.clone(),
        RunEvent::Activity { tools } => tools
            .iter()
            .map(crate::core::progress::describe)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The Telegram HTML for an event, or `None` for events that would only add noise to the
/// chat (a step starting: its end is reported). Every piece of outside text is escaped.
pub fn telegram_html(event: &RunEvent) -> Option<String> {
    let html = match event {
        RunEvent::StepStarted { .. } => return None,
        RunEvent::StepEnded {
            phase,
            step,
            elapsed,
            cost_usd,
            error,
        } => match error {
            None => format!(
                "✔ <b>{} · {}</b> done in {} · ${cost_usd:.2}",
                phase_label(*phase),
                escape_html(step),
                format_elapsed(*elapsed)
            ),
            Some(e) => format!(
                "✘ <b>{} · {}</b> failed after {} · ${cost_usd:.2}\n{}",
                phase_label(*phase),
                escape_html(step),
                format_elapsed(*elapsed),
                escape_html(e)
            ),
        },
        RunEvent::PhaseStarted { phase, name } => format_phase_start(*phase, name),
        RunEvent::PhaseComplete { phase, cost_usd } => format_phase_complete(*phase, *cost_usd),
        RunEvent::Retrying {
            phase,
            command,
            category,
            attempt,
            details,
        } => format!(
            "↻ <b>Phase {phase} · {}</b> failed ({}), retry {attempt}\n{}",
            escape_html(command),
            escape_html(category),
            escape_html(details)
        ),
        RunEvent::NeedsHuman {
            phase,
            category,
            details,
            action,
        } => {
            let text = format_escalation(phase.unwrap_or(0), category, details, action);
            match phase {
                Some(_) => text,
                // The format names a phase; before the phases there is none.
                None => text.replacen("Escalation — Phase 0", "Escalation — Pre-loop", 1),
            }
        }
        RunEvent::UsageLimitWait { resets_at } => format!(
            "⏳ <b>Usage limit reached</b> — waiting until {}, then continuing",
            escape_html(resets_at)
        ),
        RunEvent::UsageLimitShared { text, .. } => {
            format!("⏳ <b>Usage limit</b>: {}", escape_html(text))
        }
        RunEvent::OutageStarted {
            phase,
            step,
            detail,
            retry_in_secs,
        } => format!(
            "📡 <b>{} · {}</b>: the Claude API is unreachable or overloaded — not counted as a failure; retrying in {retry_in_secs}s, backing off while it lasts\n{}",
            phase_label(*phase),
            escape_html(step),
            escape_html(detail)
        ),
        RunEvent::OutageEnded { lasted_secs } => {
            format!("📡 <b>The Claude API is back</b> after {lasted_secs}s — carrying on")
        }
        RunEvent::Heartbeat { phase } => format_heartbeat(*phase),
        RunEvent::Restarted { phase, reason } => match phase {
            Some(n) => format_restart(*n, reason),
            None => format!(
                "🔄 <b>Orchestrator Restarted</b>\nResuming from: the manifest\nReason: {}",
                escape_html(reason)
            ),
        },
        RunEvent::Paused { by } => format!(
            "⏸ <b>Paused</b> ({}) — holding before the next step",
            escape_html(by)
        ),
        RunEvent::Resumed { by } => format!("▶️ <b>Resumed</b> ({})", escape_html(by)),
        RunEvent::AllDone { phases, cost_usd } => {
            format!("✅ <b>All phases complete</b> ({phases} phases, total cost ${cost_usd:.2})")
        }
        RunEvent::Stopped { why } => format!("🛑 <b>Stopped</b>: {}", escape_html(why)),
        // The summary is for the terminal; the chat has had AllDone or Stopped.
        RunEvent::Summary { .. } => return None,
        RunEvent::Info(text) => escape_html(text),
        // Shown on the live status card only.
        RunEvent::Activity { .. } => return None,
    };
    Some(html)
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

    /// One of every event, for the tests that must cover them all.
    fn sample_events() -> Vec<RunEvent> {
        vec![
            RunEvent::StepStarted {
                phase: Some(1),
                step: "plan".into(),
                max_turns: Some(100),
            },
            RunEvent::UsageLimitShared {
                text: "Usage limit reached (5-hour window) <all>".into(),
                escalation: 1,
                waiting: vec!["a".into()],
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
            RunEvent::OutageStarted {
                phase: Some(1),
                step: "execute".into(),
                detail: "Unable to connect".into(),
                retry_in_secs: 30,
            },
            RunEvent::OutageEnded { lasted_secs: 95 },
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
            RunEvent::Heartbeat { phase: Some(2) },
            RunEvent::Summary {
                phases_done: 1,
                phases_total: 2,
                cost_usd: 0.25,
                failures: 1,
            },
        ]
    }

    #[test]
    fn every_event_has_a_non_empty_line() {
        let events = sample_events();
        for e in events {
            assert!(!terminal_line(&e).trim().is_empty(), "{e:?}");
        }
    }

    #[test]
    fn telegram_html_escapes_outside_text_and_keeps_the_chat_quiet_on_step_start() {
        assert_eq!(
            telegram_html(&RunEvent::StepStarted {
                phase: Some(1),
                step: "plan".into(),
                max_turns: None,
            }),
            None
        );
        let cases: Vec<(RunEvent, &str)> = vec![
            (
                RunEvent::StepEnded {
                    phase: Some(2),
                    step: "execute".into(),
                    elapsed: Duration::from_secs(75),
                    cost_usd: 1.234,
                    error: Some("a <b> & c".into()),
                },
                "✘ <b>Phase 2 · execute</b> failed after 1m 15s · $1.23\na &lt;b&gt; &amp; c",
            ),
            (
                RunEvent::StepEnded {
                    phase: None,
                    step: "research".into(),
                    elapsed: Duration::from_millis(2500),
                    cost_usd: 0.0,
                    error: None,
                },
                "✔ <b>Pre-loop · research</b> done in 2.5s · $0.00",
            ),
            (
                RunEvent::PhaseStarted {
                    phase: 1,
                    name: "Core <api>".into(),
                },
                "🚀 <b>Phase 1 Starting</b>: Core &lt;api&gt;",
            ),
            (
                RunEvent::Heartbeat { phase: Some(3) },
                "💓 Still running — Phase 3 in progress",
            ),
            (RunEvent::Info("x < y".into()), "x &lt; y"),
            (
                RunEvent::Stopped {
                    why: "<why>".into(),
                },
                "🛑 <b>Stopped</b>: &lt;why&gt;",
            ),
        ];
        for (event, want) in cases {
            assert_eq!(telegram_html(&event).as_deref(), Some(want), "{event:?}");
        }
        let escalation = telegram_html(&RunEvent::NeedsHuman {
            phase: None,
            category: "prd_gap".into(),
            details: "no <PRD>".into(),
            action: "stopped".into(),
        })
        .unwrap();
        assert!(
            escalation.starts_with("🔴 <b>Escalation — Pre-loop</b>"),
            "{escalation}"
        );
        assert!(escalation.contains("no &lt;PRD&gt;"));
    }

    #[test]
    fn every_event_but_step_start_and_summary_has_telegram_html() {
        for e in sample_events() {
            let html = telegram_html(&e);
            match e {
                RunEvent::StepStarted { .. } | RunEvent::Summary { .. } => {
                    assert!(html.is_none(), "{e:?}")
                }
                _ => {
                    let html = html.unwrap_or_else(|| panic!("no HTML for {e:?}"));
                    assert!(!plain_text(&html).trim().is_empty(), "{e:?}");
                }
            }
        }
    }

    /// The visible text of a Telegram HTML message: tags dropped, the entities
    /// `telegram_text` produces turned back into their characters.
    fn plain_text(html: &str) -> String {
        let mut out = String::with_capacity(html.len());
        let mut rest = html;
        while let Some(lt) = rest.find('<') {
            out.push_str(&rest[..lt]);
            match rest[lt..].find('>') {
                Some(gt) => rest = &rest[lt + gt + 1..],
                None => {
                    // A lone `<` is text, not a tag.
                    out.push('<');
                    rest = &rest[lt + 1..];
                }
            }
        }
        out.push_str(rest);
        out.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
    }

    #[test]
    fn plain_text_drops_tags_and_unescapes() {
        let cases = [
            (
                "<b>Phase 1</b>: a &lt;b&gt; &amp;amp;",
                "Phase 1: a <b> &amp;",
            ),
            ("x < y", "x < y"),
            ("<i>&quot;q&quot;</i>", "\"q\""),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(plain_text(input), want, "{input}");
        }
    }
}
