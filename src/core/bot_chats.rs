//! Which bot and which chat an instance belongs to, and what that decides: the bot id in
//! a token, the chats a bot owner answers, and which instances a chat sees and commands.
//!
//! Ownership (the owner lock, the stored offset, the send budget) is per bot, keyed by the
//! bot id: the digits before `:` in the token, which Telegram makes public anyway (it is
//! the bot's user id) — never the token itself. Several instances can share a bot and
//! report to different chats: the owner of that bot answers every chat some live
//! instance of the bot reports to, and each chat sees only its own instances.

use crate::core::commands::Route;
use crate::core::ledger::{CostReport, ProjectCost};
use crate::core::registry::{resolve_prefix, Instance};

/// The bot an instance uses and the chat it reports to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BotChat {
    pub bot_id: u64,
    pub chat_id: i64,
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadToken {
    #[error(
        "TELEGRAM_BOT_TOKEN does not start with a numeric bot id before ':' (a token looks like 123456789:AA…; copy it again from @BotFather)"
    )]
    NoBotId,
    #[error(
        "TELEGRAM_BOT_TOKEN has nothing after the bot id and ':' (copy it again from @BotFather)"
    )]
    NoSecret,
}

/// The bot id of `token`: the decimal digits before the first `:` (what names the bot's
/// directory under `$PIV_HOME/bots/`). The error never quotes the token.
pub fn bot_id_of(token: &str) -> Result<u64, BadToken> {
    let (id, secret) = token.trim().split_once(':').ok_or(BadToken::NoBotId)?;
    if id.is_empty() || id.len() > 19 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadToken::NoBotId);
    }
    let id: u64 = id.parse().map_err(|_| BadToken::NoBotId)?;
    if id == 0 {
        return Err(BadToken::NoBotId);
    }
    if secret.is_empty() {
        return Err(BadToken::NoSecret);
    }
    Ok(id)
}

/// The instance's bot and chat as its registry entry records them (`botId`, `chatId`);
/// `None` for an entry without Telegram, or written by an older piv or the reference.
pub fn bot_chat_of(instance: &Instance) -> Option<BotChat> {
    Some(BotChat {
        bot_id: instance.bot_id?,
        chat_id: instance.chat_id?,
    })
}

/// The chats the owner of `own.bot_id` answers: its own chat, then every chat that some
/// live instance of the same bot reports to (sorted, without repeats). Instances of
/// other bots, and entries that record no bot, add nothing.
pub fn allowed_chats(own: BotChat, live: &[Instance]) -> Vec<i64> {
    let mut others: Vec<i64> = live
        .iter()
        .filter_map(bot_chat_of)
        .filter(|bc| bc.bot_id == own.bot_id && bc.chat_id != own.chat_id)
        .map(|bc| bc.chat_id)
        .collect();
    others.sort_unstable();
    others.dedup();
    std::iter::once(own.chat_id).chain(others).collect()
}

/// Whether an instance is seen (listed, routed to) in `chat` of the owner `own`: an
/// instance of the same bot reporting to that chat; an entry that records no bot (no
/// Telegram, an older piv, the reference) only in the owner's own chat, as before bots
/// were told apart. Instances of other bots are never seen.
pub fn seen_in_chat(instance: &Instance, own: BotChat, chat_id: i64) -> bool {
    match bot_chat_of(instance) {
        Some(bc) => bc.bot_id == own.bot_id && bc.chat_id == chat_id,
        None => instance.bot_id.is_none_or(|b| b == own.bot_id) && chat_id == own.chat_id,
    }
}

/// The instances `chat` sees among `others` (the owner's own entry excluded by the caller).
pub fn instances_in_chat(others: &[Instance], own: BotChat, chat_id: i64) -> Vec<Instance> {
    others
        .iter()
        .filter(|i| seen_in_chat(i, own, chat_id))
        .cloned()
        .collect()
}

/// [`crate::core::commands::route`] for a chat the owner does not report to: only the
/// chat's instances are candidates. No target: the chat's one instance, or ask which.
pub fn route_among<'a>(target: Option<&str>, in_chat: &'a [Instance]) -> Route<'a> {
    let mut known: Vec<String> = in_chat.iter().map(|i| i.prefix.clone()).collect();
    known.sort();
    known.dedup();
    match target.map(str::trim).filter(|t| !t.is_empty()) {
        None => match in_chat {
            [one] => Route::Remote(one),
            _ => Route::AskWhich { prefixes: known },
        },
        Some(t) => {
            let prefixes: Vec<&str> = in_chat.iter().map(|i| i.prefix.as_str()).collect();
            match resolve_prefix(&prefixes, t) {
                Ok(i) => Route::Remote(&in_chat[i]),
                Err(_) => Route::UnknownPrefix {
                    prefix: t.to_string(),
                    known,
                },
            }
        }
    }
}

/// The part of the home's cost report a chat the owner does not report to may see: the
/// projects named `visible` (that chat's instances), with the total summed over them
/// alone.
pub fn cost_seen_in_chat(report: CostReport, visible: &[String]) -> CostReport {
    let projects: Vec<ProjectCost> = report
        .projects
        .into_iter()
        .filter(|p| visible.contains(&p.project))
        .collect();
    let mut total = ProjectCost {
        project: report.total.project,
        since: report.since.as_ref().map(|_| 0.0),
        ..ProjectCost::default()
    };
    for p in &projects {
        total.today += p.today;
        total.last7_days += p.last7_days;
        total.month += p.month;
        total.since = total.since.map(|s| s + p.since.unwrap_or(0.0));
        total.sessions += p.sessions;
        total.unknown_cost_sessions += p.unknown_cost_sessions;
        for (model, cost) in &p.by_model {
            *total.by_model.entry(model.clone()).or_default() += cost;
        }
    }
    CostReport {
        projects,
        total,
        ..report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(prefix: &str, bot: Option<u64>, chat: Option<i64>) -> Instance {
        let mut i = Instance::new(prefix, format!("/p/{prefix}"), 1, "t", "m");
        i.bot_id = bot;
        i.chat_id = chat;
        i
    }

    const OWN: BotChat = BotChat {
        bot_id: 11,
        chat_id: 100,
    };

    #[test]
    fn bot_id_table() {
        let cases: [(&str, Result<u64, BadToken>); 11] = [
            ("123456:AAsecret", Ok(123_456)),
            ("  42:x ", Ok(42)),
            ("7:a:b", Ok(7)),
            ("abc:secret", Err(BadToken::NoBotId)),
            (":secret", Err(BadToken::NoBotId)),
            ("12a:secret", Err(BadToken::NoBotId)),
            ("-12:secret", Err(BadToken::NoBotId)),
            ("0:secret", Err(BadToken::NoBotId)),
            ("nocolon", Err(BadToken::NoBotId)),
            ("99999999999999999999:x", Err(BadToken::NoBotId)),
            ("123:", Err(BadToken::NoSecret)),
        ];
        for (token, want) in cases {
            assert_eq!(bot_id_of(token), want, "{token:?}");
        }
        // The error names the variable, never the token.
        let text = bot_id_of("abc:super-secret").unwrap_err().to_string();
        assert!(!text.contains("super-secret"), "{text}");
    }

    #[test]
    fn allowed_chats_table() {
        let cases: Vec<(Vec<Instance>, Vec<i64>)> = vec![
            (vec![], vec![100]),
            // The owner's own entry and another instance of its chat add nothing new.
            (vec![entry("a", Some(11), Some(100))], vec![100]),
            // Another chat of the same bot, once however many instances report there.
            (
                vec![
                    entry("b", Some(11), Some(-5)),
                    entry("c", Some(11), Some(-5)),
                    entry("d", Some(11), Some(7)),
                ],
                vec![100, -5, 7],
            ),
            // Another bot's chats, and entries without a bot, are not ours to answer.
            (
                vec![
                    entry("e", Some(12), Some(200)),
                    entry("f", None, None),
                    entry("g", None, Some(300)),
                ],
                vec![100],
            ),
        ];
        for (live, want) in cases {
            assert_eq!(allowed_chats(OWN, &live), want, "{live:?}");
        }
    }

    #[test]
    fn seen_in_chat_table() {
        // (entry, chat asked about, seen)
        let cases = [
            (entry("a", Some(11), Some(100)), 100, true),
            (entry("a", Some(11), Some(100)), 7, false),
            (entry("b", Some(11), Some(7)), 7, true),
            (entry("b", Some(11), Some(7)), 100, false),
            // Another bot: never, even in a chat id both bots use.
            (entry("c", Some(12), Some(100)), 100, false),
            // No bot recorded (no Telegram, an older piv): the owner's own chat only.
            (entry("d", None, None), 100, true),
            (entry("d", None, None), 7, false),
            (entry("e", None, Some(7)), 7, false),
            (entry("f", Some(11), None), 100, true),
            (entry("g", Some(12), None), 100, false),
        ];
        for (instance, chat, want) in cases {
            assert_eq!(
                seen_in_chat(&instance, OWN, chat),
                want,
                "{instance:?} in {chat}"
            );
        }
        let all = vec![
            entry("a", Some(11), Some(7)),
            entry("b", Some(11), Some(100)),
            entry("c", Some(11), Some(7)),
        ];
        let prefixes = |v: Vec<Instance>| v.into_iter().map(|i| i.prefix).collect::<Vec<_>>();
        assert_eq!(prefixes(instances_in_chat(&all, OWN, 7)), ["a", "c"]);
        assert_eq!(prefixes(instances_in_chat(&all, OWN, 100)), ["b"]);
    }

    #[test]
    fn route_among_table() {
        let one = vec![entry("solo", Some(11), Some(7))];
        let two = vec![entry("b", Some(11), Some(7)), entry("a", Some(11), Some(7))];
        let remote = |r: Route<'_>| match r {
            Route::Remote(i) => Some(i.prefix.clone()),
            _ => None,
        };
        assert_eq!(remote(route_among(None, &one)), Some("solo".into()));
        assert_eq!(
            remote(route_among(Some(" solo "), &one)),
            Some("solo".into())
        );
        assert_eq!(remote(route_among(Some("A"), &two)), Some("a".into()));
        assert_eq!(
            route_among(None, &two),
            Route::AskWhich {
                prefixes: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(route_among(None, &[]), Route::AskWhich { prefixes: vec![] });
        assert_eq!(
            route_among(Some("zzz"), &two),
            Route::UnknownPrefix {
                prefix: "zzz".into(),
                known: vec!["a".into(), "b".into()]
            }
        );
    }

    #[test]
    fn cost_seen_in_chat_keeps_the_chats_projects_and_their_total() {
        let cost = |project: &str, today: f64, model: &str| ProjectCost {
            project: project.into(),
            today,
            last7_days: today * 2.0,
            month: today * 3.0,
            since: None,
            sessions: 1,
            unknown_cost_sessions: 0,
            by_model: [(model.to_string(), today * 3.0)].into(),
        };
        let report = CostReport {
            today: "2026-11-30".into(),
            since: None,
            projects: vec![
                cost("a", 1.0, "opus"),
                cost("b", 2.0, "opus"),
                cost("c", 4.0, "sonnet"),
            ],
            total: cost("total", 7.0, "opus"),
        };
        let cases: Vec<(Vec<&str>, Vec<&str>, f64, u32)> = vec![
            (vec!["b", "c"], vec!["b", "c"], 6.0, 2),
            (vec!["a"], vec!["a"], 1.0, 1),
            // A prefix of a name is not the name.
            (vec!["c2", "x"], vec![], 0.0, 0),
            (vec![], vec![], 0.0, 0),
        ];
        for (visible, want, today, sessions) in cases {
            let visible: Vec<String> = visible.into_iter().map(String::from).collect();
            let seen = cost_seen_in_chat(report.clone(), &visible);
            let names: Vec<&str> = seen.projects.iter().map(|p| p.project.as_str()).collect();
            assert_eq!(names, want, "{visible:?}");
            assert_eq!(seen.total.project, "total");
            assert_eq!(seen.total.today, today, "{visible:?}");
            assert_eq!(seen.total.month, today * 3.0, "{visible:?}");
            assert_eq!(seen.total.sessions, sessions, "{visible:?}");
            let by_model: f64 = seen.total.by_model.values().sum();
            assert_eq!(by_model, today * 3.0, "{visible:?}");
        }
    }
}
