//! The bot offset file, `$PIV_HOME/bots/<bot id>/offset.json`: the last Telegram update
//! the owner of that bot handled, shared by its successive owners so that none answers an
//! update twice (`{"lastUpdateId": N}`; an unreadable file is set aside, never
//! overwritten). Functions take the bot's directory (`io::home::bot_dir`): update ids
//! belong to a bot, so a new token never inherits another bot's offset. (The root-level
//! `bot-offset.json` of earlier versions names no bot and is not read.)

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::io::atomic_file;

/// The file's name in the bot's directory.
pub const OFFSET_FILE: &str = "offset.json";

/// `offset.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OffsetFile {
    last_update_id: i64,
}

/// The last handled update id persisted in `bot_dir`; an unreadable file is set aside.
pub fn read_last_handled(bot_dir: &Path) -> Option<i64> {
    let path = bot_dir.join(OFFSET_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<OffsetFile>(&bytes) {
        Ok(file) => Some(file.last_update_id),
        Err(e) => {
            match atomic_file::quarantine(&path) {
                Ok(to) => tracing::warn!(
                    "{} unreadable ({e}); set aside as {}",
                    path.display(),
                    to.display()
                ),
                Err(q) => tracing::warn!("{} unreadable ({e}); {q}", path.display()),
            }
            None
        }
    }
}

/// Records `update_id` as the last handled update of the bot in `bot_dir`.
pub fn write_last_handled(
    bot_dir: &Path,
    update_id: i64,
) -> Result<(), atomic_file::AtomicFileError> {
    let json = serde_json::to_vec(&OffsetFile {
        last_update_id: update_id,
    })
    .expect("offset serialises");
    // Between sending a reply and recording it, a killed owner leaves the next owner to
    // answer again. Unsynced (rename only: visible to every process at once, lost only in
    // a power cut) keeps that window to microseconds instead of two fsyncs.
    atomic_file::write_unsynced(&bot_dir.join(OFFSET_FILE), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_file_round_trips_and_bad_files_are_set_aside() {
        let home = tempfile::tempdir().unwrap();
        assert_eq!(read_last_handled(home.path()), None);
        write_last_handled(home.path(), 100_123).unwrap();
        assert_eq!(read_last_handled(home.path()), Some(100_123));
        std::fs::write(home.path().join(OFFSET_FILE), "{oops").unwrap();
        assert_eq!(read_last_handled(home.path()), None);
        let kept = std::fs::read_dir(home.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
        assert!(kept);
    }
}
