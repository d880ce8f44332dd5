//! The one integration-test binary: each feature is a module.

mod agent;
