//! The bot owner's dealings with instances on other machines: which published instances
//! this machine does not list itself, how they look to the router, and sending one of
//! them a control command (the chat's reply says whether it acknowledged or is queued).

use std::path::Path;

use super::signals_nats::Delivery;
use super::Coordination;
use crate::core::commands::reply_sent;
use crate::core::control::ControlAction;
use crate::core::machines::{not_listed_here, reply_queued, PublishedInstance};
use crate::core::registry::Instance;
use crate::core::telegram_text::escape_html;

/// The instances the registry across machines lists that this machine does not (`local`:
/// this machine's other instances), the one in `own_dir` left out.
pub async fn other_machines(
    coordination: &dyn Coordination,
    own_dir: &Path,
    local: &[Instance],
) -> Vec<PublishedInstance> {
    let published = coordination.published_instances().await;
    if published.is_empty() {
        return published;
    }
    let own_dir = own_dir.display().to_string();
    let mut dirs: Vec<&str> = local.iter().map(|i| i.project_dir.as_str()).collect();
    dirs.push(&own_dir);
    not_listed_here(published, &super::hostname(), &dirs)
}

/// A published instance as the router sees instances.
pub fn as_instance(p: &PublishedInstance) -> Instance {
    Instance::new(
        p.status.prefix.clone(),
        p.status.project_dir.clone(),
        p.status.pid.unwrap_or(0),
        "",
        "",
    )
}

/// The published entry `other` was made from, when it is on another machine.
pub fn find_published<'a>(
    elsewhere: &'a [PublishedInstance],
    other: &Instance,
) -> Option<&'a PublishedInstance> {
    elsewhere
        .iter()
        .find(|p| p.status.prefix == other.prefix && p.status.project_dir == other.project_dir)
}

/// Sends `action` to `target` on another machine; the chat's reply.
pub async fn signal(
    coordination: &dyn Coordination,
    target: &PublishedInstance,
    action: ControlAction,
    from: &str,
) -> String {
    signal_with_text(coordination, target, action, from, None).await
}

/// [`signal`] with the user's text (a PRD relay message, `prd_text`).
pub async fn signal_with_text(
    coordination: &dyn Coordination,
    target: &PublishedInstance,
    action: ControlAction,
    from: &str,
    text: Option<String>,
) -> String {
    let message = crate::core::signal::SignalMessage {
        action,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        from: from.to_string(),
        escalation: None,
        text,
    };
    match coordination.send_signal(target, message).await {
        Ok(Delivery::Applied) => {
            tracing::info!(to = %target.status.prefix, host = %target.hostname,
                action = action.as_str(), "a signal for another machine was acknowledged");
            reply_sent(action, &target.status.prefix)
        }
        Ok(Delivery::Queued) => {
            reply_queued(action.as_str(), &target.status.prefix, &target.hostname)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot send a signal to another machine");
            format!(
                "⚠️ Could not send /{} to [{}]: {}",
                action.as_str(),
                escape_html(&target.status.prefix),
                escape_html(&e.to_string())
            )
        }
    }
}
