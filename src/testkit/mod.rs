//! Stand-ins for the outside world, shared by the tests, the `piv-fake-claude` binary and
//! the `two_instances` demo: a local Bot API server and a scripted `claude`. Not used by
//! `piv` itself.

pub mod bot_api;
pub mod fake_claude;
pub mod project;
pub mod rng;
