//! `piv cost`: the cost ledger of `$PIV_HOME` summed per project for today, the last 7
//! days and the month (and `--since` a day), as a table or one JSON object.

use std::io::Write;
use std::path::Path;

use crate::cli::{exit, CostArgs};
use crate::core::ledger;

pub use crate::io::ledger_file::{cost_report, today_utc};

/// Runs `piv cost`; returns the exit code.
pub fn run(args: &CostArgs) -> i32 {
    let home = match crate::io::home::resolve_home(args.home.as_deref().map(Path::as_os_str)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("piv: error: {e}");
            return exit::USAGE;
        }
    };
    let since = args.since.as_deref().map(str::trim);
    if let Some(s) = since {
        if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() {
            eprintln!("piv: error: --since {s:?} is not a day: use YYYY-MM-DD");
            return exit::USAGE;
        }
    }
    let report = match cost_report(&home, &today_utc(), since, args.project.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("piv: error: {e}");
            return exit::STOPPED;
        }
    };
    let out = if args.json {
        let mut s = serde_json::to_string(&report).expect("report serialises");
        s.push('\n');
        s
    } else {
        ledger::render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return exit::STOPPED;
    }
    exit::OK
}
