//! The one-shot commands that read or steer running instances from a terminal:
//! `piv status` and `piv signal`. Each returns an exit code (see `crate::cli::exit`).

pub mod signal;
pub mod status;
