//! Fuzz target: Telegram command parsing and routing, the replies built from them, and tagged splitting — no panic, no part over 4096 UTF-16 units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piv::core::commands::{
    parse_command, reply_ask_which, reply_sent, reply_unknown_command, reply_unknown_prefix,
    route, Command, Route,
};
use piv::core::telegram_text::{escape_html, split_tagged, telegram_len, TELEGRAM_LIMIT};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line also serves as a prefix, so prefixes get odd bytes too.
    let prefix: String = text.lines().next().unwrap_or("").chars().take(40).collect();
    let known = vec!["alpha".to_string(), "Beta".to_string(), prefix.clone()];
    let mut replies = Vec::new();
    for bot in [None, Some("PivBot"), Some("@pivbot")] {
        let Some(command) = parse_command(&text, bot) else {
            continue;
        };
        if let Some((action, target)) = command.as_remote_action() {
            match route(target, "alpha", &known) {
                Route::Local => {}
                Route::Remote { prefix } => replies.push(reply_sent(action, &prefix)),
                Route::AskWhich { prefixes } => replies.push(reply_ask_which(action, &prefixes)),
                Route::UnknownPrefix { prefix, known } => {
                    replies.push(reply_unknown_prefix(&prefix, &known))
                }
            }
        }
        if let Command::Unknown(name) = &command {
            replies.push(reply_unknown_command(name));
        }
    }
    // What the human typed, echoed back the way the bot does: escaped, then tagged and split.
    replies.push(escape_html(&text));
    for reply in replies {
        for part in split_tagged(&prefix, &reply, TELEGRAM_LIMIT) {
            assert!(
                telegram_len(&part) <= TELEGRAM_LIMIT,
                "part of {} units",
                telegram_len(&part)
            );
        }
    }
});
