//! The cost ledger of one `$PIV_HOME`: `ledger/YYYY-MM.jsonl`, one JSON line per agent
//! session of any instance, appended (never rewritten), one file per month, mode 0600.
//!
//! Each append is one `write` of whole lines to a file opened with `O_APPEND`, so lines of
//! concurrent instances never interleave. A line that does not parse (a torn write after a
//! power cut) is skipped when reading, and counted.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::core::ledger::LedgerEntry;

/// Failures of the ledger; each names the file.
#[derive(Debug, thiserror::Error)]
#[error("cost ledger: cannot {step} {path}: {source}")]
pub struct LedgerError {
    path: PathBuf,
    step: &'static str,
    #[source]
    source: std::io::Error,
}

/// `$PIV_HOME/ledger`.
pub fn ledger_dir(home: &Path) -> PathBuf {
    home.join("ledger")
}

/// The file of a month (`YYYY-MM`).
pub fn month_file(home: &Path, month: &str) -> PathBuf {
    ledger_dir(home).join(format!("{month}.jsonl"))
}

/// Appends `entries` (each to its month's file).
pub fn append(home: &Path, entries: &[LedgerEntry]) -> Result<(), LedgerError> {
    let dir = ledger_dir(home);
    let err = |path: &Path, step| {
        let path = path.to_path_buf();
        move |source| LedgerError { path, step, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(err(&dir, "create"))?;
    let mut by_month: std::collections::BTreeMap<&str, Vec<u8>> = Default::default();
    for e in entries {
        let month = e.day.get(..7).unwrap_or("unknown");
        let buf = by_month.entry(month).or_default();
        serde_json::to_writer(&mut *buf, e).expect("ledger entry serialises");
        buf.push(b'\n');
    }
    for (month, bytes) in by_month {
        let path = month_file(home, month);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(err(&path, "open"))?;
        file.write_all(&bytes).map_err(err(&path, "append to"))?;
    }
    Ok(())
}

/// The entries of `months` (missing files are empty) and how many lines were skipped.
pub fn read_months(
    home: &Path,
    months: &[String],
) -> Result<(Vec<LedgerEntry>, usize), LedgerError> {
    let mut out = Vec::new();
    let mut skipped = 0;
    for month in months {
        let path = month_file(home, month);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(LedgerError {
                    path,
                    step: "read",
                    source,
                })
            }
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line) {
                Ok(e) => out.push(e),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((out, skipped))
}

/// Today (UTC), as the ledger's days.
pub fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Reads the ledger files the report needs and sums them.
pub fn cost_report(
    home: &Path,
    today: &str,
    since: Option<&str>,
    project: Option<&str>,
) -> Result<crate::core::ledger::CostReport, LedgerError> {
    let week = crate::core::ledger::days_before(today, 6).unwrap_or_else(|| today.to_string());
    let from = match since {
        Some(s) if s < week.as_str() => s.to_string(),
        _ => week,
    };
    let (entries, skipped) = read_months(home, &crate::core::ledger::months_between(&from, today))?;
    if skipped > 0 {
        tracing::warn!("cost ledger: skipped {skipped} unreadable line(s)");
    }
    Ok(crate::core::ledger::report(&entries, today, since, project))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn appends_per_month_privately_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let entry = |day: &str, cost| LedgerEntry {
            at: format!("{day}T00:00:00Z"),
            day: day.into(),
            project: "p".into(),
            project_dir: "/p".into(),
            model: None,
            cost_usd: cost,
            cost_known: true,
            step: "plan".into(),
            phase: None,
            session_id: None,
            num_turns: 1,
        };
        append(
            dir.path(),
            &[entry("2026-01-31", 1.0), entry("2026-02-01", 2.0)],
        )
        .unwrap();
        append(dir.path(), &[entry("2026-02-02", 4.0)]).unwrap();
        let feb = month_file(dir.path(), "2026-02");
        let mode = std::fs::metadata(&feb).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut f = OpenOptions::new().append(true).open(&feb).unwrap();
        f.write_all(b"{\"torn\":").unwrap();
        let (all, skipped) = read_months(
            dir.path(),
            &["2026-01".into(), "2026-02".into(), "2026-03".into()],
        )
        .unwrap();
        assert_eq!(all.iter().map(|e| e.cost_usd).sum::<f64>(), 7.0);
        assert_eq!(skipped, 1);
    }
}
