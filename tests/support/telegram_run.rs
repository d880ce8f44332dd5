//! Helpers shared by the tests that run real `piv run` processes against the Bot API
//! stand-in: the published state, the replies after a moment, slow sessions, and a guard
//! that kills the runs a test started.

use std::process::Child;
use std::time::{Duration, Instant};

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use super::Sandbox;

/// The state the instance publishes (`running`, `paused`, `done`, ...).
pub fn state_of(sb: &Sandbox) -> Option<String> {
    piv::io::state_file::read(&sb.project).map(|s| s.state.as_str().to_string())
}

/// Chat messages sent since `since` that contain `needle`.
pub fn replies_after(api: &BotApiStandIn, since: Instant, needle: &str) -> Vec<String> {
    api.sent_messages()
        .into_iter()
        .filter(|m| m.at >= since && m.text.contains(needle))
        .map(|m| m.text)
        .collect()
}

/// Slow sessions, so that a run stays up while the test talks to it.
pub fn slow(ms: u64) -> Scenario {
    Scenario::new().rule(Rule::new("", Action::Succeed).delay(Duration::from_millis(ms)))
}

/// Kills (and reaps) the runs a test started when it ends, however it ends.
pub struct Kill(pub Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
