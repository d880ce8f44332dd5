//! `piv signal <PREFIX> <ACTION>`: finds the target project (the registry entry with that
//! prefix, or `--project` directly) and queues one signal file in its
//! `.agents/signals/` through `io::signal_queue`. The running instance does the rest.

use std::path::{Path, PathBuf};

use crate::cli::{exit, resolve_project_dir, SignalArgs};
use crate::core::control::ControlAction;
use crate::core::registry::{self, Instance, PrefixError};
use crate::io::pid_file::PidFile;
use crate::io::signal_queue::{self, SignalQueueError};

use super::status::{self, StatusError};

/// The prefix argument that means "the project given by --project".
pub const DIRECT_PREFIX: &str = "-";

/// Why no signal was sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalCommandError {
    #[error("no running instance has the prefix {prefix:?}; {}", running_list(.running))]
    UnknownPrefix {
        prefix: String,
        running: Vec<String>,
    },
    #[error(
        "the prefix {prefix:?} matches several running instances ignoring case ({}); \
         give the exact prefix",
        .matches.join(", ")
    )]
    AmbiguousPrefix {
        prefix: String,
        matches: Vec<String>,
    },
    #[error(
        "the registry is off (PIV_REGISTRY_DISABLED is set), so prefixes cannot be looked \
         up: pass --project DIR (or set PIV_PROJECT_DIR) to signal that project directly"
    )]
    RegistryDisabled,
    #[error(
        "the prefix `-` targets the project given by --project: pass --project DIR or set \
         PIV_PROJECT_DIR"
    )]
    DirectNeedsProject,
    #[error(
        "project directory {0} does not exist: check the path (or `piv status --all` for \
         the running instances)"
    )]
    NoProjectDir(PathBuf),
    #[error(transparent)]
    Registry(#[from] StatusError),
    #[error(transparent)]
    Queue(#[from] SignalQueueError),
}

fn running_list(running: &[String]) -> String {
    if running.is_empty() {
        "no piv instances are running (see `piv status --all`)".to_string()
    } else {
        format!("running: {} (see `piv status --all`)", running.join(", "))
    }
}

impl SignalCommandError {
    /// Bad input is a usage error (2); a registry or queue that cannot be written is a
    /// runtime failure (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            SignalCommandError::Registry(e) => e.exit_code(),
            SignalCommandError::Queue(_) => exit::STOPPED,
            _ => exit::USAGE,
        }
    }
}

/// The instance `prefix` names, by [`registry::resolve_prefix`]'s rule (exact, else the
/// one match ignoring case).
pub fn resolve_prefix<'a>(
    instances: &'a [Instance],
    prefix: &str,
) -> Result<&'a Instance, SignalCommandError> {
    let prefixes: Vec<&str> = instances.iter().map(|i| i.prefix.as_str()).collect();
    match registry::resolve_prefix(&prefixes, prefix) {
        Ok(i) => Ok(&instances[i]),
        Err(PrefixError::Unknown) => {
            let mut running: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
            running.sort();
            Err(SignalCommandError::UnknownPrefix {
                prefix: prefix.to_string(),
                running,
            })
        }
        Err(PrefixError::Ambiguous(matches)) => Err(SignalCommandError::AmbiguousPrefix {
            prefix: prefix.to_string(),
            matches,
        }),
    }
}

/// Where a signal goes: the label printed back and the project directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub prefix: String,
    pub project_dir: PathBuf,
}

/// Picks the target: `-` or a disabled registry means `--project` directly (named by
/// `configured_prefix` when its instance published none), anything else is looked up in
/// the registry.
pub fn find_target(
    prefix: &str,
    project: Option<&Path>,
    home: Option<&Path>,
    registry_disabled: bool,
    configured_prefix: Option<&str>,
) -> Result<Target, SignalCommandError> {
    let direct = prefix == DIRECT_PREFIX || registry_disabled;
    let target = if direct {
        let Some(project) = project else {
            return Err(if prefix == DIRECT_PREFIX {
                SignalCommandError::DirectNeedsProject
            } else {
                SignalCommandError::RegistryDisabled
            });
        };
        let project_dir = status::canonical(&resolve_project_dir(Some(project)));
        let label = if prefix == DIRECT_PREFIX {
            let pid = PidFile::running(&project_dir);
            status::unregistered_prefix(&project_dir, pid, configured_prefix)
        } else {
            prefix.to_string()
        };
        Target {
            prefix: label,
            project_dir,
        }
    } else {
        let instances = status::registered_instances(home)?;
        let instance = resolve_prefix(&instances, prefix)?;
        Target {
            prefix: instance.prefix.clone(),
            project_dir: PathBuf::from(&instance.project_dir),
        }
    };
    // Queueing into a vanished project would recreate its directory.
    if !target.project_dir.is_dir() {
        return Err(SignalCommandError::NoProjectDir(target.project_dir));
    }
    Ok(target)
}

/// Queues `action` for `target`; returns the queue file.
pub fn send(
    target: &Target,
    action: ControlAction,
    from: &str,
) -> Result<PathBuf, SignalCommandError> {
    Ok(signal_queue::enqueue(&target.project_dir, action, from)?)
}

/// `piv signal`: queues the signal and confirms on stdout, errors on stderr; returns the
/// exit code.
pub fn run(args: &SignalArgs) -> i32 {
    if let Some(code) = super::coordination_gate(&args.coordination) {
        return code;
    }
    let action = args.action;
    let result = find_target(
        &args.prefix,
        args.project.as_deref(),
        args.home.as_deref(),
        args.no_registry,
        args.project_prefix.as_deref(),
    )
    .and_then(|target| send(&target, action, &args.from).map(|_| target));
    if let Err(SignalCommandError::UnknownPrefix { .. }) = &result {
        if let Some(code) =
            super::signal_other_machine(&args.coordination, &args.prefix, action, &args.from)
        {
            return code;
        }
    }
    match result {
        Ok(target) => {
            if PidFile::running(&target.project_dir).is_none() {
                eprintln!(
                    "piv: warning: no live piv process per {}; the signal waits in the queue, \
                     and an instance started later discards it",
                    PidFile::path_for(&target.project_dir).display()
                );
            }
            status::print_stdout(&format!(
                "sent {action} to {} ({})\n",
                target.prefix,
                target.project_dir.display()
            ))
        }
        Err(e) => {
            eprintln!("piv: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::registry::instances_named as instances;

    #[test]
    fn prefix_resolution_table() {
        let set = instances(&["alpha", "Beta", "gamma", "GAMMA"]);
        for (query, expected) in [
            ("alpha", Ok("alpha")),
            ("ALPHA", Ok("alpha")),
            ("beta", Ok("Beta")),
            ("gamma", Ok("gamma")),
            ("GAMMA", Ok("GAMMA")),
            ("Gamma", Err("several")),
            ("delta", Err("running: Beta, GAMMA, alpha, gamma")),
            ("alp", Err("no running instance")),
        ] {
            match (resolve_prefix(&set, query), expected) {
                (Ok(i), Ok(p)) => assert_eq!(i.prefix, p, "{query}"),
                (Err(e), Err(text)) => {
                    assert!(e.to_string().contains(text), "{query}: {e}");
                    assert_eq!(e.exit_code(), exit::USAGE);
                }
                (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn empty_registry_says_nothing_runs() {
        let e = resolve_prefix(&[], "a").unwrap_err().to_string();
        assert!(e.contains("no piv instances are running"), "{e}");
    }

    #[test]
    fn direct_targets_need_a_project() {
        for (prefix, disabled, text) in [
            ("-", false, "--project"),
            ("-", true, "--project"),
            ("a", true, "PIV_REGISTRY_DISABLED"),
        ] {
            let e = find_target(prefix, None, None, disabled, None).unwrap_err();
            assert!(e.to_string().contains(text), "{prefix} {disabled}: {e}");
            assert_eq!(e.exit_code(), exit::USAGE);
        }
    }

    #[test]
    fn direct_target_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let e = find_target("x", Some(&gone), None, true, None).unwrap_err();
        assert!(matches!(e, SignalCommandError::NoProjectDir(_)), "{e}");
        assert!(!gone.exists(), "not recreated");
        let t = find_target("x", Some(dir.path()), None, true, None).unwrap();
        assert_eq!(t.prefix, "x");
    }
}
