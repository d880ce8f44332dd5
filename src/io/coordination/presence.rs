//! This instance's presence across machines, which needs no bot: its entry in the shared
//! registry (`registry_kv`: published every lease TTL with a TTL of three, withdrawn on a
//! clean stop) and the signals other machines send it (`signals_nats`: a durable consumer
//! that writes them into the local signal queue). A `piv run` without Telegram has it as
//! well as one with, so `piv status --all`, `/status all` and `piv signal` reach every
//! instance of every machine. The bot's own coordination (`nats`: lease, offset, send
//! budget) shares its connection.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::signals_nats::Delivery;
use super::{CoordinationError, CoordinationSettings};
use crate::core::machines::{machines_in, registry_key, PublishedInstance};
use crate::core::signal::SignalMessage;
use crate::core::status::InstanceStatus;

/// This instance in the registry across machines, and its signal subject.
pub struct NatsPresence {
    js: jetstream::Context,
    registry: kv::Store,
    hostname: String,
    registry_key: String,
    project_dir: PathBuf,
    replicas: usize,
    ttl: Duration,
    /// Machines in the shared registry when last listed (the degraded budget's share).
    machines_seen: AtomicUsize,
}

impl std::fmt::Debug for NatsPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsPresence")
            .field("registry_key", &self.registry_key)
            .finish_non_exhaustive()
    }
}

impl NatsPresence {
    /// Opens (or creates) the registry bucket on the connection `js`.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        ttl: Duration,
        project_dir: &std::path::Path,
    ) -> Result<NatsPresence, CoordinationError> {
        let registry = super::registry_kv::open(js, replicas).await?;
        let hostname = super::hostname();
        Ok(NatsPresence {
            js: js.clone(),
            registry,
            registry_key: registry_key(&hostname, &project_dir.display().to_string()),
            hostname,
            project_dir: project_dir.to_path_buf(),
            replicas,
            ttl,
            machines_seen: AtomicUsize::new(0),
        })
    }

    /// Connects to `settings.servers` for an instance without a bot (no lease, no
    /// budget): only its presence.
    pub async fn connect(
        settings: &CoordinationSettings,
        project_dir: &std::path::Path,
    ) -> Result<NatsPresence, CoordinationError> {
        let (client, js) = super::jetstream_kv::connect_jetstream(settings).await?;
        let replicas = super::registry_kv::replicas_for(&client, settings);
        tracing::info!(servers = %settings.servers_text(), "presence across machines on NATS JetStream");
        Self::open(&js, replicas, settings.lease_ttl, project_dir).await
    }

    /// How often the entry is published again.
    pub fn publish_every(&self) -> Duration {
        self.ttl
    }

    /// Publishes this instance's status (a failure is logged: the next one tries again).
    pub async fn publish(&self, status: InstanceStatus) {
        let entry = PublishedInstance {
            hostname: self.hostname.clone(),
            status,
        };
        let ttl = crate::core::lease::registry_entry_ttl(self.ttl);
        if let Err(e) = super::registry_kv::publish(&self.js, &self.registry_key, &entry, ttl).await
        {
            tracing::debug!(error = %e, "cannot publish this instance in the shared registry");
        }
        // Kept for the budget's share should NATS stop answering.
        if let Ok(Ok(list)) = tokio::time::timeout(
            Duration::from_secs(1),
            super::registry_kv::list(&self.registry),
        )
        .await
        {
            self.note_machines(&list);
        }
    }

    /// Takes this instance's entry out (a clean stop).
    pub async fn withdraw(&self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.registry.purge(&self.registry_key),
        )
        .await;
    }

    /// Every published status, this machine's included.
    pub async fn list(&self) -> Vec<PublishedInstance> {
        match tokio::time::timeout(self.ttl, super::registry_kv::list(&self.registry)).await {
            Ok(Ok(list)) => {
                self.note_machines(&list);
                list
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the shared registry");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("listing the shared registry timed out");
                Vec::new()
            }
        }
    }

    fn note_machines(&self, list: &[PublishedInstance]) {
        self.machines_seen
            .store(machines_in(list), Ordering::Relaxed);
    }

    /// How many machines the registry showed when last listed (0: never listed).
    pub fn machines_last_seen(&self) -> usize {
        self.machines_seen.load(Ordering::Relaxed)
    }

    /// Sends a control signal to an instance on another machine and waits a few seconds
    /// for it to acknowledge.
    pub async fn send_signal(
        &self,
        target: &PublishedInstance,
        message: SignalMessage,
    ) -> Result<Delivery, CoordinationError> {
        let key = registry_key(&target.hostname, &target.status.project_dir);
        super::signals_nats::open_stream(&self.js, self.replicas)
            .await
            .map_err(|reason| CoordinationError::JetStream {
                step: "open the signals stream",
                reason,
            })?;
        super::signals_nats::send(&self.js, &key, &message, Duration::from_secs(3))
            .await
            .map_err(|reason| CoordinationError::JetStream {
                step: "send a signal",
                reason,
            })
    }

    /// Starts taking the signals other machines send this instance into its local queue.
    pub fn spawn_signal_receiver(&self, home: PathBuf) -> tokio::task::JoinHandle<()> {
        tokio::spawn(super::signals_nats::receive(
            self.js.clone(),
            self.registry_key.clone(),
            self.project_dir.clone(),
            home,
            self.replicas,
        ))
    }
}
