//! The chat's rollback (an escalation's confirmed Rollback button, issue 14): acted on
//! only while no loop runs and only for the escalation the button was on, still taken
//! (`io::escalation_file::take`); it rolls back with the loop's own function
//! (`failure::roll_back_to`), records a `rolled_back` failure as the loop would, and says
//! so as a new escalation (its Retry runs the phase again). The run stays stopped.

use actix::prelude::*;

use super::failure::roll_back_to;
use super::PhaseRunnerActor;
use crate::actors::control::Notify;
use crate::actors::manifest::{ReadManifest, UpdateManifest};
use crate::core::buttons::rollback_checkpoint;
use crate::core::control::ControlReply;
use crate::core::events::RunEvent;
use crate::core::manifest::{self, ListSection, ManifestUpdate};
use crate::io::clock::now_rfc3339;
use crate::io::escalation_file;

/// Roll back to the checkpoint of `escalation` (a signal from its confirmed button).
#[derive(Message, Debug, Clone)]
#[rtype(result = "ControlReply")]
pub struct RollBackEscalation {
    pub escalation: Option<u64>,
    pub by: String,
}

fn refused(why: &str) -> ControlReply {
    tracing::info!("rollback not done: {why}");
    ControlReply::NotRolledBack {
        why: why.to_string(),
    }
}

impl Handler<RollBackEscalation> for PhaseRunnerActor {
    /// Atomic: no `/go` starts the loop while the tree is being reset.
    type Result = AtomicResponse<Self, ControlReply>;

    fn handle(&mut self, msg: RollBackEscalation, _: &mut Context<Self>) -> Self::Result {
        let ready = |reply| AtomicResponse::new(Box::pin(fut::ready(reply)));
        let Some(id) = msg.escalation else {
            return ready(refused("only an escalation's Rollback button rolls back"));
        };
        if self.loop_running {
            return ready(refused(
                "the run is under way; a rollback waits until it stops for a human",
            ));
        }
        let (manifest, dir) = (self.manifest.clone(), self.settings.project_dir.clone());
        let (events, published) = (self.events.clone(), self.published.clone());
        let work = async move {
            let path = escalation_file::path_in_project(&dir);
            let taken = tokio::task::spawn_blocking(move || escalation_file::take(&path, id))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let tag = match taken {
                Ok(Some(Some(tag))) => tag,
                Ok(Some(None)) => return refused("that escalation has no checkpoint"),
                Ok(None) => {
                    return refused(&format!("escalation {id} is no longer open (stale button)"))
                }
                Err(e) => return refused(&format!("cannot read the open escalation: {e}")),
            };
            let view = match manifest.send(ReadManifest).await {
                Ok(Ok(m)) => m.view().ok(),
                _ => None,
            };
            let failure = view.as_ref().and_then(|v| {
                let f = v
                    .failures
                    .iter()
                    .rev()
                    .find(|f| f.checkpoint.as_deref() == Some(tag.as_str()))?;
                (rollback_checkpoint(v, Some(f.phase)).as_deref() == Some(tag.as_str()))
                    .then(|| f.clone())
            });
            let Some(failure) = failure else {
                return refused(&format!(
                    "{tag} is no longer the checkpoint of an escalated failure"
                ));
            };
            if let Err(failed) = roll_back_to(&manifest, &dir, &tag).await {
                return refused(&failed);
            }
            let entry = manifest::Failure {
                resolution: "rolled_back".into(),
                details: format!("rolled back to {tag} from the chat ({})", msg.by),
                timestamp: now_rfc3339(),
                ..failure.clone()
            };
            let update = ManifestUpdate::Append {
                section: ListSection::Failures,
                entry: entry.to_value(),
            };
            match manifest.send(UpdateManifest(vec![update])).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("cannot record the rollback: {e}"),
                Err(e) => tracing::error!("manifest actor unavailable: {e}"),
            }
            tracing::info!(%tag, escalation = id, by = %msg.by, "rolled back from the chat");
            let why = format!("rolled back to {tag}; /go (or Retry) runs the phase again");
            published.borrow_mut().set(|s| s.why = Some(why));
            events.do_send(Notify(RunEvent::NeedsHuman {
                phase: Some(failure.phase),
                category: failure.error_category.clone(),
                details: format!("⏪ Rolled back to {tag}"),
                action: "Stopped — /go or Retry runs the phase again from the checkpoint".into(),
            }));
            ControlReply::RolledBack { tag }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}
