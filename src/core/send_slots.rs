//! Which send slot a message of a bot's chat gets in the shared send budget, and whether a
//! notification may book one yet: replies to commands go ahead of every instance's queued
//! notifications.
//!
//! The budget is a chain of slots one interval apart per chat, shared by every instance
//! of the bot (`io::send_budget` keeps the last booked slot on disk). Booked first-come
//! (FIFO), ten instances with notifications backed up would keep about ten slots booked
//! ahead, and a reply to `/status` would wait behind all of them. So a notification may
//! book only the next slot when it is at most one interval away; otherwise it books
//! nothing and asks again when it would be. A reply books the next slot regardless. The
//! chain booked ahead is then never longer than about one slot, whatever the backlog, so
//! a reply waits at most about two intervals (usually one); notifications keep their
//! order per instance and their spacing, and only a reply can book further ahead.
//! Why not a priority queue on disk: every instance would have to announce what it wants
//! to send; this rule needs nothing but the one number the budget already keeps.
//!
//! Across machines (`PIV_COORDINATION`) the same rule books in a NATS KV key per chat;
//! when NATS does not answer, each machine books in its own file budget at a
//! conservative share of the chat's rate ([`degraded_interval_ms`]).

use std::time::Duration;

use crate::core::outbox::MessageKind;

/// A booked slot further ahead than this is taken for a clock that went backwards, and
/// ignored, rather than silencing every instance for that long.
pub const MAX_AHEAD: Duration = Duration::from_secs(3600);
/// A 429's back-off is honoured in full however long Telegram asks (an hour-long flood
/// ban is an hour without sends on the token); only one further ahead than this is
/// taken for a clock that went backwards.
pub const MAX_BACKOFF_AHEAD: Duration = Duration::from_secs(48 * 3600);

/// The first free slot (ms since the epoch): no earlier than now, one interval after
/// the last reserved slot, and not before a 429 back-off ends.
pub fn next_slot_ms(
    now_ms: u64,
    last_slot_ms: Option<u64>,
    blocked_until_ms: Option<u64>,
    interval_ms: u64,
) -> u64 {
    let ahead = |from: u64, by: Duration| from.saturating_add(by.as_millis() as u64);
    let blocked = blocked_until_ms
        .filter(|t| *t <= ahead(now_ms, MAX_BACKOFF_AHEAD))
        .unwrap_or(0);
    // Slots queue up behind a long back-off too.
    let last_horizon = ahead(now_ms.max(blocked), MAX_AHEAD);
    let after_last = last_slot_ms
        .filter(|t| *t <= last_horizon)
        .map_or(0, |last| last.saturating_add(interval_ms));
    now_ms.max(after_last).max(blocked)
}

/// What a request for a slot gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booking {
    /// This slot (ms since the epoch) is booked: send then.
    Slot(u64),
    /// Nothing booked: the next slot is more than one interval away. Ask again at this
    /// time (ms since the epoch), when it will not be.
    AskAgainAt(u64),
}

/// The booking of a message of `kind` (see the module docs): a reply gets the next free
/// slot; a notification gets it only when it is at most one interval away.
pub fn book(
    kind: MessageKind,
    now_ms: u64,
    last_slot_ms: Option<u64>,
    blocked_until_ms: Option<u64>,
    interval_ms: u64,
) -> Booking {
    let slot = next_slot_ms(now_ms, last_slot_ms, blocked_until_ms, interval_ms);
    match kind {
        MessageKind::Reply => Booking::Slot(slot),
        MessageKind::Notification if slot <= now_ms.saturating_add(interval_ms) => {
            Booking::Slot(slot)
        }
        MessageKind::Notification => Booking::AskAgainAt(slot - interval_ms),
    }
}

/// Machines assumed sharing the chat when the shared budget cannot be reached, however
/// few were last seen: another may have started since.
pub const MIN_MACHINES_WHEN_DEGRADED: usize = 2;

/// The spacing one machine keeps in its own file budget while the budget shared across
/// machines is unreachable: the chat's interval times the machines last seen in the
/// shared registry (at least [`MIN_MACHINES_WHEN_DEGRADED`]), so that together they stay
/// within the chat's rate without talking to each other.
pub fn degraded_interval_ms(interval_ms: u64, machines_last_seen: usize) -> u64 {
    interval_ms.saturating_mul(machines_last_seen.max(MIN_MACHINES_WHEN_DEGRADED) as u64)
}

/// The earliest a machine sends once the budget shared across machines stops answering:
/// a whole degraded spacing from `now_ms`, since the slots the other machines booked last
/// are unknown here (its own file budget knows only its own).
pub fn degraded_first_send_ms(now_ms: u64, interval_ms: u64, machines_last_seen: usize) -> u64 {
    now_ms.saturating_add(degraded_interval_ms(interval_ms, machines_last_seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageKind::*;

    #[test]
    fn degraded_first_send_table() {
        // (now, interval, machines last seen) -> earliest send
        let cases = [
            (10_000, 1100, 0, 12_200),
            (10_000, 1100, 3, 13_300),
            (10_000, 3000, 2, 16_000),
            (u64::MAX - 5, 1100, 2, u64::MAX),
        ];
        for (now, interval, machines, want) in cases {
            assert_eq!(
                degraded_first_send_ms(now, interval, machines),
                want,
                "{now} + {interval} ms × {machines}"
            );
        }
    }

    #[test]
    fn degraded_interval_table() {
        // (interval, machines last seen) -> spacing on this machine
        let cases = [
            (1100, 0, 2200),
            (1100, 1, 2200),
            (1100, 2, 2200),
            (1100, 3, 3300),
            (3000, 5, 15_000),
            (u64::MAX, 3, u64::MAX),
        ];
        for (interval, machines, want) in cases {
            assert_eq!(
                degraded_interval_ms(interval, machines),
                want,
                "{interval} ms × {machines} machines"
            );
        }
    }

    #[test]
    fn next_slot_table() {
        // (now, last, blocked, interval) -> slot
        let cases = [
            (1000, None, None, 1100, 1000),
            (1000, Some(500), None, 1100, 1600),
            (5000, Some(500), None, 1100, 5000),
            (1000, Some(500), Some(9000), 1100, 9000),
            (1000, None, Some(200), 1100, 1000),
            // Far-future values mean the clock went back: ignored.
            (1000, Some(u64::MAX), None, 1100, 1000),
            (1000, None, Some(1000 + 172_800_001), 1100, 1000),
            // A 429's back-off is honoured in full, an hour and more.
            (1000, None, Some(1000 + 3_600_000), 1100, 3_601_000),
            (1000, None, Some(1000 + 7_200_000), 1100, 7_201_000),
            // Sends booked behind a two-hour back-off keep their spacing.
            (1000, Some(7_201_000), Some(7_201_000), 1100, 7_202_100),
        ];
        for (now, last, blocked, interval, want) in cases {
            assert_eq!(next_slot_ms(now, last, blocked, interval), want);
        }
    }

    #[test]
    fn book_table() {
        // (kind, now, last, blocked, interval) -> booking
        let cases = [
            // A free budget: both kinds send now.
            (Notification, 1000, None, None, 100, Booking::Slot(1000)),
            (Reply, 1000, None, None, 100, Booking::Slot(1000)),
            // The last slot is past: now.
            (
                Notification,
                1000,
                Some(500),
                None,
                100,
                Booking::Slot(1000),
            ),
            // The next slot is exactly one interval away: a notification may book it.
            (
                Notification,
                1000,
                Some(1000),
                None,
                100,
                Booking::Slot(1100),
            ),
            (
                Notification,
                1000,
                Some(950),
                None,
                100,
                Booking::Slot(1050),
            ),
            // Two slots ahead: a notification books nothing and asks again when the next
            // slot is one interval away; a reply books it.
            (
                Notification,
                1000,
                Some(1100),
                None,
                100,
                Booking::AskAgainAt(1100),
            ),
            (Reply, 1000, Some(1100), None, 100, Booking::Slot(1200)),
            // However long the chain a reply already booked, the reply goes after it.
            (Reply, 1000, Some(1900), None, 100, Booking::Slot(2000)),
            // Behind a 429 back-off: the reply queues right after it; a notification asks
            // again one interval before it ends.
            (
                Notification,
                1000,
                None,
                Some(60_000),
                100,
                Booking::AskAgainAt(59_900),
            ),
            (Reply, 1000, None, Some(60_000), 100, Booking::Slot(60_000)),
            // A clock that went back does not park notifications for an hour.
            (
                Notification,
                1000,
                Some(u64::MAX),
                None,
                100,
                Booking::Slot(1000),
            ),
        ];
        for (kind, now, last, blocked, interval, want) in cases {
            assert_eq!(
                book(kind, now, last, blocked, interval),
                want,
                "{kind:?} now {now} last {last:?} blocked {blocked:?}"
            );
        }
    }

    /// Notifications flooding from many instances never book more than one slot ahead,
    /// so a reply arriving at any moment gets a slot within two intervals.
    #[test]
    fn a_reply_never_waits_more_than_two_intervals_behind_notifications() {
        let interval = 100;
        let mut last = None;
        for now in (0..5_000).step_by(7) {
            // Ten instances ask for a notification slot at every tick.
            for _ in 0..10 {
                if let Booking::Slot(slot) = book(Notification, now, last, None, interval) {
                    last = Some(slot);
                }
            }
            if let Booking::Slot(slot) = book(Reply, now, last, None, interval) {
                assert!(slot <= now + 2 * interval, "reply at {now} got {slot}");
            }
        }
    }
}
