//! Coordination between piv instances of one bot: one trait, [`Coordination`], with two
//! implementations chosen once at start — [`local::LocalCoordination`] (one machine: the
//! kernel lock on `bot-owner.lock` decides who polls, the offset is a file in `$PIV_HOME`)
//! and [`nats::NatsCoordination`] (several machines, opt-in with `PIV_COORDINATION`: a
//! poller lease and the offset in a JetStream KV bucket per bot). The bot owner asks it
//! for a poller lease once its local kernel lock is won, fences every `getUpdates` and
//! every offset write with it, and reads and writes the offset through it. The notifier's
//! `io::chat_sender` books its send slots through it when it is shared across machines
//! (`budget_nats`), and in the file budget otherwise.
//!
//! The decisions (names, replicas, the renewal schedule, fencing) are
//! `core::lease`'s; this module only talks to the outside.

pub mod budget_nats;
pub mod elsewhere;
pub mod jetstream_kv;
pub mod local;
pub mod nats;
pub mod presence;
pub mod registry_kv;
pub mod signals_nats;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A boxed future, so that the trait can be used as `dyn Coordination`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The default lease TTL (`PIV_LEASE_TTL_SECS`).
pub const DEFAULT_LEASE_TTL_SECS: u64 = 5;

/// What `PIV_COORDINATION` and its companions say (validated by `config`).
#[derive(Clone)]
pub struct CoordinationSettings {
    /// The NATS servers, each with its scheme (`nats://h:p`).
    pub servers: Vec<String>,
    /// `PIV_NATS_USER` / `PIV_NATS_PASSWORD`.
    pub user_password: Option<(String, String)>,
    /// `PIV_NATS_CREDS`: a `.creds` file (JWT and NKey seed).
    pub creds_file: Option<PathBuf>,
    /// `PIV_COORDINATION_OPTIONAL=1`: unreachable at start → single-machine mode.
    pub optional: bool,
    /// `PIV_NATS_REPLICAS`: overrides `min(3, cluster size)`.
    pub replicas: Option<usize>,
    /// `PIV_LEASE_TTL_SECS`.
    pub lease_ttl: Duration,
}

impl CoordinationSettings {
    /// The server list for messages and logs, any `user:password@` in a URL masked.
    pub fn servers_text(&self) -> String {
        self.servers
            .iter()
            .map(|s| redact_userinfo(s))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl std::fmt::Debug for CoordinationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinationSettings")
            .field("servers", &self.servers_text())
            .field(
                "user_password",
                &self.user_password.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("creds_file", &self.creds_file)
            .field("optional", &self.optional)
            .field("replicas", &self.replicas)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// Why coordination failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinationError {
    #[error("cannot reach the NATS servers {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("NATS JetStream {step}: {reason}")]
    JetStream { step: &'static str, reason: String },
    #[error(
        "the bot token has no bot id (the digits before ':'), so no bucket can be named for it"
    )]
    NoBotId,
    #[error("cannot {step} the bot offset file: {reason}")]
    OffsetFile { step: &'static str, reason: String },
    #[error("the poller lease is no longer held")]
    LeaseLost,
}

/// The right to poll, held while the lease lasts. Dropping it stops its renewals;
/// [`PollerLease::release`] also hands it on at once.
pub trait PollerLease: Send + Sync {
    /// The fencing check: may the holder poll or confirm updates now?
    fn check(&self) -> BoxFuture<'_, bool>;
    /// Resolves once the lease is lost (never, for a lease that cannot be lost).
    fn lost(&self) -> BoxFuture<'_, ()>;
    /// Gives the lease up so that a standby takes over at once.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// What the bot owner needs beyond its local kernel lock (see the module docs).
pub trait Coordination: Send + Sync {
    /// For logs and messages: "this machine only" or the NATS servers.
    fn describe(&self) -> String;
    /// The long-poll length to use for `wanted` (never longer than a lease).
    fn poll_timeout_secs(&self, wanted: u32) -> u32 {
        wanted
    }
    /// Waits until this instance (already the local winner) holds the poller lease; None
    /// when `stop` fires first. What the chat should hear meanwhile (coordination lost,
    /// back) goes to `notes`.
    fn acquire_poller_lease(
        &self,
        stop: watch::Receiver<bool>,
        notes: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> BoxFuture<'_, Option<Box<dyn PollerLease>>>;
    /// The last handled update id (None: none yet, or unreadable).
    fn read_offset(&self) -> BoxFuture<'_, Option<i64>>;
    /// Records the last handled update id, fenced by `lease`.
    fn write_offset<'a>(
        &'a self,
        lease: &'a dyn PollerLease,
        update_id: i64,
    ) -> BoxFuture<'a, Result<(), CoordinationError>>;
    /// This instance's presence across machines (the shared registry, the signals other
    /// machines send it), when coordination spans machines.
    fn presence(&self) -> Option<Arc<presence::NatsPresence>> {
        None
    }
    /// Sends a control signal to an instance on another machine (from the shared
    /// registry) and waits a few seconds for it to acknowledge.
    fn send_signal<'a>(
        &'a self,
        _target: &'a crate::core::machines::PublishedInstance,
        _message: crate::core::signal::SignalMessage,
    ) -> BoxFuture<'a, Result<signals_nats::Delivery, CoordinationError>> {
        Box::pin(async {
            Err(CoordinationError::JetStream {
                step: "send a signal",
                reason: "no coordination across machines".into(),
            })
        })
    }
    /// Books a send slot of `chat_id` in the budget shared across machines
    /// (`budget_nats`; slots in ms since the epoch). None: there is none, this machine's
    /// file budget (`io::send_budget`) is all there is.
    fn book_send(
        &self,
        _chat_id: i64,
        _kind: crate::core::outbox::MessageKind,
        _interval: Duration,
    ) -> Option<BoxFuture<'_, Result<crate::core::send_slots::Booking, CoordinationError>>> {
        None
    }
    /// Records a 429's back-off in the budget shared across machines, so every machine
    /// waits it out. None: there is none.
    fn push_back_send(
        &self,
        _until: std::time::SystemTime,
    ) -> Option<BoxFuture<'_, Result<(), CoordinationError>>> {
        None
    }
    /// The end (ms since the epoch) of the 429 back-off recorded across machines, if any:
    /// checked once more when a booked slot comes, since another machine may have got a
    /// 429 after the booking. None: there is no budget across machines.
    fn send_blocked_until(&self) -> Option<BoxFuture<'_, Result<Option<u64>, CoordinationError>>> {
        None
    }
    /// How many machines the shared registry showed when last listed (0: never listed,
    /// or there is none).
    fn machines_last_seen(&self) -> usize {
        0
    }
    /// Every status published in the shared registry, this machine's included.
    fn published_instances(&self) -> BoxFuture<'_, Vec<crate::core::machines::PublishedInstance>> {
        Box::pin(async { Vec::new() })
    }
}

/// The implementation chosen at start.
pub type SharedCoordination = Arc<dyn Coordination>;

/// `nats://user:pass@host:4222` → `nats://***@host:4222` (credentials never reach a
/// message or a log line).
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}"),
        None => url.to_string(),
    }
}

/// This instance's holder id on the lease: host, pid and a per-process nonce (a restarted
/// piv with the same pid is a different holder).
pub fn holder_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!(
        "{}/{}/{:016x}",
        hostname(),
        std::process::id(),
        hasher.finish()
    )
}

/// The machine's host name (`gethostname`), or "unknown-host".
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // when the name fits (truncation is handled by the search for NUL below).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() {
        "unknown-host".into()
    } else {
        name
    }
}

/// The implementation chosen at start, and what to tell the chat about the choice (the
/// fallback to this machine only when NATS was unreachable and optional).
#[derive(Clone)]
pub struct Coordinator {
    pub shared: SharedCoordination,
    pub fallback_note: Option<String>,
    /// This instance's presence across machines (with or without a bot); none on this
    /// machine only.
    pub presence: Option<Arc<presence::NatsPresence>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("shared", &self.shared.describe())
            .field("fallback_note", &self.fallback_note)
            .field("presence", &self.presence.is_some())
            .finish()
    }
}

/// Chooses the implementation at start: NATS when `settings` is given and a server
/// answers; when none answers, an error (exit 2) unless coordination is optional, then
/// this machine only with a note saying so. `bot_id` None (no Telegram): no lease and no
/// budget, only this instance's presence across machines.
pub async fn choose(
    settings: Option<&CoordinationSettings>,
    bot_id: Option<&str>,
    home: &std::path::Path,
    project_dir: &std::path::Path,
) -> Result<Coordinator, CoordinationError> {
    // This machine only: the offset is the bot's file in `$PIV_HOME/bots/<bot id>/`.
    let bot_dir = match bot_id.and_then(|id| id.parse::<u64>().ok()) {
        Some(id) => crate::io::home::bot_dir(home, id),
        None => home.to_path_buf(),
    };
    let local =
        || -> SharedCoordination { Arc::new(local::LocalCoordination::new(bot_dir.clone())) };
    let Some(settings) = settings else {
        return Ok(Coordinator {
            shared: local(),
            fallback_note: None,
            presence: None,
        });
    };
    let connected = match bot_id {
        Some(bot_id) => nats::connect(settings, bot_id, holder_id(), project_dir)
            .await
            .map(|c| {
                let shared: SharedCoordination = Arc::new(c);
                (shared.clone(), shared.presence())
            }),
        None => presence::NatsPresence::connect(settings, project_dir)
            .await
            .map(|p| (local(), Some(Arc::new(p)))),
    };
    match connected {
        Ok((shared, presence)) => Ok(Coordinator {
            shared,
            fallback_note: None,
            presence,
        }),
        Err(e) if settings.optional => {
            let note = format!(
                "⚠️ Coordination across machines is off: {e}. PIV_COORDINATION_OPTIONAL=1, so \
                 this instance runs on this machine only (kernel locks in PIV_HOME)."
            );
            tracing::warn!("{note}");
            Ok(Coordinator {
                shared: local(),
                fallback_note: Some(note),
                presence: None,
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_server_urls_are_masked() {
        let table = [
            ("nats://h:4222", "nats://h:4222"),
            ("nats://u:secret@h:4222", "nats://***@h:4222"),
            ("tls://token@h:4222", "tls://***@h:4222"),
            ("h:4222", "h:4222"),
        ];
        for (url, shown) in table {
            assert_eq!(redact_userinfo(url), shown);
        }
        let settings = CoordinationSettings {
            servers: vec!["nats://a:pw@h1:1".into(), "nats://h2:2".into()],
            user_password: Some(("u".into(), "pw2".into())),
            creds_file: None,
            optional: false,
            replicas: None,
            lease_ttl: Duration::from_secs(5),
        };
        assert_eq!(settings.servers_text(), "nats://***@h1:1,nats://h2:2");
        assert!(!format!("{settings:?}").contains("pw2"));
    }
}
