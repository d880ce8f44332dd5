//! [`ChatSender`]: the single routine that puts a message into a chat (a slot in the
//! bot's send budget shared by every instance of this `$PIV_HOME` using the bot, the
//! send, 429 and error handling). The notifier drains its on-disk outbox (run events and the bot owner's
//! replies) through it; a reply books its slot ahead of every instance's queued
//! notifications. Network errors, timeouts and 5xx are retried for as long as it
//! takes, with a capped backoff; only a message Telegram can never accept is given up.
//!
//! Across machines (`PIV_COORDINATION`) the slot is booked in the budget shared through
//! NATS (`io::coordination::budget_nats`), each attempt bounded by [`SHARED_BUDGET_TIMEOUT`];
//! when it fails, the slot is booked in this machine's file budget at a conservative
//! share (`core::send_slots::degraded_interval_ms`), and the log says so once, and once
//! more when the budget is shared again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::forum::{topic_recovery, TopicRecovery};
use crate::core::outbox::MessageKind;
use crate::core::send_slots::{
    degraded_first_send_ms, degraded_interval_ms, Booking, MAX_BACKOFF_AHEAD,
};
use crate::core::telegram_text::{split_message, split_tagged, TELEGRAM_LIMIT};
use crate::io::coordination::SharedCoordination;
use crate::io::send_budget::{interval_for_chat, Reservation, SendBudget};
use crate::io::telegram::{TelegramClient, TelegramError};
use crate::io::telegram_room::ButtonRows;

/// First pause after a failed send; doubles per attempt...
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// ...up to this, for as long as the failure lasts.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// The longest a booking in (or a 429 written to) the budget shared across machines may
/// take before this send books in the file budget instead: a send never hangs on NATS.
pub const SHARED_BUDGET_TIMEOUT: Duration = Duration::from_millis(750);

/// Whether sending the same message again can never succeed: it is too long, refused
/// (400, 403: bad HTML, chat not found, bot blocked), the token is revoked, the chat
/// moved, or the client cannot be built. Everything else (network, timeouts, 5xx,
/// unreadable answers from a proxy) passes.
pub fn is_permanent(error: &TelegramError) -> bool {
    match error {
        TelegramError::TooLong
        | TelegramError::Unauthorized
        | TelegramError::MigratedToChat(_)
        | TelegramError::Setup(_) => true,
        TelegramError::Api(text) => ["Bad Request", "Forbidden", "Not Found"]
            .iter()
            .any(|refusal| text.contains(refusal)),
        TelegramError::RetryAfter(_)
        | TelegramError::Conflict
        | TelegramError::Network(_)
        | TelegramError::InvalidResponse(_) => false,
    }
}

/// Sends messages to the chats of one bot through the bot's shared send budget.
#[derive(Clone)]
pub struct ChatSender {
    client: TelegramClient,
    /// The bot's directory, holding its send budget (`io::home::bot_dir`).
    bot_dir: PathBuf,
    /// The coordination across machines, when there is one: the budget is booked there.
    shared: Option<SharedCoordination>,
    /// Whether the last booking across machines failed (the log says so once).
    degraded: Arc<AtomicBool>,
}

impl std::fmt::Debug for ChatSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSender")
            .field("bot_dir", &self.bot_dir)
            .field("shared", &self.shared.as_ref().map(|c| c.describe()))
            .finish_non_exhaustive()
    }
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ChatSender {
    pub fn new(client: TelegramClient, bot_dir: PathBuf) -> Self {
        Self {
            client,
            bot_dir,
            shared: None,
            degraded: Arc::default(),
        }
    }

    /// Books slots through `coordination` when it shares the budget across machines.
    pub fn with_coordination(mut self, coordination: Option<SharedCoordination>) -> Self {
        self.shared = coordination;
        self
    }

    /// The file budget: this `$PIV_HOME`'s, at the chat's interval — or, while the budget
    /// across machines does not answer, at this machine's conservative share of it.
    fn budget(&self, chat_id: i64) -> SendBudget {
        let interval = interval_for_chat(chat_id);
        match &self.shared {
            Some(shared) if self.degraded.load(Ordering::SeqCst) => {
                let share =
                    degraded_interval_ms(interval.as_millis() as u64, shared.machines_last_seen());
                SendBudget::with_interval(&self.bot_dir, chat_id, Duration::from_millis(share))
            }
            _ => SendBudget::with_interval(&self.bot_dir, chat_id, interval),
        }
    }

    /// Books in the budget shared across machines: None when there is none or it did not
    /// answer in time (then the file budget books, at this machine's share).
    async fn book_shared(
        &self,
        chat_id: i64,
        kind: MessageKind,
    ) -> Option<(Reservation, tokio::time::Instant)> {
        let shared = self.shared.as_ref()?;
        let booking = shared.book_send(chat_id, kind, interval_for_chat(chat_id))?;
        let failure = match tokio::time::timeout(SHARED_BUDGET_TIMEOUT, booking).await {
            Ok(Ok(booking)) => {
                if self.degraded.swap(false, Ordering::SeqCst) {
                    tracing::warn!("send budget shared across machines again (NATS answers)");
                }
                // Slots are wall-clock times: the wait is counted from now.
                let (now, at) = (
                    ms_since_epoch(SystemTime::now()),
                    tokio::time::Instant::now(),
                );
                let reservation = match booking {
                    Booking::Slot(slot) => {
                        Reservation::SendIn(Duration::from_millis(slot.saturating_sub(now)))
                    }
                    Booking::AskAgainAt(t) => {
                        Reservation::AskAgainIn(Duration::from_millis(t.saturating_sub(now)))
                    }
                };
                return Some((reservation, at));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {SHARED_BUDGET_TIMEOUT:?}"),
        };
        if !self.degraded.swap(true, Ordering::SeqCst) {
            let (interval, machines) = (
                interval_for_chat(chat_id).as_millis() as u64,
                shared.machines_last_seen(),
            );
            let share = degraded_interval_ms(interval, machines);
            tracing::warn!(error = %failure, share_ms = share,
                "send budget across machines unavailable; booking in this machine's budget at a \
                 conservative share until NATS answers again");
            // The other machines' last slots are unknown here: the first send in the file
            // budget waits a whole share, however long ago this machine last sent.
            let first =
                degraded_first_send_ms(ms_since_epoch(SystemTime::now()), interval, machines);
            let budget = self.budget(chat_id);
            let until = UNIX_EPOCH + Duration::from_millis(first);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || budget.push_back(until)).await {
                tracing::warn!(error = %e, "cannot record the degraded budget's first send");
            }
        }
        None
    }

    /// Another machine may have got a 429 since this slot was booked: when the back-off
    /// recorded across machines has not ended, waits it out and says so (true). A read
    /// that fails or takes too long lets the send go (false).
    async fn wait_out_shared_back_off(&self) -> bool {
        // Booked in the file budget (NATS does not answer): no second wait on NATS.
        if self.degraded.load(Ordering::SeqCst) {
            return false;
        }
        let Some(read) = self.shared.as_ref().and_then(|s| s.send_blocked_until()) else {
            return false;
        };
        let Ok(Ok(Some(until))) = tokio::time::timeout(SHARED_BUDGET_TIMEOUT, read).await else {
            return false;
        };
        let now = ms_since_epoch(SystemTime::now());
        // One further ahead than any back-off is taken for a clock that went backwards.
        let horizon = now.saturating_add(MAX_BACKOFF_AHEAD.as_millis() as u64);
        if until <= now || until > horizon {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(until - now)).await;
        true
    }

    /// Books in this home's file budget (the lock blocks, so off the actor thread); the
    /// wait is measured from the booking (the clock is read once the budget's lock is
    /// held), not from when this task resumes.
    async fn book_in_file(
        &self,
        chat_id: i64,
        kind: MessageKind,
    ) -> (Reservation, tokio::time::Instant) {
        let budget = self.budget(chat_id);
        let booked = tokio::task::spawn_blocking(move || {
            let result = budget.book_now(kind);
            (result, tokio::time::Instant::now())
        })
        .await;
        match booked {
            Ok((Ok(reservation), at)) => (reservation, at),
            Ok((Err(e), at)) => {
                tracing::warn!(error = %e, "send budget unavailable; spacing this send locally");
                (Reservation::SendIn(interval_for_chat(chat_id)), at)
            }
            Err(e) => {
                tracing::warn!(error = %e, "send budget task failed; spacing this send locally");
                let wait = interval_for_chat(chat_id);
                (Reservation::SendIn(wait), tokio::time::Instant::now())
            }
        }
    }

    /// Waits for a slot of `chat_id` in the shared budget (the file lock blocks, so it is
    /// taken off the actor thread). A reply books the next slot at once; a notification
    /// may be told to ask again later while the budget is booked ahead (replies first,
    /// `core::send_slots`).
    ///
    /// Returns `false`, having booked nothing, when `preempt` fires while a notification
    /// waits to ask again (a reply of this instance was queued: it goes first).
    async fn wait_for_slot(
        &self,
        chat_id: i64,
        kind: MessageKind,
        preempt: Option<&tokio::sync::Notify>,
    ) -> bool {
        loop {
            let (reservation, from) = match self.book_shared(chat_id, kind).await {
                Some(booked) => booked,
                None => self.book_in_file(chat_id, kind).await,
            };
            match reservation {
                Reservation::SendIn(wait) => {
                    tokio::time::sleep_until(from + wait).await;
                    if self.wait_out_shared_back_off().await {
                        // The slot passed during another machine's back-off: book anew.
                        continue;
                    }
                    return true;
                }
                Reservation::AskAgainIn(wait) => match preempt {
                    Some(preempt) => tokio::select! {
                        _ = tokio::time::sleep_until(from + wait) => {}
                        _ = preempt.notified() => return false,
                    },
                    None => tokio::time::sleep_until(from + wait).await,
                },
            }
        }
    }

    /// Records a 429 for every process of this home, and of every machine when the budget
    /// is shared across them; if neither can be recorded, waits it out here.
    async fn back_off_for(&self, chat_id: i64, retry_after: Duration) {
        let budget = self.budget(chat_id);
        let until = SystemTime::now() + retry_after;
        let shared = match self.shared.as_ref().and_then(|s| s.push_back_send(until)) {
            Some(write) => match tokio::time::timeout(SHARED_BUDGET_TIMEOUT, write).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot share the rate limit across machines");
                    false
                }
                Err(_) => {
                    tracing::warn!("cannot share the rate limit across machines: no answer");
                    false
                }
            },
            None => false,
        };
        // Kept in the file too: it is what this machine books in should NATS stop answering.
        let recorded = tokio::task::spawn_blocking(move || budget.push_back(until)).await;
        if !shared && !matches!(recorded, Ok(Ok(()))) {
            tracing::warn!("cannot record the rate limit in the send budget; waiting locally");
            tokio::time::sleep(retry_after).await;
        }
    }

    /// Sends one finished part (tagged, escaped, within the limit). A 429 waits
    /// `retry_after` in full (recorded for every instance of the home) and retries this
    /// same part, however often it comes; network errors, timeouts and 5xx are retried
    /// with a capped backoff until they pass. Only an error that sending the same text
    /// again cannot cure is returned.
    ///
    /// `preempt` (see [`ChatSender::send_tagged`]) may end the wait for a slot before
    /// anything was sent: then `Ok(false)`.
    pub async fn send_part(
        &self,
        chat_id: i64,
        thread: Option<i64>,
        kind: MessageKind,
        html: &str,
        buttons: &ButtonRows,
        preempt: Option<&tokio::sync::Notify>,
    ) -> Result<bool, TelegramError> {
        let mut attempts = 0u32;
        let mut backoff = FIRST_RETRY_BACKOFF;
        loop {
            if !self.wait_for_slot(chat_id, kind, preempt).await {
                return Ok(false);
            }
            match self
                .client
                .send_html_in(chat_id, thread, html, buttons)
                .await
            {
                Ok(_) => return Ok(true),
                Err(TelegramError::RetryAfter(retry_after)) => {
                    tracing::info!(
                        ?retry_after,
                        "Telegram rate limit; retrying the same message after the wait"
                    );
                    self.back_off_for(chat_id, retry_after).await;
                }
                // Sending the same text again cannot succeed.
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_power_of_two() {
                        tracing::warn!(error = %e, attempt = attempts, ?backoff,
                            "Telegram send failed; the message stays queued and is retried");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
            }
        }
    }

    /// Sends a live status card (one part, already tagged if needed) in a slot of the
    /// shared budget; returns its message id. A 429 is recorded for every instance and
    /// returned (the card is tried again later, never queued).
    pub async fn send_card(
        &self,
        chat_id: i64,
        thread: Option<i64>,
        html: &str,
    ) -> Result<i64, TelegramError> {
        self.wait_for_slot(chat_id, MessageKind::Notification, None)
            .await;
        let result = self
            .client
            .send_html_in(chat_id, thread, html, &Vec::new())
            .await;
        if let Err(TelegramError::RetryAfter(wait)) = &result {
            self.back_off_for(chat_id, *wait).await;
        }
        result
    }

    /// Edits a live status card in a slot of the shared budget ("not modified" is
    /// success).
    pub async fn edit_card(
        &self,
        chat_id: i64,
        message_id: i64,
        html: &str,
    ) -> Result<(), TelegramError> {
        self.wait_for_slot(chat_id, MessageKind::Notification, None)
            .await;
        let result = self
            .client
            .edit_html(chat_id, message_id, html, &Vec::new())
            .await;
        if let Err(TelegramError::RetryAfter(wait)) = &result {
            self.back_off_for(chat_id, *wait).await;
        }
        result
    }

    /// Edits a message the chat acted on (an escalation after a button: the rollback's
    /// question, who chose what) in a reply-kind slot of the shared budget, so a burst of
    /// taps cannot overrun the chat's rate ("not modified" is success).
    pub async fn edit_reply(
        &self,
        chat_id: i64,
        message_id: i64,
        html: &str,
        buttons: &ButtonRows,
    ) -> Result<(), TelegramError> {
        self.wait_for_slot(chat_id, MessageKind::Reply, None).await;
        let result = self
            .client
            .edit_html(chat_id, message_id, html, buttons)
            .await;
        if let Err(TelegramError::RetryAfter(wait)) = &result {
            self.back_off_for(chat_id, *wait).await;
        }
        result
    }

    /// Tags `body` with `[prefix] ` (an empty prefix: untagged, inside the project's own
    /// topic), puts `buttons` (if any) under its last part, splits it under Telegram's limit and sends every part to `chat_id` (forum
    /// topic `thread`, none: the chat or General) in order. A part Telegram can never
    /// accept is logged and skipped, except one refused because of the topic: that ends
    /// the send with [`Sent::TopicFailed`] for the caller to repair the topic and send the
    /// message again (parts already sent then go out twice, which only a message longer
    /// than 4096 characters sent as its topic was deleted can meet).
    ///
    /// While a notification waits for the budget to let it book, `preempt` firing (this
    /// instance queued a reply) gives up before the first part is sent: the caller sends
    /// the reply first and this message later, whole. Once a part went out the rest
    /// follows.
    pub async fn send_tagged(
        &self,
        (chat_id, thread): (i64, Option<i64>),
        kind: MessageKind,
        prefix: &str,
        body: &str,
        buttons: &ButtonRows,
        preempt: Option<&tokio::sync::Notify>,
    ) -> Sent {
        let mut all_sent = true;
        let parts = if prefix.is_empty() {
            split_message(body, TELEGRAM_LIMIT)
        } else {
            split_tagged(prefix, body, TELEGRAM_LIMIT)
        };
        let none = ButtonRows::new();
        for (i, part) in parts.iter().enumerate() {
            let preempt = if i == 0 { preempt } else { None };
            // The buttons go under the last part.
            let buttons = if i + 1 == parts.len() { buttons } else { &none };
            match self
                .send_part(chat_id, thread, kind, part, buttons, preempt)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Sent::Preempted,
                Err(TelegramError::Api(text))
                    if thread.is_some() && topic_recovery(&text).is_some() =>
                {
                    tracing::warn!(error = %text, "Telegram refused a message because of its topic");
                    return Sent::TopicFailed(
                        topic_recovery(&text).unwrap_or(TopicRecovery::Recreate),
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Telegram refused a message part for good; skipped");
                    all_sent = false;
                }
            }
        }
        Sent::Done { all_sent }
    }
}

/// How [`ChatSender::send_tagged`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Every part was sent, or given up on for good (`all_sent: false`).
    Done { all_sent: bool },
    /// Nothing was sent: a reply was queued first.
    Preempted,
    /// The topic refused it (deleted, closed, no rights): repair and send again.
    TopicFailed(TopicRecovery),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::coordination::{BoxFuture, Coordination, CoordinationError, PollerLease};

    /// Coordination across machines whose budget never answers (NATS down).
    struct BudgetDown;

    impl Coordination for BudgetDown {
        fn describe(&self) -> String {
            "NATS, down".into()
        }
        fn acquire_poller_lease(
            &self,
            _stop: tokio::sync::watch::Receiver<bool>,
            _notes: tokio::sync::mpsc::UnboundedSender<String>,
        ) -> BoxFuture<'_, Option<Box<dyn PollerLease>>> {
            Box::pin(async { None })
        }
        fn read_offset(&self) -> BoxFuture<'_, Option<i64>> {
            Box::pin(async { None })
        }
        fn write_offset<'a>(
            &'a self,
            _lease: &'a dyn PollerLease,
            _update_id: i64,
        ) -> BoxFuture<'a, Result<(), CoordinationError>> {
            Box::pin(async { Err(CoordinationError::LeaseLost) })
        }
        fn book_send(
            &self,
            _chat_id: i64,
            _kind: MessageKind,
            _interval: Duration,
        ) -> Option<BoxFuture<'_, Result<Booking, CoordinationError>>> {
            Some(Box::pin(async {
                Err(CoordinationError::JetStream {
                    step: "book a send slot",
                    reason: "no answer".into(),
                })
            }))
        }
        fn machines_last_seen(&self) -> usize {
            3
        }
    }

    /// The first send after the shared budget stops answering waits a whole share (the
    /// chat's interval × the machines last seen), although this machine's own file budget
    /// has nothing booked; the next ones are spaced by the share.
    #[actix_rt::test]
    async fn the_first_send_after_losing_the_shared_budget_waits_a_whole_share() {
        let home = tempfile::tempdir().unwrap();
        let client = TelegramClient::new("5:t", "http://127.0.0.1:9", 1).unwrap();
        let sender = ChatSender::new(client, home.path().to_path_buf())
            .with_coordination(Some(Arc::new(BudgetDown)));
        let chat = 42;
        let share = Duration::from_millis(degraded_interval_ms(
            interval_for_chat(chat).as_millis() as u64,
            3,
        ));
        let start = tokio::time::Instant::now();
        assert!(
            sender
                .wait_for_slot(chat, MessageKind::Notification, None)
                .await
        );
        let first = start.elapsed();
        // The wall clock and tokio's may differ by a few ms in rounding.
        assert!(
            first + Duration::from_millis(20) >= share,
            "{first:?} < {share:?}"
        );
        assert!(sender.degraded.load(Ordering::SeqCst));
        assert!(
            sender
                .wait_for_slot(chat, MessageKind::Notification, None)
                .await
        );
        let second = start.elapsed() - first;
        assert!(
            second + Duration::from_millis(20) >= share,
            "{second:?} < {share:?}"
        );
    }
}
