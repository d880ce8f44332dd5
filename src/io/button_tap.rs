//! A tapped escalation button, handled by the bot owner (issue 14): the tap is answered at
//! once; it acts only if its escalation is still the instance's open one (claimed from
//! `io::escalation_file`, so a second tap — or a tap replayed after a takeover — is
//! refused with an alert); the choice goes to the instance through its signal queue (the
//! same exactly-once delivery as `/pause b`); the message is then edited to say who chose
//! what and when, its buttons gone (on the one usage-limit message shared by the waiting
//! projects, the line names the project and those still waiting keep their Pause). A Rollback acts in two taps: the first edits the
//! message to ask for a confirmation naming the checkpoint (Yes / Cancel, nothing claimed);
//! Cancel puts the escalation's own buttons back; only Yes claims and signals (the
//! signal names the escalation, which the instance checks again). The decisions and texts
//! are `core::buttons`'.

use std::path::PathBuf;

use crate::core::buttons::{
    chosen_for_line, chosen_line, confirmation_buttons, no_checkpoint, rollback_question,
    shared_wait_buttons, still_waiting, tap_plan, tap_stale, tap_taken, without_question, Button,
    ButtonAction, TapPlan,
};
use crate::core::control::ControlAction;
use crate::core::signal::SignalMessage;
use crate::core::telegram_text::escape_html;
use crate::core::usage::is_limit_message;
use crate::io::chat_sender::ChatSender;
use crate::io::escalation_file;
use crate::io::signal_queue;
use crate::io::telegram::{ButtonTap, TelegramClient};

/// An instance a button may be for.
#[derive(Debug, Clone)]
pub struct TapTarget {
    pub prefix: String,
    pub project_dir: PathBuf,
}

/// The instances a button of this bot may be for: the owner's own and the others.
pub fn targets(
    own_prefix: &str,
    own_dir: &std::path::Path,
    others: &[crate::core::registry::Instance],
) -> Vec<TapTarget> {
    std::iter::once(TapTarget {
        prefix: own_prefix.to_string(),
        project_dir: own_dir.to_path_buf(),
    })
    .chain(others.iter().map(|i| TapTarget {
        prefix: i.prefix.clone(),
        project_dir: PathBuf::from(&i.project_dir),
    }))
    .collect()
}

/// What became of a tap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapOutcome {
    /// Not a piv button, or for no instance of this bot.
    Unknown,
    /// The escalation was no longer open.
    Stale,
    /// A Rollback: the confirmation was asked (or Cancel took it back); nothing sent.
    Asked,
    /// Sent to the instance.
    Acted,
}

/// Handles one tap (see the module docs); `from` names the owner in the signal. The
/// answer goes at once (it is not a message); the edits wait for a reply-kind slot of the
/// bot's send budget (`sender`).
pub async fn handle_tap(
    client: &TelegramClient,
    sender: &ChatSender,
    tap: &ButtonTap,
    targets: &[TapTarget],
    from: &str,
) -> TapOutcome {
    let button = Button::parse(&tap.data);
    let target = button
        .as_ref()
        .and_then(|b| targets.iter().find(|t| b.project.names(&t.prefix)));
    let (Some(button), Some(target)) = (button, target) else {
        answer(
            client,
            tap,
            "This button is not for a running piv project.",
            true,
        )
        .await;
        return TapOutcome::Unknown;
    };
    match tap_plan(button.action) {
        TapPlan::Confirm | TapPlan::Restore => {
            ask_or_restore(client, sender, tap, &button, target).await
        }
        TapPlan::Signal(action) => {
            signal(
                client,
                sender,
                tap,
                &button,
                (target, targets),
                action,
                from,
            )
            .await
        }
    }
}

/// The first tap on Rollback (the question naming the checkpoint, with Yes / Cancel) or
/// Cancel (the escalation's own buttons back). Neither claims the escalation.
async fn ask_or_restore(
    client: &TelegramClient,
    sender: &ChatSender,
    tap: &ButtonTap,
    button: &Button,
    target: &TapTarget,
) -> TapOutcome {
    let path = escalation_file::path_in_project(&target.project_dir);
    let open = tokio::task::spawn_blocking(move || escalation_file::read_escalation(&path))
        .await
        .ok()
        .flatten()
        .filter(|e| e.id == button.escalation);
    let Some(open) = open else {
        answer(client, tap, &tap_stale(&target.prefix), true).await;
        return TapOutcome::Stale;
    };
    let text = tap.message_text.as_deref().unwrap_or("");
    let (html, actions, said) = if button.action == ButtonAction::Rollback {
        let Some(tag) = open.checkpoint.as_deref() else {
            answer(client, tap, &no_checkpoint(&target.prefix), true).await;
            return TapOutcome::Stale;
        };
        (
            format!(
                "{}{}",
                escape_html(without_question(text)),
                rollback_question(&target.prefix, tag)
            ),
            confirmation_buttons(),
            "Confirm the rollback below.",
        )
    } else {
        let own: Vec<ButtonAction> = open
            .buttons
            .iter()
            .filter_map(|c| ButtonAction::from_code(c))
            .collect();
        (
            escape_html(without_question(text)),
            own,
            "Rollback cancelled.",
        )
    };
    answer(client, tap, said, false).await;
    let rows = vec![actions
        .iter()
        .map(|a| {
            let b = Button::new(*a, open.id, &target.prefix);
            (a.label().to_string(), b.callback_data())
        })
        .collect::<Vec<_>>()];
    if let (Some(chat), Some(message)) = (tap.chat_id, tap.message_id) {
        if let Err(e) = sender.edit_reply(chat, message, &html, &rows).await {
            tracing::warn!(error = %e, "cannot show the rollback's confirmation");
        }
    }
    TapOutcome::Asked
}

/// Claims the escalation, then signals the instance; the message then says who chose what.
async fn signal(
    client: &TelegramClient,
    sender: &ChatSender,
    tap: &ButtonTap,
    button: &Button,
    (target, targets): (&TapTarget, &[TapTarget]),
    action: ControlAction,
    from: &str,
) -> TapOutcome {
    let path = escalation_file::path_in_project(&target.project_dir);
    let dir = target.project_dir.clone();
    let id = button.escalation;
    let chosen = button.action.code();
    let message = SignalMessage {
        action,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        from: from.to_string(),
        escalation: Some(id),
        text: None,
    };
    // Claim, then signal: a tap claimed by a killed owner is refused on replay (the
    // signal may be lost then, never doubled).
    let claimed = tokio::task::spawn_blocking(move || {
        match escalation_file::claim(&path, id, Some(chosen)) {
            Ok(true) => signal_queue::enqueue_message(&dir, &message)
                .map(|_| true)
                .map_err(|e| e.to_string()),
            Ok(false) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    match claimed {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            answer(client, tap, &tap_stale(&target.prefix), true).await;
            return TapOutcome::Stale;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot act on a button");
            answer(client, tap, &format!("Could not act: {e}"), true).await;
            return TapOutcome::Unknown;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot act on a button");
            answer(client, tap, "Could not act.", true).await;
            return TapOutcome::Unknown;
        }
    }
    tracing::info!(to = %target.prefix, action = action.as_str(), escalation = id,
        "a button sent a signal");
    answer(
        client,
        tap,
        &tap_taken(button.action, &target.prefix),
        false,
    )
    .await;
    if let (Some(chat), Some(message)) = (tap.chat_id, tap.message_id) {
        let by = tap
            .from_username
            .as_deref()
            .map_or("someone".to_string(), |u| format!("@{u}"));
        let at = chrono::Utc::now().format("%H:%M").to_string();
        let shown = without_question(tap.message_text.as_deref().unwrap_or(""));
        let (line, rows) = if is_limit_message(shown) && button.action == ButtonAction::Pause {
            // The shared usage-limit message: the line names the project; the projects
            // still waiting on this limit keep their Pause.
            let left = still_waiting_on(id, targets_except(targets, target), shown).await;
            (
                chosen_for_line(button.action, &target.prefix, &by, &at),
                shared_wait_buttons(id, &left),
            )
        } else {
            (chosen_line(button.action, &by, &at), Vec::new())
        };
        let text = format!("{}{line}", escape_html(shown));
        if let Err(e) = sender.edit_reply(chat, message, &text, &rows).await {
            tracing::warn!(error = %e, "cannot mark the escalation as settled");
        }
    }
    TapOutcome::Acted
}

fn targets_except(targets: &[TapTarget], tapped: &TapTarget) -> Vec<TapTarget> {
    targets
        .iter()
        .filter(|t| t.prefix != tapped.prefix)
        .cloned()
        .collect()
}

/// The other projects whose open escalation is still the shared wait `id`.
async fn still_waiting_on(id: u64, others: Vec<TapTarget>, text: &str) -> Vec<String> {
    let open = tokio::task::spawn_blocking(move || {
        others
            .into_iter()
            .map(|t| {
                let open =
                    escalation_file::read_open(&escalation_file::path_in_project(&t.project_dir));
                (t.prefix, open)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    still_waiting(id, &open, text)
}

async fn answer(client: &TelegramClient, tap: &ButtonTap, text: &str, alert: bool) {
    if let Err(e) = client.answer_callback(&tap.callback_id, text, alert).await {
        tracing::warn!(error = %e, "cannot answer a button tap");
    }
}
