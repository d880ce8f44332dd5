//! The on-disk chat outbox of one instance, `.agents/telegram-outbox/`: every message
//! piv means to send is written here first (atomically, fsynced, mode 0600) and removed
//! only once Telegram accepted it, so a crash, a SIGKILL or an outage loses nothing.
//!
//! One file per message, `<seq>.json` with a zero-padded sequence number (the queue
//! order), holding `{"kind", "tag", "html"}` and, for a reply to a chat other than the
//! instance's own, `"chat"` (the chat it answers; absent: the instance's own chat), and for
//! a reply to a command typed in a forum topic, `"thread"` (that topic; absent: the
//! project's own topic, or General). Why `.agents/` and not `$PIV_HOME`: the
//! outbox belongs to the instance, and an instance is its project — the project lock
//! (`.agents/orchestrator.lock`) already makes this process its only writer, and the next
//! `piv run` of the same project finds it whatever its prefix, home or token. It is
//! git-ignored with piv's other runtime files. Which entries go out next is
//! `core::outbox`'s decision.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::outbox::{next_seq, MessageKind};
use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::PathIoError;

/// The outbox directory's name under `.agents/`.
pub const OUTBOX_DIR: &str = "telegram-outbox";

/// Failures of the outbox; each names the path and the step.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: cannot {step} {path}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("outbox: {0}")]
    Write(#[from] AtomicFileError),
}

impl PathIoError for OutboxError {
    fn from_io(path: PathBuf, step: &'static str, source: std::io::Error) -> Self {
        OutboxError::Io { path, step, source }
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub kind: MessageKind,
    /// The chat it goes to; `None`: the instance's own chat.
    pub chat: Option<i64>,
    /// The forum topic it answers in; `None`: the project's topic (or General).
    pub thread: Option<i64>,
    /// The `[tag] ` prefix it is sent under.
    pub tag: String,
    /// The body, Telegram HTML, untagged and unsplit.
    pub html: String,
    /// Inline buttons under it (an escalation's): rows of (label, callback data).
    pub buttons: Vec<Vec<(String, String)>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryFile {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<i64>,
    tag: String,
    html: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    buttons: Vec<Vec<(String, String)>>,
}

/// The outbox of one project.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next: u64,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

impl Outbox {
    /// The outbox of the project in `project_dir` (created, mode 0700, if missing).
    pub fn open(project_dir: &Path) -> Result<Outbox, OutboxError> {
        Self::open_dir(project_dir.join(".agents").join(OUTBOX_DIR))
    }

    /// The outbox in `dir` itself.
    pub fn open_dir(dir: PathBuf) -> Result<Outbox, OutboxError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(OutboxError::io("create", &dir))?;
        let mut outbox = Outbox { dir, next: 1 };
        outbox.remove_unfinished_writes();
        outbox.next = next_seq(outbox.seqs()?);
        Ok(outbox)
    }

    /// Removes the temp files of writes that never completed (a run killed between
    /// writing an entry and renaming it into place): such a message was never queued.
    /// Only the instance holding the project's lock opens its outbox, so no write of a
    /// live process is touched.
    fn remove_unfinished_writes(&self) {
        let Ok(listing) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => tracing::info!(file = %name,
                        "removed an outbox write a killed run left unfinished (it was never queued)"),
                    Err(e) => tracing::warn!(error = %e, file = %name,
                        "cannot remove an unfinished outbox write"),
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn seqs(&self) -> Result<Vec<u64>, OutboxError> {
        let listing = std::fs::read_dir(&self.dir).map_err(OutboxError::io("list", &self.dir))?;
        Ok(listing
            .flatten()
            .filter_map(|e| seq_of(&e.file_name().to_string_lossy()))
            .collect())
    }

    /// Queues a message for the instance's own chat durably; returns its sequence number.
    pub fn push(&mut self, kind: MessageKind, tag: &str, html: &str) -> Result<u64, OutboxError> {
        self.push_to(kind, None, None, tag, html)
    }

    /// Queues a message for `chat` (`None`: the instance's own chat) and forum topic
    /// `thread` (`None`: the project's own) durably; returns its sequence number.
    pub fn push_to(
        &mut self,
        kind: MessageKind,
        chat: Option<i64>,
        thread: Option<i64>,
        tag: &str,
        html: &str,
    ) -> Result<u64, OutboxError> {
        self.write_entry(EntryFile {
            kind: kind.as_str().to_string(),
            chat,
            thread,
            tag: tag.to_string(),
            html: html.to_string(),
            buttons: Vec::new(),
        })
    }

    /// Queues a notification for the instance's own chat with inline buttons under it
    /// (an escalation's); it is sent alone.
    pub fn push_with_buttons(
        &mut self,
        tag: &str,
        html: &str,
        buttons: Vec<Vec<(String, String)>>,
    ) -> Result<u64, OutboxError> {
        self.write_entry(EntryFile {
            kind: MessageKind::Notification.as_str().to_string(),
            chat: None,
            thread: None,
            tag: tag.to_string(),
            html: html.to_string(),
            buttons,
        })
    }

    fn write_entry(&mut self, entry: EntryFile) -> Result<u64, OutboxError> {
        let seq = self.next;
        let json = serde_json::to_vec(&entry).expect("outbox entry serialises");
        atomic_file::write_with_mode(&self.dir.join(file_name(seq)), &json, 0o600)?;
        self.next = seq + 1;
        Ok(seq)
    }

    /// Every queued message, in sequence order. An unreadable entry is set aside (renamed
    /// `.corrupt-…`) and logged, never sent or deleted.
    pub fn list(&self) -> Result<Vec<Entry>, OutboxError> {
        let mut seqs = self.seqs()?;
        seqs.sort_unstable();
        let mut entries = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let path = self.dir.join(file_name(seq));
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed meanwhile (sent): nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(OutboxError::io("read", &path)(e)),
            };
            let parsed = serde_json::from_slice::<EntryFile>(&bytes)
                .ok()
                .and_then(|f| MessageKind::parse(&f.kind).map(|kind| (kind, f)));
            match parsed {
                Some((kind, f)) => entries.push(Entry {
                    seq,
                    kind,
                    chat: f.chat,
                    thread: f.thread,
                    tag: f.tag,
                    html: f.html,
                    buttons: f.buttons,
                }),
                None => match atomic_file::quarantine(&path) {
                    Ok(to) => tracing::warn!(
                        "outbox entry {} unreadable; set aside as {}",
                        path.display(),
                        to.display()
                    ),
                    Err(e) => tracing::warn!("outbox entry {} unreadable; {e}", path.display()),
                },
            }
        }
        Ok(entries)
    }

    /// Removes sent entries.
    pub fn remove(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        for seq in seqs {
            let path = self.dir.join(file_name(*seq));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OutboxError::io("remove", &path)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn entries_survive_a_reopen_in_order_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            outbox.push(MessageKind::Notification, "a", "one").unwrap(),
            1
        );
        assert_eq!(outbox.push(MessageKind::Reply, "a", "two").unwrap(), 2);
        let file = outbox.dir().join(file_name(1));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(outbox);
        let mut again = Outbox::open(dir.path()).unwrap();
        let listed = again.list().unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|e| (e.seq, e.html.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "one"), (2, "two")]
        );
        assert_eq!(listed[1].kind, MessageKind::Reply);
        assert_eq!(listed[1].chat, None);
        // New entries come after the old ones, also after a removal.
        again.remove(&[1, 2]).unwrap();
        assert_eq!(
            again.push(MessageKind::Notification, "a", "three").unwrap(),
            3
        );
        assert_eq!(again.list().unwrap().len(), 1);
    }

    #[test]
    fn a_reply_keeps_the_chat_and_topic_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .push_to(MessageKind::Reply, Some(-1_005), Some(42), "b", "answer")
            .unwrap();
        // An entry written before entries named their chat still reads (own chat).
        std::fs::write(
            outbox.dir().join(file_name(9)),
            r#"{"kind":"notification","tag":"a","html":"old"}"#,
        )
        .unwrap();
        let listed = Outbox::open(dir.path()).unwrap().list().unwrap();
        assert!(listed.iter().all(|e| e.buttons.is_empty()));
        assert_eq!(
            listed
                .iter()
                .map(|e| (e.seq, e.chat, e.thread, e.html.as_str()))
                .collect::<Vec<_>>(),
            vec![
                (1, Some(-1_005), Some(42), "answer"),
                (9, None, None, "old")
            ]
        );
    }

    #[test]
    fn an_unreadable_entry_is_set_aside_and_temp_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        outbox.push(MessageKind::Notification, "a", "ok").unwrap();
        std::fs::write(outbox.dir().join(file_name(7)), "{torn").unwrap();
        std::fs::write(outbox.dir().join(".x.tmp-1"), "junk").unwrap();
        let listed = outbox.list().unwrap();
        assert_eq!(listed.len(), 1);
        let names: Vec<String> = std::fs::read_dir(outbox.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.contains(".corrupt-")), "{names:?}");
        // The next start clears the unfinished write, and only it.
        drop(outbox);
        let again = Outbox::open(dir.path()).unwrap();
        let names: Vec<String> = std::fs::read_dir(again.dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
        assert!(names.iter().any(|n| n.contains(".corrupt-")), "{names:?}");
        assert_eq!(again.list().unwrap().len(), 1);
    }

    #[test]
    fn an_escalation_keeps_its_buttons() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        let rows = vec![vec![("🔁 Retry".to_string(), "piv:r:5:b".to_string())]];
        outbox
            .push_with_buttons("b", "stuck", rows.clone())
            .unwrap();
        let listed = Outbox::open(dir.path()).unwrap().list().unwrap();
        assert_eq!(listed[0].buttons, rows);
        assert_eq!(listed[0].kind, MessageKind::Notification);
    }
}
