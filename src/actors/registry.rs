//! RegistryActor: this instance's presence in `$PIV_HOME/registry.json`. It registers
//! (holding the instance lock for the process's life), deregisters, lists the live
//! instances, mirrors the bot-owner mark, and every few seconds re-adds this instance if
//! the registry lost it (a corrupt registry is quarantined and rebuilt from the live
//! instances this way).
//!
//! Registry I/O blocks on `registry.lock`, so every operation runs in
//! `tokio::task::spawn_blocking` and the handler returns a future: a contended lock never
//! stalls the arbiter thread. The [`Registration`] guard lives behind a
//! `std::sync::Mutex` that only those blocking tasks lock, never the actor thread.
//! When the registry is disabled (`PIV_REGISTRY_DISABLED=1`) the caller does not start
//! this actor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use crate::core::bot_chats::BotChat;
use crate::core::registry::Instance;
use crate::io::registry_store::{Registration, RegistryError, RegistryStore};

/// How often the actor checks that its entry is still in the registry.
pub const DEFAULT_ENSURE_EVERY: Duration = Duration::from_secs(5);

/// Add this instance to the registry (or update its entry). Fails on a prefix used by
/// another live project.
#[derive(Debug, Message)]
#[rtype(result = "Result<Instance, RegistryError>")]
pub struct Register;

/// Remove this instance's entry and release its instance lock.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Deregister;

/// The live instances (dead entries pruned first).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Instance>, RegistryError>")]
pub struct ListInstances;

/// Mirror this instance's bot ownership in the registry.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct SetBotOwner(pub bool);

/// Who this instance is, as it registers.
#[derive(Debug, Clone)]
pub struct InstanceIdentity {
    pub prefix: String,
    pub project_dir: String,
    pub manifest_path: String,
    /// RFC 3339.
    pub started_at: String,
    /// The Telegram bot and chat this instance reports to (none without Telegram).
    pub chat: Option<BotChat>,
}

/// Owns this instance's registration.
pub struct RegistryActor {
    store: RegistryStore,
    identity: InstanceIdentity,
    ensure_every: Duration,
    registration: Arc<Mutex<Option<Registration>>>,
    /// A periodic check still running: skip the next tick rather than pile up.
    ensure_in_flight: Arc<AtomicBool>,
}

impl RegistryActor {
    pub fn new(store: RegistryStore, identity: InstanceIdentity, ensure_every: Duration) -> Self {
        RegistryActor {
            store,
            identity,
            ensure_every,
            registration: Arc::new(Mutex::new(None)),
            ensure_in_flight: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Runs `job` on tokio's blocking pool and returns its result as the reply.
    fn blocking<T: Send + 'static>(
        job: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
    ) -> ResponseFuture<Result<T, RegistryError>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(job)
                .await
                .unwrap_or_else(|e| Err(RegistryError::Background(e.to_string())))
        })
    }

    /// Re-adds this instance's entry if the registry lost it.
    fn ensure_registered(&self) {
        if self.ensure_in_flight.swap(true, Ordering::SeqCst) {
            return;
        }
        let slot = self.registration.clone();
        let in_flight = self.ensure_in_flight.clone();
        actix::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || {
                let guard = lock_slot(&slot);
                if let Some(registration) = guard.as_ref() {
                    if let Err(e) = registration.store().ensure_registered(registration) {
                        tracing::warn!(error = %e, "cannot re-check this instance's registry entry");
                    }
                }
                in_flight.store(false, Ordering::SeqCst);
            })
            .await;
        });
    }
}

/// Locks the registration slot; a panic in another holder does not make the guard
/// unusable (the `Registration` itself is still consistent).
fn lock_slot(
    slot: &Mutex<Option<Registration>>,
) -> std::sync::MutexGuard<'_, Option<Registration>> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.ensure_every, |actor, _| actor.ensure_registered());
    }
}

impl Handler<Register> for RegistryActor {
    type Result = ResponseFuture<Result<Instance, RegistryError>>;

    fn handle(&mut self, _: Register, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let id = self.identity.clone();
        let slot = self.registration.clone();
        Self::blocking(move || {
            let mut guard = lock_slot(&slot);
            if let Some(existing) = guard.as_ref() {
                // Already registered: just make sure the entry is there.
                existing.store().ensure_registered(existing)?;
                return Ok(existing.instance().clone());
            }
            let registration = store.register_reporting_to(
                &id.prefix,
                &id.project_dir,
                &id.manifest_path,
                &id.started_at,
                id.chat,
            )?;
            let instance = registration.instance().clone();
            *guard = Some(registration);
            Ok(instance)
        })
    }
}

impl Handler<Deregister> for RegistryActor {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, _: Deregister, _: &mut Self::Context) -> Self::Result {
        let slot = self.registration.clone();
        Self::blocking(move || match lock_slot(&slot).take() {
            Some(registration) => registration.deregister(),
            None => Ok(()),
        })
    }
}

impl Handler<ListInstances> for RegistryActor {
    type Result = ResponseFuture<Result<Vec<Instance>, RegistryError>>;

    fn handle(&mut self, _: ListInstances, _: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Self::blocking(move || store.list())
    }
}

impl Handler<SetBotOwner> for RegistryActor {
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(
        &mut self,
        SetBotOwner(is_owner): SetBotOwner,
        _: &mut Self::Context,
    ) -> Self::Result {
        let slot = self.registration.clone();
        let store = self.store.clone();
        let project_dir = self.identity.project_dir.clone();
        Self::blocking(move || match lock_slot(&slot).as_mut() {
            Some(registration) => registration.set_bot_owner(is_owner),
            // Not registered (yet): mark whatever entry exists, if any.
            None => store.set_bot_owner(&project_dir, is_owner).map(|_| ()),
        })
    }
}
