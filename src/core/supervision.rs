//! Supervision as data: the restart budget (OTP style, at most N restarts in T seconds),
//! why a run ends, and the exit code each ending maps to.
//!
//! The Supervisor actor records crashes here and carries out the answer; nothing in this
//! file knows about actix or the clock (callers pass `now`).

use std::collections::VecDeque;
use std::time::Duration;

/// At most `max_restarts` restarts of crashed children within `window`; the next crash
/// inside the window ends the run.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    max_restarts: usize,
    window: Duration,
    /// Crash times (as offsets from an arbitrary origin chosen by the caller) still inside
    /// the window, oldest first.
    recent: VecDeque<Duration>,
}

/// What to do about a crashed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    Restart,
    /// The budget is spent: shut down cleanly and say why.
    GiveUp,
}

impl RestartBudget {
    pub fn new(max_restarts: usize, window: Duration) -> Self {
        RestartBudget {
            max_restarts,
            window,
            recent: VecDeque::new(),
        }
    }

    pub fn max_restarts(&self) -> usize {
        self.max_restarts
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records a crash at `now` and decides.
    pub fn record_crash(&mut self, now: Duration) -> RestartDecision {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_sub(oldest) > self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_restarts {
            return RestartDecision::GiveUp;
        }
        self.recent.push_back(now);
        RestartDecision::Restart
    }
}

/// Why `piv run` ended. One shutdown sequence serves all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Every phase is done (or `--phase N` is done).
    Done,
    /// SIGINT, SIGTERM or a `shutdown` signal: the user asked.
    Requested { by: String },
    /// The loop needs a human (escalation, retries exhausted, cost cap, missing PRD...).
    NeedsHuman { why: String },
    /// Something inside piv failed and could not be recovered.
    Fatal { why: String },
    /// Children kept crashing: more than the restart budget allows.
    RestartIntensity { restarts: usize, window: Duration },
}

impl StopReason {
    /// Exit codes, as documented in `main.rs`: 0 done or stopped on request; 1 stopped for
    /// a human or a runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StopReason::Done | StopReason::Requested { .. } => 0,
            StopReason::NeedsHuman { .. }
            | StopReason::Fatal { .. }
            | StopReason::RestartIntensity { .. } => 1,
        }
    }

    /// One line for the terminal and the chat, to follow "Stopped" (as in
    /// "🛑 Stopped: on request (SIGTERM)").
    pub fn describe(&self) -> String {
        match self {
            StopReason::Done => "all phases complete".to_string(),
            StopReason::Requested { by } => format!("on request ({by})"),
            StopReason::NeedsHuman { why } => format!("for a human: {why}"),
            StopReason::Fatal { why } => format!("after a failure: {why}"),
            StopReason::RestartIntensity { restarts, window } => format!(
                "a component crashed more than {restarts} times in {}s",
                window.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn restarts_within_budget_then_gives_up() {
        let mut b = RestartBudget::new(3, s(60));
        assert_eq!(b.record_crash(s(0)), RestartDecision::Restart);
        assert_eq!(b.record_crash(s(1)), RestartDecision::Restart);
        assert_eq!(b.record_crash(s(2)), RestartDecision::Restart);
        assert_eq!(b.record_crash(s(3)), RestartDecision::GiveUp);
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let mut b = RestartBudget::new(2, s(10));
        assert_eq!(b.record_crash(s(0)), RestartDecision::Restart);
        assert_eq!(b.record_crash(s(5)), RestartDecision::Restart);
        // The crash at 0 is more than 10 s old by now.
        assert_eq!(b.record_crash(s(11)), RestartDecision::Restart);
        assert_eq!(b.record_crash(s(12)), RestartDecision::GiveUp);
    }

    #[test]
    fn zero_budget_never_restarts() {
        let mut b = RestartBudget::new(0, s(10));
        assert_eq!(b.record_crash(s(0)), RestartDecision::GiveUp);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(StopReason::Done.exit_code(), 0);
        assert_eq!(
            StopReason::Requested {
                by: "SIGINT".into()
            }
            .exit_code(),
            0
        );
        assert_eq!(StopReason::NeedsHuman { why: "x".into() }.exit_code(), 1);
        assert_eq!(StopReason::Fatal { why: "x".into() }.exit_code(), 1);
        let r = StopReason::RestartIntensity {
            restarts: 5,
            window: s(60),
        };
        assert_eq!(r.exit_code(), 1);
        assert!(r.describe().contains("5 times in 60s"));
    }
}
