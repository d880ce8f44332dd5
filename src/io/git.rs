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
    run_git_env(dir, args, &[])
}

/// [`run_git`] with extra environment (e.g. `GIT_INDEX_FILE` for a private index).
fn run_git_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Result<String, GitError> {
    let command = args.join(" ");
    let child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
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

/// The `.gitignore` lines piv adds before it makes a project's first commit, so that no
/// secret file is ever committed by piv.
pub const SECRET_IGNORES: &[&str] = &[".env", ".env*"];

/// Adds [`SECRET_IGNORES`] to `<dir>/.gitignore` (created if missing) unless each line is
/// already there. Returns whether the file changed.
pub fn ignore_secret_files(dir: &Path) -> Result<bool, GitError> {
    crate::io::gitignore::ensure_lines(
        &dir.join(".gitignore"),
        "# secrets: never committed (added by piv)",
        SECRET_IGNORES,
    )
    .map_err(|source| GitError::Spawn {
        dir: dir.to_path_buf(),
        command: "(write .gitignore)".into(),
        source,
    })
}

/// Makes `dir` a git repository with at least one commit (for `piv run` only; dry-run has
/// no side effects). Returns whether anything was created. Before that first commit,
/// `.env` and `.env*` are added to `.gitignore`.
pub fn ensure_repo(dir: &Path) -> Result<bool, GitError> {
    let mut created = false;
    if !dir.join(".git").exists() {
        run_git(dir, &["init", "-q"])?;
        created = true;
    }
    if head(dir).is_none() {
        ignore_secret_files(dir)?;
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
        ignore_secret_files(dir)?;
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

/// The ref holding the working-tree snapshot taken with checkpoint `tag`. Under
/// `refs/piv/`, so `git gc` keeps it and no branch or tag listing shows it.
pub fn snapshot_ref(tag: &str) -> String {
    format!("refs/piv/snapshots/{tag}")
}

/// Records the whole working tree as it is — tracked changes and untracked, non-ignored
/// files — as a commit on top of HEAD under [`snapshot_ref`]`(tag)`, without touching the
/// index, the working tree or any branch (a private index file does the staging).
/// Returns whether the tree differed from HEAD outside `not_work` (directories such as
/// `.agents`, where piv's own records change between steps): uncommitted work existed.
pub fn snapshot_worktree(dir: &Path, tag: &str, not_work: &[&str]) -> Result<bool, GitError> {
    let index = PathBuf::from(run_git(
        dir,
        &["rev-parse", "--git-path", "piv-snapshot.index"],
    )?);
    let index = if index.is_absolute() {
        index
    } else {
        dir.join(index)
    };
    let env = [("GIT_INDEX_FILE", index.as_path())];
    let result = (|| {
        run_git_env(dir, &["read-tree", "HEAD"], &env)?;
        run_git_env(dir, &["add", "-A"], &env)?;
        let tree = run_git_env(dir, &["write-tree"], &env)?;
        let message = format!("piv: working tree at checkpoint {tag}");
        let mut args = identity_args(dir);
        args.extend([
            "commit-tree",
            tree.as_str(),
            "-p",
            "HEAD",
            "-m",
            message.as_str(),
        ]);
        let commit = run_git(dir, &args)?;
        run_git(dir, &["update-ref", &snapshot_ref(tag), &commit])?;
        let excluded: Vec<String> = not_work
            .iter()
            .map(|k| format!(":(exclude){}", k.trim_matches('/')))
            .collect();
        let mut args = vec!["diff", "--name-only", "HEAD", commit.as_str(), "--", "."];
        args.extend(excluded.iter().map(String::as_str));
        Ok(!run_git(dir, &args)?.is_empty())
    })();
    let _ = std::fs::remove_file(&index);
    result
}

/// Whether `reference` names a commit.
fn commit_exists(dir: &Path, reference: &str) -> bool {
    run_git(
        dir,
        &[
            "rev-parse",
            "-q",
            "--verify",
            &format!("{reference}^{{commit}}"),
        ],
    )
    .is_ok()
}

/// Puts the working tree back to `tag`: `git reset --hard <tag>` then `git clean -fd`
/// (untracked files and directories go; ignored files stay).
pub fn rollback(dir: &Path, tag: &str) -> Result<Option<String>, GitError> {
    rollback_keeping(dir, tag, &[])
}

/// [`rollback`], except that untracked files under each of `keep` (directories relative
/// to `dir`, e.g. `.agents`) survive the clean: piv's records and plans are not the work
/// being rolled back. Tracked files there are still reset to `tag`.
///
/// When the checkpoint has a working-tree snapshot ([`snapshot_worktree`]), the tree is
/// then returned to exactly that state: the user's uncommitted edits and untracked files
/// come back byte for byte (unstaged), files the snapshot did not have are gone, ignored
/// files are never touched. Returns the snapshot ref used, if any.
pub fn rollback_keeping(dir: &Path, tag: &str, keep: &[&str]) -> Result<Option<String>, GitError> {
    run_git(dir, &["reset", "-q", "--hard", tag])?;
    let excludes: Vec<String> = keep
        .iter()
        .map(|k| format!("--exclude=/{}/", k.trim_matches('/')))
        .collect();
    let mut args = vec!["clean", "-fdq"];
    args.extend(excludes.iter().map(String::as_str));
    run_git(dir, &args)?;
    let snapshot = snapshot_ref(tag);
    if !commit_exists(dir, &snapshot) {
        return Ok(None);
    }
    let kept: Vec<String> = keep
        .iter()
        .map(|k| format!(":(exclude){}", k.trim_matches('/')))
        .collect();
    let mut args = vec!["checkout", snapshot.as_str(), "--", "."];
    args.extend(kept.iter().map(String::as_str));
    run_git(dir, &args)?;
    // Tracked files the user had deleted before the checkpoint stay deleted.
    let mut args = vec![
        "diff",
        "--name-only",
        "-z",
        "--diff-filter=D",
        tag,
        snapshot.as_str(),
        "--",
        ".",
    ];
    args.extend(kept.iter().map(String::as_str));
    for path in run_git(dir, &args)?.split('\0').filter(|p| !p.is_empty()) {
        let _ = std::fs::remove_file(dir.join(path));
    }
    // The index back to HEAD: the restored changes are unstaged, as work in progress.
    run_git(dir, &["reset", "-q"])?;
    Ok(Some(snapshot))
}

/// Lines of `git status --porcelain` (the commit step's turn budget).
pub fn changed_file_count(dir: &Path) -> Result<u32, GitError> {
    Ok(run_git(dir, &["status", "--porcelain"])?.lines().count() as u32)
}

/// Tracked source files (`*.py *.ts *.js *.tsx *.jsx`, as the reference counted them for
/// the validate step's turn budget).
pub fn source_file_count(dir: &Path) -> Result<u32, GitError> {
    let out = run_git(
        dir,
        &["ls-files", "--", "*.py", "*.ts", "*.js", "*.tsx", "*.jsx"],
    )?;
    Ok(out.lines().filter(|l| !l.is_empty()).count() as u32)
}

/// The short hash of HEAD, or None when there is no repository or no commit yet.
pub fn head(dir: &Path) -> Option<String> {
    run_git(dir, &["rev-parse", "-q", "--verify", "--short", "HEAD"])
        .ok()
        .filter(|s| !s.is_empty())
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
