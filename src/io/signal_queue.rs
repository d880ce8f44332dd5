//! The per-project signal queue on disk, `<project>/.agents/signals/`: enqueue a signal
//! atomically under a sortable, collision-free name; drain the queue in order, each file
//! exactly once; set invalid files aside in `signals/rejected/`; accept the reference's
//! single file `.agents/orchestrator.signal`.
//!
//! # Exactly once, in order
//! A sender writes a temp file (a dot-name the reader ignores), fsyncs it and renames it
//! to [`queue_file_name`], whose zero-padded send time, pid and sequence number make name
//! order equal send order and never collide. Any other `*.json` name (a script's) is a
//! signal too and takes its place in name order; dot-names and temp names (`*.tmp`,
//! `*.part`, `*~`, …) are left to their writers; any other name is rejected (see
//! `core::signal::classify_queue_name`), so no file lies in the queue unexplained. The
//! reader lists the signal names in order and
//! *claims* each by renaming it to `.claimed-<name>` before reading it: a file can be
//! renamed away only once, so even two drainers could not both deliver it. The claimed
//! file is removed before its message is returned. A crash between the claim and the
//! return loses that one signal rather than delivering it twice (at most once).
//!
//! # Hostile files
//! Nothing in the directory is trusted. Each entry is checked with `symlink_metadata`
//! first (never following a symlink); anything that is not a regular file (symlink,
//! FIFO, directory, socket) or is over [`MAX_SIGNAL_BYTES`] is moved to `rejected/`
//! unopened. A claimed file is opened with `O_NOFOLLOW | O_NONBLOCK` and checked again
//! with `fstat`, so a file swapped in between cannot make the reader follow a link or
//! hang on a FIFO. Invalid content is moved to `rejected/` too, with a warning; the queue
//! never stops at a bad file.
//!
//! # The legacy file
//! `.agents/orchestrator.signal` (one signal, overwritten by each sender) is claimed by
//! rename after the queue is drained and delivered after the queue's signals of the same
//! drain; a sender using the legacy file has no ordering with queue senders anyway.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::core::control::ControlAction;
use crate::core::signal::{
    classify_queue_name, parse_signal, queue_file_name, QueueEntry, SignalMessage, MAX_SIGNAL_BYTES,
};
use crate::io::atomic_file::{self, AtomicFileError};
use crate::io::PathIoError;

/// The queue directory, relative to the project.
pub const SIGNALS_DIR: &str = ".agents/signals";
/// Where invalid files go, inside the queue directory.
pub const REJECTED_DIR: &str = crate::core::signal::REJECTED_NAME;
/// The reference's single signal file, relative to the project.
pub const LEGACY_SIGNAL_FILE: &str = ".agents/orchestrator.signal";
const CLAIMED_PREFIX: &str = ".claimed-";

/// Per-process sequence: two signals sent from one process within one clock tick still
/// get distinct, ordered names.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Failures of the signal-queue adapter; each names the path and the step.
#[derive(Debug, thiserror::Error)]
pub enum SignalQueueError {
    #[error("cannot {step} {path}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] AtomicFileError),
}

impl PathIoError for SignalQueueError {
    fn from_io(path: PathBuf, step: &'static str, source: std::io::Error) -> Self {
        SignalQueueError::Io { path, step, source }
    }
}

/// `<project>/.agents/signals/`.
pub fn signals_dir(project_dir: &Path) -> PathBuf {
    project_dir.join(SIGNALS_DIR)
}

/// `<project>/.agents/signals/rejected/`.
pub fn rejected_dir(project_dir: &Path) -> PathBuf {
    signals_dir(project_dir).join(REJECTED_DIR)
}

/// `<project>/.agents/orchestrator.signal`.
pub fn legacy_signal_path(project_dir: &Path) -> PathBuf {
    project_dir.join(LEGACY_SIGNAL_FILE)
}

/// Sends `action` to the instance running on `project_dir`, stamped now and signed
/// `from` (the sender's prefix, or `terminal`). Returns the queue file's path.
pub fn enqueue(
    project_dir: &Path,
    action: ControlAction,
    from: &str,
) -> Result<PathBuf, SignalQueueError> {
    let message = SignalMessage {
        action,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        from: from.to_string(),
        escalation: None,
        text: None,
    };
    enqueue_message(project_dir, &message)
}

/// Enqueues an already built message (its `timestamp` is kept as given; the file name
/// still uses the current time, so queue order is the order of sending).
pub fn enqueue_message(
    project_dir: &Path,
    message: &SignalMessage,
) -> Result<PathBuf, SignalQueueError> {
    let dir = signals_dir(project_dir);
    fs::create_dir_all(&dir).map_err(SignalQueueError::io("create directory", &dir))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = queue_file_name(
        nanos,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
    );
    let path = dir.join(name);
    // atomic_file's temp name starts with a dot, which the reader ignores.
    atomic_file::write(&path, message.to_json().as_bytes())?;
    Ok(path)
}

/// What one drain did.
#[derive(Debug, Default)]
pub struct DrainResult {
    /// Valid signals sent at or after `not_before`, in send order; already removed.
    pub delivered: Vec<SignalMessage>,
    /// Where each rejected file was moved.
    pub rejected: Vec<PathBuf>,
    /// Valid signals sent before `not_before`, removed without delivery.
    pub discarded: Vec<SignalMessage>,
    /// Files that could not be handled this time (left in place, retried next drain).
    pub errors: Vec<SignalQueueError>,
}

/// Takes every ready signal of `project_dir`'s queue (and the legacy file), in order.
/// Signals sent before `not_before` (the instance's start) are discarded with a log line.
pub fn drain_ready(project_dir: &Path, not_before: Option<SystemTime>) -> DrainResult {
    let mut result = DrainResult::default();
    let dir = signals_dir(project_dir);
    let found: Vec<std::ffi::OsString> = match fs::read_dir(&dir) {
        Ok(entries) => entries.flatten().map(|e| e.file_name()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            result.errors.push(SignalQueueError::io("list", &dir)(e));
            Vec::new()
        }
    };
    let mut names = Vec::new();
    for found in found {
        let name = match found.into_string() {
            Ok(name) => name,
            Err(raw) => {
                // Not UTF-8: no signal name; set aside under a printable name.
                let label = raw.to_string_lossy().replace('\u{fffd}', "_");
                let reason = "not a signal file name: not valid UTF-8";
                reject(project_dir, &dir.join(&raw), &label, reason, &mut result);
                continue;
            }
        };
        match classify_queue_name(&name) {
            QueueEntry::Signal => names.push(name),
            QueueEntry::Ignore => {}
            QueueEntry::Reject(reason) => {
                reject(project_dir, &dir.join(&name), &name, &reason, &mut result)
            }
        }
    }
    // Name order is delivery order: piv's own names sort by send time; another
    // program's file takes its place among them by its name.
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let claimed = dir.join(format!("{CLAIMED_PREFIX}{name}"));
        take_one(project_dir, &path, &claimed, &name, not_before, &mut result);
    }
    let legacy = legacy_signal_path(project_dir);
    if fs::symlink_metadata(&legacy).is_ok() {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let label = format!("orchestrator.signal-{}-{seq}", std::process::id());
        if let Err(e) = fs::create_dir_all(&dir) {
            result
                .errors
                .push(SignalQueueError::io("create directory", &dir)(e));
        } else {
            let claimed = dir.join(format!("{CLAIMED_PREFIX}{label}"));
            take_one(
                project_dir,
                &legacy,
                &claimed,
                &label,
                not_before,
                &mut result,
            );
        }
    }
    result
}

/// Claims, checks and consumes one file.
fn take_one(
    project_dir: &Path,
    path: &Path,
    claimed: &Path,
    name: &str,
    not_before: Option<SystemTime>,
    result: &mut DrainResult,
) {
    // Decide what it is without following or opening it.
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return result.errors.push(SignalQueueError::io("stat", path)(e)),
    };
    let precheck = if !meta.file_type().is_file() {
        Some(format!(
            "not a regular file ({})",
            describe(&meta.file_type())
        ))
    } else if meta.len() > MAX_SIGNAL_BYTES {
        Some(format!(
            "{} bytes, over the {MAX_SIGNAL_BYTES}-byte limit",
            meta.len()
        ))
    } else {
        None
    };
    if let Some(reason) = precheck {
        return reject(project_dir, path, name, &reason, result);
    }
    // Claim: whoever renames it away first owns it.
    match fs::rename(path, claimed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return result.errors.push(SignalQueueError::io("claim", path)(e)),
    }
    let bytes = match read_claimed(claimed) {
        Ok(b) => b,
        Err(reason) => return reject(project_dir, claimed, name, &reason, result),
    };
    let message = match parse_signal(&bytes) {
        Ok(m) => m,
        Err(e) => return reject(project_dir, claimed, name, &e.to_string(), result),
    };
    if let Err(e) = fs::remove_file(claimed) {
        // Already ours by the rename: deliver anyway, the leftover is inert.
        tracing::warn!(path = %claimed.display(), error = %e, "cannot remove handled signal");
    }
    let stale = match (not_before, message.sent_at()) {
        (Some(start), Some(sent)) => SystemTime::from(sent) < start,
        _ => false,
    };
    if stale {
        tracing::info!(action = %message.action, from = %message.from,
            timestamp = %message.timestamp, "discarding a signal sent before this instance started");
        result.discarded.push(message);
    } else {
        result.delivered.push(message);
    }
}

/// Reads a claimed file without following a link or blocking on a FIFO, rechecking its
/// type and size on the open descriptor.
fn read_claimed(path: &Path) -> Result<Vec<u8>, String> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "not a regular file ({})",
            describe(&meta.file_type())
        ));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_SIGNAL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(bytes)
}

fn describe(file_type: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "device"
    } else {
        "regular file"
    }
}

/// Moves `path` (never opened: rename moves links, FIFOs and directories as they are)
/// into `rejected/` under `name`, logging why. If it cannot be moved it is removed, so it
/// never blocks the queue.
fn reject(project_dir: &Path, path: &Path, name: &str, reason: &str, result: &mut DrainResult) {
    let dir = rejected_dir(project_dir);
    let moved = fs::create_dir_all(&dir).and_then(|()| {
        let mut target = dir.join(name);
        let mut n = 1;
        while fs::symlink_metadata(&target).is_ok() {
            target = dir.join(format!("{name}.{n}"));
            n += 1;
        }
        fs::rename(path, &target).map(|()| target)
    });
    match moved {
        // Another drainer (or the writer) took it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(target) => {
            tracing::warn!(file = name, reason, rejected_to = %target.display(),
                "rejected an invalid signal file");
            result.rejected.push(target);
        }
        Err(e) => {
            tracing::warn!(file = name, reason, error = %e,
                "rejected an invalid signal file but cannot move it to rejected/; removing it");
            let removed = if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            if let Err(e) = removed {
                result
                    .errors
                    .push(SignalQueueError::io("remove rejected file", path)(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::signal::is_queue_file_name;

    #[test]
    fn enqueue_then_drain_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = enqueue(dir.path(), ControlAction::Pause, "ops").unwrap();
        assert!(is_queue_file_name(
            path.file_name().unwrap().to_str().unwrap()
        ));
        let result = drain_ready(dir.path(), None);
        assert_eq!(result.delivered.len(), 1);
        assert_eq!(result.delivered[0].action, ControlAction::Pause);
        assert_eq!(result.delivered[0].from, "ops");
        assert!(!path.exists());
        assert!(drain_ready(dir.path(), None).delivered.is_empty());
        // Nothing left behind but the (empty) directory.
        assert_eq!(fs::read_dir(signals_dir(dir.path())).unwrap().count(), 0);
    }

    #[test]
    fn missing_directory_is_an_empty_queue() {
        let dir = tempfile::tempdir().unwrap();
        let result = drain_ready(dir.path(), None);
        assert!(result.delivered.is_empty() && result.errors.is_empty());
    }

    #[test]
    fn temp_files_are_left_and_junk_is_rejected_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let signals = signals_dir(dir.path());
        fs::create_dir_all(&signals).unwrap();
        for temp in [".sig-x.tmp-1-1", "pause.json.tmp", "pause.json~"] {
            fs::write(signals.join(temp), "{").unwrap();
        }
        fs::write(signals.join("README"), "hi").unwrap();
        let result = drain_ready(dir.path(), None);
        assert!(result.delivered.is_empty() && result.errors.is_empty());
        // Writers' temp files are theirs until renamed into place.
        for temp in [".sig-x.tmp-1-1", "pause.json.tmp", "pause.json~"] {
            assert!(signals.join(temp).exists(), "{temp}");
        }
        // Anything else is set aside, never left lying in the queue.
        assert_eq!(
            result.rejected,
            vec![rejected_dir(dir.path()).join("README")]
        );
        assert!(!signals.join("README").exists());
    }
}
