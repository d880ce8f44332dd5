//! Buttons on escalations, end to end (issue 14): a real `piv run` escalates (a 401 while
//! planning), its message carries a Retry button; a tap (injected into the Bot API
//! stand-in) is answered at once, the instance runs again through its signal queue and
//! finishes, the message is edited to say who chose what; a second tap on the same button
//! gets an alert and does nothing. A paused escalation offers Resume (the overage stop:
//! "Continue on extra usage" and "Wait for the reset"); an outage the run waits out offers
//! Pause; the one usage-limit message shared by three instances offers a Pause per project.

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use crate::support::telegram_run::{
    escalating_run, output_of, slow, start_with_telegram, state_of, Kill,
};
use crate::support::*;

const TOKEN: &str = "777017:chat-buttons-SECRET";
const CHAT: i64 = 1717;

#[test]
fn retry_button_acts_once() {
    let api = BotApiStandIn::start(TOKEN);
    let (sb, _run, escalation) = escalating_run(&api, (TOKEN, CHAT), "btn", "/plan-feature");
    let (label, data) = escalation.buttons[0][0].clone();
    assert_eq!(label, "🔁 Retry");
    assert!(
        data.starts_with("piv:r:") && data.ends_with(":btn"),
        "{data}"
    );
    assert!(data.len() <= 64);
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref()
            == Some("waiting_for_human")),
        "{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "btn")
    );
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 1);

    // The tap: answered (not an alert), the instance retries and finishes.
    let tap = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let answer = api
        .wait_for_callback_answer(&tap, DEADLINE)
        .unwrap_or_else(|| panic!("no answer\n{}", output_of(&sb, "btn")));
    assert!(!answer.show_alert, "{answer:?}");
    assert_eq!(answer.text.as_deref(), Some("🔁 Retry sent to [btn]"));
    eprintln!(
        "tap answered after {:?}",
        api.tap_answered_after(&tap).unwrap()
    );
    assert!(
        wait_until(DEADLINE, || {
            let m = sb.manifest();
            phase(&m, 1)["execution"] == "complete" && state_of(&sb).as_deref() == Some("done")
        }),
        "the retry runs the phase to its end\n{}",
        output_of(&sb, "btn")
    );
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 2);
    // The escalation now says who chose what, and has no buttons.
    let edit = api
        .wait_for_edit(|e| e.message_id == escalation.message_id, DEADLINE)
        .expect("the escalation is edited");
    assert!(
        edit.text.contains("Retry — chosen by @tester at "),
        "{edit:?}"
    );
    assert!(edit.buttons.is_empty());

    // A second tap on the same button: an alert, no action.
    let again = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let refused = api
        .wait_for_callback_answer(&again, DEADLINE)
        .expect("the second tap is answered");
    assert!(refused.show_alert, "{refused:?}");
    assert!(
        refused
            .text
            .as_deref()
            .unwrap_or("")
            .contains("no longer open"),
        "{refused:?}"
    );
    assert_eq!(
        sb.log().matches("a button sent a signal").count(),
        1,
        "acted once"
    );
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 2);
}

/// The cost cap pauses the run: its escalation offers Resume, and a tap resumes it.
#[test]
fn a_paused_escalation_offers_resume() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("cap", &ready_manifest(1));
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, CHAT),
        "cap",
        &[],
        &[("PIV_MAX_COST_USD", "0.03")],
    )]);
    let escalation = api
        .wait_for_sent(|m| !m.buttons.is_empty(), DEADLINE)
        .unwrap_or_else(|| panic!("no escalation with buttons\n{}", output_of(&sb, "cap")));
    assert!(escalation.text.contains("cost_cap"), "{escalation:?}");
    let (label, data) = escalation.buttons[0][0].clone();
    assert_eq!(escalation.buttons[0].len(), 1);
    assert_eq!(label, "▶️ Resume");
    assert!(
        data.starts_with("piv:u:") && data.ends_with(":cap"),
        "{data}"
    );
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("paused")),
        "{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "cap")
    );
    let sessions = sb.claude_calls().len();
    let tap = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert_eq!(answer.text.as_deref(), Some("▶️ Resume sent to [cap]"));
    assert!(
        wait_until(DEADLINE, || sb.claude_calls().len() > sessions),
        "the run goes on after the tap\n{}",
        output_of(&sb, "cap")
    );
    let again = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let refused = api.wait_for_callback_answer(&again, DEADLINE).unwrap();
    assert!(refused.show_alert, "{refused:?}");
}

/// The overage stop offers "Continue on extra usage": a tap goes on (a resume, for this
/// one decision), and the run finishes.
#[test]
fn the_overage_stop_offers_continue_on_extra_usage() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("ovg", &ready_manifest(1));
    sb.scenario(
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
        ),
    );
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, CHAT),
        "ovg",
        &[],
        &[],
    )]);
    let escalation = api
        .wait_for_sent(|m| !m.buttons.is_empty(), DEADLINE)
        .unwrap_or_else(|| panic!("no escalation with buttons\n{}", output_of(&sb, "ovg")));
    assert!(escalation.text.contains("overage"), "{escalation:?}");
    let labels: Vec<&str> = escalation
        .buttons
        .iter()
        .flatten()
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(
        labels,
        ["💳 Continue on extra usage", "⏳ Wait for the reset"]
    );
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("paused")),
        "{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "ovg")
    );
    assert!(calls_starting(&sb, "/execute").is_empty());
    let data = escalation.buttons[0][0].1.clone();
    assert!(
        data.starts_with("piv:o:") && data.ends_with(":ovg"),
        "{data}"
    );
    let tap = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert_eq!(
        answer.text.as_deref(),
        Some("💳 Continue on extra usage sent to [ovg]")
    );
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("done")),
        "the run goes on to its end\n{}",
        output_of(&sb, "ovg")
    );
    assert_eq!(calls_starting(&sb, "/commit").len(), 1);
}

/// An API outage the run waits out offers Pause: a tap pauses it through the signal
/// queue, like `/pause` — once the wait is over the run holds before the step runs
/// again, until a resume.
#[test]
fn an_outage_offers_pause_and_a_tap_pauses() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("out", &ready_manifest(1));
    sb.scenario(
        Scenario::new()
            .rule(Rule::new("/plan-feature", Action::ApiUnreachable { retries: 1 }).times(1)),
    );
    // Long enough for a tap to arrive while the run waits, on any machine.
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, CHAT),
        "out",
        &[],
        &[("PIV_OUTAGE_BACKOFF_SECS", "20")],
    )]);
    let outage = api
        .wait_for_sent(|m| !m.buttons.is_empty(), DEADLINE)
        .unwrap_or_else(|| panic!("no message with buttons\n{}", output_of(&sb, "out")));
    assert!(outage.text.contains("unreachable"), "{outage:?}");
    let (label, data) = outage.buttons[0][0].clone();
    assert_eq!(outage.buttons[0].len(), 1);
    assert_eq!(label, "⏸ Pause");
    assert!(
        data.starts_with("piv:p:") && data.ends_with(":out"),
        "{data}"
    );
    let tap = api.inject_tap(outage.message_id, &data, 31337).unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(!answer.show_alert, "{answer:?}");
    assert_eq!(answer.text.as_deref(), Some("⏸ Pause sent to [out]"));
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("paused")),
        "the run holds after the step\n{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "out")
    );
    // The wait ends, and the run holds before the step runs again.
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 1, "held");
    assert!(
        calls_starting(&sb, "/execute").is_empty(),
        "nothing after the pause"
    );
    let edit = api
        .wait_for_edit(|e| e.message_id == outage.message_id, DEADLINE)
        .expect("the message says who chose");
    assert!(edit.text.contains("Pause — chosen by @tester"), "{edit:?}");
    resume_to_done(&sb, "out");
    assert_eq!(calls_starting(&sb, "/plan-feature").len(), 2);
}

/// The one usage-limit message shared by the waiting projects (issue 14 × issue 15): three
/// instances on one home and one bot, one hits the limit; its message carries a ⏸ Pause
/// per project, all with the one escalation id derived from the limit record. A tap on
/// [Pause mid] pauses mid — it stays paused after the reset while the others resume and
/// finish — and the message then names who paused mid, the others keeping their Pause. A
/// second tap on it is refused; a tap on [Pause high] after high resumed gets the stale
/// alert. A resume lets mid finish.
#[test]
fn the_shared_limit_message_pauses_one_project_past_the_reset() {
    let api = BotApiStandIn::start(TOKEN);
    let hit = Sandbox::new("hitter", &ready_manifest(1));
    let high = Sandbox::sharing_home(&hit, "high", &ready_manifest(1));
    let mid = Sandbox::sharing_home(&hit, "mid", &ready_manifest(1));
    for sb in [&high, &mid] {
        sb.scenario(slow(400));
    }
    // Long enough for the tap to come before mid's turn, on a loaded machine.
    hit.scenario(
        Scenario::new()
            .rule(
                Rule::new(
                    "/prime",
                    Action::UsageLimit {
                        resets_in_secs: Some(30),
                    },
                )
                .times(1),
            )
            .rule(Rule::new("", Action::Succeed).delay(std::time::Duration::from_millis(400))),
    );
    let env = |prio: &'static str| {
        [
            ("PIV_PRIORITY", prio),
            ("PIV_RESUME_STAGGER_SECS", "1"),
            ("PIV_LIMIT_MIN_WAIT_SECS", "1"),
        ]
    };
    let start = |sb: &Sandbox, prefix: &str, prio: &'static str| {
        start_with_telegram(sb, &api, (TOKEN, CHAT), prefix, &[], &env(prio))
    };
    let record = || {
        std::fs::read_to_string(hit.home.join("usage.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .unwrap_or_default()
    };
    let mut run = Kill(vec![start(&high, "high", "3"), start(&mid, "mid", "2")]);
    assert!(
        wait_until(DEADLINE, || {
            let r = record();
            r["members"].get("high").is_some() && r["members"].get("mid").is_some()
        }),
        "{}",
        output_of(&high, "high")
    );
    run.0.push(start(&hit, "hitter", "1"));

    let shared = api
        .wait_for_sent(|m| m.text.contains("Usage limit reached"), DEADLINE)
        .unwrap_or_else(|| panic!("no limit message\n{}", output_of(&hit, "hitter")));
    let recorded_at = record()["limit"]["recordedAt"].as_u64().unwrap();
    let id = recorded_at * 1000;
    let rows: Vec<(String, String)> = shared.buttons.iter().flatten().cloned().collect();
    assert_eq!(shared.buttons.len(), 3, "one row a project: {shared:?}");
    let labels: Vec<&str> = rows.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        labels,
        ["⏸ Pause [high]", "⏸ Pause [mid]", "⏸ Pause [hitter]"],
        "in resume order"
    );
    for ((_, data), p) in rows.iter().zip(["high", "mid", "hitter"]) {
        assert_eq!(*data, format!("piv:p:{id}:{p}"));
    }
    let open_of = |sb: &Sandbox| {
        piv::io::escalation_file::read_open(&piv::io::escalation_file::path_in_project(&sb.project))
    };
    // Each waiting instance recorded the wait as its own open escalation.
    assert!(
        wait_until(DEADLINE, || [&hit, &high, &mid].iter().all(|sb| open_of(
            sb
        ) == Some(
            id
        ))),
        "{:?}\n{}",
        [&hit, &high, &mid].map(open_of),
        output_of(&mid, "mid")
    );
    let tap = api
        .inject_tap(shared.message_id, &rows[1].1, 31337)
        .unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(!answer.show_alert, "{answer:?}");
    assert_eq!(answer.text.as_deref(), Some("⏸ Pause sent to [mid]"));
    let edit = api
        .wait_for_edit(|e| e.message_id == shared.message_id, DEADLINE)
        .expect("the message says who paused mid");
    assert!(
        edit.text.contains("⏸ Pause [mid] — chosen by @tester"),
        "{edit:?}"
    );
    let left: Vec<&str> = edit
        .buttons
        .iter()
        .flatten()
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(left, ["⏸ Pause [high]", "⏸ Pause [hitter]"]);
    let again = api
        .inject_tap(shared.message_id, &rows[1].1, 31337)
        .unwrap();
    let refused = api.wait_for_callback_answer(&again, DEADLINE).unwrap();
    assert!(refused.show_alert, "{refused:?}");
    assert!(
        refused
            .text
            .as_deref()
            .unwrap_or("")
            .contains("no longer open"),
        "{refused:?}"
    );

    // After the reset the others resume and finish; mid stays paused, no session started.
    for (sb, prefix) in [(&high, "high"), (&hit, "hitter")] {
        assert!(
            wait_until(DEADLINE, || state_of(sb).as_deref() == Some("done")),
            "{prefix} resumes after the reset\n{}",
            output_of(sb, prefix)
        );
    }
    assert!(
        wait_until(DEADLINE, || state_of(&mid).as_deref() == Some("paused")),
        "{:?}\n{}",
        state_of(&mid),
        output_of(&mid, "mid")
    );
    assert!(
        calls_starting(&mid, "/commit").is_empty(),
        "mid did not finish while paused\n{}",
        output_of(&mid, "mid")
    );
    let mid_sessions = calls_starting(&mid, "/prime").len();
    // A tap on high's Pause now: its wait is over.
    let late = api
        .inject_tap(shared.message_id, &rows[0].1, 31337)
        .unwrap();
    let stale = api.wait_for_callback_answer(&late, DEADLINE).unwrap();
    assert!(stale.show_alert, "{stale:?}");
    assert_eq!(
        stale.text.as_deref(),
        Some(piv::core::buttons::tap_stale("high").as_str())
    );
    assert_eq!(state_of(&mid).as_deref(), Some("paused"));
    assert_eq!(calls_starting(&mid, "/prime").len(), mid_sessions, "held");

    resume_to_done(&mid, "mid");
    assert_eq!(calls_starting(&mid, "/commit").len(), 1);
}

/// The overage stop's other button, "Wait for the reset": no session is paid from extra
/// usage; the run waits for the subscription's reset like a usage-limit wait (its status
/// says so) and goes on by itself afterwards, with no resume.
#[test]
fn the_overage_stop_can_wait_for_the_reset() {
    let api = BotApiStandIn::start(TOKEN);
    let sb = Sandbox::new("ovw", &ready_manifest(1));
    // Long enough for the tap to come before the reset, on a loaded machine.
    sb.scenario(
        Scenario::new().rule(
            Rule::new(
                "/plan-feature",
                Action::RateLimitInfo {
                    status: "allowed".into(),
                    utilization: Some(0.2),
                    using_overage: true,
                    resets_in_secs: Some(25),
                },
            )
            .times(1),
        ),
    );
    let _run = Kill(vec![start_with_telegram(
        &sb,
        &api,
        (TOKEN, CHAT),
        "ovw",
        &[],
        &[],
    )]);
    let escalation = api
        .wait_for_sent(|m| !m.buttons.is_empty(), DEADLINE)
        .unwrap_or_else(|| panic!("no escalation with buttons\n{}", output_of(&sb, "ovw")));
    let (label, data) = escalation.buttons[0][1].clone();
    assert_eq!(label, "⏳ Wait for the reset");
    assert!(
        data.starts_with("piv:w:") && data.ends_with(":ovw"),
        "{data}"
    );
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("paused")),
        "{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "ovw")
    );
    let resets_ms = std::fs::read_to_string(sb.home.join("usage.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|r| r["overage"]["resetsAt"].as_u64())
        .expect("the overage and its reset are recorded")
        * 1000;
    let tap = api.inject_tap(escalation.message_id, &data, 31337).unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(!answer.show_alert, "{answer:?}");
    assert_eq!(
        answer.text.as_deref(),
        Some("⏳ Wait for the reset sent to [ovw]")
    );
    let why = || {
        piv::io::state_file::read(&sb.project)
            .and_then(|s| s.why)
            .unwrap_or_default()
    };
    assert!(
        wait_until(DEADLINE, || why().starts_with("waiting for usage reset at")),
        "{:?} {:?}\n{}",
        state_of(&sb),
        why(),
        output_of(&sb, "ovw")
    );
    assert!(
        calls_starting(&sb, "/execute").is_empty(),
        "no session on extra usage"
    );
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("done")),
        "the run goes on by itself after the reset\n{}",
        output_of(&sb, "ovw")
    );
    let execute = calls_starting(&sb, "/execute");
    let at = execute[0]["at_ms"].as_u64().unwrap();
    assert!(at >= resets_ms, "{at} before the reset {resets_ms}");
    assert_eq!(calls_starting(&sb, "/commit").len(), 1);
}

/// `piv signal <prefix> resume`, and the run goes on to its end.
fn resume_to_done(sb: &Sandbox, prefix: &str) {
    let resumed = sb.piv(&["signal", prefix, "resume"]).output().unwrap();
    assert!(resumed.status.success(), "{resumed:?}");
    assert!(
        wait_until(DEADLINE, || state_of(sb).as_deref() == Some("done")),
        "a resume goes on\n{}",
        output_of(sb, prefix)
    );
}
