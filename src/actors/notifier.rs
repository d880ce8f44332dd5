//! NotifierActor (interim, terminal only; the Telegram side lands with issue 6): prints
//! each run event as one terminal line.

use std::path::PathBuf;

use actix::prelude::*;

use crate::actors::control::{Notify, SendHtml};
use crate::core::events::terminal_line;

/// Telegram settings (token, chat, API URL).
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    pub token: String,
    pub chat_id: i64,
    pub api_url: String,
}

#[derive(Debug, Clone)]
pub struct NotifierSettings {
    pub prefix: String,
    pub home: PathBuf,
    pub telegram: Option<TelegramSettings>,
}

/// Resolves once every queued message has been sent.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

pub struct NotifierActor {
    _settings: NotifierSettings,
}

impl NotifierActor {
    pub fn new(settings: NotifierSettings) -> Self {
        NotifierActor {
            _settings: settings,
        }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;
}

impl Handler<Notify> for NotifierActor {
    type Result = ();
    fn handle(&mut self, msg: Notify, _: &mut Context<Self>) {
        let line = terminal_line(&msg.0);
        tracing::info!("{line}");
        println!("{line}");
    }
}

impl Handler<SendHtml> for NotifierActor {
    type Result = ();
    fn handle(&mut self, msg: SendHtml, _: &mut Context<Self>) {
        println!("{}", msg.0);
    }
}

impl Handler<Flush> for NotifierActor {
    type Result = ();
    fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
}
