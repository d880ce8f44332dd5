//! SupervisorActor: owns one `piv run` from start to exit. It starts the other actors in
//! order (registry → manifest → signal watcher → notifier → bot owner/standby → phase
//! runner; the PID file is taken before the actor system starts), turns signals and OS
//! signals into typed messages, restarts a crashed phase runner within the restart
//! budget, and runs the one ordered shutdown whatever triggered it:
//!
//! stop taking new steps → stop polling (the owner lock is released, a standby takes
//! over) → stop the running agent's process group (TERM, grace, KILL) → final manifest
//! write → deregister → remove the PID file → exit with the reason's code.
//!
//! A second Ctrl-C exits at once.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;

use crate::actors::bot_owner::{BotOwnerActor, BotOwnerSettings, StopPolling};
use crate::actors::control::{Control, Notify};
use crate::actors::manifest::{ManifestActor, UpdateManifest};
use crate::actors::notifier::{Flush, NotifierActor, NotifierSettings};
use crate::actors::phase_runner::{
    PhaseRunnerActor, RollBackEscalation, RunEnded, StartRun, StopRun, StopSteps,
};
use crate::actors::prd_relay::{IsRelayOpen, PrdRelayActor, PrdRelaySettings, RelaySignal};
use crate::actors::presence::{PresenceActor, Withdraw};
use crate::actors::registry::{Deregister, InstanceIdentity, Register, RegistryActor};
use crate::actors::signal_watcher::{SignalReceived, SignalWatcherActor};
use crate::config::RunConfig;
use crate::core::bot_chats::BotChat;
use crate::core::control::{ControlAction, ControlReply};
use crate::core::events::RunEvent;
use crate::core::manifest::ManifestUpdate;
use crate::core::next_action::next_action;
use crate::core::supervision::{RestartBudget, RestartDecision, StopReason};
use crate::io::pid_file::PidFile;
use crate::io::registry_store::RegistryStore;

/// Begin the ordered shutdown (OS signal, `shutdown` signal, fatal error).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct BeginShutdown(pub StopReason);

/// A panic outside the phase runner's loop, reported by the panic hook.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct PanicReported(pub String);

pub struct SupervisorActor {
    cfg: Arc<RunConfig>,
    pid_file: Option<PidFile>,
    started_at: SystemTime,
    registry: Option<Addr<RegistryActor>>,
    manifest: Option<Addr<ManifestActor>>,
    notifier: Option<Addr<NotifierActor>>,
    bot_owner: Option<Addr<BotOwnerActor>>,
    runner: Option<Addr<PhaseRunnerActor>>,
    /// The PRD relay (with Telegram only: its answers go to the chat).
    prd_relay: Option<Addr<PrdRelayActor>>,
    _watcher: Option<Addr<SignalWatcherActor>>,
    /// This instance across machines (`PIV_COORDINATION`), with or without Telegram.
    presence: Option<Addr<PresenceActor>>,
    budget: RestartBudget,
    origin: Instant,
    shutting_down: bool,
    /// Set by the shutdown sequence; read by `main` after the system stops.
    exit_code: Rc<Cell<i32>>,
}

impl SupervisorActor {
    pub fn new(
        cfg: RunConfig,
        pid_file: PidFile,
        started_at: SystemTime,
        exit_code: Rc<Cell<i32>>,
    ) -> Self {
        let budget = RestartBudget::new(cfg.max_restarts, cfg.restart_window);
        SupervisorActor {
            cfg: Arc::new(cfg),
            pid_file: Some(pid_file),
            started_at,
            registry: None,
            manifest: None,
            notifier: None,
            bot_owner: None,
            runner: None,
            prd_relay: None,
            _watcher: None,
            presence: None,
            budget,
            origin: Instant::now(),
            shutting_down: false,
            exit_code,
        }
    }

    fn say(&self, event: RunEvent) {
        match &self.notifier {
            Some(n) => n.do_send(Notify(event)),
            None => crate::io::terminal::line(&crate::core::events::terminal_line(&event)),
        }
    }

    /// Start-up after the PID file: each step waits for the one before.
    fn start_children(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.cfg.clone();
        // Registry first: a duplicate prefix must stop us before anything is sent.
        if cfg.registry_enabled {
            let identity = InstanceIdentity {
                prefix: cfg.prefix.clone(),
                project_dir: cfg.project_dir.display().to_string(),
                manifest_path: crate::io::manifest_file::manifest_path(&cfg.project_dir)
                    .display()
                    .to_string(),
                started_at: cfg.started_at.clone(),
                chat: cfg.telegram.as_ref().map(|tg| BotChat {
                    bot_id: tg.bot_id,
                    chat_id: tg.chat_id,
                }),
            };
            let store = RegistryStore::new(cfg.home.clone());
            let registry = RegistryActor::new(
                store,
                identity,
                crate::actors::registry::DEFAULT_ENSURE_EVERY,
            )
            .start();
            self.registry = Some(registry.clone());
            let fut = async move { registry.send(Register).await }
                .into_actor(self)
                .map(|res, act, ctx| match res {
                    Ok(Ok(_)) => act.start_rest(ctx),
                    Ok(Err(e)) => {
                        crate::io::terminal::warn(&format!("error: {e}"));
                        act.registry = None;
                        act.finish(ctx, 2);
                    }
                    Err(e) => {
                        crate::io::terminal::warn(&format!(
                            "error: registry actor unavailable: {e}"
                        ));
                        act.finish(ctx, 1);
                    }
                });
            ctx.wait(fut);
        } else {
            self.start_rest(ctx);
        }
    }

    fn start_rest(&mut self, ctx: &mut Context<Self>) {
        let cfg = self.cfg.clone();
        let me = ctx.address();
        let manifest = actix::Supervisor::start({
            let dir = cfg.project_dir.clone();
            move |_| ManifestActor::new(dir)
        });
        self.manifest = Some(manifest.clone());
        self._watcher = Some(
            SignalWatcherActor::new(
                cfg.project_dir.clone(),
                self.started_at,
                cfg.signal_poll,
                cfg.signal_notify,
                me.clone().recipient::<SignalReceived>(),
            )
            .start(),
        );
        let notifier = NotifierActor::new(NotifierSettings {
            prefix: cfg.prefix.clone(),
            home: cfg.home.clone(),
            telegram: cfg.telegram.clone(),
            outbox_dir: cfg
                .project_dir
                .join(".agents")
                .join(crate::io::outbox::OUTBOX_DIR),
            project_dir: cfg.project_dir.display().to_string(),
            panic_on_first_event: cfg.faults.notifier_panic,
            coordinator: cfg.coordinator.clone(),
        })
        .start();
        self.notifier = Some(notifier.clone());
        if let Some(presence) = cfg.coordinator.as_ref().and_then(|c| c.presence.clone()) {
            self.presence = Some(
                PresenceActor::new(
                    presence,
                    cfg.prefix.clone(),
                    cfg.project_dir.clone(),
                    cfg.home.clone(),
                )
                .start(),
            );
        }
        let runner = actix::Supervisor::start({
            let settings = cfg.runner_settings();
            let manifest = manifest.clone();
            let events = notifier.clone().recipient::<Notify>();
            let sup = me.clone().recipient::<RunEnded>();
            move |_| PhaseRunnerActor::new(settings, manifest, events, sup)
        });
        self.runner = Some(runner.clone());
        if let Some(tg) = &cfg.telegram {
            let runner_settings = cfg.runner_settings();
            self.prd_relay = Some(
                PrdRelayActor::new(
                    PrdRelaySettings {
                        prefix: cfg.prefix.clone(),
                        project_dir: cfg.project_dir.clone(),
                        agent: runner_settings.agent,
                        ledger_home: runner_settings.home,
                        token: tg.token.clone(),
                    },
                    notifier.clone(),
                )
                .start(),
            );
            let settings = BotOwnerSettings {
                prefix: cfg.prefix.clone(),
                project_dir: cfg.project_dir.clone(),
                home: cfg.home.clone(),
                token: tg.token.clone(),
                bot_id: tg.bot_id,
                chat_id: tg.chat_id,
                api_url: tg.api_url.clone(),
                poll_timeout_secs: crate::actors::bot_owner::DEFAULT_POLL_TIMEOUT_SECS,
                stale_command_secs: cfg.stale_command_secs,
                coordinator: cfg.coordinator.clone(),
            };
            self.bot_owner = Some(
                BotOwnerActor::new(
                    settings,
                    me.clone().recipient::<Control>(),
                    notifier.clone(),
                    self.registry.clone(),
                )
                .start(),
            );
        }
        runner.do_send(StartRun);
    }

    /// The one shutdown sequence.
    fn shutdown(&mut self, reason: StopReason, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        tracing::info!(reason = %reason.describe(), "shutting down");
        let runner = self.runner.clone();
        let manifest = self.manifest.clone();
        let bot_owner = self.bot_owner.clone();
        let presence = self.presence.clone();
        let registry = self.registry.take();
        let notifier = self.notifier.clone();
        let grace = self.cfg.agent.kill_grace + Duration::from_secs(10);
        let code = reason.exit_code();
        let announce = match &reason {
            StopReason::Done => None,
            other => Some(RunEvent::Stopped {
                why: other.describe(),
            }),
        };
        let fut = async move {
            // 1. No new steps.
            if let Some(r) = &runner {
                let _ = r
                    .send(StopSteps {
                        by: "shutdown".into(),
                    })
                    .await;
            }
            // 2. Stop polling: the owner lock is released and a standby takes over now.
            if let Some(b) = &bot_owner {
                let _ = tokio::time::timeout(Duration::from_secs(5), b.send(StopPolling)).await;
            }
            // 3. Stop the running agent's process group and wait for the loop to end.
            if let Some(r) = &runner {
                let _ = tokio::time::timeout(
                    grace,
                    r.send(StopRun {
                        by: "shutdown".into(),
                    }),
                )
                .await;
            }
            // 4. Final manifest write: the next action, as the reference writes it.
            if let Some(m) = &manifest {
                if let Ok(Ok(current)) = m.send(crate::actors::manifest::ReadManifest).await {
                    if let Ok(view) = current.view() {
                        let next = next_action(&view);
                        let _ = m
                            .send(UpdateManifest(vec![ManifestUpdate::SetNextAction(next)]))
                            .await;
                    }
                }
            }
            if let (Some(n), Some(event)) = (&notifier, announce) {
                n.do_send(Notify(event));
            }
            // 5. Deregister, here and across machines.
            if let Some(p) = &presence {
                let _ = tokio::time::timeout(Duration::from_secs(3), p.send(Withdraw)).await;
            }
            if let Some(reg) = &registry {
                match reg.send(Deregister).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("deregister failed: {e}"),
                    Err(e) => tracing::warn!("registry actor gone: {e}"),
                }
            }
            // Give queued chat messages a bounded chance to go out.
            if let Some(n) = &notifier {
                let _ = tokio::time::timeout(Duration::from_secs(10), n.send(Flush)).await;
            }
        }
        .into_actor(self)
        .map(move |_, act, ctx| act.finish(ctx, code));
        ctx.spawn(fut);
    }

    /// 6. Remove the PID file and stop the system with `code`.
    fn finish(&mut self, _ctx: &mut Context<Self>, code: i32) {
        if let Some(pid) = self.pid_file.take() {
            if let Err(e) = pid.release() {
                tracing::warn!("cannot remove the PID file: {e}");
            }
        }
        self.exit_code.set(code);
        System::current().stop_with_code(code);
    }

    fn listen_for_os_signals(&self, ctx: &mut Context<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let me = ctx.address();
        let project_dir = self.cfg.project_dir.clone();
        actix_rt::spawn(async move {
            let mut int = match signal(SignalKind::interrupt()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGINT: {e}");
                    return;
                }
            };
            let mut term = match signal(SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
            // A hangup (terminal closed, ssh dropped) stops piv like SIGTERM: in order.
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("cannot listen for SIGHUP: {e}");
                    return;
                }
            };
            let mut interrupts = 0;
            loop {
                let by = tokio::select! {
                    _ = int.recv() => { interrupts += 1; "SIGINT" }
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                if by == "SIGINT" && interrupts >= 2 {
                    crate::io::terminal::warn("second Ctrl-C: exiting now");
                    stop_agent_groups_now();
                    remove_own_pid_file(&project_dir);
                    std::process::exit(130);
                }
                if by == "SIGINT" {
                    crate::io::terminal::warn(
                        "stopping after cleanup (Ctrl-C again to exit at once)",
                    );
                }
                me.do_send(BeginShutdown(StopReason::Requested { by: by.into() }));
            }
        });
    }
}

/// On the immediate exit path: the PID file goes if it is ours (the registry entry is
/// pruned by the next operation, as for any dead instance).
fn remove_own_pid_file(project_dir: &std::path::Path) {
    if PidFile::read(project_dir).is_some_and(|r| r.pid == std::process::id()) {
        let _ = std::fs::remove_file(PidFile::path_for(project_dir));
    }
}

/// On the immediate exit path, kill the agent groups we know of without waiting.
fn stop_agent_groups_now() {
    crate::io::agent::kill_all_groups_now();
}

impl Actor for SupervisorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        install_panic_channel(ctx.address());
        self.listen_for_os_signals(ctx);
        self.start_children(ctx);
    }
}

impl SupervisorActor {
    /// The one way a control action reaches the run, whoever sent it: shutdown is the
    /// ordered shutdown, every other action goes to the phase runner's `Control` handler.
    fn control(&mut self, msg: Control, ctx: &mut Context<Self>) -> ResponseFuture<ControlReply> {
        if msg.action == ControlAction::Shutdown {
            self.shutdown(StopReason::Requested { by: msg.by }, ctx);
            return Box::pin(async { ControlReply::ShuttingDown });
        }
        if msg.action.is_prd() {
            self.to_relay(msg.action, None);
            return Box::pin(async { ControlReply::NotForRunner });
        }
        let Some(runner) = self.runner.clone() else {
            return Box::pin(async { ControlReply::RunnerUnavailable });
        };
        // One agent per project: no step starts while the PRD relay is open.
        let relay = self
            .prd_relay
            .clone()
            .filter(|_| matches!(msg.action, ControlAction::Go | ControlAction::Resume));
        Box::pin(async move {
            if let Some(relay) = relay {
                if relay.send(IsRelayOpen).await.unwrap_or(false) {
                    return ControlReply::PrdOpen;
                }
            }
            runner.send(msg).await.unwrap_or_else(|e| {
                tracing::warn!("phase runner unavailable: {e}");
                ControlReply::RunnerUnavailable
            })
        })
    }
}

impl SupervisorActor {
    /// A relay action goes to the PRD relay (none without Telegram: logged).
    fn to_relay(&self, action: ControlAction, text: Option<String>) {
        match &self.prd_relay {
            Some(relay) => relay.do_send(RelaySignal { action, text }),
            None => tracing::info!(%action, "no PRD relay without Telegram; signal ignored"),
        }
    }
}

/// A control action from this instance's chat (the bot owner's local path).
impl Handler<Control> for SupervisorActor {
    type Result = ResponseFuture<ControlReply>;

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) -> Self::Result {
        self.control(msg, ctx)
    }
}

/// A signal from the queue: the same control path, and its reply announced.
impl Handler<SignalReceived> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: SignalReceived, ctx: &mut Context<Self>) {
        if msg.0.action.is_prd() {
            // The relay answers in the chat itself.
            self.to_relay(msg.0.action, msg.0.text);
            return;
        }
        let control = Control {
            action: msg.0.action,
            by: format!("signal from {}", msg.0.from),
        };
        let reply = match (&self.runner, msg.0.action) {
            // A rollback names the escalation its button was on (issue 14).
            (Some(runner), ControlAction::Rollback) => {
                let ask = runner.send(RollBackEscalation {
                    escalation: msg.0.escalation,
                    by: control.by,
                });
                Box::pin(async move { ask.await.unwrap_or(ControlReply::RunnerUnavailable) })
            }
            _ => self.control(control, ctx),
        };
        ctx.spawn(reply.into_actor(self).map(|reply, act, _| {
            match (&reply, &act.notifier) {
                // A refused `/go b` must reach the chat at every notify level.
                (ControlReply::PrdOpen, Some(n)) => {
                    n.do_send(crate::actors::notifier::QueueProjectMessage {
                        html: crate::core::telegram_text::escape_html(&reply.text()),
                    })
                }
                _ => {
                    if let Some(text) = reply.announcement() {
                        act.say(RunEvent::Info(text.to_string()));
                    }
                }
            }
        }));
    }
}

impl Handler<RunEnded> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: RunEnded, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        match msg.outcome {
            Ok(StopReason::Done) => {
                if self.cfg.stay_up_when_idle() {
                    tracing::info!(
                        "all phases done; staying up for commands (/go runs new phases)"
                    );
                } else {
                    self.shutdown(StopReason::Done, ctx);
                }
            }
            Ok(StopReason::NeedsHuman { why }) if self.cfg.stay_up_when_idle() => {
                tracing::info!("waiting for a human: {why}; staying up for commands");
            }
            Ok(reason) => self.shutdown(reason, ctx),
            Err(panic) => {
                let now = self.origin.elapsed();
                match self.budget.record_crash(now) {
                    RestartDecision::Restart => {
                        self.say(RunEvent::Info(format!(
                            "⚠️ phase runner crashed ({panic}); restarting it"
                        )));
                        if let Some(r) = &self.runner {
                            r.do_send(StartRun);
                        }
                    }
                    RestartDecision::GiveUp => {
                        let reason = StopReason::RestartIntensity {
                            restarts: self.budget.max_restarts(),
                            window: self.budget.window(),
                        };
                        self.say(RunEvent::NeedsHuman {
                            phase: None,
                            category: "orchestrator_crash".into(),
                            details: format!("last crash: {panic}"),
                            action: reason.describe(),
                        });
                        self.shutdown(reason, ctx);
                    }
                }
            }
        }
    }
}

impl Handler<BeginShutdown> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: BeginShutdown, ctx: &mut Context<Self>) {
        self.shutdown(msg.0, ctx);
    }
}

impl Handler<PanicReported> for SupervisorActor {
    type Result = ();

    fn handle(&mut self, msg: PanicReported, ctx: &mut Context<Self>) {
        self.shutdown(
            StopReason::Fatal {
                why: format!("internal error: {}", msg.0),
            },
            ctx,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Panics.

static PANIC_SINK: OnceLock<Mutex<Option<Addr<SupervisorActor>>>> = OnceLock::new();
static HOOK_INSTALLED: AtomicBool = AtomicBool::new(false);

fn install_panic_channel(addr: Addr<SupervisorActor>) {
    *PANIC_SINK
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(addr);
}

/// What the panic hook needs to know, set once before the system starts.
pub struct CrashContext {
    pub project_dir: PathBuf,
}

/// Installs the process-wide panic hook: every panic is recorded as an
/// `orchestrator_crash` failure in the manifest (synchronously, no actor involved); a
/// panic outside the phase runner's loop also starts the ordered shutdown. If the panic
/// takes the process down, the PID file and registry guards are released by their Drop.
pub fn install_panic_hook(ctx: CrashContext) {
    if HOOK_INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let text = crate::actors::phase_runner::panic_text(info.payload());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let details = format!("panic{location}: {text}");
        tracing::error!("{details}");
        let phase = crate::io::state_file::read(&ctx.project_dir).and_then(|s| s.phase);
        crate::actors::phase_runner::record_crash(&ctx.project_dir, phase, &details);
        if !crate::actors::phase_runner::IN_RUNNER_LOOP.with(|f| f.get()) {
            if let Some(sink) = PANIC_SINK.get() {
                if let Some(addr) = sink.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    addr.do_send(PanicReported(details));
                }
            }
        }
    }));
}
