//! Single-machine coordination: the kernel lock on `bot-owner.lock` (taken by the bot
//! owner before it asks for a lease) is all there is, so the lease is held at once and
//! for good, and the offset is the bot's file in `$PIV_HOME/bots/<bot id>/`
//! (`io::bot_offset`).

use std::path::PathBuf;

use tokio::sync::watch;

use super::{BoxFuture, Coordination, CoordinationError, PollerLease};
use crate::io::bot_offset::{read_last_handled, write_last_handled};

/// One machine, one `$PIV_HOME`.
#[derive(Debug, Clone)]
pub struct LocalCoordination {
    bot_dir: PathBuf,
}

impl LocalCoordination {
    /// `bot_dir`: `$PIV_HOME/bots/<bot id>/`.
    pub fn new(bot_dir: PathBuf) -> LocalCoordination {
        LocalCoordination { bot_dir }
    }
}

/// The kernel lock decided: nothing more to hold.
struct KernelLockDecided;

impl PollerLease for KernelLockDecided {
    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }

    fn lost(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

impl Coordination for LocalCoordination {
    fn describe(&self) -> String {
        "this machine only (kernel locks in PIV_HOME)".into()
    }

    fn acquire_poller_lease(
        &self,
        _stop: watch::Receiver<bool>,
        _notes: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'_, Option<Box<dyn PollerLease>>> {
        Box::pin(async { Some(Box::new(KernelLockDecided) as Box<dyn PollerLease>) })
    }

    fn read_offset(&self) -> BoxFuture<'_, Option<i64>> {
        let home = self.bot_dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || read_last_handled(&home))
                .await
                .unwrap_or(None)
        })
    }

    fn write_offset<'a>(
        &'a self,
        _lease: &'a dyn PollerLease,
        update_id: i64,
    ) -> BoxFuture<'a, Result<(), CoordinationError>> {
        let home = self.bot_dir.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || write_last_handled(&home, update_id)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(CoordinationError::OffsetFile {
                    step: "write",
                    reason: e.to_string(),
                }),
                Err(e) => Err(CoordinationError::OffsetFile {
                    step: "write",
                    reason: e.to_string(),
                }),
            }
        })
    }
}
