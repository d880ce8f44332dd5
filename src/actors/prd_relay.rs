//! PrdRelayActor: owns one project's PRD relay (`core::prd_relay::PrdRelay`). It takes the
//! relay's signals (`prd_start`, `prd_text`, `prd_end`) from the supervisor, asks the core
//! what to do, and does it: replies and Claude's answers go to the project's chat (its
//! topic) through the notifier, as messages of their own at every notify level, a turn runs `claude -p "/create-prd …"` or
//! `claude -p "…" --resume <id>` through `io::agent` with the run's settings, and each
//! turn's cost goes into the cost ledger.
//!
//! One agent per project: a relay does not open while a step runs (the published state
//! says so), and while it is open the supervisor refuses `/go` and `/resume`.

use std::path::PathBuf;

use actix::prelude::*;

use crate::actors::notifier::{NotifierActor, QueueProjectMessage};
use crate::core::control::ControlAction;
use crate::core::prd_relay::{PrdRelay, RelayEffect, RelayInput};
use crate::core::session_outcome::ReportedCosts;
use crate::core::telegram_text::escape_html;
use crate::io::agent::{self, AgentConfig};

/// A relay action from the signal queue (`text` for `prd_text`).
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct RelaySignal {
    pub action: ControlAction,
    pub text: Option<String>,
}

/// Whether the relay is open (the supervisor asks before `/go` and `/resume`).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "bool")]
pub struct IsRelayOpen;

/// A Claude turn ended.
#[derive(Message, Debug)]
#[rtype(result = "()")]
struct TurnEnded(RelayInput);

/// What the relay needs from the run's configuration.
#[derive(Clone)]
pub struct PrdRelaySettings {
    pub prefix: String,
    pub project_dir: PathBuf,
    /// The run's agent settings (program, model, permission mode, limits, environment).
    pub agent: AgentConfig,
    /// Where the cost ledger lives (None: no ledger, as for the runner).
    pub ledger_home: Option<PathBuf>,
    /// Only to keep it out of error texts.
    pub token: String,
}

pub struct PrdRelayActor {
    settings: PrdRelaySettings,
    notifier: Addr<NotifierActor>,
    relay: PrdRelay,
    costs: ReportedCosts,
    /// Set when the actor stops: a turn still running is stopped with it.
    cancel: tokio::sync::watch::Sender<bool>,
}

impl PrdRelayActor {
    pub fn new(settings: PrdRelaySettings, notifier: Addr<NotifierActor>) -> Self {
        PrdRelayActor {
            settings,
            notifier,
            relay: PrdRelay::default(),
            costs: ReportedCosts::default(),
            cancel: tokio::sync::watch::channel(false).0,
        }
    }

    fn feed(&mut self, input: RelayInput, ctx: &mut Context<Self>) {
        let was_open = self.relay.is_open();
        let effects = self.relay.handle(input);
        if was_open != self.relay.is_open() {
            self.publish_open();
        }
        for effect in effects {
            match effect {
                RelayEffect::Reply(text) => self.say(escape_html(&text)),
                RelayEffect::PostAnswer(answer) => self.say(escape_html(&answer)),
                RelayEffect::StartSession { text } => {
                    self.run_turn(format!("/create-prd {text}"), None, ctx)
                }
                RelayEffect::ResumeSession { session_id, text } => {
                    self.run_turn(text, Some(session_id), ctx)
                }
            }
        }
    }

    /// Writes or removes the open mark the bot owner reads.
    fn publish_open(&self) {
        let dir = &self.settings.project_dir;
        let result = if self.relay.is_open() {
            crate::io::prd_relay_file::mark_open(dir, &crate::io::clock::now_rfc3339())
                .map_err(|e| e.to_string())
        } else {
            crate::io::prd_relay_file::mark_closed(dir).map_err(|e| e.to_string())
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record whether the PRD relay is open");
        }
    }

    /// Into the project's chat (its topic, if it has one).
    fn say(&self, html: String) {
        self.notifier.do_send(QueueProjectMessage { html });
    }

    fn run_turn(&mut self, prompt: String, resume: Option<String>, ctx: &mut Context<Self>) {
        let cfg = self.settings.agent.clone();
        tracing::info!(resume = ?resume, "PRD relay: a Claude turn starts");
        let cancel = self.cancel.subscribe();
        let fut = async move {
            let outcome = agent::run_session(&cfg, &prompt, resume.as_deref(), cancel).await;
            (prompt, outcome)
        };
        ctx.spawn(
            fut.into_actor(self)
                .map(|(prompt, outcome), act, ctx| act.turn_done(prompt, outcome, ctx)),
        );
    }

    fn turn_done(
        &mut self,
        prompt: String,
        outcome: crate::core::session_outcome::SessionOutcome,
        ctx: &mut Context<Self>,
    ) {
        self.record_cost(&outcome);
        let input = match (&outcome.error, &outcome.session_id) {
            (None, Some(id)) => RelayInput::TurnDone {
                session_id: id.clone(),
                answer: outcome.text.trim().to_string(),
            },
            (None, None) => RelayInput::TurnFailed("the session reported no id".to_string()),
            (Some(e), _) => {
                let message = crate::io::telegram::redact(&e.message(), &self.settings.token);
                tracing::warn!(prompt = %first_words(&prompt), error = %message, "PRD relay turn failed");
                RelayInput::TurnFailed(message)
            }
        };
        ctx.notify(TurnEnded(input));
    }

    /// The turn's own cost, in the home's ledger as step `create-prd`.
    fn record_cost(&mut self, outcome: &crate::core::session_outcome::SessionOutcome) {
        let Some(home) = self.settings.ledger_home.clone() else {
            return;
        };
        let cost = self
            .costs
            .call_cost(outcome.session_id.as_deref(), outcome.cost_usd);
        let at = crate::io::clock::now_rfc3339();
        let entry = crate::core::ledger::LedgerEntry {
            day: at.get(..10).unwrap_or_default().to_string(),
            at,
            project: self.settings.prefix.clone(),
            project_dir: self.settings.project_dir.display().to_string(),
            model: outcome.model.clone(),
            cost_usd: cost.unwrap_or(0.0),
            cost_known: cost.is_some(),
            step: "create-prd".to_string(),
            phase: None,
            session_id: outcome.session_id.clone(),
            num_turns: outcome.num_turns,
        };
        actix_rt::spawn(async move {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = crate::io::ledger_file::append(&home, &[entry]) {
                    tracing::warn!("{e}");
                }
            })
            .await;
        });
    }
}

fn first_words(prompt: &str) -> String {
    prompt.chars().take(40).collect()
}

impl Actor for PrdRelayActor {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        // A relay lives as long as its run: a mark a killed run left is not a relay.
        self.publish_open();
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let _ = self.cancel.send(true);
        let _ = crate::io::prd_relay_file::mark_closed(&self.settings.project_dir);
    }
}

impl Handler<RelaySignal> for PrdRelayActor {
    type Result = ();

    fn handle(&mut self, msg: RelaySignal, ctx: &mut Context<Self>) {
        let input = match msg.action {
            ControlAction::PrdStart => {
                let state =
                    crate::io::state_file::read(&self.settings.project_dir).map(|s| s.state);
                RelayInput::Start {
                    step_running: state.is_some_and(crate::core::prd_relay::step_running),
                }
            }
            ControlAction::PrdEnd => RelayInput::End,
            ControlAction::PrdText => match msg.text {
                Some(text) if !text.trim().is_empty() => RelayInput::Text(text),
                _ => {
                    tracing::info!("PRD relay: a prd_text signal without text, ignored");
                    return;
                }
            },
            other => {
                tracing::warn!(action = %other, "PRD relay: not a relay action, ignored");
                return;
            }
        };
        self.feed(input, ctx);
    }
}

impl Handler<IsRelayOpen> for PrdRelayActor {
    type Result = bool;

    fn handle(&mut self, _: IsRelayOpen, _: &mut Context<Self>) -> bool {
        self.relay.is_open()
    }
}

impl Handler<TurnEnded> for PrdRelayActor {
    type Result = ();

    fn handle(&mut self, msg: TurnEnded, ctx: &mut Context<Self>) {
        self.feed(msg.0, ctx);
    }
}
