//! The registry across machines: a KV bucket (`core::lease::REGISTRY_BUCKET`) with one
//! key per instance (`core::machines::registry_key`: host and project directory) holding
//! its status and host name, published again every lease TTL with a per-key TTL of three
//! of those, so an instance that stops renewing its entry drops out on its own. Read by
//! `/status all` (through the bot owner) and `piv status --all`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{CoordinationError, CoordinationSettings};
use crate::core::lease::{replicas, REGISTRY_BUCKET};
use crate::core::machines::PublishedInstance;
use crate::core::status::InstanceFacts;
use crate::io::error_chain;

/// Opens (or creates) the registry bucket.
pub async fn open(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, CoordinationError> {
    super::jetstream_kv::open_bucket(
        js,
        REGISTRY_BUCKET,
        "piv: every instance's status, one key per instance, each with a TTL",
        replicas,
        Duration::from_secs(1),
    )
    .await
}

/// Puts `entry` under `key`, to expire after `ttl` unless published again.
pub async fn publish(
    js: &jetstream::Context,
    key: &str,
    entry: &PublishedInstance,
    ttl: Duration,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-TTL", HeaderValue::from(ttl.as_secs().max(1)));
    let body = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    js.publish_with_headers(
        format!("$KV.{REGISTRY_BUCKET}.{key}"),
        headers,
        Bytes::from(body),
    )
    .await
    .map_err(|e| e.to_string())?
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Every live entry (unreadable ones are skipped with a warning).
pub async fn list(store: &kv::Store) -> Result<Vec<PublishedInstance>, String> {
    let mut keys = store.keys().await.map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    while let Some(key) = keys.next().await {
        match key {
            Ok(key) => names.push(key),
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut out = Vec::new();
    for key in names {
        match store.get(&key).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<PublishedInstance>(&bytes) {
                Ok(entry) => out.push(entry),
                Err(e) => tracing::warn!(key, error = %e, "skipping an unreadable registry entry"),
            },
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// For `piv status --all`: the entries published on the servers of `settings` (none when
/// the bucket does not exist yet).
pub async fn list_with(
    settings: &CoordinationSettings,
) -> Result<Vec<PublishedInstance>, CoordinationError> {
    let unreachable = |reason: String| CoordinationError::Unreachable {
        servers: settings.servers_text(),
        reason,
    };
    let client = super::jetstream_kv::connect_client(settings)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let js = jetstream::new(client);
    // No bucket yet: nobody has published. Any other failure (a request timing out on a
    // loaded cluster) is tried again, then reported: it must not read as "no instances".
    let mut attempt = 0;
    let store = loop {
        attempt += 1;
        match js.get_key_value(REGISTRY_BUCKET).await {
            Ok(store) => break store,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) if attempt >= 3 => {
                return Err(CoordinationError::JetStream {
                    step: "open the registry",
                    reason: error_chain(&e),
                })
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), attempt, "opening the registry failed; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), list(&store))
        .await
        .map_err(|_| unreachable("listing the registry timed out".into()))?
        .map_err(|reason| CoordinationError::JetStream {
            step: "list the registry",
            reason,
        })
}

/// Whether opening a bucket failed because its stream does not exist (JetStream's
/// "stream not found", error code 10059), not for want of an answer.
fn is_not_found(e: &dyn std::error::Error) -> bool {
    let text = error_chain(e);
    text.contains("stream not found") || text.contains("10059")
}

/// The replicas for a bucket on the cluster `client` is connected to.
pub fn replicas_for(client: &async_nats::Client, settings: &CoordinationSettings) -> usize {
    let info = client.server_info();
    let size = crate::core::lease::cluster_size(
        info.cluster.is_some(),
        info.connect_urls.len(),
        settings.servers.len(),
    );
    replicas(size, settings.replicas)
}

/// Publishes this instance's status every lease TTL until the task is aborted.
pub fn spawn_publisher(
    presence: Arc<super::presence::NatsPresence>,
    facts: InstanceFacts,
    project_dir: PathBuf,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (facts, dir) = (facts.clone(), project_dir.clone());
            if let Ok(status) =
                tokio::task::spawn_blocking(move || crate::io::status_probe::probe(&facts, &dir))
                    .await
            {
                presence.publish(status).await;
            }
            tokio::time::sleep(presence.publish_every()).await;
        }
    })
}
