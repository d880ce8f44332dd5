//! The poller lease across machines as pure decisions: the names of a bot's buckets, how
//! many replicas, when to renew, how long a renewed lease may be acted on, and the fencing
//! check made before each `getUpdates` and each offset write.
//!
//! Times are `Duration`s since a monotonic origin the caller picks (`now` is passed in).
//! A lease renewed by a request sent at `sent_at` cannot expire on the server before
//! `sent_at + ttl` (the server counts the TTL from when it stored the renewal, which is
//! later), so the holder may act until then, less a safety margin for clock rates and the
//! server's expiry timer. Past that, or once the server answered that the revision moved
//! on (someone else holds it), the holder must not poll or confirm updates.

use std::time::Duration;

/// The bot's coordination bucket (lease and offset): named from the bot id, never the
/// token.
pub fn bot_bucket(bot_id: &str) -> String {
    format!("piv-bot-{bot_id}")
}

/// The registry bucket: one key per instance of any bot (`core::machines::registry_key`),
/// each with a TTL, so that `piv status --all` needs no token.
pub const REGISTRY_BUCKET: &str = "piv-registry";

/// How long a registry entry lives without being published again: three publications.
pub fn registry_entry_ttl(publish_every: Duration) -> Duration {
    (publish_every * 3).max(Duration::from_secs(1))
}

/// The lease key in [`bot_bucket`].
pub const LEASE_KEY: &str = "poller-lease";
/// The last handled update id in [`bot_bucket`].
pub const OFFSET_KEY: &str = "offset";

/// The bot id: the digits before ':' in a bot token (`123456:ABC…` → `123456`); None
/// when the token has no such part (no bucket name can be made from it).
pub fn bot_id_of(token: &str) -> Option<&str> {
    let (id, _) = token.split_once(':')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// Replicas for buckets and streams: `min(3, cluster size)` unless overridden
/// (`PIV_NATS_REPLICAS`); never 0, never more than the cluster has.
pub fn replicas(cluster_size: usize, overridden: Option<usize>) -> usize {
    let size = cluster_size.max(1);
    overridden.unwrap_or(3).clamp(1, size)
}

/// The cluster's size as a client can tell it: 1 for a lone server; in a cluster, the
/// larger of the client URLs the server advertises (which fills in as the routes gossip,
/// so it can be short just after a start) and the servers the user listed.
pub fn cluster_size(clustered: bool, advertised_urls: usize, configured_servers: usize) -> usize {
    if clustered {
        advertised_urls.max(configured_servers).max(1)
    } else {
        1
    }
}

/// How often the holder renews: about a third of the TTL, so two renewals can fail
/// before the lease runs out.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}

/// What is kept back from a lease's end: a tenth of the TTL, at least 100 ms.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100)).min(ttl / 2)
}

/// The end of what a renewal sent at `sent_at` lets the holder do.
pub fn valid_until(sent_at: Duration, ttl: Duration) -> Duration {
    sent_at + ttl - safety_margin(ttl)
}

/// The long-poll length under a lease: never longer than the lease itself, so a holder
/// that lost it comes back to the fencing check within one TTL.
pub fn poll_timeout_under_lease(poll_timeout_secs: u32, ttl: Duration) -> u32 {
    let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1);
    poll_timeout_secs.min(ttl_secs)
}

/// What one renewal came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The compare-and-set on our revision was stored: the new revision, and when the
    /// request was sent.
    Renewed { revision: u64, sent_at: Duration },
    /// The server refused the compare-and-set (the revision moved on or the key is gone):
    /// another holder may exist now.
    Refused,
    /// No answer (NATS down, timeout): the lease runs on until its end, no further.
    NoAnswer,
}

/// A held lease as its holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub revision: u64,
    pub valid_until: Duration,
    /// The server refused a renewal: lost for good, whatever the time.
    pub refused: bool,
}

impl Held {
    /// Just won by a create sent at `sent_at`.
    pub fn won(revision: u64, sent_at: Duration, ttl: Duration) -> Held {
        Held {
            revision,
            valid_until: valid_until(sent_at, ttl),
            refused: false,
        }
    }

    /// The lease after a renewal.
    pub fn after(self, renewal: Renewal, ttl: Duration) -> Held {
        match renewal {
            Renewal::Renewed { revision, sent_at } if !self.refused => Held {
                revision,
                valid_until: valid_until(sent_at, ttl).max(self.valid_until),
                refused: false,
            },
            Renewal::Renewed { .. } | Renewal::Refused => Held {
                refused: true,
                ..self
            },
            Renewal::NoAnswer => self,
        }
    }

    /// May the holder still act (poll, confirm) at `now`, by its own account?
    pub fn valid_at(&self, now: Duration) -> bool {
        !self.refused && now < self.valid_until
    }
}

/// What the server says about the lease key, read for the fencing check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOnServer {
    /// The key holds this holder id, at this revision.
    HeldBy { holder: String, revision: u64 },
    /// Deleted, purged or expired (the marker's revision; 0 when the key never existed).
    Absent { revision: u64 },
    /// No answer.
    Unknown,
}

/// The fencing check before a `getUpdates` or an offset write: the holder acts only while
/// its lease is valid by its own account and the server does not show the key gone or
/// held by someone else. Without an answer from the server, the lease's own end decides
/// (it cannot have been taken before it). A read older than the holder's own revision
/// (a replica that lags behind) says nothing either way.
pub fn fence(held: &Held, now: Duration, me: &str, server: &LeaseOnServer) -> bool {
    held.valid_at(now)
        && match server {
            LeaseOnServer::HeldBy { revision, .. } | LeaseOnServer::Absent { revision }
                if *revision < held.revision =>
            {
                true
            }
            LeaseOnServer::HeldBy { holder, .. } => holder == me,
            LeaseOnServer::Absent { .. } => false,
            LeaseOnServer::Unknown => true,
        }
}

/// How a standby waits between attempts to create the lease when nothing was seen on
/// the watch: a quarter of the TTL (the watch normally wakes it first), at least 50 ms.
pub fn standby_retry(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(50))
}

/// What the chat is told about coordination across machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordinationNote {
    /// NATS has not answered for a whole lease TTL.
    Lost,
    /// It answers again, after a `Lost`.
    Back,
}

/// Says "lost" once NATS has failed to answer for a whole lease TTL, and "back" at the
/// first answer after that. A shorter failure is not news: while a cluster restarts its
/// nodes elect leaders and a request may time out once between two answers, which would
/// otherwise tell the chat "lost" and "back" twice over. Lives as long as the process,
/// across lease attempts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutageNotice {
    /// When the current run of unanswered attempts began.
    failing_since: Option<Duration>,
    /// Whether "lost" was said and not yet followed by "back".
    announced: bool,
}

impl OutageNotice {
    /// One attempt at `now` (monotonic): whether NATS `answered`; the note to send, if any.
    pub fn on_attempt(
        &mut self,
        answered: bool,
        now: Duration,
        ttl: Duration,
    ) -> Option<CoordinationNote> {
        if answered {
            self.failing_since = None;
            return std::mem::take(&mut self.announced).then_some(CoordinationNote::Back);
        }
        let since = *self.failing_since.get_or_insert(now);
        if !self.announced && now.saturating_sub(since) >= ttl {
            self.announced = true;
            return Some(CoordinationNote::Lost);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_notice_table() {
        use CoordinationNote::*;
        let ttl = Duration::from_secs(2);
        // Each case: attempts (seconds, answered) and the notes they give, in order.
        type Case = (
            &'static str,
            Vec<(f64, bool)>,
            Vec<Option<CoordinationNote>>,
        );
        let cases: Vec<Case> = vec![
            (
                "answers only",
                vec![(0.0, true), (1.0, true)],
                vec![None, None],
            ),
            (
                "a failure shorter than a TTL is not news",
                vec![(0.0, false), (1.5, false), (1.9, true)],
                vec![None, None, None],
            ),
            (
                "lost after a whole TTL, once, and back at the first answer",
                vec![
                    (0.0, false),
                    (1.0, false),
                    (2.0, false),
                    (3.0, false),
                    (4.0, true),
                ],
                vec![None, None, Some(Lost), None, Some(Back)],
            ),
            (
                "a restart that flaps after coming back says each once",
                vec![
                    (0.0, false),
                    (2.5, false),
                    (3.0, true),
                    (3.5, false),
                    (4.0, true),
                ],
                vec![None, Some(Lost), Some(Back), None, None],
            ),
            (
                "a second real outage is said again",
                vec![
                    (0.0, false),
                    (2.0, false),
                    (3.0, true),
                    (4.0, false),
                    (6.0, false),
                    (7.0, true),
                ],
                vec![None, Some(Lost), Some(Back), None, Some(Lost), Some(Back)],
            ),
        ];
        for (name, attempts, want) in cases {
            let mut notice = OutageNotice::default();
            let got: Vec<_> = attempts
                .iter()
                .map(|(at, answered)| {
                    notice.on_attempt(*answered, Duration::from_secs_f64(*at), ttl)
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn names_come_from_the_bot_id_never_the_token() {
        let table = [
            ("123456:ABC-def_ghi", Some("123456")),
            ("7:x", Some("7")),
            (":nothing", None),
            ("abc:def", None),
            ("no-colon", None),
            ("12a4:x", None),
        ];
        for (token, id) in table {
            assert_eq!(bot_id_of(token), id, "{token}");
        }
        assert_eq!(bot_bucket("123456"), "piv-bot-123456");
        assert_eq!(registry_entry_ttl(s(5.0)), s(15.0));
        assert_eq!(registry_entry_ttl(s(0.2)), s(1.0));
        assert!(!bot_bucket(bot_id_of("42:SECRET").unwrap()).contains("SECRET"));
    }

    #[test]
    fn replicas_are_min_three_and_cluster_size_unless_overridden() {
        let table = [
            (1, None, 1),
            (2, None, 2),
            (3, None, 3),
            (5, None, 3),
            (5, Some(5), 5),
            (3, Some(1), 1),
            (3, Some(0), 1),
            (1, Some(3), 1),
            (0, None, 1),
        ];
        for (size, over, want) in table {
            assert_eq!(replicas(size, over), want, "size {size} override {over:?}");
        }
    }

    #[test]
    fn cluster_size_from_what_the_client_sees() {
        // (clustered, advertised, configured, size)
        let table = [
            (false, 0, 1, 1),
            (false, 3, 3, 1),
            (true, 3, 1, 3),
            // The INFO right after a start may list only part of the cluster.
            (true, 2, 3, 3),
            (true, 0, 0, 1),
            (true, 5, 3, 5),
        ];
        for (clustered, advertised, configured, size) in table {
            assert_eq!(
                cluster_size(clustered, advertised, configured),
                size,
                "{clustered} {advertised} {configured}"
            );
        }
    }

    #[test]
    fn renewal_schedule_and_validity() {
        // (ttl, renew every, margin, valid until for a renewal sent at 10 s)
        let table = [
            (s(5.0), s(5.0) / 3, s(0.5), s(14.5)),
            (s(3.0), s(1.0), s(0.3), s(12.7)),
            (s(1.0), s(1.0) / 3, s(0.1), s(10.9)),
            (s(0.5), s(0.5) / 3, s(0.1), s(10.4)),
        ];
        for (ttl, every, margin, until) in table {
            assert_eq!(renew_every(ttl), every, "{ttl:?}");
            assert_eq!(safety_margin(ttl), margin, "{ttl:?}");
            assert_eq!(valid_until(s(10.0), ttl), until, "{ttl:?}");
            assert!(renew_every(ttl) * 2 < ttl - safety_margin(ttl));
        }
    }

    #[test]
    fn a_lease_after_each_kind_of_renewal() {
        let ttl = s(3.0);
        let won = Held::won(7, s(0.0), ttl);
        assert_eq!(won.valid_until, s(2.7));
        // (renewal, revision after, valid until after, refused)
        let table = [
            (
                Renewal::Renewed {
                    revision: 9,
                    sent_at: s(1.0),
                },
                9,
                s(3.7),
                false,
            ),
            (Renewal::NoAnswer, 7, s(2.7), false),
            (Renewal::Refused, 7, s(2.7), true),
        ];
        for (renewal, rev, until, refused) in table {
            let after = won.after(renewal, ttl);
            assert_eq!(
                (after.revision, after.valid_until, after.refused),
                (rev, until, refused),
                "{renewal:?}"
            );
        }
        // Refused is for good: a late success does not bring it back.
        let refused = won.after(Renewal::Refused, ttl);
        let late = refused.after(
            Renewal::Renewed {
                revision: 11,
                sent_at: s(1.0),
            },
            ttl,
        );
        assert!(late.refused);
        assert!(!late.valid_at(s(0.5)));
        // A late answer to an old renewal never shortens the lease.
        let renewed = won.after(
            Renewal::Renewed {
                revision: 8,
                sent_at: s(2.0),
            },
            ttl,
        );
        let stale = renewed.after(
            Renewal::Renewed {
                revision: 9,
                sent_at: s(1.0),
            },
            ttl,
        );
        assert_eq!(stale.valid_until, s(4.7));
    }

    #[test]
    fn fencing_before_each_poll_and_offset_write() {
        let ttl = s(3.0);
        let held = Held::won(7, s(0.0), ttl);
        let me = "host-a/42/abc";
        let mine = LeaseOnServer::HeldBy {
            holder: me.into(),
            revision: 7,
        };
        let other = LeaseOnServer::HeldBy {
            holder: "host-b/7/xyz".into(),
            revision: 8,
        };
        // A lagging replica still shows the previous holder or the expiry before our
        // create: no verdict, the lease's own end decides.
        let lagging_other = LeaseOnServer::HeldBy {
            holder: "host-b/7/xyz".into(),
            revision: 5,
        };
        let lagging_gone = LeaseOnServer::Absent { revision: 6 };
        let gone = LeaseOnServer::Absent { revision: 9 };
        // (now, what the server says, may act)
        let table = [
            (s(1.0), &mine, true),
            (s(1.0), &LeaseOnServer::Unknown, true),
            (s(1.0), &other, false),
            (s(1.0), &gone, false),
            (s(1.0), &lagging_other, true),
            (s(1.0), &lagging_gone, true),
            // Past the lease's end nothing the server says helps: a frozen holder that
            // wakes up must win the lease again.
            (s(2.7), &mine, false),
            (s(2.7), &LeaseOnServer::Unknown, false),
            (s(9.0), &mine, false),
        ];
        for (now, server, ok) in table {
            assert_eq!(fence(&held, now, me, server), ok, "{now:?} {server:?}");
        }
        let refused = held.after(Renewal::Refused, ttl);
        assert!(!fence(&refused, s(0.1), me, &mine));
    }

    #[test]
    fn long_polls_under_a_lease_are_no_longer_than_it() {
        let table = [
            (25, s(5.0), 5),
            (25, s(3.0), 3),
            (2, s(5.0), 2),
            (0, s(5.0), 0),
            (25, s(0.5), 1),
            (25, s(60.0), 25),
        ];
        for (poll, ttl, want) in table {
            assert_eq!(poll_timeout_under_lease(poll, ttl), want, "{poll} {ttl:?}");
        }
        assert_eq!(standby_retry(s(5.0)), s(1.25));
        assert_eq!(standby_retry(s(0.1)), s(0.05));
    }
}
