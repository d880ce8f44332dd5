//! The live status card, end to end (issue 14): a real `piv run` in a forum chat of the Bot
//! API stand-in, the scripted claude reporting tool uses. In `normal` mode each phase is
//! one card message, edited in place with the step's tool actions, never more than once per
//! 3 s; only what closes something gets a message of its own. `quiet` sends only what
//! needs a person.

use std::time::Duration;

use piv_testkit::bot_api::{BotApiStandIn, ChatSetup};

use crate::support::telegram_run::{output_of, slow, start_with_telegram};
use crate::support::*;

const TOKEN: &str = "777016:chat-card-SECRET";
const FORUM: i64 = -1_002_000_000_016;

#[test]
fn each_phase_is_one_card_edited_in_place() {
    let api = BotApiStandIn::start(TOKEN);
    api.set_chat(FORUM, ChatSetup::Forum);
    let sb = Sandbox::new("card", &ready_manifest(2));
    // Sessions long enough for the card to be edited while a step runs.
    sb.scenario(slow(1500));
    let child = start_with_telegram(
        &sb,
        &api,
        (TOKEN, FORUM),
        "card",
        &["--exit-when-done"],
        &[("PIV_NOTIFY", "normal")],
    );
    let out = wait_output(child, DEADLINE * 2);
    assert!(out.status.success(), "{}", output_of(&sb, "card"));
    let sent = api.sent_messages();
    let edits = api.edits();
    let topic = api.topics()[0].thread_id;
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();

    // One card per phase, and the messages that close something; no per-step lines.
    let cards: Vec<_> = sent.iter().filter(|m| m.text.starts_with("📊")).collect();
    assert_eq!(cards.len(), 2, "{texts:#?}");
    assert!(cards[0].text.contains("Phase 1"), "{}", cards[0].text);
    assert!(cards[1].text.contains("Phase 2"), "{}", cards[1].text);
    assert!(texts.iter().any(|t| t.contains("Phase 1 Complete")));
    assert!(texts.iter().any(|t| t.contains("All phases complete")));
    assert!(!texts.iter().any(|t| t.contains(" done in ")), "{texts:#?}");
    assert!(sent.len() <= 6, "a handful per phase: {texts:#?}");
    assert!(sent.iter().all(|m| m.thread_id == Some(topic)));

    // Edited in place with the tool actions, only the cards, ≥ 3 s apart per card.
    assert!(!edits.is_empty(), "the card is edited");
    let card_ids: Vec<i64> = cards.iter().map(|m| m.message_id).collect();
    assert!(edits.iter().all(|e| card_ids.contains(&e.message_id)));
    assert!(
        edits.iter().any(|e| e.text.contains("• <code>")),
        "tool actions on the card: {edits:#?}"
    );
    assert!(
        edits
            .iter()
            .any(|e| e.text.contains("Turns: ") && !e.text.contains("Turns: 0")),
        "{edits:#?}"
    );
    for id in card_ids {
        let mut last = cards.iter().find(|c| c.message_id == id).unwrap().at;
        for e in edits.iter().filter(|e| e.message_id == id) {
            let gap = e.at.saturating_duration_since(last);
            assert!(
                gap >= Duration::from_secs(3),
                "edits {gap:?} apart: {edits:#?}"
            );
            last = e.at;
        }
    }
    // The run's log says why: no token, only figures.
    eprintln!(
        "card: {} messages, {} edits over 2 phases",
        sent.len(),
        edits.len()
    );
}

#[test]
fn quiet_sends_only_what_needs_a_person() {
    let api = BotApiStandIn::start(TOKEN);
    let chat = 4_242;
    let sb = Sandbox::new("quiet", &ready_manifest(1));
    let child = start_with_telegram(
        &sb,
        &api,
        (TOKEN, chat),
        "quiet",
        &["--exit-when-done"],
        &[("PIV_NOTIFY", "quiet")],
    );
    let out = wait_output(child, DEADLINE);
    assert!(out.status.success(), "{}", output_of(&sb, "quiet"));
    let sent = api.sent_messages();
    // Only the live card (tagged: no topics in a private chat); nothing closes-something.
    assert!(!sent.is_empty());
    assert!(
        sent.iter().all(|m| m.text.starts_with("[quiet] 📊")),
        "{sent:#?}"
    );
    let terminal = std::fs::read_to_string(sb.root.path().join("quiet.out")).unwrap();
    assert!(
        terminal.contains("Phase 1 complete"),
        "the terminal still says it: {terminal}"
    );
}

/// A card whose edit fails (the message was deleted) is sent again as a fresh message,
/// and later edits go to the new one.
#[test]
fn a_failed_edit_is_replaced_by_a_fresh_card() {
    let api = BotApiStandIn::start(TOKEN);
    let chat = 4_343;
    let sb = Sandbox::new("fresh", &ready_manifest(1));
    sb.scenario(slow(1500));
    api.fail_edits(1);
    let child = start_with_telegram(
        &sb,
        &api,
        (TOKEN, chat),
        "fresh",
        &["--exit-when-done"],
        &[("PIV_NOTIFY", "normal")],
    );
    let out = wait_output(child, DEADLINE * 2);
    assert!(out.status.success(), "{}", output_of(&sb, "fresh"));
    let failed = api.failed_edits();
    assert_eq!(failed.len(), 1, "one edit failed");
    let (failed_id, failed_at) = failed[0];
    let cards: Vec<_> = api
        .sent_messages()
        .into_iter()
        .filter(|m| m.text.contains("📊"))
        .collect();
    let fresh = cards
        .iter()
        .find(|m| m.at > failed_at)
        .unwrap_or_else(|| panic!("no fresh card after the failed edit: {cards:#?}"));
    assert_ne!(fresh.message_id, failed_id);
    assert!(
        api.edits().iter().all(|e| e.message_id != failed_id),
        "the lost message is not edited again"
    );
}
