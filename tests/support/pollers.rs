//! Which instance polls Telegram now, as the Bot API stand-in saw it: shared by the
//! chaos test and the takeover bench (included there by path).

use std::collections::HashSet;

use piv_testkit::bot_api::PollStart;

/// The pid of the latest `getUpdates` caller that is among `live`, if any of them polled.
pub fn current_poller(polls: &[PollStart], live: &HashSet<u32>) -> Option<u32> {
    polls
        .iter()
        .rev()
        .find_map(|p| p.pid.filter(|pid| live.contains(pid)))
}
