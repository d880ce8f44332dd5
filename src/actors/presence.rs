//! PresenceActor: this instance's presence across machines (`PIV_COORDINATION`), with or
//! without Telegram. It publishes the instance's status in the registry shared through
//! NATS every lease TTL, takes the signals other machines send it into the local signal
//! queue (where the signal watcher delivers them like any other), and on a clean stop
//! withdraws its entry. The NATS side is `io::coordination::presence`.

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::core::status::InstanceFacts;
use crate::io::coordination::presence::NatsPresence;
use crate::io::coordination::registry_kv;

/// Stop receiving and take this instance out of the shared registry (the shutdown).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Withdraw;

/// See the module docs.
pub struct PresenceActor {
    presence: Arc<NatsPresence>,
    prefix: String,
    project_dir: PathBuf,
    home: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PresenceActor {
    pub fn new(
        presence: Arc<NatsPresence>,
        prefix: String,
        project_dir: PathBuf,
        home: PathBuf,
    ) -> Self {
        Self {
            presence,
            prefix,
            project_dir,
            home,
            tasks: Vec::new(),
        }
    }

    fn stop_tasks(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Actor for PresenceActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        let facts = InstanceFacts {
            prefix: self.prefix.clone(),
            project_dir: self.project_dir.display().to_string(),
            pid: Some(std::process::id()),
            is_bot_owner: false,
            started_at_unix_secs: None,
        };
        self.tasks.push(registry_kv::spawn_publisher(
            self.presence.clone(),
            facts,
            self.project_dir.clone(),
        ));
        self.tasks
            .push(self.presence.spawn_signal_receiver(self.home.clone()));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.stop_tasks();
    }
}

impl Handler<Withdraw> for PresenceActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Withdraw, _: &mut Self::Context) -> Self::Result {
        self.stop_tasks();
        let presence = self.presence.clone();
        Box::pin(async move { presence.withdraw().await })
    }
}
