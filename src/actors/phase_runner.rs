//! PhaseRunnerActor: the PIV loop. It asks the state machine for the next step, runs
//! that step's pairing of agent sessions, records the outcome in the manifest (through
//! ManifestActor), and applies the error taxonomy: retry, refactor after a failed
//! validation, roll back to the checkpoint, or stop for a human.
//!
//! The loop runs as one local task; the actor holds its controls. Pause, resume and
//! shutdown take effect between steps; shutdown also cancels the running session, whose
//! whole process group is then stopped. A panic inside the loop is caught, recorded as an
//! `orchestrator_crash` failure, and reported to the supervisor, which decides whether the
//! loop starts again (restart budget).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch;

use crate::actors::control::{ControlReply, Go, Notify, Pause, Resume};
use crate::actors::manifest::{ManifestActor, ReadManifest, RestoreManifest, UpdateManifest};
use crate::core::events::RunEvent;
use crate::core::manifest::{
    self, ListSection, Manifest, ManifestUpdate, StepStatus, ValidationStatus,
};
use crate::core::next_action::next_action;
use crate::core::status::{RunState, RuntimeState};
use crate::core::step::{self, RunMemory, Step};
use crate::core::supervision::StopReason;
use crate::core::taxonomy::{self, Category, Recovery};
use crate::io::agent::{self, AgentConfig, PairingOutcome};
use crate::io::{git, state_file};

/// The loop ended (or crashed); sent to the supervisor.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RunEnded {
    pub outcome: Result<StopReason, String>,
}

/// Start (or, after a crash, restart) the loop. Ignored while a loop runs.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct StartRun;

/// Stop taking new steps (the first step of the shutdown); the running session goes on
/// until `StopRun`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopSteps {
    pub by: String,
}

/// Stop taking new steps and cancel the running session (its process group is stopped
/// with TERM, a grace period, then KILL). Replies once the loop has ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopRun {
    pub by: String,
}

/// Everything the loop needs to know, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    pub project_dir: PathBuf,
    pub prefix: String,
    pub agent: AgentConfig,
    pub only_phase: Option<u32>,
    pub max_cost_usd: Option<f64>,
    pub heartbeat: Duration,
    pub started_at: String,
    /// Test hook (`PIV_FAULT_INJECT=phase_runner_panic:N`): the loop panics at its start
    /// the first N times, to exercise crash recording and the restart budget.
    pub inject_panics: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Control {
    Run,
    Paused { by: String },
    Stopping { by: String },
}

/// The state the loop publishes (`.agents/orchestrator.state.json`).
#[derive(Debug)]
struct Published {
    state: RuntimeState,
    project_dir: PathBuf,
}

impl Published {
    fn set(&mut self, f: impl FnOnce(&mut RuntimeState)) {
        f(&mut self.state);
        self.state.last_activity = now_rfc3339();
        if let Err(e) = state_file::write(&self.project_dir, &self.state) {
            tracing::warn!("cannot publish runtime state: {e}");
        }
    }
}

pub struct PhaseRunnerActor {
    settings: RunnerSettings,
    manifest: Addr<ManifestActor>,
    events: Recipient<Notify>,
    supervisor: Recipient<RunEnded>,
    control: Rc<watch::Sender<Control>>,
    cancel: watch::Sender<bool>,
    published: Rc<RefCell<Published>>,
    loop_running: bool,
    /// Waiters of `StopRun`, answered when the loop ends.
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    panics_injected: u32,
}

impl PhaseRunnerActor {
    pub fn new(
        settings: RunnerSettings,
        manifest: Addr<ManifestActor>,
        events: Recipient<Notify>,
        supervisor: Recipient<RunEnded>,
    ) -> Self {
        let state = RuntimeState {
            pid: std::process::id(),
            prefix: settings.prefix.clone(),
            state: RunState::Idle,
            phase: None,
            step: None,
            cost_usd: 0.0,
            started_at: settings.started_at.clone(),
            last_activity: now_rfc3339(),
            why: None,
        };
        let published = Rc::new(RefCell::new(Published {
            state,
            project_dir: settings.project_dir.clone(),
        }));
        published.borrow_mut().set(|_| {});
        PhaseRunnerActor {
            settings,
            manifest,
            events,
            supervisor,
            control: Rc::new(watch::channel(Control::Run).0),
            cancel: watch::channel(false).0,
            published,
            loop_running: false,
            stop_waiters: Vec::new(),
            panics_injected: 0,
        }
    }

    fn start_loop(&mut self, ctx: &mut Context<Self>) {
        if self.loop_running {
            return;
        }
        self.loop_running = true;
        let _ = self.cancel.send(false);
        if matches!(*self.control.borrow(), Control::Stopping { .. }) {
            let _ = self.control.send(Control::Run);
        }
        let inject = self.panics_injected < self.settings.inject_panics;
        if inject {
            self.panics_injected += 1;
        }
        let run = LoopRun {
            settings: self.settings.clone(),
            manifest: self.manifest.clone(),
            events: self.events.clone(),
            control: self.control.subscribe(),
            control_tx: self.control.clone(),
            cancel: self.cancel.subscribe(),
            published: self.published.clone(),
            memory: RunMemory {
                only_phase: self.settings.only_phase,
                ..RunMemory::default()
            },
            run_cost: 0.0,
            cost_baseline: 0.0,
            failures_recorded: std::cell::Cell::new(0),
            last_stderr_tail: String::new(),
        };
        let handle = actix_rt::spawn(InRunnerLoop(Box::pin(async move {
            if inject {
                panic!("injected fault: phase runner panic (PIV_FAULT_INJECT)");
            }
            run.drive().await
        })));
        let fut = async move {
            match handle.await {
                Ok(reason) => Ok(reason),
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    // `&*`: the Box is itself `Any`; `&payload` would downcast the Box.
                    Err(panic_text(&*payload))
                }
                Err(e) => Err(format!("the loop task ended unexpectedly: {e}")),
            }
        }
        .into_actor(self)
        .map(|outcome, act, _ctx| act.loop_ended(outcome));
        ctx.spawn(fut);
    }

    fn loop_ended(&mut self, outcome: Result<StopReason, String>) {
        self.loop_running = false;
        let mut published = self.published.borrow_mut();
        match &outcome {
            Ok(StopReason::Done) => published.set(|s| {
                s.state = RunState::Done;
                s.step = None;
                s.why = None;
            }),
            Ok(StopReason::NeedsHuman { why }) => published.set(|s| {
                s.state = RunState::WaitingForHuman;
                s.step = None;
                s.why = Some(why.clone());
            }),
            Ok(_) => published.set(|s| {
                s.state = RunState::Stopped;
                s.step = None;
            }),
            Err(panic) => {
                // The panic hook has recorded the `orchestrator_crash` failure.
                tracing::error!("phase runner crashed: {panic}");
                published.set(|s| s.step = None);
            }
        }
        for w in self.stop_waiters.drain(..) {
            let _ = w.send(());
        }
        self.supervisor.do_send(RunEnded { outcome });
    }
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Appends an `orchestrator_crash` failure to the manifest, synchronously: used after a
/// caught panic and by the process-wide panic hook, where no actor can be relied on.
pub fn record_crash(project_dir: &std::path::Path, phase: Option<u32>, details: &str) {
    let entry = failure_entry(
        "orchestrator",
        phase.unwrap_or(0),
        Category::OrchestratorCrash,
        0,
        None,
        "pending",
        details,
    );
    let update = ManifestUpdate::Append {
        section: ListSection::Failures,
        entry,
    };
    if let Err(e) = crate::io::manifest_file::update(project_dir, &[update], &now_rfc3339()) {
        tracing::error!("cannot record the crash in the manifest: {e}");
    }
}

impl Actor for PhaseRunnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let heartbeat = self.settings.heartbeat;
        if !heartbeat.is_zero() {
            ctx.run_interval(heartbeat, |act, _ctx| {
                let p = act.published.borrow();
                if p.state.state == RunState::Running {
                    act.events.do_send(Notify(RunEvent::Heartbeat {
                        phase: p.state.phase,
                    }));
                }
            });
        }
    }
}

impl Supervised for PhaseRunnerActor {
    /// A restart keeps the settings, addresses and published state; the loop is started
    /// again by the supervisor if the restart budget allows.
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        self.loop_running = false;
    }
}

impl Handler<StartRun> for PhaseRunnerActor {
    type Result = bool;

    fn handle(&mut self, _: StartRun, ctx: &mut Context<Self>) -> bool {
        if self.loop_running {
            return false;
        }
        self.start_loop(ctx);
        true
    }
}

impl Handler<Pause> for PhaseRunnerActor {
    type Result = ControlReply;

    fn handle(&mut self, msg: Pause, _: &mut Context<Self>) -> ControlReply {
        if !self.loop_running {
            return ControlReply::NothingRunning;
        }
        match &*self.control.borrow() {
            Control::Paused { .. } => return ControlReply::AlreadyPaused,
            Control::Stopping { .. } => return ControlReply::NothingRunning,
            Control::Run => {}
        }
        let _ = self.control.send(Control::Paused { by: msg.by });
        ControlReply::Paused
    }
}

impl Handler<Resume> for PhaseRunnerActor {
    type Result = ControlReply;

    fn handle(&mut self, msg: Resume, _: &mut Context<Self>) -> ControlReply {
        let paused = matches!(*self.control.borrow(), Control::Paused { .. });
        if !paused {
            return ControlReply::NotPaused;
        }
        let _ = msg.by;
        let _ = self.control.send(Control::Run);
        ControlReply::Resumed
    }
}

impl Handler<Go> for PhaseRunnerActor {
    type Result = ControlReply;

    fn handle(&mut self, msg: Go, ctx: &mut Context<Self>) -> ControlReply {
        if self.loop_running {
            if matches!(*self.control.borrow(), Control::Paused { .. }) {
                let _ = self.control.send(Control::Run);
                tracing::info!("go from {}: resuming", msg.by);
                return ControlReply::Resumed;
            }
            return ControlReply::AlreadyRunning;
        }
        tracing::info!("go from {}: starting the loop", msg.by);
        self.start_loop(ctx);
        ControlReply::Started
    }
}

impl Handler<StopSteps> for PhaseRunnerActor {
    type Result = ();

    fn handle(&mut self, msg: StopSteps, _: &mut Context<Self>) {
        let _ = self.control.send(Control::Stopping { by: msg.by });
    }
}

impl Handler<StopRun> for PhaseRunnerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: StopRun, _: &mut Context<Self>) -> Self::Result {
        let _ = self.control.send(Control::Stopping { by: msg.by });
        let _ = self.cancel.send(true);
        if !self.loop_running {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

// ---------------------------------------------------------------------------------------
// The loop itself.

/// One run of the loop: owns its memory of what it tried and what it spent.
struct LoopRun {
    settings: RunnerSettings,
    manifest: Addr<ManifestActor>,
    events: Recipient<Notify>,
    control: watch::Receiver<Control>,
    /// The loop pauses itself when the cost cap is reached.
    control_tx: Rc<watch::Sender<Control>>,
    cancel: watch::Receiver<bool>,
    published: Rc<RefCell<Published>>,
    memory: RunMemory,
    /// Cost of this run (USD), summed over sessions.
    run_cost: f64,
    /// Cost at the last resume after a cost-cap pause: the cap applies from here.
    cost_baseline: f64,
    /// Failures this run recorded in the manifest (for the summary).
    failures_recorded: std::cell::Cell<usize>,
    /// The stderr tail of the last session run, for the failure record.
    last_stderr_tail: String,
}

/// How a step ended, for the loop.
enum StepEnd {
    /// Go on with the next decision.
    Continue,
    Stop(StopReason),
}

impl LoopRun {
    fn emit(&self, event: RunEvent) {
        self.events.do_send(Notify(event));
    }

    fn publish(&self, f: impl FnOnce(&mut RuntimeState)) {
        self.published.borrow_mut().set(f);
    }

    async fn read_manifest(&self) -> Result<Manifest, String> {
        match self.manifest.send(ReadManifest).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("manifest actor unavailable: {e}")),
        }
    }

    async fn update(&self, updates: Vec<ManifestUpdate>) -> Result<Manifest, String> {
        match self.manifest.send(UpdateManifest(updates)).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("manifest actor unavailable: {e}")),
        }
    }

    /// Writes, logging a failure instead of stopping: the manifest is the record, but a
    /// failed record must not stop a run that otherwise works.
    async fn record(&self, updates: Vec<ManifestUpdate>) {
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
        if let Err(e) = self.update(updates).await {
            tracing::error!("cannot record in the manifest: {e}");
            self.emit(RunEvent::Info(format!(
                "⚠️ cannot record in the manifest: {e}"
            )));
        }
    }

    fn stopping(&self) -> Option<String> {
        match &*self.control.borrow() {
            Control::Stopping { by } => Some(by.clone()),
            _ => None,
        }
    }

    /// Holds while paused; returns the stop reason if a shutdown arrives meanwhile.
    async fn honour_controls(&mut self) -> Option<StopReason> {
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
                        self.cost_baseline = self.run_cost;
                        self.publish(|s| {
                            s.state = RunState::Running;
                            s.why = None;
                        });
                        self.emit(RunEvent::Resumed {
                            by: "resume".into(),
                        });
                    }
                }
            }
        }
    }

    async fn drive(mut self) -> StopReason {
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
            cost_usd: self.run_cost,
            failures: self.failures_recorded.get(),
        });
        reason
    }

    async fn drive_steps(&mut self) -> StopReason {
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
            if let Some(cap) = self.settings.max_cost_usd {
                if self.run_cost - self.cost_baseline >= cap {
                    let why = format!(
                        "cost cap reached: ${:.2} spent this run (PIV_MAX_COST_USD={cap}); send resume to continue",
                        self.run_cost
                    );
                    self.emit(RunEvent::NeedsHuman {
                        phase: self.published.borrow().state.phase,
                        category: "cost_cap".into(),
                        details: why.clone(),
                        action: "Paused — resume to continue".into(),
                    });
                    self.publish(|s| s.why = Some(why));
                    // Pause (a resume lifts the cap for another `cap` dollars).
                    let _ = self.control_tx.send(Control::Paused {
                        by: "cost cap".into(),
                    });
                    continue;
                }
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
                        cost_usd: self.run_cost,
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
                return reason;
            }
        }
    }

    /// A pending `orchestrator_crash` failure means the last run died: its recovery is
    /// "resume from manifest state", so piv marks it resumed and goes on from the manifest.
    async fn resume_after_crash(&mut self) -> Option<StopReason> {
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
                .map(|(phase, command)| ManifestUpdate::ResolveFailures {
                    phase: *phase,
                    command: command.clone(),
                    resolution: "resumed".into(),
                })
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

    /// Runs one pairing and records its sessions; emits the step start and end.
    async fn pairing(
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
                    cost_usd: Some(s.cost_usd),
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

    async fn run_research(&mut self, refresh: bool) -> StepEnd {
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

    async fn run_preflight(&mut self) -> StepEnd {
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

    async fn run_plan(&mut self, phase: u32, name: &str, step: &Step) -> StepEnd {
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

    async fn run_execute(
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
    async fn run_validate(&mut self, phase: u32) -> StepEnd {
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

    async fn run_commit(&mut self, phase: u32, step: &Step) -> StepEnd {
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

    /// Sum of the recorded session costs of a phase (all runs).
    async fn phase_cost(&self, phase: u32) -> f64 {
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

    fn phase_started_once(&self, phase: u32, name: &str) {
        let already = self.published.borrow().state.phase == Some(phase);
        if !already {
            self.emit(RunEvent::PhaseStarted {
                phase,
                name: name.to_string(),
            });
            self.publish(|s| s.phase = Some(phase));
        }
    }

    fn is_special(&self, e: &crate::core::stream::SessionError) -> bool {
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
    async fn special_error(
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
    async fn handle_failure(
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
    async fn roll_back(&mut self, tag: &str) -> (&'static str, String) {
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

    async fn escalate(
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
    async fn notify_escalation(
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

fn resolve(phase: u32, command: &str, resolution: &str) -> ManifestUpdate {
    ManifestUpdate::ResolveFailures {
        phase,
        command: command.to_string(),
        resolution: resolution.to_string(),
    }
}

fn append_failure(entry: serde_yaml::Value) -> ManifestUpdate {
    ManifestUpdate::Append {
        section: ListSection::Failures,
        entry,
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

fn tail_text(text: &str, max_chars: usize) -> String {
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

/// Now as the manifest writes it: RFC 3339 with milliseconds, `Z`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs blocking work (git) off the actor thread.
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, git::GitError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(job).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("background task failed: {e}")),
    }
}

thread_local! {
    /// True while the phase runner's loop is being polled: the panic hook then knows the
    /// panic will be caught and handled by the restart budget, not by a shutdown.
    pub static IN_RUNNER_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the loop's polls (see [`IN_RUNNER_LOOP`]).
struct InRunnerLoop<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for InRunnerLoop<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                IN_RUNNER_LOOP.with(|f| f.set(false));
            }
        }
        IN_RUNNER_LOOP.with(|f| f.set(true));
        let _reset = Reset;
        self.0.as_mut().poll(cx)
    }
}
