//! SignalWatcherActor: watches one project's signal queue (`.agents/signals/`, plus the
//! legacy `.agents/orchestrator.signal`) and delivers each valid signal, once and in
//! order, as a [`SignalReceived`] to its recipient (the supervisor, which turns it into
//! a `Control` on the one control path).
//!
//! Two triggers start a drain: notify events on the directory (fast) and a poll every
//! `poll` interval (`PIV_SIGNAL_POLL_MS`, default 2000; `PIV_SIGNAL_NOTIFY=0` polls
//! only), which keeps delivering when notify gives no events (network filesystems,
//! inotify watch limit reached). A drain is a few small files, so it runs on the actor's
//! thread; the queue logic (claiming, rejecting, discarding signals older than the
//! start) is `io::signal_queue`'s.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use notify::Watcher;

use crate::core::signal::SignalMessage;
use crate::io::signal_queue;

/// A valid signal taken from the queue (sent after this instance started).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct SignalReceived(pub SignalMessage);

/// Something changed in the signals directory (from notify's thread).
struct DirChanged;

/// Watches and drains one project's signal queue.
pub struct SignalWatcherActor {
    project_dir: PathBuf,
    /// Signals stamped before this are leftovers from an earlier run: discarded.
    started_at: SystemTime,
    poll: Duration,
    use_notify: bool,
    recipient: Recipient<SignalReceived>,
    /// Kept alive for as long as the actor runs; dropping it ends the event stream.
    watcher: Option<notify::RecommendedWatcher>,
}

impl SignalWatcherActor {
    pub fn new(
        project_dir: PathBuf,
        started_at: SystemTime,
        poll: Duration,
        use_notify: bool,
        recipient: Recipient<SignalReceived>,
    ) -> Self {
        SignalWatcherActor {
            project_dir,
            started_at,
            poll,
            use_notify,
            recipient,
            watcher: None,
        }
    }

    /// Takes every ready signal and sends it on, in order.
    fn drain(&mut self) {
        let result = signal_queue::drain_ready(&self.project_dir, Some(self.started_at));
        for error in &result.errors {
            tracing::warn!(error = %error, "signal queue: a file could not be handled; retrying later");
        }
        for message in result.delivered {
            tracing::info!(action = %message.action, from = %message.from, "signal received");
            self.recipient.do_send(SignalReceived(message));
        }
    }

    /// Starts notify on the signals directory; `None` (logged) when it cannot.
    fn start_notify(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<DirChanged>,
    ) -> Option<notify::RecommendedWatcher> {
        let dir = signal_queue::signals_dir(&self.project_dir);
        let mut watcher = match notify::recommended_watcher(
            move |res: notify::Result<notify::Event>| {
                // Errors too: an overflowed event queue means "look again".
                if res.as_ref().map_or(true, wakes_drain) {
                    let _ = tx.send(DirChanged);
                }
            },
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a file watcher; polling the signal queue instead");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e,
                "cannot watch the signal queue (watch limit reached?); polling instead");
            return None;
        }
        Some(watcher)
    }
}

/// Whether a file event in the signals directory can mean a new signal. Every drain
/// opens and reads the directory, which inotify reports as open/close "access" events;
/// waking on those would make each drain trigger the next, a busy loop burning a core.
/// Only a close after writing is an access worth a look (a writer that writes in place).
pub fn wakes_drain(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

impl Actor for SignalWatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let dir = signal_queue::signals_dir(&self.project_dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the signal queue directory");
        }
        if self.use_notify {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            self.watcher = self.start_notify(tx);
            if self.watcher.is_some() {
                ctx.add_stream(ChannelStream(rx));
            }
        }
        ctx.run_interval(self.poll, |actor, _| actor.drain());
        // Whatever arrived before we watched (and leftovers to discard) is handled now.
        self.drain();
    }
}

impl StreamHandler<DirChanged> for SignalWatcherActor {
    fn handle(&mut self, _: DirChanged, _: &mut Self::Context) {
        self.drain();
    }

    /// The stream ends only if the watcher is dropped; polling carries on, so the actor
    /// must not stop (the default `finished` would stop it).
    fn finished(&mut self, _: &mut Self::Context) {
        tracing::debug!("signal watcher event stream ended; polling continues");
    }
}

/// A tokio receiver as a `Stream` for `ctx.add_stream` (no extra crate needed).
struct ChannelStream<T>(tokio::sync::mpsc::UnboundedReceiver<T>);

impl<T> Stream for ChannelStream<T> {
    type Item = T;

    /// Yields one item per wake-up, swallowing the ones already queued behind it: a
    /// burst of file events needs one drain, not one per event.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<T>> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                while self.0.try_recv().is_ok() {}
                Poll::Ready(Some(item))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_can_mean_a_new_signal_wake_a_drain() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind, RenameMode,
        };
        for (kind, wakes) in [
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (EventKind::Access(AccessKind::Read), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            (EventKind::Create(CreateKind::File), true),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Remove(RemoveKind::File), true),
            (EventKind::Any, true),
        ] {
            assert_eq!(wakes_drain(&notify::Event::new(kind)), wakes, "{kind:?}");
        }
    }
}
