//! One run of the PIV loop: its memory, its controls (pause, resume, stop), the decision of the next step, and the crash resume at its start.

use std::collections::BTreeMap;

use super::*;
use crate::core::failure::Resolution;
use crate::core::waits::Outage;

// The loop itself.

/// One run of the loop: owns its memory of what it tried and what it spent.
pub(super) struct LoopRun {
    pub(super) settings: RunnerSettings,
    pub(super) manifest: Addr<ManifestActor>,
    pub(super) events: Recipient<Notify>,
    pub(super) control: watch::Receiver<Control>,
    /// The loop pauses itself when the cost cap is reached.
    pub(super) control_tx: Rc<watch::Sender<Control>>,
    pub(super) cancel: watch::Receiver<bool>,
    pub(super) published: Rc<RefCell<Published>>,
    pub(super) memory: RunMemory,
    /// What this run (this `piv run` process) has spent; shared with the actor so it
    /// survives `/go` and restarts of the loop after a crash.
    pub(super) cost: Rc<RefCell<RunCost>>,
    /// Failures this run recorded in the manifest (for the summary).
    pub(super) failures_recorded: std::cell::Cell<usize>,
    /// The stderr tail of the last session run, for the failure record.
    pub(super) last_stderr_tail: String,
    /// The first manifest write that failed: the loop stops at its next decision, since
    /// the manifest is its only memory of retries.
    pub(super) record_error: RefCell<Option<String>>,
    /// Manifest writes so far (for the fault-injection hook).
    pub(super) manifest_writes: std::cell::Cell<u32>,
    /// Agent sessions per phase in this loop, against `PIV_MAX_SESSIONS_PER_PHASE`.
    pub(super) sessions_by_phase: BTreeMap<u32, u32>,
    /// The latest failure per phase (command, details), for the session-budget message.
    pub(super) last_failure: BTreeMap<u32, (String, String)>,
    /// The outage being waited out, if any.
    pub(super) outage: Option<Outage>,
    /// Consecutive usage-limit hits (the doubling wait when the reset time is unusable).
    pub(super) limit_hits: u32,
    /// This instance's side of the shared subscription (its last resume).
    pub(super) usage_local: crate::core::usage::Local,
}

/// What a run has spent. `baseline` is the spend at the last resume after a cost-cap
/// pause: the cap applies from there.
#[derive(Debug, Default, Clone)]
pub struct RunCost {
    pub spent: f64,
    pub baseline: f64,
    /// Sessions stopped before they reported a cost (timeout, stall, cancel).
    pub unknown_sessions: u32,
}

/// How a step ended, for the loop.
pub(super) enum StepEnd {
    /// Go on with the next decision.
    Continue,
    Stop(StopReason),
}

impl LoopRun {
    pub(super) fn emit(&self, event: RunEvent) {
        self.events.do_send(Notify(event));
    }

    pub(super) fn publish(&self, f: impl FnOnce(&mut RuntimeState)) {
        self.published.borrow_mut().set(f);
    }

    pub(super) async fn read_manifest(&self) -> Result<Manifest, String> {
        match self.manifest.send(ReadManifest).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("manifest actor unavailable: {e}")),
        }
    }

    pub(super) async fn update(&self, updates: Vec<ManifestUpdate>) -> Result<Manifest, String> {
        match self.manifest.send(UpdateManifest(updates)).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("manifest actor unavailable: {e}")),
        }
    }

    /// Writes; a failed write is kept in `record_error` and stops the loop at its next
    /// decision (exit 1): carrying on without the record would retry forever.
    pub(super) async fn record(&self, updates: Vec<ManifestUpdate>) {
        let failures = updates
            .iter()
            .filter(|u| {
                matches!(
                    u,
                    ManifestUpdate::Append {
                        section: ListSection::Failures,
                        ..
                    }
                )
            })
            .count();
        self.failures_recorded
            .set(self.failures_recorded.get() + failures);
        let writes = self.manifest_writes.get();
        self.manifest_writes.set(writes + 1);
        let result = match self.settings.fail_manifest_writes_after {
            Some(n) if writes >= n => Err(format!(
                "injected fault: manifest write {} refused (PIV_FAULT_INJECT)",
                writes + 1
            )),
            _ => self.update(updates).await.map(|_| ()),
        };
        if let Err(e) = result {
            tracing::error!("cannot record in the manifest: {e}");
            self.emit(RunEvent::Info(format!(
                "⚠️ cannot record in the manifest: {e}"
            )));
            self.record_error.borrow_mut().get_or_insert(e);
        }
    }

    /// The stop after a failed manifest write, if one failed.
    pub(super) fn record_failed(&self) -> Option<StopReason> {
        self.record_error.borrow().as_ref().map(|e| StopReason::Fatal {
            why: format!(
                "cannot write .agents/manifest.yaml ({e}); stopping, because the manifest is piv's only record of retries and failures — fix the cause (disk full? permissions?) and run piv again"
            ),
        })
    }

    pub(super) fn spent(&self) -> f64 {
        self.cost.borrow().spent
    }

    /// Whether a pause is pending (asked for, not yet held).
    pub(super) fn pause_pending(&self) -> bool {
        matches!(*self.control.borrow(), Control::Paused { .. })
    }

    pub(super) fn stopping(&self) -> Option<String> {
        match &*self.control.borrow() {
            Control::Stopping { by } => Some(by.clone()),
            _ => None,
        }
    }

    /// Holds while paused; returns the stop reason if a shutdown arrives meanwhile.
    pub(super) async fn honour_controls(&mut self) -> Option<StopReason> {
        loop {
            let control = self.control.borrow().clone();
            match control {
                Control::Run => return None,
                Control::Stopping { by } => return Some(StopReason::Requested { by }),
                Control::Paused { by } => {
                    self.publish(|s| {
                        s.state = RunState::Paused;
                        s.step = None;
                    });
                    self.emit(RunEvent::Paused { by });
                    if self.control.changed().await.is_err() {
                        return Some(StopReason::Requested {
                            by: "runner gone".into(),
                        });
                    }
                    if *self.control.borrow() == Control::Run {
                        {
                            let mut cost = self.cost.borrow_mut();
                            cost.baseline = cost.spent;
                        }
                        self.publish(|s| {
                            s.state = RunState::Running;
                            s.why = None;
                            s.pause_requested_at = None;
                            s.pause_requested_by = None;
                        });
                        self.emit(RunEvent::Resumed {
                            by: "resume".into(),
                        });
                    }
                }
            }
        }
    }

    pub(super) async fn drive(mut self) -> StopReason {
        let reason = self.drive_steps().await;
        let (done, total) = match self.read_manifest().await.ok().and_then(|m| m.view().ok()) {
            Some(v) => (
                v.phases.values().filter(|p| p.is_complete()).count(),
                v.phases.len(),
            ),
            None => (0, 0),
        };
        self.emit(RunEvent::Summary {
            phases_done: done,
            phases_total: total,
            cost_usd: self.spent(),
            failures: self.failures_recorded.get(),
        });
        reason
    }

    pub(super) async fn drive_steps(&mut self) -> StopReason {
        self.publish(|s| {
            s.state = RunState::Running;
            s.why = None;
        });
        if let Some(stop) = self.resume_after_crash().await {
            return stop;
        }
        loop {
            if let Some(stop) = self.honour_controls().await {
                return stop;
            }
            if let Some(stop) = self.record_failed() {
                return stop;
            }
            let manifest = match self.read_manifest().await {
                Ok(m) => m,
                Err(e) => {
                    return StopReason::NeedsHuman {
                        why: format!("cannot read the manifest: {e}"),
                    }
                }
            };
            let view = match manifest.view() {
                Ok(v) => v,
                Err(e) => {
                    return StopReason::NeedsHuman {
                        why: format!("the manifest cannot be used: {e}"),
                    }
                }
            };
            let next = next_action(&view);
            let step = step::decide_step(&view, &next, &self.memory);
            tracing::debug!(?step, next = ?next, "decided");
            let end = match step {
                Step::Done => {
                    let done = view.phases.values().filter(|p| p.is_complete()).count();
                    self.emit(RunEvent::AllDone {
                        phases: done,
                        cost_usd: self.spent(),
                    });
                    return StopReason::Done;
                }
                Step::StopForHuman { why, category } => {
                    self.emit(RunEvent::NeedsHuman {
                        phase: None,
                        category,
                        details: why.clone(),
                        action: "Stopped — awaiting your action".into(),
                    });
                    return StopReason::NeedsHuman { why };
                }
                Step::Research { refresh } => {
                    self.memory.research_tried = true;
                    self.run_research(refresh).await
                }
                Step::Preflight => {
                    self.memory.preflight_tried = true;
                    self.run_preflight().await
                }
                Step::Plan { phase, ref name } => {
                    let name = name.clone();
                    self.run_plan(phase, &name, &step).await
                }
                Step::Execute {
                    phase,
                    ref plan_path,
                    ref checkpoint,
                } => {
                    let (plan_path, checkpoint) = (plan_path.clone(), checkpoint.clone());
                    self.run_execute(phase, plan_path, checkpoint, &step).await
                }
                Step::Validate { phase } => self.run_validate(phase).await,
                Step::Commit { phase } => self.run_commit(phase, &step).await,
            };
            if let StepEnd::Stop(reason) = end {
                // A stop decided on a record that could not be written is that failure.
                return self.record_failed().unwrap_or(reason);
            }
        }
    }

    /// A pending `orchestrator_crash` failure means the last run died: its recovery is
    /// "resume from manifest state", so piv marks it resumed and goes on from the manifest.
    pub(super) async fn resume_after_crash(&mut self) -> Option<StopReason> {
        let manifest = self.read_manifest().await.ok()?;
        let view = manifest.view().ok()?;
        let crashes: Vec<(u32, String)> = view
            .pending_failures()
            .filter(|f| f.error_category == "orchestrator_crash")
            .map(|f| (f.phase, f.command.clone()))
            .collect();
        let had_state =
            view.active_checkpoint().is_some() || view.first_pending_failure(None).is_some();
        let manifest = if crashes.is_empty() {
            manifest
        } else {
            let updates = crashes
                .iter()
                .map(|(phase, command)| resolve(*phase, command, Resolution::Resumed))
                .collect();
            self.record(updates).await;
            // Say what comes next once the crash records no longer block the loop.
            self.read_manifest().await.unwrap_or(manifest)
        };
        if had_state {
            let view = manifest.view().ok()?;
            let next = next_action(&view);
            // Phase 0 is a crash outside any phase: no phase to name.
            let phase = view
                .active_checkpoint()
                .and_then(|c| c.phase)
                .or_else(|| view.first_pending_failure(None).map(|f| f.phase))
                .or_else(|| crashes.iter().map(|(p, _)| *p).max())
                .filter(|p| *p > 0);
            self.emit(RunEvent::Restarted {
                phase,
                reason: format!(
                    "previous run left {} — next: {} {}",
                    if crashes.is_empty() {
                        "work in progress".to_string()
                    } else {
                        "a crash record".to_string()
                    },
                    next.command,
                    next.argument.unwrap_or_default()
                )
                .trim_end()
                .to_string(),
            });
        }
        None
    }

    /// Sum of the recorded session costs of a phase (all runs).
    pub(super) async fn phase_cost(&self, phase: u32) -> f64 {
        let Ok(m) = self.read_manifest().await else {
            return 0.0;
        };
        m.doc()
            .get("sessions")
            .and_then(|s| s.as_sequence())
            .map(|seq| {
                seq.iter()
                    .filter(|e| e.get("phase").and_then(|p| p.as_u64()) == Some(u64::from(phase)))
                    .filter_map(|e| e.get("cost_usd").and_then(|c| c.as_f64()))
                    .sum()
            })
            .unwrap_or(0.0)
    }

    pub(super) fn phase_started_once(&self, phase: u32, name: &str) {
        let already = self.published.borrow().state.phase == Some(phase);
        if !already {
            self.emit(RunEvent::PhaseStarted {
                phase,
                name: name.to_string(),
            });
            self.publish(|s| s.phase = Some(phase));
        }
    }
}

pub(super) fn resolve(phase: u32, command: &str, resolution: Resolution) -> ManifestUpdate {
    ManifestUpdate::ResolveFailures {
        phase,
        command: command.to_string(),
        resolution: resolution.as_str().to_string(),
    }
}

pub(super) fn append_failure(entry: serde_yaml::Value) -> ManifestUpdate {
    ManifestUpdate::Append {
        section: ListSection::Failures,
        entry,
    }
}

pub(super) fn tail_text(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.trim().to_string();
    }
    text.chars()
        .skip(count - max_chars)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Runs blocking work (git) off the actor thread.
pub(super) async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, git::GitError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(job).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("background task failed: {e}")),
    }
}
