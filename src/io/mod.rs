//! Small adapters around the outside world: files, locks, child processes, git and the
//! Bot API. Each adapter has one error type naming the path and what was being done.
//! Decisions are not made here; they live in `core`.

pub mod agent;
pub mod atomic_file;
pub mod clock;
pub mod git;
pub mod gitignore;
pub mod home;
pub mod ledger_file;
pub mod lock;
pub mod log_file;
pub mod manifest_file;
pub mod pid_file;
pub mod process_group;
pub mod registry_store;
pub mod send_budget;
pub mod signal_queue;
pub mod state_file;
pub mod status_probe;
pub mod telegram;
pub mod terminal;
pub mod usage_store;
