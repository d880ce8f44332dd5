//! The `piv` binary: loads the project's `.env`, sets up error reports and logging, parses
//! the command line and dispatches to the command. Everything else lives in the library.
//!
//! Exit codes (see `piv::cli::exit`):
//! - 0: done, or stopped on request;
//! - 1: stopped for a human (escalation, cost cap) or a runtime failure;
//! - 2: usage or input error (bad flag, missing or unreadable manifest, unknown prefix,
//!   another instance already running on the project). clap's own usage errors also exit 2.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use piv::cli::{self, Cli, Command};
use piv::commands;
use tracing_subscriber::EnvFilter;

fn main() {
    // `.env` must be loaded before clap reads the environment, so find the project dir
    // from the raw arguments first.
    load_project_env(std::env::args_os().skip(1).collect());
    let _ = color_eyre::install();
    let cli = Cli::parse();
    init_logging(&cli.command);
    let code = match &cli.command {
        Command::DryRun(args) => cli::run_dry_run(args),
        Command::Run(args) => piv::run::run(args),
        Command::Status(args) => commands::status::run(args),
        Command::Signal(args) => commands::signal::run(args),
        Command::Cost(args) => commands::cost::run(args),
    };
    std::process::exit(code);
}

/// Reads `<project>/.env` if present, never overriding variables already set. The project
/// is `--project DIR` / `--project=DIR`, else `PIV_PROJECT_DIR`, else the current directory.
fn load_project_env(args: Vec<OsString>) {
    let mut project: Option<PathBuf> = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        if text == "--project" {
            project = iter.next().map(PathBuf::from);
        } else if let Some(dir) = text.strip_prefix("--project=") {
            project = Some(PathBuf::from(dir));
        } else if text == "--" {
            break;
        }
    }
    let project = project
        .or_else(|| std::env::var_os("PIV_PROJECT_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let env_file = project.join(".env");
    if env_file.is_file() {
        if let Err(e) = dotenvy::from_path(&env_file) {
            eprintln!("piv: warning: cannot read {}: {e}", env_file.display());
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG`; one-shot commands default to warnings only so
/// their stdout and stderr stay clean.
fn init_logging(command: &Command) {
    let default = match command {
        Command::DryRun(_) | Command::Status(_) | Command::Signal(_) | Command::Cost(_) => "warn",
        // `piv run` logs to its project's log file too; it sets up its own subscriber.
        Command::Run(_) => return,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
