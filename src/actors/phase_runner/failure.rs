//! What the loop does when a step fails: errors that are not the work's fault, the taxonomy's retry/escalate/rollback, the rollback itself and the escalation messages.

use super::loop_run::{append_failure, blocking, resolve, tail_text, LoopRun, StepEnd};
use super::*;
use crate::core::failure::{self, ErrorClass, FailureInput, Resolution};
use crate::core::stream::SessionError;

impl LoopRun {
    /// Errors that are not the work's fault and stop the run: a cancelled session
    /// (shutdown) and a setup problem (a missing slash command, a refused permission flag).
    /// `None` for everything else (outages and usage limits never get here: `pairing`
    /// waits them out).
    pub(super) async fn special_error(
        &mut self,
        phase: Option<u32>,
        command: &str,
        e: &SessionError,
    ) -> Option<StopReason> {
        match (failure::classify_error(e), e) {
            (ErrorClass::Cancelled, _) => Some(StopReason::Requested {
                by: self.stopping().unwrap_or_else(|| "shutdown".into()),
            }),
            (ErrorClass::Setup, SessionError::UnknownCommand { name }) => {
                let why = format!(
                    "the project has no /{name} slash command: add .claude/commands/{name}.md (or ~/.claude/commands/{name}.md), then run piv again"
                );
                self.escalate(
                    phase.unwrap_or(0),
                    command,
                    Category::PrdGap,
                    &why,
                    "Stopped — slash command missing",
                )
                .await;
                Some(StopReason::NeedsHuman { why })
            }
            (ErrorClass::Setup, _) => {
                let why = e.message();
                self.emit(RunEvent::NeedsHuman {
                    phase,
                    category: Category::IntegrationAuth.as_str().into(),
                    details: why.clone(),
                    action: "Stopped".into(),
                });
                Some(StopReason::NeedsHuman { why })
            }
            _ => None,
        }
    }

    /// Records a failed step and applies the taxonomy (decided by `core::failure`).
    pub(super) async fn handle_failure(
        &mut self,
        phase: u32,
        command: &str,
        e: &SessionError,
        checkpoint: Option<&str>,
    ) -> StepEnd {
        if let Some(stop) = self.special_error(Some(phase), command, e).await {
            return StepEnd::Stop(stop);
        }
        let retry_count = match self.read_manifest().await.ok().and_then(|m| m.view().ok()) {
            Some(v) => v
                .pending_failures()
                .filter(|f| f.phase == phase && f.command == command)
                .map(|f| f.retry_count + 1)
                .max()
                .unwrap_or(0),
            None => 0,
        };
        let stderr = tail_text(&self.last_stderr_tail, 1000);
        let plan = failure::plan_failure(&FailureInput {
            phase,
            command,
            error: e,
            stderr_tail: &stderr,
            retry_count,
            checkpoint,
        });
        self.last_failure
            .insert(phase, (command.to_string(), plan.details.clone()));
        // Older pending entries of this phase+command are superseded by the new one, so the
        // state machine (first pending failure wins) sees the latest retry count.
        let supersede = resolve(phase, command, Resolution::Retried);
        let mut resolution = plan.resolution;
        let mut action = plan.action.clone();
        if let Recovery::RollbackThenStop { checkpoint: tag } = &plan.recovery {
            match self.roll_back(tag).await {
                Ok(Some(snapshot)) => {
                    action = format!(
                        "{action} (the working tree is as it was at the checkpoint, uncommitted and untracked files included; inspect it with `git show --stat {snapshot}`)"
                    )
                }
                Ok(None) => {}
                Err(failed) => {
                    resolution = Resolution::EscalatedBlocking;
                    action = failed;
                }
            }
        }
        let entry = failure_entry(
            command,
            phase,
            plan.category,
            plan.retry_count,
            plan.checkpoint.as_deref(),
            resolution.as_str(),
            &plan.details,
        );
        self.record(vec![supersede, append_failure(entry)]).await;
        let Some(why) = plan.why else {
            self.emit(RunEvent::Retrying {
                phase,
                command: command.to_string(),
                category: plan.category.as_str().to_string(),
                attempt: retry_count + 1,
                details: plan.details,
            });
            return StepEnd::Continue;
        };
        self.notify_escalation(phase, plan.category, &plan.what, &action)
            .await;
        StepEnd::Stop(StopReason::NeedsHuman { why })
    }

    /// Rolls the work back to `tag` ([`roll_back_to`]).
    pub(super) async fn roll_back(&mut self, tag: &str) -> Result<Option<String>, String> {
        roll_back_to(&self.manifest, &self.settings.project_dir, tag).await
    }

    pub(super) async fn escalate(
        &mut self,
        phase: u32,
        command: &str,
        category: Category,
        details: &str,
        action: &str,
    ) {
        let entry = failure_entry(
            command,
            phase,
            category,
            0,
            None,
            "escalated_blocking",
            details,
        );
        self.record(vec![append_failure(entry)]).await;
        self.notify_escalation(phase, category, details, action)
            .await;
    }

    /// Every escalation goes to the human (terminal and chat) and into `notifications`.
    pub(super) async fn notify_escalation(
        &mut self,
        phase: u32,
        category: Category,
        details: &str,
        action: &str,
    ) {
        let notification = manifest::NotificationEntry {
            timestamp: now_rfc3339(),
            kind: "escalation".into(),
            severity: "critical".into(),
            category: category.as_str().into(),
            phase,
            details: format!("Phase {phase} {}: {details}", category.as_str()),
            blocking: true,
            action_taken: action.into(),
        };
        self.record(vec![ManifestUpdate::Append {
            section: ListSection::Notifications,
            entry: notification.to_value(),
        }])
        .await;
        self.emit(RunEvent::NeedsHuman {
            phase: Some(phase),
            category: category.as_str().to_string(),
            details: details.to_string(),
            action: action.to_string(),
        });
    }
}

/// Rolls the work back to `tag`: the loop's own rollback (retries exhausted) and the
/// chat's (an escalation's confirmed Rollback button) are this one function. The rollback
/// undoes the work, not the record: the manifest as it is now is written back after the
/// reset, and `.agents/` (plans, the runtime files' .gitignore) is kept out of the clean,
/// as the reference kept its in-memory manifest. `Ok` names the working-tree snapshot
/// restored, if the checkpoint has one; `Err` carries the action text of a rollback that
/// failed.
pub(super) async fn roll_back_to(
    manifest: &Addr<ManifestActor>,
    project_dir: &std::path::Path,
    tag: &str,
) -> Result<Option<String>, String> {
    let record_before = match manifest.send(ReadManifest).await {
        Ok(Ok(m)) => Some(m),
        _ => None,
    };
    let rollback = blocking({
        let (dir, tag) = (project_dir.to_path_buf(), tag.to_string());
        move || git::rollback_keeping(&dir, &tag, &[".agents"])
    })
    .await;
    if let Some(before) = record_before {
        match manifest.send(RestoreManifest(before)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("cannot restore the manifest after the rollback: {e}")
            }
            Err(e) => tracing::error!("manifest actor unavailable: {e}"),
        }
    }
    rollback.map_err(|err| {
        tracing::error!("rollback to {tag} failed: {err}");
        format!("Rollback to {tag} FAILED ({err}); paused, awaiting human resolution")
    })
}

/// A failure entry in the reference's shape.
pub fn failure_entry(
    command: &str,
    phase: u32,
    category: Category,
    retry_count: u32,
    checkpoint: Option<&str>,
    resolution: &str,
    details: &str,
) -> serde_yaml::Value {
    manifest::Failure {
        command: command.to_string(),
        phase,
        error_category: category.as_str().to_string(),
        retry_count,
        resolution: resolution.to_string(),
        checkpoint: checkpoint.map(str::to_string),
        details: details.to_string(),
        timestamp: now_rfc3339(),
    }
    .to_value()
}
