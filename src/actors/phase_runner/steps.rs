//! The per-step runs of the loop: one pairing of agent sessions per step (research, preflight, plan, execute, validate with its refactors, commit) and what each records.

use super::loop_run::{blocking, resolve, tail_text, LoopRun, StepEnd};
use super::*;
use crate::core::failure::{self, Resolution};

/// Unwraps a pairing's outcome or ends the step with the run's stop.
macro_rules! ran {
    ($pairing:expr) => {
        match $pairing.await {
            Ok(out) => out,
            Err(stop) => return StepEnd::Stop(stop),
        }
    };
}

impl LoopRun {
    pub(super) async fn run_research(&mut self, refresh: bool) -> StepEnd {
        let prompts = step::pairing_prompts(&Step::Research { refresh });
        let out = ran!(self.pairing(None, "research-stack", &prompts));
        if let Some(e) = &out.last.error {
            if let Some(stop) = self.special_error(None, "research-stack", e).await {
                return StepEnd::Stop(stop);
            }
            // As in the reference, a failed research is logged, not fatal.
            tracing::warn!("research-stack failed (not fatal): {}", e.message());
        }
        StepEnd::Continue
    }

    pub(super) async fn run_preflight(&mut self) -> StepEnd {
        let out = ran!(self.pairing(None, "preflight", &step::pairing_prompts(&Step::Preflight)));
        if let Some(e) = &out.last.error {
            if let Some(stop) = self.special_error(None, "preflight", e).await {
                return StepEnd::Stop(stop);
            }
            let why = format!("preflight session failed: {}", e.message());
            self.escalate(
                0,
                "preflight",
                Category::IntegrationAuth,
                &why,
                "Preflight session failed",
            )
            .await;
            return StepEnd::Stop(StopReason::NeedsHuman { why });
        }
        let from_manifest = match self.read_manifest().await.ok().and_then(|m| m.view().ok()) {
            Some(v) => v.preflight_status().map(str::to_string),
            None => None,
        };
        let status = out
            .last
            .hooks
            .get("preflight_status")
            .cloned()
            .or(from_manifest);
        if status.as_deref() == Some("blocked") {
            let missing = out
                .last
                .hooks
                .get("credentials_missing")
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            let why = format!("Preflight blocked: {missing}");
            self.escalate(
                0,
                "preflight",
                Category::IntegrationAuth,
                &why,
                "Waiting for credentials",
            )
            .await;
            return StepEnd::Stop(StopReason::NeedsHuman {
                why: format!("preflight blocked — missing credentials: {missing}"),
            });
        }
        StepEnd::Continue
    }

    pub(super) async fn run_plan(&mut self, phase: u32, name: &str, step: &Step) -> StepEnd {
        self.phase_started_once(phase, name);
        let out = ran!(self.pairing(Some(phase), "plan-feature", &step::pairing_prompts(step)));
        if let Some(e) = out.last.error.clone() {
            return self.handle_failure(phase, "plan-feature", &e, None).await;
        }
        // The plan's progress is its `plans` entry: a success without it is a failure of
        // this step, counted like any other (else plan and execute would take turns,
        // each a paid session, with the count starting again at 0).
        let planned = self
            .read_manifest()
            .await
            .ok()
            .and_then(|m| m.view().ok())
            .is_some_and(|v| v.plan_path_for(phase).is_some());
        if !planned {
            let e = failure::no_progress_error(&format!(
                "/plan-feature ended in success but wrote no plans entry for phase {phase} in .agents/manifest.yaml"
            ));
            return self.handle_failure(phase, "plan-feature", &e, None).await;
        }
        self.record(vec![
            ManifestUpdate::SetPhaseStatus {
                phase,
                plan: Some(StepStatus::Complete),
                execution: None,
                validation: None,
            },
            resolve(phase, "plan-feature", Resolution::AutoFixed),
        ])
        .await;
        StepEnd::Continue
    }

    pub(super) async fn run_execute(
        &mut self,
        phase: u32,
        plan_path: Option<String>,
        checkpoint: Option<String>,
        step: &Step,
    ) -> StepEnd {
        self.phase_started_once(phase, &format!("Phase {phase}"));
        let Some(_) = plan_path else {
            // The plan step succeeded but left no plan entry: record it and plan again.
            let details = format!(
                "no plan entry for phase {phase} in .agents/manifest.yaml after /plan-feature"
            );
            self.record(vec![ManifestUpdate::SetPhaseStatus {
                phase,
                plan: Some(StepStatus::NotStarted),
                execution: None,
                validation: None,
            }])
            .await;
            let err = failure::no_progress_error(&details);
            return self.handle_failure(phase, "plan-feature", &err, None).await;
        };
        let tag = match checkpoint {
            Some(tag) => tag,
            None => match blocking({
                let dir = self.settings.project_dir.clone();
                move || {
                    let tag = git::create_checkpoint(&dir, phase, chrono::Utc::now())?;
                    let dirty = git::snapshot_worktree(&dir, &tag, &[".agents"])?;
                    Ok((tag, dirty))
                }
            })
            .await
            {
                Ok((tag, dirty)) => {
                    if dirty {
                        self.emit(RunEvent::Info(format!(
                            "⚠️ Phase {phase}: the working tree has uncommitted changes at checkpoint {tag}. They are saved in {} and come back as they are if piv rolls back.",
                            git::snapshot_ref(&tag)
                        )));
                    }
                    self.record(vec![ManifestUpdate::Append {
                        section: ListSection::Checkpoints,
                        entry: manifest::checkpoint_entry(&tag, phase),
                    }])
                    .await;
                    tag
                }
                Err(e) => {
                    let why = format!("cannot create a git checkpoint before execute: {e}");
                    self.emit(RunEvent::NeedsHuman {
                        phase: Some(phase),
                        category: "partial_execution".into(),
                        details: why.clone(),
                        action: "Stopped before executing".into(),
                    });
                    return StepEnd::Stop(StopReason::NeedsHuman { why });
                }
            },
        };
        let out = ran!(self.pairing(Some(phase), "execute", &step::pairing_prompts(step)));
        if let Some(e) = out.last.error.clone() {
            return self.handle_failure(phase, "execute", &e, Some(&tag)).await;
        }
        let mut exec = manifest::execution_entry(phase, &now_rfc3339());
        if let serde_yaml::Value::Mapping(m) = &mut exec {
            m.insert("cost_usd".into(), out.cost_usd.into());
        }
        self.record(vec![
            ManifestUpdate::SetPhaseStatus {
                phase,
                plan: None,
                execution: Some(StepStatus::Complete),
                validation: None,
            },
            ManifestUpdate::Append {
                section: ListSection::Executions,
                entry: exec,
            },
            resolve(phase, "execute", Resolution::AutoFixed),
        ])
        .await;
        StepEnd::Continue
    }

    /// Validate; after a fixable failure run a refactor pairing carrying the error and
    /// validate again (at most [`failure::MAX_REFACTORS`], as the reference).
    pub(super) async fn run_validate(&mut self, phase: u32) -> StepEnd {
        let mut refactors = 0;
        loop {
            let out = ran!(self.pairing(
                Some(phase),
                "validate",
                &step::pairing_prompts(&Step::Validate { phase }),
            ));
            let hook = out.last.hooks.get("validation_status").map(String::as_str);
            let verdict = failure::validation_verdict(
                out.last.error.as_ref(),
                hook,
                &tail_text(&out.last.text, 2000),
            );
            let Some(err) = verdict else {
                self.record(vec![
                    ManifestUpdate::SetPhaseStatus {
                        phase,
                        plan: None,
                        execution: None,
                        validation: Some(ValidationStatus::Pass),
                    },
                    ManifestUpdate::SetPhaseCommit {
                        phase,
                        commit: StepStatus::Other("pending".into()),
                    },
                    resolve(phase, "validate-implementation", Resolution::AutoFixed),
                ])
                .await;
                return StepEnd::Continue;
            };
            if !failure::refactor_again(&err, refactors) {
                return self
                    .handle_failure(phase, "validate-implementation", &err, None)
                    .await;
            }
            refactors += 1;
            if let Some(stop) = self.honour_controls().await {
                return StepEnd::Stop(stop);
            }
            let prompts = step::refactor_prompts(&err.error_text());
            let fix = ran!(self.pairing(Some(phase), "fix-validation", &prompts));
            if let Some(e) = fix.last.error.clone() {
                if failure::classify_error(&e) != failure::ErrorClass::Work {
                    return self
                        .handle_failure(phase, "validate-implementation", &e, None)
                        .await;
                }
                tracing::warn!("refactor session failed: {}", e.message());
            }
        }
    }

    pub(super) async fn run_commit(&mut self, phase: u32, step: &Step) -> StepEnd {
        let mut out = ran!(self.pairing(Some(phase), "commit", &step::pairing_prompts(step)));
        if let Some(e) = out.last.error.clone() {
            if failure::classify_error(&e) == failure::ErrorClass::Work {
                tracing::warn!("commit failed ({}) — retrying once", e.message());
                out = ran!(self.pairing(Some(phase), "commit-retry", &step::pairing_prompts(step)));
            }
        }
        if let Some(e) = out.last.error.clone() {
            return self.handle_failure(phase, "commit", &e, None).await;
        }
        let manifest = self.read_manifest().await.ok();
        let active = manifest
            .as_ref()
            .and_then(|m| m.view().ok())
            .and_then(|v| v.active_checkpoint_for(phase).map(str::to_string));
        let mut updates = vec![
            ManifestUpdate::SetPhaseCommit {
                phase,
                commit: StepStatus::Complete,
            },
            resolve(phase, "commit", Resolution::AutoFixed),
        ];
        if let Some(tag) = active {
            updates.push(ManifestUpdate::ResolveCheckpoint { tag });
        }
        self.record(updates).await;
        let phase_cost = self.phase_cost(phase).await;
        self.emit(RunEvent::PhaseComplete {
            phase,
            cost_usd: phase_cost,
        });
        StepEnd::Continue
    }
}
