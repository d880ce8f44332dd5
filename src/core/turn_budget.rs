//! Turn budgets (pure): the `--max-turns` of each command, from the plan's size and the
//! prior phases' figures, with the earlier version's defaults and caps (behaviour.md §6
//! "Budgets"), and the larger budget of the one retry after a session used its budget up.

/// What a budget is computed from.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetInput {
    Prime,
    Plan,
    Research,
    Preflight,
    /// `tasks` counted in the plan file (0: unreadable or none); `prior_stats`: phase > 1
    /// and the previous phase has an executions entry.
    Execute {
        tasks: u32,
        prior_stats: bool,
    },
    /// `files`: tracked source files; `scenarios`: passed+failed+skipped of the phase's
    /// first validations entry, if any.
    Validate {
        files: u32,
        scenarios: Option<u32>,
    },
    /// `staged`: lines of `git status --porcelain`.
    Commit {
        staged: u32,
    },
    Other,
}

/// A budget and why.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnBudget {
    pub turns: u32,
    pub reasoning: String,
}

/// Turns per task once a prior phase has run (fixed in the reference).
pub const TURNS_PER_TASK: u32 = 6;
/// The execute cap.
pub const EXECUTE_CAP: u32 = 400;
/// The largest budget of the retry after a session used its budget up.
pub const RETRY_CAP: u32 = 800;

/// The budget for one command.
pub fn turn_budget(input: &BudgetInput) -> TurnBudget {
    let fixed = |turns: u32, what: &str| TurnBudget {
        turns,
        reasoning: format!("{what}: fixed"),
    };
    match *input {
        BudgetInput::Prime => fixed(30, "prime"),
        BudgetInput::Plan => fixed(100, "plan-feature"),
        BudgetInput::Research => fixed(100, "research-stack"),
        BudgetInput::Preflight => fixed(50, "preflight"),
        BudgetInput::Other => fixed(100, "other"),
        BudgetInput::Commit { staged } => TurnBudget {
            turns: (10 + (3 * staged).div_ceil(10)).min(60),
            reasoning: format!("commit: {staged} changed files"),
        },
        BudgetInput::Execute { tasks, prior_stats } => {
            let turns = if tasks > 0 && prior_stats {
                (TURNS_PER_TASK * tasks * 12).div_ceil(10)
            } else if tasks > 0 {
                50 + TURNS_PER_TASK * tasks
            } else {
                200
            };
            TurnBudget {
                turns: turns.min(EXECUTE_CAP),
                reasoning: match (tasks, prior_stats) {
                    (0, _) => "execute: no tasks counted in the plan".to_string(),
                    (t, true) => {
                        format!("execute: {t} tasks × {TURNS_PER_TASK} × 1.2 (prior phase)")
                    }
                    (t, false) => format!("execute: 50 + {t} tasks × {TURNS_PER_TASK}"),
                },
            }
        }
        BudgetInput::Validate { files, scenarios } => {
            let s = scenarios.unwrap_or(5);
            TurnBudget {
                turns: (30 + files.div_ceil(2) + 5 * s).min(200),
                reasoning: format!("validate: {files} source files, {s} scenarios"),
            }
        }
    }
}

/// The budget of the one retry after a session ended at `turns`: twice as many (at least
/// ten more), up to [`RETRY_CAP`].
pub fn retry_budget(turns: u32) -> u32 {
    turns
        .saturating_mul(2)
        .max(turns + 10)
        .min(RETRY_CAP.max(turns))
}

/// Tasks in a plan, as the reference counted them: lines starting with a checkbox
/// (`- [ ]`, `- [x]`, `* [ ]`), `### Task ` or `## <digits>. `; without any, the `## `
/// headers (at least 1).
pub fn count_plan_tasks(plan: &str) -> u32 {
    let mut tasks = 0;
    let mut headers = 0;
    for line in plan.lines() {
        let l = line.trim_start();
        let numbered = l
            .strip_prefix("## ")
            .and_then(|r| r.split_once(". "))
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if ["- [ ]", "- [x]", "- [X]", "* [ ]", "* [x]", "### Task "]
            .iter()
            .any(|p| l.starts_with(p))
            || numbered
        {
            tasks += 1;
        } else if l.starts_with("## ") {
            headers += 1;
        }
    }
    if tasks > 0 {
        tasks
    } else {
        headers.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_reference() {
        use BudgetInput::*;
        let table = [
            (Prime, 30),
            (Plan, 100),
            (Research, 100),
            (Preflight, 50),
            (Other, 100),
            (Commit { staged: 0 }, 10),
            (Commit { staged: 7 }, 13),
            (Commit { staged: 500 }, 60),
            (
                Execute {
                    tasks: 0,
                    prior_stats: true,
                },
                200,
            ),
            (
                Execute {
                    tasks: 5,
                    prior_stats: false,
                },
                80,
            ),
            (
                Execute {
                    tasks: 5,
                    prior_stats: true,
                },
                36,
            ),
            (
                Execute {
                    tasks: 100,
                    prior_stats: false,
                },
                400,
            ),
            (
                Validate {
                    files: 0,
                    scenarios: None,
                },
                55,
            ),
            (
                Validate {
                    files: 11,
                    scenarios: Some(2),
                },
                46,
            ),
            (
                Validate {
                    files: 1000,
                    scenarios: Some(50),
                },
                200,
            ),
        ];
        for (input, want) in table {
            assert_eq!(turn_budget(&input).turns, want, "{input:?}");
        }
        assert_eq!(retry_budget(30), 60);
        assert_eq!(retry_budget(3), 13);
        assert_eq!(retry_budget(400), 800);
        assert_eq!(retry_budget(900), 900);
    }

    #[test]
    fn plan_tasks_are_counted_like_the_reference() {
        assert_eq!(
            count_plan_tasks("# P\n- [ ] a\n- [x] b\n* [ ] c\n### Task 4\n"),
            4
        );
        assert_eq!(count_plan_tasks("## 1. one\n## 2. two\n## Notes\n"), 2);
        assert_eq!(count_plan_tasks("## A\n## B\n## C\n"), 3);
        assert_eq!(count_plan_tasks("nothing"), 1);
    }
}
