//! `piv status [--all] [--json]`: finds the instances to report (this project through the
//! registry or its PID file, or every registered instance), probes each from its files
//! with `io::status_probe`, and prints a table or one JSON object.
//!
//! Also home to the registry look-up `piv signal` shares: both read the registry the same
//! way, without creating `$PIV_HOME` when nothing was ever registered.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::{exit, resolve_project_dir, StatusArgs};
use crate::core::registry::Instance;
use crate::core::status::{unix_secs, InstanceFacts, InstanceStatus};
use crate::core::status_report::render_table;
use crate::io::home::{self, HomeError};
use crate::io::pid_file::PidFile;
use crate::io::registry_store::{RegistryError, RegistryStore};
use crate::io::{state_file, status_probe};

/// Why `piv status` (or the registry look-up of `piv signal`) printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("project directory {0} does not exist: pass --project DIR or set PIV_PROJECT_DIR")]
    NoProjectDir(PathBuf),
    #[error(
        "the registry is off (PIV_REGISTRY_DISABLED is set), so there is no list of \
         instances: unset PIV_REGISTRY_DISABLED, or drop --all to see this project only"
    )]
    RegistryDisabled,
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("cannot read the registry in {home}: {source}")]
    Registry {
        home: PathBuf,
        #[source]
        source: RegistryError,
    },
}

impl StatusError {
    /// Input problems are usage errors (2); an unreadable registry is a runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            StatusError::NoProjectDir(_) | StatusError::RegistryDisabled => exit::USAGE,
            StatusError::Home(HomeError::NoUserHome | HomeError::EmptyEnv) => exit::USAGE,
            StatusError::Home(_) | StatusError::Registry { .. } => exit::STOPPED,
        }
    }
}

/// The live registered instances of the home named by `--home` / `PIV_HOME` (dead ones
/// are pruned). An absent `registry.json` is an empty registry, and the home is then not
/// created: looking must not leave a `~/.piv-orchestrator` behind.
pub fn registered_instances(home_arg: Option<&Path>) -> Result<Vec<Instance>, StatusError> {
    let home = home::resolve_home(home_arg.map(Path::as_os_str))?;
    let store = RegistryStore::new(home.clone());
    if !store.registry_path().exists() {
        return Ok(Vec::new());
    }
    store
        .list()
        .map_err(|source| StatusError::Registry { home, source })
}

/// `dir` made absolute and free of symlinks when possible, as `piv run` registers it.
pub fn canonical(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// The registry entry of `project_dir` (canonical), comparing canonical paths so a
/// symlinked or relative spelling still matches.
pub fn entry_for<'a>(instances: &'a [Instance], project_dir: &Path) -> Option<&'a Instance> {
    instances
        .iter()
        .find(|i| Path::new(&i.project_dir) == project_dir)
        .or_else(|| {
            instances
                .iter()
                .find(|i| canonical(Path::new(&i.project_dir)) == project_dir)
        })
}

/// The prefix an unregistered project goes by: the one its live instance published, else
/// `configured` (`--project-prefix` / `TELEGRAM_PROJECT_PREFIX`), else the directory's
/// name (what `piv run` would use).
pub fn unregistered_prefix(
    project_dir: &Path,
    live_pid: Option<u32>,
    configured: Option<&str>,
) -> String {
    if let Some(state) = state_file::read(project_dir).filter(|s| Some(s.pid) == live_pid) {
        return state.prefix;
    }
    if let Some(prefix) = configured.filter(|p| !p.trim().is_empty()) {
        return prefix.to_string();
    }
    project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| project_dir.display().to_string())
}

/// What is known about `project_dir` (canonical) without the registry: the `piv run`
/// holding the project lock, if one does (a live PID alone may be a reused one).
fn facts_from_pid_file(project_dir: &Path, configured_prefix: Option<&str>) -> InstanceFacts {
    let pid = PidFile::running(project_dir);
    let record = pid.and_then(|_| PidFile::read(project_dir));
    InstanceFacts {
        prefix: unregistered_prefix(project_dir, pid, configured_prefix),
        project_dir: project_dir.display().to_string(),
        pid,
        is_bot_owner: false,
        started_at_unix_secs: record.and_then(|r| unix_secs(&r.started_at)),
    }
}

/// This project's status: its registry entry when it has one, else its PID file (and
/// `configured_prefix`, see [`unregistered_prefix`]).
pub fn project_status(
    project_dir: &Path,
    home_arg: Option<&Path>,
    registry_disabled: bool,
    configured_prefix: Option<&str>,
) -> Result<InstanceStatus, StatusError> {
    if !project_dir.is_dir() {
        return Err(StatusError::NoProjectDir(project_dir.to_path_buf()));
    }
    let project_dir = canonical(project_dir);
    let registered = if registry_disabled {
        Vec::new()
    } else {
        registered_instances(home_arg)?
    };
    let facts = match entry_for(&registered, &project_dir) {
        Some(instance) => InstanceFacts::of(instance),
        None => facts_from_pid_file(&project_dir, configured_prefix),
    };
    Ok(status_probe::probe(&facts, &project_dir))
}

/// Every registered instance's status, sorted by prefix. An instance whose manifest cannot
/// be read is kept, with `error` saying why.
pub fn all_statuses(
    home_arg: Option<&Path>,
    registry_disabled: bool,
) -> Result<Vec<InstanceStatus>, StatusError> {
    if registry_disabled {
        return Err(StatusError::RegistryDisabled);
    }
    let mut instances = registered_instances(home_arg)?;
    instances.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    Ok(instances
        .iter()
        .map(|i| status_probe::probe(&InstanceFacts::of(i), Path::new(&i.project_dir)))
        .collect())
}

/// The text `piv status` prints.
fn render(statuses: &[InstanceStatus], all: bool, json: bool) -> String {
    let mut out = if json {
        let value = if all {
            serde_json::json!({ "instances": statuses })
        } else {
            serde_json::to_value(&statuses[0]).expect("a status always serialises")
        };
        serde_json::to_string(&value).expect("a JSON value always serialises")
    } else {
        render_table(statuses)
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout; a closed stdout is a runtime failure (exit 1).
pub fn print_stdout(text: &str) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => exit::OK,
        Err(_) => exit::STOPPED,
    }
}

/// `piv status`: prints the status (table or JSON) on stdout, errors on stderr; returns
/// the exit code.
pub fn run(args: &StatusArgs) -> i32 {
    if let Some(code) = super::coordination_gate(&args.coordination) {
        return code;
    }
    let statuses = if args.all {
        all_statuses(args.home.as_deref(), args.no_registry)
    } else {
        let project_dir = resolve_project_dir(args.project.as_deref());
        project_status(
            &project_dir,
            args.home.as_deref(),
            args.no_registry,
            args.project_prefix.as_deref(),
        )
        .map(|s| vec![s])
    };
    let statuses = match statuses {
        Ok(local) if args.all => super::with_other_machines(local, &args.coordination),
        other => other,
    };
    match statuses {
        Ok(statuses) => print_stdout(&render(&statuses, args.all, args.json)),
        Err(e) => {
            eprintln!("piv: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_project_dir_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let err = project_status(&missing, Some(dir.path()), true, None).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[test]
    fn all_with_the_registry_off_is_refused() {
        let err = all_statuses(None, true).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("PIV_REGISTRY_DISABLED"), "{err}");
    }

    #[test]
    fn an_unregistered_prefix_is_published_else_configured_else_the_dir_name() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("proj");
        std::fs::create_dir(&project).unwrap();
        for (configured, want) in [
            (Some("ops"), "ops"),
            (Some("  "), "proj"),
            (Some(""), "proj"),
            (None, "proj"),
        ] {
            assert_eq!(unregistered_prefix(&project, None, configured), want);
        }
    }

    #[test]
    fn looking_does_not_create_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        assert!(registered_instances(Some(&home)).unwrap().is_empty());
        assert!(!home.exists());
    }

    #[test]
    fn entries_match_by_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let instances = vec![Instance::new("a", link.to_str().unwrap(), 1, "t", "m")];
        assert!(entry_for(&instances, &canonical(&real)).is_some());
        assert!(entry_for(&instances, &canonical(dir.path())).is_none());
    }

    #[test]
    fn json_is_one_object_per_shape() {
        let dir = tempfile::tempdir().unwrap();
        let s = project_status(dir.path(), None, true, None).unwrap();
        assert!(s.error.is_some(), "no manifest: {s:?}");
        let one: serde_json::Value =
            serde_json::from_str(&render(std::slice::from_ref(&s), false, true)).unwrap();
        assert_eq!(one["pid"], serde_json::Value::Null);
        let all: serde_json::Value =
            serde_json::from_str(&render(&[s.clone(), s], true, true)).unwrap();
        assert_eq!(all["instances"].as_array().unwrap().len(), 2);
    }
}
