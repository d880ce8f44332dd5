//! Crash handling of the loop: the text of a panic, the crash record written synchronously, and the flag that tells the panic hook a panic happened inside the loop.

use super::*;

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Appends an `orchestrator_crash` failure to the manifest, synchronously: used after a
/// caught panic and by the process-wide panic hook, where no actor can be relied on.
pub fn record_crash(project_dir: &std::path::Path, phase: Option<u32>, details: &str) {
    let entry = failure_entry(
        "orchestrator",
        phase.unwrap_or(0),
        Category::OrchestratorCrash,
        0,
        None,
        "pending",
        details,
    );
    let update = ManifestUpdate::Append {
        section: ListSection::Failures,
        entry,
    };
    if let Err(e) = crate::io::manifest_file::update(project_dir, &[update], &now_rfc3339()) {
        tracing::error!("cannot record the crash in the manifest: {e}");
    }
}

thread_local! {
    /// True while the phase runner's loop is being polled: the panic hook then knows the
    /// panic will be caught and handled by the restart budget, not by a shutdown.
    pub static IN_RUNNER_LOOP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the loop's polls (see [`IN_RUNNER_LOOP`]).
pub(super) struct InRunnerLoop<F>(pub(super) std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for InRunnerLoop<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                IN_RUNNER_LOOP.with(|f| f.set(false));
            }
        }
        IN_RUNNER_LOOP.with(|f| f.set(true));
        let _reset = Reset;
        self.0.as_mut().poll(cx)
    }
}
