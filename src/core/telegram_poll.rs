//! How the bot owner paces `getUpdates`: the pause after each poll, which updates are new,
//! and the offset that confirms what was seen — so that a server answering at once (a
//! proxy or a self-hosted Bot API that ignores `timeout`) is never hammered.
//!
//! Pure: the caller measures how long each poll was held and passes it in.

use std::time::Duration;

/// The first pause after a poll that came back quickly with nothing new...
pub const FIRST_QUICK_PAUSE: Duration = Duration::from_millis(200);
/// ...doubling up to this (a server that never holds a poll gets one call every few
/// seconds; a real update or a held long poll goes back to no pause at once).
pub const MAX_QUICK_PAUSE: Duration = Duration::from_millis(3200);
/// A poll held at least this long is a working long poll: no pause after it.
pub const HELD_POLL: Duration = Duration::from_secs(1);
/// Poll failures (network, 5xx, 409 from an outsider) back off from this, doubling...
pub const FIRST_ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// ...up to this.
pub const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(30);

/// How one `getUpdates` ended, as the pacing sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// At least one update above the last handled id.
    NewUpdates,
    /// Nothing new (empty, or only updates already handled), after `held`.
    NothingNew { held: Duration },
    /// The call failed (network, 5xx, 409, unreadable answer).
    Failed,
    /// Telegram asked for this pause; honoured in full.
    RetryAfter(Duration),
}

/// The pacing state of one poll loop: the next quick-answer pause and the next error backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollPacer {
    quick: Option<Duration>,
    error: Option<Duration>,
}

impl PollPacer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pause before the next `getUpdates`, given how the last one ended.
    pub fn after(&mut self, outcome: PollOutcome) -> Duration {
        match outcome {
            PollOutcome::NewUpdates => {
                *self = Self::default();
                Duration::ZERO
            }
            PollOutcome::NothingNew { held } if held >= HELD_POLL => {
                *self = Self::default();
                Duration::ZERO
            }
            PollOutcome::NothingNew { .. } => {
                self.error = None;
                grow(&mut self.quick, FIRST_QUICK_PAUSE, MAX_QUICK_PAUSE)
            }
            PollOutcome::Failed => grow(&mut self.error, FIRST_ERROR_BACKOFF, MAX_ERROR_BACKOFF),
            PollOutcome::RetryAfter(wait) => wait,
        }
    }
}

/// Returns the current step (starting at `first`) and doubles it up to `max` for next time.
fn grow(step: &mut Option<Duration>, first: Duration, max: Duration) -> Duration {
    let now = step.unwrap_or(first);
    *step = Some((now * 2).min(max));
    now
}

/// Whether `update_id` still needs handling after `last_handled`.
pub fn is_new(update_id: i64, last_handled: Option<i64>) -> bool {
    last_handled.is_none_or(|last| update_id > last)
}

/// The `offset` for the next `getUpdates`: past the last handled update and past every
/// id just received (handled or skipped), so a server stops resending them.
pub fn next_offset(last_handled: Option<i64>, received: &[i64]) -> Option<i64> {
    let highest = received.iter().copied().max();
    match (last_handled, highest) {
        (None, None) => None,
        (a, b) => Some(a.max(b).unwrap_or(0) + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn pause_table() {
        use PollOutcome::*;
        let quick = NothingNew { held: MS(5) };
        let held = NothingNew { held: HELD_POLL };
        // (outcomes in sequence, expected pauses)
        let cases: Vec<(Vec<PollOutcome>, Vec<u64>)> = vec![
            // An instant server: 200 ms growing to 3.2 s, and staying there.
            (vec![quick; 7], vec![200, 400, 800, 1600, 3200, 3200, 3200]),
            // A real update resets the growth.
            (
                vec![quick, quick, NewUpdates, quick],
                vec![200, 400, 0, 200],
            ),
            // A held long poll resets it too.
            (vec![quick, quick, held, quick], vec![200, 400, 0, 200]),
            // Failures have their own backoff, 1 s doubling to 30 s.
            (
                vec![Failed; 7],
                vec![1000, 2000, 4000, 8000, 16000, 30000, 30000],
            ),
            // A quick empty answer after failures resets the error backoff.
            (
                vec![Failed, Failed, quick, Failed],
                vec![1000, 2000, 200, 1000],
            ),
            // A retry_after is honoured in full, however long.
            (vec![RetryAfter(Duration::from_secs(3600))], vec![3_600_000]),
            // A long poll that keeps being held never pauses.
            (vec![held; 3], vec![0, 0, 0]),
        ];
        for (outcomes, want) in cases {
            let mut pacer = PollPacer::new();
            let got: Vec<u64> = outcomes
                .iter()
                .map(|o| pacer.after(*o).as_millis() as u64)
                .collect();
            assert_eq!(got, want, "{outcomes:?}");
        }
    }

    /// At most 5 calls a second against a server that answers at once, and far fewer
    /// after the first seconds.
    #[test]
    fn an_instant_server_is_polled_at_most_five_times_a_second() {
        let mut pacer = PollPacer::new();
        let mut t = Duration::ZERO;
        let mut calls = 0u32;
        while t < Duration::from_secs(60) {
            calls += 1;
            t += pacer.after(PollOutcome::NothingNew { held: MS(1) }) + MS(1);
        }
        assert!(calls <= 25, "{calls} calls in a minute");
    }

    #[test]
    fn new_and_offset_table() {
        let cases: [(Option<i64>, &[i64], Option<i64>); 5] = [
            (None, &[], None),
            (None, &[5, 7], Some(8)),
            (Some(10), &[], Some(11)),
            // Old updates resent by a server that ignores offset are confirmed anyway.
            (Some(10), &[3, 4], Some(11)),
            (Some(10), &[11, 12], Some(13)),
        ];
        for (last, received, want) in cases {
            assert_eq!(next_offset(last, received), want, "{last:?} {received:?}");
        }
        assert!(is_new(5, None));
        assert!(is_new(6, Some(5)));
        assert!(!is_new(5, Some(5)));
        assert!(!is_new(4, Some(5)));
    }
}
