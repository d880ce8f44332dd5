//! One subscription, many projects (issue 15), on real `piv run` processes sharing one
//! `$PIV_HOME` with the scripted claude printing the newest CLI's rate-limit events: the
//! usage-limit coordinator (hold, one message, resume in priority order, staggered), the
//! overage stop, the shared daily cap, `piv cost --json` against the manifests, the turn
//! budget retry and the login pause that a resume lifts.

use std::process::Child;

use piv_testkit::fake_claude::{Action, Rule, Scenario};
use serde_json::Value;

use crate::support::*;

/// Every call of a sandbox's scripted claude: (prompt, action, at_ms, --max-turns).
fn calls(sb: &Sandbox) -> Vec<(String, String, u64, Option<u64>)> {
    sb.claude_calls()
        .iter()
        .map(|c| {
            let argv: Vec<String> = c["argv"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let turns = argv
                .iter()
                .position(|a| a == "--max-turns")
                .and_then(|i| argv.get(i + 1))
                .and_then(|t| t.parse().ok());
            (
                c["prompt"].as_str().unwrap_or("").to_string(),
                c["action"].as_str().unwrap_or("").to_string(),
                c["at_ms"].as_u64().unwrap_or(0),
                turns,
            )
        })
        .collect()
}

/// When each pairing (session) started: its `/prime` calls.
fn session_starts(sb: &Sandbox) -> Vec<u64> {
    calls(sb)
        .into_iter()
        .filter(|(p, ..)| p.starts_with("/prime"))
        .map(|(_, _, at, _)| at)
        .collect()
}

fn usage_record(sb: &Sandbox) -> Value {
    std::fs::read_to_string(sb.home.join("usage.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn signal(sb: &Sandbox, prefix: &str, action: &str) {
    let out = sb.piv(&["signal", prefix, action]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn stop_all(sbs: &[(&Sandbox, &str)], children: &mut [Child]) {
    for (sb, prefix) in sbs {
        let _ = sb.piv(&["signal", prefix, "shutdown"]).output();
    }
    for (child, (sb, _)) in children.iter_mut().zip(sbs) {
        wait_exit(sb, child);
    }
}

fn slow(ms: u64) -> Rule {
    Rule::new("", Action::Succeed).delay(std::time::Duration::from_millis(ms))
}

/// Three instances on one home; one hits the usage limit: the other two start no new
/// session until the reset, one message names all three in their resume order, and after
/// the reset they start one by one in priority order, spaced by PIV_RESUME_STAGGER_SECS.
#[test]
fn three_instances_wait_for_one_reset_and_resume_in_priority_order() {
    let hit = Sandbox::new("hitter", &ready_manifest(3));
    let high = Sandbox::sharing_home(&hit, "high", &ready_manifest(3));
    let mid = Sandbox::sharing_home(&hit, "mid", &ready_manifest(3));
    for sb in [&high, &mid] {
        sb.scenario(Scenario::new().rule(slow(400)));
    }
    hit.scenario(
        Scenario::new()
            .rule(
                Rule::new(
                    "/prime",
                    Action::UsageLimit {
                        resets_in_secs: Some(8),
                    },
                )
                .times(1),
            )
            .rule(slow(400)),
    );
    let env = |prio: &'static str| {
        [
            ("PIV_PRIORITY", prio),
            ("PIV_RESUME_STAGGER_SECS", "3"),
            ("PIV_LIMIT_MIN_WAIT_SECS", "1"),
        ]
    };
    let mut children = vec![
        spawn_with_env(&high, &env("3")),
        spawn_with_env(&mid, &env("2")),
    ];
    // The two others are members of the home before the hit.
    assert!(
        wait_until(DEADLINE, || {
            let r = usage_record(&hit);
            r["members"].get("high").is_some() && r["members"].get("mid").is_some()
        }),
        "{}",
        high.dump()
    );
    children.push(spawn_with_env(&hit, &env("1")));
    assert!(
        wait_until(DEADLINE, || usage_record(&hit)["limit"].is_object()),
        "{}",
        hit.dump()
    );
    let limit = usage_record(&hit)["limit"].clone();
    let resets_ms = limit["resetsAt"].as_u64().unwrap() * 1000;
    assert_eq!(limit["recordedBy"], "hitter");
    // While they wait, the status says so.
    assert!(
        wait_until(DEADLINE, || state_file(&mid)["why"].as_str().is_some_and(
            |w| w.starts_with("waiting for usage reset at") && w.ends_with("(2 of 3)")
        )),
        "{}",
        mid.dump()
    );
    for (child, sb) in children.iter_mut().zip([&high, &mid, &hit]) {
        wait_exit(sb, child);
    }
    let hit_at = calls(&hit)
        .iter()
        .find(|(_, a, ..)| a == "usage_limit")
        .map(|c| c.2)
        .unwrap();
    let mut firsts = Vec::new();
    for (sb, stagger) in [(&high, 0), (&mid, 1), (&hit, 2)] {
        let starts = session_starts(sb);
        // No session started between the hit (plus the time to spawn one already
        // decided) and this project's turn after the reset.
        let turn = resets_ms + stagger * 3000;
        let early: Vec<_> = starts
            .iter()
            .filter(|t| **t > hit_at + 1500 && **t < turn)
            .collect();
        assert!(early.is_empty(), "{early:?} before {turn}\n{}", sb.dump());
        let first = *starts.iter().find(|t| **t >= turn).unwrap_or_else(|| {
            panic!("no session after the reset\n{}", sb.dump());
        });
        firsts.push(first);
    }
    // The stagger is checked above as lower bounds: no project started a session before
    // its own turn (reset + rank × 3 s). The gaps between the actual first starts are not
    // asserted: a loaded machine may start the first turn late (seen: 1 s), which
    // shortens the gap to the next one without anything going wrong.
    assert!(firsts[0] < firsts[1] && firsts[1] < firsts[2], "{firsts:?}");
    // One message, from the instance that hit the limit, naming all three in order.
    let outs: Vec<String> = [&hit, &high, &mid].iter().map(|s| s.run_stdout()).collect();
    let messages: Vec<&str> = outs
        .iter()
        .flat_map(|o| o.lines())
        .filter(|l| l.contains("Usage limit reached"))
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = messages[0];
    assert!(outs[0].contains(m), "{m}");
    let (h, d, t) = (
        m.find("1. high").unwrap(),
        m.find("2. mid").unwrap(),
        m.find("3. hitter").unwrap(),
    );
    assert!(h < d && d < t && m.contains("5-hour window"), "{m}");
    for sb in [&hit, &high, &mid] {
        let m = sb.manifest();
        assert_eq!(phase(&m, 3)["commit"], "complete", "{}", sb.dump());
    }
}

/// A session paid from extra usage: piv pauses before the next session and says so; a
/// resume goes on. With PIV_ALLOW_OVERAGE=1 it does not pause.
#[test]
fn an_overage_session_pauses_the_run_unless_allowed() {
    let overage = || {
        Scenario::new().rule(
            Rule::new(
                "/plan-feature",
                Action::RateLimitInfo {
                    status: "allowed".into(),
                    utilization: Some(0.2),
                    using_overage: true,
                    resets_in_secs: Some(3600),
                },
            )
            .times(1),
        )
    };
    let sb = Sandbox::new("overage", &ready_manifest(1));
    sb.scenario(overage());
    let mut child = spawn_with_env(&sb, &[]);
    assert!(
        wait_until(DEADLINE, || state_file(&sb)["state"] == "paused"
            && sb.run_stdout().contains("(overage)")),
        "{}",
        sb.dump()
    );
    let stdout = sb.run_stdout();
    assert!(stdout.contains("extra usage"), "{stdout}");
    // Nothing after the plan pairing that was paid from extra usage.
    assert!(calls_starting(&sb, "/execute").is_empty(), "{}", sb.dump());
    signal(&sb, "overage", "resume");
    let status = wait_exit(&sb, &mut child);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(calls_starting(&sb, "/commit").len(), 1);

    let allowed = Sandbox::new("allowed", &ready_manifest(1));
    allowed.scenario(overage());
    let out = run_with_env(&allowed, &[], &[("PIV_ALLOW_OVERAGE", "1")]);
    let shown = show(&allowed, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!text(&out).0.contains("(overage)"), "{shown}");
}

/// Two instances with one daily cap: both pause when their sum reaches it, with one
/// message; `piv cost --json` then agrees with the manifests' session records.
#[test]
fn a_shared_daily_cap_pauses_both_and_piv_cost_agrees_with_the_manifests() {
    let a = Sandbox::new("capa", &ready_manifest(3));
    let b = Sandbox::sharing_home(&a, "capb", &ready_manifest(3));
    for sb in [&a, &b] {
        sb.scenario(Scenario::new().rule(slow(200).cost(0.25)));
    }
    let env = [("PIV_MAX_COST_PER_DAY_USD", "1.2")];
    let mut children = vec![spawn_with_env(&a, &env), spawn_with_env(&b, &env)];
    for sb in [&a, &b] {
        assert!(
            wait_until(DEADLINE, || state_file(sb)["state"] == "paused"
                && state_file(sb)["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("daily cap"))),
            "{}",
            sb.dump()
        );
    }
    assert!(wait_until(DEADLINE, || format!(
        "{}{}",
        a.run_stdout(),
        b.run_stdout()
    )
    .contains("needs a human (daily_cost_cap)")));
    let all = format!("{}{}", a.run_stdout(), b.run_stdout());
    assert_eq!(
        all.matches("needs a human (daily_cost_cap)").count(),
        1,
        "{all}"
    );
    stop_all(&[(&a, "capa"), (&b, "capb")], &mut children);
    let out = a.piv(&["cost", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut total = 0.0;
    for (sb, name) in [(&a, "capa"), (&b, "capb")] {
        let recorded: f64 = list(&sb.manifest(), "sessions")
            .iter()
            .filter_map(|s| s["cost_usd"].as_f64())
            .sum();
        let p = report["projects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["project"] == name)
            .unwrap_or_else(|| panic!("{report}"));
        for column in ["today", "month"] {
            assert!(
                (p[column].as_f64().unwrap() - recorded).abs() < 1e-9,
                "{name} {column}: {p} vs {recorded}"
            );
        }
        total += recorded;
    }
    // The cap stopped them both, a session or so past it at most.
    assert!((1.2..1.2 + 2.0 * 0.5 + 1e-9).contains(&total), "{total}");
    assert!((report["total"]["today"].as_f64().unwrap() - total).abs() < 1e-9);
    let table = a.piv(&["cost", "--project", "capb"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("capb") && !table.contains("capa"), "{table}");
}

/// A session that ends at its --max-turns is "turn budget exhausted", retried once with
/// twice the budget — not a crash; a second one is a counted partial_execution failure.
#[test]
fn a_turn_capped_session_is_retried_once_with_a_larger_budget() {
    let sb = Sandbox::new("turns", &ready_manifest(1));
    sb.scenario(
        Scenario::new().rule(
            Rule::new(
                "/plan-feature",
                Action::Fail {
                    subtype: "error_max_turns".into(),
                    is_error: true,
                    message: "Reached maximum number of turns (100)".into(),
                    exit_code: None,
                },
            )
            .times(2),
        ),
    );
    let out = sb.run_to_end(&[]);
    let shown = show(&sb, &out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let plan_turns: Vec<Option<u64>> = calls(&sb)
        .into_iter()
        .filter(|(p, ..)| p.starts_with("/plan-feature"))
        .map(|c| c.3)
        .collect();
    // 100, then the retry with 200; that one too used its budget up: a failure of the
    // step (retried by the taxonomy with the normal budget).
    assert_eq!(plan_turns, [Some(100), Some(200), Some(100)], "{shown}");
    let prime_turns: Vec<Option<u64>> = calls(&sb)
        .into_iter()
        .filter(|(p, ..)| p.starts_with("/prime"))
        .map(|c| c.3)
        .collect();
    // The retry doubles the whole pairing's budgets.
    assert_eq!(prime_turns, [30, 60, 30, 30, 30].map(Some), "{shown}");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("plan-feature · started · max 100 turns"),
        "{stdout}"
    );
    assert!(
        stdout.contains("turn budget exhausted — retrying once"),
        "{stdout}"
    );
    let m = sb.manifest();
    let f = failures_of(&m, "plan-feature");
    assert_eq!(f.len(), 1, "{shown}");
    assert_eq!(f[0]["error_category"], "partial_execution");
    assert!(
        f[0]["details"]
            .as_str()
            .unwrap()
            .contains("Turn budget exhausted after"),
        "{shown}"
    );
}

/// Not logged in during a phase: the instance pauses (it stays up), names the fix, and a
/// resume retries the step without a restart.
#[test]
fn a_lost_login_pauses_and_a_resume_retries_the_step() {
    let sb = Sandbox::new("nologin2", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("/plan-feature", Action::NotLoggedIn)));
    let mut child = spawn_with_env(&sb, &[]);
    assert!(
        wait_until(DEADLINE, || state_file(&sb)["state"] == "paused"
            && sb.run_stdout().contains("claude setup-token")),
        "{}",
        sb.dump()
    );
    let stdout = sb.run_stdout();
    assert!(
        stdout.contains("claude setup-token") && stdout.contains("CLAUDE_CODE_OAUTH_TOKEN"),
        "{stdout}"
    );
    assert!(child.try_wait().unwrap().is_none(), "piv must stay up");
    // The human logs in; the step runs again on resume.
    sb.scenario(Scenario::new());
    signal(&sb, "nologin2", "resume");
    let status = wait_exit(&sb, &mut child);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(
        calls_starting(&sb, "/plan-feature").len(),
        2,
        "{}",
        sb.dump()
    );
    let m = sb.manifest();
    assert_eq!(
        failures_of(&m, "plan-feature")[0]["error_category"],
        "integration_auth"
    );
}
