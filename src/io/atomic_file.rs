//! The one way piv writes a state file, and the one way it sets aside a file it cannot
//! parse.
//!
//! [`write`] puts the bytes in a temp file in the same directory, fsyncs it, renames it
//! over the target and fsyncs the directory, so a reader (or a crash) only ever sees the
//! old content or the new, never a torn file. [`quarantine`] renames an unparseable file
//! to `<name>.corrupt-<timestamp>` so it is kept for a human instead of being overwritten.
//! Nothing here decides whether a file is corrupt: callers parse and decide.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Failures of the atomic-file adapter; each names the path and the step.
#[derive(Debug, thiserror::Error)]
pub enum AtomicFileError {
    #[error("cannot write {path}: {step}: {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot quarantine {path}: {source}")]
    Quarantine {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Distinguishes temp files of concurrent writers inside one process; the pid separates
/// processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Atomically replaces `path` with `contents`, creating the file with `mode` (e.g. 0o600)
/// when it does not exist. The parent directory must exist.
pub fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), AtomicFileError> {
    write_inner(path, contents, mode, true)
}

/// Like [`write`] (readers still see the old or the new content, never a torn file) but
/// without the fsyncs: for small, often-rewritten state whose loss in a power cut is
/// harmless and whose write sits on a latency-sensitive path (the shared send budget,
/// where an fsync under load would delay the very send it books).
pub fn write_unsynced(path: &Path, contents: &[u8]) -> Result<(), AtomicFileError> {
    write_inner(path, contents, 0o600, false)
}

fn write_inner(
    path: &Path,
    contents: &[u8],
    mode: u32,
    durable: bool,
) -> Result<(), AtomicFileError> {
    let err = |step: &'static str| {
        move |source| AtomicFileError::Write {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(err("create temp file"))?;
        file.write_all(contents).map_err(err("write temp file"))?;
        if durable {
            file.sync_all().map_err(err("fsync temp file"))?;
        }
        drop(file);
        fs::rename(&temp, path).map_err(err("rename temp file into place"))?;
        if durable {
            // The rename is durable only once the directory entry is on disk.
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(err("fsync directory"))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Atomically replaces `path` with `contents` (new files get mode 0600: state files may
/// name projects and chats, nobody else needs to read them).
pub fn write(path: &Path, contents: &[u8]) -> Result<(), AtomicFileError> {
    write_with_mode(path, contents, 0o600)
}

/// The name a quarantined file gets: `<name>.corrupt-<timestamp>`; `timestamp` is passed
/// in (UTC, `YYYYMMDDTHHMMSS.mmmZ`-like, no colons so it is a portable file name).
pub fn quarantine_path(path: &Path, timestamp: &str) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".corrupt-{timestamp}"));
    path.with_file_name(name)
}

/// Renames an unparseable file out of the way, never overwriting an earlier quarantined
/// copy, and returns where it went.
pub fn quarantine(path: &Path) -> Result<PathBuf, AtomicFileError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut target = quarantine_path(path, &stamp);
    let mut n = 1;
    while target.exists() {
        target = quarantine_path(path, &format!("{stamp}-{n}"));
        n += 1;
    }
    fs::rename(path, &target).map_err(|source| AtomicFileError::Quarantine {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"old").unwrap();
        write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "only the target remains: {names:?}");
    }

    #[test]
    fn new_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        write(&path, b"{}").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_into_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.yaml");
        let err = write(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("x.yaml"), "{err}");
    }

    #[test]
    fn quarantine_keeps_the_file_and_never_overwrites_an_earlier_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.yaml");
        fs::write(&path, "first: [").unwrap();
        let a = quarantine(&path).unwrap();
        fs::write(&path, "second: [").unwrap();
        let b = quarantine(&path).unwrap();
        assert_ne!(a, b);
        assert!(!path.exists());
        assert_eq!(fs::read_to_string(&a).unwrap(), "first: [");
        assert_eq!(fs::read_to_string(&b).unwrap(), "second: [");
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("manifest.yaml.corrupt-"));
    }
}
