//! The control room's detail commands, end to end (issue 14): `/preflight` answers from the
//! manifest, `/logs` shows the log's last lines in a `<pre>` block with the bot token taken
//! out, both typed in a project's forum topic apply to that project; the command menu lists
//! them. Real `piv run` processes, the Bot API stand-in.

use std::io::Write;
use std::time::Instant;

use piv_testkit::bot_api::{BotApiStandIn, ChatSetup};

use crate::support::telegram_run::done_in_forum;
use crate::support::*;

const TOKEN: &str = "777018:chat-commands-SECRET";
const FORUM: i64 = -1_002_000_000_018;

#[test]
fn preflight_and_logs_in_a_topic() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let sb = Sandbox::new("cmds", &ready_manifest(1));
    let (_run, topic) = done_in_forum(&sb, &api, (TOKEN, FORUM), "cmds");

    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "/preflight");
    let preflight = api
        .wait_for_sent(
            |m| m.at >= t && m.text.contains("Preflight Status"),
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("{:#?}", api.sent_messages()));
    assert!(preflight.text.contains("✅ passed"), "{preflight:?}");
    assert_eq!(preflight.thread_id, Some(topic));

    // A line holding the token (as a careless tool might write) is shown without it.
    let log = sb.project.join(".agents/orchestrator.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        file,
        "marker-line url=https://api.telegram.org/bot{TOKEN}/getMe"
    )
    .unwrap();
    drop(file);
    let t = Instant::now();
    api.inject_topic_message(FORUM, topic, "/logs 5");
    let logs = api
        .wait_for_sent(|m| m.at >= t && m.text.contains("<pre>"), DEADLINE)
        .unwrap_or_else(|| panic!("{:#?}", api.sent_messages()));
    assert!(logs.text.contains("marker-line"), "{logs:?}");
    assert!(!logs.text.contains("chat-commands-SECRET"), "{logs:?}");
    assert_eq!(logs.thread_id, Some(topic));
    for m in api.sent_messages() {
        assert!(!m.text.contains("chat-commands-SECRET"), "{m:?}");
    }

    // The menu and /help list them.
    let menu = api.commands_set().last().cloned().unwrap_or_default();
    for c in ["preflight", "logs", "status", "help"] {
        assert!(menu.iter().any(|(name, _)| name == c), "{c}: {menu:?}");
    }
}
