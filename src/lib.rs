//! piv: an actor-based supervisor runtime that drives Claude Code through a project's
//! phases (plan → execute → validate → commit) unattended, records everything in the
//! project's manifest, and reports to one Telegram chat shared by every instance on the
//! machine.
//!
//! # Layout
//! - [`core`]: pure logic. The manifest model, the next-action state machine, the error
//!   taxonomy, the hooks parser, the registry and signal models, Telegram text and command
//!   routing. No I/O.
//! - [`io`]: small adapters: atomic files and quarantine, locks, the PID file, the
//!   registry store, the signal queue, agent sessions, git, the Bot API client.
//! - [`actors`]: the actix shell, one actor per responsibility.
//!
//! The test doubles (a Bot API stand-in, a scripted `claude`) are the dev-only crate
//! `piv-testkit` (`crates/piv-testkit`), not part of this one.

pub mod actors;
pub mod cli;
pub mod commands;
pub mod config;
pub mod core;
pub mod io;
pub mod run;
