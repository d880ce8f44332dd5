//! A tapped escalation button, handled by the bot owner (issue 14): the tap is answered at
//! once; it acts only if its escalation is still the instance's open one (claimed from
//! `io::escalation_file`, so a second tap — or a tap replayed after a takeover — is
//! refused with an alert); the choice goes to the instance through its signal queue (the
//! same exactly-once delivery as `/pause b`); the message is then edited to say who chose
//! what and when, its buttons gone. The decisions and texts are `core::buttons`'.

use std::path::PathBuf;

use crate::core::buttons::{chosen_line, control_of, tap_stale, tap_taken, Button};
use crate::core::telegram_text::escape_html;
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
    /// Not offered from a button yet.
    Unavailable,
    /// Sent to the instance.
    Acted,
}

/// Handles one tap (see the module docs); `from` names the owner in the signal.
pub async fn handle_tap(
    client: &TelegramClient,
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
    let Some(action) = control_of(button.action) else {
        answer(client, tap, "Not available from a button yet.", true).await;
        return TapOutcome::Unavailable;
    };
    let path = escalation_file::path_in_project(&target.project_dir);
    let dir = target.project_dir.clone();
    let (id, from) = (button.escalation, from.to_string());
    // Claim, then signal: a tap claimed by a killed owner is refused on replay (the
    // signal may be lost then, never doubled).
    let claimed =
        tokio::task::spawn_blocking(move || match escalation_file::close_if_open(&path, id) {
            Ok(true) => signal_queue::enqueue(&dir, action, &from)
                .map(|_| true)
                .map_err(|e| e.to_string()),
            Ok(false) => Ok(false),
            Err(e) => Err(e.to_string()),
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
        let text = format!(
            "{}{}",
            escape_html(tap.message_text.as_deref().unwrap_or("")),
            chosen_line(button.action, &by, &at)
        );
        if let Err(e) = client.edit_html(chat, message, &text, &Vec::new()).await {
            tracing::warn!(error = %e, "cannot mark the escalation as settled");
        }
    }
    TapOutcome::Acted
}

async fn answer(client: &TelegramClient, tap: &ButtonTap, text: &str, alert: bool) {
    if let Err(e) = client.answer_callback(&tap.callback_id, text, alert).await {
        tracing::warn!(error = %e, "cannot answer a button tap");
    }
}
