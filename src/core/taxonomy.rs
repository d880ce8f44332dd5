//! The error taxonomy as data and the classification of an agent failure text into a category.
//!
//! The table, the classifier's pattern groups and their order are the earlier version's
//! (behaviour.md §4), so a failure recorded by either version means the same thing and
//! gets the same number of retries. [`decide_recovery`] is the one place that turns a
//! category and a retry count into what the runner does next.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// One of the 11 failure categories; serialised with the snake_case names the manifest uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    SyntaxError,
    TestFailure,
    ScenarioMismatch,
    IntegrationAuth,
    IntegrationRateLimit,
    StaleArtifact,
    PrdGap,
    PartialExecution,
    LineBudgetExceeded,
    OrchestratorCrash,
    ManifestCorruption,
}

/// How much a pending failure of a category holds up the loop (blocking > degraded > advisory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Advisory = 1,
    Degraded = 2,
    Blocking = 3,
}

/// A row of the taxonomy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaxonomyRow {
    pub max_retries: u32,
    pub needs_human: bool,
    pub recovery: &'static str,
    pub severity: Severity,
}

const fn row(
    max_retries: u32,
    needs_human: bool,
    recovery: &'static str,
    severity: Severity,
) -> TaxonomyRow {
    TaxonomyRow {
        max_retries,
        needs_human,
        recovery,
        severity,
    }
}

static SYNTAX_ERROR: TaxonomyRow = row(2, false, "auto-fix and retry", Severity::Blocking);
static TEST_FAILURE: TaxonomyRow = row(2, false, "auto-fix and retry", Severity::Blocking);
static SCENARIO_MISMATCH: TaxonomyRow = row(
    1,
    false,
    "re-read PRD, adjust implementation",
    Severity::Blocking,
);
static INTEGRATION_AUTH: TaxonomyRow = row(0, true, "escalate immediately", Severity::Blocking);
static INTEGRATION_RATE_LIMIT: TaxonomyRow =
    row(3, false, "exponential backoff", Severity::Degraded);
static STALE_ARTIFACT: TaxonomyRow = row(1, false, "research-stack --refresh", Severity::Advisory);
static PRD_GAP: TaxonomyRow = row(
    0,
    true,
    "escalate \u{2014} PRD needs human revision",
    Severity::Blocking,
);
static PARTIAL_EXECUTION: TaxonomyRow = row(1, false, "rollback to checkpoint", Severity::Blocking);
static LINE_BUDGET_EXCEEDED: TaxonomyRow = row(1, false, "auto-trim and retry", Severity::Advisory);
static ORCHESTRATOR_CRASH: TaxonomyRow =
    row(0, false, "resume from manifest state", Severity::Blocking);
static MANIFEST_CORRUPTION: TaxonomyRow =
    row(0, false, "rebuild manifest via /prime", Severity::Blocking);

impl Category {
    /// What the human should do when a failure of this category stops the run.
    pub fn human_hint(self) -> &'static str {
        match self {
            Category::IntegrationAuth => {
                "check the credentials (CLAUDE_CODE_OAUTH_TOKEN for Claude Code, the project's service keys), then run piv again"
            }
            Category::PrdGap => "revise the PRD where it is silent or wrong, then run piv again",
            Category::IntegrationRateLimit => {
                "wait for the service's limit to reset (or raise it), then run piv again"
            }
            Category::ManifestCorruption => {
                "repair .agents/manifest.yaml (or rebuild it with /prime), then run piv again"
            }
            Category::StaleArtifact => "refresh the profiles with /research-stack --refresh, then run piv again",
            _ => "look at the failure in .agents/manifest.yaml and the log, fix it, then run piv again",
        }
    }

    /// Every category, in the table's order.
    pub const ALL: [Category; 11] = [
        Category::SyntaxError,
        Category::TestFailure,
        Category::ScenarioMismatch,
        Category::IntegrationAuth,
        Category::IntegrationRateLimit,
        Category::StaleArtifact,
        Category::PrdGap,
        Category::PartialExecution,
        Category::LineBudgetExceeded,
        Category::OrchestratorCrash,
        Category::ManifestCorruption,
    ];

    /// The taxonomy row of this category.
    pub fn spec(self) -> &'static TaxonomyRow {
        match self {
            Category::SyntaxError => &SYNTAX_ERROR,
            Category::TestFailure => &TEST_FAILURE,
            Category::ScenarioMismatch => &SCENARIO_MISMATCH,
            Category::IntegrationAuth => &INTEGRATION_AUTH,
            Category::IntegrationRateLimit => &INTEGRATION_RATE_LIMIT,
            Category::StaleArtifact => &STALE_ARTIFACT,
            Category::PrdGap => &PRD_GAP,
            Category::PartialExecution => &PARTIAL_EXECUTION,
            Category::LineBudgetExceeded => &LINE_BUDGET_EXCEEDED,
            Category::OrchestratorCrash => &ORCHESTRATOR_CRASH,
            Category::ManifestCorruption => &MANIFEST_CORRUPTION,
        }
    }

    /// The snake_case name written to the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::SyntaxError => "syntax_error",
            Category::TestFailure => "test_failure",
            Category::ScenarioMismatch => "scenario_mismatch",
            Category::IntegrationAuth => "integration_auth",
            Category::IntegrationRateLimit => "integration_rate_limit",
            Category::StaleArtifact => "stale_artifact",
            Category::PrdGap => "prd_gap",
            Category::PartialExecution => "partial_execution",
            Category::LineBudgetExceeded => "line_budget_exceeded",
            Category::OrchestratorCrash => "orchestrator_crash",
            Category::ManifestCorruption => "manifest_corruption",
        }
    }

    /// Parses a manifest category name; `None` for anything outside the 11.
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The retry limit of a category as written in a manifest; an unknown category gets no
/// retries (as the earlier version's inline table did).
pub fn max_retries_for(category: &str) -> u32 {
    Category::parse(category).map_or(0, |c| c.spec().max_retries)
}

/// The severity of a category as written in a manifest; unknown counts as blocking.
pub fn severity_for(category: &str) -> Severity {
    Category::parse(category).map_or(Severity::Blocking, |c| c.spec().severity)
}

/// The classifier's groups in evaluation order; within a group any pattern hit is enough,
/// so each group is one alternation. `\b` is ASCII-only to match JavaScript's.
static GROUPS: LazyLock<Vec<(Category, Regex)>> = LazyLock::new(|| {
    let groups: [(Category, &str); 10] = [
        (
            Category::OrchestratorCrash,
            r"crash|orchestrator.*restart|stale.*pid",
        ),
        (
            Category::ManifestCorruption,
            r"manifest.*corrupt|yaml.*parse|manifest.*invalid",
        ),
        (
            Category::IntegrationAuth,
            r"credential|auth|(?-u:\b)401(?-u:\b)|unauthorized|forbidden|(?-u:\b)403(?-u:\b)",
        ),
        (
            Category::IntegrationRateLimit,
            r"(?-u:\b)429(?-u:\b)|rate.?limit|too.?many.?request|throttl",
        ),
        (
            Category::SyntaxError,
            r"compil|syntax|type.?error|(?-u:\b)tsc(?-u:\b)|(?-u:\b)lint|parse.?error",
        ),
        (
            Category::TestFailure,
            r"test.?fail|(?-u:\b)assert|expect.*received|vitest|jest",
        ),
        (
            Category::ScenarioMismatch,
            r"scenario|mismatch|prd.*does.?n",
        ),
        (Category::StaleArtifact, r"stale|outdated|expired.?profile"),
        (
            Category::LineBudgetExceeded,
            r"line.?budget|too.?long|exceeded.*lines",
        ),
        (
            Category::PrdGap,
            r"prd.?gap|missing.?requirement|undefined.?in.?prd",
        ),
    ];
    groups
        .into_iter()
        .map(|(category, pattern)| {
            let regex = Regex::new(&format!("(?i){pattern}"))
                .expect("classifier patterns are valid regexes");
            (category, regex)
        })
        .collect()
});

/// Classifies an agent failure text: first matching group wins, `partial_execution` when
/// nothing matches (including empty text).
pub fn classify(text: &str) -> Category {
    GROUPS
        .iter()
        .find(|(_, regex)| regex.is_match(text))
        .map_or(Category::PartialExecution, |(category, _)| *category)
}

/// What the runner does with a failure just recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Retries remain: fix and run the step again.
    Retry,
    /// The category needs a human (credentials, PRD): stop and escalate at once.
    Escalate,
    /// Retries exhausted and a checkpoint exists: roll back to it, then stop for a human.
    RollbackThenStop { checkpoint: String },
    /// Retries exhausted and nothing to roll back to: stop for a human.
    StopExhausted,
}

/// The recovery for a failure of `category` whose `retry_count` (0 for the first failure
/// of a step) is known, in the earlier version's order: needs-human first, then exhausted
/// (rollback when a checkpoint exists), else retry.
pub fn decide_recovery(category: Category, retry_count: u32, checkpoint: Option<&str>) -> Recovery {
    let spec = category.spec();
    if spec.needs_human {
        Recovery::Escalate
    } else if retry_count >= spec.max_retries {
        match checkpoint {
            Some(tag) if !tag.is_empty() => Recovery::RollbackThenStop {
                checkpoint: tag.to_string(),
            },
            _ => Recovery::StopExhausted,
        }
    } else {
        Recovery::Retry
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_category_tells_the_human_what_to_do() {
        for c in Category::ALL {
            assert!(c.human_hint().contains("run piv again"), "{c:?}");
        }
        assert!(Category::IntegrationAuth
            .human_hint()
            .contains("CLAUDE_CODE_OAUTH_TOKEN"));
    }

    use super::*;

    #[test]
    fn every_taxonomy_row_matches_the_reference_table() {
        use Severity::*;
        let table: [(&str, u32, bool, &str, Severity); 11] = [
            ("syntax_error", 2, false, "auto-fix and retry", Blocking),
            ("test_failure", 2, false, "auto-fix and retry", Blocking),
            (
                "scenario_mismatch",
                1,
                false,
                "re-read PRD, adjust implementation",
                Blocking,
            ),
            (
                "integration_auth",
                0,
                true,
                "escalate immediately",
                Blocking,
            ),
            (
                "integration_rate_limit",
                3,
                false,
                "exponential backoff",
                Degraded,
            ),
            (
                "stale_artifact",
                1,
                false,
                "research-stack --refresh",
                Advisory,
            ),
            (
                "prd_gap",
                0,
                true,
                "escalate \u{2014} PRD needs human revision",
                Blocking,
            ),
            (
                "partial_execution",
                1,
                false,
                "rollback to checkpoint",
                Blocking,
            ),
            (
                "line_budget_exceeded",
                1,
                false,
                "auto-trim and retry",
                Advisory,
            ),
            (
                "orchestrator_crash",
                0,
                false,
                "resume from manifest state",
                Blocking,
            ),
            (
                "manifest_corruption",
                0,
                false,
                "rebuild manifest via /prime",
                Blocking,
            ),
        ];
        for (i, (name, max, human, recovery, severity)) in table.into_iter().enumerate() {
            let cat = Category::parse(name).unwrap_or_else(|| panic!("{name} parses"));
            assert_eq!(cat, Category::ALL[i]);
            assert_eq!(cat.as_str(), name);
            assert_eq!(
                serde_json::to_value(cat).unwrap(),
                serde_json::json!(name),
                "serde name of {name}"
            );
            let spec = cat.spec();
            assert_eq!(spec.max_retries, max, "{name}");
            assert_eq!(spec.needs_human, human, "{name}");
            assert_eq!(spec.recovery, recovery, "{name}");
            assert_eq!(spec.severity, severity, "{name}");
            assert_eq!(max_retries_for(name), max);
            assert_eq!(severity_for(name), severity);
        }
    }

    #[test]
    fn unknown_categories_get_no_retries_and_block() {
        assert_eq!(Category::parse("bogus"), None);
        assert_eq!(max_retries_for("bogus"), 0);
        assert_eq!(max_retries_for(""), 0);
        assert_eq!(severity_for("bogus"), Severity::Blocking);
        assert!(Severity::Blocking > Severity::Degraded && Severity::Degraded > Severity::Advisory);
    }

    #[test]
    fn classifier_sample_texts() {
        use Category::*;
        let cases: &[(&str, Category)] = &[
            ("Process crashed unexpectedly", OrchestratorCrash),
            ("orchestrator had to restart", OrchestratorCrash),
            ("found stale PID file", OrchestratorCrash),
            ("manifest is corrupt", ManifestCorruption),
            ("YAML parse error at line 3", ManifestCorruption),
            ("manifest invalid: phases", ManifestCorruption),
            ("missing credentials for X", IntegrationAuth),
            ("OAuth token refused", IntegrationAuth),
            ("commit author unknown", IntegrationAuth),
            ("HTTP 401 from API", IntegrationAuth),
            ("Unauthorized", IntegrationAuth),
            ("403 Forbidden", IntegrationAuth),
            ("status 4031 only", PartialExecution),
            ("HTTP 429", IntegrationRateLimit),
            ("rate limit hit", IntegrationRateLimit),
            ("Rate-limited by server", IntegrationRateLimit),
            ("Too Many Requests", IntegrationRateLimit),
            ("request throttled", IntegrationRateLimit),
            ("Compilation failed", SyntaxError),
            ("SyntaxError: unexpected token", SyntaxError),
            ("TypeError: x is undefined", SyntaxError),
            ("tsc: Type error in src/index.ts", SyntaxError),
            ("eslint found problems", PartialExecution),
            ("lint errors: 3", SyntaxError),
            ("JSON parse error", SyntaxError),
            ("3 tests failed", PartialExecution),
            ("test failed: foo", TestFailure),
            ("Test-failure in suite", TestFailure),
            ("assertion failed", TestFailure),
            ("expected 1 received 2", TestFailure),
            ("vitest: 3 tests failed", TestFailure),
            ("jest exited 1", TestFailure),
            ("scenario 4 did not pass", ScenarioMismatch),
            ("output mismatch", ScenarioMismatch),
            ("the PRD doesn't cover it", ScenarioMismatch),
            ("Stale profile for sdk", StaleArtifact),
            ("docs outdated", StaleArtifact),
            ("expired profile", StaleArtifact),
            ("line budget exceeded", LineBudgetExceeded),
            ("file too long", LineBudgetExceeded),
            ("exceeded 500 lines", LineBudgetExceeded),
            ("PRD gap found", PrdGap),
            ("missing requirement for export", PrdGap),
            ("undefined in PRD", PrdGap),
            ("something odd happened", PartialExecution),
            ("", PartialExecution),
        ];
        for (text, want) in cases {
            assert_eq!(classify(text), *want, "classify({text:?})");
        }
    }

    #[test]
    fn classifier_group_order_decides_overlaps() {
        // Documented consequences of the group order (behaviour.md §4).
        assert_eq!(classify("YAML parse error"), Category::ManifestCorruption);
        assert_eq!(classify("stale PID"), Category::OrchestratorCrash);
        assert_eq!(
            classify("crash during test failure"),
            Category::OrchestratorCrash
        );
        assert_eq!(classify("auth failed in vitest"), Category::IntegrationAuth);
        assert_eq!(classify("429 and syntax"), Category::IntegrationRateLimit);
    }

    #[test]
    fn recovery_decision_follows_the_reference_order() {
        use Category::*;
        assert_eq!(
            decide_recovery(IntegrationAuth, 0, Some("t")),
            Recovery::Escalate
        );
        assert_eq!(decide_recovery(PrdGap, 0, None), Recovery::Escalate);
        assert_eq!(decide_recovery(SyntaxError, 0, Some("t")), Recovery::Retry);
        assert_eq!(decide_recovery(SyntaxError, 1, None), Recovery::Retry);
        assert_eq!(
            decide_recovery(SyntaxError, 2, Some("piv-checkpoint/phase-1")),
            Recovery::RollbackThenStop {
                checkpoint: "piv-checkpoint/phase-1".into()
            }
        );
        assert_eq!(
            decide_recovery(SyntaxError, 2, None),
            Recovery::StopExhausted
        );
        assert_eq!(
            decide_recovery(SyntaxError, 2, Some("")),
            Recovery::StopExhausted
        );
        assert_eq!(
            decide_recovery(OrchestratorCrash, 0, None),
            Recovery::StopExhausted
        );
        assert_eq!(
            decide_recovery(IntegrationRateLimit, 2, None),
            Recovery::Retry
        );
        assert_eq!(
            decide_recovery(IntegrationRateLimit, 3, None),
            Recovery::StopExhausted
        );
        assert_eq!(decide_recovery(PartialExecution, 0, None), Recovery::Retry);
    }
}
