//! How long piv waits out what is not the work's fault: an API outage (capped exponential
//! backoff, up to a maximum of continuous outage) and a usage limit (until its reset, or a
//! doubling minimum when the reset time is missing or already past). Times are unix
//! seconds passed in by the caller.

/// The outage settings (`PIV_OUTAGE_BACKOFF_SECS`, `PIV_OUTAGE_MAX_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutagePolicy {
    /// The first wait; each further one doubles, up to [`OutagePolicy::cap_secs`].
    pub first_wait_secs: u64,
    pub cap_secs: u64,
    /// After this much continuous outage, stop for a human.
    pub max_secs: u64,
}

impl Default for OutagePolicy {
    fn default() -> Self {
        OutagePolicy {
            first_wait_secs: 30,
            cap_secs: 600,
            max_secs: 14_400,
        }
    }
}

/// A continuous outage: when it started and how many waits it has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    pub started_at: i64,
    pub waits: u32,
}

/// What to do after a session ended in an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageDecision {
    /// Wait this long, then run the same step again.
    Wait { secs: u64 },
    /// The outage has lasted `for_secs`, more than the policy allows: stop for a human.
    GiveUp { for_secs: u64 },
}

/// Decides after a session of an outage that started at `outage.started_at` (with
/// `outage.waits` waits so far) ended at `now`.
pub fn outage_decision(policy: &OutagePolicy, outage: &Outage, now: i64) -> OutageDecision {
    let lasted = now.saturating_sub(outage.started_at).max(0) as u64;
    if lasted >= policy.max_secs {
        return OutageDecision::GiveUp { for_secs: lasted };
    }
    let wait = doubled(policy.first_wait_secs, outage.waits, policy.cap_secs);
    // Never wait past the point where piv gives up by more than needed to notice it.
    let until_give_up = policy.max_secs - lasted;
    OutageDecision::Wait {
        secs: wait.min(until_give_up).max(1),
    }
}

/// `first * 2^n`, capped.
fn doubled(first: u64, n: u32, cap: u64) -> u64 {
    let factor = 1u64.checked_shl(n.min(32)).unwrap_or(u64::MAX);
    first.saturating_mul(factor).min(cap).max(first.min(cap))
}

/// The usage-limit settings (`PIV_LIMIT_MIN_WAIT_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    pub min_wait_secs: u64,
    /// The longest of the doubling waits when no usable reset time is known.
    pub cap_secs: u64,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        LimitPolicy {
            min_wait_secs: 60,
            cap_secs: 3600,
        }
    }
}

/// How long to wait after a usage-limit hit: until `resets_at` when it is in the future
/// (plus a second, so the wake-up is past the reset); otherwise the minimum, doubling with
/// each consecutive hit (`consecutive` counts earlier hits of this limit, 0 for the first)
/// — never a one-second loop.
pub fn limit_wait_secs(
    policy: &LimitPolicy,
    resets_at: Option<i64>,
    now: i64,
    consecutive: u32,
) -> u64 {
    let fallback = doubled(policy.min_wait_secs.max(1), consecutive, policy.cap_secs);
    match resets_at {
        Some(at) if at > now => {
            let until = (at - now) as u64 + 1;
            // A reset that did not lift the limit (hit again right after) is not trusted
            // twice: from the second hit on, wait at least the doubling minimum.
            if consecutive == 0 {
                until
            } else {
                until.max(fallback)
            }
        }
        _ => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_waits_double_up_to_the_cap_and_give_up_after_the_max() {
        let p = OutagePolicy::default();
        let table = [
            // (started, waits, now) -> decision
            (0, 0, 0, OutageDecision::Wait { secs: 30 }),
            (0, 1, 30, OutageDecision::Wait { secs: 60 }),
            (0, 2, 90, OutageDecision::Wait { secs: 120 }),
            (0, 4, 500, OutageDecision::Wait { secs: 480 }),
            (0, 5, 1000, OutageDecision::Wait { secs: 600 }),
            (0, 40, 5000, OutageDecision::Wait { secs: 600 }),
            // Close to the max: wait only until it.
            (0, 40, 14_200, OutageDecision::Wait { secs: 200 }),
            (0, 40, 14_400, OutageDecision::GiveUp { for_secs: 14_400 }),
            (100, 3, 20_000, OutageDecision::GiveUp { for_secs: 19_900 }),
        ];
        for (started_at, waits, now, want) in table {
            let got = outage_decision(&p, &Outage { started_at, waits }, now);
            assert_eq!(got, want, "started {started_at} waits {waits} now {now}");
        }
        let small = OutagePolicy {
            first_wait_secs: 1,
            cap_secs: 4,
            max_secs: 100,
        };
        let waits: Vec<_> = (0..5)
            .map(|w| {
                outage_decision(
                    &small,
                    &Outage {
                        started_at: 0,
                        waits: w,
                    },
                    0,
                )
            })
            .collect();
        assert_eq!(
            waits,
            [1, 2, 4, 4, 4].map(|secs| OutageDecision::Wait { secs })
        );
    }

    #[test]
    fn limit_waits_never_loop_fast() {
        let p = LimitPolicy::default();
        let table = [
            // (resets_at, now, consecutive) -> secs
            (Some(1_000), 400, 0, 601),
            (Some(1_000), 999, 0, 2),
            // Missing or past: the minimum, doubling.
            (None, 400, 0, 60),
            (None, 400, 1, 120),
            (None, 400, 2, 240),
            (Some(100), 400, 0, 60),
            (Some(400), 400, 3, 480),
            (None, 400, 30, 3600),
            // A future reset that did not lift the limit is not trusted twice.
            (Some(405), 400, 1, 120),
            (Some(10_000), 400, 1, 9_601),
        ];
        for (resets_at, now, consecutive, want) in table {
            assert_eq!(
                limit_wait_secs(&p, resets_at, now, consecutive),
                want,
                "{resets_at:?} {now} {consecutive}"
            );
        }
        let zero = LimitPolicy {
            min_wait_secs: 0,
            cap_secs: 10,
        };
        assert_eq!(limit_wait_secs(&zero, None, 0, 0), 1, "never zero");
    }
}
