//! [`TopicRoute`]: finds, creates and repairs the forum topic an instance's messages go
//! to in its own chat (issue 14). It asks `getChat` whether the chat has topics, reuses
//! the topic remembered in the bot's topic store (`io::topic_store`, shared across
//! restarts and takeovers), creates one named after the prefix when there is none, and
//! after a topic error recreates (deleted), reopens (closed) or falls back to General
//! (no right to manage topics). Where each message goes is `core::forum`'s decision.

use std::time::Duration;

use crate::core::forum::{icon_color, topic_name, topic_recovery, TopicRecovery, TopicState};
use crate::io::chat_sender::is_permanent;
use crate::io::telegram::{TelegramClient, TelegramError};
use crate::io::topic_store::{Topic, TopicStore};

/// First pause when the topic cannot be found out because Telegram is unreachable...
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// ...doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The topic of one project in its own chat (see the module docs).
#[derive(Debug)]
pub struct TopicRoute {
    client: TelegramClient,
    store: TopicStore,
    chat_id: i64,
    project_dir: String,
    prefix: String,
    state: TopicState,
    /// The fallback to General is said once per process.
    fallback_notice_due: bool,
}

impl TopicRoute {
    /// `enabled: false` (`PIV_TELEGRAM_TOPICS=off`) keeps every message in the chat itself.
    pub fn new(
        client: TelegramClient,
        store: TopicStore,
        chat_id: i64,
        project_dir: String,
        prefix: String,
        enabled: bool,
    ) -> Self {
        Self {
            client,
            store,
            chat_id,
            project_dir,
            prefix,
            state: if enabled {
                TopicState::Unknown
            } else {
                TopicState::NoTopics
            },
            fallback_notice_due: false,
        }
    }

    /// The chat this route is for.
    pub fn chat_id(&self) -> i64 {
        self.chat_id
    }

    /// The state, found out first if unknown (waits out network failures).
    pub async fn state(&mut self) -> TopicState {
        let mut backoff = FIRST_BACKOFF;
        while self.state == TopicState::Unknown {
            match self.find_out().await {
                Ok(state) => self.state = state,
                Err(e) if is_permanent(&e) => {
                    tracing::warn!(error = %e, "cannot tell whether the chat has topics; sending without");
                    self.state = TopicState::NoTopics;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "cannot reach Telegram to find the project's topic; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        self.state
    }

    /// Once, after falling back to General: the notice to send.
    pub fn take_fallback_notice(&mut self) -> bool {
        std::mem::take(&mut self.fallback_notice_due)
    }

    async fn find_out(&mut self) -> Result<TopicState, TelegramError> {
        if let Some(topic) = self.remembered().await {
            return Ok(TopicState::Topic(topic.thread_id));
        }
        if !self.client.chat_is_forum(self.chat_id).await? {
            return Ok(TopicState::NoTopics);
        }
        self.create().await
    }

    async fn remembered(&self) -> Option<Topic> {
        let store = self.store.clone();
        let (chat, dir) = (self.chat_id, self.project_dir.clone());
        match tokio::task::spawn_blocking(move || store.topic(chat, &dir)).await {
            Ok(Ok(topic)) => topic,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the remembered topics");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the remembered topics");
                None
            }
        }
    }

    /// Creates the project's topic and remembers it; no right → General.
    async fn create(&mut self) -> Result<TopicState, TelegramError> {
        let name = topic_name(&self.prefix);
        match self
            .client
            .create_forum_topic(self.chat_id, &name, icon_color(&name))
            .await
        {
            Ok(thread) => {
                tracing::info!(thread, name = %name, "created the project's forum topic");
                let store = self.store.clone();
                let topic = Topic::new(self.chat_id, &self.project_dir, &self.prefix, thread);
                match tokio::task::spawn_blocking(move || store.remember(topic)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot remember the topic"),
                    Err(e) => tracing::warn!(error = %e, "cannot remember the topic"),
                }
                Ok(TopicState::Topic(thread))
            }
            Err(TelegramError::Api(text))
                if topic_recovery(&text) == Some(TopicRecovery::FallBackToGeneral) =>
            {
                Ok(self.fall_back(&text))
            }
            Err(e) => Err(e),
        }
    }

    fn fall_back(&mut self, why: &str) -> TopicState {
        tracing::warn!(
            reason = why,
            "no right to manage topics; sending to General"
        );
        self.fallback_notice_due = true;
        TopicState::General
    }

    /// Repairs the topic after a send into `thread` failed as `recovery` says; the caller
    /// sends again.
    pub async fn recover(&mut self, recovery: TopicRecovery, thread: i64) {
        match recovery {
            TopicRecovery::FallBackToGeneral => self.state = self.fall_back("send refused"),
            TopicRecovery::Reopen => {
                match self.client.reopen_forum_topic(self.chat_id, thread).await {
                    Ok(()) => tracing::info!(thread, "reopened the project's closed topic"),
                    Err(TelegramError::Api(text))
                        if topic_recovery(&text) == Some(TopicRecovery::FallBackToGeneral) =>
                    {
                        self.state = self.fall_back(&text);
                    }
                    Err(e) => {
                        // Reopened by someone meanwhile, or gone: find out afresh.
                        tracing::warn!(error = %e, thread, "cannot reopen the topic");
                        self.forget(thread).await;
                        self.state = TopicState::Unknown;
                    }
                }
            }
            TopicRecovery::Recreate => {
                tracing::info!(thread, "the project's topic was deleted; making a new one");
                self.forget(thread).await;
                self.state = TopicState::Unknown;
            }
        }
    }

    async fn forget(&self, thread: i64) {
        let store = self.store.clone();
        let (chat, dir) = (self.chat_id, self.project_dir.clone());
        match tokio::task::spawn_blocking(move || store.forget(chat, &dir, thread)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot forget the deleted topic"),
            Err(e) => tracing::warn!(error = %e, "cannot forget the deleted topic"),
        }
    }
}
