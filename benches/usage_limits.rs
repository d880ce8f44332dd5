//! A simulation of one subscription shared by 10 projects through one 5-hour window and
//! its reset: the sessions wasted on usage-limit hits and the stampede at the reset, with
//! each instance on its own (piv before issue 15) against the usage-limit coordinator
//! (the real `core::usage` rules deciding every start).
//!
//! Real limits take hours, so time is simulated (seconds). The window holds `CAPACITY`
//! units; a session of d seconds uses d/600 units, charged when it starts; a start that
//! does not fit is rejected by the API (a wasted session: a process started, a `/prime`
//! sent, nothing done). Each project runs sessions back to back (10–30 min, seeded).
//! - on its own: a project learns of the limit only by hitting it (one wasted session
//!   each), waits for `resetsAt`, and starts at the reset — all of them in the same second;
//! - coordinator: the first hit is recorded; every project checks the record before a
//!   session and holds; at the reset they start in priority order, 60 s apart.
//!
//! `cargo bench --bench usage_limits` (`PIV_BENCH_SEED`, default 15). Prints
//! `name value unit` lines.

use std::collections::BTreeMap;

use piv::core::usage::{self, Gate, Local, Member, UsagePolicy, UsageRecord};
use piv::testkit::rng::Rng;

const PROJECTS: usize = 10;
const WINDOW: i64 = 5 * 3600;
/// Units per window: with 10 projects busy the first window runs out after ~100 min.
const CAPACITY: f64 = 100.0;
const HORIZON: i64 = 2 * WINDOW;
const STAGGER: u64 = 60;

#[derive(Default)]
struct Outcome {
    wasted: u32,
    limit_messages: u32,
    starts_first_minute: u32,
    starts_first_10_min: u32,
    units_first_10_min: f64,
    sessions_done: u32,
    /// The longest gap between the first window running out and a project's first
    /// successful session after the reset (idle time of the slowest project).
    last_resume_after_reset: i64,
}

fn simulate(coordinated: bool, seed: u64) -> Outcome {
    let mut rng = Rng::new(seed);
    let mut out = Outcome::default();
    let mut record = UsageRecord::default();
    for p in 0..PROJECTS {
        record.members.insert(
            format!("p{p:02}"),
            Member {
                pid: p as u32 + 1,
                // Priorities 0..9 so the resume order is defined; ties would go by start.
                priority: (PROJECTS - p) as i64,
                started_at: format!("2026-01-01T00:00:{p:02}Z"),
            },
        );
    }
    let policy = UsagePolicy {
        stagger_secs: STAGGER,
        ..UsagePolicy::default()
    };
    // Each project: when it may next try to start a session.
    let mut next: BTreeMap<usize, i64> = (0..PROJECTS)
        .map(|p| (p, rng.range(0, 120) as i64))
        .collect();
    let mut used = 0.0;
    let mut window_start = 0;
    let mut first_after_reset: BTreeMap<usize, i64> = BTreeMap::new();
    while let Some((&p, &t)) = next.iter().min_by_key(|(p, t)| (**t, **p)) {
        if t >= HORIZON {
            break;
        }
        if t >= window_start + WINDOW {
            window_start += WINDOW;
            used = 0.0;
        }
        let me = format!("p{p:02}");
        if coordinated {
            match usage::gate(&record, &me, &policy, &Local::default(), t) {
                Gate::WaitForReset { until, .. } => {
                    next.insert(p, until);
                    continue;
                }
                Gate::Go => {}
                other => unreachable!("{other:?}"),
            }
        }
        let duration = rng.range(600, 1800) as i64;
        let units = duration as f64 / 600.0;
        let reset = window_start + WINDOW;
        if used + units > CAPACITY {
            out.wasted += 1;
            if coordinated {
                if usage::record_limit(&mut record, &me, Some("five_hour".into()), reset, t) {
                    out.limit_messages += 1;
                }
                next.insert(p, t + 1);
            } else {
                out.limit_messages += 1;
                next.insert(p, reset);
            }
            continue;
        }
        used += units;
        out.sessions_done += 1;
        if window_start == WINDOW {
            if t < WINDOW + 60 {
                out.starts_first_minute += 1;
            }
            if t < WINDOW + 600 {
                out.starts_first_10_min += 1;
                out.units_first_10_min += units;
            }
            first_after_reset.entry(p).or_insert(t);
        }
        next.insert(p, t + duration);
    }
    out.last_resume_after_reset = first_after_reset
        .values()
        .map(|t| t - WINDOW)
        .max()
        .unwrap_or(0);
    out
}

fn main() {
    let seed = std::env::var("PIV_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    println!("projects {PROJECTS} projects");
    println!("window {} s", WINDOW);
    println!("stagger {STAGGER} s");
    for (name, coordinated) in [("on_its_own", false), ("coordinator", true)] {
        let o = simulate(coordinated, seed);
        println!("{name}_sessions_wasted_on_limit_hits {} sessions", o.wasted);
        println!("{name}_limit_messages {} messages", o.limit_messages);
        println!(
            "{name}_starts_in_first_minute_after_reset {} sessions",
            o.starts_first_minute
        );
        println!(
            "{name}_starts_in_first_10_min_after_reset {} sessions",
            o.starts_first_10_min
        );
        println!(
            "{name}_new_window_used_in_first_10_min {:.1} %",
            o.units_first_10_min / CAPACITY * 100.0
        );
        println!(
            "{name}_last_project_resumed_after_reset {} s",
            o.last_resume_after_reset
        );
        println!(
            "{name}_sessions_done_in_two_windows {} sessions",
            o.sessions_done
        );
    }
}
