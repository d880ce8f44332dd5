//! Forum topics (a topic per project in a supergroup with topics on): the topic's name and
//! icon colour, where a message goes (`message_thread_id`), which project a command typed
//! in a topic is for, and what a topic error from Telegram asks piv to do.

use std::collections::BTreeMap;

/// The icon colours `createForumTopic` accepts (Bot API: "must be one of …").
pub const ICON_COLORS: [u32; 6] = [0x6FB9F0, 0xFFD67E, 0xCB86DB, 0x8EEE98, 0xFF93B2, 0xFB6F5F];

/// The thread id Telegram gives the General topic. It must never be sent as a
/// `message_thread_id`: a message for General omits the field.
pub const GENERAL_THREAD_ID: i64 = 1;

/// Topic names are at most 128 characters (Bot API `createForumTopic`).
const TOPIC_NAME_CHARS: usize = 128;

/// The topic of a project: named after its prefix.
pub fn topic_name(prefix: &str) -> String {
    prefix.chars().take(TOPIC_NAME_CHARS).collect()
}

/// The icon colour of a topic, from a stable hash of its name (FNV-1a, so it is the same on
/// every machine and every release).
pub fn icon_color(name: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    ICON_COLORS[(hash % ICON_COLORS.len() as u64) as usize]
}

/// The `message_thread_id` to send with: the project's topic, or none for General.
pub fn thread_for_send(topic: Option<i64>) -> Option<i64> {
    topic.filter(|id| *id != GENERAL_THREAD_ID && *id > 0)
}

/// The topic an incoming message was typed in. A message in General can carry a
/// `message_thread_id` too (the message it replies to); only `is_topic_message` says it is
/// inside a topic.
pub fn topic_of_message(message_thread_id: Option<i64>, is_topic_message: bool) -> Option<i64> {
    if is_topic_message {
        thread_for_send(message_thread_id)
    } else {
        None
    }
}

/// The project (prefix) whose topic a message was typed in, from the known topics
/// (prefix → thread id) of that chat.
pub fn project_of_topic(topic: Option<i64>, topics: &BTreeMap<String, i64>) -> Option<&str> {
    let topic = topic?;
    topics
        .iter()
        .find(|(_, id)| **id == topic)
        .map(|(prefix, _)| prefix.as_str())
}

/// What a failed send or topic call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicRecovery {
    /// The topic was deleted: create it again and resend.
    Recreate,
    /// The topic was closed: reopen it and resend.
    Reopen,
    /// The bot may not manage topics: send to General with `[prefix] ` tags (said once).
    FallBackToGeneral,
}

/// The recovery a Telegram error description calls for, if it is about topics.
pub fn topic_recovery(description: &str) -> Option<TopicRecovery> {
    let d = description.to_ascii_lowercase();
    if d.contains("message thread not found") || d.contains("topic_deleted") {
        Some(TopicRecovery::Recreate)
    } else if d.contains("topic_closed") {
        Some(TopicRecovery::Reopen)
    } else if d.contains("not enough rights to create a topic")
        || d.contains("not enough rights to manage topics")
        || d.contains("chat_admin_required")
        || d.contains("topics_disabled")
    {
        Some(TopicRecovery::FallBackToGeneral)
    } else {
        None
    }
}

/// What an instance knows about where its project's messages go in its own chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// Not found out yet (`getChat`, the topic store, `createForumTopic` come first).
    Unknown,
    /// Topics are off (`PIV_TELEGRAM_TOPICS=off`) or the chat has none: as before issue 14.
    NoTopics,
    /// The project's topic.
    Topic(i64),
    /// The chat has topics but the bot may not manage them: General, tagged.
    General,
}

/// Where one message goes and whether it carries the `[prefix] ` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The `message_thread_id` to send (none: the chat itself, or General).
    pub thread: Option<i64>,
    /// Whether the message is tagged with its project's prefix. Inside the project's own
    /// topic the topic names the project; anywhere else the tag does.
    pub tagged: bool,
}

/// Where a message goes. A reply to a command typed in a topic (`reply_thread`) goes back
/// into that topic, tagged (it may be about another project); everything else follows the
/// project's state. `None` while the state is unknown.
pub fn placement(state: TopicState, reply_thread: Option<i64>) -> Option<Placement> {
    if let Some(thread) = thread_for_send(reply_thread) {
        return Some(Placement {
            thread: Some(thread),
            tagged: true,
        });
    }
    match state {
        TopicState::Unknown => None,
        TopicState::Topic(id) => Some(Placement {
            thread: thread_for_send(Some(id)),
            tagged: thread_for_send(Some(id)).is_none(),
        }),
        TopicState::NoTopics | TopicState::General => Some(Placement {
            thread: None,
            tagged: true,
        }),
    }
}

/// The one-time notice when the bot may not manage topics.
pub fn fallback_notice() -> String {
    "⚠️ I may not manage topics in this chat, so my messages go to General, tagged. \
     Make the bot an admin with the <b>Manage Topics</b> right to give each project its own \
     topic."
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_table() {
        use TopicState::*;
        let at = |thread, tagged| Some(Placement { thread, tagged });
        // (state, thread of the command replied to, placement)
        let cases = [
            (Unknown, None, None),
            (Unknown, Some(9), at(Some(9), true)),
            (NoTopics, None, at(None, true)),
            (General, None, at(None, true)),
            (Topic(5), None, at(Some(5), false)),
            // A reply goes where the command was typed, tagged.
            (Topic(5), Some(9), at(Some(9), true)),
            (NoTopics, Some(9), at(Some(9), true)),
            // General's id is never a thread to send to.
            (Topic(5), Some(1), at(Some(5), false)),
            (Topic(1), None, at(None, true)),
        ];
        for (state, reply, want) in cases {
            assert_eq!(placement(state, reply), want, "{state:?} {reply:?}");
        }
    }

    #[test]
    fn icon_colours_are_stable_and_from_the_allowed_set() {
        for name in ["alpha", "beta", "gamma", "", "日本語"] {
            let c = icon_color(name);
            assert!(ICON_COLORS.contains(&c), "{name}: {c:#x}");
            assert_eq!(c, icon_color(name));
        }
        // Pinned, so a change of hash (which would repaint every user's topics) is seen.
        assert_eq!(icon_color("alpha"), 0x8EEE98);
        assert_eq!(icon_color("beta"), 0xFB6F5F);
        let spread: std::collections::BTreeSet<u32> =
            (0..60).map(|i| icon_color(&format!("p{i}"))).collect();
        assert!(
            spread.len() >= 4,
            "names spread over the palette: {spread:?}"
        );
    }

    #[test]
    fn topic_names_are_the_prefix_cut_to_the_limit() {
        assert_eq!(topic_name("beta"), "beta");
        assert_eq!(topic_name(&"é".repeat(200)).chars().count(), 128);
    }

    #[test]
    fn general_is_never_a_thread_to_send_to() {
        // (stored topic, thread sent)
        let cases = [
            (None, None),
            (Some(1), None),
            (Some(0), None),
            (Some(-5), None),
            (Some(2), Some(2)),
            (Some(77), Some(77)),
        ];
        for (topic, sent) in cases {
            assert_eq!(thread_for_send(topic), sent, "{topic:?}");
        }
    }

    #[test]
    fn only_topic_messages_are_in_a_topic() {
        // (message_thread_id, is_topic_message, topic)
        let cases = [
            (Some(9), true, Some(9)),
            (Some(9), false, None), // a reply in General carries the replied-to thread
            (None, true, None),
            (Some(1), true, None),
            (None, false, None),
        ];
        for (thread, is_topic, want) in cases {
            assert_eq!(topic_of_message(thread, is_topic), want);
        }
    }

    #[test]
    fn a_topic_names_its_project() {
        let topics: BTreeMap<String, i64> =
            [("alpha".to_string(), 5), ("beta".to_string(), 9)].into();
        assert_eq!(project_of_topic(Some(9), &topics), Some("beta"));
        assert_eq!(project_of_topic(Some(5), &topics), Some("alpha"));
        assert_eq!(project_of_topic(Some(7), &topics), None);
        assert_eq!(project_of_topic(None, &topics), None);
    }

    #[test]
    fn topic_errors_map_to_their_recovery() {
        let cases = [
            (
                "Bad Request: message thread not found",
                Some(TopicRecovery::Recreate),
            ),
            ("Bad Request: TOPIC_DELETED", Some(TopicRecovery::Recreate)),
            ("Bad Request: TOPIC_CLOSED", Some(TopicRecovery::Reopen)),
            (
                "Bad Request: not enough rights to create a topic",
                Some(TopicRecovery::FallBackToGeneral),
            ),
            (
                "Bad Request: CHAT_ADMIN_REQUIRED",
                Some(TopicRecovery::FallBackToGeneral),
            ),
            ("Bad Request: chat not found", None),
            ("Too Many Requests: retry after 5", None),
        ];
        for (description, want) in cases {
            assert_eq!(topic_recovery(description), want, "{description}");
        }
    }
}
