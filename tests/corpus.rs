//! The bad-input corpus: hostile registry files, manifests, signal files, Telegram
//! messages and stream-json lines (small ones committed under `tests/corpus/`, big and
//! special ones made at test time) driven through the real code. Each must get a clear
//! error or be quarantined, nothing may panic or hang (every case runs under a deadline),
//! and the valid input that follows the bad one must still get through.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use piv::core::commands::{
    is_allowed_chat, parse_command, reply_ask_which, reply_sent, reply_unknown_command,
    reply_unknown_prefix, route, Command as ChatCommand, Route,
};
use piv::core::control::{ControlAction, ControlReply};
use piv::core::registry::{Instance, Registry};
use piv::core::signal::queue_file_name;
use piv::core::stream::parse_line;
use piv::core::telegram_text::{
    format_escalation, format_help, split_tagged, telegram_len, TELEGRAM_LIMIT,
};
use piv::io::agent::{run_session, AgentConfig};
use piv::io::registry_store::{RegistryStore, REGISTRY_FILE};
use piv::io::signal_queue::{drain_ready, enqueue, rejected_dir, signals_dir};
use piv::io::telegram::TelegramClient;
use piv_testkit::bot_api::{parse_telegram_html, BotApiStandIn, BOT_USERNAME};

/// Generous: the machine is shared and loaded, and debug builds parse 20 MB slowly.
const DEADLINE: Duration = Duration::from_secs(120);
const MIB: usize = 1024 * 1024;

fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind)
}

/// The committed files of one corpus kind, sorted by name: (name, bytes).
fn committed(kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(corpus_dir(kind))
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {kind} is empty");
    files
}

/// Bytes that are not UTF-8 and not JSON/YAML: a fixed pseudo-random sequence.
fn binary_noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(b"\xff\xfe\x00\x01");
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push((state >> 24) as u8);
    }
    out
}

/// Runs `work` on its own thread and fails the test if it does not finish in time (a
/// hang fails instead of blocking the suite). A panic inside `work` fails the test too.
fn within_deadline<T: Send + 'static>(what: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: did not finish in {DEADLINE:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

// ---------------------------------------------------------------------------------------
// Registry files

fn registry_cases() -> Vec<(String, Vec<u8>)> {
    let mut cases = committed("registry");
    cases.push((
        "generated: 10 000 nested arrays".into(),
        "[".repeat(10_000).into_bytes(),
    ));
    cases.push((
        "generated: 10 000 nested objects".into(),
        r#"{"instances":"#.repeat(10_000).into_bytes(),
    ));
    let mut huge = br#"{"instances": ["#.to_vec();
    let entry = br#"{"prefix": "x", "projectDir": "/p/x", "pid": 1, "startedAt": "t"},"#;
    while huge.len() < 20 * MIB {
        huge.extend_from_slice(entry);
    }
    cases.push(("generated: 20 MB, never closed".into(), huge));
    cases.push(("generated: 64 KiB binary".into(), binary_noise(64 * 1024)));
    cases
}

/// Every corrupt registry is set aside byte for byte (`registry.json.corrupt-*`), the
/// registry is rebuilt with the live instance that registered, and deregistering leaves
/// it empty.
#[test]
fn every_corrupt_registry_is_quarantined_and_rebuilt() {
    for (name, bytes) in registry_cases() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            Registry::parse(&text).is_err() || std::str::from_utf8(&bytes).is_err(),
            "{name}: corpus file is not actually bad"
        );
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join(REGISTRY_FILE), &bytes).unwrap();
        let store = RegistryStore::new(home.clone());
        let what = name.clone();
        let (store, registration) = within_deadline(&what, move || {
            let reg = store.register("corpus", "/p/corpus", "/p/corpus/m.yaml", "t0");
            (store, reg)
        });
        let registration = registration.unwrap_or_else(|e| panic!("{name}: register: {e}"));
        let rebuilt = Registry::parse(&fs::read_to_string(home.join(REGISTRY_FILE)).unwrap())
            .unwrap_or_else(|e| panic!("{name}: rebuilt registry does not parse: {e}"));
        assert_eq!(rebuilt.instances.len(), 1, "{name}");
        assert_eq!(rebuilt.instances[0].prefix, "corpus", "{name}");
        let kept: Vec<PathBuf> =
            crate::support::files_starting_with(&home, "registry.json.corrupt-");
        assert_eq!(kept.len(), 1, "{name}: one quarantined copy: {kept:?}");
        assert!(fs::read(&kept[0]).unwrap() == bytes, "{name}: copy differs");
        registration.deregister().unwrap();
        assert!(store.list().unwrap().is_empty(), "{name}");
    }
}

/// A `registry.json` that is a directory is an error naming the path, never a panic
/// and never a deleted directory.
#[test]
fn a_registry_that_is_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir_all(home.join(REGISTRY_FILE)).unwrap();
    let store = RegistryStore::new(home.clone());
    let err = within_deadline("registry dir", move || {
        store
            .register("corpus", "/p/corpus", "/p/corpus/m.yaml", "t0")
            .map(|_| ())
    })
    .expect_err("a directory is not a registry");
    assert!(err.to_string().contains(REGISTRY_FILE), "{err}");
    assert!(home.join(REGISTRY_FILE).is_dir());
}

// ---------------------------------------------------------------------------------------
// Manifests through `piv dry-run`

/// Runs `piv <args> --project <project>` with output to files (no pipe can fill up) and
/// kills it at the deadline. Returns (exit code, stdout, stderr).
fn piv_within_deadline(args: &[&str], project: &Path) -> (Option<i32>, String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_piv"))
        .args(args)
        .arg("--project")
        .arg(project)
        .env_remove("PIV_PROJECT_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("piv {args:?} did not finish in {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        fs::read_to_string(out_path).unwrap(),
        String::from_utf8_lossy(&fs::read(err_path).unwrap()).into_owned(),
    )
}

fn manifest_cases() -> Vec<(String, Vec<u8>)> {
    let mut cases = committed("manifest");
    let mut nested = b"phases: ".to_vec();
    nested.extend(std::iter::repeat_n(b'[', 10_000));
    cases.push(("generated: 10 000 nested flow lists".into(), nested));
    let mut nested_maps = Vec::new();
    for depth in 0..10_000 {
        nested_maps.extend(std::iter::repeat_n(b' ', depth % 200));
        nested_maps.extend_from_slice(b"- ");
        nested_maps.push(b'\n');
    }
    cases.push(("generated: 10 000 nested block lists".into(), nested_maps));
    let mut huge = b"notes:\n".to_vec();
    while huge.len() < 20 * MIB {
        huge.extend_from_slice(b"  - some unknown key the agent wrote, repeated\n");
    }
    huge.extend_from_slice(b"phases: 7\n");
    cases.push(("generated: 20 MB, phases of the wrong type".into(), huge));
    cases.push(("generated: 64 KiB binary".into(), binary_noise(64 * 1024)));
    cases
}

/// Every bad manifest makes `piv dry-run` exit 2 with a message and no panic, prints
/// nothing on stdout, and leaves the file byte-identical with nothing added beside it.
#[test]
fn every_bad_manifest_is_a_clear_dry_run_error_and_stays_untouched() {
    for (name, bytes) in manifest_cases() {
        let dir = tempfile::tempdir().unwrap();
        let agents = dir.path().join(".agents");
        fs::create_dir_all(&agents).unwrap();
        let manifest = agents.join("manifest.yaml");
        fs::write(&manifest, &bytes).unwrap();
        let (code, stdout, stderr) = piv_within_deadline(&["dry-run", "--json"], dir.path());
        assert_eq!(code, Some(2), "{name}: stderr {stderr}");
        assert!(stdout.is_empty(), "{name}: stdout {stdout}");
        assert!(!stderr.trim().is_empty(), "{name}: no message");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            stderr.len() < 4096,
            "{name}: message of {} bytes",
            stderr.len()
        );
        assert!(
            fs::read(&manifest).unwrap() == bytes,
            "{name}: file changed"
        );
        assert_eq!(
            fs::read_dir(&agents).unwrap().count(),
            1,
            "{name}: files added"
        );
    }
}

/// A 20 MB manifest that is valid (the bulk is keys piv does not know) still gets its
/// answer: size alone is not an error.
#[test]
fn a_huge_valid_manifest_still_gets_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".agents")).unwrap();
    let mut text = String::from(
        "phases:\n  1: {plan: not_started, execution: not_started, validation: not_run}\nnotes:\n",
    );
    while text.len() < 20 * MIB {
        text.push_str("  - an unknown key the agent wrote, kept verbatim\n");
    }
    fs::write(dir.path().join(".agents/manifest.yaml"), &text).unwrap();
    let (code, stdout, stderr) = piv_within_deadline(&["dry-run", "--json"], dir.path());
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stdout.contains("\"command\""), "{stdout}");
}

// ---------------------------------------------------------------------------------------
// Signal files

/// Every bad signal file (committed ones, then a 10 MB one, a symlink to /etc/passwd, a
/// FIFO and a directory) is moved to `rejected/`, and the valid signal queued after all
/// of them is delivered, in one drain that does not block.
#[test]
fn every_bad_signal_is_rejected_and_the_valid_one_after_them_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().to_path_buf();
    let queue = signals_dir(&project);
    fs::create_dir_all(&queue).unwrap();
    let mut n: u128 = 0;
    let mut next_name = || {
        n += 1;
        queue.join(queue_file_name(n, 1, 0))
    };
    let mut bad = 0;
    for (_, bytes) in committed("signal") {
        fs::write(next_name(), bytes).unwrap();
        bad += 1;
    }
    let mut big = br#"{"action":"go","timestamp":"2024-01-01T00:00:00Z","from":""#.to_vec();
    big.resize(10 * MIB, b'x');
    big.extend_from_slice(b"\"}");
    fs::write(next_name(), big).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", next_name()).unwrap();
    let fifo = next_name();
    let c_path = std::ffi::CString::new(fifo.into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    fs::create_dir(next_name()).unwrap();
    bad += 4;
    // Queued last: its name sorts after every bad one.
    enqueue(&project, ControlAction::Pause, "corpus").unwrap();

    let p = project.clone();
    let result = within_deadline("drain", move || drain_ready(&p, None));
    let actions: Vec<ControlAction> = result.delivered.iter().map(|m| m.action).collect();
    assert_eq!(actions, vec![ControlAction::Pause]);
    assert_eq!(result.rejected.len(), bad, "{:?}", result.rejected);
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    assert_eq!(fs::read_dir(rejected_dir(&project)).unwrap().count(), bad);
    assert!(
        fs::read_to_string("/etc/passwd").is_ok(),
        "the symlink target is untouched"
    );
}

// ---------------------------------------------------------------------------------------
// Telegram messages

struct TelegramCase {
    name: String,
    chat_id: i64,
    text: Option<String>,
    edited: bool,
}

const ALLOWED_CHAT: i64 = 555;
const TOKEN: &str = "4242:corpus-secret-token";

fn telegram_cases() -> Vec<TelegramCase> {
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(corpus_dir("telegram").join("messages.json")).unwrap())
            .unwrap();
    let mut cases: Vec<TelegramCase> = listed
        .iter()
        .map(|v| TelegramCase {
            name: v["name"].as_str().unwrap().to_string(),
            chat_id: v["chat_id"].as_i64().unwrap_or(ALLOWED_CHAT),
            text: v["text"].as_str().map(str::to_string),
            edited: v["edited"].as_bool().unwrap_or(false),
        })
        .collect();
    for (name, text) in [
        (
            "10 000 '<' as an argument",
            format!("/go {}", "<".repeat(10_000)),
        ),
        (
            "10 000 emoji as a prefix",
            format!("/status {}", "👑".repeat(10_000)),
        ),
        (
            "10 000-char command name",
            format!("/{}", "a".repeat(10_000)),
        ),
        (
            "10 000 '&' as an argument",
            format!("/pause {}", "&".repeat(10_000)),
        ),
        ("10 000 chars, not a command", "x".repeat(10_000)),
    ] {
        cases.push(TelegramCase {
            name: name.into(),
            chat_id: ALLOWED_CHAT,
            text: Some(text),
            edited: false,
        });
    }
    cases
}

/// What the bot would answer, built only with the real reply builders.
fn reply_for(command: &ChatCommand) -> String {
    let others = [Instance::new("beta", "/p/beta", 1, "t", "m")];
    match command {
        ChatCommand::Unknown(name) => reply_unknown_command(name),
        ChatCommand::Help | ChatCommand::Status(_) => format_help(),
        // The hostile argument filters the report's rows: the reply is the report.
        ChatCommand::Cost(project) => format!(
            "<b>Cost</b> (UTC days)\n<pre>{}</pre>",
            piv::core::telegram_text::escape_html(
                piv::core::ledger::render(&piv::core::ledger::report(
                    &[],
                    "2026-11-30",
                    None,
                    project.as_deref()
                ))
                .trim_end()
            )
        ),
        // A hostile prefix is named back escaped; a log line shows literally in `<pre>`.
        ChatCommand::Preflight(target) => match route(target.as_deref(), "alpha", &others) {
            Route::UnknownPrefix { prefix, known } => reply_unknown_prefix(&prefix, &known),
            _ => piv::core::room_replies::preflight_reply(None),
        },
        ChatCommand::Logs(target, _) => {
            piv::core::room_replies::logs_reply(&[target.clone().unwrap_or_default()]).concat()
        }
        ChatCommand::Control(action, target) => {
            let action = *action;
            match route(target.as_deref(), "alpha", &others) {
                Route::Local => ControlReply::Started.text().to_string(),
                Route::Remote(other) => reply_sent(action, &other.prefix),
                Route::AskWhich { prefixes } => reply_ask_which(action, &prefixes),
                Route::UnknownPrefix { prefix, known } => reply_unknown_prefix(&prefix, &known),
            }
        }
    }
}

/// Hostile messages travel through the stand-in and piv's own client; only text messages
/// from the allowed chat are considered; every reply (including the message echoed back
/// in an escalation) is valid Telegram HTML that shows the user's text literally, comes
/// in parts of at most 4096 units, and is accepted by the stand-in.
#[tokio::test]
async fn hostile_telegram_messages_get_escaped_split_replies() {
    let api = BotApiStandIn::start(TOKEN);
    let client = TelegramClient::new(TOKEN, api.url(), 5).unwrap();
    let cases = telegram_cases();
    let mut ids = Vec::new();
    for case in &cases {
        ids.push(match (&case.text, case.edited) {
            (None, _) => api.inject_message_without_text(case.chat_id),
            (Some(t), true) => api.inject_edited_message(case.chat_id, t),
            (Some(t), false) => api.inject_message(case.chat_id, t),
        });
    }
    let last_id = *ids.iter().max().unwrap();
    let mut updates = Vec::new();
    let mut offset = None;
    let deadline = Instant::now() + DEADLINE;
    while updates
        .last()
        .map(|u: &piv::io::telegram::IncomingUpdate| u.update_id)
        != Some(last_id)
    {
        assert!(Instant::now() < deadline, "updates never all arrived");
        let batch = client.get_updates(offset, 1).await.unwrap();
        if let Some(u) = batch.last() {
            offset = Some(u.next_offset());
        }
        updates.extend(batch);
    }

    let mut parts_sent = 0;
    let mut commands_seen = 0;
    for update in &updates {
        let case = &cases[ids.iter().position(|&id| id == update.update_id).unwrap()];
        let name = &case.name;
        let Some(chat_id) = update.chat_id else {
            assert!(case.edited, "{name}: only the edited message has no chat");
            continue;
        };
        if !is_allowed_chat(chat_id, &[ALLOWED_CHAT]) {
            assert_ne!(case.chat_id, ALLOWED_CHAT, "{name}");
            continue;
        }
        let Some(text) = &update.text else {
            assert!(case.text.is_none(), "{name}: text lost");
            continue;
        };
        assert_eq!(
            Some(text),
            case.text.as_ref(),
            "{name}: text changed in transit"
        );
        let mut replies = vec![format_escalation(1, "user_text", text, "echoed")];
        if let Some(command) = parse_command(text, Some(BOT_USERNAME)) {
            commands_seen += 1;
            replies.push(reply_for(&command));
        }
        for reply in replies {
            let parts = split_tagged("alpha", &reply, TELEGRAM_LIMIT);
            assert!(!parts.is_empty(), "{name}");
            let mut visible = String::new();
            for part in &parts {
                assert!(
                    telegram_len(part) <= TELEGRAM_LIMIT,
                    "{name}: part too long"
                );
                let shown = parse_telegram_html(part)
                    .unwrap_or_else(|e| panic!("{name}: invalid HTML {e}: {part}"));
                // Every part repeats the tag; the user's text runs across parts without it.
                let shown = shown
                    .strip_prefix("[alpha] ")
                    .expect("every part is tagged");
                visible.push_str(shown);
                client.send_html(ALLOWED_CHAT, part).await.unwrap();
                parts_sent += 1;
            }
            if reply.starts_with("🔴") {
                // The user's text is shown, not interpreted (whitespace may move at cuts).
                let strip = |s: &str| s.split_whitespace().collect::<String>();
                assert!(
                    strip(&visible).contains(&strip(text)),
                    "{name}: user text not shown literally"
                );
            }
        }
    }
    assert!(commands_seen >= 15, "{commands_seen} commands parsed");
    assert!(
        api.rejected_sends().is_empty(),
        "{:?}",
        api.rejected_sends()
    );
    assert_eq!(api.sent_messages().len(), parts_sent);
    api.stop();
}

// ---------------------------------------------------------------------------------------
// Stream-json lines

/// Every committed bad line is an error from the parser (never a panic, never accepted).
#[test]
fn every_bad_stream_line_is_an_error() {
    let (_, bytes) = committed("stream")
        .into_iter()
        .find(|(n, _)| n == "bad_lines.jsonl")
        .unwrap();
    let mut count = 0;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let result = parse_line(line);
        assert!(
            result.is_err(),
            "accepted: {} -> {result:?}",
            String::from_utf8_lossy(line)
        );
        count += 1;
    }
    assert!(count >= 20);
    let mut huge = br#"{"type":"assistant","message":{"content":[{"type":"text","text":""#.to_vec();
    huge.resize(50 * MIB, b'y');
    assert!(parse_line(&huge).is_err(), "a truncated 50 MB line");
}

/// A real child prints every bad line, a 50 MB line and binary noise, then a valid
/// session: `run_session` skips the bad ones (counted) and the session succeeds with its
/// result, cost and hooks intact.
#[tokio::test]
async fn a_session_survives_bad_lines_and_a_50_mb_line() {
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.bin");
    let mut noise_bytes = binary_noise(4096);
    noise_bytes.retain(|&b| b != b'\n');
    noise_bytes.push(b'\n');
    fs::write(&noise, noise_bytes).unwrap();
    let script = dir.path().join("claude");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat '{bad}'\nhead -c {size} /dev/zero | tr '\\0' 'y'\necho\ncat '{noise}'\ncat '{tail}'\n",
            bad = corpus_dir("stream").join("bad_lines.jsonl").display(),
            size = 50 * MIB,
            noise = noise.display(),
            tail = corpus_dir("stream").join("valid_tail.jsonl").display(),
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    // The project has its slash command (piv refuses a prompt whose command file is gone).
    fs::create_dir_all(dir.path().join(".claude/commands")).unwrap();
    fs::write(
        dir.path().join(".claude/commands/execute.md"),
        "# /execute\n",
    )
    .unwrap();
    let cfg = AgentConfig {
        timeout: DEADLINE,
        stall: DEADLINE,
        kill_grace: Duration::from_secs(2),
        ..AgentConfig::new(&script, dir.path())
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let outcome = tokio::time::timeout(DEADLINE, run_session(&cfg, "/execute", None, rx))
        .await
        .expect("session did not finish");
    assert!(
        outcome.is_ok(),
        "{:?} {}",
        outcome.error,
        outcome.stderr_tail
    );
    assert_eq!(outcome.session_id.as_deref(), Some("0000-corpus"));
    assert_eq!(outcome.cost_usd, Some(0.25));
    assert_eq!(outcome.num_turns, 3);
    assert_eq!(
        outcome.hooks.get("validation_status").map(String::as_str),
        Some("pass")
    );
    let bad_lines = fs::read(corpus_dir("stream").join("bad_lines.jsonl"))
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count() as u64;
    // The bad lines, the 50 MB line and the noise line.
    assert_eq!(outcome.malformed_lines, bad_lines + 2);
}
