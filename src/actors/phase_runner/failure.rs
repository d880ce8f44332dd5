//! What the loop does when a step fails: errors that are not the work's fault, the taxonomy's retry/escalate/rollback, the rollback itself and the escalation messages.

use super::loop_run::{append_failure, blocking, resolve, tail_text, LoopRun, StepEnd};
use super::*;
impl LoopRun {
    pub(super) fn is_special(&self, e: &crate::core::stream::SessionError) -> bool {
        use crate::core::stream::SessionError as E;
        matches!(
            e,
            E::UsageLimit { .. }
                | E::UnknownCommand { .. }
                | E::Cancelled
                | E::RootSkipPermissions
                | E::MissingVerbose
                | E::NotLoggedIn { .. }
        )
    }

    /// Errors that are not the work's fault: a usage limit (wait and go on), a missing
    /// slash command, a cancelled session, a refused permission flag. `Some` stops the run;
    /// `None` means "handled, decide again".
    pub(super) async fn special_error(
        &mut self,
        phase: Option<u32>,
        command: &str,
        e: &crate::core::stream::SessionError,
    ) -> Option<StopReason> {
        use crate::core::stream::SessionError as E;
        match e {
            E::Cancelled => Some(StopReason::Requested {
                by: self.stopping().unwrap_or_else(|| "shutdown".into()),
            }),
            E::UsageLimit { resets_at } => {
                let now = chrono::Utc::now().timestamp();
                let until = resets_at.unwrap_or(now + 300).max(now + 1);
                let when = chrono::DateTime::from_timestamp(until, 0)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| until.to_string());
                self.emit(RunEvent::UsageLimitWait { resets_at: when });
                self.publish(|s| s.why = Some("usage limit reached — waiting for reset".into()));
                let wait = Duration::from_secs((until - now) as u64);
                let mut cancel = self.cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.wait_for(|c| *c) => {}
                }
                self.publish(|s| s.why = None);
                self.stopping().map(|by| StopReason::Requested { by })
            }
            E::UnknownCommand { name } => {
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
            E::RootSkipPermissions | E::MissingVerbose => {
                let why = e.message();
                self.emit(RunEvent::NeedsHuman {
                    phase,
                    category: "integration_auth".into(),
                    details: why.clone(),
                    action: "Stopped".into(),
                });
                Some(StopReason::NeedsHuman { why })
            }
            _ => None,
        }
    }

    /// Records a failed step and applies the taxonomy.
    pub(super) async fn handle_failure(
        &mut self,
        phase: u32,
        command: &str,
        e: &crate::core::stream::SessionError,
        checkpoint: Option<&str>,
    ) -> StepEnd {
        if let Some(stop) = self.special_error(Some(phase), command, e).await {
            return StepEnd::Stop(stop);
        }
        if matches!(e, crate::core::stream::SessionError::UsageLimit { .. }) {
            return StepEnd::Continue;
        }
        use crate::core::stream::SessionError as E;
        let mut text = e.error_text();
        // A CLI that died without a result says why only on stderr: classify and record
        // with it. A timeout or stall is piv's own verdict, so its stderr is only recorded.
        let stderr = tail_text(&self.last_stderr_tail, 1000);
        if !stderr.is_empty() && matches!(e, E::NoResult | E::NonZeroExit { .. }) {
            text = format!("{text} stderr: {stderr}");
        }
        let category = match e {
            E::NotLoggedIn { .. } => Category::IntegrationAuth,
            _ => taxonomy::classify(&text),
        };
        let details = match e {
            E::NotLoggedIn { .. } => format!(
                "{text} — Claude Code is not logged in: set CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) in the environment or .env, or run `claude` and /login"
            ),
            E::Timeout { .. } | E::Stalled { .. } if !stderr.is_empty() => {
                format!("{text} stderr: {stderr}")
            }
            _ => text,
        };
        let retry_count = match self.read_manifest().await.ok().and_then(|m| m.view().ok()) {
            Some(v) => v
                .pending_failures()
                .filter(|f| f.phase == phase && f.command == command)
                .map(|f| f.retry_count + 1)
                .max()
                .unwrap_or(0),
            None => 0,
        };
        // Older pending entries of this phase+command are superseded by the new one, so the
        // state machine (first pending failure wins) sees the latest retry count.
        let supersede = resolve(phase, command, "retried");
        let recovery = taxonomy::decide_recovery(category, retry_count, checkpoint);
        if recovery == Recovery::Retry {
            let entry = failure_entry(
                command,
                phase,
                category,
                retry_count,
                checkpoint,
                "pending",
                &details,
            );
            self.record(vec![supersede, append_failure(entry)]).await;
            self.emit(RunEvent::Retrying {
                phase,
                command: command.to_string(),
                category: category.as_str().to_string(),
                attempt: retry_count + 1,
                details,
            });
            return StepEnd::Continue;
        }
        // Every other recovery stops for a human: record the failure, say why, stop.
        let (entry_checkpoint, resolution, action, what) = match &recovery {
            Recovery::Escalate => (
                checkpoint.map(str::to_string),
                "escalated_blocking",
                format!("Escalated immediately — {}", category.human_hint()),
                details.clone(),
            ),
            Recovery::RollbackThenStop { checkpoint: tag } => {
                let (resolution, action) = self.roll_back(tag).await;
                (
                    Some(tag.clone()),
                    resolution,
                    action,
                    format!("{details} — retries exhausted"),
                )
            }
            _ => (
                checkpoint.map(str::to_string),
                "escalated_blocking",
                format!(
                    "Paused execution, awaiting human resolution — {}",
                    category.human_hint()
                ),
                format!("{details} — retries exhausted"),
            ),
        };
        let entry = failure_entry(
            command,
            phase,
            category,
            retry_count,
            entry_checkpoint.as_deref(),
            resolution,
            &details,
        );
        self.record(vec![supersede, append_failure(entry)]).await;
        self.notify_escalation(phase, category, &what, &action)
            .await;
        let why = match &recovery {
            Recovery::Escalate => format!("{} in phase {phase}: {details}", category.as_str()),
            Recovery::RollbackThenStop { checkpoint: tag } => format!(
                "retries exhausted for {} in phase {phase}; rolled back to {tag}",
                category.as_str()
            ),
            _ => format!(
                "retries exhausted for {} in phase {phase}: {details}",
                category.as_str()
            ),
        };
        StepEnd::Stop(StopReason::NeedsHuman { why })
    }

    /// Rolls the work back to `tag`. The rollback undoes the work, not the record: the
    /// manifest as it is now is written back after the reset, and `.agents/` (plans, the
    /// runtime files' .gitignore) is kept out of the clean, as the reference kept its
    /// in-memory manifest. Returns the failure's resolution and the action taken.
    pub(super) async fn roll_back(&mut self, tag: &str) -> (&'static str, String) {
        let record_before = self.read_manifest().await.ok();
        let rollback = blocking({
            let (dir, tag) = (self.settings.project_dir.clone(), tag.to_string());
            move || git::rollback_keeping(&dir, &tag, &[".agents"])
        })
        .await;
        if let Some(before) = record_before {
            match self.manifest.send(RestoreManifest(before)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!("cannot restore the manifest after the rollback: {e}")
                }
                Err(e) => tracing::error!("manifest actor unavailable: {e}"),
            }
        }
        match rollback {
            Ok(()) => (
                "rolled_back",
                format!("Rolled back to {tag} and paused, awaiting human resolution"),
            ),
            Err(err) => {
                tracing::error!("rollback to {tag} failed: {err}");
                (
                    "escalated_blocking",
                    format!("Rollback to {tag} FAILED ({err}); paused, awaiting human resolution"),
                )
            }
        }
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
