//! Small adapters around the outside world: files, locks, child processes, git and the
//! Bot API. Each adapter has one error type naming the path and what was being done.
//! Decisions are not made here; they live in `core`.

pub mod agent;
pub mod atomic_file;
pub mod bot_offset;
pub mod button_tap;
pub mod chat_sender;
pub mod cli_setup;
pub mod clock;
pub mod coordination;
pub mod escalation_file;
pub mod git;
pub mod gitignore;
pub mod home;
pub mod ledger_file;
pub mod lock;
pub mod log_file;
pub mod manifest_file;
pub mod outbox;
pub mod pid_file;
pub mod prd_relay_file;
pub mod process_group;
pub mod registry_store;
pub mod room_reads;
pub mod send_budget;
pub mod signal_queue;
pub mod state_file;
pub mod status_card;
pub mod status_probe;
pub mod telegram;
pub mod telegram_room;
pub mod terminal;
pub mod topic_route;
pub mod topic_store;
pub mod usage_store;

use std::path::{Path, PathBuf};

/// An adapter error with an `Io { path, step, source }` variant, shown as
/// "cannot {step} {path}: {source}".
pub(crate) trait PathIoError: Sized {
    fn from_io(path: PathBuf, step: &'static str, source: std::io::Error) -> Self;

    /// For `map_err`: an `std::io::Error` wrapped with the path and the step being done
    /// (`.map_err(SignalQueueError::io("list", &dir))`).
    fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::from_io(path, step, source)
    }
}

/// An error and its sources, as one line (`a: b: c`), a source whose text the line
/// already holds left out.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let line = inner.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = inner.source();
    }
    text
}
