//! The shared subscription, as the loop applies it: before every agent session the usage
//! record of `$PIV_HOME` is checked (a usage limit to wait out in resume order, parking, an
//! overage stop — or, when its "Wait for the reset" button took it, a wait for the reset —
//! the daily cap; a usage-limit wait is recorded as this instance's open escalation, for
//! its Pause on the shared message); after every session its cost goes to the ledger and what
//! it said about the subscription goes to the record. Also the turn budget of each
//! command and the pause for a login that stopped working.

use super::loop_run::{blocking, LoopRun};
use super::*;
use crate::core::buttons::ButtonAction;
use crate::core::ledger::LedgerEntry;
use crate::core::rate_limit::RateLimitInfo;
use crate::core::stream::SessionError;
use crate::core::turn_budget::{self, BudgetInput};
use crate::core::usage::{self, Gate, Local, Member};
use crate::core::waits;
use crate::io::escalation_file;
use crate::io::ledger_file;
use crate::io::usage_store::UsageStore;

/// The longest single sleep of a held instance: the record is re-read after it (a new
/// limit, an instance that left the queue).
const RECHECK: Duration = Duration::from_secs(5);

/// `HH:MM` (UTC) of a unix time, for messages and the status.
pub(super) fn hhmm(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%H:%M UTC").to_string())
        .unwrap_or_else(|| t.to_string())
}

fn day_of(t: i64) -> (i64, String) {
    let day = t.div_euclid(86_400);
    let text = chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    (day, text)
}

/// What the record and the ledger say before a session (read off the actor thread).
struct Check {
    gate: Gate,
    /// The escalation id of the usage limit in force (`usage::limit_escalation`).
    limit_escalation: Option<u64>,
    /// This instance is the one to send the daily-cap message.
    announce_cap: bool,
}

impl LoopRun {
    fn usage_store(&self) -> Option<UsageStore> {
        self.settings.home.as_deref().map(UsageStore::new)
    }

    fn me(&self) -> Member {
        Member {
            pid: std::process::id(),
            priority: self.settings.usage.priority,
            started_at: self.settings.started_at.clone(),
        }
    }

    /// Holds before a session while the home's usage record says so: waits out a usage
    /// limit (in resume order) or a parking, pauses for an overage or the daily cap until a
    /// resume. `Err` when a shutdown comes meanwhile.
    pub(super) async fn hold_for_home(&mut self, phase: Option<u32>) -> Result<(), StopReason> {
        let Some(store) = self.usage_store() else {
            return Ok(());
        };
        let home = self.settings.home.clone().unwrap_or_default();
        let mut waiting = false;
        // The usage-limit wait recorded as this instance's open escalation (its Pause on
        // the shared message acts while it is open).
        let mut open_wait: Option<u64> = None;
        let held = self
            .hold_loop(&store, &home, phase, &mut waiting, &mut open_wait)
            .await;
        if let Some(id) = open_wait {
            self.settle_wait_escalation(id).await;
        }
        held
    }

    /// [`Self::hold_for_home`]'s checks and waits.
    async fn hold_loop(
        &mut self,
        store: &UsageStore,
        home: &std::path::Path,
        phase: Option<u32>,
        waiting: &mut bool,
        open_wait: &mut Option<u64>,
    ) -> Result<(), StopReason> {
        loop {
            let now = chrono::Utc::now().timestamp();
            let (today, day) = day_of(now);
            let spent_today = if self.settings.usage.max_cost_per_day_usd.is_some() {
                let (home, day) = (home.to_path_buf(), day.clone());
                tokio::task::spawn_blocking(move || {
                    ledger_file::read_months(&home, &[day[..7.min(day.len())].to_string()])
                        .map(|(e, _)| crate::core::ledger::spent_on(&e, &day))
                        .unwrap_or(0.0)
                })
                .await
                .unwrap_or(0.0)
            } else {
                0.0
            };
            let local = Local {
                spent_today,
                today,
                ..self.usage_local
            };
            let (prefix, me, policy) = (
                self.settings.prefix.clone(),
                self.me(),
                self.settings.usage.clone(),
            );
            let store2 = store.clone();
            let checked = tokio::task::spawn_blocking(move || {
                store2.update(|r| {
                    r.members.insert(prefix.clone(), me);
                    let gate = usage::gate(r, &prefix, &policy, &local, now);
                    let announce_cap =
                        matches!(gate, Gate::DailyCap { .. }) && usage::announce_cap(r, &day);
                    // The limit's escalation, while this instance waits for that limit.
                    let limit_escalation = r
                        .limit
                        .as_ref()
                        .filter(|l| {
                            matches!(gate, Gate::WaitForReset { resets_at, .. } if resets_at == l.resets_at)
                        })
                        .map(usage::limit_escalation);
                    Check {
                        gate,
                        announce_cap,
                        limit_escalation,
                    }
                })
            })
            .await;
            let check = match checked {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!("cannot check the usage record: {e}; going on");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!("usage record check failed: {e}; going on");
                    return Ok(());
                }
            };
            let line = usage::waiting_line(&check.gate, hhmm);
            match check.gate {
                Gate::Go => {
                    if *waiting {
                        self.publish(|s| s.why = None);
                        self.emit(RunEvent::Info(
                            "▶️ Usage reset reached — this project's turn to resume".into(),
                        ));
                    }
                    return Ok(());
                }
                Gate::WaitForReset { until, .. } | Gate::Parked { until, .. } => {
                    if let (Gate::WaitForReset { .. }, Some(id)) =
                        (&check.gate, check.limit_escalation)
                    {
                        if *open_wait != Some(id) {
                            self.open_wait_escalation(id).await;
                            *open_wait = Some(id);
                        }
                    }
                    if !*waiting {
                        tracing::info!("holding before the next session: {line:?}");
                        if matches!(check.gate, Gate::Parked { .. }) {
                            self.emit(RunEvent::Info(format!(
                                "🅿️ {}",
                                line.clone().unwrap_or_default()
                            )));
                        }
                    }
                    *waiting = true;
                    self.publish(|s| s.why = line);
                    let left = Duration::from_secs((until - now).max(0) as u64);
                    self.wait_or_stop(left.min(RECHECK).max(Duration::from_millis(200)))
                        .await?;
                    // A pause taken while waiting (a Pause button on the shared limit
                    // message, /pause) holds here, past the reset, until a resume.
                    if *self.control.borrow() != Control::Run {
                        if let Some(stop) = self.honour_controls().await {
                            return Err(stop);
                        }
                    }
                }
                Gate::OverageStop { .. } | Gate::DailyCap { .. } => {
                    let why = line.unwrap_or_default();
                    let category = match check.gate {
                        Gate::DailyCap { .. } => "daily_cost_cap",
                        _ => "overage",
                    };
                    // One message for the daily cap across the home; an overage is said by
                    // each instance it stops (it is the instance's own decision to go on).
                    if category == "overage" || check.announce_cap {
                        self.emit(RunEvent::NeedsHuman {
                            phase: phase.or(self.published.borrow().state.phase),
                            category: category.into(),
                            details: why.clone(),
                            action:
                                "Paused — /resume (or `piv signal <prefix> resume`) to continue"
                                    .into(),
                        });
                    }
                    self.publish(|s| s.why = Some(why));
                    let _ = self.control_tx.send(Control::Paused {
                        by: category.replace('_', " "),
                    });
                    if let Some(stop) = self.honour_controls().await {
                        return Err(stop);
                    }
                    let now = chrono::Utc::now().timestamp();
                    if let Gate::OverageStop { since, resets_at } = check.gate {
                        if self.chose_to_wait().await {
                            // "Wait for the reset": no extra usage; the next check holds
                            // as a usage-limit wait (`usage::gate`) and goes on by itself.
                            self.usage_local.waits_out_overage = Some(since);
                            self.emit(RunEvent::Info(match resets_at {
                                Some(r) => format!(
                                    "⏳ No extra usage: waiting for the subscription's reset at {}",
                                    hhmm(r)
                                ),
                                // Nothing to wait for: the stop (and its message) again.
                                None => {
                                    "⏳ The subscription's reset time is not known: staying paused"
                                        .into()
                                }
                            }));
                            continue;
                        }
                    }
                    self.usage_local.resumed_at = Some(now);
                    if category == "daily_cost_cap" {
                        self.usage_local.cap_lifted_day = Some(day_of(now).0);
                    }
                }
            }
        }
    }

    /// Records the usage-limit wait `id` as this instance's open escalation (its own file
    /// only; with Telegram), so that its Pause on the shared message is checked and claimed
    /// like any escalation's button.
    async fn open_wait_escalation(&self, id: u64) {
        if !self.settings.chat_buttons {
            return;
        }
        let path = escalation_file::path_in_project(&self.settings.project_dir);
        let record = escalation_file::OpenEscalation {
            id,
            checkpoint: None,
            buttons: vec![ButtonAction::Pause.code().to_string()],
        };
        match tokio::task::spawn_blocking(move || escalation_file::record_open(&path, &record))
            .await
        {
            Ok(Ok(())) => tracing::info!(escalation = id, "waiting for the usage reset"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the usage-limit wait"),
            Err(e) => tracing::warn!(error = %e, "cannot record the usage-limit wait"),
        }
    }

    /// Whether the resume that lifted the overage stop came from its "Wait for the reset"
    /// button (the choice its claim left in this instance's escalation file).
    async fn chose_to_wait(&self) -> bool {
        if !self.settings.chat_buttons {
            return false;
        }
        let path = escalation_file::path_in_project(&self.settings.project_dir);
        match tokio::task::spawn_blocking(move || escalation_file::take_choice(&path)).await {
            Ok(Ok(chosen)) => chosen.as_deref() == Some(ButtonAction::WaitForReset.code()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the overage stop's choice");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the overage stop's choice");
                false
            }
        }
    }

    /// The wait is over (resumed, or stopped): its escalation closes, so a later tap on
    /// its Pause gets the stale alert.
    async fn settle_wait_escalation(&self, id: u64) {
        if !self.settings.chat_buttons {
            return;
        }
        let path = escalation_file::path_in_project(&self.settings.project_dir);
        match tokio::task::spawn_blocking(move || escalation_file::settle(&path, id)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot close the usage-limit wait"),
            Err(e) => tracing::warn!(error = %e, "cannot close the usage-limit wait"),
        }
    }

    /// After a pairing: its sessions' costs to the ledger; what it said about the
    /// subscription (a limit, a nearly full window, extra usage) to the usage record, with
    /// the one chat message when this instance is the first to know.
    pub(super) async fn after_pairing(
        &mut self,
        out: &PairingOutcome,
        phase: Option<u32>,
        label: &str,
    ) {
        let Some(store) = self.usage_store() else {
            return;
        };
        let home = self.settings.home.clone().unwrap_or_default();
        let now = chrono::Utc::now().timestamp();
        let at = now_rfc3339();
        let day = day_of(now).1;
        let entries: Vec<LedgerEntry> = out
            .sessions
            .iter()
            .map(|s| LedgerEntry {
                at: at.clone(),
                day: day.clone(),
                project: self.settings.prefix.clone(),
                project_dir: self.settings.project_dir.display().to_string(),
                model: s.model.clone(),
                cost_usd: s.cost_usd.unwrap_or(0.0),
                cost_known: s.cost_usd.is_some(),
                step: label.to_string(),
                phase,
                session_id: s.session_id.clone(),
                num_turns: s.num_turns,
            })
            .collect();
        let limit = match out.last.error {
            Some(SessionError::UsageLimit { resets_at }) => {
                let secs =
                    waits::limit_wait_secs(&self.settings.limit, resets_at, now, self.limit_hits);
                self.limit_hits += 1;
                Some(now + secs as i64)
            }
            _ => None,
        };
        let info: Option<RateLimitInfo> = out.rate_limit.clone();
        let overage = out.used_overage;
        let (prefix, me, policy) = (
            self.settings.prefix.clone(),
            self.me(),
            self.settings.usage.clone(),
        );
        let done = tokio::task::spawn_blocking(move || {
            if let Err(e) = ledger_file::append(&home, &entries) {
                tracing::warn!("{e}");
            }
            store.update(|r| {
                r.members.insert(prefix.clone(), me);
                let mut news = Vec::new();
                if let Some(resets_at) = limit {
                    let window = info.as_ref().and_then(|i| i.window.clone());
                    if usage::record_limit(r, &prefix, window, resets_at, now) {
                        let escalation = r.limit.as_ref().map_or(0, usage::limit_escalation);
                        let waiting = usage::limit_waiting(r);
                        news.extend(
                            usage::limit_message(r, policy.stagger_secs, hhmm)
                                .map(|text| (text, escalation, waiting)),
                        );
                    }
                } else if overage {
                    let resets_at = info.as_ref().and_then(|i| i.resets_at);
                    usage::record_overage(r, &prefix, resets_at, now);
                } else if let Some(i) = &info {
                    usage::record_rate_info(r, i, policy.park_at_utilization, now);
                }
                news
            })
        })
        .await;
        match done {
            Ok(Ok(news)) => {
                for (text, escalation, waiting) in news {
                    self.emit(RunEvent::UsageLimitShared {
                        text,
                        escalation,
                        waiting,
                    });
                }
            }
            Ok(Err(e)) => tracing::warn!("cannot record in the usage record: {e}"),
            Err(e) => tracing::warn!("usage record update failed: {e}"),
        }
        if overage && !self.settings.usage.allow_overage {
            tracing::warn!("{label}: the session was paid from extra usage");
        }
    }

    /// Claude Code is not logged in (or its credentials were rejected): record it, say
    /// how to fix it, and pause — staying up — until a resume; then the step runs again.
    pub(super) async fn pause_for_login(
        &mut self,
        phase: Option<u32>,
        label: &str,
        e: &SessionError,
    ) -> Result<(), StopReason> {
        let why = format!(
            "{} Fix: run `claude setup-token` and set CLAUDE_CODE_OAUTH_TOKEN in the environment or the project's .env (then restart piv to pick it up), or run `claude` and /login on this machine; then /resume (or `piv signal {} resume`) retries {label}.",
            e.message(),
            self.settings.prefix
        );
        self.escalate(
            phase.unwrap_or(0),
            label,
            Category::IntegrationAuth,
            &why,
            "Paused — log in, then /resume to retry the step",
        )
        .await;
        self.publish(|s| s.why = Some(format!("not logged in: {}", e.message())));
        let _ = self.control_tx.send(Control::Paused { by: "login".into() });
        match self.honour_controls().await {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// The `--max-turns` of each prompt of a pairing: `PIV_MAX_TURNS` when given, else the
    /// command's budget (× 2 for the one retry after a session used its budget up).
    pub(super) async fn turn_budgets(
        &self,
        phase: Option<u32>,
        prompts: &[String],
        bigger: bool,
    ) -> Vec<u32> {
        if !self.settings.turn_budgets {
            let t = self.settings.agent.max_turns;
            return prompts
                .iter()
                .map(|_| {
                    if bigger {
                        turn_budget::retry_budget(t)
                    } else {
                        t
                    }
                })
                .collect();
        }
        let mut out = Vec::new();
        for prompt in prompts {
            let input = self.budget_input(phase, prompt).await;
            let budget = turn_budget::turn_budget(&input);
            tracing::info!(
                "Budget: {} turns ({}) for {}",
                budget.turns,
                budget.reasoning,
                prompt.split_whitespace().next().unwrap_or("")
            );
            out.push(if bigger {
                turn_budget::retry_budget(budget.turns)
            } else {
                budget.turns
            });
        }
        out
    }

    async fn budget_input(&self, phase: Option<u32>, prompt: &str) -> BudgetInput {
        let dir = self.settings.project_dir.clone();
        let mut words = prompt.split_whitespace();
        match words.next().unwrap_or("") {
            "/prime" => BudgetInput::Prime,
            "/plan-feature" => BudgetInput::Plan,
            "/research-stack" => BudgetInput::Research,
            "/preflight" => BudgetInput::Preflight,
            "/execute" => {
                let tasks = words
                    .next()
                    .and_then(|p| std::fs::read_to_string(dir.join(p)).ok())
                    .map_or(0, |t| turn_budget::count_plan_tasks(&t));
                let view = self.read_manifest().await.ok().and_then(|m| m.view().ok());
                let prior_stats = match (phase, &view) {
                    (Some(n), Some(v)) if n > 1 => {
                        v.executions.iter().any(|e| e.phase == Some(n - 1))
                    }
                    _ => false,
                };
                BudgetInput::Execute { tasks, prior_stats }
            }
            "/validate-implementation" => {
                let files = blocking(move || git::source_file_count(&dir))
                    .await
                    .unwrap_or(0);
                let view = self.read_manifest().await.ok().and_then(|m| m.view().ok());
                let scenarios = view.and_then(|v| {
                    v.validations
                        .iter()
                        .find(|e| e.phase == phase && phase.is_some())
                        .map(|e| {
                            (e.scenarios_passed.unwrap_or(0)
                                + e.scenarios_failed.unwrap_or(0)
                                + e.scenarios_skipped.unwrap_or(0))
                                as u32
                        })
                });
                BudgetInput::Validate { files, scenarios }
            }
            "/commit" => BudgetInput::Commit {
                staged: blocking(move || git::changed_file_count(&dir))
                    .await
                    .unwrap_or(0),
            },
            _ => BudgetInput::Other,
        }
    }
}
