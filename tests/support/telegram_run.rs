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

/// A one-phase `piv run` with Telegram on whose `command` fails once with a 401 (it
/// needs a human): the sandbox, the running process, and its escalation (the first
/// message with buttons).
pub fn escalating_run(
    api: &BotApiStandIn,
    (token, chat): (&str, i64),
    prefix: &str,
    command: &str,
) -> (Sandbox, Kill, piv_testkit::bot_api::SentMessage) {
    let sb = Sandbox::new(prefix, &super::ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(Rule::new(command, super::fail("HTTP 401 Unauthorized")).times(1)),
    );
    let run = Kill(vec![start_with_telegram(
        &sb,
        api,
        (token, chat),
        prefix,
        &[],
        &[],
    )]);
    let escalation = api
        .wait_for_sent(|m| !m.buttons.is_empty(), super::DEADLINE)
        .unwrap_or_else(|| panic!("no escalation with buttons\n{}", output_of(&sb, prefix)));
    assert!(
        escalation.text.contains("integration_auth"),
        "{escalation:?}"
    );
    (sb, run, escalation)
}

/// `piv run` for `sb` with Telegram on in the forum chat `forum`, run through its phases
/// (it stays up for commands): the running process and the project's topic.
pub fn done_in_forum(
    sb: &Sandbox,
    api: &BotApiStandIn,
    (token, forum): (&str, i64),
    prefix: &str,
) -> (Kill, i64) {
    let run = Kill(vec![start_with_telegram(
        sb,
        api,
        (token, forum),
        prefix,
        &[],
        &[],
    )]);
    assert!(
        super::wait_until(super::DEADLINE, || state_of(sb).as_deref() == Some("done")),
        "{}",
        output_of(sb, prefix)
    );
    let topic = api
        .wait_for_topics(forum, 1, super::DEADLINE)
        .first()
        .map(|t| t.thread_id)
        .expect("a topic");
    (run, topic)
}
