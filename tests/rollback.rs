//! Rollbacks that keep the user's work (issue 11 item 5): the working-tree snapshot taken
//! at each checkpoint, restored byte for byte by a rollback, through the real git.

use std::path::Path;

use piv::io::git;

fn sh_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repo with a committed `tracked.txt` and `gone.txt`, an ignored `.env` and `build/`.
fn repo_with_user_work() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    sh_git(repo, &["init", "-q"]);
    std::fs::write(repo.join(".gitignore"), ".env\nbuild/\n").unwrap();
    std::fs::write(repo.join("tracked.txt"), "committed\n").unwrap();
    std::fs::write(repo.join("gone.txt"), "to be deleted by the user\n").unwrap();
    sh_git(repo, &["add", "-A"]);
    sh_git(repo, &["commit", "-qm", "init"]);
    // The user's work in progress, not committed.
    std::fs::write(
        repo.join("tracked.txt"),
        "committed\nplus an uncommitted edit\n",
    )
    .unwrap();
    std::fs::write(repo.join("notes.md"), "untracked user notes\n").unwrap();
    std::fs::remove_file(repo.join("gone.txt")).unwrap();
    std::fs::write(repo.join(".env"), "SECRET=1\n").unwrap();
    std::fs::create_dir_all(repo.join("build")).unwrap();
    std::fs::write(repo.join("build/cache.bin"), [0u8, 1, 2, 255]).unwrap();
    dir
}

#[test]
fn a_rollback_returns_the_tree_to_the_snapshot_taken_at_the_checkpoint() {
    let dir = repo_with_user_work();
    let repo = dir.path();
    let now = chrono::Utc::now();
    let tag = git::create_checkpoint(repo, 1, now).unwrap();
    let dirty = git::snapshot_worktree(repo, &tag, &[".agents"]).unwrap();
    assert!(dirty, "the tree had uncommitted work");
    let snapshot = git::snapshot_ref(&tag);
    // The snapshot leaves the index, the tree and HEAD alone.
    let status_before = sh_git(repo, &["status", "--porcelain"]);
    assert!(status_before.contains(" M tracked.txt"), "{status_before}");
    assert!(status_before.contains("?? notes.md"), "{status_before}");

    // The failed attempt: edits, new files, a commit, and it touches the ignored files.
    std::fs::write(repo.join("tracked.txt"), "the agent's broken version\n").unwrap();
    std::fs::write(repo.join("notes.md"), "overwritten by the agent\n").unwrap();
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/attempt.rs"), "broken\n").unwrap();
    sh_git(repo, &["add", "-A"]);
    sh_git(repo, &["commit", "-qm", "attempt"]);
    std::fs::write(repo.join("attempt-untracked.txt"), "left over\n").unwrap();
    std::fs::write(repo.join("build/cache.bin"), [9u8, 9]).unwrap();

    let used = git::rollback_keeping(repo, &tag, &[".agents"]).unwrap();
    assert_eq!(used.as_deref(), Some(snapshot.as_str()));
    assert_eq!(
        std::fs::read_to_string(repo.join("tracked.txt")).unwrap(),
        "committed\nplus an uncommitted edit\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.md")).unwrap(),
        "untracked user notes\n"
    );
    assert!(!repo.join("gone.txt").exists(), "the user's deletion stays");
    assert!(!repo.join("src").exists(), "the attempt's files are gone");
    assert!(!repo.join("attempt-untracked.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    // Ignored files are never touched, even when the attempt changed them.
    assert_eq!(
        std::fs::read(repo.join("build/cache.bin")).unwrap(),
        [9u8, 9]
    );
    // HEAD is back at the checkpoint; the user's work is unstaged work in progress again.
    assert_eq!(
        sh_git(repo, &["rev-parse", "HEAD"]),
        sh_git(repo, &["rev-parse", &format!("{tag}^{{commit}}")])
    );
    assert_eq!(sh_git(repo, &["status", "--porcelain"]), status_before);
    // gc keeps the snapshot.
    sh_git(repo, &["gc", "-q", "--prune=now"]);
    assert!(sh_git(repo, &["cat-file", "-t", &snapshot]).trim() == "commit");
}

#[test]
fn a_clean_tree_snapshot_is_not_dirty_and_old_checkpoints_roll_back_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    sh_git(repo, &["init", "-q"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    sh_git(repo, &["add", "-A"]);
    sh_git(repo, &["commit", "-qm", "init"]);
    let now = chrono::Utc::now();
    let tag = git::create_checkpoint(repo, 1, now).unwrap();
    assert!(!git::snapshot_worktree(repo, &tag, &[".agents"]).unwrap());
    // piv's own records are not the user's work in progress.
    std::fs::create_dir_all(repo.join(".agents/plans")).unwrap();
    std::fs::write(repo.join(".agents/plans/p.md"), "plan\n").unwrap();
    let tag2 = git::create_checkpoint(repo, 1, now).unwrap();
    assert!(!git::snapshot_worktree(repo, &tag2, &[".agents"]).unwrap());
    assert!(git::snapshot_worktree(repo, &tag2, &[]).unwrap());
    std::fs::remove_dir_all(repo.join(".agents")).unwrap();
    // A checkpoint without a snapshot (made by an older piv): reset and clean only.
    let old = git::create_checkpoint(repo, 2, now).unwrap();
    std::fs::write(repo.join("a.txt"), "two\n").unwrap();
    std::fs::write(repo.join("b.txt"), "new\n").unwrap();
    assert_eq!(git::rollback(repo, &old).unwrap(), None);
    assert_eq!(
        std::fs::read_to_string(repo.join("a.txt")).unwrap(),
        "one\n"
    );
    assert!(!repo.join("b.txt").exists());
}
