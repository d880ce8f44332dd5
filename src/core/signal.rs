//! Signals between instances: the signal file's model
//! (`{"action":"go|pause|resume|shutdown|prd_start|prd_text|prd_end","timestamp":RFC3339,
//! "from":"<prefix>","text":"…"}`, `text` only for `prd_text`), its validation, and the
//! queue file names that sort by send time.
//!
//! Pure: `io::signal_queue` reads, writes and moves the files; the watcher actor turns a
//! valid message into a control message for the runner. Nothing here knows about paths.

use serde::{Deserialize, Serialize};

use crate::core::control::ControlAction;

/// Largest signal file accepted. A real signal is under 200 bytes; the cap keeps a stray
/// or hostile file from being read into memory.
pub const MAX_SIGNAL_BYTES: u64 = 64 * 1024;

/// One signal, as written in a queue file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalMessage {
    pub action: ControlAction,
    /// When it was sent, RFC 3339 (the reference writes `toISOString()`, which is).
    pub timestamp: String,
    /// The sender's prefix (or `terminal` for `piv signal`).
    pub from: String,
    /// The escalation a button's signal answers (a rollback acts only while it is open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<u64>,
    /// The user's message, for `prd_text` (the PRD relay); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl SignalMessage {
    /// The send time; `None` if `timestamp` is not RFC 3339 (only possible for a message
    /// built in code, `parse_signal` refuses those).
    pub fn sent_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The file content: compact JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string(self).expect("signal serialises");
        text.push('\n');
        text
    }
}

/// Why a signal file was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("signal is {size} bytes, over the {MAX_SIGNAL_BYTES}-byte limit")]
    TooLarge { size: u64 },
    #[error("signal is not valid JSON: {0}")]
    BadJson(String),
    #[error(
        "unknown signal action {0:?} (expected go, pause, resume, shutdown, rollback, prd_start, prd_text or prd_end)"
    )]
    UnknownAction(String),
    #[error("signal has no {0:?} field")]
    MissingField(&'static str),
    #[error("signal timestamp {0:?} is not RFC 3339")]
    BadTimestamp(String),
}

/// Validates a signal file's bytes.
pub fn parse_signal(bytes: &[u8]) -> Result<SignalMessage, SignalError> {
    let size = bytes.len() as u64;
    if size > MAX_SIGNAL_BYTES {
        return Err(SignalError::TooLarge { size });
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| SignalError::BadJson(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| SignalError::BadJson("not a JSON object".to_string()))?;
    let field = |name: &'static str| -> Result<&str, SignalError> {
        match object.get(name) {
            Some(serde_json::Value::String(s)) => Ok(s),
            Some(other) => Err(SignalError::BadJson(format!(
                "field {name:?} is not a string: {other}"
            ))),
            None => Err(SignalError::MissingField(name)),
        }
    };
    let action_name = field("action")?;
    let action = ControlAction::from_name(action_name)
        .ok_or_else(|| SignalError::UnknownAction(action_name.to_string()))?;
    let timestamp = field("timestamp")?;
    if chrono::DateTime::parse_from_rfc3339(timestamp).is_err() {
        return Err(SignalError::BadTimestamp(timestamp.to_string()));
    }
    // `from` is informational; an older sender that left it out still gets through.
    let from = match object.get("from") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(_) => field("from")?.to_string(),
    };
    let escalation = match object.get("escalation") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
        Some(other) => {
            return Err(SignalError::BadJson(format!(
                "field \"escalation\" is not an escalation id: {other}"
            )))
        }
    };
    let text = match object.get("text") {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => Some(field("text")?.to_string()),
    };
    Ok(SignalMessage {
        action,
        timestamp: timestamp.to_string(),
        from,
        escalation,
        text,
    })
}

/// Prefix of the queue file names piv writes (the reader takes any `*.json` name: see
/// [`classify_queue_name`]).
const QUEUE_PREFIX: &str = "sig-";
const QUEUE_SUFFIX: &str = ".json";

/// The queue file name of a signal: `sig-<nanos:032>-<pid:010>-<seq:020>.json`.
///
/// Fixed-width zero-padded fields make lexical order equal send order; pid and a
/// per-process sequence number make two signals sent in the same nanosecond (or with a
/// coarse clock) from two processes or two threads distinct. Ties in time between
/// processes are ordered by pid, which is as good as any order for concurrent senders.
pub fn queue_file_name(sent_at_unix_nanos: u128, pid: u32, seq: u64) -> String {
    format!("{QUEUE_PREFIX}{sent_at_unix_nanos:032}-{pid:010}-{seq:020}{QUEUE_SUFFIX}")
}

/// Whether `name` is a queue file name made by [`queue_file_name`].
pub fn is_queue_file_name(name: &str) -> bool {
    let Some(body) = name
        .strip_prefix(QUEUE_PREFIX)
        .and_then(|n| n.strip_suffix(QUEUE_SUFFIX))
    else {
        return false;
    };
    let parts: Vec<&str> = body.split('-').collect();
    matches!(parts.as_slice(), [t, p, s]
        if t.len() == 32 && p.len() == 10 && s.len() == 20
            && [t, p, s].iter().all(|x| x.bytes().all(|b| b.is_ascii_digit())))
}

/// What the reader does with a name it finds in the signals directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEntry {
    /// A signal file (`*.json`, piv's own queue names or any other program's): claimed,
    /// checked and delivered in name order with the rest, or rejected with its reason.
    Signal,
    /// Left alone: a file still being written (a dot-file or a temp name that a writer
    /// renames into place), piv's own claimed files, the `rejected/` directory.
    Ignore,
    /// Not a signal file name: moved to `rejected/` with this reason, so nothing lies in
    /// the queue unexplained.
    Reject(String),
}

/// The directory inside the queue that keeps rejected files.
pub const REJECTED_NAME: &str = "rejected";

/// Endings of the temp files writers rename into place (`mktemp`, `curl -o x.part`,
/// editors' backups and swap files); they are not signals yet.
const TEMP_SUFFIXES: [&str; 5] = [".tmp", ".part", ".swp", ".swx", "~"];

/// Decides what a name in `.agents/signals/` is. Every `*.json` name is a signal (piv's
/// queue names are only the ones it writes itself; a script may use any name); a
/// dot-name or a temp name is ignored; anything else is rejected with a reason.
pub fn classify_queue_name(name: &str) -> QueueEntry {
    if name.starts_with('.') || name == REJECTED_NAME {
        return QueueEntry::Ignore;
    }
    if TEMP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return QueueEntry::Ignore;
    }
    if name.len() > QUEUE_SUFFIX.len() && name.ends_with(QUEUE_SUFFIX) {
        return QueueEntry::Signal;
    }
    QueueEntry::Reject(format!(
        "not a signal file name: {name:?} does not end in .json (write a signal to a dot-file or *.tmp, then rename it to <name>.json)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_name_table() {
        let reject = |n: &str| matches!(classify_queue_name(n), QueueEntry::Reject(r) if r.contains(n) && r.contains(".json"));
        // (name, signal, ignored, rejected)
        let table = [
            // piv's own queue names
            (queue_file_name(1, 2, 3), true, false, false),
            // any other program's JSON file
            ("zz-my-script.json".to_string(), true, false, false),
            ("pause.json".to_string(), true, false, false),
            ("0001.json".to_string(), true, false, false),
            // writers' temp files, piv's claimed files, the rejected directory
            (".sig-x.tmp-1-1".to_string(), false, true, false),
            (".claimed-sig-1.json".to_string(), false, true, false),
            (".hidden.json".to_string(), false, true, false),
            ("pause.json.tmp".to_string(), false, true, false),
            ("pause.json.part".to_string(), false, true, false),
            ("pause.json~".to_string(), false, true, false),
            ("pause.json.swp".to_string(), false, true, false),
            ("rejected".to_string(), false, true, false),
            // junk: rejected with a reason
            ("README".to_string(), false, false, true),
            ("pause.txt".to_string(), false, false, true),
            ("pause".to_string(), false, false, true),
            ("pause.JSON".to_string(), false, false, true),
            (".json".to_string(), false, true, false),
            ("x.json.bak".to_string(), false, false, true),
        ];
        for (name, signal, ignored, rejected) in table {
            let got = classify_queue_name(&name);
            assert_eq!(got == QueueEntry::Signal, signal, "{name}: {got:?}");
            assert_eq!(got == QueueEntry::Ignore, ignored, "{name}: {got:?}");
            assert_eq!(reject(&name), rejected, "{name}: {got:?}");
        }
    }

    fn check(input: &str, expected: Result<ControlAction, SignalError>) {
        let got = parse_signal(input.as_bytes()).map(|m| m.action);
        match (&got, &expected) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "input {input:?}"),
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "input {input:?}: got {a}"
            ),
            _ => panic!("input {input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parse_table() {
        let ts = "2024-05-01T10:00:00.123Z";
        let bad = || SignalError::BadJson(String::new());
        check(
            &format!(r#"{{"action":"go","timestamp":"{ts}","from":"a"}}"#),
            Ok(ControlAction::Go),
        );
        check(
            &format!(r#"{{"action":"pause","timestamp":"{ts}","from":"a"}}"#),
            Ok(ControlAction::Pause),
        );
        check(
            r#"{"action":"resume","timestamp":"2024-05-01T12:00:00+02:00","from":"a"}"#,
            Ok(ControlAction::Resume),
        );
        check(
            &format!(r#"{{"action":"shutdown","timestamp":"{ts}"}}"#),
            Ok(ControlAction::Shutdown),
        );
        check(
            &format!(r#"{{"action":"GO","timestamp":"{ts}","from":"a"}}"#),
            Err(SignalError::UnknownAction(String::new())),
        );
        check(
            &format!(r#"{{"action":"reboot","timestamp":"{ts}","from":"a"}}"#),
            Err(SignalError::UnknownAction(String::new())),
        );
        check(
            r#"{"action":"go","timestamp":"yesterday","from":"a"}"#,
            Err(SignalError::BadTimestamp(String::new())),
        );
        check(
            r#"{"timestamp":"2024-05-01T10:00:00Z"}"#,
            Err(SignalError::MissingField("action")),
        );
        check(r#"{"action":"go"}"#, Err(SignalError::MissingField("")));
        check(r#"{"action":7,"timestamp":"x"}"#, Err(bad()));
        check("{not json", Err(bad()));
        check("[]", Err(bad()));
        check("", Err(bad()));
    }

    #[test]
    fn oversized_is_rejected_before_parsing() {
        let big = vec![b' '; MAX_SIGNAL_BYTES as usize + 1];
        assert_eq!(
            parse_signal(&big),
            Err(SignalError::TooLarge {
                size: MAX_SIGNAL_BYTES + 1
            })
        );
    }

    #[test]
    fn message_round_trips() {
        let message = SignalMessage {
            action: ControlAction::Pause,
            timestamp: "2024-05-01T10:00:00Z".into(),
            from: "ops".into(),
            escalation: None,
            text: None,
        };
        assert_eq!(
            parse_signal(message.to_json().as_bytes()),
            Ok(message.clone())
        );
        assert!(message.sent_at().is_some());
        assert!(
            !message.to_json().contains("escalation"),
            "omitted when none"
        );
        let button = SignalMessage {
            action: ControlAction::Rollback,
            escalation: Some(1_764_540_000_123),
            ..message.clone()
        };
        assert!(button.to_json().contains(r#""action":"rollback""#));
        assert_eq!(parse_signal(button.to_json().as_bytes()), Ok(button));
        for bad in [r#""x""#, "-1", "1.5"] {
            let text = format!(
                r#"{{"action":"rollback","timestamp":"2024-05-01T10:00:00Z","escalation":{bad}}}"#
            );
            assert!(
                matches!(parse_signal(text.as_bytes()), Err(SignalError::BadJson(_))),
                "{bad}"
            );
        }
        // No `text` key unless there is a text: older readers see the same file.
        assert!(!message.to_json().contains("text"));
    }

    #[test]
    fn relay_signals_carry_the_users_text() {
        let ts = "2024-05-01T10:00:00Z";
        // (file, parsed action and text, or the error)
        type Parsed = Result<(ControlAction, Option<&'static str>), SignalError>;
        let cases: [(String, Parsed); 5] = [
            (
                format!(
                    r#"{{"action":"prd_text","timestamp":"{ts}","from":"a","text":"a todo app"}}"#
                ),
                Ok((ControlAction::PrdText, Some("a todo app"))),
            ),
            (
                format!(r#"{{"action":"prd_start","timestamp":"{ts}","from":"a"}}"#),
                Ok((ControlAction::PrdStart, None)),
            ),
            (
                format!(r#"{{"action":"prd_end","timestamp":"{ts}","text":null}}"#),
                Ok((ControlAction::PrdEnd, None)),
            ),
            (
                format!(r#"{{"action":"prd_text","timestamp":"{ts}","text":7}}"#),
                Err(SignalError::BadJson(
                    "field \"text\" is not a string: 7".into(),
                )),
            ),
            (
                format!(r#"{{"action":"prdStart","timestamp":"{ts}"}}"#),
                Err(SignalError::UnknownAction("prdStart".into())),
            ),
        ];
        for (file, want) in cases {
            let got = parse_signal(file.as_bytes()).map(|m| (m.action, m.text));
            let want = want.map(|(a, t)| (a, t.map(String::from)));
            assert_eq!(got, want, "{file}");
        }
        let message = SignalMessage {
            action: ControlAction::PrdText,
            timestamp: ts.into(),
            from: "a".into(),
            escalation: None,
            text: Some("line one\n<b>two</b> \"quoted\"".into()),
        };
        assert_eq!(parse_signal(message.to_json().as_bytes()), Ok(message));
    }

    #[test]
    fn queue_names_sort_by_time_then_pid_then_seq() {
        let names = [
            queue_file_name(1_000_000, 99, 5),
            queue_file_name(1_000_000, 100, 0),
            queue_file_name(1_000_001, 1, 0),
            queue_file_name(1_700_000_000_000_000_000, 1, 0),
            queue_file_name(1_700_000_000_000_000_000, 1, 1),
        ];
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for name in &names {
            assert!(is_queue_file_name(name), "{name}");
        }
    }

    #[test]
    fn non_queue_names_are_ignored() {
        for name in [
            ".sig-tmp-1-2",
            "rejected",
            ".claimed-sig-1",
            "sig-1-2-3.json",
            "orchestrator.signal",
            &queue_file_name(1, 2, 3).replace(".json", ".tmp"),
            &queue_file_name(1, 2, 3).replace('0', "x"),
        ] {
            assert!(!is_queue_file_name(name), "{name}");
        }
    }
}
