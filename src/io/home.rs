//! `$PIV_HOME`: where it is (`PIV_HOME`, else `~/.piv-orchestrator`) and creating it,
//! with its `instances/` directory, private to the user (mode 0700; files in it are 0600).
//!
//! Callers read the environment and pass the value in, so tests never touch the real
//! home. Nothing else lives here: the registry store and the owner lock use the paths.
//!
//! What belongs to a Telegram bot rather than to the home lives in `bots/<bot id>/`
//! ([`bot_dir`]): the owner lock, the stored offset, the send budget. The directory is
//! named by the token's numeric bot id (`core::bot_chats::bot_id_of`), never the token.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The home directory's name under the user's home, as in the reference.
pub const DEFAULT_DIR_NAME: &str = ".piv-orchestrator";
/// Subdirectory holding the per-instance liveness lock files.
pub const INSTANCES_DIR: &str = "instances";
/// Subdirectory holding one directory per Telegram bot.
pub const BOTS_DIR: &str = "bots";
/// In a bot's directory: the lock whose holder polls the bot.
pub const OWNER_LOCK_FILE: &str = "owner.lock";
/// Mode of the home and its subdirectories: it names projects and chats.
const DIR_MODE: u32 = 0o700;

/// Failures finding or preparing `$PIV_HOME`.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot find the user's home directory to place ~/{DEFAULT_DIR_NAME}; set PIV_HOME")]
    NoUserHome,
    #[error("PIV_HOME is set but empty; unset it or give a directory")]
    EmptyEnv,
    #[error("cannot {step} {path}: {source}")]
    Prepare {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The home directory: `env_value` (the value of `PIV_HOME`) if given, else
/// `~/.piv-orchestrator`. A relative `PIV_HOME` is kept as given (relative to the cwd).
pub fn resolve_home(env_value: Option<&OsStr>) -> Result<PathBuf, HomeError> {
    match env_value {
        Some(v) if v.is_empty() => Err(HomeError::EmptyEnv),
        Some(v) => Ok(PathBuf::from(v)),
        None => dirs::home_dir()
            .map(|h| h.join(DEFAULT_DIR_NAME))
            .ok_or(HomeError::NoUserHome),
    }
}

/// The lock-file directory inside `home`.
pub fn instances_dir(home: &Path) -> PathBuf {
    home.join(INSTANCES_DIR)
}

/// The directory of bot `bot_id` in `home`: `bots/<bot_id>/`.
pub fn bot_dir(home: &Path, bot_id: u64) -> PathBuf {
    home.join(BOTS_DIR).join(bot_id.to_string())
}

/// The bot owner's lock of `bot_id`: whoever holds it polls that bot.
pub fn owner_lock_path(home: &Path, bot_id: u64) -> PathBuf {
    bot_dir(home, bot_id).join(OWNER_LOCK_FILE)
}

/// Creates `home` (as [`ensure_home`]) and the directory of `bot_id` in it, mode 0700;
/// returns the bot's directory.
pub fn ensure_bot_dir(home: &Path, bot_id: u64) -> Result<PathBuf, HomeError> {
    ensure_home(home)?;
    ensure_private_dir(&home.join(BOTS_DIR))?;
    let dir = bot_dir(home, bot_id);
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `home` and `home/instances` with mode 0700, tightening the mode of either if
/// it already exists with looser permissions.
pub fn ensure_home(path: &Path) -> Result<(), HomeError> {
    ensure_private_dir(path)?;
    ensure_private_dir(&instances_dir(path))
}

fn ensure_private_dir(path: &Path) -> Result<(), HomeError> {
    let err = |step: &'static str| {
        move |source| HomeError::Prepare {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(err("create directory"))?;
    let mode = fs::metadata(path)
        .map_err(err("stat"))?
        .permissions()
        .mode();
    if mode & 0o777 != DIR_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE))
            .map_err(err("restrict permissions of"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn resolve_prefers_the_env_value() {
        assert_eq!(
            resolve_home(Some(OsStr::new("/tmp/ph"))).unwrap(),
            PathBuf::from("/tmp/ph")
        );
        assert!(matches!(
            resolve_home(Some(OsStr::new(""))),
            Err(HomeError::EmptyEnv)
        ));
        if let Some(h) = dirs::home_dir() {
            assert_eq!(resolve_home(None).unwrap(), h.join(DEFAULT_DIR_NAME));
        }
    }

    #[test]
    fn ensure_creates_private_dirs_and_tightens_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a").join("home");
        ensure_home(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&instances_dir(&home)), 0o700);

        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(instances_dir(&home), fs::Permissions::from_mode(0o777)).unwrap();
        ensure_home(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        assert_eq!(mode(&instances_dir(&home)), 0o700);
    }

    #[test]
    fn bot_dirs_are_named_by_the_bot_id_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let bot = ensure_bot_dir(&home, 123_456).unwrap();
        assert_eq!(bot, home.join("bots").join("123456"));
        assert_eq!(mode(&bot), 0o700);
        assert_eq!(mode(&home.join("bots")), 0o700);
        assert_eq!(
            owner_lock_path(&home, 123_456),
            home.join("bots/123456/owner.lock")
        );
        // A second bot has a directory of its own.
        assert_ne!(ensure_bot_dir(&home, 7).unwrap(), bot);
    }

    #[test]
    fn a_file_in_the_way_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        fs::write(&home, "not a dir").unwrap();
        let err = ensure_home(&home).unwrap_err().to_string();
        assert!(err.contains("home"), "{err}");
    }
}
