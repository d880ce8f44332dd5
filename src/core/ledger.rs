//! The cost ledger's entries and sums (pure): one entry per agent session of any instance
//! of the home, summed per project for today, the last 7 days and the month (and since a
//! given day), plus the home's total for a day (the daily cap).
//!
//! Days are UTC calendar days (`YYYY-MM-DD`); callers pass today. The entries live in
//! `$PIV_HOME/ledger/YYYY-MM.jsonl` (`io::ledger_file`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One session's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// RFC 3339, when the session ended.
    pub at: String,
    /// `YYYY-MM-DD` (UTC) of `at`.
    pub day: String,
    /// The instance's prefix.
    pub project: String,
    #[serde(default)]
    pub project_dir: String,
    #[serde(default)]
    pub model: Option<String>,
    /// The session's own cost (0 when unknown; see `cost_known`).
    pub cost_usd: f64,
    #[serde(default = "yes")]
    pub cost_known: bool,
    #[serde(default)]
    pub step: String,
    #[serde(default)]
    pub phase: Option<u32>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub num_turns: u32,
}

fn yes() -> bool {
    true
}

/// A project's sums.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCost {
    pub project: String,
    pub today: f64,
    pub last7_days: f64,
    pub month: f64,
    /// Since `--since` (None without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    /// Sessions counted in the month (or since `--since`, when later... whichever is wider).
    pub sessions: u32,
    /// Sessions whose cost was unknown (stopped before their result).
    pub unknown_cost_sessions: u32,
    /// The month's cost per model.
    pub by_model: BTreeMap<String, f64>,
}

/// The report of `piv cost`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CostReport {
    pub today: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    pub projects: Vec<ProjectCost>,
    pub total: ProjectCost,
}

/// The day `n` days before `day` (`YYYY-MM-DD`); None if `day` is not a date.
pub fn days_before(day: &str, n: i64) -> Option<String> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    Some(
        (d - chrono::Duration::days(n))
            .format("%Y-%m-%d")
            .to_string(),
    )
}

/// The months (`YYYY-MM`) whose files hold the days from `from` to `to`.
pub fn months_between(from: &str, to: &str) -> Vec<String> {
    let (Some(a), Some(b)) = (
        chrono::NaiveDate::parse_from_str(from, "%Y-%m-%d").ok(),
        chrono::NaiveDate::parse_from_str(to, "%Y-%m-%d").ok(),
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut d = a.min(b);
    let end = a.max(b);
    while d <= end {
        let m = d.format("%Y-%m").to_string();
        if out.last() != Some(&m) {
            out.push(m);
        }
        d += chrono::Duration::days(1);
    }
    out
}

/// Sums `entries` per project (sorted by name), for `today` (`YYYY-MM-DD`), the 7 days
/// ending today, today's month and, with `since`, the days from it on. `project` keeps
/// the projects whose prefix starts with it (case-insensitive).
pub fn report(
    entries: &[LedgerEntry],
    today: &str,
    since: Option<&str>,
    project: Option<&str>,
) -> CostReport {
    let week_start = days_before(today, 6).unwrap_or_default();
    let month = today.get(..7).unwrap_or("");
    let wanted =
        |p: &str| project.is_none_or(|want| p.to_lowercase().starts_with(&want.to_lowercase()));
    let mut by: BTreeMap<String, ProjectCost> = BTreeMap::new();
    let mut total = ProjectCost {
        project: "total".into(),
        since: since.map(|_| 0.0),
        ..ProjectCost::default()
    };
    for e in entries.iter().filter(|e| wanted(&e.project)) {
        let in_month = e.day.get(..7) == Some(month) && e.day.as_str() <= today;
        let in_since = since.is_some_and(|s| e.day.as_str() >= s && e.day.as_str() <= today);
        if !(in_month || in_since) && e.day < week_start {
            continue;
        }
        let p = by.entry(e.project.clone()).or_insert_with(|| ProjectCost {
            project: e.project.clone(),
            since: since.map(|_| 0.0),
            ..ProjectCost::default()
        });
        for sums in [&mut *p, &mut total] {
            if e.day == today {
                sums.today += e.cost_usd;
            }
            if e.day.as_str() >= week_start.as_str() && e.day.as_str() <= today {
                sums.last7_days += e.cost_usd;
            }
            if in_month {
                sums.month += e.cost_usd;
                let model = e.model.clone().unwrap_or_else(|| "unknown".into());
                *sums.by_model.entry(model).or_insert(0.0) += e.cost_usd;
            }
            if in_since {
                *sums.since.get_or_insert(0.0) += e.cost_usd;
            }
            if in_month || in_since {
                sums.sessions += 1;
                sums.unknown_cost_sessions += u32::from(!e.cost_known);
            }
        }
    }
    CostReport {
        today: today.to_string(),
        since: since.map(str::to_string),
        projects: by.into_values().collect(),
        total,
    }
}

/// What the whole home spent on `day`.
pub fn spent_on(entries: &[LedgerEntry], day: &str) -> f64 {
    entries
        .iter()
        .filter(|e| e.day == day)
        .map(|e| e.cost_usd)
        .sum()
}

/// The report as a table for a terminal.
pub fn render(report: &CostReport) -> String {
    let since = report.since.as_deref();
    let mut out = format!(
        "{:<24} {:>10} {:>10} {:>10}{}\n",
        "project",
        "today",
        "7 days",
        "month",
        since.map_or(String::new(), |s| format!(" {:>12}", format!("since {s}")))
    );
    let row = |p: &ProjectCost| {
        format!(
            "{:<24} {:>10} {:>10} {:>10}{}\n",
            p.project,
            format!("${:.2}", p.today),
            format!("${:.2}", p.last7_days),
            format!("${:.2}", p.month),
            p.since
                .map_or(String::new(), |s| format!(" {:>12}", format!("${s:.2}")))
        )
    };
    for p in &report.projects {
        out.push_str(&row(p));
    }
    out.push_str(&row(&report.total));
    if report.total.unknown_cost_sessions > 0 {
        out.push_str(&format!(
            "({} session(s) stopped before reporting a cost are counted as $0)\n",
            report.total.unknown_cost_sessions
        ));
    }
    out.push_str(&format!("(days are UTC; today is {})\n", report.today));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(day: &str, project: &str, cost: f64) -> LedgerEntry {
        LedgerEntry {
            at: format!("{day}T12:00:00Z"),
            day: day.into(),
            project: project.into(),
            project_dir: String::new(),
            model: Some("m".into()),
            cost_usd: cost,
            cost_known: true,
            step: "execute".into(),
            phase: Some(1),
            session_id: None,
            num_turns: 3,
        }
    }

    #[test]
    fn sums_per_project_for_today_the_week_and_the_month() {
        let entries = [
            e("2026-03-10", "alpha", 1.0),
            e("2026-03-09", "alpha", 2.0),
            e("2026-03-04", "alpha", 4.0),
            e("2026-03-03", "alpha", 8.0),
            e("2026-02-28", "alpha", 16.0),
            e("2026-03-10", "beta", 0.5),
            e("2026-03-11", "beta", 100.0), // tomorrow: never counted
        ];
        let r = report(&entries, "2026-03-10", None, None);
        let a = &r.projects[0];
        assert_eq!(
            (
                a.project.as_str(),
                a.today,
                a.last7_days,
                a.month,
                a.sessions
            ),
            ("alpha", 1.0, 7.0, 15.0, 4)
        );
        let b = &r.projects[1];
        assert_eq!((b.today, b.last7_days, b.month), (0.5, 0.5, 0.5));
        assert_eq!((r.total.today, r.total.month), (1.5, 15.5));
        // Early in a month the week reaches into the last one.
        let r = report(&entries, "2026-03-01", None, Some("AL"));
        assert_eq!(r.projects.len(), 1);
        assert_eq!(
            (
                r.projects[0].today,
                r.projects[0].last7_days,
                r.projects[0].month
            ),
            (0.0, 16.0, 0.0)
        );
        let r = report(&entries, "2026-03-10", Some("2026-02-01"), None);
        assert_eq!(r.projects[0].since, Some(31.0));
        assert_eq!(r.total.since, Some(31.5));
        assert_eq!(spent_on(&entries, "2026-03-10"), 1.5);
        let table = render(&r);
        assert!(
            table.contains("since 2026-02-01") && table.contains("$31.50"),
            "{table}"
        );
    }

    #[test]
    fn months_and_days() {
        assert_eq!(
            months_between("2026-01-30", "2026-03-02"),
            ["2026-01", "2026-02", "2026-03"]
        );
        assert_eq!(days_before("2026-03-01", 1).as_deref(), Some("2026-02-28"));
        assert!(days_before("nope", 1).is_none());
    }
}
