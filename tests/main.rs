//! piv's integration tests: one test binary, one module per feature. Each test drives
//! real processes and real files in its own temp directories.

mod agent;
mod agent_cli;
mod agent_run;
mod bot_api_standin;
mod bots;
mod chaos;
mod chat_buttons;
mod chat_card;
mod chat_commands;
mod chat_prd;
mod chat_rollback;
mod chat_standin;
mod chat_topics;
mod corpus;
mod dry_run;
mod lifecycle;
mod nats;
mod nats_budget;
mod overnight;
mod pause_visible;
mod real_cli;
mod registry;
mod remote_control;
mod rollback;
mod run_loop;
mod secrets;
mod signals;
mod soak;
mod status_signal;
mod support;
mod telegram;
mod telegram_e2e;
mod telegram_transport;
mod torn_writes;
mod usage;
