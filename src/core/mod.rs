//! The functional core: every decision piv makes, as pure code with no I/O, no actix, no
//! tokio and no clock (callers pass `now` in). Actors load, call into here, and carry out
//! the answer. Everything here is unit-tested beside the code.

pub mod bot_chats;
pub mod buttons;
pub mod commands;
pub mod control;
pub mod events;
pub mod failure;
pub mod forum;
pub mod hooks;
pub mod lease;
pub mod ledger;
pub mod machines;
pub mod manifest;
pub mod next_action;
pub mod notify_level;
pub mod outbox;
pub mod prd_relay;
pub mod progress;
pub mod rate_limit;
pub mod registry;
pub mod room_replies;
pub mod send_slots;
pub mod session_outcome;
pub mod signal;
pub mod status;
pub mod status_report;
pub mod step;
pub mod stream;
pub mod supervision;
pub mod taxonomy;
pub mod telegram_poll;
pub mod telegram_text;
pub mod turn_budget;
pub mod usage;
pub mod waits;
