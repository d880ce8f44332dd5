//! The messages every actor may send to steer a run or to tell the human something:
//! `Go`, `Pause`, `Resume` (handled by the PhaseRunnerActor, which replies with a
//! [`ControlReply`]) and `Notify` (handled by the NotifierActor). They live apart from
//! both actors because the signal watcher, the bot owner and the supervisor all send
//! them.

use actix::prelude::*;

use crate::core::events::RunEvent;

/// Tell the human something: a terminal line always, and a Telegram message when
/// Telegram is configured.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Notify(pub RunEvent);

/// Send an already formatted HTML text to the chat (the notifier adds the `[prefix] `
/// tag, splits and throttles). Used for command replies. Terminal: printed as plain text.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SendHtml(pub String);

/// Hold before the next step. `by` says who asked (for the log and the reply).
#[derive(Message, Debug, Clone)]
#[rtype(result = "ControlReply")]
pub struct Pause {
    pub by: String,
}

/// Continue after a pause.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ControlReply")]
pub struct Resume {
    pub by: String,
}

/// Start the loop if it is not running (re-reading the manifest, so new phases run), or
/// resume if paused.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ControlReply")]
pub struct Go {
    pub by: String,
}

/// What a control message did; `text()` is the reply shown in the chat or terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum ControlReply {
    Paused,
    AlreadyPaused,
    Resumed,
    NotPaused,
    Started,
    AlreadyRunning,
    NothingRunning,
}

impl ControlReply {
    /// The reference's reply texts (behaviour.md §9.1).
    pub fn text(self) -> &'static str {
        match self {
            ControlReply::Paused => "⏸ Pausing after current step completes...",
            ControlReply::AlreadyPaused => "⚠️ Already paused.",
            ControlReply::Resumed => "▶️ Resuming execution...",
            ControlReply::NotPaused => "⚠️ Not currently paused.",
            ControlReply::Started => "🚀 Autonomous execution starting...",
            ControlReply::AlreadyRunning => "⚠️ Execution already in progress.",
            ControlReply::NothingRunning => "⚠️ Nothing is running to pause.",
        }
    }
}
