//! The per-step runs of the loop: one pairing of agent sessions per step (research, preflight, plan, execute, validate with its refactors, commit) and what each records.

use super::loop_run::{blocking, resolve, tail_text, LoopRun, StepEnd};
use super::*;
impl LoopRun {
    /// Runs one pairing and records its sessions; emits the step start and end.
    pub(super) async fn pairing(
        &mut self,
        phase: Option<u32>,
        label: &str,
        prompts: &[String],
    ) -> PairingOutcome {
        self.publish(|s| {
            s.state = RunState::Running;
            s.phase = phase.or(s.phase);
            s.step = Some(label.to_string());
        });
        self.emit(RunEvent::StepStarted {
            phase,
            step: label.to_string(),
        });
        let started = Instant::now();
        let outcome = agent::run_pairing(&self.settings.agent, prompts, self.cancel.clone()).await;
        self.run_cost += outcome.cost_usd;
        self.last_stderr_tail = outcome.last.stderr_tail.clone();
        let cost = self.run_cost;
        self.publish(|s| s.cost_usd = cost);
        self.emit(RunEvent::StepEnded {
            phase,
            step: label.to_string(),
            elapsed: started.elapsed(),
            cost_usd: outcome.cost_usd,
            error: outcome.last.error.as_ref().map(|e| e.message()),
        });
        let at = now_rfc3339();
        let entries = outcome
            .sessions
            .iter()
            .map(|s| {
                let record = manifest::SessionRecord {
                    step: label.to_string(),
                    phase,
                    commands: s.prompt.clone(),
                    session_id: s.session_id.clone(),
                    outcome: s.error.clone().unwrap_or_else(|| "success".to_string()),
                    cost_usd: s.cost_usd,
                    model: s.model.clone(),
                    num_turns: Some(u64::from(s.num_turns)),
                    duration_ms: Some(s.duration_ms),
                    finished_at: at.clone(),
                };
                ManifestUpdate::Append {
                    section: ListSection::Sessions,
                    entry: record.to_value(),
                }
            })
            .collect();
        self.record(entries).await;
        outcome
    }

    pub(super) async fn run_research(&mut self, refresh: bool) -> StepEnd {
        let prompts = step::pairing_prompts(&Step::Research { refresh });
        let out = self.pairing(None, "research-stack", &prompts).await;
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
        let out = self
            .pairing(None, "preflight", &step::pairing_prompts(&Step::Preflight))
            .await;
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
        let out = self
            .pairing(Some(phase), "plan-feature", &step::pairing_prompts(step))
            .await;
        if let Some(e) = out.last.error.clone() {
            return self.handle_failure(phase, "plan-feature", &e, None).await;
        }
        self.record(vec![
            ManifestUpdate::SetPhaseStatus {
                phase,
                plan: Some(StepStatus::Complete),
                execution: None,
                validation: None,
            },
            resolve(phase, "plan-feature", "auto_fixed"),
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
            let err = crate::core::stream::SessionError::ResultError {
                subtype: "missing_plan".into(),
                messages: vec![details],
            };
            return self.handle_failure(phase, "plan-feature", &err, None).await;
        };
        let tag = match checkpoint {
            Some(tag) => tag,
            None => match blocking({
                let dir = self.settings.project_dir.clone();
                move || git::create_checkpoint(&dir, phase, chrono::Utc::now())
            })
            .await
            {
                Ok(tag) => {
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
        let out = self
            .pairing(Some(phase), "execute", &step::pairing_prompts(step))
            .await;
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
            resolve(phase, "execute", "auto_fixed"),
        ])
        .await;
        StepEnd::Continue
    }

    /// Validate; after a fixable failure run a refactor pairing carrying the error and
    /// validate again (at most two refactors, as the reference).
    pub(super) async fn run_validate(&mut self, phase: u32) -> StepEnd {
        const MAX_REFACTORS: u32 = 2;
        let mut refactors = 0;
        loop {
            let out = self
                .pairing(
                    Some(phase),
                    "validate",
                    &step::pairing_prompts(&Step::Validate { phase }),
                )
                .await;
            let hook = out.last.hooks.get("validation_status").map(String::as_str);
            let failure = match (&out.last.error, hook) {
                (Some(e), _) => Some(e.clone()),
                // The hook is honoured: fail or partial is a failed validation even when the
                // session itself succeeded.
                (None, Some(status @ ("fail" | "partial"))) => {
                    Some(crate::core::stream::SessionError::ResultError {
                        subtype: format!("validation_{status}"),
                        messages: vec![format!(
                            "validation {status}: {}",
                            tail_text(&out.last.text, 2000)
                        )],
                    })
                }
                _ => None,
            };
            let Some(err) = failure else {
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
                    resolve(phase, "validate-implementation", "auto_fixed"),
                ])
                .await;
                return StepEnd::Continue;
            };
            if self.is_special(&err) {
                return self
                    .handle_failure(phase, "validate-implementation", &err, None)
                    .await;
            }
            let category = taxonomy::classify(&err.error_text());
            if refactors < MAX_REFACTORS && !category.spec().needs_human {
                refactors += 1;
                if let Some(stop) = self.honour_controls().await {
                    return StepEnd::Stop(stop);
                }
                let prompts = step::refactor_prompts(&err.error_text());
                let fix = self.pairing(Some(phase), "fix-validation", &prompts).await;
                if let Some(e) = fix.last.error.clone() {
                    if self.is_special(&e) {
                        return self
                            .handle_failure(phase, "validate-implementation", &e, None)
                            .await;
                    }
                    tracing::warn!("refactor session failed: {}", e.message());
                }
                continue;
            }
            return self
                .handle_failure(phase, "validate-implementation", &err, None)
                .await;
        }
    }

    pub(super) async fn run_commit(&mut self, phase: u32, step: &Step) -> StepEnd {
        let mut out = self
            .pairing(Some(phase), "commit", &step::pairing_prompts(step))
            .await;
        if let Some(e) = out.last.error.clone() {
            if !self.is_special(&e) {
                tracing::warn!("commit failed ({}) — retrying once", e.message());
                out = self
                    .pairing(Some(phase), "commit-retry", &step::pairing_prompts(step))
                    .await;
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
            resolve(phase, "commit", "auto_fixed"),
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
