//! Running a step's agent sessions: the cost cap, the home's usage record and the session
//! budget checked before every session, outages, usage limits and a lost login waited out
//! (the same step runs again, uncounted), a session that used its turn budget up retried
//! once with a larger one, and every session recorded in the manifest and the ledger.

use super::loop_run::LoopRun;
use super::*;
use crate::core::failure::{self, ErrorClass};
use crate::core::stream::SessionError;
use crate::core::waits::{self, Outage, OutageDecision};

impl LoopRun {
    /// Runs the pairing of a step until it ends in something other than an outage or a
    /// usage limit. `Err` stops the run (shutdown during a wait, the session budget, an
    /// outage longer than the policy allows, a manifest write that failed).
    pub(super) async fn pairing(
        &mut self,
        phase: Option<u32>,
        label: &str,
        prompts: &[String],
    ) -> Result<PairingOutcome, StopReason> {
        let mut bigger = false;
        loop {
            if let Some(stop) = self.record_failed() {
                return Err(stop);
            }
            self.hold_at_cost_cap(phase).await?;
            self.hold_for_home(phase).await?;
            if let Some(n) = phase {
                let used = self.sessions_by_phase.get(&n).copied().unwrap_or(0);
                let max = self.settings.max_sessions_per_phase;
                if failure::session_budget_exhausted(used, 1, max) {
                    let last = self.last_failure.get(&n);
                    let why = failure::session_budget_why(
                        n,
                        max,
                        last.map(|(c, d)| (c.as_str(), d.as_str())),
                    )
                    .unwrap_or_default();
                    let command = last.map_or(label.to_string(), |(c, _)| c.clone());
                    self.escalate(
                        n,
                        &command,
                        Category::PartialExecution,
                        &why,
                        "Stopped — session budget of the phase used up",
                    )
                    .await;
                    return Err(StopReason::NeedsHuman { why });
                }
            }
            let turns = self.turn_budgets(phase, prompts, bigger).await;
            let out = self.pairing_once(phase, label, prompts, &turns).await;
            self.after_pairing(&out, phase, label).await;
            let class = out.last.error.as_ref().map(failure::classify_error);
            let login = matches!(out.last.error, Some(SessionError::NotLoggedIn { .. }));
            let turn_capped = matches!(
                out.last.error,
                Some(SessionError::TurnBudgetExhausted { .. })
            );
            if let Some(n) = phase {
                // A pairing is one agent session: its commands share one conversation
                // (`--resume`). One that met an outage, a usage limit or a lost login is
                // not counted: the outage has its own limit (PIV_OUTAGE_MAX_SECS).
                let uncounted = login
                    || matches!(
                        class,
                        Some(ErrorClass::Outage | ErrorClass::UsageLimit { .. })
                    );
                let counted = u32::from(!uncounted);
                *self.sessions_by_phase.entry(n).or_insert(0) += counted;
            }
            if login {
                self.end_outage();
                let e = out.last.error.clone().unwrap_or(SessionError::NoResult);
                self.pause_for_login(phase, label, &e).await?;
                continue;
            }
            if turn_capped && !bigger {
                bigger = true;
                let e = out
                    .last
                    .error
                    .as_ref()
                    .map(|e| e.message())
                    .unwrap_or_default();
                self.emit(RunEvent::Info(format!(
                    "🔁 {label}: turn budget exhausted — retrying once with a larger budget ({e})"
                )));
                continue;
            }
            match class {
                Some(ErrorClass::Outage) => {
                    let detail = out
                        .last
                        .error
                        .as_ref()
                        .map(|e| e.message())
                        .unwrap_or_default();
                    self.wait_out_outage(phase, label, &detail).await?;
                }
                Some(ErrorClass::UsageLimit { resets_at }) => {
                    self.end_outage();
                    // With a shared home the limit is in the usage record now and the
                    // check before the next session holds (in resume order).
                    if self.settings.home.is_none() {
                        self.wait_for_limit_reset(resets_at).await?;
                    }
                }
                _ => {
                    self.end_outage();
                    self.limit_hits = 0;
                    return Ok(out);
                }
            }
        }
    }

    /// The cost cap is checked before every session: reaching it pauses the run (a
    /// resume lifts it for another cap's worth) until a resume or a shutdown.
    async fn hold_at_cost_cap(&mut self, phase: Option<u32>) -> Result<(), StopReason> {
        let (spent, baseline) = {
            let c = self.cost.borrow();
            (c.spent, c.baseline)
        };
        if failure::cost_cap_reached(spent, baseline, self.settings.max_cost_usd) {
            let cap = self.settings.max_cost_usd.unwrap_or_default();
            let why = format!(
                "cost cap reached: ${spent:.2} spent this run (PIV_MAX_COST_USD={cap}); send resume to continue"
            );
            self.emit(RunEvent::NeedsHuman {
                phase: phase.or(self.published.borrow().state.phase),
                category: "cost_cap".into(),
                details: why.clone(),
                action: "Paused — resume to continue".into(),
            });
            self.publish(|s| s.why = Some(why));
            let _ = self.control_tx.send(Control::Paused {
                by: "cost cap".into(),
            });
        }
        match self.honour_controls().await {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// One session of an outage ended: say so at its start, wait (capped, doubling), or
    /// stop for a human once it has lasted longer than the policy allows.
    async fn wait_out_outage(
        &mut self,
        phase: Option<u32>,
        label: &str,
        detail: &str,
    ) -> Result<(), StopReason> {
        let now = chrono::Utc::now().timestamp();
        let first = self.outage.is_none();
        let outage = *self.outage.get_or_insert(Outage {
            started_at: now,
            waits: 0,
        });
        match waits::outage_decision(&self.settings.outage, &outage, now) {
            OutageDecision::GiveUp { for_secs } => {
                let why = format!(
                    "the Claude API has been unreachable or overloaded for {for_secs}s (PIV_OUTAGE_MAX_SECS={}): {detail}",
                    self.settings.outage.max_secs
                );
                self.emit(RunEvent::NeedsHuman {
                    phase,
                    category: "api_outage".into(),
                    details: why.clone(),
                    action: "Stopped — run piv again once the API answers".into(),
                });
                Err(StopReason::NeedsHuman { why })
            }
            OutageDecision::Wait { secs } => {
                if first {
                    self.emit(RunEvent::OutageStarted {
                        phase,
                        step: label.to_string(),
                        detail: detail.to_string(),
                        retry_in_secs: secs,
                    });
                }
                tracing::warn!(secs, "API outage: waiting before running {label} again");
                if let Some(o) = self.outage.as_mut() {
                    o.waits += 1;
                }
                self.publish(|s| {
                    s.why = Some(format!(
                        "Claude API unreachable — retrying {label} in {secs}s"
                    ))
                });
                self.wait_or_stop(Duration::from_secs(secs)).await
            }
        }
    }

    /// Closes an outage (if one was open) and says it is over.
    fn end_outage(&mut self) {
        if let Some(o) = self.outage.take() {
            let lasted = (chrono::Utc::now().timestamp() - o.started_at).max(0) as u64;
            self.emit(RunEvent::OutageEnded {
                lasted_secs: lasted,
            });
            self.publish(|s| s.why = None);
        }
    }

    /// A usage limit in any step: wait for the reset (or the doubling minimum when the
    /// reset time is missing or past), then the same step runs again.
    async fn wait_for_limit_reset(&mut self, resets_at: Option<i64>) -> Result<(), StopReason> {
        let now = chrono::Utc::now().timestamp();
        let secs = waits::limit_wait_secs(&self.settings.limit, resets_at, now, self.limit_hits);
        self.limit_hits += 1;
        let until = now + secs as i64;
        let when = chrono::DateTime::from_timestamp(until, 0)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| until.to_string());
        self.emit(RunEvent::UsageLimitWait { resets_at: when });
        self.publish(|s| s.why = Some("usage limit reached — waiting for reset".into()));
        let waited = self.wait_or_stop(Duration::from_secs(secs)).await;
        self.publish(|s| s.why = None);
        waited
    }

    /// Sleeps, unless a shutdown comes first.
    pub(super) async fn wait_or_stop(&mut self, wait: Duration) -> Result<(), StopReason> {
        let mut cancel = self.cancel.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.wait_for(|c| *c) => {}
        }
        match self.stopping() {
            Some(by) => Err(StopReason::Requested { by }),
            None => Ok(()),
        }
    }

    /// Runs one pairing and records its sessions; emits the step start and end.
    async fn pairing_once(
        &mut self,
        phase: Option<u32>,
        label: &str,
        prompts: &[String],
        turns: &[u32],
    ) -> PairingOutcome {
        // A pause asked for earlier in this step still waits for the step's end.
        let state = if self.pause_pending() {
            RunState::Pausing
        } else {
            RunState::Running
        };
        self.publish(|s| {
            s.state = state;
            s.phase = phase.or(s.phase);
            s.step = Some(label.to_string());
            s.step_started_at = Some(now_rfc3339());
        });
        self.emit(RunEvent::StepStarted {
            phase,
            step: label.to_string(),
            // The command's budget (the last prompt's; a `/prime` before it has its own).
            max_turns: turns.last().copied(),
        });
        let started = Instant::now();
        let outcome =
            agent::run_pairing_budgeted(&self.settings.agent, prompts, turns, self.cancel.clone())
                .await;
        let cost = {
            let mut cost = self.cost.borrow_mut();
            cost.spent += outcome.cost_usd;
            cost.unknown_sessions += outcome
                .sessions
                .iter()
                .filter(|s| s.cost_usd.is_none())
                .count() as u32;
            cost.spent
        };
        self.last_stderr_tail = outcome.last.stderr_tail.clone();
        self.publish(|s| {
            s.cost_usd = cost;
            s.step_started_at = None;
        });
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
}
