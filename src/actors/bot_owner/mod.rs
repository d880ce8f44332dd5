//! The bot owner: the one instance per bot and `$PIV_HOME` that long-polls Telegram and
//! answers the commands of the bot's chats. Ownership is the kernel's exclusive lock on
//! `$PIV_HOME/bots/<bot id>/owner.lock` (`io::home::owner_lock_path`): every instance with
//! Telegram waits for its bot's lock in a thread of its own, and the instant the owner
//! exits or dies a waiter gets it and starts polling. Instances of different bots on one
//! home do not wait for each other.
//!
//! Updates are never dropped on takeover, and answered once: the last handled
//! `update_id` goes to the bot's `offset.json` (`io::bot_offset`) once its reply was
//! sent (through the notifier's on-disk outbox) and before the next poll, and a new owner skips anything at or
//! below it (Telegram forgets an update only when the next `getUpdates` confirms it).
//!
//! The owner answers every chat some live registered instance of its bot reports to
//! (`core::bot_chats`), in the chat the command came from; in each chat `/status all`,
//! prefix routing and prefix-less commands consider only that chat's instances.
//! The loop's pace is `core::telegram_poll`'s: a server that answers at once is never
//! hammered. Commands are parsed and routed by `core::commands`; a command for this
//! instance is a `Control` to the supervisor, one for another instance a signal file in
//! its queue; statuses are shown by `core::status_report`; replies are queued in the
//! notifier's outbox, ahead of its notifications.

use std::path::PathBuf;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use crate::actors::control::{Control, Notify};
use crate::actors::notifier::{NotifierActor, QueueReply};
use crate::actors::registry::{ListInstances, RegistryActor, SetBotOwner};
use crate::core::bot_chats::{allowed_chats, instances_in_chat, route_among, BotChat};
use crate::core::commands::{
    acts, command_menu, in_topic_of, is_allowed_chat, is_stale, parse_command, reply_ask_which,
    reply_sent, reply_stale, reply_unknown_command, reply_unknown_prefix, route, Command, Route,
    StatusTarget,
};
use crate::core::control::ControlAction;
use crate::core::events::RunEvent;
use crate::core::manifest::ManifestView;
use crate::core::registry::Instance;
use crate::core::status::{InstanceFacts, InstanceStatus};
use crate::core::status_report::{multi_status_reply, status_reply};
use crate::core::telegram_poll::{is_new, next_offset, PollOutcome, PollPacer};
use crate::core::telegram_text::format_help;
use crate::io::coordination::local::LocalCoordination;
use crate::io::coordination::{elsewhere, Coordinator, PollerLease, SharedCoordination};
use crate::io::home::{ensure_bot_dir, owner_lock_path};
use crate::io::lock::{lock_exclusive, try_lock_exclusive, LockGuard};
use crate::io::room_reads;
use crate::io::telegram::{IncomingUpdate, TelegramClient, TelegramError};
use crate::io::{manifest_file, signal_queue, status_probe};

/// Telegram's usual long-poll length.
pub const DEFAULT_POLL_TIMEOUT_SECS: u32 = 25;

/// Who this instance is and how it reaches the bot.
#[derive(Clone)]
pub struct BotOwnerSettings {
    pub prefix: String,
    pub project_dir: PathBuf,
    pub home: PathBuf,
    pub token: String,
    /// The token's bot id: names the bot's owner lock, offset and send budget.
    pub bot_id: u64,
    /// This instance's chat; answered, with every other chat a live instance of the
    /// same bot reports to.
    pub chat_id: i64,
    pub api_url: String,
    /// Long-poll length ([`DEFAULT_POLL_TIMEOUT_SECS`] normally).
    pub poll_timeout_secs: u32,
    /// A command that changes what an instance does is not acted on when older than
    /// this (`PIV_STALE_COMMAND_SECS`).
    pub stale_command_secs: u64,
    /// Across machines (`io::coordination`): None is this machine only.
    pub coordinator: Option<Coordinator>,
}

impl std::fmt::Debug for BotOwnerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotOwnerSettings")
            .field("prefix", &self.prefix)
            .field("project_dir", &self.project_dir)
            .field("home", &self.home)
            .field("token", &"<redacted>")
            .field("bot_id", &self.bot_id)
            .field("chat_id", &self.chat_id)
            .field("api_url", &self.api_url)
            .field("poll_timeout_secs", &self.poll_timeout_secs)
            .field("stale_command_secs", &self.stale_command_secs)
            .finish()
    }
}

/// Stop polling and release the owner lock (shutdown); resolves once released, so another
/// instance can take over at once.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct StopPolling;

/// The lock thread got the bot's `owner.lock`; `waited` when another instance held it first.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct OwnershipAcquired {
    pub guard: LockGuard,
    pub waited: bool,
}

/// The running poll loop, from the actor's side.
struct PollHandle {
    stop: watch::Sender<bool>,
    /// Fires once the loop has ended and the lock is released.
    released: oneshot::Receiver<()>,
}

/// Waits for bot ownership, then polls and answers (see the module docs).
pub struct BotOwnerActor {
    settings: BotOwnerSettings,
    control: Recipient<Control>,
    notifier: Addr<NotifierActor>,
    registry: Option<Addr<RegistryActor>>,
    client: Option<TelegramClient>,
    stopped: bool,
    poll: Option<PollHandle>,
}

impl BotOwnerActor {
    pub fn new(
        settings: BotOwnerSettings,
        control: Recipient<Control>,
        notifier: Addr<NotifierActor>,
        registry: Option<Addr<RegistryActor>>,
    ) -> Self {
        let client = match TelegramClient::new(
            &settings.token,
            &settings.api_url,
            settings.poll_timeout_secs,
        ) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::error!(error = %e, "Telegram commands disabled");
                None
            }
        };
        Self {
            settings,
            control,
            notifier,
            registry,
            client,
            stopped: false,
            poll: None,
        }
    }
}

impl BotOwnerActor {
    /// Waits for the bot's owner lock in a thread (the wait blocks; on the actor thread
    /// it would stall every actor) and sends `OwnershipAcquired` when it is ours.
    fn wait_for_ownership(&mut self, ctx: &mut Context<Self>) {
        let home = self.settings.home.clone();
        let bot_id = self.settings.bot_id;
        let me = ctx.address();
        let spawned = std::thread::Builder::new()
            .name("bot-owner-lock".into())
            .spawn(move || {
                let acquired = acquire_ownership(&home, bot_id);
                match acquired {
                    // If the actor is gone the message, and with it the lock, is dropped.
                    Ok((guard, waited)) => me.do_send(OwnershipAcquired { guard, waited }),
                    Err(e) => tracing::error!(error = %e, "cannot wait for bot ownership; this instance will not answer Telegram commands"),
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the bot-owner lock thread");
        }
    }
}

/// Takes the owner lock of `bot_id` in `home`, waiting for it if another instance holds
/// it; says whether it waited. (The one place ownership is decided: a coordination lease
/// would be taken here too.)
fn acquire_ownership(
    home: &std::path::Path,
    bot_id: u64,
) -> Result<(LockGuard, bool), Box<dyn std::error::Error + Send + Sync>> {
    ensure_bot_dir(home, bot_id)?;
    let path = owner_lock_path(home, bot_id);
    match try_lock_exclusive(&path)? {
        Some(guard) => Ok((guard, false)),
        None => {
            tracing::info!(
                bot_id,
                "waiting to become bot owner (another instance polls this bot)"
            );
            Ok((lock_exclusive(&path)?, true))
        }
    }
}

/// The poll loop ended because the guard no longer locks the real lock file: go back to
/// waiting for it.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct OwnershipLost;

impl Handler<OwnershipLost> for BotOwnerActor {
    type Result = ();

    fn handle(&mut self, _: OwnershipLost, ctx: &mut Self::Context) {
        self.poll = None;
        if let Some(registry) = &self.registry {
            registry.do_send(SetBotOwner(false));
        }
        if !self.stopped {
            self.wait_for_ownership(ctx);
        }
    }
}

impl Actor for BotOwnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.client.is_none() {
            return;
        }
        if let Some(note) = self
            .settings
            .coordinator
            .as_ref()
            .and_then(|c| c.fallback_note.clone())
        {
            self.notifier.do_send(Notify(RunEvent::Info(note)));
        }
        self.wait_for_ownership(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.poll.take().is_some() {
            if let Some(registry) = &self.registry {
                registry.do_send(SetBotOwner(false));
            }
        }
    }
}

impl Handler<OwnershipAcquired> for BotOwnerActor {
    type Result = ();

    fn handle(&mut self, msg: OwnershipAcquired, ctx: &mut Self::Context) {
        let Some(client) = self.client.clone() else {
            return;
        };
        if self.stopped {
            // Shutting down: hand the lock straight on.
            drop(msg.guard);
            return;
        }
        tracing::info!("bot owner now: polling Telegram for commands");
        if let Some(registry) = self.registry.clone() {
            actix::spawn(async move {
                match registry.send(SetBotOwner(true)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot mark this instance bot owner in the registry")
                    }
                    Err(e) => tracing::warn!(error = %e, "registry unreachable"),
                }
            });
        }
        if msg.waited {
            self.notifier.do_send(Notify(RunEvent::Info(
                "🤖 Took over the Telegram bot: this instance now answers commands".into(),
            )));
        }
        let s = &self.settings;
        // The local winner competes for the lease across machines (at once granted when
        // this machine is all there is).
        let coordination: SharedCoordination = match &s.coordinator {
            Some(c) => c.shared.clone(),
            None => std::sync::Arc::new(LocalCoordination::new(crate::io::home::bot_dir(
                &s.home, s.bot_id,
            ))),
        };
        let mut poller = Poller {
            prefix: s.prefix.clone(),
            project_dir: s.project_dir.clone(),
            home: s.home.clone(),
            own: BotChat {
                bot_id: s.bot_id,
                chat_id: s.chat_id,
            },
            poll_timeout_secs: s.poll_timeout_secs,
            stale_command_secs: s.stale_command_secs,
            notifier: self.notifier.clone(),
            client,
            control: self.control.clone(),
            registry: self.registry.clone(),
            bot_username: None,
            last_handled: None,
            coordination: coordination.clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let (released_tx, released_rx) = oneshot::channel();
        let guard = msg.guard;
        let me = ctx.address();
        // Coordination lost / back, for the chat (straight to the Bot API as usual).
        let (notes, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
        let notifier = self.notifier.clone();
        ctx.spawn(
            async move {
                while let Some(note) = heard.recv().await {
                    notifier.do_send(Notify(RunEvent::Info(note)));
                }
            }
            .into_actor(self),
        );
        let task = async move {
            let ended = loop {
                let Some(lease) = coordination
                    .acquire_poller_lease(stop_rx.clone(), notes.clone())
                    .await
                else {
                    break PollEnd::Stopped;
                };
                match poller.run(stop_rx.clone(), &guard, lease.as_ref()).await {
                    PollEnd::LeaseLost => {
                        tracing::warn!(
                            "the poller lease was lost: not polling until it is won again"
                        );
                        continue;
                    }
                    ended => {
                        lease.release().await;
                        break ended;
                    }
                }
            };
            drop(guard);
            tracing::info!("stopped polling Telegram; bot-owner lock released");
            let _ = released_tx.send(());
            if ended == PollEnd::LockLost {
                me.do_send(OwnershipLost);
            }
        };
        ctx.spawn(task.into_actor(self));
        self.poll = Some(PollHandle {
            stop: stop_tx,
            released: released_rx,
        });
    }
}

impl Handler<StopPolling> for BotOwnerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: StopPolling, _: &mut Self::Context) -> Self::Result {
        self.stopped = true;
        let Some(poll) = self.poll.take() else {
            return Box::pin(async {});
        };
        let _ = poll.stop.send(true);
        let registry = self.registry.clone();
        Box::pin(async move {
            let _ = poll.released.await;
            if let Some(registry) = registry {
                if let Ok(Err(e)) = registry.send(SetBotOwner(false)).await {
                    tracing::warn!(error = %e, "cannot clear the bot-owner mark in the registry");
                }
            }
        })
    }
}

/// Everything the poll loop needs, owned by the loop's task.
struct Poller {
    prefix: String,
    project_dir: PathBuf,
    home: PathBuf,
    /// The bot and this instance's own chat.
    own: BotChat,
    poll_timeout_secs: u32,
    stale_command_secs: u64,
    client: TelegramClient,
    /// Replies go through the notifier's on-disk outbox, ahead of its notifications.
    notifier: Addr<NotifierActor>,
    control: Recipient<Control>,
    registry: Option<Addr<RegistryActor>>,
    bot_username: Option<String>,
    last_handled: Option<i64>,
    /// The lease across machines and the offset (`io::coordination`).
    coordination: SharedCoordination,
}

/// Resolves when a stop is asked for (or nobody can ask any more).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Why the poll loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PollEnd {
    Stopped,
    /// The lock file was deleted or replaced: someone else may hold the real lock now.
    LockLost,
    /// The poller lease across machines was lost (fencing failed, renewal refused or
    /// past its end).
    LeaseLost,
}

impl Poller {
    async fn run(
        &mut self,
        mut stop: watch::Receiver<bool>,
        guard: &LockGuard,
        lease: &dyn PollerLease,
    ) -> PollEnd {
        self.last_handled = self.coordination.read_offset().await;
        let poll_timeout_secs = self.coordination.poll_timeout_secs(self.poll_timeout_secs);
        let mut pacer = PollPacer::new();
        let mut warned_conflict = false;
        // A new owner's first request is a getUpdates (commands sent during a takeover
        // are waiting); getMe and setMyCommands come after it.
        let mut first = true;
        loop {
            if *stop.borrow() {
                return PollEnd::Stopped;
            }
            // Fencing: never poll on a lease that may be someone else's by now.
            if !lease.check().await {
                return PollEnd::LeaseLost;
            }
            let offset = next_offset(self.last_handled, &[]);
            let asked = tokio::time::Instant::now();
            let timeout = if first { 0 } else { poll_timeout_secs };
            let polled = tokio::select! {
                _ = stop_requested(&mut stop) => return PollEnd::Stopped,
                _ = lease.lost() => return PollEnd::LeaseLost,
                polled = self.client.get_updates(offset, timeout) => polled,
            };
            if std::mem::take(&mut first) {
                self.introduce().await;
            }
            let outcome = match polled {
                // Updates fetched on a lease lost meanwhile are left to the new owner
                // (not handled, not confirmed).
                Ok(updates) if !updates.is_empty() && !lease.check().await => {
                    return PollEnd::LeaseLost;
                }
                Ok(updates) => {
                    let mut fresh = false;
                    for update in updates {
                        // Handling is never cut short: a reply sent but not recorded
                        // would be sent again by the next owner.
                        if *stop.borrow() {
                            return PollEnd::Stopped;
                        }
                        fresh |= self.take(update, lease).await;
                    }
                    if fresh {
                        PollOutcome::NewUpdates
                    } else {
                        PollOutcome::NothingNew {
                            held: asked.elapsed(),
                        }
                    }
                }
                // A 409: check that we really hold the lock. If the lock file was deleted
                // or replaced, a newcomer may hold the real one: stop and wait for it.
                // If we hold it, the other poller is not of this home.
                Err(TelegramError::Conflict) if !guard.still_locks_its_path() => {
                    tracing::warn!(
                        "Telegram 409 and the bot-owner lock file was deleted or replaced: \
                         another instance may own the bot now; stopping polling and waiting for the lock"
                    );
                    return PollEnd::LockLost;
                }
                Err(TelegramError::Conflict) => {
                    if warned_conflict {
                        tracing::debug!("Telegram 409 again: the outside poller is still there");
                    } else {
                        warned_conflict = true;
                        tracing::warn!(
                            "Telegram says another getUpdates is polling this bot token (409). \
                             This instance holds the bot-owner lock, so the other poller is outside \
                             this PIV_HOME: another machine, another PIV_HOME or another program \
                             using the same bot token. Backing off and retrying; give each its own bot."
                        );
                    }
                    PollOutcome::Failed
                }
                Err(TelegramError::RetryAfter(d)) => {
                    tracing::warn!(
                        ?d,
                        "Telegram asked getUpdates to wait; waiting it out in full"
                    );
                    PollOutcome::RetryAfter(d)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Telegram getUpdates failed; retrying");
                    PollOutcome::Failed
                }
            };
            let wait = if timeout == 0 && matches!(outcome, PollOutcome::NothingNew { .. }) {
                // The quick first poll asked for no wait.
                std::time::Duration::ZERO
            } else {
                pacer.after(outcome)
            };
            if wait.is_zero() {
                continue;
            }
            if matches!(outcome, PollOutcome::NothingNew { .. }) {
                tracing::debug!(
                    ?wait,
                    "getUpdates answered at once with nothing new; pausing"
                );
            }
            tokio::select! {
                _ = stop_requested(&mut stop) => return PollEnd::Stopped,
                _ = lease.lost() => return PollEnd::LeaseLost,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// After the first poll: learn the bot's username (to tell `/cmd@this_bot` from
    /// commands for other bots) and register the command menu in the background.
    async fn introduce(&mut self) {
        let client = self.client.clone();
        actix::spawn(async move {
            if let Err(e) = client.set_my_commands(&command_menu()).await {
                tracing::warn!(error = %e, "cannot register the command menu (setMyCommands)");
            }
        });
        self.bot_username = match self.client.get_me().await {
            Ok(name) => Some(name),
            Err(e) => {
                tracing::warn!(error = %e, "getMe failed; accepting /command@any-bot");
                None
            }
        };
    }

    /// Handles one update (unless an earlier owner already did) and records it; returns
    /// whether it was new.
    async fn take(&mut self, update: IncomingUpdate, lease: &dyn PollerLease) -> bool {
        if !is_new(update.update_id, self.last_handled) {
            tracing::debug!(
                update_id = update.update_id,
                "skipping an update already handled"
            );
            return false;
        }
        self.handle(&update).await;
        self.last_handled = Some(update.update_id);
        if let Err(e) = self
            .coordination
            .write_offset(lease, update.update_id)
            .await
        {
            tracing::warn!(error = %e, "cannot record the last handled Telegram update");
        }
        true
    }
}

mod answers;
