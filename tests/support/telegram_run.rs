//! Helpers shared by the tests that run real `piv run` processes against the Bot API
//! stand-in: the published state, the replies after a moment, slow sessions, and a guard
//! that kills the runs a test started.

use std::process::Child;
use std::time::{Duration, Instant};

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use super::Sandbox;

/// A `piv run` with Telegram on (`token`, `chat`), pointed at the stand-in, tagged
/// `prefix`; stdout and stderr go to `<prefix>.out` / `<prefix>.err` in the sandbox.
/// `PIV_NOTIFY=verbose` (a message per step, as before the live status card) unless `env`
/// says otherwise: these tests follow every step's line through the chat.
pub fn start_with_telegram(
    sb: &Sandbox,
    api: &BotApiStandIn,
    (token, chat): (&str, i64),
    prefix: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let out = std::fs::File::create(sb.root.path().join(format!("{prefix}.out"))).unwrap();
    let err = std::fs::File::create(sb.root.path().join(format!("{prefix}.err"))).unwrap();
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    let mut cmd = sb.piv(&args);
    cmd.env("TELEGRAM_BOT_TOKEN", token)
        .env("TELEGRAM_CHAT_ID", chat.to_string())
        .env("TELEGRAM_API_URL", api.url())
        .env("TELEGRAM_PROJECT_PREFIX", prefix)
        .env("PIV_NOTIFY", "verbose")
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn piv run")
}

/// What a run started by [`start_with_telegram`] printed, and the project's log.
pub fn output_of(sb: &Sandbox, prefix: &str) -> String {
    let read = |ext: &str| {
        std::fs::read_to_string(sb.root.path().join(format!("{prefix}.{ext}"))).unwrap_or_default()
    };
    format!(
        "--- {prefix} stdout ---\n{}\n--- stderr ---\n{}\n--- log ---\n{}",
        read("out"),
        read("err"),
        sb.log()
    )
}

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
