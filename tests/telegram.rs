//! The notifier and the bot owner as in-process actors against the Bot API stand-in:
//! ordered tagged sends, 429 storms, splitting, a dead API; one poller per `PIV_HOME`,
//! `/status all`, routing `/pause b` to b's signal queue, the chat allow-list, takeover
//! answering a command exactly once, the persisted offset, and an outside poller on the
//! same token. Each test has its own `PIV_HOME`, projects and stand-in.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use piv::actors::bot_owner::{BotOwnerActor, BotOwnerSettings, StopPolling};
use piv::actors::control::{Control, Notify};
use piv::actors::notifier::{Flush, NotifierActor, NotifierSettings, QueueReply};
use piv::actors::registry::{InstanceIdentity, Register, RegistryActor};
use piv::config::TelegramSettings;
use piv::core::bot_chats::BotChat;
use piv::core::control::{ControlAction, ControlReply};
use piv::core::events::RunEvent;
use piv::core::telegram_text::{telegram_len, TELEGRAM_LIMIT};
use piv::io::registry_store::RegistryStore;
use piv::io::send_budget::PRIVATE_CHAT_INTERVAL;
use piv::io::signal_queue::drain_ready;
use piv::io::telegram::TelegramClient;
use piv_testkit::bot_api::{BotApiStandIn, SentMessage};

const TOKEN: &str = "4242:telegram-actor-test-secret";
const SECRET: &str = "telegram-actor-test-secret";
/// The digits before ':' in [`TOKEN`].
const BOT_ID: u64 = 4242;
const CHAT: i64 = 777;
const STRANGER_CHAT: i64 = 31337;
/// Generous: the machine is small, shared and loaded.
const PATIENCE: Duration = Duration::from_secs(60);
const MANIFEST: &str = "prd: {path: p}\npreflight: {status: passed}\nprofiles: {x: {freshness: fresh}}\nphases:\n  1: {plan: complete, execution: complete, validation: pass}\n  2: {plan: not_started, execution: not_started, validation: not_run}\n";

static OUTBOXES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One test's world: a home, a stand-in and the directory holding the projects.
struct World {
    dir: tempfile::TempDir,
    home: PathBuf,
    api: Arc<BotApiStandIn>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        World {
            api: Arc::new(BotApiStandIn::start(TOKEN)),
            dir,
            home,
        }
    }

    fn project(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join(".agents")).unwrap();
        std::fs::write(dir.join(".agents/manifest.yaml"), MANIFEST).unwrap();
        dir
    }

    fn notifier(&self, prefix: &str) -> Addr<NotifierActor> {
        NotifierActor::new(NotifierSettings {
            prefix: prefix.into(),
            home: self.home.clone(),
            telegram: Some(TelegramSettings {
                token: TOKEN.into(),
                bot_id: BOT_ID,
                chat_id: CHAT,
                api_url: self.api.url().into(),
                topics: true,
                notify: piv::core::notify_level::NotifyLevel::Verbose,
            }),
            // Each notifier its own outbox, as each instance has its own project.
            outbox_dir: self.dir.path().join(format!(
                "{prefix}.outbox-{}",
                OUTBOXES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            )),
            project_dir: self.dir.path().join(prefix).display().to_string(),
            panic_on_first_event: false,
            coordinator: None,
        })
        .start()
    }

    async fn registry(&self, prefix: &str, project: &Path) -> Addr<RegistryActor> {
        let identity = InstanceIdentity {
            prefix: prefix.into(),
            project_dir: project.display().to_string(),
            manifest_path: project.join(".agents/manifest.yaml").display().to_string(),
            started_at: chrono::Utc::now().to_rfc3339(),
            chat: Some(BotChat {
                bot_id: BOT_ID,
                chat_id: CHAT,
            }),
        };
        let addr = RegistryActor::new(
            RegistryStore::new(self.home.clone()),
            identity,
            Duration::from_secs(5),
        )
        .start();
        addr.send(Register).await.unwrap().unwrap();
        addr
    }

    /// A bot owner for `prefix` with a fake runner; returns the runner's call log.
    fn owner(
        &self,
        prefix: &str,
        project: &Path,
        registry: Option<Addr<RegistryActor>>,
    ) -> (Addr<BotOwnerActor>, Calls) {
        let calls = Calls::default();
        let runner = FakeRunner(calls.clone()).start();
        let control = runner.recipient::<Control>();
        let settings = BotOwnerSettings {
            prefix: prefix.into(),
            project_dir: project.to_path_buf(),
            home: self.home.clone(),
            token: TOKEN.into(),
            bot_id: BOT_ID,
            chat_id: CHAT,
            api_url: self.api.url().into(),
            poll_timeout_secs: 1,
            stale_command_secs: 600,
            coordinator: None,
        };
        let owner = BotOwnerActor::new(settings, control, self.notifier(prefix), registry).start();
        (owner, calls)
    }

    fn sent(&self) -> Vec<SentMessage> {
        self.api
            .sent_messages()
            .into_iter()
            .filter(|m| m.chat_id == CHAT)
            .collect()
    }

    fn replies_containing(&self, needle: &str) -> Vec<String> {
        self.sent()
            .into_iter()
            .map(|m| m.text)
            .filter(|t| t.contains(needle))
            .collect()
    }

    async fn wait_for_reply(&self, needle: &str) -> String {
        let found = eventually_or_none(|| self.replies_containing(needle).into_iter().next()).await;
        found.unwrap_or_else(|| panic!("no reply containing {needle:?}; {}", self.report()))
    }

    /// What the stand-in saw, for a failure message.
    fn report(&self) -> String {
        let texts: Vec<String> = self.sent().into_iter().map(|m| m.text).collect();
        format!(
            "sent {texts:#?}\npoll starts {:?}\nconflicts {}\nrejected {:?}\npending {:?}",
            self.api
                .poll_starts()
                .iter()
                .map(|p| p.offset)
                .collect::<Vec<_>>(),
            self.api.conflicts_409(),
            self.api.rejected_sends(),
            self.api.pending_update_ids()
        )
    }

    async fn wait_for_polls(&self, n: usize) {
        eventually(&format!("{n} polls"), || {
            (self.api.poll_starts().len() >= n).then_some(())
        })
        .await
    }
}

/// Checks `probe` every few milliseconds until it gives a value or [`PATIENCE`] runs out.
async fn eventually_or_none<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually<T>(what: &str, probe: impl FnMut() -> Option<T>) -> T {
    eventually_or_none(probe)
        .await
        .unwrap_or_else(|| panic!("timed out waiting for {what}"))
}

async fn flush(notifier: &Addr<NotifierActor>) {
    tokio::time::timeout(PATIENCE, notifier.send(Flush))
        .await
        .expect("Flush resolves")
        .unwrap();
}

type Calls = Arc<Mutex<Vec<&'static str>>>;

/// Stands in for the phase runner: records each control message.
struct FakeRunner(Calls);

impl Actor for FakeRunner {
    type Context = Context<Self>;
}

impl Handler<Control> for FakeRunner {
    type Result = MessageResult<Control>;
    fn handle(&mut self, msg: Control, _: &mut Self::Context) -> Self::Result {
        self.0.lock().unwrap().push(msg.action.as_str());
        MessageResult(match msg.action {
            ControlAction::Go => ControlReply::Started,
            ControlAction::Pause => ControlReply::Paused,
            ControlAction::Resume => ControlReply::Resumed,
            ControlAction::Shutdown => ControlReply::ShuttingDown,
            ControlAction::Rollback => ControlReply::NotRolledBack {
                why: "not from the chat".into(),
            },
            ControlAction::PrdStart | ControlAction::PrdText | ControlAction::PrdEnd => {
                ControlReply::NotForRunner
            }
        })
    }
}

/// The bodies of `a`'s messages in send order, tags removed, so a message's position can
/// be found even when a backlog was coalesced.
fn bodies_in_order(sent: &[SentMessage], tag: &str) -> String {
    sent.iter()
        .map(|m| {
            assert!(m.text.starts_with(tag), "untagged: {:?}", m.text);
            assert_eq!(m.parse_mode.as_deref(), Some("HTML"));
            m.text[tag.len()..].to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_in_order(text: &str, needles: &[String]) {
    let mut from = 0;
    for needle in needles {
        let at = text[from..]
            .find(needle.as_str())
            .unwrap_or_else(|| panic!("{needle:?} missing or out of order in {text:?}"));
        from += at + needle.len();
    }
}

// ---------------------------------------------------------------------------------------
// Notifier

#[actix_rt::test]
async fn notifier_sends_tagged_messages_in_order() {
    let world = World::new();
    let notifier = world.notifier("a");
    let mut expected = Vec::new();
    for i in 0..5 {
        notifier.do_send(Notify(RunEvent::Resumed {
            by: format!("message {i}"),
        }));
        expected.push(format!("▶️ <b>Resumed</b> (message {i})"));
    }
    notifier.do_send(Notify(RunEvent::PhaseStarted {
        phase: 2,
        name: "Core <api>".into(),
    }));
    expected.push("🚀 <b>Phase 2 Starting</b>: Core &lt;api&gt;".into());
    // A step start keeps the chat quiet.
    notifier.do_send(Notify(RunEvent::StepStarted {
        phase: Some(2),
        step: "plan".into(),
        max_turns: None,
    }));
    flush(&notifier).await;
    let sent = world.sent();
    assert!(!sent.is_empty());
    let text = bodies_in_order(&sent, "[a] ");
    assert_in_order(&text, &expected);
    assert!(!text.contains("plan"), "{text}");
}

#[actix_rt::test]
async fn a_429_storm_loses_nothing_and_keeps_order() {
    let world = World::new();
    world.api.force_429(4);
    let notifier = world.notifier("a");
    let expected: Vec<String> = (0..8).map(|i| format!("storm message {i}")).collect();
    for m in &expected {
        notifier.do_send(Notify(RunEvent::Info(m.clone())));
    }
    flush(&notifier).await;
    assert!(world.api.rejected_429() >= 4, "the storm happened");
    let text = bodies_in_order(&world.sent(), "[a] ");
    assert_in_order(&text, &expected);
    for m in &expected {
        assert_eq!(text.matches(m.as_str()).count(), 1, "{m} sent once");
    }
}

/// Two instances of one home draw on one budget: each round both send at the same moment,
/// yet every send gets its own slot, so six sends span at least five intervals (with a
/// budget each, three rounds would take about two).
#[actix_rt::test]
async fn instances_of_one_home_share_the_send_budget() {
    let world = World::new();
    let a = world.notifier("a");
    let b = world.notifier("b");
    let start = Instant::now();
    for round in 0..3 {
        a.do_send(Notify(RunEvent::Info(format!("a round {round}"))));
        b.do_send(Notify(RunEvent::Info(format!("b round {round}"))));
        flush(&a).await;
        flush(&b).await;
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= PRIVATE_CHAT_INTERVAL * 5,
        "six sends in {elapsed:?}"
    );
    assert_eq!(world.sent().len(), 6, "one message each, none coalesced");
    assert_eq!(world.api.rejected_429(), 0);
}

/// Replies go first (issue 13 item 3) inside one instance too: with the shared budget
/// booked ahead by other instances, this instance's notification has to wait before it may
/// book a slot; a reply queued meanwhile books at once and goes out before it.
#[actix_rt::test]
async fn a_reply_overtakes_a_notification_waiting_for_the_shared_budget() {
    let world = World::new();
    // Other instances have booked the chat's slots four seconds ahead.
    let bot_dir = piv::io::home::ensure_bot_dir(&world.home, BOT_ID).unwrap();
    let ahead = std::time::SystemTime::now() + Duration::from_secs(4);
    let ahead_ms = ahead
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        bot_dir.join("send-budget.json"),
        format!("{{\"lastSlotMs\":{{\"{CHAT}\":{ahead_ms}}}}}"),
    )
    .unwrap();
    let a = world.notifier("a");
    a.do_send(Notify(RunEvent::Info("a notification".into())));
    // The sender has asked the budget for the notification's slot (the first booking
    // creates the lock file) and was told to ask again later.
    eventually("the notification asks the budget", || {
        bot_dir.join("send-budget.lock").exists().then_some(())
    })
    .await;
    let reply = a.send(QueueReply {
        chat_id: CHAT,
        thread: None,
        tag: "a".into(),
        html: "the answer".into(),
    });
    tokio::time::timeout(PATIENCE, reply)
        .await
        .expect("the reply is sent")
        .unwrap();
    flush(&a).await;
    let texts: Vec<String> = world.sent().into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts,
        ["[a] the answer", "[a] a notification"],
        "the reply first, then the notification, each once"
    );
    let sent = world.sent();
    assert!(sent[1].at - sent[0].at >= PRIVATE_CHAT_INTERVAL - Duration::from_millis(50));
}

#[actix_rt::test]
async fn long_messages_are_split_with_the_tag_on_every_part() {
    let world = World::new();
    let notifier = world.notifier("proj");
    // Escaped markup in the text: every `&lt;`/`&gt;` entity must survive the cuts.
    let paragraphs: Vec<String> = (0..4)
        .map(|i| format!("<part {i}> {}", "x".repeat(2500)))
        .collect();
    notifier.do_send(Notify(RunEvent::Info(paragraphs.join("\n\n"))));
    flush(&notifier).await;
    let sent = world.sent();
    assert!(sent.len() >= 3, "split into parts: {}", sent.len());
    for m in &sent {
        assert!(telegram_len(&m.text) <= TELEGRAM_LIMIT);
    }
    let text = bodies_in_order(&sent, "[proj] ");
    let heads: Vec<String> = (0..4).map(|i| format!("&lt;part {i}&gt;")).collect();
    assert_in_order(&text, &heads);
    assert!(world.api.rejected_sends().is_empty());
}

/// A dead API neither stops the notifier nor loses a message: what cannot be sent stays
/// queued on disk (and `Flush` does not pretend otherwise).
#[actix_rt::test]
async fn a_dead_api_never_stops_the_notifier_and_loses_nothing() {
    let world = World::new();
    let notifier = world.notifier("a");
    let World { api, dir, .. } = world;
    drop(api); // nothing listens there any more
    notifier.do_send(Notify(RunEvent::Info("kept one".into())));
    notifier.do_send(Notify(RunEvent::Info("kept two".into())));
    // Still alive and still answering.
    notifier
        .send(Notify(RunEvent::Heartbeat { phase: Some(1) }))
        .await
        .unwrap();
    let queued = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("a.outbox-"))
            .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let text = queued();
    assert!(
        text.contains("kept one") && text.contains("kept two"),
        "{text}"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), notifier.send(Flush))
            .await
            .is_err(),
        "Flush waits while messages are queued"
    );
}

// ---------------------------------------------------------------------------------------
// Bot owner

#[actix_rt::test]
async fn only_one_instance_of_a_home_polls_and_status_all_lists_both() {
    let world = World::new();
    let (pa, pb) = (world.project("a"), world.project("b"));
    let ra = world.registry("a", &pa).await;
    let rb = world.registry("b", &pb).await;
    let (_a, _) = world.owner("a", &pa, Some(ra));
    let (_b, _) = world.owner("b", &pb, Some(rb));
    world.wait_for_polls(4).await;
    let store = RegistryStore::new(world.home.clone());
    let owners = eventually("one registry entry marked owner", || {
        let owners: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .filter(|i| i.is_bot_owner)
            .map(|i| i.prefix)
            .collect();
        (owners.len() == 1).then_some(owners)
    })
    .await;
    assert_eq!(world.api.conflicts_409(), 0, "no 409 from inside this home");
    assert_eq!(world.api.commands_set().len(), 1, "one owner set the menu");

    world.api.inject_message(CHAT, "/status all");
    let reply = world.wait_for_reply("All Instances").await;
    assert!(
        reply.starts_with(&format!("[{}] ", owners[0])),
        "owner answers: {reply}"
    );
    assert!(
        reply.contains("<b>[a]</b>") && reply.contains("<b>[b]</b>"),
        "{reply}"
    );
    assert!(reply.contains("1/2 phases"), "{reply}");
    // A later command's answer proves the first was not answered twice.
    world.api.inject_message(CHAT, "/help");
    world.wait_for_reply("/status all").await;
    assert_eq!(world.replies_containing("All Instances").len(), 1);
    assert_eq!(world.api.conflicts_409(), 0);
}

#[actix_rt::test]
async fn commands_are_routed_to_the_right_instance() {
    let world = World::new();
    let (pa, pb) = (world.project("a"), world.project("b"));
    let ra = world.registry("a", &pa).await;
    let _rb = world.registry("b", &pb).await;
    let (_a, calls) = world.owner("a", &pa, Some(ra));
    world.wait_for_polls(1).await;

    world.api.inject_message(CHAT, "/pause b");
    let reply = world.wait_for_reply("Sent /pause signal").await;
    assert_eq!(reply, "[a] ⏸ Sent /pause signal to [b]");
    let queued = drain_ready(&pb, None);
    assert_eq!(queued.delivered.len(), 1, "{queued:?}");
    assert_eq!(queued.delivered[0].action, ControlAction::Pause);
    assert_eq!(queued.delivered[0].from, "a");
    assert!(calls.lock().unwrap().is_empty(), "not handled locally");
    assert!(drain_ready(&pa, None).delivered.is_empty(), "a not paused");

    world.api.inject_message(CHAT, "/pause@piv_test_bot a");
    let reply = world.wait_for_reply(&ControlReply::Paused.text()).await;
    assert!(reply.starts_with("[a] "));
    assert_eq!(*calls.lock().unwrap(), vec!["pause"]);

    world.api.inject_message(CHAT, "/go");
    let ask = world.wait_for_reply("Several projects").await;
    assert!(ask.contains("a, b"), "{ask}");

    world.api.inject_message(CHAT, "/resume zz");
    let unknown = world.wait_for_reply("No active instance").await;
    assert!(
        unknown.contains("zz") && unknown.contains("Known: a, b"),
        "{unknown}"
    );

    world.api.inject_message(CHAT, "/status b");
    let status = world.wait_for_reply("PIV Orchestrator Status").await;
    assert!(status.starts_with("[b] "), "tagged with b: {status}");
    assert!(
        status.contains("Phase 1: ✅ Plan ✅ Exec ✅ Val"),
        "{status}"
    );
    assert_eq!(*calls.lock().unwrap(), vec!["pause"], "nothing else local");
}

#[actix_rt::test]
async fn chats_off_the_allow_list_are_ignored() {
    let world = World::new();
    let pa = world.project("a");
    let (_a, calls) = world.owner("a", &pa, None);
    world.wait_for_polls(1).await;
    world.api.inject_message(STRANGER_CHAT, "/pause");
    world.api.inject_message(STRANGER_CHAT, "/help");
    world.api.inject_message(CHAT, "/status");
    let status = world.wait_for_reply("PIV Orchestrator Status").await;
    assert!(status.starts_with("[a] "), "{status}");
    assert!(status.contains("<b>State:</b> running"), "{status}");
    assert_eq!(world.sent().len(), 1, "only the allowed chat was answered");
    assert!(world
        .api
        .sent_messages()
        .iter()
        .all(|m| m.chat_id != STRANGER_CHAT));
    assert!(calls.lock().unwrap().is_empty());
}

#[actix_rt::test]
async fn takeover_answers_a_command_sent_in_between_exactly_once() {
    let world = World::new();
    let (pa, pb) = (world.project("a"), world.project("b"));
    let (a, _) = world.owner("a", &pa, None);
    world.wait_for_polls(1).await;
    let (b, _) = world.owner("b", &pb, None);

    world.api.inject_message(CHAT, "/status");
    world.wait_for_reply("[a] <b>PIV Orchestrator Status").await;
    tokio::time::timeout(PATIENCE, a.send(StopPolling))
        .await
        .expect("StopPolling resolves")
        .unwrap();
    // Sent while nobody polls.
    world.api.inject_message(CHAT, "/help");
    let help = world.wait_for_reply("PIV Orchestrator — commands").await;
    assert!(help.starts_with("[b] "), "the new owner answers: {help}");

    // One more round trip through b proves nothing else is still coming.
    world.api.inject_message(CHAT, "/go");
    world.wait_for_reply(&ControlReply::Started.text()).await;
    assert_eq!(world.replies_containing("commands</b>").len(), 1);
    assert_eq!(world.replies_containing("PIV Orchestrator Status").len(), 1);
    drop(b);
}

/// A new owner skips what the persisted offset says was handled, even when Telegram still
/// has it (an owner killed between replying and its next poll).
#[actix_rt::test]
async fn the_persisted_offset_prevents_a_second_answer() {
    let world = World::new();
    let pa = world.project("a");
    let handled = world.api.inject_message(CHAT, "/status");
    let bot_dir = piv::io::home::ensure_bot_dir(&world.home, BOT_ID).unwrap();
    std::fs::write(
        bot_dir.join("offset.json"),
        format!("{{\"lastUpdateId\":{handled}}}"),
    )
    .unwrap();
    let (_a, _) = world.owner("a", &pa, None);
    world.api.inject_message(CHAT, "/help");
    world.wait_for_reply("PIV Orchestrator — commands").await;
    assert!(world
        .replies_containing("PIV Orchestrator Status")
        .is_empty());
    let offset_file = bot_dir.join("offset.json");
    let want = format!("{{\"lastUpdateId\":{}}}", handled + 1);
    eventually("the /help update recorded as handled", || {
        (std::fs::read_to_string(&offset_file).ok()? == want).then_some(())
    })
    .await;
}

/// Collects formatted log output for one test thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[actix_rt::test]
async fn an_outside_poller_on_the_token_is_survived_with_one_warning() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _log_guard = tracing::subscriber::set_default(subscriber);

    let world = World::new();
    let pa = world.project("a");
    let (_a, _) = world.owner("a", &pa, None);
    world.wait_for_polls(1).await;

    // Another process outside this home, polling the same token for a while.
    let url = world.api.url().to_string();
    let api = world.api.clone();
    let outsider = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = TelegramClient::new(TOKEN, &url, 5).unwrap();
            let end = Instant::now() + PATIENCE;
            // Until our owner has been cut off several times.
            while api.conflicts_409() < 6 && Instant::now() < end {
                let _ = client.get_updates(None, 1).await;
            }
        });
    });
    tokio::task::spawn_blocking(move || outsider.join().unwrap())
        .await
        .unwrap();

    world.api.inject_message(CHAT, "/help");
    world.wait_for_reply("PIV Orchestrator — commands").await;
    let text = logs.text();
    assert_eq!(
        text.matches("another getUpdates is polling this bot token")
            .count(),
        1,
        "{text}"
    );
    assert!(!text.contains(SECRET), "the token never reaches a log line");
}
