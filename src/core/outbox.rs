//! The order in which an instance's queued chat messages go out: which entries of the
//! on-disk outbox form the next send. Replies to commands go ahead of notifications;
//! within each kind the order is the order they were queued; a backlog of notifications
//! goes out as one coalesced message (in order) rather than one message per event.

/// What a queued message is, for ordering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MessageKind {
    /// An answer to a chat command: goes first.
    Reply,
    /// A run event.
    Notification,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Reply => "reply",
            MessageKind::Notification => "notification",
        }
    }

    pub fn parse(text: &str) -> Option<MessageKind> {
        match text {
            "reply" => Some(MessageKind::Reply),
            "notification" => Some(MessageKind::Notification),
            _ => None,
        }
    }
}

/// One queued message as the ordering sees it: its sequence number (the queue order),
/// its kind and the tag it is sent under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<'a> {
    pub seq: u64,
    pub kind: MessageKind,
    pub tag: &'a str,
    /// Carries buttons (an escalation): sent alone, so its buttons sit under it.
    pub alone: bool,
}

/// The sequence numbers that make up the next send, in the order their bodies are
/// joined: the oldest reply alone if any reply is waiting; else the oldest notification
/// and every later one with the same tag up to the next tag change (at most `max_batch`),
/// stopping before a message with buttons; a message with buttons goes alone.
/// `entries` may come in any order.
pub fn next_batch(entries: &[Queued<'_>], max_batch: usize) -> Vec<u64> {
    let mut sorted: Vec<&Queued<'_>> = entries.iter().collect();
    sorted.sort_by_key(|q| (q.kind, q.seq));
    let Some(first) = sorted.first() else {
        return Vec::new();
    };
    if first.kind == MessageKind::Reply || first.alone {
        return vec![first.seq];
    }
    sorted
        .iter()
        .take_while(|q| q.tag == first.tag && !q.alone)
        .take(max_batch.max(1))
        .map(|q| q.seq)
        .collect()
}

/// The sequence number for a new entry, after every one already queued.
pub fn next_seq(existing: impl IntoIterator<Item = u64>) -> u64 {
    existing.into_iter().max().map_or(1, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageKind::*;

    fn q(seq: u64, kind: MessageKind, tag: &str) -> Queued<'_> {
        Queued {
            seq,
            kind,
            tag,
            alone: false,
        }
    }

    fn with_buttons(seq: u64, tag: &str) -> Queued<'_> {
        Queued {
            alone: true,
            ..q(seq, Notification, tag)
        }
    }

    #[test]
    fn next_batch_table() {
        let cases: Vec<(Vec<Queued<'_>>, usize, Vec<u64>)> = vec![
            (vec![], 10, vec![]),
            // A message with buttons goes alone, and ends the batch before it.
            (
                vec![
                    q(1, Notification, "a"),
                    with_buttons(2, "a"),
                    q(3, Notification, "a"),
                ],
                10,
                vec![1],
            ),
            (
                vec![with_buttons(2, "a"), q(3, Notification, "a")],
                10,
                vec![2],
            ),
            // One notification.
            (vec![q(1, Notification, "a")], 10, vec![1]),
            // A backlog coalesces in queue order, whatever the listing order.
            (
                vec![
                    q(3, Notification, "a"),
                    q(1, Notification, "a"),
                    q(2, Notification, "a"),
                ],
                10,
                vec![1, 2, 3],
            ),
            // A reply goes first, alone, even when queued after notifications.
            (
                vec![
                    q(1, Notification, "a"),
                    q(2, Notification, "a"),
                    q(3, Reply, "a"),
                ],
                10,
                vec![3],
            ),
            // Two replies: the older first.
            (vec![q(5, Reply, "a"), q(4, Reply, "b")], 10, vec![4]),
            // A tag change ends the batch (a message is sent under one tag).
            (
                vec![
                    q(1, Notification, "a"),
                    q(2, Notification, "old"),
                    q(3, Notification, "a"),
                ],
                10,
                vec![1],
            ),
            // The batch is capped.
            (
                vec![
                    q(1, Notification, "a"),
                    q(2, Notification, "a"),
                    q(3, Notification, "a"),
                ],
                2,
                vec![1, 2],
            ),
        ];
        for (entries, max, want) in cases {
            assert_eq!(next_batch(&entries, max), want, "{entries:?}");
        }
    }

    #[test]
    fn next_seq_follows_the_last() {
        assert_eq!(next_seq([]), 1);
        assert_eq!(next_seq([3, 9, 4]), 10);
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [Reply, Notification] {
            assert_eq!(MessageKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(MessageKind::parse("x"), None);
    }
}
