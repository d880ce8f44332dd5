//! One integration-test binary; each feature is a module.

mod dry_run;
