//! A throwaway project as piv expects one: `.agents/manifest.yaml`, the PIV slash
//! commands under `.claude/commands/`, and a git repository with a first commit. Used by
//! the tests and the `two_instances` demo.

use std::path::Path;
use std::process::Command;

/// The slash commands piv sends (and the pre-loop ones).
pub const COMMAND_FILES: &[&str] = &[
    "prime",
    "plan-feature",
    "execute",
    "validate-implementation",
    "commit",
    "research-stack",
    "preflight",
];

/// A manifest with the pre-loop satisfied (PRD, preflight, a fresh profile) and
/// `phases` phases not started, plus a key piv does not model.
pub fn ready_manifest(phases: u32) -> String {
    let mut m = String::from(
        "prd:\n  path: .agents/PRD.md\n  status: validated\npreflight:\n  status: passed\nprofiles:\n  rust:\n    path: .agents/reference/rust-profile.md\n    freshness: fresh\nphases:\n",
    );
    for n in 1..=phases {
        m.push_str(&format!(
            "  {n}:\n    plan: not_started\n    execution: not_started\n    validation: not_run\n    name: Phase number {n}\n"
        ));
    }
    m.push_str("custom_notes:\n  owner: keep-me\n");
    m
}

/// Creates the project in `dir` (which may exist) with `manifest`.
pub fn scaffold(dir: &Path, manifest: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join(".agents"))?;
    std::fs::create_dir_all(dir.join(".claude/commands"))?;
    for c in COMMAND_FILES {
        std::fs::write(
            dir.join(".claude/commands").join(format!("{c}.md")),
            format!("# /{c}\n"),
        )?;
    }
    std::fs::write(dir.join(".agents/manifest.yaml"), manifest)?;
    git(dir, &["init", "-q"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-qm", "init"])?;
    Ok(())
}

/// Runs git with a fixed identity (the machine may have none configured).
pub fn git(dir: &Path, args: &[&str]) -> std::io::Result<()> {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "piv-test")
        .env("GIT_AUTHOR_EMAIL", "piv@test")
        .env("GIT_COMMITTER_NAME", "piv-test")
        .env("GIT_COMMITTER_EMAIL", "piv@test")
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "git {args:?} failed: {status}"
        )))
    }
}
