//! The actor shell: one file per actor, each owning its I/O and talking to the others only
//! through typed messages. Decisions are delegated to `core`.

pub mod bot_owner;
pub mod control;
pub mod manifest;
pub mod notifier;
pub mod phase_runner;
pub mod prd_relay;
pub mod presence;
pub mod registry;
pub mod signal_watcher;
pub mod supervisor;
