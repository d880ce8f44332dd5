//! Git for checkpoints: tags before execute, rollback to a tag, and the few queries the loop needs.
//!
//! Every call runs `git` in the project directory with a 30 s limit and
//! `GIT_TERMINAL_PROMPT=0`, so a credential prompt or a stuck hook can never hang the
//! loop. The calls block: actors run them off the actor thread (`spawn_blocking` or a
//! thread). Errors name the git command and carry its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long one git command may run.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures of the git adapter; each names the directory and the git command.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run `git {command}` in {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {command}` in {dir} failed ({status}): {stderr}")]
    Failed {
        dir: PathBuf,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`git {command}` in {dir} timed out after {secs} s and was killed")]
    Timeout {
        dir: PathBuf,
        command: String,
        secs: u64,
    },
}

fn run_git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let command = args.join(" ");
    let child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| GitError::Spawn {
            dir: dir.to_path_buf(),
            command: command.clone(),
            source,
        })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<std::io::Result<Output>>();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(GIT_TIMEOUT) {
        Ok(result) => result.map_err(|source| GitError::Spawn {
            dir: dir.to_path_buf(),
            command: command.clone(),
            source,
        })?,
        Err(_) => {
            // The waiting thread still owns the child and reaps it once it dies.
            // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            return Err(GitError::Timeout {
                dir: dir.to_path_buf(),
                command,
                secs: GIT_TIMEOUT.as_secs(),
            });
        }
    };
    if !output.status.success() {
        return Err(GitError::Failed {
            dir: dir.to_path_buf(),
            command,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// `-c user.name/-c user.email` when the machine has no git identity, so piv's own commits
/// never fail on a fresh machine; an identity the user configured always wins.
fn identity_args(dir: &Path) -> Vec<&'static str> {
    if run_git(dir, &["config", "user.email"]).is_ok_and(|s| !s.is_empty()) {
        Vec::new()
    } else {
        vec!["-c", "user.name=piv", "-c", "user.email=piv@localhost"]
    }
}

fn commit_all(dir: &Path, message: &str) -> Result<(), GitError> {
    run_git(dir, &["add", "-A"])?;
    let mut args = identity_args(dir);
    args.extend([
        "commit",
        "--allow-empty",
        "--no-verify",
        "-q",
        "-m",
        message,
    ]);
    run_git(dir, &args).map(drop)
}

/// Makes `dir` a git repository with at least one commit (for `piv run` only; dry-run has
/// no side effects). Returns whether anything was created.
pub fn ensure_repo(dir: &Path) -> Result<bool, GitError> {
    let mut created = false;
    if !dir.join(".git").exists() {
        run_git(dir, &["init", "-q"])?;
        created = true;
    }
    if head(dir).is_none() {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "project".to_string());
        commit_all(dir, &format!("chore: initialize {name} project"))?;
        created = true;
    }
    Ok(created)
}

/// The tag name for a checkpoint of `phase` at `now`: ISO time without `:` and without
/// fractional seconds, e.g. `piv-checkpoint/phase-2-2026-02-19T110500Z`.
pub fn checkpoint_tag_name(phase: u32, now: DateTime<Utc>) -> String {
    format!(
        "piv-checkpoint/phase-{phase}-{}",
        now.format("%Y-%m-%dT%H%M%SZ")
    )
}

/// Creates a lightweight checkpoint tag at HEAD (committing everything first when the
/// repository has no commit yet) and returns its name. A name already taken gets `-2`, `-3`, ...
pub fn create_checkpoint(dir: &Path, phase: u32, now: DateTime<Utc>) -> Result<String, GitError> {
    if head(dir).is_none() {
        commit_all(dir, "chore: initial commit before piv checkpoint")?;
    }
    let base = checkpoint_tag_name(phase, now);
    let mut tag = base.clone();
    let mut n = 1;
    while tag_exists(dir, &tag) {
        n += 1;
        tag = format!("{base}-{n}");
    }
    run_git(dir, &["tag", &tag])?;
    Ok(tag)
}

fn tag_exists(dir: &Path, tag: &str) -> bool {
    run_git(
        dir,
        &[
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/tags/{tag}^{{commit}}"),
        ],
    )
    .is_ok()
}

/// Puts the working tree back to `tag`: `git reset --hard <tag>` then `git clean -fd`
/// (untracked files and directories go; ignored files stay).
pub fn rollback(dir: &Path, tag: &str) -> Result<(), GitError> {
    rollback_keeping(dir, tag, &[])
}

/// [`rollback`], except that untracked files under each of `keep` (directories relative
/// to `dir`, e.g. `.agents`) survive the clean: piv's records and plans are not the work
/// being rolled back. Tracked files there are still reset to `tag`.
pub fn rollback_keeping(dir: &Path, tag: &str, keep: &[&str]) -> Result<(), GitError> {
    run_git(dir, &["reset", "-q", "--hard", tag])?;
    let excludes: Vec<String> = keep
        .iter()
        .map(|k| format!("--exclude=/{}/", k.trim_matches('/')))
        .collect();
    let mut args = vec!["clean", "-fdq"];
    args.extend(excludes.iter().map(String::as_str));
    run_git(dir, &args)?;
    Ok(())
}

/// Whether `git status --porcelain` shows anything.
pub fn has_uncommitted(dir: &Path) -> Result<bool, GitError> {
    Ok(!run_git(dir, &["status", "--porcelain"])?.is_empty())
}

/// The short hash of HEAD, or None when there is no repository or no commit yet.
pub fn head(dir: &Path) -> Option<String> {
    run_git(dir, &["rev-parse", "-q", "--verify", "--short", "HEAD"])
        .ok()
        .filter(|s| !s.is_empty())
}

/// Number of commits reachable from HEAD (0 without commits).
pub fn commit_count(dir: &Path) -> Result<u64, GitError> {
    if head(dir).is_none() {
        return Ok(0);
    }
    let out = run_git(dir, &["rev-list", "--count", "HEAD"])?;
    Ok(out.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tag_name_format() {
        let now = Utc.with_ymd_and_hms(2026, 2, 19, 11, 5, 0).unwrap()
            + chrono::Duration::milliseconds(123);
        assert_eq!(
            checkpoint_tag_name(2, now),
            "piv-checkpoint/phase-2-2026-02-19T110500Z"
        );
    }
}
