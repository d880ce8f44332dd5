//! The send budget of one bot, shared by every piv process of one `$PIV_HOME` using it: who may send to a chat, and when.
//!
//! Telegram's per-chat limits (about one message a second to a private chat, twenty a
//! minute to a group) belong to the bot, so several instances sending to one chat must
//! take turns. The budget lives in the bot's directory (`$PIV_HOME/bots/<bot id>/`, see
//! `io::home::bot_dir`): slots per bot and chat, a 429 back-off per bot. Each send first
//! [`SendBudget::reserve`]s the next free slot: under an exclusive lock on
//! `send-budget.lock` it reads the last reserved slot from `send-budget.json`, books the
//! next one, writes it back atomically and
//! returns how long the caller must wait. Replies go first: a notification books only a
//! slot at most one interval away and otherwise asks again later, a reply books the next
//! slot regardless (`core::send_slots`, [`SendBudget::book_now`]), so a reply never waits
//! behind a backlog of other instances' notifications. A 429 from Telegram is recorded with
//! [`SendBudget::push_back`] so every process waits it out, not just the one that got it.
//!
//! With `PIV_COORDINATION` the budget is booked across machines instead
//! (`io::coordination::budget_nats`, same rule); this file budget then serves only while
//! NATS does not answer, at a conservative share of the interval (`io::chat_sender`).
//!
//! The lock wait blocks: callers on an actor thread run this in `spawn_blocking` or a
//! thread of their own.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::outbox::MessageKind;
use crate::core::send_slots::{book, Booking};
use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::PathIoError;

/// Spacing for a private chat (positive id): Telegram asks for at most one a second;
/// the margin absorbs clock and network jitter.
pub const PRIVATE_CHAT_INTERVAL: Duration = Duration::from_millis(1100);
/// Spacing for a group (negative id): twenty messages a minute.
pub const GROUP_CHAT_INTERVAL: Duration = Duration::from_millis(3000);

/// The spacing Telegram wants between two messages to `chat_id`.
pub fn interval_for_chat(chat_id: i64) -> Duration {
    if chat_id < 0 {
        GROUP_CHAT_INTERVAL
    } else {
        PRIVATE_CHAT_INTERVAL
    }
}

/// The budget's state file in the bot's directory.
pub const STATE_FILE: &str = "send-budget.json";
/// The lock serialising its read-modify-writes.
pub const LOCK_FILE: &str = "send-budget.lock";

pub use crate::core::send_slots::{next_slot_ms, MAX_AHEAD, MAX_BACKOFF_AHEAD};

/// What [`SendBudget::book_now`] gives a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is booked: send after this wait.
    SendIn(Duration),
    /// Nothing booked (a notification while the budget is booked ahead): ask again after
    /// this wait.
    AskAgainIn(Duration),
}

/// Failures of the send budget; each names the file and the step.
#[derive(Debug, thiserror::Error)]
pub enum SendBudgetError {
    #[error("send budget: cannot {step} {path}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("send budget: {0}")]
    Write(#[from] AtomicFileError),
}

impl PathIoError for SendBudgetError {
    fn from_io(path: PathBuf, step: &'static str, source: std::io::Error) -> Self {
        SendBudgetError::Io { path, step, source }
    }
}

/// `send-budget.json`: per chat, the last reserved slot; for the token, the end of the
/// last 429 back-off.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BudgetFile {
    #[serde(default)]
    last_slot_ms: BTreeMap<String, u64>,
    #[serde(default)]
    blocked_until_ms: Option<u64>,
}

/// A handle on the shared budget for one chat. Each handle opens the lock file anew per
/// call, so handles in one process exclude each other like separate processes do.
#[derive(Debug, Clone)]
pub struct SendBudget {
    lock_path: PathBuf,
    state_path: PathBuf,
    chat_id: i64,
    interval: Duration,
}

fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SendBudget {
    /// The budget for `chat_id` of the bot whose directory is `bot_dir` (which must
    /// exist), spaced as Telegram asks.
    pub fn new(bot_dir: &Path, chat_id: i64) -> Self {
        Self::with_interval(bot_dir, chat_id, interval_for_chat(chat_id))
    }

    /// As [`SendBudget::new`] with another spacing (tests, a self-hosted server).
    pub fn with_interval(bot_dir: &Path, chat_id: i64, interval: Duration) -> Self {
        Self {
            lock_path: bot_dir.join(LOCK_FILE),
            state_path: bot_dir.join(STATE_FILE),
            chat_id,
            interval,
        }
    }

    /// Holds the exclusive lock while `f` reads and updates the state file.
    fn with_state<T>(&self, f: impl FnOnce(&mut BudgetFile) -> T) -> Result<T, SendBudgetError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(SendBudgetError::io("open lock file", &self.lock_path))?;
        lock.lock()
            .map_err(SendBudgetError::io("lock", &self.lock_path))?;
        let mut state = self.read_state()?;
        let out = f(&mut state);
        let json = serde_json::to_vec_pretty(&state).expect("budget state serialises");
        // Unsynced: the state is tiny and losing it is harmless, but an fsync here would
        // delay the send this booking is for.
        atomic_file::write_unsynced(&self.state_path, &json)?;
        drop::<File>(lock); // closing the file releases the lock
        Ok(out)
    }

    fn read_state(&self) -> Result<BudgetFile, SendBudgetError> {
        match std::fs::read(&self.state_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => Ok(state),
                Err(e) => {
                    // Kept for a human; the budget restarts empty (worst case one early send).
                    match atomic_file::quarantine(&self.state_path) {
                        Ok(to) => tracing::warn!(
                            "send budget {} unreadable ({e}); set aside as {}",
                            self.state_path.display(),
                            to.display()
                        ),
                        Err(q) => tracing::warn!("send budget unreadable ({e}); {q}"),
                    }
                    Ok(BudgetFile::default())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BudgetFile::default()),
            Err(e) => Err(SendBudgetError::io("read", &self.state_path)(e)),
        }
    }

    /// Books a slot for a message of `kind` under the rule of `core::send_slots` (the
    /// clock is read once the lock is held): a reply always gets one; a notification only
    /// when it is at most one interval away.
    pub fn book_now(&self, kind: MessageKind) -> Result<Reservation, SendBudgetError> {
        self.book_with(kind, SystemTime::now)
    }

    /// [`book_now`](Self::book_now) at `now`.
    pub fn book(&self, kind: MessageKind, now: SystemTime) -> Result<Reservation, SendBudgetError> {
        self.book_with(kind, || now)
    }

    fn book_with(
        &self,
        kind: MessageKind,
        clock: impl FnOnce() -> SystemTime,
    ) -> Result<Reservation, SendBudgetError> {
        let key = self.chat_id.to_string();
        let interval_ms = self.interval.as_millis() as u64;
        self.with_state(|state| {
            let now_ms = ms_since_epoch(clock());
            match book(
                kind,
                now_ms,
                state.last_slot_ms.get(&key).copied(),
                state.blocked_until_ms,
                interval_ms,
            ) {
                Booking::Slot(slot) => {
                    state.last_slot_ms.insert(key, slot);
                    Reservation::SendIn(Duration::from_millis(slot - now_ms))
                }
                Booking::AskAgainAt(at) => {
                    Reservation::AskAgainIn(Duration::from_millis(at.saturating_sub(now_ms)))
                }
            }
        })
    }

    /// Books the next send slot for this chat first-come (FIFO, whatever is booked ahead:
    /// what a reply does) and returns how long to wait before sending.
    pub fn reserve(&self, now: SystemTime) -> Result<Duration, SendBudgetError> {
        self.reserve_with(|| now)
    }

    /// [`reserve`](Self::reserve) with the clock read once the lock is held, so that time
    /// spent waiting for the lock does not make the booking stale.
    pub fn reserve_now(&self) -> Result<Duration, SendBudgetError> {
        self.reserve_with(SystemTime::now)
    }

    fn reserve_with(
        &self,
        clock: impl FnOnce() -> SystemTime,
    ) -> Result<Duration, SendBudgetError> {
        let key = self.chat_id.to_string();
        let interval_ms = self.interval.as_millis() as u64;
        self.with_state(|state| {
            let now_ms = ms_since_epoch(clock());
            let slot = next_slot_ms(
                now_ms,
                state.last_slot_ms.get(&key).copied(),
                state.blocked_until_ms,
                interval_ms,
            );
            state.last_slot_ms.insert(key, slot);
            Duration::from_millis(slot - now_ms)
        })
    }

    /// Records a 429: nobody on this token sends before `until`.
    pub fn push_back(&self, until: SystemTime) -> Result<(), SendBudgetError> {
        let until_ms = ms_since_epoch(until);
        self.with_state(|state| {
            state.blocked_until_ms = Some(state.blocked_until_ms.unwrap_or(0).max(until_ms));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn interval_depends_on_chat_kind() {
        assert_eq!(interval_for_chat(42), PRIVATE_CHAT_INTERVAL);
        assert_eq!(interval_for_chat(-100123), GROUP_CHAT_INTERVAL);
        assert_eq!(GROUP_CHAT_INTERVAL.as_millis(), 60_000 / 20);
    }

    #[test]
    fn consecutive_reservations_are_spaced() {
        let home = tempfile::tempdir().unwrap();
        let budget = SendBudget::new(home.path(), 7);
        let now = SystemTime::now();
        assert_eq!(budget.reserve(now).unwrap(), Duration::ZERO);
        assert_eq!(budget.reserve(now).unwrap(), PRIVATE_CHAT_INTERVAL);
        assert_eq!(budget.reserve(now).unwrap(), PRIVATE_CHAT_INTERVAL * 2);
        // Another chat has its own spacing.
        let group = SendBudget::new(home.path(), -5);
        assert_eq!(group.reserve(now).unwrap(), Duration::ZERO);
        assert_eq!(group.reserve(now).unwrap(), GROUP_CHAT_INTERVAL);
    }

    #[test]
    fn push_back_delays_every_chat() {
        let home = tempfile::tempdir().unwrap();
        let a = SendBudget::new(home.path(), 1);
        let b = SendBudget::new(home.path(), 2);
        let now = SystemTime::now();
        a.push_back(now + Duration::from_secs(5)).unwrap();
        // An earlier back-off never shortens a later one.
        b.push_back(now + Duration::from_secs(1)).unwrap();
        assert_eq!(a.reserve(now).unwrap(), Duration::from_secs(5));
        assert_eq!(b.reserve(now).unwrap(), Duration::from_secs(5));
    }

    #[test]
    fn unreadable_state_is_set_aside_and_the_budget_restarts() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("send-budget.json"), "{not json").unwrap();
        let budget = SendBudget::new(home.path(), 1);
        assert_eq!(budget.reserve(SystemTime::now()).unwrap(), Duration::ZERO);
        let kept = std::fs::read_dir(home.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("send-budget.json.corrupt-")
            })
            .count();
        assert_eq!(kept, 1);
    }

    #[test]
    fn missing_home_names_the_path() {
        let home = tempfile::tempdir().unwrap();
        let missing = home.path().join("nope");
        let err = SendBudget::new(&missing, 1)
            .reserve(SystemTime::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("send-budget.lock"), "{err}");
    }

    /// Many handles (each opening the lock file itself, as separate processes would)
    /// reserving at once all get distinct slots at least one interval apart.
    #[test]
    fn concurrent_reservations_never_overlap() {
        let home = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(50);
        let now = SystemTime::now();
        let threads = 8;
        let per_thread = 5;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let budget = SendBudget::with_interval(home.path(), 9, interval);
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    (0..per_thread)
                        .map(|_| budget.reserve(now).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut waits: Vec<Duration> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        waits.sort();
        assert_eq!(waits.len(), threads * per_thread);
        for (i, w) in waits.iter().enumerate() {
            assert_eq!(*w, interval * i as u32, "slot {i}");
        }
    }

    /// Item 3 of issue 13 on real files: eight threads (each opening the budget itself, as
    /// instances do) flood one chat with notifications; a reply booked in the middle of
    /// the backlog gets a slot within two intervals and goes ahead of every notification
    /// that was already waiting.
    #[test]
    fn a_reply_overtakes_a_backlog_of_other_instances_notifications() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Mutex;
        let home = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(50);
        let ms = |t: SystemTime| ms_since_epoch(t);
        let stop = Arc::new(AtomicBool::new(false));
        let booked = Arc::new(AtomicUsize::new(0));
        // (first asked, slot) of every notification sent.
        let sent: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
        let flooders: Vec<_> = (0..8)
            .map(|_| {
                let budget = SendBudget::with_interval(home.path(), 9, interval);
                let (stop, booked, sent) = (stop.clone(), booked.clone(), sent.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let asked = ms(SystemTime::now());
                        loop {
                            let now = SystemTime::now();
                            match budget.book(MessageKind::Notification, now).unwrap() {
                                Reservation::SendIn(wait) => {
                                    sent.lock()
                                        .unwrap()
                                        .push((asked, ms(now) + wait.as_millis() as u64));
                                    booked.fetch_add(1, Ordering::SeqCst);
                                    // The send itself: the slot is the instance's until then.
                                    std::thread::sleep(wait);
                                    break;
                                }
                                Reservation::AskAgainIn(wait) => std::thread::sleep(wait),
                            }
                        }
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while booked.load(Ordering::SeqCst) < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flood never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let reply_budget = SendBudget::with_interval(home.path(), 9, interval);
        let asked = SystemTime::now();
        let Reservation::SendIn(wait) = reply_budget.book(MessageKind::Reply, asked).unwrap()
        else {
            panic!("a reply always books");
        };
        let reply_slot = ms(asked) + wait.as_millis() as u64;
        // Let the notifications waiting at that moment book their slots.
        let settle = booked.load(Ordering::SeqCst) + 16;
        while booked.load(Ordering::SeqCst) < settle {
            assert!(std::time::Instant::now() < deadline, "the flood stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::SeqCst);
        for f in flooders {
            f.join().unwrap();
        }
        assert!(
            wait <= interval * 2,
            "the reply waited {wait:?} behind the backlog"
        );
        let sent = sent.lock().unwrap();
        let overtaken = sent
            .iter()
            .filter(|(first_asked, slot)| *first_asked <= ms(asked) && *slot > reply_slot)
            .count();
        assert!(
            overtaken >= 3,
            "the reply went ahead of {overtaken} waiting notifications: {sent:?}"
        );
        // Notifications keep their spacing among themselves and with the reply.
        let mut slots: Vec<u64> = sent.iter().map(|s| s.1).chain([reply_slot]).collect();
        slots.sort_unstable();
        for pair in slots.windows(2) {
            assert!(pair[1] - pair[0] >= interval.as_millis() as u64, "{pair:?}");
        }
    }
}
