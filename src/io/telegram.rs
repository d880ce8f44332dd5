//! The Bot API client: a teloxide `Bot` pointed at `TELEGRAM_API_URL`, and the one place where errors are redacted so the token never leaks.
//!
//! Only the handful of methods piv uses are wrapped (`getMe`, `getUpdates`, `sendMessage`,
//! `setMyCommands`), without teloxide's Dispatcher: the bot owner's actor runs the poll
//! loop itself because ownership is decided by a kernel lock, not by teloxide.
//!
//! Every failure leaves this module as a [`TelegramError`] built by
//! [`from_request_error`] (or [`from_reqwest_error`]), which passes every string through
//! [`redact`]. The token is in every request URL, and reqwest prints URLs in its errors;
//! teloxide hides only tokens of the usual shape, so piv does not rely on it.

use std::fmt;
use std::time::Duration;

use crate::core::forum::topic_of_message;
use crate::io::error_chain;
use teloxide::payloads::{GetUpdatesSetters, SendMessageSetters};
use teloxide::requests::Requester;
use teloxide::types::{AllowedUpdate, BotCommand, ChatId, ParseMode, UpdateKind};
use teloxide::{ApiError, Bot, RequestError};

/// The public Bot API, used when `TELEGRAM_API_URL` is unset.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// What a Bot API call can fail with, already redacted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelegramError {
    /// 429: wait this long before the next send (the budget is the token's).
    #[error("Telegram rate limit: retry after {0:?}")]
    RetryAfter(Duration),
    /// 409: another `getUpdates` on this token ended ours.
    #[error("Telegram conflict: terminated by another getUpdates request on this bot token")]
    Conflict,
    /// 400: the message is over Telegram's length limit.
    #[error("Telegram refused the message: too long")]
    TooLong,
    /// 401: the token is wrong or revoked.
    #[error("Telegram refused the bot token (unauthorized): check TELEGRAM_BOT_TOKEN")]
    Unauthorized,
    /// The group became a supergroup with this new chat id.
    #[error("Telegram chat migrated to a supergroup: new chat id {0}")]
    MigratedToChat(i64),
    /// The request did not get an answer (connection, timeout, TLS).
    #[error("Telegram unreachable: {0}")]
    Network(String),
    /// Telegram answered with an error not listed above.
    #[error("Telegram API error: {0}")]
    Api(String),
    /// Telegram's answer could not be read.
    #[error("Telegram answer could not be parsed: {0}")]
    InvalidResponse(String),
    /// The client could not be built (bad `TELEGRAM_API_URL`, TLS setup).
    #[error("Telegram client setup failed: {0}")]
    Setup(String),
}

/// Replaces the token, `bot<token>` and the token's secret half (after `:`), plain or
/// percent-encoded, with `<redacted>` (`bot<redacted>`).
pub fn redact(text: &str, token: &str) -> String {
    let token = token.trim();
    if token.is_empty() {
        return text.to_string();
    }
    let mut needles = vec![
        token.to_string(),
        token.replace(':', "%3A"),
        token.replace(':', "%3a"),
    ];
    if let Some((_, secret)) = token.split_once(':') {
        // The secret alone is the credential that matters; short ones would redact noise.
        if secret.len() >= 8 {
            needles.push(secret.to_string());
        }
    }
    let mut out = text.to_string();
    for needle in &needles {
        out = out.replace(&format!("bot{needle}"), "bot<redacted>");
    }
    for needle in &needles {
        out = out.replace(needle.as_str(), "<redacted>");
    }
    out
}

/// A reqwest error with its whole source chain (the top line alone often says only
/// "error sending request"), redacted.
pub fn from_reqwest_error(error: &reqwest::Error, token: &str) -> TelegramError {
    TelegramError::Network(redact(&error_chain(error), token))
}

/// The one conversion every teloxide failure goes through.
pub fn from_request_error(error: RequestError, token: &str) -> TelegramError {
    match error {
        RequestError::RetryAfter(seconds) => TelegramError::RetryAfter(seconds.duration()),
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => TelegramError::Conflict,
        RequestError::Api(ApiError::MessageIsTooLong) => TelegramError::TooLong,
        RequestError::Api(ApiError::InvalidToken) => TelegramError::Unauthorized,
        RequestError::Api(ApiError::Unknown(text)) if text.starts_with("Unauthorized") => {
            TelegramError::Unauthorized
        }
        RequestError::Api(api) => TelegramError::Api(redact(&api.to_string(), token)),
        RequestError::MigrateToChatId(chat) => TelegramError::MigratedToChat(chat.0),
        RequestError::Network(e) => from_reqwest_error(&e, token),
        RequestError::InvalidJson { source, raw } => {
            let raw: String = raw.chars().take(300).collect();
            TelegramError::InvalidResponse(redact(&format!("{source} (raw: {raw})"), token))
        }
        RequestError::Io(e) => TelegramError::Network(redact(&error_chain(&*e), token)),
    }
}

/// `TELEGRAM_API_URL` without trailing slashes (teloxide appends `/bot<token>/<method>`
/// as path segments, so `…/base/` would give `…/base//bot…`); empty → the public API.
pub fn normalise_api_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        DEFAULT_API_URL.to_string()
    } else {
        trimmed.to_string()
    }
}

/// One update as piv cares about it. Updates piv cannot use (other kinds, unparseable
/// ones) still come through with their id, so the poller can confirm them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingUpdate {
    pub update_id: i64,
    /// The chat of a message update.
    pub chat_id: Option<i64>,
    /// The text of a message update that has text.
    pub text: Option<String>,
    pub from_username: Option<String>,
    /// When the message was sent (unix seconds), for telling stale commands.
    pub date: Option<i64>,
    /// The forum topic the message was typed in (`core::forum::topic_of_message`).
    pub topic: Option<i64>,
    /// A tapped inline button (a `callback_query` update).
    pub tap: Option<ButtonTap>,
}

/// A tapped inline button, as piv needs it: the query to answer, the data, who tapped,
/// and the message it was on (to edit it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonTap {
    pub callback_id: String,
    pub data: String,
    pub from_username: Option<String>,
    pub chat_id: Option<i64>,
    pub message_id: Option<i64>,
    /// The text of the message the button is on (plain, as Telegram returns it).
    pub message_text: Option<String>,
}

impl IncomingUpdate {
    /// The `offset` that confirms this update (and every earlier one).
    pub fn next_offset(&self) -> i64 {
        self.update_id + 1
    }
}

/// A Bot API client for one token. Cheap to clone (the HTTP client is shared).
#[derive(Clone)]
pub struct TelegramClient {
    bot: Bot,
    /// Kept only to redact errors.
    token: String,
}

impl fmt::Debug for TelegramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramClient")
            .field("api_url", &self.bot.api_url().as_str())
            .field("token", &"<redacted>")
            .finish()
    }
}

impl TelegramClient {
    /// A client whose HTTP timeout outlasts a long poll of `poll_timeout_secs`
    /// (teloxide's default 17 s would cut long polls short).
    pub fn new(token: &str, api_url: &str, poll_timeout_secs: u32) -> Result<Self, TelegramError> {
        let url = normalise_api_url(api_url);
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            TelegramError::Setup(redact(
                &format!("invalid TELEGRAM_API_URL {url:?}: {e}"),
                token,
            ))
        })?;
        if parsed.cannot_be_a_base() {
            return Err(TelegramError::Setup(redact(
                &format!("invalid TELEGRAM_API_URL {url:?}: not a base URL"),
                token,
            )));
        }
        let client = teloxide::net::default_reqwest_settings()
            .timeout(Duration::from_secs(u64::from(poll_timeout_secs) + 15))
            // The pid lets a test stand-in tell which process polls and sends.
            .user_agent(format!(
                "piv/{} pid/{}",
                env!("CARGO_PKG_VERSION"),
                std::process::id()
            ))
            .build()
            .map_err(|e| from_reqwest_error(&e, token))?;
        let bot = Bot::with_client(token, client).set_api_url(parsed);
        Ok(Self {
            bot,
            token: token.to_string(),
        })
    }

    fn err(&self, e: RequestError) -> TelegramError {
        from_request_error(e, &self.token)
    }

    /// `text` with this client's token taken out (for text read from files, e.g. `/logs`).
    pub fn redact(&self, text: &str) -> String {
        redact(text, &self.token)
    }

    /// The teloxide bot, for the calls wrapped in sibling adapters (`telegram_room`).
    pub(crate) fn bot(&self) -> &Bot {
        &self.bot
    }

    /// A teloxide failure, redacted (for the sibling adapters).
    pub(crate) fn error(&self, e: RequestError) -> TelegramError {
        self.err(e)
    }

    /// The bot's username (without `@`), which also checks the token.
    pub async fn get_me(&self) -> Result<String, TelegramError> {
        let me = self.bot.get_me().await.map_err(|e| self.err(e))?;
        // `Me::username()` panics when it is missing; a self-hosted server might omit it.
        me.user
            .username
            .clone()
            .ok_or_else(|| TelegramError::InvalidResponse("getMe returned no username".into()))
    }

    /// Sends one HTML message (already tagged, escaped and within the limit).
    pub async fn send_html(&self, chat_id: i64, html: &str) -> Result<(), TelegramError> {
        self.bot
            .send_message(ChatId(chat_id), html)
            .parse_mode(ParseMode::Html)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// One long poll for messages. `offset` confirms every update below it; Telegram
    /// remembers `allowed_updates` across calls and processes, so it is always sent.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout_secs: u32,
    ) -> Result<Vec<IncomingUpdate>, TelegramError> {
        let mut request = self
            .bot
            .get_updates()
            .timeout(timeout_secs)
            .allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
        if let Some(offset) = offset {
            let offset = i32::try_from(offset)
                .map_err(|_| TelegramError::Api(format!("update offset {offset} out of range")))?;
            request = request.offset(offset);
        }
        let updates = request.await.map_err(|e| self.err(e))?;
        Ok(updates
            .into_iter()
            .map(|update| {
                let update_id = i64::from(update.id.0);
                match update.kind {
                    UpdateKind::Message(message) => IncomingUpdate {
                        update_id,
                        chat_id: Some(message.chat.id.0),
                        text: message.text().map(str::to_string),
                        from_username: message.from.as_ref().and_then(|u| u.username.clone()),
                        date: Some(message.date.timestamp()),
                        topic: topic_of_message(
                            message.thread_id.map(|t| i64::from(t.0 .0)),
                            message.is_topic_message,
                        ),
                        tap: None,
                    },
                    UpdateKind::CallbackQuery(query) => IncomingUpdate {
                        update_id,
                        chat_id: query.message.as_ref().map(|m| m.chat().id.0),
                        text: None,
                        from_username: query.from.username.clone(),
                        date: None,
                        topic: None,
                        tap: Some(ButtonTap {
                            callback_id: query.id.0.clone(),
                            data: query.data.clone().unwrap_or_default(),
                            from_username: query.from.username.clone(),
                            chat_id: query.message.as_ref().map(|m| m.chat().id.0),
                            message_id: query.message.as_ref().map(|m| i64::from(m.id().0)),
                            message_text: query
                                .regular_message()
                                .and_then(|m| m.text())
                                .map(str::to_string),
                        }),
                    },
                    _ => IncomingUpdate {
                        update_id,
                        chat_id: None,
                        text: None,
                        from_username: None,
                        date: None,
                        topic: None,
                        tap: None,
                    },
                }
            })
            .collect())
    }

    /// Registers the command menu shown in Telegram: (command, description) pairs.
    pub async fn set_my_commands(&self, commands: &[(&str, &str)]) -> Result<(), TelegramError> {
        let commands: Vec<BotCommand> = commands
            .iter()
            .map(|(c, d)| BotCommand::new(*c, *d))
            .collect();
        self.bot
            .set_my_commands(commands)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:odd-shaped_secret";

    #[test]
    fn redact_replaces_every_form_of_the_token() {
        let cases = [
            (
                format!("GET http://h/bot{TOKEN}/getMe failed"),
                "GET http://h/bot<redacted>/getMe failed",
            ),
            (format!("token {TOKEN}"), "token <redacted>"),
            (
                format!("url http://h/bot{}/x", TOKEN.replace(':', "%3A")),
                "url http://h/bot<redacted>/x",
            ),
            ("secret odd-shaped_secret".to_string(), "secret <redacted>"),
            ("nothing here".to_string(), "nothing here"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(&input, TOKEN), want);
        }
        assert_eq!(redact("x", ""), "x");
    }

    #[test]
    fn normalise_api_url_trims_slashes() {
        let cases = [
            ("http://h:1/", "http://h:1"),
            ("http://h:1/base//", "http://h:1/base"),
            (" http://h ", "http://h"),
            ("", DEFAULT_API_URL),
            ("https://api.telegram.org", "https://api.telegram.org"),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_api_url(input), want);
        }
    }

    #[test]
    fn api_errors_map_to_their_variants() {
        use teloxide::types::Seconds;
        let cases = [
            (
                RequestError::RetryAfter(Seconds::from_seconds(3)),
                TelegramError::RetryAfter(Duration::from_secs(3)),
            ),
            (
                RequestError::Api(ApiError::TerminatedByOtherGetUpdates),
                TelegramError::Conflict,
            ),
            (
                RequestError::Api(ApiError::MessageIsTooLong),
                TelegramError::TooLong,
            ),
            (
                RequestError::Api(ApiError::InvalidToken),
                TelegramError::Unauthorized,
            ),
            (
                RequestError::MigrateToChatId(ChatId(-100)),
                TelegramError::MigratedToChat(-100),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(from_request_error(input, TOKEN), want);
        }
        let unknown = from_request_error(
            RequestError::Api(ApiError::Unknown(format!("weird {TOKEN}"))),
            TOKEN,
        );
        assert!(
            matches!(&unknown, TelegramError::Api(t) if !t.contains(TOKEN) && t.contains("weird"))
        );
    }

    /// reqwest prints the URL (with the token) in its errors; the shape of this token is
    /// one teloxide's own hiding does not recognise.
    #[tokio::test]
    async fn network_errors_never_show_the_token() {
        let url = format!("http://127.0.0.1:1/bot{TOKEN}/getMe");
        let raw = reqwest::Client::new().get(&url).send().await.unwrap_err();
        assert!(
            format!("{raw:?}").contains(TOKEN),
            "the raw error does carry the token, so the test means something"
        );
        let ours = from_reqwest_error(&raw, TOKEN);
        for text in [ours.to_string(), format!("{ours:?}")] {
            assert!(
                !text.contains(TOKEN) && !text.contains("odd-shaped_secret"),
                "{text}"
            );
        }
        let via_teloxide = from_request_error(RequestError::from(raw), TOKEN);
        assert!(matches!(via_teloxide, TelegramError::Network(_)));
        assert!(!via_teloxide.to_string().contains("odd-shaped_secret"));
    }

    #[tokio::test]
    async fn a_client_call_that_fails_shows_no_token() {
        let client = TelegramClient::new(TOKEN, "http://127.0.0.1:1/", 1).unwrap();
        assert!(!format!("{client:?}").contains("odd-shaped_secret"));
        for err in [
            client.get_me().await.unwrap_err(),
            client.send_html(1, "x").await.unwrap_err(),
            client.get_updates(Some(5), 0).await.unwrap_err(),
        ] {
            assert!(matches!(err, TelegramError::Network(_)), "{err:?}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("odd-shaped_secret"), "{text}");
        }
    }

    #[test]
    fn bad_api_url_is_a_setup_error() {
        let err = TelegramClient::new(TOKEN, "not a url", 1).unwrap_err();
        assert!(matches!(err, TelegramError::Setup(_)), "{err:?}");
        assert!(!err.to_string().contains("odd-shaped_secret"));
    }
}
