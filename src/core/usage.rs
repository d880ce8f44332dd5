//! The usage record's rules (pure): one subscription shared by every instance of a
//! `$PIV_HOME` — who waits for a usage-limit reset, the order (and spacing) in which they
//! resume, who parks when the window is nearly full, the overage stop (or the wait for the
//! reset a human chose instead) and the daily cap; the escalation id of a limit wait.
//!
//! `$PIV_HOME/usage.json` holds a [`UsageRecord`]; `io::usage_store` reads and writes it
//! under `usage.lock`. Callers pass `now` (unix seconds); nothing here reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::rate_limit::{window_name, RateLimitInfo};

/// The shared record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// The instances of the home, by prefix.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// The latest usage-limit hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitHit>,
    /// The latest report that the window is nearly full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Warning>,
    /// The latest session paid from extra usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage: Option<OverageSeen>,
    /// The day (`YYYY-MM-DD`, UTC) whose daily-cap message was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_announced_day: Option<String>,
    /// Fields piv does not know, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One instance of the home.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub pid: u32,
    /// `PIV_PRIORITY`: higher resumes first.
    #[serde(default)]
    pub priority: i64,
    /// RFC 3339: ties in priority resume in start order.
    #[serde(default)]
    pub started_at: String,
}

/// A usage-limit hit: everyone waits until `resets_at`, then resumes in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitHit {
    #[serde(default)]
    pub window: Option<String>,
    pub resets_at: i64,
    pub recorded_at: i64,
    pub recorded_by: String,
}

/// The window is nearly full (`allowed_warning`, or its utilization).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    #[serde(default)]
    pub window: Option<String>,
    pub status: String,
    #[serde(default)]
    pub utilization: Option<f64>,
    pub resets_at: i64,
    pub recorded_at: i64,
}

/// A session was paid from extra usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverageSeen {
    pub at: i64,
    pub by: String,
    /// The subscription window's reset: from then on the subscription pays again.
    #[serde(default)]
    pub resets_at: Option<i64>,
}

/// One instance's settings for the shared subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePolicy {
    /// `PIV_PRIORITY` (default 0).
    pub priority: i64,
    /// `PIV_RESUME_STAGGER_SECS` (default 60).
    pub stagger_secs: u64,
    /// `PIV_PARK_AT_UTILIZATION` (default 0.9).
    pub park_at_utilization: f64,
    /// `PIV_PARK_BELOW_PRIORITY` (default 0: nobody parks unless priorities are set).
    pub park_below_priority: i64,
    /// `PIV_ALLOW_OVERAGE=1`.
    pub allow_overage: bool,
    /// `PIV_MAX_COST_PER_DAY_USD`, across the home.
    pub max_cost_per_day_usd: Option<f64>,
}

impl Default for UsagePolicy {
    fn default() -> Self {
        UsagePolicy {
            priority: 0,
            stagger_secs: 60,
            park_at_utilization: 0.9,
            park_below_priority: 0,
            allow_overage: false,
            max_cost_per_day_usd: None,
        }
    }
}

/// What an instance does before its next agent session.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Go,
    /// A usage limit: wait until `until` (the reset plus this instance's stagger).
    WaitForReset {
        until: i64,
        resets_at: i64,
        window: Option<String>,
        /// 1-based place in the resume order.
        position: usize,
        of: usize,
    },
    /// The window is nearly full and this instance's priority is low: wait for the reset.
    Parked {
        until: i64,
        utilization: Option<f64>,
    },
    /// The last session was paid from extra usage: pause until a resume (or the reset).
    OverageStop {
        since: i64,
        resets_at: Option<i64>,
    },
    /// The home spent its daily cap: pause until a resume or the next day.
    DailyCap {
        spent: f64,
        cap: f64,
    },
}

/// The prefixes in resume order: priority (higher first), then start order, then name.
pub fn resume_order(members: &BTreeMap<String, Member>) -> Vec<String> {
    let mut all: Vec<(&String, &Member)> = members.iter().collect();
    all.sort_by(|(pa, a), (pb, b)| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.started_at.cmp(&b.started_at))
            .then_with(|| pa.cmp(pb))
    });
    all.into_iter().map(|(p, _)| p.clone()).collect()
}

/// What this instance knows that the record does not.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Local {
    /// When this instance was last resumed by a human (unix seconds): an overage stop or
    /// a daily cap seen before it is lifted for this instance.
    pub resumed_at: Option<i64>,
    /// The day (days since the epoch, UTC) a human let this instance past the daily cap.
    pub cap_lifted_day: Option<i64>,
    /// What the whole home spent today.
    pub spent_today: f64,
    /// The overage stop (its `since`) a human chose to wait out ("Wait for the reset"):
    /// this instance waits for the subscription's reset like a usage-limit wait instead of
    /// going on paid from extra usage.
    pub waits_out_overage: Option<i64>,
    /// Today, in days since the epoch (UTC).
    pub today: i64,
}

/// Decides what `me` does before its next session.
pub fn gate(record: &UsageRecord, me: &str, policy: &UsagePolicy, local: &Local, now: i64) -> Gate {
    if let Some(limit) = &record.limit {
        let order = resume_order(&record.members);
        let index = order.iter().position(|p| p == me).unwrap_or(order.len());
        let of = order.len().max(index + 1);
        let until = limit.resets_at + (index as i64) * policy.stagger_secs as i64;
        if now < until {
            return Gate::WaitForReset {
                until,
                resets_at: limit.resets_at,
                window: limit.window.clone(),
                position: index + 1,
                of,
            };
        }
    }
    if let Some(w) = &record.warning {
        let near = RateLimitInfo {
            status: w.status.clone(),
            utilization: w.utilization,
            ..RateLimitInfo::default()
        }
        .near_limit(policy.park_at_utilization);
        if near && policy.priority < policy.park_below_priority && now < w.resets_at {
            return Gate::Parked {
                until: w.resets_at,
                utilization: w.utilization,
            };
        }
    }
    if let Some(o) = &record.overage {
        let acked = local.resumed_at.is_some_and(|r| r >= o.at);
        let reset = o.resets_at.is_some_and(|r| now >= r);
        if let (Some(resets_at), Some(since)) = (o.resets_at, local.waits_out_overage) {
            if since == o.at && !policy.allow_overage && !acked {
                // Waiting out the overage is a usage-limit wait: the same order and spacing.
                let order = resume_order(&record.members);
                let index = order.iter().position(|p| p == me).unwrap_or(order.len());
                let until = resets_at + (index as i64) * policy.stagger_secs as i64;
                if now < until {
                    return Gate::WaitForReset {
                        until,
                        resets_at,
                        window: None,
                        position: index + 1,
                        of: order.len().max(index + 1),
                    };
                }
                return Gate::Go;
            }
        }
        if !policy.allow_overage && !acked && !reset {
            return Gate::OverageStop {
                since: o.at,
                resets_at: o.resets_at,
            };
        }
    }
    if let Some(cap) = policy.max_cost_per_day_usd {
        if local.spent_today >= cap && local.cap_lifted_day != Some(local.today) {
            return Gate::DailyCap {
                spent: local.spent_today,
                cap,
            };
        }
    }
    Gate::Go
}

/// Records a usage-limit hit by `by`; true when this is news (no limit was in force),
/// so that exactly one instance tells the chat.
pub fn record_limit(
    record: &mut UsageRecord,
    by: &str,
    window: Option<String>,
    resets_at: i64,
    now: i64,
) -> bool {
    let in_force = record.limit.as_ref().is_some_and(|l| l.resets_at > now);
    match &mut record.limit {
        Some(l) if in_force => {
            l.resets_at = l.resets_at.max(resets_at);
        }
        _ => {
            record.limit = Some(LimitHit {
                window,
                resets_at,
                recorded_at: now,
                recorded_by: by.to_string(),
            })
        }
    }
    !in_force
}

/// Records what a session's last rate-limit event said about the window (not a
/// rejection: [`record_limit`] handles those): a nearly full window is kept for parking;
/// a window with room clears an old warning.
pub fn record_rate_info(record: &mut UsageRecord, info: &RateLimitInfo, park_at: f64, now: i64) {
    if info.status == "rejected" {
        return;
    }
    match info.resets_at {
        Some(resets_at) if info.near_limit(park_at) => {
            record.warning = Some(Warning {
                window: info.window.clone(),
                status: info.status.clone(),
                utilization: info.utilization,
                resets_at,
                recorded_at: now,
            })
        }
        _ if info.status == "allowed" && !info.is_overage() => {
            record.warning = None;
            record.overage = None;
        }
        _ => {}
    }
}

/// Records that `by`'s session was paid from extra usage; true when this is news.
pub fn record_overage(
    record: &mut UsageRecord,
    by: &str,
    resets_at: Option<i64>,
    now: i64,
) -> bool {
    let news = record.overage.is_none();
    record.overage = Some(OverageSeen {
        at: now,
        by: by.to_string(),
        resets_at,
    });
    news
}

/// Marks today's daily-cap message as sent; true when this instance is the one to send it.
pub fn announce_cap(record: &mut UsageRecord, day: &str) -> bool {
    if record.cap_announced_day.as_deref() == Some(day) {
        return false;
    }
    record.cap_announced_day = Some(day.to_string());
    true
}

/// How the one shared limit message starts (after the chat's tag and emoji).
const LIMIT_MESSAGE_LEAD: &str = "Usage limit reached (";

/// Whether a message (its plain text as the chat shows it) is the shared limit message,
/// whose Pause buttons are one per project.
pub fn is_limit_message(text: &str) -> bool {
    text.contains(LIMIT_MESSAGE_LEAD)
}

/// The one chat message for a usage-limit hit: the window, the reset, and the projects in
/// the order they resume (each with its start time). `clock` renders a unix time as `HH:MM`.
pub fn limit_message(
    record: &UsageRecord,
    stagger_secs: u64,
    clock: impl Fn(i64) -> String,
) -> Option<String> {
    let limit = record.limit.as_ref()?;
    let order = resume_order(&record.members);
    let list = order
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = limit.resets_at + i as i64 * stagger_secs as i64;
            let prio = record.members.get(p).map_or(0, |m| m.priority);
            let prio = if prio == 0 {
                String::new()
            } else {
                format!(", priority {prio}")
            };
            format!("{}. {p} at {}{prio}", i + 1, clock(at))
        })
        .collect::<Vec<_>>()
        .join("; ");
    Some(format!(
        "{LIMIT_MESSAGE_LEAD}{} window, hit by {}) — all {} projects of this machine wait for the reset at {}, then resume one by one: {list}",
        window_name(limit.window.as_deref()),
        limit.recorded_by,
        order.len(),
        clock(limit.resets_at),
    ))
}

/// The escalation id of a usage-limit wait: the same for every instance waiting for that
/// limit (the hit's `recorded_at`, in milliseconds, like any escalation id), so that each
/// records it as its own open escalation without talking to the others, and the one
/// shared message carries it on every project's Pause button. A later hit (a new record)
/// is a new wait with a new id.
pub fn limit_escalation(limit: &LimitHit) -> u64 {
    (limit.recorded_at.max(0) as u64).saturating_mul(1000)
}

/// The projects the shared limit message offers a Pause button for, in resume order: every
/// member of the home while a limit is recorded.
pub fn limit_waiting(record: &UsageRecord) -> Vec<String> {
    if record.limit.is_none() {
        return Vec::new();
    }
    resume_order(&record.members)
}

/// The status line of a waiting instance: "waiting for usage reset at HH:MM (n of m)".
pub fn waiting_line(gate: &Gate, clock: impl Fn(i64) -> String) -> Option<String> {
    match gate {
        Gate::WaitForReset {
            until, position, of, ..
        } => Some(format!(
            "waiting for usage reset at {} ({position} of {of})",
            clock(*until)
        )),
        Gate::Parked { until, utilization } => Some(format!(
            "parked until the usage reset at {}{}",
            clock(*until),
            utilization.map_or(String::new(), |u| format!(
                " (window {:.0}% used, priority below PIV_PARK_BELOW_PRIORITY)",
                u * 100.0
            ))
        )),
        Gate::OverageStop { resets_at, .. } => Some(format!(
            "paused: the last session was paid from extra usage{} — resume to continue on extra usage (PIV_ALLOW_OVERAGE=1 never stops)",
            resets_at.map_or(String::new(), |r| format!(
                "; the subscription resets at {}",
                clock(r)
            ))
        )),
        Gate::DailyCap { spent, cap } => Some(format!(
            "paused: this machine spent ${spent:.2} today, the daily cap (PIV_MAX_COST_PER_DAY_USD={cap}) — resume to go on today, or wait for tomorrow"
        )),
        Gate::Go => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(pid: u32, priority: i64, started: &str) -> Member {
        Member {
            pid,
            priority,
            started_at: started.to_string(),
        }
    }

    fn home() -> UsageRecord {
        let mut r = UsageRecord::default();
        r.members
            .insert("alpha".into(), member(1, 0, "2026-01-01T10:00:00Z"));
        r.members
            .insert("beta".into(), member(2, 5, "2026-01-01T11:00:00Z"));
        r.members
            .insert("gamma".into(), member(3, 0, "2026-01-01T09:00:00Z"));
        r
    }

    #[test]
    fn resume_order_is_priority_then_start_order() {
        assert_eq!(resume_order(&home().members), ["beta", "gamma", "alpha"]);
    }

    #[test]
    fn everyone_waits_for_the_reset_and_resumes_staggered() {
        let mut r = home();
        assert!(record_limit(
            &mut r,
            "alpha",
            Some("five_hour".into()),
            1000,
            100
        ));
        // A second hit while the limit is in force is not news.
        assert!(!record_limit(&mut r, "gamma", None, 990, 150));
        let p = UsagePolicy {
            stagger_secs: 60,
            ..UsagePolicy::default()
        };
        let l = Local::default();
        let table = [
            // (who, now) -> gate
            ("beta", 200, Some((1000, 1, 3))),
            ("gamma", 200, Some((1060, 2, 3))),
            ("alpha", 200, Some((1120, 3, 3))),
            ("beta", 1000, None),
            ("gamma", 1000, Some((1060, 2, 3))),
            ("gamma", 1060, None),
            ("alpha", 1119, Some((1120, 3, 3))),
            ("alpha", 1120, None),
            // Not (yet) a member: last in line.
            ("delta", 1120, Some((1180, 4, 4))),
        ];
        for (who, now, want) in table {
            let got = gate(&r, who, &p, &l, now);
            let want = match want {
                Some((until, position, of)) => Gate::WaitForReset {
                    until,
                    resets_at: 1000,
                    window: Some("five_hour".into()),
                    position,
                    of,
                },
                None => Gate::Go,
            };
            assert_eq!(got, want, "{who} at {now}");
        }
        // A later hit after the reset is news again.
        assert!(record_limit(&mut r, "beta", None, 5000, 2000));
        assert_eq!(r.limit.as_ref().unwrap().recorded_by, "beta");
    }

    #[test]
    fn low_priorities_park_when_the_window_is_nearly_full() {
        let mut r = home();
        let warn = |status: &str, utilization: Option<f64>| RateLimitInfo {
            status: status.into(),
            resets_at: Some(1000),
            utilization,
            ..RateLimitInfo::default()
        };
        let policy = |priority| UsagePolicy {
            priority,
            park_below_priority: 1,
            ..UsagePolicy::default()
        };
        let l = Local::default();
        let table = [
            // (status, utilization, my priority, now) -> parked?
            ("allowed_warning", None, 0, 500, true),
            ("allowed_warning", None, 1, 500, false),
            ("allowed_warning", Some(0.5), 0, 500, false),
            ("allowed", Some(0.95), 0, 500, true),
            ("allowed", Some(0.95), 0, 1000, false),
            ("allowed", None, 0, 500, false),
        ];
        for (status, u, prio, now, parked) in table {
            r.warning = None;
            record_rate_info(&mut r, &warn(status, u), 0.9, 100);
            let got = gate(&r, "alpha", &policy(prio), &l, now);
            assert_eq!(
                matches!(got, Gate::Parked { until: 1000, .. }),
                parked,
                "{status} {u:?} {prio} {now}: {got:?}"
            );
        }
        // Nobody parks by default.
        record_rate_info(&mut r, &warn("allowed_warning", Some(0.99)), 0.9, 100);
        assert_eq!(
            gate(&r, "alpha", &UsagePolicy::default(), &l, 500),
            Gate::Go
        );
    }

    #[test]
    fn overage_stops_until_a_resume_or_the_reset_unless_allowed() {
        let mut r = home();
        assert!(record_overage(&mut r, "alpha", Some(1000), 100));
        assert!(!record_overage(&mut r, "beta", Some(1000), 120));
        let p = UsagePolicy::default();
        let table = [
            // (resumed_at, allow, now) -> stopped?
            (None, false, 200, true),
            (Some(110), false, 200, true),
            (Some(130), false, 200, false),
            (None, true, 200, false),
            (None, false, 1000, false),
        ];
        for (resumed_at, allow, now, stopped) in table {
            let policy = UsagePolicy {
                allow_overage: allow,
                ..p.clone()
            };
            let l = Local {
                resumed_at,
                ..Local::default()
            };
            let got = gate(&r, "gamma", &policy, &l, now);
            assert_eq!(
                matches!(got, Gate::OverageStop { since: 120, .. }),
                stopped,
                "{resumed_at:?} {allow} {now}"
            );
        }
        // A session with room on the subscription clears it.
        let room = RateLimitInfo {
            status: "allowed".into(),
            resets_at: Some(1000),
            ..RateLimitInfo::default()
        };
        record_rate_info(&mut r, &room, 0.9, 300);
        assert!(r.overage.is_none());
    }

    #[test]
    fn the_daily_cap_stops_everyone_with_one_message() {
        let r = home();
        let p = UsagePolicy {
            max_cost_per_day_usd: Some(1.0),
            ..UsagePolicy::default()
        };
        let table = [
            // (spent, lifted day, today) -> capped?
            (0.99, None, 10, false),
            (1.0, None, 10, true),
            (1.5, Some(9), 10, true),
            (1.5, Some(10), 10, false),
        ];
        for (spent, lifted, today, capped) in table {
            let l = Local {
                spent_today: spent,
                cap_lifted_day: lifted,
                today,
                ..Local::default()
            };
            assert_eq!(
                matches!(gate(&r, "alpha", &p, &l, 0), Gate::DailyCap { .. }),
                capped,
                "{spent} {lifted:?}"
            );
        }
        let mut r = r;
        assert!(announce_cap(&mut r, "2026-01-01"));
        assert!(!announce_cap(&mut r, "2026-01-01"));
        assert!(announce_cap(&mut r, "2026-01-02"));
    }

    #[test]
    fn the_message_names_every_project_in_order() {
        let mut r = home();
        record_limit(&mut r, "alpha", Some("five_hour".into()), 3600, 0);
        let text = limit_message(&r, 60, |t| format!("t{t}")).unwrap();
        assert!(text.contains("5-hour window, hit by alpha"), "{text}");
        assert!(
            text.contains("1. beta at t3600, priority 5; 2. gamma at t3660; 3. alpha at t3720"),
            "{text}"
        );
        let g = gate(&r, "gamma", &UsagePolicy::default(), &Local::default(), 10);
        assert_eq!(
            waiting_line(&g, |t| format!("t{t}")).unwrap(),
            "waiting for usage reset at t3660 (2 of 3)"
        );
    }

    #[test]
    fn the_record_keeps_unknown_fields() {
        let text = r#"{"members":{},"future":{"x":1}}"#;
        let r: UsageRecord = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), text);
    }

    #[test]
    fn every_waiting_instance_derives_the_same_escalation_id_from_the_limit() {
        let mut r = home();
        assert_eq!(
            limit_waiting(&r),
            Vec::<String>::new(),
            "no limit, no buttons"
        );
        // (hit by, resets at, now) -> id of the wait
        assert!(record_limit(&mut r, "alpha", None, 1000, 100));
        let first = limit_escalation(r.limit.as_ref().unwrap());
        assert_eq!(first, 100_000);
        // A second report of the same limit keeps its id (the record stays).
        assert!(!record_limit(&mut r, "gamma", None, 1010, 150));
        assert_eq!(limit_escalation(r.limit.as_ref().unwrap()), first);
        // A new limit after the reset is a new wait.
        assert!(record_limit(&mut r, "beta", None, 9000, 2000));
        assert_eq!(limit_escalation(r.limit.as_ref().unwrap()), 2_000_000);
        assert_eq!(limit_waiting(&r), ["beta", "gamma", "alpha"]);
        let odd = LimitHit {
            window: None,
            resets_at: 0,
            recorded_at: -5,
            recorded_by: "x".into(),
        };
        assert_eq!(limit_escalation(&odd), 0);
        let shown = format!(
            "[beta] ⏳ {}",
            limit_message(&r, 60, |t| t.to_string()).unwrap()
        );
        // (text, the shared limit message)
        for (text, want) in [
            (shown.as_str(), true),
            ("🌐 API unreachable — retrying in 20 s", false),
            ("", false),
        ] {
            assert_eq!(is_limit_message(text), want, "{text}");
        }
    }

    #[test]
    fn waiting_out_an_overage_is_a_wait_for_the_reset() {
        let mut r = home();
        record_overage(&mut r, "gamma", Some(1000), 120);
        let p = UsagePolicy {
            stagger_secs: 60,
            ..UsagePolicy::default()
        };
        // (waits out, resumed at, allow overage, resets known, who, now) -> until (None: go, Some(0): stop)
        type Row = (
            Option<i64>,
            Option<i64>,
            bool,
            bool,
            &'static str,
            i64,
            Option<i64>,
        );
        let table: [Row; 9] = [
            (Some(120), None, false, true, "gamma", 200, Some(1060)),
            (Some(120), None, false, true, "beta", 200, Some(1000)),
            (Some(120), None, false, true, "gamma", 1059, Some(1060)),
            (Some(120), None, false, true, "gamma", 1060, None),
            // Another (older) overage's choice does not count: the stop.
            (Some(50), None, false, true, "gamma", 200, Some(0)),
            (None, None, false, true, "gamma", 200, Some(0)),
            // No reset known: nothing to wait for, the stop stays.
            (Some(120), None, false, false, "gamma", 200, Some(0)),
            // Allowed, or resumed past it: go on.
            (Some(120), None, true, true, "gamma", 200, None),
            (Some(120), Some(130), false, true, "gamma", 200, None),
        ];
        for (waits, resumed_at, allow, known, who, now, want) in table {
            let mut r = r.clone();
            if !known {
                r.overage.as_mut().unwrap().resets_at = None;
            }
            let policy = UsagePolicy {
                allow_overage: allow,
                ..p.clone()
            };
            let l = Local {
                waits_out_overage: waits,
                resumed_at,
                ..Local::default()
            };
            let got = match gate(&r, who, &policy, &l, now) {
                Gate::Go => None,
                Gate::WaitForReset { until, .. } => Some(until),
                Gate::OverageStop { .. } => Some(0),
                other => panic!("{other:?}"),
            };
            assert_eq!(
                got, want,
                "{waits:?} {resumed_at:?} {allow} {known} {who} {now}"
            );
        }
    }
}
