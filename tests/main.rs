//! piv integration tests: one binary, one module per feature.

mod bot_api_standin;
