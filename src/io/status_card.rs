//! The live status card of one project (issue 14): one message per phase, edited in place
//! as the running step goes on (phase, step, elapsed time, turns, tool calls, files, cost
//! so far, the last tool actions). What it says is `core::progress::card_text`; when it may
//! be edited is `core::progress::edit_due` (at most once per 3 s, identical text never
//! sent). The notifier's sender task asks it for the next job and reports back, so no
//! borrow is held across a send.

use std::time::{Duration, Instant};

use crate::core::events::RunEvent;
use crate::core::progress::{card_text, edit_due, CardHeader, StepProgress};

/// At most one edit of a card per this long.
pub const CARD_EDIT_INTERVAL: Duration = Duration::from_secs(3);

/// What the sender task should do for the card now.
#[derive(Debug, Clone, PartialEq)]
pub enum CardJob {
    /// Send the card as a new message (the phase's first, or after a failed edit).
    Send { generation: u64, html: String },
    /// Edit the card's message.
    Edit {
        generation: u64,
        message_id: i64,
        html: String,
    },
}

/// The card's state (see the module docs).
#[derive(Debug)]
pub struct StatusCard {
    /// Bumped for every new card (a new phase): a job for an older card is stale.
    generation: u64,
    phase: Option<u32>,
    step: Option<String>,
    step_done: bool,
    step_started: Option<Instant>,
    step_elapsed: Option<Duration>,
    cost_usd: f64,
    progress: StepProgress,
    message_id: Option<i64>,
    last_text: Option<String>,
    last_edit: Option<Instant>,
    dirty: bool,
    epoch: Instant,
}

impl StatusCard {
    pub fn new(now: Instant) -> Self {
        Self {
            generation: 0,
            phase: None,
            step: None,
            step_done: false,
            step_started: None,
            step_elapsed: None,
            cost_usd: 0.0,
            progress: StepProgress::default(),
            message_id: None,
            last_text: None,
            last_edit: None,
            dirty: false,
            epoch: now,
        }
    }

    fn new_card(&mut self) {
        self.generation += 1;
        self.message_id = None;
        self.last_text = None;
        self.last_edit = None;
    }

    /// Takes in a run event.
    pub fn on_event(&mut self, event: &RunEvent, now: Instant) {
        match event {
            RunEvent::PhaseStarted { phase, .. } => {
                if self.phase != Some(*phase) || self.message_id.is_some() {
                    self.new_card();
                }
                self.phase = Some(*phase);
            }
            RunEvent::StepStarted { phase, step, .. } => {
                if *phase != self.phase {
                    self.new_card();
                    self.phase = *phase;
                }
                self.step = Some(step.clone());
                self.step_done = false;
                self.step_started = Some(now);
                self.step_elapsed = None;
                self.progress = StepProgress::default();
                self.dirty = true;
            }
            RunEvent::Activity { tools } if self.step.is_some() => {
                self.progress.record_message(tools);
                self.dirty = true;
            }
            RunEvent::StepEnded {
                cost_usd, elapsed, ..
            } => {
                self.cost_usd += cost_usd;
                self.step_done = true;
                self.step_elapsed = Some(*elapsed);
                self.dirty = true;
            }
            _ => {}
        }
    }

    fn text(&self, now: Instant) -> Option<String> {
        let step = self.step.as_ref()?;
        let elapsed = self.step_elapsed.unwrap_or_else(|| {
            self.step_started
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
        });
        let header = CardHeader {
            phase: self.phase,
            step: if self.step_done {
                format!("{step} ✔")
            } else {
                step.clone()
            },
            elapsed,
            cost_usd: Some(self.cost_usd),
        };
        Some(card_text(&header, &self.progress))
    }

    /// How long until the card should be sent or edited (zero: now); `None`: nothing new.
    pub fn due_in(&mut self, now: Instant) -> Option<Duration> {
        if !self.dirty {
            return None;
        }
        let Some(text) = self.text(now) else {
            self.dirty = false;
            return None;
        };
        let since = |at: Instant| at.saturating_duration_since(self.epoch);
        if edit_due(
            self.last_text.as_deref(),
            &text,
            self.last_edit.map(since),
            since(now),
            CARD_EDIT_INTERVAL,
        ) {
            return Some(Duration::ZERO);
        }
        if self.last_text.as_deref() == Some(text.as_str()) {
            self.dirty = false;
            return None;
        }
        let last = self.last_edit.unwrap_or(now);
        Some(CARD_EDIT_INTERVAL.saturating_sub(now.saturating_duration_since(last)))
    }

    /// The job to do now, if one is due; `tag` is put before the text (empty inside the
    /// project's own topic).
    pub fn next_job(&mut self, now: Instant, tag: &str) -> Option<CardJob> {
        if self.due_in(now)? != Duration::ZERO {
            return None;
        }
        let text = self.text(now)?;
        self.dirty = false;
        self.last_text = Some(text.clone());
        self.last_edit = Some(now);
        let html = format!("{tag}{text}");
        let generation = self.generation;
        Some(match self.message_id {
            None => CardJob::Send { generation, html },
            Some(message_id) => CardJob::Edit {
                generation,
                message_id,
                html,
            },
        })
    }

    /// A card sent as message `message_id` (Telegram answered at `now`).
    pub fn sent(&mut self, generation: u64, message_id: i64, now: Instant) {
        if generation == self.generation {
            self.message_id = Some(message_id);
            self.last_edit = Some(now);
        }
    }

    /// An edit Telegram accepted at `now`: the next one waits the interval from here, so
    /// two edits are spaced by it as Telegram sees them too.
    pub fn edited(&mut self, generation: u64, now: Instant) {
        if generation == self.generation {
            self.last_edit = Some(now);
        }
    }

    /// A send or edit failed: the next attempt (after the interval) sends a fresh message.
    pub fn failed(&mut self, generation: u64) {
        if generation == self.generation {
            self.message_id = None;
            self.last_text = None;
            self.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::progress::ToolUse;
    use serde_json::json;

    fn step(phase: u32, name: &str) -> RunEvent {
        RunEvent::StepStarted {
            phase: Some(phase),
            step: name.into(),
            max_turns: None,
        }
    }

    fn read(path: &str) -> RunEvent {
        RunEvent::Activity {
            tools: vec![ToolUse {
                name: "Read".into(),
                input: json!({"file_path": path}),
            }],
        }
    }

    #[test]
    fn one_card_per_phase_edited_at_most_every_three_seconds() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut card = StatusCard::new(t0);
        assert_eq!(card.next_job(at(0), ""), None, "nothing to show yet");
        card.on_event(&step(1, "plan-feature"), at(0));
        let Some(CardJob::Send { generation, html }) = card.next_job(at(0), "[p] ") else {
            panic!("the first card is a new message")
        };
        assert!(
            html.starts_with("[p] 📊 <b>Phase 1 — plan-feature</b>"),
            "{html}"
        );
        card.sent(generation, 41, at(0));
        card.on_event(&read("src/a.rs"), at(1));
        // Within 3 s of the send: not yet, and it says when.
        assert_eq!(card.next_job(at(1), ""), None);
        assert_eq!(card.due_in(at(1)), Some(Duration::from_secs(2)));
        let Some(CardJob::Edit {
            message_id, html, ..
        }) = card.next_job(at(3), "")
        else {
            panic!("an edit once 3 s passed")
        };
        assert_eq!(message_id, 41);
        assert!(html.contains("Read src/a.rs"), "{html}");
        // Nothing new: nothing to do.
        assert_eq!(card.due_in(at(10)), None);
        // A new phase: a new card.
        card.on_event(&step(2, "plan-feature"), at(11));
        assert!(matches!(
            card.next_job(at(11), ""),
            Some(CardJob::Send { .. })
        ));
    }

    #[test]
    fn a_failed_edit_is_replaced_by_a_fresh_message_and_stale_answers_are_ignored() {
        let t0 = Instant::now();
        let mut card = StatusCard::new(t0);
        card.on_event(&step(1, "execute"), t0);
        let Some(CardJob::Send { generation, .. }) = card.next_job(t0, "") else {
            panic!()
        };
        card.sent(generation, 7, t0);
        card.on_event(&read("x"), t0);
        let later = t0 + Duration::from_secs(4);
        assert!(matches!(
            card.next_job(later, ""),
            Some(CardJob::Edit { message_id: 7, .. })
        ));
        card.failed(generation);
        let again = later + Duration::from_secs(3);
        assert!(matches!(
            card.next_job(again, ""),
            Some(CardJob::Send { .. })
        ));
        // An answer for an older card changes nothing.
        card.on_event(&step(2, "execute"), again);
        card.sent(generation, 99, again);
        assert!(matches!(
            card.next_job(again, ""),
            Some(CardJob::Send { .. })
        ));
    }
}
