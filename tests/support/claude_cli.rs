//! Finds the pinned real Claude Code CLI for the real-CLI tests and builds the environment that points it at the Messages API stand-in.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

/// `.ci/claude-code.version`: the one place the pinned version is written.
const VERSION_FILE: &str = include_str!("../../.ci/claude-code.version");

/// Env var naming the real CLI (set by `.ci/run`).
pub const BIN_ENV: &str = "PIV_TEST_CLAUDE_BIN";

/// The pinned CLI version, e.g. `2.1.332`.
pub fn pinned_version() -> &'static str {
    VERSION_FILE
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a version in .ci/claude-code.version")
}

/// Where `.ci/run` installs the pinned CLI: `$HOME/.cache/piv-test/claude-code-<version>`.
pub fn default_install_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".cache/piv-test")
            .join(format!("claude-code-{}", pinned_version())),
    )
}

/// The real CLI: `$PIV_TEST_CLAUDE_BIN`, else the default install path when it exists.
pub fn find() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "{BIN_ENV}={} does not exist: run .ci/run or unset it",
            bin.display()
        );
        return Some(bin);
    }
    let bin = default_install_dir()?.join("node_modules/.bin/claude");
    bin.exists().then_some(bin)
}

/// The real CLI, or None after a loud skip message on stderr (the caller returns).
pub fn find_or_skip(test: &str) -> Option<PathBuf> {
    let found = find();
    if found.is_none() {
        // Straight to the process's stderr in one write: the test harness captures
        // `eprintln!`, and tests run in parallel.
        let message = format!(
            "\n*** SKIPPED: real Claude CLI not installed — run .ci/run (or: npm install \
             --prefix ~/.cache/piv-test/claude-code-{v} @anthropic-ai/claude-code@{v}) to \
             install it, or set {BIN_ENV} [{test}] ***\n",
            v = pinned_version()
        );
        let _ = std::io::stderr().write_all(message.as_bytes());
    }
    found
}

/// The environment that makes the real CLI (started by piv, which passes its environment
/// on) talk only to the stand-in at `base_url`: an API key piv keeps
/// (`PIV_ALLOW_API_KEY=1`; it strips the key otherwise), and no auto-update, telemetry,
/// error reporting or other non-essential traffic.
pub fn env(bin: &std::path::Path, base_url: &str) -> Vec<(String, String)> {
    [
        ("PIV_CLAUDE_BIN", bin.to_string_lossy().as_ref()),
        ("ANTHROPIC_BASE_URL", base_url),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("PIV_ALLOW_API_KEY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
