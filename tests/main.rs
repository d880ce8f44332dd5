//! piv's integration tests: one test binary, one module per feature. Each test drives
//! real processes and real files in its own temp directories.

mod agent;
mod dry_run;
mod registry;
mod signals;
