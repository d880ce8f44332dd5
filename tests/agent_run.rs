//! The agent side of overnight safety, on the real `piv run` with the scripted claude
//! (2.1.332 shapes): costs recorded per call that add up to what was spent, piv's
//! secrets kept out of the agent, the model left to the CLI and recorded, rejected
//! credentials stopping the run at once, `PIV_PERMISSION_MODE=auto` as root, and the
//! slash commands found where the CLI finds them (`$CLAUDE_CONFIG_DIR/commands`).

use std::process::Output;

use piv::testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;
use serde_yaml::Value as Yaml;

use crate::support::*;

fn show(sb: &Sandbox, out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sb.dump()
    )
}

fn sessions(sb: &Sandbox) -> Vec<Yaml> {
    sb.manifest()["sessions"]
        .as_sequence()
        .cloned()
        .unwrap_or_default()
}

/// What the scripted claude's sessions reported in total: each session's file holds the
/// cumulative total its last call reported.
fn spent(sb: &Sandbox) -> f64 {
    std::fs::read_dir(sb.root.path().join("fake-claude-sessions"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| t.trim().parse::<f64>().ok())
        .sum()
}

/// Every step resumes its `/prime` session, whose reported total covers the `/prime`
/// too: the manifest's per-call costs must add up to what was spent, not more.
#[test]
fn recorded_session_costs_add_up_to_what_was_spent() {
    let sb = Sandbox::new("cost", &ready_manifest(2));
    sb.scenario(
        Scenario::new()
            .rule(Rule::new("/prime", Action::Succeed).cost(0.07))
            .rule(Rule::new("/plan-feature", Action::Succeed).cost(0.4))
            .rule(Rule::new("/execute", Action::Succeed).cost(1.25))
            .rule(Rule::new("/validate-implementation", Action::Succeed).cost(0.3))
            .rule(Rule::new("/commit", Action::Succeed).cost(0.05)),
    );
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let recorded = sessions(&sb);
    assert!(recorded.len() >= 14, "{shown}");
    let sum: f64 = recorded
        .iter()
        .map(|s| s["cost_usd"].as_f64().expect("every cost known"))
        .sum();
    let spent = spent(&sb);
    assert!(
        (sum - spent).abs() < 1e-6,
        "recorded {sum} vs spent {spent}\n{shown}"
    );
    // 2 phases: plan, execute and validate each resume a /prime (0.07); commit runs alone.
    let want = 2.0 * (3.0 * 0.07 + 0.4 + 1.25 + 0.3 + 0.05);
    assert!((spent - want).abs() < 1e-6, "spent {spent}, want {want}");
    for s in &recorded {
        assert!(s.get("cost_unknown").is_none(), "{s:?}");
    }
}

/// A session stopped by its timeout is recorded with its cost unknown, not as $0.
#[test]
fn a_timed_out_session_is_recorded_with_an_unknown_cost() {
    let sb = Sandbox::new("timeout-cost", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/execute", Action::Hang).times(1)));
    let out = sb.run_to_end(&["--session-timeout-secs", "3"]);
    let shown = show(&sb, &out);
    let stopped: Vec<Yaml> = sessions(&sb)
        .into_iter()
        .filter(|s| {
            s["commands"]
                .as_str()
                .is_some_and(|c| c.starts_with("/execute"))
        })
        .filter(|s| {
            s["outcome"]
                .as_str()
                .is_some_and(|o| o.contains("timed out"))
        })
        .collect();
    assert!(!stopped.is_empty(), "{shown}");
    assert_eq!(stopped[0]["cost_usd"], Yaml::Null, "{shown}");
    assert_eq!(stopped[0]["cost_unknown"], Yaml::from(true), "{shown}");
}

/// piv reads `.env` into its own environment; the bot token there must not reach the
/// agent (nor an API key).
#[test]
fn the_bot_token_from_dot_env_never_reaches_the_agent() {
    let sb = Sandbox::new("secrets-env", &ready_manifest(1));
    std::fs::write(
        sb.project.join(".env"),
        "TELEGRAM_BOT_TOKEN=123456:dot-env-secret\nANTHROPIC_API_KEY=sk-dot-env\nPIV_SEEN_BY_AGENT=yes\n",
    )
    .unwrap();
    sb.scenario(Scenario::new().dump_env());
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    // piv did load it (one half of Telegram's settings: a warning, terminal-only).
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TELEGRAM_BOT_TOKEN"),
        "{shown}"
    );
    let calls = sb.claude_calls();
    assert!(!calls.is_empty());
    for c in &calls {
        let env = &c["env"];
        assert_eq!(
            env["PIV_SEEN_BY_AGENT"], "yes",
            "the .env was loaded: {env}"
        );
        assert!(env.get("TELEGRAM_BOT_TOKEN").is_none(), "{env}");
        assert!(env.get("ANTHROPIC_API_KEY").is_none(), "{env}");
    }
}

/// Without `PIV_MODEL` no `--model` is passed; the model each session reports is
/// recorded with it.
#[test]
fn the_model_is_the_clis_choice_and_is_recorded() {
    let sb = Sandbox::new("model", &ready_manifest(1));
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for c in sb.claude_calls() {
        let argv: Vec<&str> = c["argv"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(!argv.contains(&"--model"), "{argv:?}");
    }
    for s in sessions(&sb) {
        assert_eq!(s["model"], Yaml::from("claude-opus-5-5"), "{s:?}");
    }
    let sb = Sandbox::new("model-set", &ready_manifest(1));
    let out = sb.run_to_end(&["--model", "claude-chosen"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    assert!(sessions(&sb).iter().all(|s| s["model"] == "claude-chosen"));
}

/// Rejected credentials: the CLI would retry for minutes (the scripted one, forever
/// every 30 s); piv stops the session at the first retry, records an authentication
/// problem without retrying the step, and pauses for a human (staying up).
#[test]
fn rejected_credentials_pause_the_run_as_integration_auth() {
    let sb = Sandbox::new("auth", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(
        Rule::new("/prime", Action::AuthRetry).retry_delay(std::time::Duration::from_secs(30)),
    ));
    let mut child = sb.spawn_run(&[]);
    assert!(
        wait_until(DEADLINE, || state_file(&sb)["state"] == "paused"),
        "{}",
        sb.dump()
    );
    let calls = sb.claude_calls();
    assert_eq!(
        calls.iter().filter(|c| c["action"] == "auth_retry").count(),
        1,
        "{}",
        sb.dump()
    );
    let m = sb.manifest();
    let failures = m["failures"].as_sequence().cloned().unwrap_or_default();
    assert!(
        failures
            .iter()
            .any(|f| f["error_category"] == "integration_auth"),
        "{}",
        sb.dump()
    );
    let out = sb.piv(&["signal", "auth", "shutdown"]).output().unwrap();
    assert!(out.status.success());
    wait_exit(&sb, &mut child);
}

/// As root, `PIV_PERMISSION_MODE=auto` is accepted without `IS_SANDBOX` and passed on.
#[test]
fn permission_mode_auto_is_passed_and_accepted_as_root() {
    let sb = Sandbox::new("auto", &ready_manifest(1));
    let mut cmd = sb.piv(&["run"]);
    cmd.env_remove("IS_SANDBOX")
        .env("PIV_PERMISSION_MODE", "auto")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), DEADLINE);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    for c in sb.claude_calls() {
        let argv = c["argv"].as_array().unwrap();
        assert!(
            argv.windows(2)
                .any(|w| w[0] == "--permission-mode" && w[1] == "auto"),
            "{argv:?}"
        );
        assert_ne!(c["action"], "refused_root");
    }
}

/// The slash commands may live where the CLI looks for the user's commands:
/// `$CLAUDE_CONFIG_DIR/commands` when that is set. The start-up check looks there too.
#[test]
fn commands_in_claude_config_dir_are_found() {
    let sb = Sandbox::new("config-dir", &ready_manifest(1));
    let config = sb.root.path().join("claude-config");
    std::fs::create_dir_all(config.join("commands")).unwrap();
    for c in piv::testkit::project::COMMAND_FILES {
        std::fs::rename(
            sb.project.join(format!(".claude/commands/{c}.md")),
            config.join(format!("commands/{c}.md")),
        )
        .unwrap();
    }
    git(&sb.project, &["add", "-A"]);
    git(
        &sb.project,
        &["commit", "-qm", "commands moved to the user's config"],
    );
    let mut cmd = sb.piv(&["run"]);
    cmd.env("CLAUDE_CONFIG_DIR", &config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), DEADLINE);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    // Without it, the start-up check names what is missing before anything is spent.
    let before = sb.claude_calls().len();
    let out = sb.run_to_end(&[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("prime"), "{stderr}");
    assert_eq!(sb.claude_calls().len(), before);
}
