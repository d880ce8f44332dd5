//! The Rollback button, end to end (issue 14): a real `piv run` escalates during execute
//! (a 401) with a checkpoint; its message offers Retry and Rollback. A tap on Rollback
//! only asks, naming the checkpoint (Yes / Cancel); Cancel puts the buttons back; Yes
//! sends the rollback through the signal queue and the instance resets the work to the
//! checkpoint (HEAD at the tag, the work since then gone), records it, says so with a new
//! Retry, and stays stopped; a second Yes is refused with an alert. The edits are charged
//! to the bot's send budget. A rollback signal for an escalation no longer taken (written
//! straight into the queue) is logged and does nothing.

use piv::core::control::ControlAction;
use piv::core::signal::SignalMessage;
use piv::io::send_budget::PRIVATE_CHAT_INTERVAL;
use piv::io::signal_queue::enqueue_message;
use piv_testkit::bot_api::BotApiStandIn;

use crate::support::telegram_run::{escalating_run, output_of, state_of};
use crate::support::*;

const TOKEN: &str = "777018:chat-rollback-SECRET";
const CHAT: i64 = 1818;

fn labels(rows: &[Vec<(String, String)>]) -> Vec<String> {
    rows.iter().flatten().map(|(l, _)| l.clone()).collect()
}

fn data_of(rows: &[Vec<(String, String)>], label: &str) -> String {
    rows.iter()
        .flatten()
        .find(|(l, _)| l == label)
        .unwrap_or_else(|| panic!("no {label} in {rows:?}"))
        .1
        .clone()
}

#[test]
fn rollback_asks_first_then_resets_to_the_checkpoint_once() {
    let api = BotApiStandIn::start(TOKEN);
    let (sb, _run, escalation) = escalating_run(&api, (TOKEN, CHAT), "rb", "/execute");
    assert_eq!(labels(&escalation.buttons), ["🔁 Retry", "⏪ Rollback"]);
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref()
            == Some("waiting_for_human")),
        "{:?}\n{}",
        state_of(&sb),
        output_of(&sb, "rb")
    );
    let manifest = sb.manifest();
    let tag = manifest["checkpoints"][0]["tag"]
        .as_str()
        .expect("a checkpoint before execute")
        .to_string();
    let at_checkpoint = git_output(&sb.project, &["rev-parse", &format!("{tag}^{{commit}}")]);
    // The work of the failed attempt: a commit and an untracked file.
    std::fs::write(sb.project.join("work.txt"), "the attempt\n").unwrap();
    git(&sb.project, &["add", "work.txt"]);
    git(&sb.project, &["commit", "-qm", "the attempt"]);
    std::fs::write(sb.project.join("scratch.txt"), "untracked\n").unwrap();
    assert_ne!(
        git_output(&sb.project, &["rev-parse", "HEAD"]),
        at_checkpoint
    );

    // Rollback asks first, naming the checkpoint; nothing is done.
    let rollback = data_of(&escalation.buttons, "⏪ Rollback");
    let tap = api
        .inject_tap(escalation.message_id, &rollback, 31337)
        .unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(!answer.show_alert, "{answer:?}");
    let question = format!("Roll back [rb] to checkpoint <code>{tag}</code>? Uncommitted work since then is discarded.");
    let confirm = api
        .wait_for_edit(
            |e| e.message_id == escalation.message_id && e.text.contains(&question),
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("no confirmation\n{:?}", api.edits()));
    assert_eq!(labels(&confirm.buttons), ["⚠️ Yes, roll back", "Cancel"]);
    assert!(
        sb.project.join("work.txt").exists(),
        "a question acts on nothing"
    );

    // Cancel: the escalation's own buttons come back, without the question.
    let tap = api
        .inject_tap(
            escalation.message_id,
            &data_of(&confirm.buttons, "Cancel"),
            31337,
        )
        .unwrap();
    api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    let restored = api
        .wait_for_edit(
            |e| e.message_id == escalation.message_id && e.at > confirm.at,
            DEADLINE,
        )
        .expect("Cancel edits the message");
    assert_eq!(labels(&restored.buttons), ["🔁 Retry", "⏪ Rollback"]);
    // The edits after a tap take slots of the bot's send budget, as messages do: the
    // second, tapped at once after the first, still waits for the chat's interval.
    let spacing = restored.at - confirm.at;
    assert!(
        spacing >= PRIVATE_CHAT_INTERVAL - std::time::Duration::from_millis(100),
        "edits {spacing:?} apart"
    );
    assert!(!restored.text.contains("Roll back ["), "{restored:?}");

    // Rollback again, then Yes.
    let tap = api
        .inject_tap(escalation.message_id, &rollback, 31337)
        .unwrap();
    api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    let confirm = api
        .wait_for_edit(
            |e| {
                e.message_id == escalation.message_id
                    && e.at > restored.at
                    && e.text.contains(&question)
            },
            DEADLINE,
        )
        .expect("asked again");
    let yes = data_of(&confirm.buttons, "⚠️ Yes, roll back");
    assert!(yes.starts_with("piv:B:") && yes.len() <= 64, "{yes}");
    let tap = api.inject_tap(escalation.message_id, &yes, 31337).unwrap();
    let answer = api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(!answer.show_alert, "{answer:?}");
    assert_eq!(
        answer.text.as_deref(),
        Some("⚠️ Yes, roll back sent to [rb]")
    );
    assert!(
        wait_until(DEADLINE, || git_output(&sb.project, &["rev-parse", "HEAD"])
            == at_checkpoint),
        "HEAD is back at {tag}\n{}",
        output_of(&sb, "rb")
    );
    assert!(
        wait_until(DEADLINE, || !sb.project.join("work.txt").exists()
            && !sb.project.join("scratch.txt").exists()),
        "the work since the checkpoint is gone\n{}",
        output_of(&sb, "rb")
    );
    let said = api
        .wait_for_sent(
            |m| m.text.contains(&format!("⏪ Rolled back to {tag}")),
            DEADLINE,
        )
        .unwrap_or_else(|| panic!("no rollback message\n{}", output_of(&sb, "rb")));
    assert_eq!(labels(&said.buttons), ["🔁 Retry"], "{said:?}");
    assert!(
        wait_until(DEADLINE, || {
            sb.manifest()["failures"].as_sequence().is_some_and(|f| {
                f.iter().any(|f| {
                    f["resolution"] == "rolled_back" && f["checkpoint"].as_str() == Some(&tag)
                })
            })
        }),
        "the rollback is recorded\n{}",
        sb.manifest_text()
    );
    let edit = api
        .wait_for_edit(
            |e| {
                e.message_id == escalation.message_id
                    && e.text.contains("Yes, roll back — chosen by @tester")
            },
            DEADLINE,
        )
        .expect("the escalation says who chose");
    assert!(edit.buttons.is_empty());
    assert!(!edit.text.contains("Roll back ["), "{edit:?}");
    assert_eq!(
        state_of(&sb).as_deref(),
        Some("waiting_for_human"),
        "stays stopped"
    );
    assert_eq!(calls_starting(&sb, "/execute").len(), 1);

    // A second Yes: an alert, nothing done.
    let again = api.inject_tap(escalation.message_id, &yes, 31337).unwrap();
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
    assert_eq!(sb.log().matches("rolled back from the chat").count(), 1);

    // A rollback signal for that escalation written straight into the queue (past the
    // owner's check): the instance finds it no longer taken, logs it and does nothing.
    std::fs::write(sb.project.join("later.txt"), "work after the rollback\n").unwrap();
    let escalation_id: u64 = yes.split(':').nth(2).unwrap().parse().unwrap();
    let stale = SignalMessage {
        action: ControlAction::Rollback,
        timestamp: chrono::Utc::now().to_rfc3339(),
        from: "test".into(),
        escalation: Some(escalation_id),
        text: None,
    };
    enqueue_message(&sb.project, &stale).unwrap();
    assert!(
        wait_until(DEADLINE, || sb.log().contains(&format!(
            "rollback not done: escalation {escalation_id} is no longer open"
        ))),
        "the stale signal is logged\n{}",
        output_of(&sb, "rb")
    );
    assert!(sb.project.join("later.txt").exists(), "nothing rolled back");
    std::fs::remove_file(sb.project.join("later.txt")).unwrap();

    // The new escalation's Retry runs the phase again from the checkpoint, to its end.
    let retry = data_of(&said.buttons, "🔁 Retry");
    let tap = api.inject_tap(said.message_id, &retry, 31337).unwrap();
    api.wait_for_callback_answer(&tap, DEADLINE).unwrap();
    assert!(
        wait_until(DEADLINE, || state_of(&sb).as_deref() == Some("done")),
        "the retry runs to the end\n{}",
        output_of(&sb, "rb")
    );
    assert_eq!(calls_starting(&sb, "/execute").len(), 2);
}
