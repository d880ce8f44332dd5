//! The one-shot commands that read or steer running instances from a terminal:
//! `piv status`, `piv signal` and `piv cost`. Each returns an exit code (see `crate::cli::exit`).

pub mod cost;
pub mod signal;
pub mod status;

/// `piv status` and `piv signal` with `PIV_COORDINATION` set: the servers must answer
/// (else exit 2 naming them), unless `PIV_COORDINATION_OPTIONAL=1`, which says so on
/// stderr and goes on with this machine only. None: go on.
pub fn coordination_gate(args: &crate::cli::CoordinationArgs) -> Option<i32> {
    let settings = match crate::config::coordination_settings(args) {
        Ok(Some(settings)) => settings,
        Ok(None) => return None,
        Err(e) => {
            crate::io::terminal::warn(&format!("error: {e}"));
            return Some(crate::cli::exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            crate::io::terminal::warn(&format!("error: cannot start the NATS client: {e}"));
            return Some(crate::cli::exit::USAGE);
        }
    };
    match runtime.block_on(crate::io::coordination::jetstream_kv::check_reachable(
        &settings,
    )) {
        Ok(()) => None,
        Err(e) if settings.optional => {
            crate::io::terminal::warn(&format!(
                "piv: warning: {e}; PIV_COORDINATION_OPTIONAL=1, so this machine only"
            ));
            None
        }
        Err(e) => {
            crate::io::terminal::warn(&format!("error: {e}"));
            Some(crate::cli::exit::USAGE)
        }
    }
}

/// `piv status --all` with `PIV_COORDINATION`: this machine's statuses and the ones the
/// other machines published (`prefix@host`); this machine's only when NATS does not answer
/// (the gate already said so).
pub fn with_other_machines<E>(
    local: Vec<crate::core::status::InstanceStatus>,
    args: &crate::cli::CoordinationArgs,
) -> Result<Vec<crate::core::status::InstanceStatus>, E> {
    let Ok(Some(settings)) = crate::config::coordination_settings(args) else {
        return Ok(local);
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Ok(local);
    };
    match runtime.block_on(crate::io::coordination::registry_kv::list_with(&settings)) {
        Ok(published) => Ok(crate::core::machines::merge(
            local,
            &crate::io::coordination::hostname(),
            published,
        )),
        Err(e) => {
            crate::io::terminal::warn(&format!("piv: warning: other machines not listed: {e}"));
            Ok(local)
        }
    }
}

/// `piv signal <prefix>` for an instance this machine's registry does not know: with
/// `PIV_COORDINATION`, the registry across machines is asked, and the signal goes over
/// NATS. None: no such instance there either (the caller reports the unknown prefix).
pub fn signal_other_machine(
    args: &crate::cli::CoordinationArgs,
    prefix: &str,
    action: crate::core::control::ControlAction,
    from: &str,
) -> Option<i32> {
    let settings = crate::config::coordination_settings(args).ok()??;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let published = runtime
        .block_on(crate::io::coordination::registry_kv::list_with(&settings))
        .ok()?;
    let mut matches: Vec<_> = published
        .iter()
        .filter(|p| p.status.prefix == prefix)
        .collect();
    if matches.is_empty() {
        matches = published
            .iter()
            .filter(|p| p.status.prefix.eq_ignore_ascii_case(prefix))
            .collect();
    }
    let [target] = matches.as_slice() else {
        return None;
    };
    let message = crate::core::signal::SignalMessage {
        action,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        from: from.to_string(),
        escalation: None,
        text: None,
    };
    let shown = format!("{}@{}", target.status.prefix, target.hostname);
    match runtime.block_on(crate::io::coordination::signals_nats::send_with(
        &settings, target, &message,
    )) {
        Ok(crate::io::coordination::signals_nats::Delivery::Applied) => {
            Some(status::print_stdout(&format!(
                "sent {action} to {shown} ({}): acknowledged\n",
                target.status.project_dir
            )))
        }
        Ok(crate::io::coordination::signals_nats::Delivery::Queued) => {
            Some(status::print_stdout(&format!(
                "sent {action} to {shown} ({}): queued, not acknowledged yet; it will be applied \
                 when that instance is back\n",
                target.status.project_dir
            )))
        }
        Err(e) => {
            crate::io::terminal::warn(&format!("piv: error: {e}"));
            Some(crate::cli::exit::STOPPED)
        }
    }
}
