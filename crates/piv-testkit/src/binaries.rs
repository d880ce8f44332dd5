//! Where the binaries of this build are, for the tests, the benches and the demo: `piv`, and the scripted claude (an example of the root package) built on demand with the cargo, target directory and profile that built the caller.
//!
//! `piv-fake-claude` is `examples/piv-fake-claude.rs` of the root package rather than a
//! binary, so that `cargo install` never installs it. Examples are not binaries of the
//! package, so there is no `CARGO_BIN_EXE_piv-fake-claude`: it is found next to the
//! running executable instead (tests and benches run from `target/<profile>/deps/`,
//! examples from `target/<profile>/examples/`, and the example lands in
//! `target/<profile>/examples/`). `cargo test` builds every example before it runs a test;
//! `cargo bench`, `cargo run --example` and a targeted `cargo test --test main` do not,
//! so [`fake_claude`] runs `cargo build --example piv-fake-claude` once per process first
//! (a no-op when it is up to date, and it never runs a stale one).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The scripted claude's example name (and file name in `target/<profile>/examples/`).
pub const FAKE_CLAUDE: &str = "piv-fake-claude";

/// When set, the scripted claude to run instead (nothing is built then).
pub const FAKE_CLAUDE_BIN_ENV: &str = "PIV_FAKE_CLAUDE_BIN";

/// The workspace root, where piv's `Cargo.toml` is (this crate is `crates/piv-testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>` of the running executable (it runs from `deps/` or `examples/`).
pub fn profile_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} is not under target/<profile>/", exe.display()))
}

/// `cargo build --quiet <args>` in the workspace root with the cargo, target directory and
/// profile that built the running executable (`target/debug` → dev, `target/release` →
/// release, which `cargo bench` shares, `target/<p>` → `--profile <p>`). A no-op when
/// everything is up to date. When cargo cannot be run at all, says so and leaves the
/// caller to use what exists.
pub fn cargo_build(args: &[&str]) -> Result<(), String> {
    let profile_dir = profile_dir()?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo sets these for the program it runs (the caller); inherited, they would look
    // like a changed environment to build scripts that watch them (ring watches
    // `CARGO_MANIFEST_DIR`) and rebuild half the tree.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_a_run) {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`cargo build {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => {
            eprintln!(
                "(cannot run cargo to build {}: {e}; using what exists)",
                args.join(" ")
            );
            Ok(())
        }
    }
}

/// Whether cargo sets this variable for the program it runs ("Environment variables Cargo
/// sets for crates"), as opposed to one that configures cargo.
fn set_by_cargo_for_a_run(key: &str) -> bool {
    matches!(
        key,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
}

/// `path`, when it exists; otherwise an error that says how to get it.
fn existing(path: PathBuf, build: &str) -> Result<PathBuf, String> {
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run `{build}` (or set {FAKE_CLAUDE_BIN_ENV} for the scripted claude)",
            path.display()
        ))
    }
}

/// The scripted claude of this build: `$PIV_FAKE_CLAUDE_BIN`, else
/// `target/<profile>/examples/piv-fake-claude`, built first (once per process). Panics,
/// saying what to do, when it cannot be had: for the tests and the benches.
pub fn fake_claude() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = match std::env::var_os(FAKE_CLAUDE_BIN_ENV) {
            Some(p) => PathBuf::from(p),
            None => cargo_build(&["--example", FAKE_CLAUDE])
                .and_then(|()| profile_dir())
                .and_then(|dir| {
                    existing(
                        dir.join("examples").join(FAKE_CLAUDE),
                        "cargo build --example piv-fake-claude",
                    )
                })
                .unwrap_or_else(|e| panic!("the scripted claude: {e}")),
        };
        path.into_os_string()
            .into_string()
            .expect("the scripted claude's path is UTF-8")
    })
}

/// `piv` and the scripted claude of this build, both built first (a no-op when up to
/// date): for programs that are not tests, such as the demo (`cargo run --example` builds
/// only the example itself).
pub fn piv_and_fake_claude() -> Result<(PathBuf, PathBuf), String> {
    cargo_build(&["--bin", "piv", "--example", FAKE_CLAUDE])?;
    let dir = profile_dir()?;
    let build = "cargo build --bins --example piv-fake-claude";
    let piv = existing(dir.join("piv"), build)?;
    let fake = existing(dir.join("examples").join(FAKE_CLAUDE), build)?;
    Ok((piv, fake))
}
