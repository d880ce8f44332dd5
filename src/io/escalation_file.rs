//! The instance's open escalation, `.agents/telegram-outbox/open-escalation.json`
//! (`{"open": <id>, "checkpoint": <tag>, "buttons": [..], "taken": <id>, "chosen": <code>}`): written by the
//! instance's notifier when it posts an escalation with buttons, cleared when the run goes
//! on; read (and marked taken once a button acted) by the bot owner, so a tap acts only on
//! the escalation still open, exactly once, across a takeover; a rollback's signal is
//! checked against `taken` by the instance (`take`), so it acts only on that escalation.
//! It lives in the outbox directory (piv's git-ignored chat files of the instance; the
//! outbox reads only its numbered entries).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::io::atomic_file::{self, AtomicFileError};

/// The file's name in the outbox directory.
pub const ESCALATION_FILE: &str = "open-escalation.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct EscalationFile {
    #[serde(default)]
    open: Option<u64>,
    /// The checkpoint the open escalation's Rollback button goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    /// The open escalation's buttons (`core::buttons` codes), so that Cancel restores them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    buttons: Vec<String>,
    /// An escalation a button acted on, until the instance has taken its signal or the
    /// run goes on: a rollback acts only while its escalation is here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    taken: Option<u64>,
    /// The button (`core::buttons` code) that took it, for a choice the signal does not
    /// carry (the overage stop's "Wait for the reset" is a resume that waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chosen: Option<String>,
    /// Fields a newer piv wrote, kept.
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The open escalation as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEscalation {
    pub id: u64,
    pub checkpoint: Option<String>,
    /// The button codes it was posted with.
    pub buttons: Vec<String>,
}

/// The file of the project in `project_dir`.
pub fn path_in_project(project_dir: &Path) -> PathBuf {
    project_dir
        .join(".agents")
        .join(crate::io::outbox::OUTBOX_DIR)
        .join(ESCALATION_FILE)
}

fn read_file(path: &Path) -> Option<EscalationFile> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<EscalationFile>(&text).ok()
}

fn write_file(path: &Path, file: &EscalationFile) -> Result<(), AtomicFileError> {
    let json = serde_json::to_vec(file).expect("escalation file serialises");
    atomic_file::write_with_mode(path, &json, 0o600)
}

/// The open escalation's id (none: no file, nothing open, or unreadable).
pub fn read_open(path: &Path) -> Option<u64> {
    read_file(path)?.open
}

/// The open escalation with its checkpoint and buttons.
pub fn read_escalation(path: &Path) -> Option<OpenEscalation> {
    let file = read_file(path)?;
    Some(OpenEscalation {
        id: file.open?,
        checkpoint: file.checkpoint,
        buttons: file.buttons,
    })
}

/// Records `open` (none: nothing open — the run goes on, so nothing taken either).
pub fn write_open(path: &Path, open: Option<u64>) -> Result<(), AtomicFileError> {
    match open {
        Some(id) => record_open(
            path,
            &OpenEscalation {
                id,
                checkpoint: None,
                buttons: Vec::new(),
            },
        ),
        None => {
            let mut file = read_file(path).unwrap_or_default();
            file.open = None;
            file.checkpoint = None;
            file.buttons.clear();
            file.taken = None;
            file.chosen = None;
            write_file(path, &file)
        }
    }
}

/// Records `escalation` as the open one.
pub fn record_open(path: &Path, escalation: &OpenEscalation) -> Result<(), AtomicFileError> {
    let mut file = read_file(path).unwrap_or_default();
    file.open = Some(escalation.id);
    file.checkpoint = escalation.checkpoint.clone();
    file.buttons = escalation.buttons.clone();
    file.taken = None;
    file.chosen = None;
    write_file(path, &file)
}

/// Clears `id` if it is still the open one (a button acted on it) and marks it taken;
/// `false` when it was not open.
pub fn close_if_open(path: &Path, id: u64) -> Result<bool, AtomicFileError> {
    claim(path, id, None)
}

/// [`close_if_open`], keeping which button (`core::buttons` code) claimed it.
pub fn claim(path: &Path, id: u64, chosen: Option<&str>) -> Result<bool, AtomicFileError> {
    let Some(mut file) = read_file(path) else {
        return Ok(false);
    };
    if file.open != Some(id) {
        return Ok(false);
    }
    file.open = None;
    file.taken = Some(id);
    file.chosen = chosen.map(str::to_string);
    write_file(path, &file)?;
    Ok(true)
}

/// The instance's side of a claimed choice: the button code that took the escalation,
/// once (it is cleared); `None` when no button took one (a `/resume` typed or signalled).
pub fn take_choice(path: &Path) -> Result<Option<String>, AtomicFileError> {
    let Some(mut file) = read_file(path) else {
        return Ok(None);
    };
    if file.taken.is_none() || file.chosen.is_none() {
        return Ok(None);
    }
    let chosen = file.chosen.take();
    write_file(path, &file)?;
    Ok(chosen)
}

/// The instance's wait `id` is over (a usage-limit wait that resumed or stopped): if it
/// is still the open escalation, or the one a button took, nothing is open any more — a
/// later tap on its button is stale. Another escalation recorded since is left alone.
pub fn settle(path: &Path, id: u64) -> Result<(), AtomicFileError> {
    let Some(file) = read_file(path) else {
        return Ok(());
    };
    if file.open == Some(id) || file.taken == Some(id) {
        write_open(path, None)?;
    }
    Ok(())
}

/// The instance's side of a taken escalation: `Some(checkpoint)` (the tag, if it had
/// one) when `id` is the escalation a button acted on and nothing has gone on since —
/// then it is no longer taken, so it acts once; `None` when it is stale.
pub fn take(path: &Path, id: u64) -> Result<Option<Option<String>>, AtomicFileError> {
    let Some(mut file) = read_file(path) else {
        return Ok(None);
    };
    if file.taken != Some(id) {
        return Ok(None);
    }
    let checkpoint = file.checkpoint.take();
    file.taken = None;
    file.buttons.clear();
    write_file(path, &file)?;
    Ok(Some(checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_and_keep_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        assert_eq!(read_open(&path), None);
        write_open(&path, Some(7)).unwrap();
        assert_eq!(read_open(&path), Some(7));
        assert!(!close_if_open(&path, 6).unwrap(), "not the open one");
        assert_eq!(read_open(&path), Some(7));
        std::fs::write(&path, r#"{"open":7,"newer":1}"#).unwrap();
        assert!(close_if_open(&path, 7).unwrap());
        assert!(!close_if_open(&path, 7).unwrap(), "exactly once");
        assert_eq!(read_open(&path), None);
        assert!(std::fs::read_to_string(&path).unwrap().contains("newer"));
    }

    #[test]
    fn a_taken_escalation_is_taken_once_and_keeps_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        assert_eq!(take(&path, 1).unwrap(), None, "no file");
        let open = OpenEscalation {
            id: 9,
            checkpoint: Some("piv-checkpoint/phase-1-x".into()),
            buttons: vec!["r".into(), "b".into()],
        };
        record_open(&path, &open).unwrap();
        assert_eq!(read_escalation(&path), Some(open));
        assert_eq!(take(&path, 9).unwrap(), None, "open, not taken yet");
        assert!(close_if_open(&path, 9).unwrap());
        assert_eq!(read_escalation(&path), None);
        assert_eq!(take(&path, 8).unwrap(), None, "another escalation");
        assert_eq!(
            take(&path, 9).unwrap(),
            Some(Some("piv-checkpoint/phase-1-x".into()))
        );
        assert_eq!(take(&path, 9).unwrap(), None, "once");
        // The run went on before the instance took it: stale.
        record_open(
            &path,
            &OpenEscalation {
                id: 10,
                checkpoint: None,
                buttons: vec![],
            },
        )
        .unwrap();
        assert!(close_if_open(&path, 10).unwrap());
        write_open(&path, None).unwrap();
        assert_eq!(take(&path, 10).unwrap(), None);
    }

    #[test]
    fn an_older_file_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        std::fs::write(&path, r#"{"open":5}"#).unwrap();
        assert_eq!(
            read_escalation(&path),
            Some(OpenEscalation {
                id: 5,
                checkpoint: None,
                buttons: vec![]
            })
        );
    }

    #[test]
    fn a_wait_settles_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        settle(&path, 1).unwrap();
        assert!(!path.exists(), "no file, nothing written");
        // (recorded open, tapped, settled id) -> open after
        let cases = [
            (3, false, 3, None),
            (3, true, 3, None),
            (4, false, 3, Some(4)),
            (4, true, 3, None),
        ];
        for (open, tapped, settled, want) in cases {
            std::fs::write(&path, r#"{"newer":true}"#).unwrap();
            write_open(&path, Some(open)).unwrap();
            if tapped {
                assert!(close_if_open(&path, open).unwrap());
            }
            settle(&path, settled).unwrap();
            assert_eq!(read_open(&path), want, "{open} {tapped} {settled}");
            if tapped {
                // Once settled (or taken by another wait) the tap is not acted on again.
                assert!(!close_if_open(&path, open).unwrap());
            }
            assert!(std::fs::read_to_string(&path).unwrap().contains("newer"));
        }
    }

    #[test]
    fn a_claimed_choice_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ESCALATION_FILE);
        assert_eq!(take_choice(&path).unwrap(), None, "no file");
        write_open(&path, Some(4)).unwrap();
        assert_eq!(take_choice(&path).unwrap(), None, "open, nothing chosen");
        assert!(claim(&path, 4, Some("w")).unwrap());
        assert!(!claim(&path, 4, Some("o")).unwrap(), "once");
        assert_eq!(take_choice(&path).unwrap().as_deref(), Some("w"));
        assert_eq!(take_choice(&path).unwrap(), None, "taken");
        // Claimed without a code (the older path), or the run went on: no choice.
        write_open(&path, Some(5)).unwrap();
        assert!(close_if_open(&path, 5).unwrap());
        assert_eq!(take_choice(&path).unwrap(), None);
        write_open(&path, Some(6)).unwrap();
        assert!(claim(&path, 6, Some("w")).unwrap());
        write_open(&path, None).unwrap();
        assert_eq!(take_choice(&path).unwrap(), None);
    }
}
