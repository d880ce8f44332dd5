//! Agent sessions against the scripted claude speaking both CLI versions (2.1.197 and
//! 2.1.332): outages classified as such, the stall limit extended by announced retry
//! waits, rejected credentials and unknown commands stopped at once, per-call costs of a
//! resumed session, and costs left unknown (never $0) when a session is stopped.
//!
//! Timing: every verdict rests on a silence the scripted agent controls (a retry wait, a
//! hang) that is long next to the limit, and the limit is long next to how fast a loaded
//! machine starts a process.

use std::time::{Duration, Instant};

use piv::core::stream::SessionError;
use piv::io::agent::{run_pairing, run_session, AgentConfig};
use piv::testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use crate::support::session_fixture::{no_cancel, SessionFixture};

type Fixture = SessionFixture;

#[tokio::test]
async fn an_unreachable_api_is_an_outage_in_both_versions() {
    for version in ["2.1.197", "2.1.332"] {
        let fx = Fixture::new(
            Scenario::new()
                .cli_version(version)
                .rule(Rule::new("/prime", Action::ApiUnreachable { retries: 3 }))
                .rule(Rule::new("/execute", Action::Overloaded { retries: 2 })),
        );
        let out = run_session(&fx.cfg(), "/prime", None, no_cancel()).await;
        assert_eq!(out.api_retries, 3, "{version}");
        match &out.error {
            Some(SessionError::ApiUnavailable { detail }) => {
                assert!(detail.starts_with("API Error:"), "{version}: {detail}");
                assert!(detail.ends_with("(after 3 retries)"), "{version}: {detail}");
            }
            other => panic!("{version}: {other:?}"),
        }
        let out = run_session(&fx.cfg(), "/execute x.md", None, no_cancel()).await;
        assert!(
            matches!(&out.error, Some(SessionError::ApiUnavailable { detail }) if detail.contains("529")),
            "{version}: {:?}",
            out.error
        );
    }
}

/// The CLI announces a 6 s wait and stays silent for it: with a 2 s stall limit the
/// session is not stalled, it ends with the outage the CLI reports afterwards.
#[tokio::test]
async fn an_announced_retry_wait_extends_the_stall_limit() {
    let fx = Fixture::new(
        Scenario::new().rule(
            Rule::new("/prime", Action::ApiUnreachable { retries: 1 })
                .retry_delay(Duration::from_secs(6)),
        ),
    );
    let cfg = AgentConfig {
        stall: Duration::from_secs(2),
        ..fx.cfg()
    };
    let out = run_session(&cfg, "/prime", None, no_cancel()).await;
    assert!(
        matches!(out.error, Some(SessionError::ApiUnavailable { .. })),
        "{:?}",
        out.error
    );
    // Silence that no retry announced still stalls (the same limit, a hang).
    let fx = Fixture::new(Scenario::new().rule(Rule::new("/prime", Action::Hang)));
    let cfg = AgentConfig {
        stall: Duration::from_secs(2),
        ..fx.cfg()
    };
    let out = run_session(&cfg, "/prime", None, no_cancel()).await;
    assert_eq!(out.error, Some(SessionError::Stalled { after_secs: 2 }));
}

/// Rejected credentials: the CLI would retry for ~3 minutes (the scripted one, forever);
/// piv stops the session at the first retry and says it is an authentication problem.
#[tokio::test]
async fn rejected_credentials_stop_the_session_at_the_first_retry() {
    let fx = Fixture::new(
        Scenario::new()
            .rule(Rule::new("/prime", Action::AuthRetry).retry_delay(Duration::from_secs(30))),
    );
    let started = Instant::now();
    let out = run_session(&fx.cfg(), "/prime", None, no_cancel()).await;
    match &out.error {
        Some(SessionError::NotLoggedIn { message }) => {
            assert!(message.contains("401 authentication_failed"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.api_retries, 1);
    // The first retry announced 30 s; piv did not wait for the second.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(fx.calls().len(), 1);
}

/// 2.1.332 would send an unknown command to the model as plain text and "succeed";
/// piv stops the session at its init line when the CLI does not list the command, before
/// any result (the cost is unknown, not $0). 2.1.197 answers "Unknown command" itself: the
/// same verdict. (Here the command file exists, but the CLI does not know the command.)
#[tokio::test]
async fn an_unlisted_command_is_stopped_at_init() {
    for version in ["2.1.332", "2.1.197"] {
        let fx = Fixture::new(
            Scenario::new()
                .cli_version(version)
                .rule(Rule::new("/no-such-command", Action::UnknownCommand)),
        );
        std::fs::write(
            fx.project.join(".claude/commands/no-such-command.md"),
            "# /no-such-command\n",
        )
        .unwrap();
        let out = run_session(&fx.cfg(), "/no-such-command x", None, no_cancel()).await;
        assert_eq!(
            out.error,
            Some(SessionError::UnknownCommand {
                name: "no-such-command".into()
            }),
            "{version}"
        );
        let message = out.error.unwrap().message();
        assert!(message.contains(".claude/commands/no-such-command.md"));
        if version == "2.1.332" {
            assert_eq!(out.cost_usd, None, "stopped before the model answered");
        }
        assert_eq!(fx.calls().len(), 1, "the CLI was started");
        // A listed command runs.
        let out = run_session(&fx.cfg(), "/prime", None, no_cancel()).await;
        assert_eq!(out.error, None, "{version}: {out:?}");
    }
}

/// A command whose file is missing is refused before the CLI starts at all (the file may
/// have been deleted since the start-up check): nothing runs, nothing is spent.
#[tokio::test]
async fn a_command_without_its_file_is_refused_before_the_cli_starts() {
    let fx = Fixture::new(Scenario::new());
    std::fs::remove_file(fx.project.join(".claude/commands/execute.md")).unwrap();
    let out = run_session(&fx.cfg(), "/execute plan.md", None, no_cancel()).await;
    assert_eq!(
        out.error,
        Some(SessionError::UnknownCommand {
            name: "execute".into()
        })
    );
    assert_eq!(out.cost_usd, Some(0.0));
    assert!(
        fx.calls().is_empty(),
        "the CLI was started: {:?}",
        fx.calls()
    );
}

/// A resumed call reports its session's cumulative total (as the real CLI does): piv
/// records each call as what it added, and the pairing's sum is what was spent.
#[tokio::test]
async fn a_resumed_call_is_recorded_as_what_it_added() {
    let fx = Fixture::new(
        Scenario::new()
            .rule(Rule::new("/prime", Action::Succeed).cost(0.1))
            .rule(Rule::new("/plan-feature", Action::Succeed).cost(0.25)),
    );
    let prompts = vec![
        "/prime".to_string(),
        "/plan-feature \"Phase 1: x\"".to_string(),
    ];
    let out = run_pairing(&fx.cfg(), &prompts, no_cancel()).await;
    assert!(out.error().is_none(), "{:?}", out.last);
    // What the CLI reported: the session's total, 0.35, on the second call.
    assert!((out.last.cost_usd.unwrap() - 0.35).abs() < 1e-9);
    let costs: Vec<f64> = out.sessions.iter().map(|s| s.cost_usd.unwrap()).collect();
    assert!(
        (costs[0] - 0.1).abs() < 1e-9 && (costs[1] - 0.25).abs() < 1e-9,
        "{costs:?}"
    );
    assert!((out.cost_usd - 0.35).abs() < 1e-9);
    assert!(!out.cost_unknown);
    assert_eq!(out.sessions[1].model.as_deref(), Some("claude-opus-5-5"));
}

/// A session stopped before its result has an unknown cost, and the pairing says so.
#[tokio::test]
async fn a_session_stopped_before_its_result_has_an_unknown_cost() {
    let fx = Fixture::new(
        Scenario::new()
            .rule(Rule::new("/prime", Action::Succeed).cost(0.1))
            .rule(Rule::new("/execute", Action::Hang)),
    );
    let cfg = AgentConfig {
        timeout: Duration::from_secs(3),
        ..fx.cfg()
    };
    let prompts = vec!["/prime".to_string(), "/execute x.md".to_string()];
    let out = run_pairing(&cfg, &prompts, no_cancel()).await;
    assert_eq!(out.error(), Some(&SessionError::Timeout { after_secs: 3 }));
    assert_eq!(out.sessions[1].cost_usd, None);
    assert!(out.cost_unknown);
    assert!((out.cost_usd - 0.1).abs() < 1e-9, "the known part");
}

/// The model is passed only when configured; the session's reported model is kept.
#[tokio::test]
async fn the_model_is_optional_and_reported() {
    let fx = Fixture::new(Scenario::new());
    let out = run_session(&fx.cfg(), "/prime", None, no_cancel()).await;
    assert_eq!(out.model.as_deref(), Some("claude-opus-5-5"));
    let cfg = AgentConfig {
        model: Some("claude-test".into()),
        ..fx.cfg()
    };
    let out = run_session(&cfg, "/prime", None, no_cancel()).await;
    assert_eq!(out.model.as_deref(), Some("claude-test"));
    let calls = fx.calls();
    let has_model = |c: &Value| c["argv"].as_array().unwrap().iter().any(|a| a == "--model");
    assert!(!has_model(&calls[0]));
    assert!(has_model(&calls[1]));
}

/// piv's own secrets never reach the agent, even when piv has them in its environment.
#[tokio::test]
async fn piv_secrets_are_removed_from_the_agent_environment() {
    let fx = Fixture::new(Scenario::new().dump_env());
    let mut cfg = fx.cfg();
    cfg.env
        .push(("TELEGRAM_BOT_TOKEN".into(), "123:secret".into()));
    cfg.env.push(("ANTHROPIC_API_KEY".into(), "sk-test".into()));
    cfg.env.push(("PIV_VISIBLE".into(), "yes".into()));
    assert_eq!(
        run_session(&cfg, "/prime", None, no_cancel()).await.error,
        None
    );
    let env = &fx.calls()[0]["env"];
    assert_eq!(env["PIV_VISIBLE"], "yes", "the dump works");
    assert!(env.get("TELEGRAM_BOT_TOKEN").is_none(), "{env}");
    assert!(env.get("ANTHROPIC_API_KEY").is_none(), "{env}");
}
