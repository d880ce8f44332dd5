//! Secrets and permissions: a `piv run` whose every Telegram request fails — nothing
//! listening, a server answering 401 (the stand-in with another token), one answering
//! 500, and one that never answers (the client's timeout) — writes its distinctive bot
//! token in no line of its log file, stdout or stderr, even with `RUST_LOG=debug`; and
//! after a run every file in `$PIV_HOME` is 0600 and every directory 0700.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use piv_testkit::bot_api::BotApiStandIn;
use piv_testkit::fake_claude::{Action, Rule, Scenario};

use crate::support::*;

const TOKEN: &str = "135792468:ZZsecretXQ9-do-not-leak-7f3e1c";
/// The part after the colon: the credential itself.
const SECRET: &str = "ZZsecretXQ9-do-not-leak-7f3e1c";

/// A local HTTP server answering every request with `status` (or never, with `None`).
struct BadServer {
    server: std::sync::Arc<tiny_http::Server>,
    url: String,
}

impl BadServer {
    fn start(status: Option<u16>) -> BadServer {
        let server = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let s = server.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while let Ok(request) = s.recv() {
                match status {
                    Some(code) => {
                        let body = format!(
                            r#"{{"ok":false,"error_code":{code},"description":"Internal Server Error"}}"#
                        );
                        let _ = request
                            .respond(tiny_http::Response::from_string(body).with_status_code(code));
                    }
                    // Never answered: the request is kept open until the server goes.
                    None => held.push(request),
                }
            }
        });
        BadServer { server, url }
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// Runs `piv run` (one phase, then idle with Telegram on) against `api_url` until its log
/// shows `until` (both a failed poll and a failed send), then stops it with SIGTERM.
/// Forum topics are off, so the first call of the send path is the send itself (with
/// topics on it is `getChat`, which [`run_against_with_topics`] covers).
fn run_against(api_url: &str, until: &[&str], timeout: Duration) -> (Sandbox, Output) {
    run_with(api_url, until, timeout, "off")
}

/// [`run_against`] with forum topics on: the notifier asks `getChat` first.
fn run_against_with_topics(api_url: &str, until: &[&str]) -> (Sandbox, Output) {
    run_with(api_url, until, DEADLINE, "on")
}

fn run_with(api_url: &str, until: &[&str], timeout: Duration, topics: &str) -> (Sandbox, Output) {
    let sb = Sandbox::new("secret", &ready_manifest(1));
    sb.scenario(Scenario::new().rule(Rule::new("", Action::Succeed)));
    let child = sb
        .piv(&["run"])
        .env("TELEGRAM_API_URL", api_url)
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_CHAT_ID", "99")
        .env("PIV_TELEGRAM_TOPICS", topics)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn piv run");
    let pid = child.id();
    let seen = wait_until(timeout, || {
        let log = sb.log();
        until.iter().all(|u| log.contains(u))
    });
    send_signal(pid, libc::SIGTERM);
    let out = wait_output(child, DEADLINE);
    assert!(
        seen,
        "the failures {until:?} never showed in the log\n{}",
        sb.log()
    );
    (sb, out)
}

fn assert_no_token(sb: &Sandbox, out: &Output) {
    let sources = [
        ("log", sb.log()),
        ("stdout", String::from_utf8_lossy(&out.stdout).into_owned()),
        ("stderr", String::from_utf8_lossy(&out.stderr).into_owned()),
    ];
    for (name, text) in &sources {
        let leaks: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(SECRET) || l.contains(&TOKEN.replace(':', "%3A")))
            .collect();
        assert!(leaks.is_empty(), "the token is in the {name}: {leaks:?}");
    }
    // Every log file piv wrote, rotated ones included.
    for entry in std::fs::read_dir(sb.project.join(".agents")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "the token is in {}",
                path.display()
            );
        }
    }
    assert!(
        sb.log().lines().count() > 10,
        "the log has content (debug level)"
    );
    assert_home_permissions(&sb.home);
}

/// `$PIV_HOME` and every directory in it 0700, every file 0600.
fn assert_home_permissions(home: &Path) {
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(home), 0o700, "{}", home.display());
    let mut stack = vec![home.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files > 0, "piv wrote files in its home");
}

const POLL_FAILED: &str = "Telegram getUpdates failed";
const SEND_FAILED: &str = "Telegram send failed";
/// A message Telegram can never accept (here: the token is refused) is given up.
const SEND_DROPPED: &str = "Telegram refused a message part for good";
/// The command menu (`setMyCommands`, right after the first poll), which a silent server times out.
const TOPIC_LOOKUP_FAILED: &str = "cannot reach Telegram to find the project's topic";
const MENU_FAILED: &str = "cannot register the command menu";

#[test]
fn unreachable_api_never_logs_the_token() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (sb, out) = run_against(
        &format!("http://127.0.0.1:{port}"),
        &[POLL_FAILED, SEND_FAILED],
        DEADLINE,
    );
    assert_no_token(&sb, &out);
    // With topics on, the send path starts with getChat: its failures name no token either.
    let (sb, out) = run_against_with_topics(
        &format!("http://127.0.0.1:{port}"),
        &[POLL_FAILED, TOPIC_LOOKUP_FAILED],
    );
    assert_no_token(&sb, &out);
}

#[test]
fn unauthorized_api_never_logs_the_token() {
    // The stand-in serves another token: every request of ours gets 401.
    let standin = BotApiStandIn::start("1:another-token-entirely");
    // A refused token is not retried: the message is dropped at once.
    let (sb, out) = run_against(standin.url(), &[POLL_FAILED, SEND_DROPPED], DEADLINE);
    assert_no_token(&sb, &out);
}

#[test]
fn server_error_api_never_logs_the_token() {
    let server = BadServer::start(Some(500));
    let (sb, out) = run_against(&server.url, &[POLL_FAILED, SEND_FAILED], DEADLINE);
    assert_no_token(&sb, &out);
}

#[test]
fn silent_api_never_logs_the_token() {
    // Nothing is ever answered: the failures come from the client's timeout (the long
    // poll's 25 s plus 15 s), so this test takes ~40 s.
    let server = BadServer::start(None);
    let (sb, out) = run_against(
        &server.url,
        &[MENU_FAILED, SEND_FAILED],
        Duration::from_secs(120),
    );
    assert_no_token(&sb, &out);
}
