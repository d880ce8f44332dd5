//! [`ChatSender`]: the single routine that puts a message into a chat (a slot in the
//! bot's send budget shared by every instance of this `$PIV_HOME` using the bot, the
//! send, 429 and error handling). The notifier drains its on-disk outbox (run events and the bot owner's
//! replies) through it; a reply books its slot ahead of every instance's queued
//! notifications. Network errors, timeouts and 5xx are retried for as long as it
//! takes, with a capped backoff; only a message Telegram can never accept is given up.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::core::forum::{topic_recovery, TopicRecovery};
use crate::core::outbox::MessageKind;
use crate::core::telegram_text::{split_message, split_tagged, TELEGRAM_LIMIT};
use crate::io::send_budget::{interval_for_chat, Reservation, SendBudget};
use crate::io::telegram::{TelegramClient, TelegramError};
use crate::io::telegram_room::ButtonRows;

/// First pause after a failed send; doubles per attempt...
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(500);
/// ...up to this, for as long as the failure lasts.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

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
#[derive(Clone, Debug)]
pub struct ChatSender {
    client: TelegramClient,
    /// The bot's directory, holding its send budget (`io::home::bot_dir`).
    bot_dir: PathBuf,
}

impl ChatSender {
    pub fn new(client: TelegramClient, bot_dir: PathBuf) -> Self {
        Self { client, bot_dir }
    }

    fn budget(&self, chat_id: i64) -> SendBudget {
        SendBudget::new(&self.bot_dir, chat_id)
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
            let budget = self.budget(chat_id);
            // The wait is measured from the booking (the clock is read once the budget's
            // lock is held), not from when this task resumes.
            let booked = tokio::task::spawn_blocking(move || {
                let result = budget.book_now(kind);
                (result, tokio::time::Instant::now())
            })
            .await;
            let (reservation, from) = match booked {
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
            };
            match reservation {
                Reservation::SendIn(wait) => {
                    tokio::time::sleep_until(from + wait).await;
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

    /// Records a 429 for every process of this home; if that fails, waits it out here.
    async fn back_off_for(&self, chat_id: i64, retry_after: Duration) {
        let budget = self.budget(chat_id);
        let until = SystemTime::now() + retry_after;
        let recorded = tokio::task::spawn_blocking(move || budget.push_back(until)).await;
        if !matches!(recorded, Ok(Ok(()))) {
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
