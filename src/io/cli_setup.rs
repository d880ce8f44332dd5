//! What the Claude Code CLI needs from the machine before a session can work: the slash
//! command files where the CLI looks for them, and a permission mode it accepts for the
//! user piv runs as (root is special).

use std::path::{Path, PathBuf};

/// Whether piv runs as root (the CLI treats root specially).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The startup message when the permission flag piv would send will be refused: the CLI
/// rejects `--dangerously-skip-permissions` (and `bypassPermissions`) for root unless
/// `IS_SANDBOX=1`; `auto` and the other modes are accepted.
pub fn root_permission_problem(skip_permissions: bool) -> Option<String> {
    root_permission_problem_for(
        is_root(),
        skip_permissions,
        std::env::var("IS_SANDBOX").ok().as_deref(),
    )
}

/// [`root_permission_problem`] with its inputs made explicit (for tests).
pub fn root_permission_problem_for(
    root: bool,
    skip_permissions: bool,
    is_sandbox: Option<&str>,
) -> Option<String> {
    let sandboxed = is_sandbox.is_some_and(|v| !v.trim().is_empty() && v.trim() != "0");
    (root && skip_permissions && !sandboxed).then(|| {
        "piv runs as root, and Claude Code refuses --dangerously-skip-permissions for root \
         (\"cannot be used with root/sudo privileges\"). Run piv as a normal user; or set \
         PIV_PERMISSION_MODE=auto, which Claude Code accepts as root (a classifier then \
         approves or blocks each tool call: actions it judges risky are refused, so a step can \
         fail where bypassPermissions would have run it); or, if this machine is a disposable \
         sandbox, set IS_SANDBOX=1."
            .to_string()
    })
}

/// The slash commands (without `/`) that neither `<project>/.claude/commands/<name>.md`
/// nor the user's commands provide: `$CLAUDE_CONFIG_DIR/commands/<name>.md` when that is
/// set, else `<home>/.claude/commands/<name>.md` (where the CLI looks).
pub fn missing_commands(
    project_dir: &Path,
    user_home: Option<&Path>,
    names: &[&str],
) -> Vec<String> {
    let config_dir = std::env::var_os("CLAUDE_CONFIG_DIR").map(PathBuf::from);
    missing_commands_in(
        project_dir,
        &user_commands_dir(config_dir, user_home),
        names,
    )
}

/// Where the CLI looks for the user's commands: `$CLAUDE_CONFIG_DIR/commands` when that
/// is set (and not empty), else `~/.claude/commands`.
pub fn user_commands_dir(config_dir: Option<PathBuf>, user_home: Option<&Path>) -> Option<PathBuf> {
    match config_dir {
        Some(dir) if !dir.as_os_str().is_empty() => Some(dir.join("commands")),
        _ => user_home.map(|h| h.join(".claude/commands")),
    }
}

/// [`missing_commands`] with the user's commands directory made explicit.
pub fn missing_commands_in(
    project_dir: &Path,
    user_commands: &Option<PathBuf>,
    names: &[&str],
) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            let file = format!("{name}.md");
            let in_project = project_dir.join(".claude/commands").join(&file).is_file();
            let in_user = user_commands
                .as_ref()
                .is_some_and(|d| d.join(&file).is_file());
            !in_project && !in_user
        })
        .map(|n| n.to_string())
        .collect()
}
