//! The messages several actors send: [`Control`] (a control action for the run: the bot
//! owner and the signal path send it to the supervisor, which forwards all but shutdown
//! to the PhaseRunnerActor; both reply with a [`ControlReply`]) and [`Notify`] (handled
//! by the NotifierActor). They live apart from the actors that handle them because the
//! signal watcher's receiver, the bot owner and the supervisor all send them.

use actix::prelude::*;

use crate::core::control::{ControlAction, ControlReply};
use crate::core::events::RunEvent;

/// Tell the human something: a terminal line always, and a Telegram message when
/// Telegram is configured.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Notify(pub RunEvent);

/// A control action, from the chat (`/pause`) or a signal (`piv signal`, another
/// instance's bot). The one entry point for local and remote commands alike: the
/// supervisor takes every `Control` (shutdown is its ordered shutdown) and hands the rest
/// to the phase runner. `by` says who asked (for the log and the `Paused` event).
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "ControlReply")]
pub struct Control {
    pub action: ControlAction,
    pub by: String,
}
