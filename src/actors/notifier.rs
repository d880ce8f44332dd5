//! The notifier: every instance's one voice. It prints each run event to the terminal and,
//! when Telegram is configured, writes its HTML to the instance's on-disk outbox
//! (`io::outbox`) before anything else; one sender task drains that outbox through
//! `io::chat_sender` (tagged `[prefix] `, split under 4096, spaced by the send budget of
//! the bot shared by every instance of this `$PIV_HOME`, waiting out 429s in full,
//! retrying outages for as long as they last) and removes each entry once Telegram
//! accepted it. Notifications go to the instance's own chat. The bot owner's replies go
//! through the same outbox, to the chat the command came from, and go first: ahead of
//! this instance's queued notifications (`core::outbox`, and a notification still waiting
//! for a slot steps aside) and of every instance's in the shared budget
//! (`core::send_slots`); a backlog of notifications is coalesced into fewer messages, in order, never dropped.
//! What a killed instance left in the outbox goes out on its next start. A failed send
//! is logged and never stops a run.
//!
//! In a supergroup with topics on (issue 14) the project's notifications go to its own
//! forum topic, untagged (`io::topic_route` finds, creates and repairs it; a deleted topic
//! is recreated and the message sent again); a reply goes back to the topic its command
//! was typed in, or to General. Below `PIV_NOTIFY=verbose` the steps of a phase show on
//! one live status card (`io::status_card`), sent and then edited in place by the same
//! sender task, in the shared budget, at most once per 3 s; only what needs a person or
//! closes something gets a message of its own (`core::notify_level`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;

use actix::prelude::*;
use tokio::sync::{oneshot, watch, Notify as WakeUp};

use crate::actors::control::Notify;
use crate::config::TelegramSettings;
use crate::core::buttons::{event_buttons, rollback_checkpoint, shared_wait_buttons, Button};
use crate::core::events::{telegram_html, terminal_line, RunEvent};
use crate::core::forum::{fallback_notice, placement, Placement, TopicState};
use crate::core::notify_level::{delivery, ChatDelivery, NotifyLevel};
use crate::core::outbox::{next_batch, MessageKind, Queued};
use crate::core::telegram_text::tag_prefix;
use crate::io::chat_sender::{ChatSender, Sent};
use crate::io::escalation_file;
use crate::io::home::ensure_bot_dir;
use crate::io::outbox::Outbox;
use crate::io::status_card::{CardJob, StatusCard};
use crate::io::telegram::TelegramClient;
use crate::io::topic_route::TopicRoute;
use crate::io::topic_store::TopicStore;

/// At most this many notifications are coalesced into one send.
const MAX_BATCH: usize = 50;

/// What the notifier needs: the tag, the home holding the bot's shared send budget, the
/// bot and chat (none = terminal only) and where the outbox lives.
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    pub prefix: String,
    pub home: PathBuf,
    pub telegram: Option<TelegramSettings>,
    /// The outbox directory (`<project>/.agents/telegram-outbox`).
    pub outbox_dir: PathBuf,
    /// The project directory, as the registry and the topic store name it.
    pub project_dir: String,
    /// Test hook (`PIV_FAULT_INJECT=notifier_panic`): panic on the first event, to
    /// exercise the panic hook and the ordered shutdown for a crash outside the loop.
    pub panic_on_first_event: bool,
    /// Coordination across machines, when chosen: the send budget is shared through it.
    pub coordinator: Option<crate::io::coordination::Coordinator>,
}

/// Resolves once every queued message has been sent or given up on. Callers bound it
/// with a timeout (an outage or a 429 can make it long; what is left stays on disk).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Flush;

/// The answer to a chat command, queued ahead of notifications. Resolves once Telegram
/// accepted it (the bot owner records the update as handled only then: a reply left in
/// a killed owner's outbox would wait for that project's next start, so the next owner
/// answers again — at least once, as before the outbox).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct QueueReply {
    /// The chat the command came from.
    pub chat_id: i64,
    /// The forum topic it was typed in (none: General, or a chat without topics).
    pub thread: Option<i64>,
    pub tag: String,
    pub html: String,
}

/// A message of the project's own that is not a run event (the PRD relay's replies and
/// Claude's answers): queued like a notification, so it goes to the project's topic, and
/// sent as a message of its own at every `PIV_NOTIFY` level.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct QueueProjectMessage {
    pub html: String,
}

/// The outbox shared by the actor (which fills it) and its sender task (which drains it).
struct Queue {
    disk: RefCell<Outbox>,
    /// Who waits for an entry to be sent, by sequence number.
    waiters: RefCell<HashMap<u64, Vec<oneshot::Sender<()>>>>,
    wake: WakeUp,
    /// Fired when a reply is queued: a notification waiting for the budget steps aside.
    reply_queued: WakeUp,
    /// True while nothing is queued or being sent (what [`Flush`] waits for).
    idle: watch::Sender<bool>,
    /// The live status card (none at `PIV_NOTIFY=verbose`).
    card: Option<RefCell<StatusCard>>,
    /// Fired when the card has something new.
    card_changed: WakeUp,
}

impl Queue {
    fn new(disk: Outbox) -> Self {
        let idle = disk.list().map(|l| l.is_empty()).unwrap_or(true);
        Self {
            disk: RefCell::new(disk),
            waiters: RefCell::new(HashMap::new()),
            wake: WakeUp::new(),
            reply_queued: WakeUp::new(),
            idle: watch::Sender::new(idle),
            card: None,
            card_changed: WakeUp::new(),
        }
    }

    /// Sends or edits the live card if that is due; otherwise how long until it is.
    async fn serve_card(
        &self,
        sender: &ChatSender,
        route: Option<&mut TopicRoute>,
        own_chat: i64,
        prefix: &str,
    ) -> Option<std::time::Duration> {
        let card = self.card.as_ref()?;
        let wait = card.borrow_mut().due_in(std::time::Instant::now())?;
        if !wait.is_zero() {
            return Some(wait);
        }
        let state = match route {
            Some(r) => r.state().await,
            None => TopicState::NoTopics,
        };
        let place = placement(state, None).unwrap_or(Placement {
            thread: None,
            tagged: true,
        });
        let tag = if place.tagged {
            tag_prefix(prefix)
        } else {
            String::new()
        };
        let job = card
            .borrow_mut()
            .next_job(std::time::Instant::now(), &tag)?;
        match job {
            CardJob::Send { generation, html } => {
                match sender.send_card(own_chat, place.thread, &html).await {
                    Ok(id) => card
                        .borrow_mut()
                        .sent(generation, id, std::time::Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot send the live status card");
                        card.borrow_mut().failed(generation);
                    }
                }
            }
            CardJob::Edit {
                generation,
                message_id,
                html,
            } => match sender.edit_card(own_chat, message_id, &html).await {
                Ok(()) => card
                    .borrow_mut()
                    .edited(generation, std::time::Instant::now()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot edit the live status card; sending a new one");
                    card.borrow_mut().failed(generation);
                }
            },
        }
        Some(std::time::Duration::ZERO)
    }

    fn push(
        &self,
        kind: MessageKind,
        chat: Option<i64>,
        thread: Option<i64>,
        tag: &str,
        html: &str,
    ) -> Option<u64> {
        let seq = match self
            .disk
            .borrow_mut()
            .push_to(kind, chat, thread, tag, html)
        {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(error = %e, "cannot queue a Telegram message on disk; it is lost");
                return None;
            }
        };
        self.idle.send_replace(false);
        self.wake.notify_one();
        if kind == MessageKind::Reply {
            self.reply_queued.notify_one();
        }
        Some(seq)
    }

    /// Queues a notification with inline buttons (sent alone).
    fn push_buttons(&self, tag: &str, html: &str, buttons: Vec<Vec<(String, String)>>) {
        match self.disk.borrow_mut().push_with_buttons(tag, html, buttons) {
            Ok(_) => {
                self.idle.send_replace(false);
                self.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot queue a Telegram message on disk; it is lost")
            }
        }
    }

    /// Resolves once entry `seq` has been sent (or given up on).
    fn sent(&self, seq: u64) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().entry(seq).or_default().push(tx);
        rx
    }

    /// The next send: its chat (`None`: our own), its tag, its body (several
    /// notifications joined in order) and the entries it removes once sent.
    fn take_next(&self) -> Option<NextSend> {
        let entries = match self.disk.borrow().list() {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Telegram outbox");
                return None;
            }
        };
        let queued: Vec<Queued<'_>> = entries
            .iter()
            .map(|e| Queued {
                seq: e.seq,
                kind: e.kind,
                tag: &e.tag,
                alone: !e.buttons.is_empty(),
            })
            .collect();
        let batch = next_batch(&queued, MAX_BATCH);
        let first = entries.iter().find(|e| Some(&e.seq) == batch.first())?;
        if batch.len() > 1 {
            tracing::debug!(
                messages = batch.len(),
                "Telegram backlog: coalescing waiting messages"
            );
        }
        let body = entries
            .iter()
            .filter(|e| batch.contains(&e.seq))
            .map(|e| e.html.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        Some(NextSend {
            chat: first.chat,
            thread: first.thread,
            buttons: first.buttons.clone(),
            kind: first.kind,
            tag: first.tag.clone(),
            body,
            seqs: batch,
        })
    }

    fn remove(&self, seqs: &[u64]) {
        if let Err(e) = self.disk.borrow().remove(seqs) {
            tracing::error!(error = %e, "cannot remove sent messages from the Telegram outbox");
        }
        let mut waiters = self.waiters.borrow_mut();
        for seq in seqs {
            for tx in waiters.remove(seq).unwrap_or_default() {
                let _ = tx.send(());
            }
        }
    }
}

/// One send taken from the outbox.
#[derive(Debug, PartialEq, Eq)]
struct NextSend {
    chat: Option<i64>,
    /// A reply's topic (see `QueueReply::thread`).
    thread: Option<i64>,
    /// An escalation's buttons (sent alone).
    buttons: Vec<Vec<(String, String)>>,
    kind: MessageKind,
    tag: String,
    body: String,
    seqs: Vec<u64>,
}

async fn drain(
    queue: Rc<Queue>,
    sender: ChatSender,
    own_chat: i64,
    prefix: String,
    mut route: Option<TopicRoute>,
) {
    // Topics a reply could not be sent into (deleted meanwhile): such replies go to General.
    let mut gone_threads: HashSet<i64> = HashSet::new();
    loop {
        match queue.take_next() {
            Some(next) => {
                let chat = next.chat.unwrap_or(own_chat);
                // Notifications follow the project's topic; a reply goes where its
                // command was typed (General when no topic).
                let project_route = route
                    .as_mut()
                    .filter(|r| r.chat_id() == chat && next.kind == MessageKind::Notification);
                let state = match project_route {
                    Some(r) => r.state().await,
                    None => TopicState::NoTopics,
                };
                if let Some(r) = route.as_mut() {
                    if r.take_fallback_notice() {
                        queue.push(
                            MessageKind::Notification,
                            None,
                            None,
                            &next.tag,
                            &fallback_notice(),
                        );
                    }
                }
                let reply_thread = next.thread.filter(|t| !gone_threads.contains(t));
                let place = placement(state, reply_thread).unwrap_or(Placement {
                    thread: None,
                    tagged: true,
                });
                let tag = if place.tagged { next.tag.as_str() } else { "" };
                // A notification kept waiting by the shared budget lets a reply queued
                // meanwhile go first (it stays queued, and is taken again after it).
                let preempt =
                    (next.kind == MessageKind::Notification).then_some(&queue.reply_queued);
                match sender
                    .send_tagged(
                        (chat, place.thread),
                        next.kind,
                        tag,
                        &next.body,
                        &next.buttons,
                        preempt,
                    )
                    .await
                {
                    Sent::Preempted => continue,
                    Sent::Done { .. } => queue.remove(&next.seqs),
                    Sent::TopicFailed(recovery) => match (reply_thread, place.thread) {
                        (Some(asked), Some(_)) => {
                            gone_threads.insert(asked);
                        }
                        (_, Some(thread)) => {
                            if let Some(r) = route.as_mut() {
                                r.recover(recovery, thread).await;
                            }
                        }
                        // Refused without a topic: cannot be a topic error; sent as done.
                        (_, None) => queue.remove(&next.seqs),
                    },
                }
            }
            None => {
                queue.idle.send_replace(true);
                let card = queue
                    .serve_card(&sender, route.as_mut(), own_chat, &prefix)
                    .await;
                match card {
                    Some(wait) if wait.is_zero() => {}
                    Some(wait) => tokio::select! {
                        _ = queue.wake.notified() => {}
                        _ = queue.card_changed.notified() => {}
                        _ = tokio::time::sleep(wait) => {}
                    },
                    None => tokio::select! {
                        _ = queue.wake.notified() => {}
                        _ = queue.card_changed.notified() => {}
                    },
                }
            }
        }
    }
}

/// Prints run events to the terminal and queues them for Telegram (see the module docs).
pub struct NotifierActor {
    prefix: String,
    /// The chat notifications go to (set with Telegram).
    own_chat: i64,
    sender: Option<ChatSender>,
    queue: Option<Rc<Queue>>,
    panic_on_first_event: bool,
    /// Finds the project's forum topic (with Telegram); taken by the sender task.
    route: Option<TopicRoute>,
    /// `PIV_NOTIFY`.
    level: NotifyLevel,
    /// Where the open escalation is recorded (`io::escalation_file`).
    escalation_path: PathBuf,
    /// Whether this instance has recorded one open.
    escalation_open: bool,
    /// The project, whose manifest names an escalation's checkpoint (for Rollback).
    project_dir: PathBuf,
}

impl NotifierActor {
    pub fn new(settings: NotifierSettings) -> Self {
        let mut route = None;
        let sender = settings.telegram.as_ref().and_then(|tg| {
            let bot_dir = match ensure_bot_dir(&settings.home, tg.bot_id) {
                Ok(dir) => dir,
                Err(e) => {
                    tracing::error!(error = %e, "Telegram notifications disabled: no bot directory");
                    return None;
                }
            };
            match TelegramClient::new(&tg.token, &tg.api_url, 30) {
                Ok(client) => {
                    route = Some(TopicRoute::new(
                        client.clone(),
                        TopicStore::new(&bot_dir),
                        tg.chat_id,
                        settings.project_dir.clone(),
                        settings.prefix.clone(),
                        tg.topics,
                    ));
                    Some(
                        ChatSender::new(client, bot_dir)
                            .with_coordination(settings.coordinator.as_ref().map(|c| c.shared.clone())),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "Telegram notifications disabled");
                    None
                }
            }
        });
        let queue =
            sender
                .as_ref()
                .and_then(|_| match Outbox::open_dir(settings.outbox_dir.clone()) {
                    Ok(disk) => {
                        let mut queue = Queue::new(disk);
                        if settings
                            .telegram
                            .as_ref()
                            .is_some_and(|tg| tg.notify != NotifyLevel::Verbose)
                        {
                            queue.card =
                                Some(RefCell::new(StatusCard::new(std::time::Instant::now())));
                        }
                        Some(Rc::new(queue))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Telegram notifications disabled: no outbox");
                        None
                    }
                });
        Self {
            prefix: settings.prefix,
            own_chat: settings.telegram.as_ref().map_or(0, |tg| tg.chat_id),
            sender: queue.as_ref().and(sender),
            queue,
            panic_on_first_event: settings.panic_on_first_event,
            route,
            level: settings
                .telegram
                .as_ref()
                .map_or(NotifyLevel::Verbose, |tg| tg.notify),
            escalation_path: settings.outbox_dir.join(escalation_file::ESCALATION_FILE),
            escalation_open: false,
            project_dir: PathBuf::from(&settings.project_dir),
        }
    }
}

impl NotifierActor {
    /// Queues an escalation with its buttons (`core::buttons::event_buttons`; Rollback when
    /// the manifest names a checkpoint to go back to) after recording it
    /// as the open one, so that a tap acts only while it is. Its id is the time in
    /// milliseconds, after any earlier one.
    fn post_escalation(&mut self, queue: &Queue, html: &str, event: &RunEvent) {
        // The record was written before the event: its newest failure of the phase says
        // whether there is a checkpoint to roll back to.
        let checkpoint = match event {
            RunEvent::NeedsHuman { phase, action, .. } if !action.starts_with("Paused") => {
                crate::io::manifest_file::read(&self.project_dir)
                    .ok()
                    .and_then(|m| m.view().ok())
                    .and_then(|view| rollback_checkpoint(&view, *phase))
            }
            _ => None,
        };
        let offered = event_buttons(event, checkpoint.as_deref()).unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = escalation_file::read_open(&self.escalation_path)
            .map_or(now, |previous| now.max(previous + 1));
        let record = escalation_file::OpenEscalation {
            id,
            checkpoint,
            buttons: offered.iter().map(|a| a.code().to_string()).collect(),
        };
        let buttons = match escalation_file::record_open(&self.escalation_path, &record) {
            Ok(()) => {
                self.escalation_open = true;
                vec![offered
                    .iter()
                    .map(|action| {
                        let button = Button::new(*action, id, &self.prefix);
                        (action.label().to_string(), button.callback_data())
                    })
                    .collect()]
            }
            Err(e) => {
                // Without the record a tap could not be checked: no buttons.
                tracing::warn!(error = %e, "cannot record the open escalation; no buttons");
                Vec::new()
            }
        };
        queue.push_buttons(&self.prefix, html, buttons);
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let (Some(sender), Some(queue)) = (self.sender.clone(), self.queue.clone()) {
            let route = self.route.take();
            let prefix = self.prefix.clone();
            ctx.spawn(drain(queue, sender, self.own_chat, prefix, route).into_actor(self));
        }
    }
}

impl Handler<Notify> for NotifierActor {
    type Result = ();

    fn handle(&mut self, Notify(event): Notify, _: &mut Self::Context) {
        if std::mem::take(&mut self.panic_on_first_event) {
            panic!("injected fault: notifier panic (PIV_FAULT_INJECT)");
        }
        if let Some(card) = self
            .queue
            .as_ref()
            .and_then(|q| q.card.as_ref().map(|c| (q, c)))
        {
            card.1
                .borrow_mut()
                .on_event(&event, std::time::Instant::now());
            card.0.card_changed.notify_one();
        }
        let line = terminal_line(&event);
        if matches!(event, RunEvent::Activity { .. }) {
            // Tool by tool: for the log and the card, not the terminal.
            tracing::debug!(target: "piv::events", "{line}");
            return;
        }
        // The terminal is this tool's user interface, not a log.
        crate::io::terminal::line(&line);
        tracing::info!(target: "piv::events", "{line}");
        if let Some(queue) = self.queue.clone() {
            let queue = &*queue;
            let own_message = delivery(self.level, &event) == ChatDelivery::NewMessage;
            if let (true, Some(html)) = (own_message, telegram_html(&event)) {
                if event_buttons(&event, None).is_some() {
                    self.post_escalation(queue, &html, &event);
                } else if let RunEvent::UsageLimitShared {
                    escalation,
                    waiting,
                    ..
                } = &event
                {
                    // One Pause per waiting project; each instance records the wait as
                    // its own open escalation (`phase_runner::usage`), never this one.
                    let buttons = shared_wait_buttons(*escalation, waiting);
                    queue.push_buttons(&self.prefix, &html, buttons);
                } else {
                    queue.push(MessageKind::Notification, None, None, &self.prefix, &html);
                }
            }
            if matches!(event, RunEvent::StepStarted { .. }) && self.escalation_open {
                // The run goes on: the escalation's buttons are out of date.
                self.escalation_open = false;
                if let Err(e) = escalation_file::write_open(&self.escalation_path, None) {
                    tracing::warn!(error = %e, "cannot close the open escalation");
                }
            }
        }
    }
}

impl Handler<QueueReply> for NotifierActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, reply: QueueReply, _: &mut Self::Context) -> Self::Result {
        let sent = self.queue.as_ref().and_then(|queue| {
            queue
                .push(
                    MessageKind::Reply,
                    (reply.chat_id != self.own_chat).then_some(reply.chat_id),
                    reply.thread,
                    &reply.tag,
                    &reply.html,
                )
                .map(|seq| queue.sent(seq))
        });
        Box::pin(async move {
            if let Some(sent) = sent {
                let _ = sent.await;
            }
        })
    }
}

impl Handler<QueueProjectMessage> for NotifierActor {
    type Result = ();

    fn handle(&mut self, msg: QueueProjectMessage, _: &mut Self::Context) {
        match &self.queue {
            Some(queue) => {
                queue.push(
                    MessageKind::Notification,
                    None,
                    None,
                    &self.prefix,
                    &msg.html,
                );
            }
            None => tracing::info!(text = %msg.html, "no chat for a project message"),
        }
    }
}

impl Handler<Flush> for NotifierActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let Some(queue) = &self.queue else {
            return Box::pin(async {});
        };
        let mut idle = queue.idle.subscribe();
        Box::pin(async move {
            let _ = idle.wait_for(|idle| *idle).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_sends_replies_first_and_coalesces_a_backlog_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::new(Outbox::open_dir(dir.path().join("o")).unwrap());
        assert_eq!(queue.take_next(), None);
        assert!(*queue.idle.borrow());
        queue.push(MessageKind::Notification, None, None, "a", "one");
        assert!(!*queue.idle.borrow());
        queue.push(MessageKind::Notification, None, None, "a", "two");
        queue.push(MessageKind::Reply, Some(-7), Some(12), "a", "answer");
        let next = queue.take_next().unwrap();
        assert_eq!(
            next,
            NextSend {
                chat: Some(-7),
                thread: Some(12),
                buttons: Vec::new(),
                kind: MessageKind::Reply,
                tag: "a".into(),
                body: "answer".into(),
                seqs: vec![3]
            }
        );
        queue.remove(&next.seqs);
        let next = queue.take_next().unwrap();
        assert_eq!(
            (next.chat, next.body.as_str(), next.seqs.clone()),
            (None, "one\n\ntwo", vec![1, 2])
        );
        queue.remove(&next.seqs);
        assert_eq!(queue.take_next(), None);
    }
}
