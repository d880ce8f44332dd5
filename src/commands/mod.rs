//! The one-shot commands that read or steer running instances from a terminal:
//! `piv status`, `piv signal` and `piv cost`. Each returns an exit code (see `crate::cli::exit`).

pub mod cost;
pub mod signal;
pub mod status;
