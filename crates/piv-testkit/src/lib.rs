//! Stand-ins for the outside world, shared by piv's tests, benches and examples (the
//! `two_instances` demo and `piv-fake-claude`): a local Bot API server and a scripted
//! `claude`. A dev-only crate: `piv` itself never uses it and `cargo install` never builds it.

pub mod binaries;
pub mod bot_api;
pub mod fake_claude;
pub mod http1;
pub mod project;
pub mod rng;
