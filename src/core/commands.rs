//! Telegram commands: parsing a chat message into a typed command and deciding where it goes (pure routing).
//!
//! The bot owner's actor feeds every allowed chat message through [`parse_command`], then
//! for `/go`, `/pause` and `/resume` asks [`route`] whether to act locally, enqueue a
//! signal for another instance, or ask the human which instance was meant. The reply
//! texts live here too so the actor never builds user-visible strings itself. Replies
//! are Telegram HTML: anything the human typed is escaped.

use crate::core::control::ControlAction;
use crate::core::registry::{resolve_prefix, Instance};
use crate::core::telegram_text::escape_html;

/// Which instance(s) `/status` is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusTarget {
    /// No argument: the owner's own project.
    This,
    /// `/status all`.
    All,
    /// `/status <prefix>`.
    Prefix(String),
}

/// A chat command, with its optional `[prefix]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status(StatusTarget),
    /// A control action the chat offers (`/go`, `/pause`, `/resume`; see
    /// [`ControlAction::in_chat`]; and `/create_prd`, `/end_prd` as the relay's
    /// `PrdStart`, `PrdEnd`) and the instance it is for.
    Control(ControlAction, Option<String>),
    /// `/help`, and `/start` (what Telegram sends when a chat opens the bot).
    Help,
    /// `/cost [prefix]`: the cost ledger of the home (today, 7 days, the month), for the
    /// projects whose prefix starts with the argument, or all.
    Cost(Option<String>),
    /// `/preflight [prefix]`: the manifest's credential and environment check.
    Preflight(Option<String>),
    /// `/logs [prefix] [n]`: the last n lines of that instance's log, redacted.
    Logs(Option<String>, Option<usize>),
    /// A slash command piv does not know (its name, without `/` or `@bot`).
    Unknown(String),
}

/// Parses a chat message. `None` when it is not a command, or is a command addressed to
/// another bot (`/status@OtherBot`) when `bot_username` is known. Command names and
/// `all` are matched case-insensitively; the argument is trimmed.
pub fn parse_command(text: &str, bot_username: Option<&str>) -> Option<Command> {
    let text = text.trim();
    let rest = text.strip_prefix('/')?;
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, addressee) = match head.split_once('@') {
        Some((n, bot)) => (n, Some(bot)),
        None => (head, None),
    };
    if let (Some(addressee), Some(me)) = (addressee, bot_username) {
        if !addressee.eq_ignore_ascii_case(me.trim_start_matches('@')) {
            return None;
        }
    }
    if name.is_empty() {
        return None;
    }
    let arg = (!args.is_empty()).then(|| args.to_string());
    let command = match name.to_ascii_lowercase().as_str() {
        "status" => Command::Status(match arg {
            None => StatusTarget::This,
            Some(a) if a.eq_ignore_ascii_case("all") => StatusTarget::All,
            Some(a) => StatusTarget::Prefix(a),
        }),
        "help" | "start" => Command::Help,
        "cost" => Command::Cost(arg),
        "preflight" => Command::Preflight(arg),
        "logs" => {
            // `/logs`, `/logs 50`, `/logs beta`, `/logs beta 50`, in either order.
            let mut prefix = None;
            let mut count = None;
            for word in args.split_whitespace() {
                match word.parse::<usize>() {
                    Ok(n) if count.is_none() => count = Some(n),
                    _ if prefix.is_none() => prefix = Some(word.to_string()),
                    _ => {}
                }
            }
            Command::Logs(prefix, count)
        }
        "create_prd" => Command::Control(ControlAction::PrdStart, arg),
        "end_prd" => Command::Control(ControlAction::PrdEnd, arg),
        lower => match ControlAction::from_name(lower).filter(|a| a.in_chat()) {
            Some(action) => Command::Control(action, arg),
            None => Command::Unknown(name.to_string()),
        },
    };
    Some(command)
}

/// A command typed inside a project's forum topic, as if it named that project: `/pause`
/// in beta's topic is `/pause beta`. A command that names a project keeps it; `/status
/// all`, `/help` and the rest are unchanged.
pub fn in_topic_of(command: Command, project: &str) -> Command {
    match command {
        Command::Control(action, None) => Command::Control(action, Some(project.to_string())),
        Command::Status(StatusTarget::This) => {
            Command::Status(StatusTarget::Prefix(project.to_string()))
        }
        Command::Cost(None) => Command::Cost(Some(project.to_string())),
        Command::Preflight(None) => Command::Preflight(Some(project.to_string())),
        Command::Logs(None, n) => Command::Logs(Some(project.to_string()), n),
        other => other,
    }
}

/// Where a command for an instance goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route<'a> {
    /// The owner's own instance: handle it directly.
    Local,
    /// Another live instance: enqueue a signal on its queue (or probe its files).
    Remote(&'a Instance),
    /// No prefix while several instances run: ask which one (all prefixes, sorted).
    AskWhich { prefixes: Vec<String> },
    /// No single instance has that prefix (known prefixes, sorted).
    UnknownPrefix { prefix: String, known: Vec<String> },
}

/// Decides where `/go|/pause|/resume|/status [target]` goes. `others` are the other live
/// registered instances (an entry with the owner's own prefix is ignored). The target is
/// trimmed and then found by [`resolve_prefix`]'s rule; a prefix that matches several
/// instances ignoring case, and none exactly, is unknown.
pub fn route<'a>(target: Option<&str>, own_prefix: &str, others: &'a [Instance]) -> Route<'a> {
    let others: Vec<&'a Instance> = others.iter().filter(|i| i.prefix != own_prefix).collect();
    let mut known: Vec<String> = others.iter().map(|i| i.prefix.clone()).collect();
    known.push(own_prefix.to_string());
    known.sort();
    known.dedup();
    match target.map(str::trim).filter(|t| !t.is_empty()) {
        None if known.len() <= 1 => Route::Local,
        None => Route::AskWhich { prefixes: known },
        Some(t) => {
            // Own first: index 0 is this instance, index i is `others[i - 1]`.
            let candidates: Vec<&str> = std::iter::once(own_prefix)
                .chain(others.iter().map(|i| i.prefix.as_str()))
                .collect();
            match resolve_prefix(&candidates, t) {
                Ok(0) => Route::Local,
                Ok(i) => Route::Remote(others[i - 1]),
                Err(_) => Route::UnknownPrefix {
                    prefix: t.to_string(),
                    known,
                },
            }
        }
    }
}

/// Whether a message from `chat_id` may command this bot (others are ignored and logged).
pub fn is_allowed_chat(chat_id: i64, allowed: &[i64]) -> bool {
    allowed.contains(&chat_id)
}

/// The command menu registered with `setMyCommands`: (command, description).
pub fn command_menu() -> Vec<(&'static str, &'static str)> {
    vec![
        ("status", "Status (or /status all, /status <prefix>)"),
        (
            "go",
            "Start execution (or /go <prefix> for a specific project)",
        ),
        ("pause", "Pause after the current step (or /pause <prefix>)"),
        ("resume", "Resume execution (or /resume <prefix>)"),
        ("cost", "What the projects spent: today, 7 days, this month"),
        (
            "preflight",
            "Credential and environment check (or /preflight <prefix>)",
        ),
        ("logs", "The last log lines (or /logs <prefix> <n>)"),
        ("create_prd", "Start PRD creation conversation"),
        ("end_prd", "End active PRD creation session"),
        ("help", "List the commands"),
    ]
}

/// Confirms a command forwarded to another instance: `⏸ Sent /pause signal to [b]`.
pub fn reply_sent(action: ControlAction, prefix: &str) -> String {
    format!(
        "{} Sent /{} signal to [{}]",
        action.icon(),
        action.command_name(),
        escape_html(prefix)
    )
}

/// Asks which instance a prefix-less command was meant for.
pub fn reply_ask_which(action: ControlAction, prefixes: &[String]) -> String {
    let list = prefixes
        .iter()
        .map(|p| escape_html(p))
        .collect::<Vec<_>>()
        .join(", ");
    let example = prefixes.first().map(|p| escape_html(p)).unwrap_or_default();
    format!(
        "❓ Several projects are running: {list}.\nSay which one: /{cmd} &lt;prefix&gt;, e.g. /{cmd} {example}",
        cmd = action.command_name()
    )
}

/// Names the prefixes that do exist when the asked one does not.
pub fn reply_unknown_prefix(prefix: &str, known: &[String]) -> String {
    let mut text = format!(
        "⚠️ No active instance with prefix \"{}\".",
        escape_html(prefix)
    );
    if known.is_empty() {
        text.push_str(" No instance is running.");
    } else {
        let list = known
            .iter()
            .map(|p| escape_html(p))
            .collect::<Vec<_>>()
            .join(", ");
        text.push_str(&format!(" Known: {list}."));
    }
    text
}

/// Whether a command sent at `sent_unix` (the message's `date`) is too old to act on at
/// `now_unix`: typical after the first start, when Telegram hands over up to 24 h of old
/// updates. A message without a date is taken as fresh; a date in the future (clock
/// skew) as sent now.
pub fn is_stale(sent_unix: Option<i64>, now_unix: i64, max_age_secs: u64) -> bool {
    sent_unix.is_some_and(|sent| now_unix.saturating_sub(sent) > max_age_secs as i64)
}

/// Whether a command changes what an instance does (and so must not be acted on when
/// stale); `/status` and `/help` are always answered.
pub fn acts(command: &Command) -> bool {
    matches!(command, Command::Control(..))
}

/// Says that a stale command was not acted on, and why: when it was sent.
pub fn reply_stale(
    action: ControlAction,
    target: Option<&str>,
    sent_unix: i64,
    now_unix: i64,
    max_age_secs: u64,
) -> String {
    let command = match target {
        Some(t) => format!("/{} {}", action.command_name(), escape_html(t)),
        None => format!("/{}", action.command_name()),
    };
    let at = chrono::DateTime::from_timestamp(sent_unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| sent_unix.to_string());
    format!(
        "⏭ Ignored {command}: it was sent {} ago ({at}), more than {max_age_secs}s \
         (PIV_STALE_COMMAND_SECS) before piv read it. Send it again to act on it.",
        age_text(now_unix.saturating_sub(sent_unix).max(0) as u64)
    )
}

/// `45s`, `12m`, `3h 5m`, `2d 4h`.
fn age_text(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Answers a slash command piv does not know.
pub fn reply_unknown_command(name: &str) -> String {
    format!(
        "⚠️ Unknown command /{}. Send /help for the list.",
        escape_html(name)
    )
}

/// `/status <prefix>` could not read that instance's manifest.
pub fn reply_status_unreadable(reason: &str) -> String {
    format!("⚠️ Could not read status: {}", escape_html(reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_and_logs_parse() {
        let cases = [
            ("/preflight", Command::Preflight(None)),
            ("/preflight beta", Command::Preflight(Some("beta".into()))),
            ("/logs", Command::Logs(None, None)),
            ("/logs 50", Command::Logs(None, Some(50))),
            ("/logs beta", Command::Logs(Some("beta".into()), None)),
            (
                "/logs beta 50",
                Command::Logs(Some("beta".into()), Some(50)),
            ),
            (
                "/logs 50 beta",
                Command::Logs(Some("beta".into()), Some(50)),
            ),
        ];
        for (typed, want) in cases {
            assert_eq!(parse_command(typed, None), Some(want), "{typed}");
        }
        let menu: Vec<&str> = command_menu().iter().map(|(c, _)| *c).collect();
        assert!(menu.contains(&"preflight") && menu.contains(&"logs"));
    }

    #[test]
    fn the_prd_relay_commands_parse_and_go_to_the_topics_project() {
        use ControlAction::{PrdEnd, PrdStart};
        // (typed, parsed, typed in beta's topic)
        let cases = [
            (
                "/create_prd",
                Command::Control(PrdStart, None),
                Command::Control(PrdStart, Some("beta".into())),
            ),
            (
                "/create_prd b",
                Command::Control(PrdStart, Some("b".into())),
                Command::Control(PrdStart, Some("b".into())),
            ),
            (
                "/END_PRD",
                Command::Control(PrdEnd, None),
                Command::Control(PrdEnd, Some("beta".into())),
            ),
            (
                "/end_prd@pivbot alpha",
                Command::Control(PrdEnd, Some("alpha".into())),
                Command::Control(PrdEnd, Some("alpha".into())),
            ),
            // The wire names are not commands.
            (
                "/prd_start",
                Command::Unknown("prd_start".into()),
                Command::Unknown("prd_start".into()),
            ),
            (
                "/prd_text hi",
                Command::Unknown("prd_text".into()),
                Command::Unknown("prd_text".into()),
            ),
        ];
        for (typed, parsed, in_topic) in cases {
            let got = parse_command(typed, Some("pivbot")).unwrap();
            assert_eq!(got, parsed, "{typed}");
            assert_eq!(in_topic_of(got, "beta"), in_topic, "{typed}");
        }
        assert!(acts(&Command::Control(PrdStart, None)));
        assert_eq!(
            reply_sent(PrdStart, "b"),
            "📝 Sent /create_prd signal to [b]"
        );
        let menu: Vec<&str> = command_menu().iter().map(|(c, _)| *c).collect();
        assert!(menu.contains(&"create_prd") && menu.contains(&"end_prd"));
        let help = crate::core::telegram_text::format_help();
        assert!(
            help.contains("/create_prd") && help.contains("/end_prd"),
            "{help}"
        );
    }

    #[test]
    fn a_command_in_a_topic_is_for_its_project() {
        let b = Some("beta".to_string());
        // (typed in beta's topic, taken as)
        let cases = [
            ("/pause", Command::Control(ControlAction::Pause, b.clone())),
            ("/go", Command::Control(ControlAction::Go, b.clone())),
            (
                "/pause alpha",
                Command::Control(ControlAction::Pause, Some("alpha".into())),
            ),
            (
                "/status",
                Command::Status(StatusTarget::Prefix("beta".into())),
            ),
            ("/status all", Command::Status(StatusTarget::All)),
            (
                "/status alpha",
                Command::Status(StatusTarget::Prefix("alpha".into())),
            ),
            ("/cost", Command::Cost(b.clone())),
            ("/cost alpha", Command::Cost(Some("alpha".into()))),
            ("/preflight", Command::Preflight(b.clone())),
            ("/logs 5", Command::Logs(b.clone(), Some(5))),
            ("/logs alpha", Command::Logs(Some("alpha".into()), None)),
            ("/help", Command::Help),
            ("/frob", Command::Unknown("frob".into())),
        ];
        for (typed, want) in cases {
            let command = parse_command(typed, None).unwrap();
            assert_eq!(in_topic_of(command, "beta"), want, "{typed}");
        }
    }
    use crate::core::registry::instances_named as instances;

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn staleness_table() {
        // (sent, now, max) -> stale
        let cases = [
            (Some(1000), 1000, 600, false),
            (Some(1000), 1600, 600, false),
            (Some(1000), 1601, 600, true),
            // A day of old updates after the first start.
            (Some(1000), 1000 + 86_400, 600, true),
            // Sent during a takeover: seconds old.
            (Some(1000), 1003, 600, false),
            // Clock skew: a date in the future is fresh.
            (Some(2000), 1000, 600, false),
            (None, 1000, 600, false),
            (Some(1000), 1001, 0, true),
        ];
        for (sent, now, max, want) in cases {
            assert_eq!(is_stale(sent, now, max), want, "{sent:?} {now} {max}");
        }
        assert!(acts(&Command::Control(ControlAction::Go, None)));
        assert!(!acts(&Command::Help));
        assert!(!acts(&Command::Status(StatusTarget::All)));
    }

    #[test]
    fn stale_reply_says_when_and_why() {
        let text = reply_stale(ControlAction::Pause, Some("b"), 0, 3 * 3600 + 300, 600);
        assert_eq!(
            text,
            "⏭ Ignored /pause b: it was sent 3h 5m ago (1970-01-01 00:00 UTC), more than 600s \
             (PIV_STALE_COMMAND_SECS) before piv read it. Send it again to act on it."
        );
        for (secs, want) in [(5, "5s"), (125, "2m"), (90_000, "1d 1h")] {
            assert_eq!(age_text(secs), want);
        }
    }

    #[test]
    fn parses_every_command_form() {
        let cases: Vec<(&str, Option<Command>)> = vec![
            ("/status", Some(Command::Status(StatusTarget::This))),
            ("/status all", Some(Command::Status(StatusTarget::All))),
            ("/cost", Some(Command::Cost(None))),
            ("/COST beta", Some(Command::Cost(Some("beta".into())))),
            ("/status ALL", Some(Command::Status(StatusTarget::All))),
            (
                "/status   b  ",
                Some(Command::Status(StatusTarget::Prefix("b".into()))),
            ),
            ("/STATUS", Some(Command::Status(StatusTarget::This))),
            ("/go", Some(Command::Control(ControlAction::Go, None))),
            ("/go b", Some(Command::Control(ControlAction::Go, s("b")))),
            (
                "  /go   my project ",
                Some(Command::Control(ControlAction::Go, s("my project"))),
            ),
            ("/pause", Some(Command::Control(ControlAction::Pause, None))),
            (
                "/pause b",
                Some(Command::Control(ControlAction::Pause, s("b"))),
            ),
            (
                "/resume",
                Some(Command::Control(ControlAction::Resume, None)),
            ),
            (
                "/resume\tb",
                Some(Command::Control(ControlAction::Resume, s("b"))),
            ),
            ("/help", Some(Command::Help)),
            ("/start", Some(Command::Help)),
            ("/frobnicate x", Some(Command::Unknown("frobnicate".into()))),
            // Shutting down is not a chat command.
            ("/shutdown", Some(Command::Unknown("shutdown".into()))),
            (
                "/Pause b",
                Some(Command::Control(ControlAction::Pause, s("b"))),
            ),
            (
                "/status@PivBot all",
                Some(Command::Status(StatusTarget::All)),
            ),
            (
                "/pause@pivbot b",
                Some(Command::Control(ControlAction::Pause, s("b"))),
            ),
            ("/go@OtherBot", None),
            ("hello", None),
            ("", None),
            ("   ", None),
            ("/", None),
            ("/@PivBot", None),
            ("status", None),
            ("please /go", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_command(text, Some("PivBot")), want, "{text:?}");
        }
    }

    #[test]
    fn addressed_commands_without_a_known_username_are_accepted() {
        assert_eq!(
            parse_command("/go@AnyBot a", None),
            Some(Command::Control(ControlAction::Go, s("a")))
        );
        assert_eq!(
            parse_command("/go@PivBot", Some("@pivbot")),
            Some(Command::Control(ControlAction::Go, None))
        );
    }

    #[test]
    fn routing_table() {
        let known = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // (target, own prefix, other instances, expected: Ok(remote prefix) | Err(route))
        type Case<'a> = (
            Option<&'a str>,
            &'a str,
            &'a [&'a str],
            Result<&'a str, Route<'a>>,
        );
        let cases: Vec<Case> = vec![
            (None, "a", &["a"], Err(Route::Local)),
            (None, "a", &[], Err(Route::Local)),
            (Some("a"), "a", &["a", "b"], Err(Route::Local)),
            (Some(" a "), "a", &["a", "b"], Err(Route::Local)),
            (Some(""), "a", &["a"], Err(Route::Local)),
            (
                None,
                "a",
                &["b", "a"],
                Err(Route::AskWhich {
                    prefixes: known(&["a", "b"]),
                }),
            ),
            (
                None,
                "a",
                &["b"],
                Err(Route::AskWhich {
                    prefixes: known(&["a", "b"]),
                }),
            ),
            (Some("b"), "a", &["a", "b"], Ok("b")),
            (Some("B"), "a", &["a", "b"], Ok("b")),
            (Some("A"), "a", &["a", "b"], Err(Route::Local)),
            (Some("B"), "a", &["a", "b", "B"], Ok("B")),
            (Some("ÉTÉ"), "a", &["été"], Ok("été")),
            (
                Some("x"),
                "a",
                &["b", "a"],
                Err(Route::UnknownPrefix {
                    prefix: "x".into(),
                    known: known(&["a", "b"]),
                }),
            ),
            (
                Some("C"),
                "a",
                &["c1", "C2"],
                Err(Route::UnknownPrefix {
                    prefix: "C".into(),
                    known: known(&["C2", "a", "c1"]),
                }),
            ),
        ];
        for (target, own, others, want) in cases {
            let others = instances(others);
            let got = route(target, own, &others);
            match want {
                Ok(prefix) => match got {
                    Route::Remote(instance) => assert_eq!(instance.prefix, prefix),
                    other => panic!("{target:?} {own}: {other:?}, want {prefix}"),
                },
                Err(want) => assert_eq!(got, want, "{target:?} {own} {others:?}"),
            }
        }
    }

    #[test]
    fn ambiguous_case_insensitive_prefix_is_unknown() {
        let others = instances(&["Ab", "aB"]);
        assert!(matches!(
            route(Some("ab"), "x", &others),
            Route::UnknownPrefix { .. }
        ));
    }

    #[test]
    fn allow_list() {
        assert!(is_allowed_chat(42, &[42]));
        assert!(is_allowed_chat(-100, &[42, -100]));
        assert!(!is_allowed_chat(43, &[42]));
        assert!(!is_allowed_chat(-42, &[42]));
        assert!(!is_allowed_chat(42, &[]));
    }

    #[test]
    fn reply_texts() {
        assert_eq!(
            reply_sent(ControlAction::Pause, "b"),
            "⏸ Sent /pause signal to [b]"
        );
        assert_eq!(
            reply_sent(ControlAction::Go, "b<"),
            "🚀 Sent /go signal to [b&lt;]"
        );
        assert_eq!(
            reply_sent(ControlAction::Resume, "c"),
            "▶️ Sent /resume signal to [c]"
        );
        let ask = reply_ask_which(ControlAction::Pause, &["a".into(), "b".into()]);
        assert_eq!(
            ask,
            "❓ Several projects are running: a, b.\nSay which one: /pause &lt;prefix&gt;, e.g. /pause a"
        );
        assert_eq!(
            reply_unknown_prefix("x<", &["a".into(), "b".into()]),
            "⚠️ No active instance with prefix \"x&lt;\". Known: a, b."
        );
        assert_eq!(
            reply_unknown_prefix("x", &[]),
            "⚠️ No active instance with prefix \"x\". No instance is running."
        );
        assert_eq!(
            reply_unknown_command("f<"),
            "⚠️ Unknown command /f&lt;. Send /help for the list."
        );
        assert_eq!(
            reply_status_unreadable("a&b"),
            "⚠️ Could not read status: a&amp;b"
        );
    }

    #[test]
    fn menu_commands_are_valid_for_telegram() {
        for (cmd, desc) in command_menu() {
            assert!(
                cmd.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{cmd}"
            );
            assert!((1..=32).contains(&cmd.len()));
            assert!((3..=256).contains(&desc.chars().count()));
            assert!(
                parse_command(&format!("/{cmd}"), None)
                    .is_some_and(|c| !matches!(c, Command::Unknown(_))),
                "{cmd} parses"
            );
        }
    }
}
