//! Control signals across machines: a JetStream stream (`PIV_SIGNALS`, subjects
//! `piv.signal.<registry key>`) and one durable pull consumer per instance (named by its
//! registry key, so a restarted piv of the same project resumes where it stopped).
//!
//! Why a durable consumer rather than a KV-backed dedupe: the stream keeps a command for
//! an instance that is down (it is applied when that instance is back), delivers it in
//! order (`max_ack_pending` 1) and again until acknowledged; the receiver acknowledges
//! only after the signal is in its local queue (`io::signal_queue`), and remembers the
//! last stream sequence it queued (`$PIV_HOME/nats-signals/<key>.json`, written right
//! after the queue file and before the ack) so that a redelivery after a crash between
//! queueing and acknowledging is acknowledged, not queued twice. (A crash in the
//! microseconds between the queue file's rename and the record's would queue it twice.) The sender publishes with a message id (the stream drops a retried publish) and
//! watches the consumer's ack floor to tell "applied" from "queued".

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::core::signal::SignalMessage;
use crate::io::atomic_file;

/// The stream of every instance's signals.
pub const STREAM: &str = "PIV_SIGNALS";

/// The subject of the instance with this registry key.
pub fn subject(key: &str) -> String {
    format!("piv.signal.{key}")
}

/// What became of a signal sent to another machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The target queued it (acknowledged).
    Applied,
    /// Stored; the target has not acknowledged it yet (down or slow): it will be applied
    /// when the target is back.
    Queued,
}

/// Opens (or creates) the signals stream.
pub async fn open_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, String> {
    if let Ok(stream) = js.get_stream(STREAM).await {
        return Ok(stream);
    }
    let config = stream::Config {
        name: STREAM.into(),
        description: Some("piv: control signals for instances on other machines".into()),
        subjects: vec!["piv.signal.*".into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(create) => js.get_stream(STREAM).await.map_err(|_| create.to_string()),
    }
}

/// Publishes `message` for the instance `key` and waits up to `wait` for it to
/// acknowledge.
pub async fn send(
    js: &jetstream::Context,
    key: &str,
    message: &SignalMessage,
    wait: Duration,
) -> Result<Delivery, String> {
    let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        HeaderValue::from(format!("{key}-{}-{}", message.timestamp, message.from).as_str()),
    );
    let ack = js
        .publish_with_headers(subject(key), headers, Bytes::from(body))
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let sequence = ack.sequence;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Ok(consumer) = js
            .get_consumer_from_stream::<pull::Config, _, _>(key, STREAM)
            .await
        {
            if let Ok(info) = consumer.get_info().await {
                if info.ack_floor.stream_sequence >= sequence {
                    return Ok(Delivery::Applied);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Delivery::Queued);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last stream sequence this instance queued, kept in `$PIV_HOME`.
fn record_path(home: &Path, key: &str) -> PathBuf {
    home.join("nats-signals").join(format!("{key}.json"))
}

fn read_record(path: &Path) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["lastSequence"].as_u64())
        .unwrap_or(0)
}

fn write_record(path: &Path, sequence: u64) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let body = serde_json::json!({ "lastSequence": sequence }).to_string();
    atomic_file::write(path, body.as_bytes()).map_err(|e| e.to_string())
}

/// Receives this instance's signals until the task is aborted: each is written into the
/// local queue, recorded, then acknowledged. Reconnects after errors.
pub async fn receive(
    js: jetstream::Context,
    key: String,
    project_dir: PathBuf,
    home: PathBuf,
    replicas: usize,
) {
    let record = record_path(&home, &key);
    loop {
        if let Err(e) = receive_once(&js, &key, &project_dir, &record, replicas).await {
            tracing::debug!(error = %e, "signals from other machines: retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn receive_once(
    js: &jetstream::Context,
    key: &str,
    project_dir: &Path,
    record: &Path,
    replicas: usize,
) -> Result<(), String> {
    let stream = open_stream(js, replicas).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            key,
            pull::Config {
                durable_name: Some(key.to_string()),
                filter_subject: subject(key),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 1,
                ack_wait: Duration::from_secs(30),
                // A project not run for as long as the stream keeps messages loses its
                // consumer; a new one redelivers what is left, and the record skips what
                // was already queued.
                inactive_threshold: Duration::from_secs(7 * 24 * 3600),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
        let record_path = record.to_path_buf();
        let done = tokio::task::spawn_blocking(move || read_record(&record_path))
            .await
            .unwrap_or(0);
        if sequence > done {
            let signal: SignalMessage = match serde_json::from_slice(&message.payload) {
                Ok(signal) => signal,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an unreadable signal from another machine");
                    message.ack().await.map_err(|e| e.to_string())?;
                    continue;
                }
            };
            let (dir, record_path) = (project_dir.to_path_buf(), record.to_path_buf());
            let queued = tokio::task::spawn_blocking(move || {
                crate::io::signal_queue::enqueue_message(&dir, &signal)
                    .map_err(|e| e.to_string())?;
                write_record(&record_path, sequence)
            })
            .await
            .map_err(|e| e.to_string())?;
            // Not queued: no ack, so it comes again.
            queued?;
            tracing::info!(sequence, "queued a signal from another machine");
        }
        message.double_ack().await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// For `piv signal`: sends `message` to `target` over a connection of its own.
pub async fn send_with(
    settings: &super::CoordinationSettings,
    target: &crate::core::machines::PublishedInstance,
    message: &SignalMessage,
) -> Result<Delivery, super::CoordinationError> {
    let client = super::jetstream_kv::connect_client(settings)
        .await
        .map_err(|e| super::CoordinationError::Unreachable {
            servers: settings.servers_text(),
            reason: e.to_string(),
        })?;
    let replicas = super::registry_kv::replicas_for(&client, settings);
    let js = jetstream::new(client);
    let failed = |reason: String| super::CoordinationError::JetStream {
        step: "send a signal",
        reason,
    };
    open_stream(&js, replicas).await.map_err(failed)?;
    let key = crate::core::machines::registry_key(&target.hostname, &target.status.project_dir);
    send(&js, &key, message, Duration::from_secs(3))
        .await
        .map_err(failed)
}
