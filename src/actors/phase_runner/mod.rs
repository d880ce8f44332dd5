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

use crate::actors::control::Notify;
use crate::actors::manifest::{ManifestActor, ReadManifest, RestoreManifest, UpdateManifest};
pub use crate::config::RunnerSettings;
use crate::core::control::{ControlAction, ControlReply};
use crate::core::events::RunEvent;
use crate::core::manifest::{
    self, ListSection, Manifest, ManifestUpdate, StepStatus, ValidationStatus,
};
use crate::core::next_action::next_action;
use crate::core::status::{RunState, RuntimeState};
use crate::core::step::{self, RunMemory, Step};
use crate::core::supervision::StopReason;
use crate::core::taxonomy::{Category, Recovery};
use crate::io::agent::{self, PairingOutcome};
use crate::io::clock::now_rfc3339;
use crate::io::{git, state_file};

mod button_rollback;
mod crash;
mod failure;
mod loop_run;
mod sessions;
mod steps;
mod usage;

pub use button_rollback::RollBackEscalation;
use crash::InRunnerLoop;
pub use crash::{panic_text, record_crash, IN_RUNNER_LOOP};
pub use failure::failure_entry;
use loop_run::LoopRun;
pub use loop_run::RunCost;

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
    /// What this run has spent, kept across restarts of the loop (`/go`, crashes).
    cost: Rc<RefCell<RunCost>>,
    loop_running: bool,
    /// Waiters of `StopRun`, answered when the loop ends.
    stop_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    panics_injected: u32,
    /// What this instance knows about the shared subscription (its last resume), kept
    /// across restarts of the loop.
    usage_local: crate::core::usage::Local,
    /// The running step's assistant messages (`AgentConfig::progress`), forwarded to the
    /// notifier as `RunEvent::Activity` for the live status card; taken when started.
    activity: Option<tokio::sync::mpsc::UnboundedReceiver<Vec<crate::core::progress::ToolUse>>>,
}

impl PhaseRunnerActor {
    pub fn new(
        mut settings: RunnerSettings,
        manifest: Addr<ManifestActor>,
        events: Recipient<Notify>,
        supervisor: Recipient<RunEnded>,
    ) -> Self {
        let (activity_tx, activity) = tokio::sync::mpsc::unbounded_channel();
        settings.agent.progress = Some(activity_tx);
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
            step_started_at: None,
            pause_requested_at: None,
            pause_requested_by: None,
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
            cost: Rc::new(RefCell::new(RunCost::default())),
            loop_running: false,
            stop_waiters: Vec::new(),
            panics_injected: 0,
            usage_local: Default::default(),
            activity: Some(activity),
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
            cost: self.cost.clone(),
            failures_recorded: std::cell::Cell::new(0),
            last_stderr_tail: String::new(),
            record_error: RefCell::new(None),
            manifest_writes: std::cell::Cell::new(0),
            sessions_by_phase: Default::default(),
            last_failure: Default::default(),
            outage: None,
            limit_hits: 0,
            usage_local: self.usage_local,
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
        // No step runs any more, and a pause asked for is moot: the loop has ended.
        published.set(|s| {
            s.step_started_at = None;
            s.pause_requested_at = None;
            s.pause_requested_by = None;
        });
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

impl Actor for PhaseRunnerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(mut activity) = self.activity.take() {
            let events = self.events.clone();
            ctx.spawn(
                async move {
                    while let Some(tools) = activity.recv().await {
                        events.do_send(Notify(RunEvent::Activity { tools }));
                    }
                }
                .into_actor(self),
            );
        }
        let heartbeat = self.settings.heartbeat;
        if !heartbeat.is_zero() {
            ctx.run_interval(heartbeat, |act, _ctx| {
                let p = act.published.borrow();
                if matches!(p.state.state, RunState::Running | RunState::Pausing) {
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

impl PhaseRunnerActor {
    /// Hold before the next step. The state is `pausing` (published at once, naming the
    /// step it waits for) until the loop reaches its next step and holds (`paused`).
    fn pause(&mut self, by: String) -> ControlReply {
        if !self.loop_running {
            return ControlReply::NothingRunning;
        }
        match &*self.control.borrow() {
            Control::Paused { .. } => return ControlReply::AlreadyPaused,
            Control::Stopping { .. } => return ControlReply::NothingRunning,
            Control::Run => {}
        }
        let _ = self.control.send(Control::Paused { by: by.clone() });
        let mut published = self.published.borrow_mut();
        published.set(|s| {
            s.state = RunState::Pausing;
            s.pause_requested_at = Some(now_rfc3339());
            s.pause_requested_by = Some(by);
        });
        let state = &published.state;
        ControlReply::pause_taken(
            state.step.as_deref(),
            state.step_started_at.as_deref(),
            chrono::Utc::now().timestamp(),
        )
    }

    /// Continue after a pause (or call off one still waiting for its step).
    fn resume(&mut self) -> ControlReply {
        let paused = matches!(*self.control.borrow(), Control::Paused { .. });
        if !paused {
            return ControlReply::NotPaused;
        }
        let _ = self.control.send(Control::Run);
        self.call_off_pause();
        ControlReply::Resumed
    }

    /// A pause called off before its step ended: the run is simply running again. (A
    /// pause already held is published as running by the loop when it wakes.)
    fn call_off_pause(&self) {
        self.published.borrow_mut().set(|s| {
            if s.state == RunState::Pausing {
                s.state = RunState::Running;
            }
            s.pause_requested_at = None;
            s.pause_requested_by = None;
        });
    }

    /// Start the loop if it is not running (re-reading the manifest, so new phases run),
    /// or resume if paused.
    fn go(&mut self, by: &str, ctx: &mut Context<Self>) -> ControlReply {
        if self.loop_running {
            if matches!(*self.control.borrow(), Control::Paused { .. }) {
                let _ = self.control.send(Control::Run);
                self.call_off_pause();
                tracing::info!("go from {by}: resuming");
                return ControlReply::Resumed;
            }
            return ControlReply::AlreadyRunning;
        }
        tracing::info!("go from {by}: starting the loop");
        // A pause left from the run that ended does not hold the new one: `/go` runs.
        if matches!(*self.control.borrow(), Control::Paused { .. }) {
            let _ = self.control.send(Control::Run);
        }
        self.start_loop(ctx);
        ControlReply::Started
    }
}

/// The runner's one entry point for control actions, local or remote.
impl Handler<crate::actors::control::Control> for PhaseRunnerActor {
    type Result = MessageResult<crate::actors::control::Control>;

    fn handle(
        &mut self,
        msg: crate::actors::control::Control,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        MessageResult(match msg.action {
            ControlAction::Go => self.go(&msg.by, ctx),
            ControlAction::Pause => self.pause(msg.by),
            ControlAction::Resume => self.resume(),
            // The supervisor runs the ordered shutdown and never forwards it; should it
            // arrive here, the runner does its part: no new steps.
            ControlAction::Shutdown => {
                let _ = self.control.send(Control::Stopping { by: msg.by });
                ControlReply::ShuttingDown
            }
            // A rollback names its escalation: it comes as `RollBackEscalation`.
            ControlAction::Rollback => ControlReply::NotRolledBack {
                why: "only an escalation's Rollback button rolls back".into(),
            },
            // The supervisor hands the PRD relay's actions to the relay actor.
            ControlAction::PrdStart | ControlAction::PrdText | ControlAction::PrdEnd => {
                ControlReply::NotForRunner
            }
        })
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
