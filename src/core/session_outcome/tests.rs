//! Table tests of the session classification on the real CLI captures (2.1.197 in `tests/fixtures/claude-cli/`, 2.1.332 in `tests/fixtures/claude-cli-latest/`) and on synthetic lines.

use super::*;
use crate::core::stream::parse_line;

fn run(stdout: &str, exit: ExitInfo) -> SessionOutcome {
    let mut acc = SessionAccumulator::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line.as_bytes()) {
            Ok(ev) => acc.feed(ev),
            Err(_) => acc.note_malformed(),
        }
    }
    acc.finish(exit)
}

fn exit(code: i32, stderr: &str) -> ExitInfo {
    ExitInfo {
        code: Some(code),
        stderr_tail: stderr.to_string(),
        ..ExitInfo::default()
    }
}

macro_rules! capture {
    ($name:literal) => {
        (
            include_str!(concat!(
                "../../../tests/fixtures/claude-cli/",
                $name,
                ".stdout"
            )),
            include_str!(concat!(
                "../../../tests/fixtures/claude-cli/",
                $name,
                ".stderr"
            )),
            include_str!(concat!("../../../tests/fixtures/claude-cli/", $name, ".rc"))
                .trim()
                .parse::<i32>()
                .unwrap(),
        )
    };
}

fn run_capture((stdout, stderr, rc): (&str, &str, i32)) -> SessionOutcome {
    run(stdout, exit(rc, stderr))
}

#[test]
fn every_capture_is_classified() {
    let o = run_capture(capture!("noauth"));
    assert_eq!(
        o.error,
        Some(SessionError::NotLoggedIn {
            message: "Not logged in · Please run /login".into()
        })
    );
    assert_eq!(
        o.session_id.as_deref(),
        Some("3d6e8db5-5fca-4a63-8870-8ca3ef8231d6")
    );
    assert_eq!(o.num_turns, 1);

    let o = run_capture(capture!("resume-unknown"));
    assert_eq!(
        o.error,
        Some(SessionError::ResumeUnknown {
            session_id: "11111111-1111-4111-8111-111111111111".into()
        })
    );

    let o = run_capture(capture!("skip-perms-root"));
    assert_eq!(o.error, Some(SessionError::RootSkipPermissions));
    assert!(o.stderr_tail.contains("root/sudo"));

    let o = run_capture(capture!("unknown-command"));
    assert_eq!(
        o.error,
        Some(SessionError::UnknownCommand {
            name: "prime".into()
        })
    );

    let o = run_capture(capture!("no-verbose"));
    assert_eq!(o.error, Some(SessionError::MissingVerbose));

    // An outage, not the work's fault: 2.1.197 says so only in its text and by the
    // retries and the synthetic `server_error` message.
    let o = run_capture(capture!("bogus-token"));
    assert_eq!(o.api_retries, 10);
    assert_eq!(
        o.error,
        Some(SessionError::ApiUnavailable {
            detail: "API Error: Unable to connect to API (ConnectionRefused) (after 10 retries)"
                .into()
        })
    );
}

#[test]
fn success_keeps_latest_cost_and_hooks() {
    let stdout = r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}
{"type":"assistant","message":{"content":[{"type":"text","text":"a"},{"type":"tool_use","id":"x","name":"Bash","input":{}},{"type":"text","text":"b"}]}}
{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.5,"num_turns":2,"duration_ms":10,"result":"first"}
{"type":"result","subtype":"success","is_error":false,"total_cost_usd":0.75,"num_turns":3,"duration_ms":20,"result":"done\n## PIV-Automator-Hooks\nvalidation_status: pass\nBad Key: x\n## Next\nother: y"}
{"type":"mystery","x":1}
"#;
    let o = run(stdout, exit(0, ""));
    assert_eq!(o.error, None);
    assert_eq!(o.session_id.as_deref(), Some("s1"));
    assert_eq!(o.cost_usd, Some(0.75));
    assert_eq!(o.model.as_deref(), Some("m"));
    assert_eq!(o.num_turns, 3);
    assert_eq!(o.duration_ms, 20);
    assert_eq!(
        o.hooks.get("validation_status").map(String::as_str),
        Some("pass")
    );
    assert_eq!(o.hooks.len(), 1);
}

#[test]
fn outcome_precedence_table() {
    let init = r#"{"type":"system","subtype":"init","session_id":"s"}"#;
    let ok = r#"{"type":"result","subtype":"success","is_error":false,"result":"fine"}"#;
    let cases: Vec<(String, ExitInfo, Option<SessionError>)> = vec![
        (format!("{init}\n{ok}"), exit(0, ""), None),
        (
            format!("{init}\n{ok}"),
            exit(2, "boom"),
            Some(SessionError::NonZeroExit {
                code: Some(2),
                signal: None,
            }),
        ),
        (init.to_string(), exit(0, ""), Some(SessionError::NoResult)),
        (
            init.to_string(),
            ExitInfo {
                signal: Some(9),
                ..ExitInfo::default()
            },
            Some(SessionError::NonZeroExit {
                code: None,
                signal: Some(9),
            }),
        ),
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"result":"tests failed"}"#
            ),
            exit(0, ""),
            Some(SessionError::ResultError {
                subtype: "success".into(),
                messages: vec!["tests failed".into()],
            }),
        ),
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["max turns"]}"#
            ),
            exit(1, ""),
            Some(SessionError::TurnBudgetExhausted {
                turns: 0,
                messages: vec!["max turns".into()],
            }),
        ),
        (
            format!(
                "{init}\n{}\n{}",
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1770000000}}"#,
                r#"{"type":"result","subtype":"success","is_error":true,"result":"limit"}"#
            ),
            exit(1, ""),
            Some(SessionError::UsageLimit {
                resets_at: Some(1_770_000_000),
            }),
        ),
        (
            format!(
                "{init}\n{}",
                r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1770000000}}"#
            ),
            exit(0, ""),
            Some(SessionError::NoResult),
        ),
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|1770000000"}"#
            ),
            exit(1, ""),
            Some(SessionError::UsageLimit { resets_at: None }),
        ),
        (
            format!("{init}\n{ok}"),
            ExitInfo {
                timed_out: true,
                limit_secs: 5,
                ..ExitInfo::default()
            },
            Some(SessionError::Timeout { after_secs: 5 }),
        ),
        (
            init.to_string(),
            ExitInfo {
                stalled: true,
                limit_secs: 3,
                ..ExitInfo::default()
            },
            Some(SessionError::Stalled { after_secs: 3 }),
        ),
        (
            format!("{init}\n{ok}"),
            ExitInfo {
                signal: Some(15),
                stopped_after_result: true,
                ..ExitInfo::default()
            },
            None,
        ),
        (
            init.to_string(),
            ExitInfo {
                cancelled: true,
                timed_out: true,
                ..ExitInfo::default()
            },
            Some(SessionError::Cancelled),
        ),
    ];
    for (i, (stdout, exit, want)) in cases.into_iter().enumerate() {
        assert_eq!(run(&stdout, exit).error, want, "case {i}");
    }
}

#[test]
fn assistant_text_is_bounded_and_used_without_result() {
    let mut acc = SessionAccumulator::new();
    let line = "x".repeat(100 * 1024);
    for _ in 0..50 {
        acc.feed(StreamEvent::Assistant {
            text: line.clone(),
            tools: Vec::new(),
        });
    }
    acc.feed(StreamEvent::Assistant {
        text: "tail\n## PIV-Automator-Hooks\nvalidation_status: fail".into(),
        tools: Vec::new(),
    });
    let o = acc.finish(exit(0, ""));
    assert!(o.text.len() <= ASSISTANT_TEXT_LIMIT + 1);
    assert_eq!(
        o.hooks.get("validation_status").map(String::as_str),
        Some("fail")
    );
    assert_eq!(o.error, Some(SessionError::NoResult));
}

#[test]
fn error_text_feeds_the_classifier() {
    assert!(SessionError::NotLoggedIn {
        message: "Not logged in".into()
    }
    .error_text()
    .contains("auth"));
    assert!(SessionError::UsageLimit { resets_at: None }
        .error_text()
        .contains("rate limit"));
    for e in [
        SessionError::NoResult,
        SessionError::Cancelled,
        SessionError::MissingVerbose,
        SessionError::RootSkipPermissions,
        SessionError::Timeout { after_secs: 1 },
    ] {
        assert!(!e.message().is_empty());
        assert!(!e.kind().is_empty());
    }
}

macro_rules! latest {
    ($name:literal) => {
        (
            include_str!(concat!(
                "../../../tests/fixtures/claude-cli-latest/",
                $name,
                ".stdout"
            )),
            include_str!(concat!(
                "../../../tests/fixtures/claude-cli-latest/",
                $name,
                ".stderr"
            )),
            include_str!(concat!(
                "../../../tests/fixtures/claude-cli-latest/",
                $name,
                ".rc"
            ))
            .trim()
            .parse::<i32>()
            .unwrap(),
        )
    };
}

/// Feeds a capture to an accumulator for `prompt`, line by line, stopping where piv
/// would stop the session (an abort); returns the outcome and whether it aborted.
fn run_prompt((stdout, stderr, rc): (&str, &str, i32), prompt: &str) -> (SessionOutcome, bool) {
    let mut acc = SessionAccumulator::for_prompt(prompt);
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        match parse_line(line.as_bytes()) {
            Ok(ev) => acc.feed(ev),
            Err(_) => acc.note_malformed(),
        }
        if acc.abort().is_some() {
            return (acc.finish(ExitInfo::default()), true);
        }
    }
    (acc.finish(exit(rc, stderr)), false)
}

#[test]
fn every_latest_capture_is_classified_by_its_fields() {
    type Check = fn(&Option<SessionError>) -> bool;
    let not_logged_in: Check = |e| matches!(e, Some(SessionError::NotLoggedIn { message }) if message.contains("Not logged in"));
    type Capture = (&'static str, &'static str, i32);
    let cases: Vec<(Capture, &str, &str, bool, Check)> = vec![
        (latest!("noauth"), "noauth", "hello", false, not_logged_in),
        (
            latest!("permission-mode-auto"),
            "auto",
            "hello",
            false,
            not_logged_in,
        ),
        (latest!("bogus-token"), "bogus-token", "hello", false, |e| {
            matches!(e, Some(SessionError::ApiUnavailable { detail })
                if detail.starts_with("API Error: Can't reach the API server") && detail.ends_with("(after 10 retries)"))
        }),
        (
            latest!("conn-refused-max-retries-1"),
            "conn-refused",
            "hello",
            false,
            |e| matches!(e, Some(SessionError::ApiUnavailable { detail }) if detail.contains("Connection refused")),
        ),
        // Rejected credentials: stopped at the first retry, not after ~3 minutes.
        (
            latest!("mock-401-default-retries"),
            "401",
            "hello",
            true,
            |e| matches!(e, Some(SessionError::NotLoggedIn { message }) if message.contains("401 authentication_failed")),
        ),
        (latest!("mock-401"), "401-1", "hello", true, |e| {
            matches!(e, Some(SessionError::NotLoggedIn { .. }))
        }),
        (
            latest!("mock-max-turns"),
            "max-turns",
            "hello",
            false,
            |e| {
                matches!(e, Some(SessionError::TurnBudgetExhausted { turns: 2, messages })
                if messages[0].contains("maximum number of turns"))
            },
        ),
        (
            latest!("mock-max-budget"),
            "max-budget",
            "hello",
            false,
            |e| matches!(e, Some(SessionError::ResultError { subtype, .. }) if subtype == "error_max_budget_usd"),
        ),
        // 2.1.332 sends an unknown command to the model: piv stops at the init line.
        (
            latest!("mock-unknown-command"),
            "unknown",
            "/prime",
            true,
            |e| matches!(e, Some(SessionError::UnknownCommand { name }) if name == "prime"),
        ),
        (
            latest!("mock-unknown-command"),
            "plain",
            "hello",
            false,
            |e| e.is_none(),
        ),
        (
            latest!("unknown-command-with-commands-dir"),
            "listed",
            "/prime",
            false,
            not_logged_in,
        ),
        (latest!("mock-success"), "success", "hello", false, |e| {
            e.is_none()
        }),
        (latest!("resume-unknown"), "resume", "hello", false, |e| {
            matches!(e, Some(SessionError::ResumeUnknown { .. }))
        }),
        (
            latest!("bypass-mode-root"),
            "bypass-root",
            "hello",
            false,
            |e| matches!(e, Some(SessionError::RootSkipPermissions)),
        ),
    ];
    for (capture, name, prompt, aborts, check) in cases {
        let (o, aborted) = run_prompt(capture, prompt);
        assert_eq!(aborted, aborts, "{name}: {:?}", o.error);
        assert!(check(&o.error), "{name}: {:?}", o.error);
    }
    let (o, _) = run_prompt(latest!("mock-success"), "hello");
    assert!((o.cost_usd.unwrap() - 0.00014).abs() < 1e-12);
    assert_eq!(o.model.as_deref(), Some("claude-opus-5-5"));
    assert_eq!(o.text, "hello from mock");
    let (o, _) = run_prompt(latest!("mock-401"), "hello");
    assert_eq!(o.cost_usd, None, "stopped before its result: cost unknown");
}

#[test]
fn outages_are_decided_by_fields_and_limits_are_not_outages() {
    let init = r#"{"type":"system","subtype":"init","session_id":"s"}"#;
    let retry = r#"{"type":"system","subtype":"api_retry","attempt":1,"retry_delay_ms":500.5,"error_status":529,"error":"server_error"}"#;
    let outage = |d: &str| {
        Some(SessionError::ApiUnavailable {
            detail: d.to_string(),
        })
    };
    let cases: Vec<(String, Option<SessionError>)> = vec![
        // 529 overloaded, after a retry (2.1.332 shape: "type" not first).
        (
            format!(
                "{init}\n{retry}\n{}",
                r#"{"is_error":true,"subtype":"success","api_error_status":529,"terminal_reason":"api_error","result":"API Error: 529 overloaded","type":"result"}"#
            ),
            outage("API Error: 529 overloaded (after 1 retries)"),
        ),
        // A 500 without retries, decided by the status alone.
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":500,"result":"boom"}"#
            ),
            outage("boom"),
        ),
        // A typed cause without a status.
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"api_error":"connection_failed","terminal_reason":"api_error","result":"x"}"#
            ),
            outage("x"),
        ),
        // 2.1.197: only the text and the retries say it.
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"terminal_reason":"completed","result":"API Error: Repeated 529 Overloaded errors"}"#
            ),
            outage("API Error: Repeated 529 Overloaded errors"),
        ),
        // Turn and budget limits after retries stay the work's failures.
        (
            format!(
                "{init}\n{retry}\n{}",
                r#"{"type":"result","subtype":"error_max_turns","is_error":true,"terminal_reason":"max_turns","errors":["Reached maximum number of turns (1)"]}"#
            ),
            Some(SessionError::TurnBudgetExhausted {
                turns: 0,
                messages: vec!["Reached maximum number of turns (1)".into()],
            }),
        ),
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"terminal_reason":"budget_exhausted","api_error_status":500,"errors":["Reached maximum budget ($0.01)"]}"#
            ),
            Some(SessionError::ResultError {
                subtype: "error_max_budget_usd".into(),
                messages: vec!["Reached maximum budget ($0.01)".into()],
            }),
        ),
        // Auth is never an outage, whatever terminal_reason says.
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":403,"terminal_reason":"api_error","result":"Forbidden"}"#
            ),
            Some(SessionError::NotLoggedIn {
                message: "Forbidden".into(),
            }),
        ),
        // A plain failed result is the work's failure.
        (
            format!(
                "{init}\n{}",
                r#"{"type":"result","subtype":"success","is_error":true,"terminal_reason":"completed","result":"tests failed"}"#
            ),
            Some(SessionError::ResultError {
                subtype: "success".into(),
                messages: vec!["tests failed".into()],
            }),
        ),
    ];
    for (i, (stdout, want)) in cases.into_iter().enumerate() {
        assert_eq!(run(&stdout, exit(1, "")).error, want, "case {i}");
    }
}

#[test]
fn auth_retries_abort_at_the_first_and_other_retries_do_not() {
    let cases = [
        (
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":401,"error":"authentication_failed"}"#,
            true,
        ),
        (
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":403,"error":"unknown"}"#,
            true,
        ),
        (
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":null,"error":"authentication_failed"}"#,
            true,
        ),
        (
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":null,"error":"unknown"}"#,
            false,
        ),
        (
            r#"{"type":"system","subtype":"api_retry","attempt":1,"error_status":529,"error":"server_error"}"#,
            false,
        ),
    ];
    for (line, aborts) in cases {
        let mut acc = SessionAccumulator::for_prompt("/prime");
        acc.feed(parse_line(line.as_bytes()).unwrap());
        assert_eq!(acc.abort().is_some(), aborts, "{line}");
    }
}

#[test]
fn unknown_slash_command_table() {
    let list = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases = [
        ("/prime", list(&["prime", "clear"]), None),
        ("/prime", list(&["clear"]), Some("prime")),
        (
            "/execute .agents/plans/phase-1.md",
            list(&["prime"]),
            Some("execute"),
        ),
        (
            "/execute .agents/plans/phase-1.md",
            list(&["execute"]),
            None,
        ),
        ("Fix the following validation error", list(&[]), None),
        ("/", list(&[]), None),
    ];
    for (prompt, commands, want) in cases {
        assert_eq!(
            unknown_slash_command(prompt, &commands).as_deref(),
            want,
            "{prompt}"
        );
    }
    // Without a slash_commands list (an older CLI) nothing is decided at init.
    let mut acc = SessionAccumulator::for_prompt("/prime");
    acc.feed(parse_line(br#"{"type":"system","subtype":"init","session_id":"s"}"#).unwrap());
    assert!(acc.abort().is_none());
}

#[test]
fn a_resumed_call_counts_only_what_it_added() {
    let mut r = ReportedCosts::default();
    // /prime then the resumed command: totals 0.1 then 0.567 → 0.1 + 0.467.
    assert_eq!(r.call_cost(Some("a"), Some(0.1)), Some(0.1));
    let second = r.call_cost(Some("a"), Some(0.567)).unwrap();
    assert!((second - 0.467).abs() < 1e-9, "{second}");
    // Another session starts from 0; an unknown total stays unknown.
    assert_eq!(r.call_cost(Some("b"), Some(0.2)), Some(0.2));
    assert_eq!(r.call_cost(Some("b"), None), None);
    // A total below the earlier one (a CLI reporting per call) counts as the call's own.
    assert_eq!(r.call_cost(Some("b"), Some(0.05)), Some(0.05));
    assert_eq!(r.call_cost(None, Some(0.3)), Some(0.3));
}
