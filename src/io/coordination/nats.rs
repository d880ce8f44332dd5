//! Coordination across machines on NATS JetStream (`async-nats`): one KV bucket per bot
//! (`core::lease::bot_bucket`, named from the bot id) holding the poller lease and the
//! last handled update id.
//!
//! The lease is a key written only if absent, with a per-key TTL (`Nats-TTL`; the bucket
//! allows per-message TTLs and leaves a marker when a key expires, so watchers see it).
//! The holder renews it by compare-and-set on its revision every TTL/3 (the client's
//! `update` carries no TTL, so creates and renewals are published here with the
//! `Nats-Expected-Last-Subject-Sequence` and `Nats-TTL` headers). Standbys watch the key
//! and try again when it is deleted or expires, and every TTL/4 anyway. The offset is
//! written by compare-and-set on its own revision, after the fencing check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::jetstream_kv::{cas_put, open_bucket, CasFailed};
use super::presence::NatsPresence;
use super::{BoxFuture, Coordination, CoordinationError, CoordinationSettings, PollerLease};
use crate::core::lease::{
    bot_bucket, fence, renew_every, standby_retry, CoordinationNote, Held, LeaseOnServer,
    OutageNotice, Renewal, LEASE_KEY, OFFSET_KEY,
};

/// What the chat hears when NATS stops answering, and when it is back.
const NOTE_LOST: &str = "⚠️ Coordination across machines lost: NATS does not answer. \
    The loops go on and notifications still go out; nobody answers commands until it is back.";
const NOTE_BACK: &str = "✅ Coordination across machines is back: commands are answered again.";

/// Connected to NATS, with the bot's bucket.
pub struct NatsCoordination {
    servers: String,
    client: async_nats::Client,
    js: jetstream::Context,
    kv: kv::Store,
    bucket: String,
    ttl: Duration,
    holder: String,
    /// The monotonic origin of the `Duration`s `core::lease` works with.
    origin: Instant,
    /// The offset key's revision as last seen, for the next compare-and-set.
    offset_revision: Mutex<u64>,
    /// This instance in the registry across machines (shared with the presence actor).
    presence: Arc<NatsPresence>,
    /// What the chat was told about NATS answering (across lease attempts).
    outage: Mutex<OutageNotice>,
}

/// Connects to `settings.servers` and opens (or creates) the bot's bucket. Fails when no
/// server answers in time: the caller decides between exit 2 and single-machine mode.
pub async fn connect(
    settings: &CoordinationSettings,
    bot_id: &str,
    holder: String,
    project_dir: &std::path::Path,
) -> Result<NatsCoordination, CoordinationError> {
    let (client, mut js) = super::jetstream_kv::connect_jetstream(settings).await?;
    let ttl = settings.lease_ttl;
    // A renewal that gets no answer within a third of the TTL counts as no answer.
    js.set_timeout(renew_every(ttl).max(Duration::from_millis(300)));
    let bucket = bot_bucket(bot_id);
    let replicas = super::registry_kv::replicas_for(&client, settings);
    let kv = open_bucket(
        &js,
        &bucket,
        "piv: the poller lease and the last handled update of one bot",
        replicas,
        ttl,
    )
    .await?;
    let presence = NatsPresence::open(&js, replicas, ttl, project_dir).await?;
    let servers = settings.servers_text();
    tracing::info!(servers = %servers, bucket = %bucket, replicas, "coordination on NATS JetStream");
    Ok(NatsCoordination {
        servers,
        client,
        js,
        kv,
        bucket,
        ttl,
        holder,
        origin: Instant::now(),
        offset_revision: Mutex::new(0),
        presence: Arc::new(presence),
        outage: Mutex::new(OutageNotice::default()),
    })
}

/// What an attempt to take the lease came to.
enum Attempt {
    Won(Held),
    Taken,
    NoAnswer(String),
}

impl NatsCoordination {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The servers, as given.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// The connected client (for the other coordination parts).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Creates the lease key if it is absent (never written, deleted or expired).
    async fn try_create(&self) -> Attempt {
        let sent_at = self.now();
        let value = Bytes::from(self.holder.clone());
        let expected = match cas_put(
            &self.js,
            &self.bucket,
            LEASE_KEY,
            value.clone(),
            0,
            Some(self.ttl),
        )
        .await
        {
            Ok(revision) => return Attempt::Won(Held::won(revision, sent_at, self.ttl)),
            Err(CasFailed::NoAnswer(e)) => return Attempt::NoAnswer(e),
            Err(CasFailed::Refused) => match self.lease_on_server().await {
                LeaseOnServer::Absent { revision } if revision > 0 => revision,
                LeaseOnServer::Unknown => return Attempt::NoAnswer("cannot read the lease".into()),
                _ => return Attempt::Taken,
            },
        };
        let sent_at = self.now();
        match cas_put(
            &self.js,
            &self.bucket,
            LEASE_KEY,
            value,
            expected,
            Some(self.ttl),
        )
        .await
        {
            Ok(revision) => Attempt::Won(Held::won(revision, sent_at, self.ttl)),
            Err(CasFailed::Refused) => Attempt::Taken,
            Err(CasFailed::NoAnswer(e)) => Attempt::NoAnswer(e),
        }
    }

    async fn lease_on_server(&self) -> LeaseOnServer {
        read_lease(&self.kv, self.ttl).await
    }

    fn start_renewals(&self, held: Held) -> NatsLease {
        let (state_tx, state_rx) = watch::channel(held);
        let (cancel_tx, mut cancel_rx) = watch::channel(false);
        let js = self.js.clone();
        let bucket = self.bucket.clone();
        let holder = self.holder.clone();
        let ttl = self.ttl;
        let origin = self.origin;
        tokio::spawn(async move {
            let mut held = held;
            loop {
                tokio::select! {
                    _ = cancel_rx.wait_for(|c| *c) => return,
                    _ = tokio::time::sleep(renew_every(ttl)) => {}
                }
                let sent_at = origin.elapsed();
                let renewal = match cas_put(
                    &js,
                    &bucket,
                    LEASE_KEY,
                    Bytes::from(holder.clone()),
                    held.revision,
                    Some(ttl),
                )
                .await
                {
                    Ok(revision) => Renewal::Renewed { revision, sent_at },
                    Err(CasFailed::Refused) => Renewal::Refused,
                    Err(CasFailed::NoAnswer(e)) => {
                        tracing::warn!(error = %e, "cannot renew the poller lease (NATS)");
                        Renewal::NoAnswer
                    }
                };
                held = held.after(renewal, ttl);
                let _ = state_tx.send(held);
                if !held.valid_at(origin.elapsed()) {
                    tracing::warn!(
                        refused = held.refused,
                        "poller lease lost: this instance stops polling Telegram"
                    );
                    return;
                }
            }
        });
        NatsLease {
            state: state_rx,
            cancel: cancel_tx,
            kv: self.kv.clone(),
            holder: self.holder.clone(),
            ttl: self.ttl,
            origin: self.origin,
        }
    }

    async fn read_offset_entry(&self) -> Result<Option<(i64, u64)>, String> {
        let entry = tokio::time::timeout(self.ttl, self.kv.entry(OFFSET_KEY))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| {
                let id = serde_json::from_slice::<serde_json::Value>(&e.value)
                    .ok()?
                    .get("lastUpdateId")?
                    .as_i64()?;
                Some((id, e.revision))
            }))
    }
}

/// The lease key as the server shows it now.
async fn read_lease(kv: &kv::Store, ttl: Duration) -> LeaseOnServer {
    let read_within = (ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(1));
    match tokio::time::timeout(read_within, kv.entry(LEASE_KEY)).await {
        Ok(Ok(Some(entry))) if entry.operation == kv::Operation::Put => LeaseOnServer::HeldBy {
            holder: String::from_utf8_lossy(&entry.value).into_owned(),
            revision: entry.revision,
        },
        Ok(Ok(Some(entry))) => LeaseOnServer::Absent {
            revision: entry.revision,
        },
        Ok(Ok(None)) => LeaseOnServer::Absent { revision: 0 },
        Ok(Err(_)) | Err(_) => LeaseOnServer::Unknown,
    }
}

/// The lease held by this instance; its renewals run in a task of their own.
struct NatsLease {
    state: watch::Receiver<Held>,
    cancel: watch::Sender<bool>,
    kv: kv::Store,
    holder: String,
    ttl: Duration,
    origin: Instant,
}

impl Drop for NatsLease {
    fn drop(&mut self) {
        let _ = self.cancel.send(true);
    }
}

impl PollerLease for NatsLease {
    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let held = *self.state.borrow();
            if !held.valid_at(self.origin.elapsed()) {
                return false;
            }
            let server = read_lease(&self.kv, self.ttl).await;
            let ok = fence(&held, self.origin.elapsed(), &self.holder, &server);
            if !ok {
                tracing::warn!(?server, "fencing: the poller lease is not ours any more");
            }
            ok
        })
    }

    fn lost(&self) -> BoxFuture<'_, ()> {
        let mut state = self.state.clone();
        let origin = self.origin;
        Box::pin(async move {
            loop {
                let held = *state.borrow_and_update();
                let now = origin.elapsed();
                if !held.valid_at(now) {
                    return;
                }
                tokio::select! {
                    changed = state.changed() => {
                        if changed.is_err() {
                            // The renewals ended: the lease runs out at its end.
                            tokio::time::sleep(held.valid_until.saturating_sub(origin.elapsed())).await;
                            return;
                        }
                    }
                    _ = tokio::time::sleep(held.valid_until - now) => {}
                }
            }
        })
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        let _ = self.cancel.send(true);
        let revision = self.state.borrow().revision;
        let kv = self.kv.clone();
        Box::pin(async move {
            // A standby watching the key takes over at once instead of at the TTL.
            match tokio::time::timeout(
                Duration::from_secs(1),
                kv.delete_expect_revision(LEASE_KEY, Some(revision)),
            )
            .await
            {
                Ok(Ok(())) => tracing::info!("poller lease released"),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "poller lease not released (it ends at its TTL)")
                }
                Err(_) => tracing::debug!("poller lease release timed out (it ends at its TTL)"),
            }
        })
    }
}

/// Waits until the watch shows the lease deleted or expired (or the watch ends).
async fn lease_gone(watcher: &mut Option<kv::Watch>) {
    let Some(w) = watcher.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match w.next().await {
            Some(Ok(entry)) if entry.operation != kv::Operation::Put => return,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                *watcher = None;
                return;
            }
        }
    }
}

impl Coordination for NatsCoordination {
    fn describe(&self) -> String {
        format!("NATS at {}", self.servers)
    }

    fn poll_timeout_secs(&self, wanted: u32) -> u32 {
        crate::core::lease::poll_timeout_under_lease(wanted, self.ttl)
    }

    fn presence(&self) -> Option<Arc<NatsPresence>> {
        Some(self.presence.clone())
    }

    fn send_signal<'a>(
        &'a self,
        target: &'a crate::core::machines::PublishedInstance,
        message: crate::core::signal::SignalMessage,
    ) -> BoxFuture<'a, Result<super::signals_nats::Delivery, CoordinationError>> {
        Box::pin(self.presence.send_signal(target, message))
    }

    fn published_instances(&self) -> BoxFuture<'_, Vec<crate::core::machines::PublishedInstance>> {
        Box::pin(self.presence.list())
    }

    fn book_send(
        &self,
        chat_id: i64,
        kind: crate::core::outbox::MessageKind,
        interval: Duration,
    ) -> Option<BoxFuture<'_, Result<crate::core::send_slots::Booking, CoordinationError>>> {
        Some(Box::pin(async move {
            super::budget_nats::book(&self.js, &self.kv, &self.bucket, chat_id, kind, interval)
                .await
                .map_err(|reason| CoordinationError::JetStream {
                    step: "book a send slot",
                    reason,
                })
        }))
    }

    fn push_back_send(
        &self,
        until: std::time::SystemTime,
    ) -> Option<BoxFuture<'_, Result<(), CoordinationError>>> {
        Some(Box::pin(async move {
            super::budget_nats::push_back(&self.js, &self.kv, &self.bucket, until)
                .await
                .map_err(|reason| CoordinationError::JetStream {
                    step: "record a rate limit",
                    reason,
                })
        }))
    }

    fn send_blocked_until(&self) -> Option<BoxFuture<'_, Result<Option<u64>, CoordinationError>>> {
        Some(Box::pin(async move {
            super::budget_nats::blocked_until(&self.kv)
                .await
                .map_err(|reason| CoordinationError::JetStream {
                    step: "read the rate limit",
                    reason,
                })
        }))
    }

    fn machines_last_seen(&self) -> usize {
        self.presence.machines_last_seen()
    }

    fn acquire_poller_lease(
        &self,
        mut stop: watch::Receiver<bool>,
        notes: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'_, Option<Box<dyn PollerLease>>> {
        Box::pin(async move {
            let mut watcher: Option<kv::Watch> = None;
            let mut announced_wait = false;
            loop {
                if *stop.borrow() {
                    return None;
                }
                let attempt = self.try_create().await;
                let answered = !matches!(attempt, Attempt::NoAnswer(_));
                let note = self
                    .outage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .on_attempt(answered, self.now(), self.ttl);
                match (note, &attempt) {
                    (Some(CoordinationNote::Lost), Attempt::NoAnswer(e)) => {
                        tracing::warn!(servers = %self.servers, error = %e,
                            "coordination lost: NATS does not answer; nobody polls Telegram until it is back");
                        let _ = notes.send(NOTE_LOST.into());
                    }
                    (Some(CoordinationNote::Back), _) => {
                        tracing::warn!(servers = %self.servers, "coordination back: NATS answers again");
                        let _ = notes.send(NOTE_BACK.into());
                    }
                    _ => {}
                }
                match attempt {
                    Attempt::Won(held) => {
                        tracing::info!(revision = held.revision, "won the poller lease");
                        return Some(Box::new(self.start_renewals(held)) as Box<dyn PollerLease>);
                    }
                    Attempt::Taken if !announced_wait => {
                        announced_wait = true;
                        tracing::info!("another machine holds the poller lease; standing by");
                    }
                    Attempt::Taken | Attempt::NoAnswer(_) => {}
                }
                let unreachable = !answered;
                if watcher.is_none() && !unreachable {
                    watcher = self.kv.watch(LEASE_KEY).await.ok();
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return None,
                    _ = tokio::time::sleep(standby_retry(self.ttl)) => {}
                    _ = lease_gone(&mut watcher) => {}
                }
            }
        })
    }

    fn read_offset(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            match self.read_offset_entry().await {
                Ok(Some((id, revision))) => {
                    *self
                        .offset_revision
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = revision;
                    Some(id)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the bot offset from NATS");
                    None
                }
            }
        })
    }

    fn write_offset<'a>(
        &'a self,
        lease: &'a dyn PollerLease,
        update_id: i64,
    ) -> BoxFuture<'a, Result<(), CoordinationError>> {
        Box::pin(async move {
            if !lease.check().await {
                return Err(CoordinationError::LeaseLost);
            }
            let value = Bytes::from(serde_json::json!({ "lastUpdateId": update_id }).to_string());
            for _ in 0..2 {
                let expected = *self
                    .offset_revision
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match cas_put(
                    &self.js,
                    &self.bucket,
                    OFFSET_KEY,
                    value.clone(),
                    expected,
                    None,
                )
                .await
                {
                    Ok(revision) => {
                        *self
                            .offset_revision
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) = revision;
                        return Ok(());
                    }
                    Err(CasFailed::Refused) => {
                        // Written by an earlier owner since we read it: never go back.
                        match self.read_offset_entry().await {
                            Ok(Some((id, revision))) => {
                                *self
                                    .offset_revision
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner()) = revision;
                                if id >= update_id {
                                    return Ok(());
                                }
                            }
                            Ok(None) => {
                                let revision = match self.kv.entry(OFFSET_KEY).await {
                                    Ok(Some(e)) => e.revision,
                                    _ => 0,
                                };
                                *self
                                    .offset_revision
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner()) = revision;
                            }
                            Err(e) => {
                                return Err(CoordinationError::JetStream {
                                    step: "read the offset",
                                    reason: e,
                                })
                            }
                        }
                    }
                    Err(CasFailed::NoAnswer(e)) => {
                        return Err(CoordinationError::JetStream {
                            step: "write the offset",
                            reason: e,
                        })
                    }
                }
            }
            Err(CoordinationError::JetStream {
                step: "write the offset",
                reason: "its revision kept moving".into(),
            })
        })
    }
}

/// The shared handle.
pub type Shared = Arc<NatsCoordination>;
