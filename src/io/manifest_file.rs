//! Reads and writes `<project>/.agents/manifest.yaml`: always from disk (never a cached
//! copy, because the agent edits it too), always written atomically, and never touched when
//! it cannot be parsed.
//!
//! Setting a corrupt manifest aside is a separate, explicit step ([`quarantine_corrupt`]):
//! `piv dry-run` must leave a broken file exactly as it found it, while the runner may
//! decide to quarantine it before rebuilding.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::core::manifest::{Manifest, ManifestError, ManifestUpdate};
use crate::io::atomic_file;

/// Failures of the manifest file adapter; each names the path. Clone so actor replies can
/// carry it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestFileError {
    #[error("no manifest found at {path}: run /prime (or create .agents/manifest.yaml) first")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}: {message}")]
    Read {
        path: PathBuf,
        kind: ErrorKind,
        message: String,
    },
    #[error("{path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
}

impl ManifestFileError {
    /// The manifest path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ManifestFileError::NotFound { path }
            | ManifestFileError::Read { path, .. }
            | ManifestFileError::Invalid { path, .. }
            | ManifestFileError::Write { path, .. } => path,
        }
    }

    /// The content problem, when the file was read but cannot be used.
    pub fn manifest_error(&self) -> Option<&ManifestError> {
        match self {
            ManifestFileError::Invalid { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `<project>/.agents/manifest.yaml`.
pub fn manifest_path(project_dir: &Path) -> PathBuf {
    project_dir.join(".agents").join("manifest.yaml")
}

/// Reads and parses the manifest. A missing file, an unreadable one and one that does not
/// parse are distinct errors; the file is never modified here.
pub fn read(project_dir: &Path) -> Result<Manifest, ManifestFileError> {
    let path = manifest_path(project_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(ManifestFileError::NotFound { path })
        }
        Err(e) => {
            return Err(ManifestFileError::Read {
                path,
                kind: e.kind(),
                message: e.to_string(),
            })
        }
    };
    Manifest::parse(&text).map_err(|source| ManifestFileError::Invalid { path, source })
}

/// Writes the manifest atomically, creating `.agents/` if needed and keeping the existing
/// file's permissions (it is a project file the agent and the user edit too).
pub fn write(project_dir: &Path, manifest: &Manifest) -> Result<(), ManifestFileError> {
    let path = manifest_path(project_dir);
    let write_err = |message: String| ManifestFileError::Write {
        path: path.clone(),
        message,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| write_err(format!("create {}: {e}", dir.display())))?;
    }
    let mode = fs::metadata(&path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    atomic_file::write_with_mode(&path, manifest.to_yaml().as_bytes(), mode)
        .map_err(|e| write_err(e.to_string()))
}

/// Read-modify-write: reads the manifest from disk, applies `updates` in order (each
/// stamping `last_updated` with `now`), writes it back and returns what was written. On
/// any error nothing is written.
pub fn update(
    project_dir: &Path,
    updates: &[ManifestUpdate],
    now: &str,
) -> Result<Manifest, ManifestFileError> {
    let mut manifest = read(project_dir)?;
    manifest
        .apply_all(updates, now)
        .map_err(|source| ManifestFileError::Invalid {
            path: manifest_path(project_dir),
            source,
        })?;
    write(project_dir, &manifest)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::{StepStatus, ValidationStatus};

    const NOW: &str = "2030-01-01T00:00:00.000Z";

    fn project_with(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".agents")).unwrap();
        fs::write(manifest_path(dir.path()), text).unwrap();
        dir
    }

    #[test]
    fn missing_manifest_names_the_path_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(matches!(err, ManifestFileError::NotFound { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains(".agents/manifest.yaml") && msg.contains("/prime"),
            "{msg}"
        );
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn syntax_error_names_path_line_and_column_and_leaves_the_file() {
        let text = "phases:\n  '1': {plan: complete\nprd: x\n";
        let dir = project_with(text);
        let err = read(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("manifest.yaml") && msg.contains("line "),
            "{msg}"
        );
        assert!(matches!(
            err.manifest_error(),
            Some(ManifestError::Syntax { .. })
        ));
        let update_err = update(dir.path(), &[], NOW).unwrap_err();
        assert_eq!(update_err, err);
        assert_eq!(fs::read_to_string(manifest_path(dir.path())).unwrap(), text);
    }

    #[test]
    fn update_reads_from_disk_every_time_and_keeps_permissions() {
        let dir = project_with("phases:\n  1: {plan: not_started}\nmine: kept\n");
        fs::set_permissions(manifest_path(dir.path()), fs::Permissions::from_mode(0o644)).unwrap();
        let set = ManifestUpdate::SetPhaseStatus {
            phase: 1,
            plan: Some(StepStatus::Complete),
            execution: None,
            validation: None,
        };
        update(dir.path(), std::slice::from_ref(&set), NOW).unwrap();
        // Someone else (the agent) edits the file between two updates.
        let edited = fs::read_to_string(manifest_path(dir.path())).unwrap() + "agent_key: 1\n";
        fs::write(manifest_path(dir.path()), edited).unwrap();
        let written = update(
            dir.path(),
            &[ManifestUpdate::SetPhaseStatus {
                phase: 1,
                plan: None,
                execution: None,
                validation: Some(ValidationStatus::Pass),
            }],
            NOW,
        )
        .unwrap();
        let on_disk = read(dir.path()).unwrap();
        assert_eq!(on_disk, written);
        assert_eq!(on_disk.doc()["agent_key"], serde_yaml::Value::from(1));
        assert_eq!(on_disk.doc()["mine"], serde_yaml::Value::from("kept"));
        let v = on_disk.view().unwrap();
        assert_eq!(v.phases[&1].plan, StepStatus::Complete);
        assert_eq!(v.phases[&1].validation, ValidationStatus::Pass);
        let mode = fs::metadata(manifest_path(dir.path()))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn write_creates_the_agents_dir() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse("phases: {}\n").unwrap();
        write(dir.path(), &m).unwrap();
        assert_eq!(read(dir.path()).unwrap(), m);
    }
}
