//! The PRD conversation relayed through the chat (`/create_prd`, free text, `/end_prd`;
//! behaviour.md §9.1): one relay at a time per project, its texts, and what each input
//! asks the instance to do. The first message starts a Claude session running
//! `/create-prd`; every later one resumes it (`--resume`), in the order they arrived —
//! a message that arrives while Claude is still answering waits its turn.

use std::collections::VecDeque;

use crate::core::status::RunState;

pub const STARTED: &str = "📝 PRD creation started. Send your messages and I'll relay them to Claude.\n\nSend /end_prd when finished.";
pub const ALREADY_OPEN: &str = "⚠️ PRD session already in progress. Send /end_prd to stop it.";
pub const NOT_OPEN: &str = "⚠️ No active PRD session.";
pub const ENDED: &str = "✅ PRD session ended.";
pub const RELAYING: &str = "⏳ Relaying to Claude...";
/// Piv runs one agent at a time in a project: a relay does not start beside a running step.
pub const STEP_RUNNING: &str =
    "⚠️ A step is running in this project. Send /pause and wait for it to stop, then /create_prd.";

/// What comes in for the relay of one project.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayInput {
    Start {
        step_running: bool,
    },
    End,
    Text(String),
    /// A Claude turn ended with its answer; `session_id` is the session to resume next.
    TurnDone {
        session_id: String,
        answer: String,
    },
    TurnFailed(String),
}

/// What the instance does about it, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayEffect {
    /// A short reply in the chat.
    Reply(String),
    /// Post Claude's answer as it is.
    PostAnswer(String),
    /// Start the session: `/create-prd` with the user's first message.
    StartSession { text: String },
    /// Resume the session with the next message.
    ResumeSession { session_id: String, text: String },
}

/// One project's relay.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrdRelay {
    open: bool,
    session_id: Option<String>,
    /// A Claude turn is running.
    busy: bool,
    waiting: VecDeque<String>,
}

impl PrdRelay {
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, input: RelayInput) -> Vec<RelayEffect> {
        use RelayEffect::*;
        match input {
            RelayInput::Start { .. } if self.open => vec![Reply(ALREADY_OPEN.into())],
            RelayInput::Start { step_running: true } => vec![Reply(STEP_RUNNING.into())],
            RelayInput::Start { .. } => {
                *self = PrdRelay {
                    open: true,
                    ..PrdRelay::default()
                };
                vec![Reply(STARTED.into())]
            }
            RelayInput::End if !self.open => vec![Reply(NOT_OPEN.into())],
            RelayInput::End => {
                // A turn still running finishes, but its answer is no longer posted.
                *self = PrdRelay::default();
                vec![Reply(ENDED.into())]
            }
            RelayInput::Text(_) if !self.open => Vec::new(),
            RelayInput::Text(text) if self.busy => {
                self.waiting.push_back(text);
                vec![Reply(RELAYING.into())]
            }
            RelayInput::Text(text) => {
                self.busy = true;
                vec![Reply(RELAYING.into()), self.turn(text)]
            }
            RelayInput::TurnDone { .. } | RelayInput::TurnFailed(_) if !self.open => Vec::new(),
            RelayInput::TurnDone { session_id, answer } => {
                self.session_id = Some(session_id);
                let mut effects = vec![PostAnswer(answer)];
                effects.extend(self.next_waiting());
                effects
            }
            RelayInput::TurnFailed(error) => {
                let mut effects = vec![Reply(format!("⚠️ PRD relay error: {error}"))];
                effects.extend(self.next_waiting());
                effects
            }
        }
    }

    fn turn(&self, text: String) -> RelayEffect {
        match &self.session_id {
            Some(id) => RelayEffect::ResumeSession {
                session_id: id.clone(),
                text,
            },
            None => RelayEffect::StartSession { text },
        }
    }

    fn next_waiting(&mut self) -> Option<RelayEffect> {
        let next = self.waiting.pop_front();
        self.busy = next.is_some();
        next.map(|text| self.turn(text))
    }
}

/// Whether the published run state means a step is running (or about to start), so a
/// relay may not open beside it. Paused, idle, done and waiting for a human run nothing;
/// `running` includes the waits between steps (an outage or a usage limit), after which
/// the loop would start a step by itself.
pub fn step_running(state: RunState) -> bool {
    matches!(state, RunState::Running | RunState::Pausing)
}

/// Free text outside a topic while several of the chat's relays are open (HTML).
pub fn reply_several_open(open: &[String]) -> String {
    let list = open
        .iter()
        .map(|p| crate::core::telegram_text::escape_html(p))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "❓ Several PRD sessions are open: {list}. Write in the project's topic, or end the \
         others with /end_prd &lt;prefix&gt; so that one is left."
    )
}

/// Which open relay a free-text message in the chat is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextTarget {
    Relay(String),
    /// Several relays are open and the message names none: ask for the project's topic.
    Ambiguous(Vec<String>),
    /// Not for a relay: ignored, as the earlier version did.
    Ignore,
}

/// A message typed in a project's topic goes to that project's relay; one typed elsewhere
/// goes to the only open relay of the chat.
pub fn text_target(topic_project: Option<&str>, open_relays: &[String]) -> TextTarget {
    match topic_project {
        Some(p) if open_relays.iter().any(|r| r == p) => TextTarget::Relay(p.to_string()),
        Some(_) => TextTarget::Ignore,
        None => match open_relays {
            [] => TextTarget::Ignore,
            [only] => TextTarget::Relay(only.clone()),
            many => TextTarget::Ambiguous(many.to_vec()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RelayEffect::*;
    use RelayInput::*;

    fn run(inputs: Vec<RelayInput>) -> Vec<Vec<RelayEffect>> {
        let mut relay = PrdRelay::default();
        inputs.into_iter().map(|i| relay.handle(i)).collect()
    }

    fn done(id: &str, answer: &str) -> RelayInput {
        TurnDone {
            session_id: id.into(),
            answer: answer.into(),
        }
    }

    #[test]
    fn a_conversation_starts_resumes_and_ends() {
        let got = run(vec![
            Text("too early".into()),
            Start {
                step_running: false,
            },
            Start {
                step_running: false,
            },
            Text("a todo app".into()),
            done("s1", "Who are the users?"),
            Text("me".into()),
            done("s1", "Done: PRD written"),
            End,
            End,
        ]);
        assert_eq!(
            got,
            vec![
                vec![],
                vec![Reply(STARTED.into())],
                vec![Reply(ALREADY_OPEN.into())],
                vec![
                    Reply(RELAYING.into()),
                    StartSession {
                        text: "a todo app".into()
                    }
                ],
                vec![PostAnswer("Who are the users?".into())],
                vec![
                    Reply(RELAYING.into()),
                    ResumeSession {
                        session_id: "s1".into(),
                        text: "me".into()
                    }
                ],
                vec![PostAnswer("Done: PRD written".into())],
                vec![Reply(ENDED.into())],
                vec![Reply(NOT_OPEN.into())],
            ]
        );
    }

    #[test]
    fn messages_during_a_turn_wait_their_turn_in_order() {
        let got = run(vec![
            Start {
                step_running: false,
            },
            Text("one".into()),
            Text("two".into()),
            Text("three".into()),
            done("s", "a1"),
            TurnFailed("timeout".into()),
            done("s", "a3"),
        ]);
        assert_eq!(
            got[4],
            vec![
                PostAnswer("a1".into()),
                ResumeSession {
                    session_id: "s".into(),
                    text: "two".into()
                }
            ]
        );
        assert_eq!(
            got[5],
            vec![
                Reply("⚠️ PRD relay error: timeout".into()),
                ResumeSession {
                    session_id: "s".into(),
                    text: "three".into()
                }
            ]
        );
        assert_eq!(got[6], vec![PostAnswer("a3".into())]);
    }

    #[test]
    fn no_relay_beside_a_running_step_and_no_answer_after_the_end() {
        let got = run(vec![
            Start { step_running: true },
            Start {
                step_running: false,
            },
            Text("x".into()),
            End,
            done("s", "late answer"),
        ]);
        assert_eq!(got[0], vec![Reply(STEP_RUNNING.into())]);
        assert_eq!(got[4], vec![]);
    }

    #[test]
    fn several_open_relays_are_named() {
        assert_eq!(
            reply_several_open(&["a".into(), "<b>".into()]),
            "❓ Several PRD sessions are open: a, &lt;b&gt;. Write in the project's topic, or \
             end the others with /end_prd &lt;prefix&gt; so that one is left."
        );
    }

    #[test]
    fn a_relay_opens_only_when_no_step_runs() {
        // (published state, a step is running)
        let cases = [
            (RunState::Running, true),
            (RunState::Pausing, true),
            (RunState::Paused, false),
            (RunState::WaitingForHuman, false),
            (RunState::Idle, false),
            (RunState::Done, false),
            (RunState::Stopped, false),
        ];
        for (state, running) in cases {
            assert_eq!(step_running(state), running, "{state:?}");
        }
    }

    #[test]
    fn free_text_goes_to_the_relay_it_belongs_to() {
        let open = vec!["alpha".to_string(), "beta".to_string()];
        let one = vec!["beta".to_string()];
        // (topic's project, open relays, target)
        let cases = [
            (Some("beta"), &open, TextTarget::Relay("beta".into())),
            (Some("gamma"), &open, TextTarget::Ignore),
            (None, &one, TextTarget::Relay("beta".into())),
            (None, &open, TextTarget::Ambiguous(open.clone())),
            (None, &vec![], TextTarget::Ignore),
            (Some("beta"), &vec![], TextTarget::Ignore),
        ];
        for (topic, relays, want) in cases {
            assert_eq!(text_target(topic, relays), want, "{topic:?} {relays:?}");
        }
    }
}
