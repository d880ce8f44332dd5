//! The send budget of a bot shared across machines: the same rule as the file budget
//! (`core::send_slots::book`, replies first), kept in the bot's KV bucket and written by
//! compare-and-set, so that N machines do not each believe they own the chat's rate.
//!
//! Keys: `budget.<chat id>` holds the chat's last booked slot, `budget.blocked` the end of
//! the last 429 back-off on the token (every chat waits it out). A booking reads both and
//! writes the chat's key with the revision it read; a refused write (another machine
//! booked meanwhile) reads again and retries. Slots are wall-clock milliseconds read on
//! the booking machine: the machines' clocks are assumed in step (NTP); a skew of `d`
//! can shorten one gap between two machines' sends by `d`.
//!
//! Every operation is bounded by the caller (`io::chat_sender`): a send never hangs on
//! NATS; it books in this machine's file budget at a conservative share instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

use super::jetstream_kv::{cas_put, CasFailed};
use crate::core::outbox::MessageKind;
use crate::core::send_slots::{book as book_slot, Booking};

/// The key of the token's 429 back-off.
pub const BLOCKED_KEY: &str = "budget.blocked";

/// How often a compare-and-set refused by another machine's booking is tried again.
const MAX_CONFLICTS: usize = 16;

/// The key of a chat's last booked slot (`budget.-100123` for a group).
pub fn chat_key(chat_id: i64) -> String {
    format!("budget.{chat_id}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A number stored under `key`, and the revision to compare against (0: never written).
async fn read_ms(store: &kv::Store, key: &str) -> Result<(Option<u64>, u64), String> {
    match store.entry(key).await.map_err(|e| e.to_string())? {
        Some(entry) if entry.operation == kv::Operation::Put => Ok((
            std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|v| v.trim().parse().ok()),
            entry.revision,
        )),
        Some(entry) => Ok((None, entry.revision)),
        None => Ok((None, 0)),
    }
}

/// Books a slot of `chat_id` for a message of `kind`; slots are ms since the epoch.
pub async fn book(
    js: &jetstream::Context,
    store: &kv::Store,
    bucket: &str,
    chat_id: i64,
    kind: MessageKind,
    interval: Duration,
) -> Result<Booking, String> {
    let key = chat_key(chat_id);
    for _ in 0..MAX_CONFLICTS {
        let (blocked, _) = read_ms(store, BLOCKED_KEY).await?;
        let (last, revision) = read_ms(store, &key).await?;
        let now = now_ms();
        match book_slot(kind, now, last, blocked, interval.as_millis() as u64) {
            Booking::Slot(slot) => {
                let value = Bytes::from(slot.to_string());
                match cas_put(js, bucket, &key, value, revision, None).await {
                    Ok(_) => return Ok(Booking::Slot(slot)),
                    Err(CasFailed::Refused) => continue,
                    Err(CasFailed::NoAnswer(e)) => return Err(e),
                }
            }
            ask_again => return Ok(ask_again),
        }
    }
    Err("the budget kept changing under this booking".into())
}

/// The end of the token's last 429 back-off (ms since the epoch), if one was recorded.
pub async fn blocked_until(store: &kv::Store) -> Result<Option<u64>, String> {
    Ok(read_ms(store, BLOCKED_KEY).await?.0)
}

/// Records a 429 for every machine: nobody on the token sends before `until`. An earlier
/// back-off never shortens a later one.
pub async fn push_back(
    js: &jetstream::Context,
    store: &kv::Store,
    bucket: &str,
    until: SystemTime,
) -> Result<(), String> {
    let until_ms = until
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for _ in 0..MAX_CONFLICTS {
        let (blocked, revision) = read_ms(store, BLOCKED_KEY).await?;
        if blocked.is_some_and(|b| b >= until_ms) {
            return Ok(());
        }
        let value = Bytes::from(until_ms.to_string());
        match cas_put(js, bucket, BLOCKED_KEY, value, revision, None).await {
            Ok(_) => return Ok(()),
            Err(CasFailed::Refused) => continue,
            Err(CasFailed::NoAnswer(e)) => return Err(e),
        }
    }
    Err("the back-off kept changing under this write".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_keys_are_valid_kv_keys() {
        for (chat, key) in [(42, "budget.42"), (-100123, "budget.-100123")] {
            assert_eq!(chat_key(chat), key);
            assert!(key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.=/".contains(c)));
        }
    }
}
