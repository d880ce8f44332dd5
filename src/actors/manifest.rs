//! ManifestActor: the only writer of `.agents/manifest.yaml` inside piv.
//!
//! Every message is one read-modify-write against the file on disk (the agent edits the
//! manifest between steps, so a cached copy would lose its changes), serialised by the
//! actor's mailbox so two piv components never interleave their writes. The updates
//! themselves are pure ([`ManifestUpdate`]); this actor only adds the clock and the disk.

use std::path::{Path, PathBuf};

use actix::{Actor, Context, Handler, Message, Supervised};

use crate::core::manifest::{Manifest, ManifestUpdate};
use crate::io::manifest_file::{self, ManifestFileError};

pub use crate::io::clock::now_rfc3339;

/// Owns one project's manifest file.
#[derive(Debug)]
pub struct ManifestActor {
    project_dir: PathBuf,
}

impl ManifestActor {
    pub fn new(project_dir: impl Into<PathBuf>) -> ManifestActor {
        ManifestActor {
            project_dir: project_dir.into(),
        }
    }

    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    fn update(&self, updates: &[ManifestUpdate]) -> Result<Manifest, ManifestFileError> {
        let result = manifest_file::update(&self.project_dir, updates, &now_rfc3339());
        if let Err(e) = &result {
            tracing::warn!(error = %e, "manifest update failed");
        }
        result
    }
}

impl Actor for ManifestActor {
    type Context = Context<Self>;
}

impl Supervised for ManifestActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Nothing cached to rebuild: every message re-reads the file.
        tracing::warn!(project = %self.project_dir.display(), "manifest actor restarting");
    }
}

/// Reads the manifest as it is on disk now.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Manifest, ManifestFileError>")]
pub struct ReadManifest;

/// Applies updates in order in one read-modify-write; returns what was written.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Manifest, ManifestFileError>")]
pub struct UpdateManifest(pub Vec<ManifestUpdate>);

/// Writes back a manifest read earlier, whole: after a git rollback reset the file to the
/// checkpoint, the run's record (sessions, plans, failures) must not be lost with the work.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), ManifestFileError>")]
pub struct RestoreManifest(pub Manifest);

impl Handler<RestoreManifest> for ManifestActor {
    type Result = Result<(), ManifestFileError>;

    fn handle(&mut self, msg: RestoreManifest, _ctx: &mut Context<Self>) -> Self::Result {
        manifest_file::write(&self.project_dir, &msg.0)
    }
}

impl Handler<ReadManifest> for ManifestActor {
    type Result = Result<Manifest, ManifestFileError>;

    fn handle(&mut self, _msg: ReadManifest, _ctx: &mut Context<Self>) -> Self::Result {
        manifest_file::read(&self.project_dir)
    }
}

impl Handler<UpdateManifest> for ManifestActor {
    type Result = Result<Manifest, ManifestFileError>;

    fn handle(&mut self, msg: UpdateManifest, _ctx: &mut Context<Self>) -> Self::Result {
        self.update(&msg.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::{Failure, ListSection, StepStatus};
    use actix::Supervisor;
    use std::fs;

    fn project(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".agents")).unwrap();
        fs::write(manifest_file::manifest_path(dir.path()), text).unwrap();
        dir
    }

    fn failure() -> Failure {
        Failure {
            command: "execute".into(),
            phase: 1,
            error_category: "test_failure".into(),
            retry_count: 0,
            resolution: "pending".into(),
            checkpoint: Some("piv-checkpoint/phase-1-x".into()),
            details: "vitest: 1 failed".into(),
            timestamp: "2030-01-01T00:00:00.000Z".into(),
        }
    }

    fn append_failure() -> UpdateManifest {
        UpdateManifest(vec![ManifestUpdate::Append {
            section: ListSection::Failures,
            entry: failure().to_value(),
        }])
    }

    #[actix_rt::test]
    async fn messages_read_modify_write_the_file_on_disk() {
        let dir = project("phases:\n  '1': {plan: not_started}\nunknown: kept\n");
        let addr = Supervisor::start({
            let path = dir.path().to_path_buf();
            move |_| ManifestActor::new(path)
        });

        let read = addr.send(ReadManifest).await.unwrap().unwrap();
        assert_eq!(read.doc()["unknown"], serde_yaml::Value::from("kept"));

        addr.send(UpdateManifest(vec![ManifestUpdate::SetPhaseStatus {
            phase: 1,
            plan: Some(StepStatus::Complete),
            execution: None,
            validation: None,
        }]))
        .await
        .unwrap()
        .unwrap();

        // An outside edit between messages is kept by the next write.
        let path = manifest_file::manifest_path(dir.path());
        let edited = fs::read_to_string(&path).unwrap() + "agent_note: hi\n";
        fs::write(&path, edited).unwrap();

        let after = addr.send(append_failure()).await.unwrap().unwrap();
        assert_eq!(after.view().unwrap().failures, vec![failure()]);
        let resolved = addr
            .send(UpdateManifest(vec![ManifestUpdate::ResolveFailures {
                phase: 1,
                command: "execute".into(),
                resolution: "auto_fixed".into(),
            }]))
            .await
            .unwrap()
            .unwrap();

        let on_disk = manifest_file::read(dir.path()).unwrap();
        assert_eq!(on_disk, resolved);
        let view = on_disk.view().unwrap();
        assert_eq!(view.phases[&1].plan, StepStatus::Complete);
        assert_eq!(view.failures[0].resolution, "auto_fixed");
        assert_eq!(on_disk.doc()["agent_note"], serde_yaml::Value::from("hi"));
        assert_eq!(on_disk.doc()["unknown"], serde_yaml::Value::from("kept"));
        let stamp = view.last_updated.unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(&stamp).is_ok() && stamp.ends_with('Z'),
            "{stamp}"
        );
        assert_eq!(stamp.len(), "2030-01-01T00:00:00.000Z".len(), "{stamp}");
    }

    #[actix_rt::test]
    async fn errors_come_back_and_a_broken_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let addr = ManifestActor::new(dir.path()).start();
        let err = addr.send(ReadManifest).await.unwrap().unwrap_err();
        assert!(matches!(err, ManifestFileError::NotFound { .. }));

        let broken = project("phases: [\n");
        let addr = ManifestActor::new(broken.path()).start();
        let err = addr.send(append_failure()).await.unwrap().unwrap_err();
        assert!(err.manifest_error().is_some(), "{err}");
        assert_eq!(
            fs::read_to_string(manifest_file::manifest_path(broken.path())).unwrap(),
            "phases: [\n"
        );
    }
}
