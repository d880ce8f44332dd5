//! The notifier: every instance's one voice. It prints each run event to the terminal and,
//! when Telegram is configured, queues its HTML for the chat; one sender task drains that
//! queue in order through `io::chat_sender` (tagged `[prefix] `, split under 4096, spaced
//! by the send budget shared by every instance of this `$PIV_HOME`, waiting out 429s),
//! coalescing a backlog into fewer messages instead of dropping any. A failed send is
//! logged and never stops a run.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::rc::Rc;

use actix::prelude::*;
use tokio::sync::{watch, Notify as WakeUp};

use crate::actors::control::Notify;
use crate::config::TelegramSettings;
use crate::core::events::{telegram_html, terminal_line};
use crate::io::chat_sender::ChatSender;
use crate::io::send_budget::SendBudget;
use crate::io::telegram::TelegramClient;

/// What the notifier needs: the tag, the home holding the shared send budget, and the
/// chat (none = terminal only).
#[derive(Debug, Clone)]
pub struct NotifierSettings {
    pub prefix: String,
    pub home: PathBuf,
    pub telegram: Option<TelegramSettings>,
    /// Test hook (`PIV_FAULT_INJECT=notifier_panic`): panic on the first event, to
    /// exercise the panic hook and the ordered shutdown for a crash outside the loop.
    pub panic_on_first_event: bool,
}

/// Resolves once every queued message has been sent or given up on. Callers bound it
/// with a timeout (a 429 storm can make it long).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Flush;

/// The chat queue shared by the actor (which fills it) and its sender task (which drains it).
struct Outbox {
    waiting: RefCell<VecDeque<String>>,
    wake: WakeUp,
    /// True while nothing is queued or being sent (what [`Flush`] waits for).
    idle: watch::Sender<bool>,
}

impl Outbox {
    fn new() -> Self {
        Self {
            waiting: RefCell::new(VecDeque::new()),
            wake: WakeUp::new(),
            idle: watch::Sender::new(true),
        }
    }

    fn push(&self, html: String) {
        self.waiting.borrow_mut().push_back(html);
        self.idle.send_replace(false);
        self.wake.notify_one();
    }

    /// The next body to send: the oldest message, or — when several are waiting — all of
    /// them joined in order, so a backlog shrinks into fewer messages instead of growing.
    fn take_next(&self) -> Option<String> {
        let mut waiting = self.waiting.borrow_mut();
        match waiting.len() {
            0 => None,
            1 => waiting.pop_front(),
            n => {
                tracing::debug!(
                    messages = n,
                    "Telegram backlog: coalescing waiting messages"
                );
                Some(waiting.drain(..).collect::<Vec<_>>().join("\n\n"))
            }
        }
    }
}

async fn drain_outbox(outbox: Rc<Outbox>, sender: ChatSender, prefix: String) {
    loop {
        match outbox.take_next() {
            Some(body) => {
                sender.send_tagged(&prefix, &body).await;
            }
            None => {
                outbox.idle.send_replace(true);
                outbox.wake.notified().await;
            }
        }
    }
}

/// Prints run events to the terminal and queues them for Telegram (see the module docs).
pub struct NotifierActor {
    prefix: String,
    sender: Option<ChatSender>,
    outbox: Rc<Outbox>,
    panic_on_first_event: bool,
}

impl NotifierActor {
    pub fn new(settings: NotifierSettings) -> Self {
        let sender = settings.telegram.as_ref().and_then(|tg| {
            match TelegramClient::new(&tg.token, &tg.api_url, 30) {
                Ok(client) => Some(ChatSender::new(
                    client,
                    SendBudget::new(&settings.home, tg.chat_id),
                    tg.chat_id,
                )),
                Err(e) => {
                    tracing::error!(error = %e, "Telegram notifications disabled");
                    None
                }
            }
        });
        Self {
            prefix: settings.prefix,
            sender,
            outbox: Rc::new(Outbox::new()),
            panic_on_first_event: settings.panic_on_first_event,
        }
    }
}

impl Actor for NotifierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(sender) = self.sender.clone() {
            let task = drain_outbox(self.outbox.clone(), sender, self.prefix.clone());
            ctx.spawn(task.into_actor(self));
        }
    }
}

impl Handler<Notify> for NotifierActor {
    type Result = ();

    fn handle(&mut self, Notify(event): Notify, _: &mut Self::Context) {
        if std::mem::take(&mut self.panic_on_first_event) {
            panic!("injected fault: notifier panic (PIV_FAULT_INJECT)");
        }
        let line = terminal_line(&event);
        // The terminal is this tool's user interface, not a log.
        crate::io::terminal::line(&line);
        tracing::info!(target: "piv::events", "{line}");
        if self.sender.is_some() {
            if let Some(html) = telegram_html(&event) {
                self.outbox.push(html);
            }
        }
    }
}

impl Handler<Flush> for NotifierActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        let mut idle = self.outbox.idle.subscribe();
        Box::pin(async move {
            let _ = idle.wait_for(|idle| *idle).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_coalesces_a_backlog_in_order() {
        let outbox = Outbox::new();
        assert_eq!(outbox.take_next(), None);
        outbox.push("one".into());
        assert!(!*outbox.idle.borrow());
        assert_eq!(outbox.take_next().as_deref(), Some("one"));
        for m in ["a", "b", "c"] {
            outbox.push(m.into());
        }
        assert_eq!(outbox.take_next().as_deref(), Some("a\n\nb\n\nc"));
        assert_eq!(outbox.take_next(), None);
    }
}
