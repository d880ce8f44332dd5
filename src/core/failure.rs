//! What a failed step means: which session errors are the work's fault and which are not
//! (an outage, a usage limit, a cancel, a setup problem), the failure record and recovery
//! for the ones that are, the validation verdict, the refactor limit and the cost cap.
//!
//! The runner loads the manifest, calls [`plan_failure`], then carries out the plan
//! (record, retry, roll back, stop); nothing here does I/O.

use crate::core::stream::SessionError;
use crate::core::taxonomy::{self, Category, Recovery};

/// At most this many refactor pairings after failed validations of one validate step.
pub const MAX_REFACTORS: u32 = 2;

/// How a failure record is resolved (`resolution` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Pending,
    /// Superseded by a newer failure record of the same step (the retry count moved on).
    Retried,
    /// The step it belongs to made the progress it was retried for.
    AutoFixed,
    EscalatedBlocking,
    RolledBack,
    /// A crash record: the next run resumed from the manifest.
    Resumed,
}

impl Resolution {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Pending => "pending",
            Resolution::Retried => "retried",
            Resolution::AutoFixed => "auto_fixed",
            Resolution::EscalatedBlocking => "escalated_blocking",
            Resolution::RolledBack => "rolled_back",
            Resolution::Resumed => "resumed",
        }
    }
}

/// A session error, sorted by whose fault it is.
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorClass {
    /// The work failed: record it and apply the taxonomy.
    Work,
    /// The API could not be reached or was overloaded: wait and run the same step again,
    /// uncounted.
    Outage,
    /// The subscription's usage limit: wait for the reset and run the same step again.
    UsageLimit { resets_at: Option<i64> },
    /// piv itself stopped the session (shutdown).
    Cancelled,
    /// The project or the machine is set up so that no session can work (a missing slash
    /// command, a refused permission flag): stop for a human at once.
    Setup,
}

/// Sorts a session error: everything but [`ErrorClass::Work`] is not the work's fault.
pub fn classify_error(e: &SessionError) -> ErrorClass {
    match e {
        SessionError::ApiUnavailable { .. } => ErrorClass::Outage,
        SessionError::UsageLimit { resets_at } => ErrorClass::UsageLimit {
            resets_at: *resets_at,
        },
        SessionError::Cancelled => ErrorClass::Cancelled,
        SessionError::UnknownCommand { .. }
        | SessionError::RootSkipPermissions
        | SessionError::MissingVerbose => ErrorClass::Setup,
        _ => ErrorClass::Work,
    }
}

/// The failure of a step, as the runner knows it.
#[derive(Debug, Clone)]
pub struct FailureInput<'a> {
    pub phase: u32,
    pub command: &'a str,
    pub error: &'a SessionError,
    /// The tail of the CLI's stderr (trimmed), possibly empty.
    pub stderr_tail: &'a str,
    /// 0 for the first failure of this step, else one more than the latest pending one.
    pub retry_count: u32,
    pub checkpoint: Option<&'a str>,
}

/// What to do about a failed step, decided.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePlan {
    pub category: Category,
    /// The record's `details`.
    pub details: String,
    pub recovery: Recovery,
    pub retry_count: u32,
    /// The record's resolution (a rollback's outcome may still turn `RolledBack` into
    /// `EscalatedBlocking` when the rollback itself fails).
    pub resolution: Resolution,
    /// The checkpoint the record names.
    pub checkpoint: Option<String>,
    /// For the human: what happened (escalations only).
    pub what: String,
    /// For the human: what piv did (escalations only).
    pub action: String,
    /// Why the run stops (`None` for a retry).
    pub why: Option<String>,
}

/// Decides category, details, recovery and the texts of a failed step.
pub fn plan_failure(input: &FailureInput<'_>) -> FailurePlan {
    let e = input.error;
    let stderr = input.stderr_tail.trim();
    let mut text = e.error_text();
    // A CLI that died without a result says why only on stderr: classify and record with
    // it. A timeout or stall is piv's own verdict, so its stderr is only recorded.
    if !stderr.is_empty() && matches!(e, SessionError::NoResult | SessionError::NonZeroExit { .. })
    {
        text = format!("{text} stderr: {stderr}");
    }
    let category = match e {
        SessionError::NotLoggedIn { .. } => Category::IntegrationAuth,
        SessionError::TurnBudgetExhausted { .. } => Category::PartialExecution,
        SessionError::ResultError { subtype, .. } if subtype == NO_PROGRESS => {
            Category::PartialExecution
        }
        _ => taxonomy::classify(&text),
    };
    let details = match e {
        SessionError::NotLoggedIn { .. } => format!(
            "{text} — Claude Code is not logged in: set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) in the environment or .env, or run `claude` and /login"
        ),
        SessionError::Timeout { .. } | SessionError::Stalled { .. } if !stderr.is_empty() => {
            format!("{text} stderr: {stderr}")
        }
        _ => text,
    };
    let (phase, retry_count) = (input.phase, input.retry_count);
    let recovery = taxonomy::decide_recovery(category, retry_count, input.checkpoint);
    let cat = category.as_str();
    let (resolution, checkpoint, what, action, why) = match &recovery {
        Recovery::Retry => (
            Resolution::Pending,
            input.checkpoint.map(str::to_string),
            details.clone(),
            String::new(),
            None,
        ),
        Recovery::Escalate => (
            Resolution::EscalatedBlocking,
            input.checkpoint.map(str::to_string),
            details.clone(),
            format!("Escalated immediately — {}", category.human_hint()),
            Some(format!("{cat} in phase {phase}: {details}")),
        ),
        Recovery::RollbackThenStop { checkpoint: tag } => (
            Resolution::RolledBack,
            Some(tag.clone()),
            format!("{details} — retries exhausted"),
            format!("Rolled back to {tag} and paused, awaiting human resolution"),
            Some(format!(
                "retries exhausted for {cat} in phase {phase}; rolled back to {tag}"
            )),
        ),
        Recovery::StopExhausted => (
            Resolution::EscalatedBlocking,
            input.checkpoint.map(str::to_string),
            format!("{details} — retries exhausted"),
            format!(
                "Paused execution, awaiting human resolution — {}",
                category.human_hint()
            ),
            Some(format!(
                "retries exhausted for {cat} in phase {phase}: {details}"
            )),
        ),
    };
    FailurePlan {
        category,
        details,
        recovery,
        retry_count,
        resolution,
        checkpoint,
        what,
        action,
        why,
    }
}

/// The subtype of the error piv records when a step's session succeeded but the manifest
/// does not show the step's progress (e.g. `/plan-feature` wrote no `plans` entry).
pub const NO_PROGRESS: &str = "no_progress";

/// The error for a step that ended in success without its progress in the manifest.
pub fn no_progress_error(what_is_missing: &str) -> SessionError {
    SessionError::ResultError {
        subtype: NO_PROGRESS.to_string(),
        messages: vec![what_is_missing.to_string()],
    }
}

/// The verdict of a validate session: its error, or — when the session itself succeeded —
/// the `validation_status` hook (`fail` and `partial` are failed validations).
pub fn validation_verdict(
    error: Option<&SessionError>,
    hook: Option<&str>,
    text_tail: &str,
) -> Option<SessionError> {
    match (error, hook) {
        (Some(e), _) => Some(e.clone()),
        (None, Some(status @ ("fail" | "partial"))) => Some(SessionError::ResultError {
            subtype: format!("validation_{status}"),
            messages: vec![format!("validation {status}: {text_tail}")],
        }),
        _ => None,
    }
}

/// Whether a failed validation gets another refactor pairing (rather than being recorded
/// as a failure): work's fault, fixable without a human, and refactors left.
pub fn refactor_again(error: &SessionError, refactors_done: u32) -> bool {
    classify_error(error) == ErrorClass::Work
        && refactors_done < MAX_REFACTORS
        && !taxonomy::classify(&error.error_text()).spec().needs_human
}

/// Whether the cost cap stops the next session: spent since the last resume (`spent -
/// baseline`) at or above the cap.
pub fn cost_cap_reached(spent: f64, baseline: f64, cap: Option<f64>) -> bool {
    cap.is_some_and(|cap| spent - baseline >= cap)
}

/// The one-line reason the session budget of a phase stops the run.
pub fn session_budget_why(
    phase: u32,
    max: u32,
    last_failure: Option<(&str, &str)>,
) -> Option<String> {
    let kept_failing = match last_failure {
        Some((command, details)) => format!("the step that kept failing: /{command} — {details}"),
        None => {
            "no step failed outright; the loop kept starting sessions without progress".to_string()
        }
    };
    (max > 0).then(|| {
        format!(
            "phase {phase} reached its limit of {max} agent sessions this run (PIV_MAX_SESSIONS_PER_PHASE); {kept_failing}"
        )
    })
}

/// Whether starting `needed` more sessions would take a phase past its session budget.
pub fn session_budget_exhausted(used: u32, needed: u32, max: u32) -> bool {
    used.saturating_add(needed) > max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        e: &'a SessionError,
        stderr: &'a str,
        retry: u32,
        cp: Option<&'a str>,
    ) -> FailureInput<'a> {
        FailureInput {
            phase: 2,
            command: "execute",
            error: e,
            stderr_tail: stderr,
            retry_count: retry,
            checkpoint: cp,
        }
    }

    #[test]
    fn errors_are_sorted_by_whose_fault_they_are() {
        let table = [
            (
                SessionError::ApiUnavailable { detail: "x".into() },
                ErrorClass::Outage,
            ),
            (
                SessionError::UsageLimit { resets_at: Some(5) },
                ErrorClass::UsageLimit { resets_at: Some(5) },
            ),
            (SessionError::Cancelled, ErrorClass::Cancelled),
            (
                SessionError::UnknownCommand { name: "x".into() },
                ErrorClass::Setup,
            ),
            (SessionError::RootSkipPermissions, ErrorClass::Setup),
            (SessionError::MissingVerbose, ErrorClass::Setup),
            (SessionError::NoResult, ErrorClass::Work),
            (SessionError::Timeout { after_secs: 1 }, ErrorClass::Work),
            (
                SessionError::NotLoggedIn {
                    message: "x".into(),
                },
                ErrorClass::Work,
            ),
            (
                SessionError::ResultError {
                    subtype: "error_during_execution".into(),
                    messages: vec![],
                },
                ErrorClass::Work,
            ),
        ];
        for (e, want) in table {
            assert_eq!(classify_error(&e), want, "{e:?}");
        }
    }

    #[test]
    fn failure_plans_follow_the_taxonomy() {
        let syntax = SessionError::ResultError {
            subtype: "error_during_execution".into(),
            messages: vec!["SyntaxError: unexpected token".into()],
        };
        let auth = SessionError::NotLoggedIn {
            message: "Not logged in".into(),
        };
        let died = SessionError::NonZeroExit {
            code: Some(1),
            signal: None,
        };
        let no_progress = no_progress_error("no plan");
        // (error, stderr, retry, checkpoint) -> (category, recovery kind, resolution, stops)
        #[allow(clippy::type_complexity)]
        let table: Vec<(
            &SessionError,
            &str,
            u32,
            Option<&str>,
            &str,
            &str,
            Resolution,
            bool,
        )> = vec![
            (
                &syntax,
                "",
                0,
                Some("cp"),
                "syntax_error",
                "retry",
                Resolution::Pending,
                false,
            ),
            (
                &syntax,
                "",
                2,
                Some("cp"),
                "syntax_error",
                "rollback",
                Resolution::RolledBack,
                true,
            ),
            (
                &syntax,
                "",
                2,
                None,
                "syntax_error",
                "exhausted",
                Resolution::EscalatedBlocking,
                true,
            ),
            (
                &auth,
                "",
                0,
                Some("cp"),
                "integration_auth",
                "escalate",
                Resolution::EscalatedBlocking,
                true,
            ),
            (
                &died,
                "npm ERR! Test failed",
                0,
                None,
                "test_failure",
                "retry",
                Resolution::Pending,
                false,
            ),
            (
                &no_progress,
                "",
                0,
                None,
                "partial_execution",
                "retry",
                Resolution::Pending,
                false,
            ),
        ];
        for (e, stderr, retry, cp, cat, kind, resolution, stops) in table {
            let plan = plan_failure(&input(e, stderr, retry, cp));
            assert_eq!(plan.category.as_str(), cat, "{e:?}");
            let got_kind = match plan.recovery {
                Recovery::Retry => "retry",
                Recovery::Escalate => "escalate",
                Recovery::RollbackThenStop { .. } => "rollback",
                Recovery::StopExhausted => "exhausted",
            };
            assert_eq!(got_kind, kind, "{e:?} retry {retry}");
            assert_eq!(plan.resolution, resolution, "{e:?}");
            assert_eq!(plan.why.is_some(), stops, "{e:?}");
            assert_eq!(plan.retry_count, retry);
        }
    }

    #[test]
    fn details_carry_stderr_and_the_login_fix() {
        let died = SessionError::NoResult;
        let plan = plan_failure(&input(&died, "  boom  ", 0, None));
        assert!(plan.details.ends_with("stderr: boom"), "{}", plan.details);
        let stalled = SessionError::Stalled { after_secs: 9 };
        let plan = plan_failure(&input(&stalled, "last words", 0, None));
        assert!(plan.details.contains("stderr: last words"));
        let auth = SessionError::NotLoggedIn {
            message: "x".into(),
        };
        let plan = plan_failure(&input(&auth, "", 0, None));
        assert!(plan.details.contains("CLAUDE_CODE_OAUTH_TOKEN"));
        let syntax = SessionError::ResultError {
            subtype: "e".into(),
            messages: vec!["SyntaxError".into()],
        };
        let plan = plan_failure(&input(&syntax, "", 5, Some("piv-checkpoint/x")));
        assert_eq!(plan.checkpoint.as_deref(), Some("piv-checkpoint/x"));
        assert!(plan.action.contains("Rolled back to piv-checkpoint/x"));
        assert!(plan.what.ends_with("retries exhausted"));
    }

    #[test]
    fn validation_verdicts() {
        let err = SessionError::NoResult;
        let table = [
            (Some(&err), None, Some("no_result")),
            (Some(&err), Some("pass"), Some("no_result")),
            (None, Some("fail"), Some("result_error")),
            (None, Some("partial"), Some("result_error")),
            (None, Some("pass"), None),
            (None, None, None),
        ];
        for (e, hook, want) in table {
            let got = validation_verdict(e, hook, "tail");
            assert_eq!(got.as_ref().map(SessionError::kind), want, "{e:?} {hook:?}");
        }
        let v = validation_verdict(None, Some("fail"), "3 tests failed").unwrap();
        assert!(v.error_text().contains("3 tests failed"));
    }

    #[test]
    fn refactors_are_bounded_and_skip_what_needs_a_human() {
        let tests = SessionError::ResultError {
            subtype: "validation_fail".into(),
            messages: vec!["test failed".into()],
        };
        let outage = SessionError::ApiUnavailable { detail: "x".into() };
        let auth = SessionError::ResultError {
            subtype: "e".into(),
            messages: vec!["401 authentication failed".into()],
        };
        assert!(refactor_again(&tests, 0));
        assert!(refactor_again(&tests, 1));
        assert!(!refactor_again(&tests, 2));
        assert!(!refactor_again(&outage, 0));
        assert!(!refactor_again(&auth, 0));
    }

    #[test]
    fn cost_cap_and_session_budget() {
        let table = [
            (0.5, 0.0, Some(1.0), false),
            (1.0, 0.0, Some(1.0), true),
            (1.5, 1.0, Some(1.0), false),
            (2.0, 1.0, Some(1.0), true),
            (100.0, 0.0, None, false),
        ];
        for (spent, base, cap, want) in table {
            assert_eq!(
                cost_cap_reached(spent, base, cap),
                want,
                "{spent} {base} {cap:?}"
            );
        }
        assert!(!session_budget_exhausted(18, 2, 20));
        assert!(session_budget_exhausted(19, 2, 20));
        assert!(session_budget_exhausted(20, 1, 20));
        let why = session_budget_why(3, 20, Some(("plan-feature", "no plans entry"))).unwrap();
        assert!(why.contains("phase 3") && why.contains("/plan-feature — no plans entry"));
        assert!(why.contains("PIV_MAX_SESSIONS_PER_PHASE"));
    }
}
