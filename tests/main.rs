//! piv's integration tests: one test binary, one module per feature. Each test drives
//! real processes and real files in its own temp directories.

mod agent;
mod bot_api_standin;
mod dry_run;
mod registry;
mod signals;
mod telegram;
