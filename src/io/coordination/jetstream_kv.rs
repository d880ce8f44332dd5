//! The JetStream primitives every NATS part of coordination builds on (the lease, the
//! registry, the signals, the send budget): connecting to the servers, opening a KV
//! bucket with per-key TTLs, and a compare-and-set write that tells a refusal from a
//! missing answer.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;

use super::{CoordinationError, CoordinationSettings};

/// How long a connection attempt may take at start.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client connected to the servers (reconnecting on its own afterwards, quickly).
pub async fn connect_client(
    settings: &CoordinationSettings,
) -> Result<async_nats::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("piv {}", std::process::id()))
        .connection_timeout(CONNECT_TIMEOUT)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(1000))
        });
    if let Some((user, password)) = &settings.user_password {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(creds) = &settings.creds_file {
        options = options.credentials_file(creds).await?;
    }
    let addrs = settings
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(addrs))
        .await
        .map_err(|_| "no server answered in time")??;
    Ok(client)
}

/// Connects to `settings.servers` and checks that JetStream answers; an error names the
/// servers (never credentials).
pub async fn connect_jetstream(
    settings: &CoordinationSettings,
) -> Result<(async_nats::Client, jetstream::Context), CoordinationError> {
    let unreachable = |reason: String| CoordinationError::Unreachable {
        servers: settings.servers_text(),
        reason,
    };
    let client = connect_client(settings)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let js = jetstream::new(client.clone());
    match tokio::time::timeout(CONNECT_TIMEOUT, js.query_account()).await {
        Ok(Ok(_)) => Ok((client, js)),
        Ok(Err(e)) => Err(unreachable(format!("JetStream not available: {e}"))),
        Err(_) => Err(unreachable("JetStream did not answer in time".into())),
    }
}

/// Opens `bucket`, creating it when it does not exist yet (history 1, per-key TTLs, a
/// marker left for `marker_ttl` when a key expires).
pub(super) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    description: &str,
    replicas: usize,
    marker_ttl: Duration,
) -> Result<kv::Store, CoordinationError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.to_string(),
        description: description.into(),
        history: 1,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        // Per-key TTLs, and a marker (kept this long) when a key expires.
        limit_markers: Some(marker_ttl.max(Duration::from_secs(1))),
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        // Another instance created it meanwhile.
        Err(create) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| CoordinationError::JetStream {
                step: "create the bucket",
                reason: create.to_string(),
            }),
    }
}

/// A compare-and-set write that failed.
#[derive(Debug)]
pub(super) enum CasFailed {
    /// The server refused: the key's revision is not the one expected.
    Refused,
    /// No answer, or another error.
    NoAnswer(String),
}

pub(super) async fn cas_put(
    js: &jetstream::Context,
    bucket: &str,
    key: &str,
    value: Bytes,
    expected: u64,
    ttl: Option<Duration>,
) -> Result<u64, CasFailed> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Expected-Last-Subject-Sequence",
        HeaderValue::from(expected),
    );
    if let Some(ttl) = ttl {
        headers.insert("Nats-TTL", HeaderValue::from(ttl.as_secs().max(1)));
    }
    let ack = js
        .publish_with_headers(format!("$KV.{bucket}.{key}"), headers, value)
        .await
        .map_err(|e| CasFailed::NoAnswer(e.to_string()))?;
    match ack.await {
        Ok(ack) => Ok(ack.sequence),
        Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
            Err(CasFailed::Refused)
        }
        // A clustered stream may refuse with the constant variant (10164) while another
        // write to the key is in flight: a refusal too, not a missing answer.
        Err(e) if is_wrong_last_sequence_constant(&e) => Err(CasFailed::Refused),
        Err(e) => Err(CasFailed::NoAnswer(e.to_string())),
    }
}

fn is_wrong_last_sequence_constant(e: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|js| {
            js.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        })
}

/// Checks that the servers answer (for `piv status` and `piv signal`, which only need to
/// know that coordination is reachable before they act).
pub async fn check_reachable(settings: &CoordinationSettings) -> Result<(), CoordinationError> {
    let client = connect_client(settings)
        .await
        .map_err(|e| CoordinationError::Unreachable {
            servers: settings.servers_text(),
            reason: e.to_string(),
        })?;
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    Ok(())
}
