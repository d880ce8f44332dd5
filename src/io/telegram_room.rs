//! The Bot API calls of the chat control room: whether a chat has topics, creating and
//! reopening a project's forum topic, sending into a topic with inline buttons, editing a
//! message in place, and answering a tapped button. Errors go through the same redaction
//! as every other call ([`crate::io::telegram`]).

use teloxide::payloads::{
    AnswerCallbackQuerySetters, CreateForumTopicSetters, EditMessageTextSetters, SendMessageSetters,
};
use teloxide::prelude::*;
use teloxide::types::{
    CallbackQueryId, ChatFullInfoKind, ChatFullInfoPublicKind, InlineKeyboardButton,
    InlineKeyboardMarkup, MessageId, ParseMode, Rgb, ThreadId,
};

use crate::core::forum::thread_for_send;
use crate::io::telegram::{TelegramClient, TelegramError};

/// Rows of inline buttons: (label, callback data).
pub type ButtonRows = Vec<Vec<(String, String)>>;

fn keyboard(rows: &ButtonRows) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new(rows.iter().map(|row| {
        row.iter()
            .map(|(label, data)| InlineKeyboardButton::callback(label.clone(), data.clone()))
            .collect::<Vec<_>>()
    }))
}

fn thread(id: i64) -> Result<ThreadId, TelegramError> {
    i32::try_from(id)
        .map(|id| ThreadId(MessageId(id)))
        .map_err(|_| TelegramError::Api(format!("thread id {id} out of range")))
}

/// An edit Telegram refused only because nothing changed counts as done.
pub fn is_not_modified(error: &TelegramError) -> bool {
    matches!(error, TelegramError::Api(text) if text.contains("message is not modified"))
}

impl TelegramClient {
    /// Whether the chat is a supergroup with topics on (`getChat` → `is_forum`).
    pub async fn chat_is_forum(&self, chat_id: i64) -> Result<bool, TelegramError> {
        let chat = self
            .bot()
            .get_chat(ChatId(chat_id))
            .await
            .map_err(|e| self.error(e))?;
        Ok(match chat.kind {
            ChatFullInfoKind::Public(public) => match public.kind {
                ChatFullInfoPublicKind::Supergroup(group) => group.is_forum,
                _ => false,
            },
            ChatFullInfoKind::Private(_) => false,
        })
    }

    /// Creates a forum topic; returns its thread id.
    pub async fn create_forum_topic(
        &self,
        chat_id: i64,
        name: &str,
        icon_color: u32,
    ) -> Result<i64, TelegramError> {
        let topic = self
            .bot()
            .create_forum_topic(ChatId(chat_id), name)
            .icon_color(Rgb::from_u32(icon_color))
            .await
            .map_err(|e| self.error(e))?;
        Ok(i64::from(topic.thread_id.0 .0))
    }

    /// Reopens a closed forum topic.
    pub async fn reopen_forum_topic(
        &self,
        chat_id: i64,
        thread_id: i64,
    ) -> Result<(), TelegramError> {
        self.bot()
            .reopen_forum_topic(ChatId(chat_id), thread(thread_id)?)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Sends one HTML message into a topic (none: General, never thread 1) with optional
    /// buttons; returns the message id (for editing it later).
    pub async fn send_html_in(
        &self,
        chat_id: i64,
        topic: Option<i64>,
        html: &str,
        buttons: &ButtonRows,
    ) -> Result<i64, TelegramError> {
        let mut request = self
            .bot()
            .send_message(ChatId(chat_id), html)
            .parse_mode(ParseMode::Html);
        if let Some(id) = thread_for_send(topic) {
            request = request.message_thread_id(thread(id)?);
        }
        if !buttons.is_empty() {
            request = request.reply_markup(keyboard(buttons));
        }
        let message = request.await.map_err(|e| self.error(e))?;
        Ok(i64::from(message.id.0))
    }

    /// Replaces a message's text (and its buttons: an empty `buttons` removes them).
    /// "message is not modified" is success.
    pub async fn edit_html(
        &self,
        chat_id: i64,
        message_id: i64,
        html: &str,
        buttons: &ButtonRows,
    ) -> Result<(), TelegramError> {
        let id = i32::try_from(message_id)
            .map_err(|_| TelegramError::Api(format!("message id {message_id} out of range")))?;
        let result = self
            .bot()
            .edit_message_text(ChatId(chat_id), MessageId(id), html)
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard(buttons))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e));
        match result {
            Err(e) if is_not_modified(&e) => Ok(()),
            other => other,
        }
    }

    /// Answers a tapped button at once: a short notice, or an alert the user must dismiss.
    pub async fn answer_callback(
        &self,
        callback_id: &str,
        text: &str,
        alert: bool,
    ) -> Result<(), TelegramError> {
        self.bot()
            .answer_callback_query(CallbackQueryId(callback_id.to_string()))
            .text(text)
            .show_alert(alert)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_edits_count_as_done() {
        let not_modified = TelegramError::Api(
            "Bad Request: message is not modified: specified new message content and reply \
             markup are exactly the same as a current content and reply markup of the message"
                .into(),
        );
        assert!(is_not_modified(&not_modified));
        assert!(!is_not_modified(&TelegramError::Api(
            "Bad Request: message to edit not found".into()
        )));
        assert!(!is_not_modified(&TelegramError::TooLong));
    }

    #[test]
    fn thread_ids_out_of_range_are_errors() {
        assert!(thread(7).is_ok());
        assert!(thread(i64::from(i32::MAX) + 1).is_err());
    }

    #[tokio::test]
    async fn failures_show_no_token() {
        let token = "123456:room-secret-token";
        let client = TelegramClient::new(token, "http://127.0.0.1:1/", 1).unwrap();
        let rows: ButtonRows = vec![vec![("Retry".into(), "piv:r:1:p".into())]];
        let errors = [
            client.chat_is_forum(-100).await.unwrap_err(),
            client
                .create_forum_topic(-100, "p", 0x6FB9F0)
                .await
                .unwrap_err(),
            client.reopen_forum_topic(-100, 5).await.unwrap_err(),
            client
                .send_html_in(-100, Some(5), "x", &rows)
                .await
                .unwrap_err(),
            client.edit_html(-100, 9, "x", &rows).await.unwrap_err(),
            client.answer_callback("cb", "ok", false).await.unwrap_err(),
        ];
        for err in errors {
            assert!(matches!(err, TelegramError::Network(_)), "{err:?}");
            assert!(!format!("{err} {err:?}").contains("room-secret-token"));
        }
    }
}
