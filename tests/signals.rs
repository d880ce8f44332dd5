//! The signal queue and its watcher with real files and processes: ordering and
//! exactly-once delivery (two signals 1 ms apart, bursts of 1000 from two threads and
//! from two processes), every kind of invalid file set aside without blocking the queue,
//! signals older than the start discarded, the legacy single file, and the watcher actor
//! delivering through notify and through polling alone; a script's own `*.json` file
//! delivered in name order, and junk set aside with its reason (issue 13, item 8).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use piv::actors::signal_watcher::{SignalReceived, SignalWatcherActor};
use piv::core::control::ControlAction;
use piv::core::signal::{queue_file_name, SignalMessage, MAX_SIGNAL_BYTES};
use piv::io::signal_queue::{
    drain_ready, enqueue, enqueue_message, legacy_signal_path, rejected_dir, signals_dir,
};

use crate::registry::{Worker, DEADLINE};

/// Not a test: the body of the sender processes spawned below. Sends `PIV_TEST_COUNT`
/// signals signed `<PIV_TEST_FROM>-<n>`. Without `PIV_TEST_CHILD` it does nothing.
#[test]
#[ignore = "child process of the multi-process signal tests"]
fn child_sender() {
    let Ok(mode) = std::env::var("PIV_TEST_CHILD") else {
        return;
    };
    assert_eq!(mode, "send");
    let project = PathBuf::from(std::env::var("PIV_TEST_PROJECT").unwrap());
    let from = std::env::var("PIV_TEST_FROM").unwrap();
    let count: usize = std::env::var("PIV_TEST_COUNT").unwrap().parse().unwrap();
    for n in 0..count {
        enqueue(&project, ControlAction::Go, &format!("{from}-{n}")).unwrap();
    }
    println!("SENT");
}

/// Drains until `total` signals arrived (or the deadline), returning them in order.
fn drain_until(project: &Path, total: usize) -> Vec<SignalMessage> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < total {
        let result = drain_ready(project, None);
        assert!(result.rejected.is_empty(), "{:?}", result.rejected);
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        got.extend(result.delivered);
        assert!(
            Instant::now() < end,
            "only {} of {total} signals arrived",
            got.len()
        );
        std::thread::yield_now();
    }
    got
}

/// Every sender's signals arrived exactly once and in that sender's order.
fn assert_once_in_order(got: &[SignalMessage], senders: &[&str], per_sender: usize) {
    let mut next: HashMap<String, usize> = HashMap::new();
    for message in got {
        let (sender, n) = message.from.rsplit_once('-').unwrap();
        let n: usize = n.parse().unwrap();
        let expected = next.entry(sender.to_string()).or_default();
        assert_eq!(
            n, *expected,
            "sender {sender}: got {n}, expected {expected}"
        );
        *expected += 1;
    }
    for sender in senders {
        assert_eq!(next.get(*sender), Some(&per_sender), "sender {sender}");
    }
    assert_eq!(got.len(), senders.len() * per_sender);
}

/// Two signals sent 1 ms apart are both delivered, in order.
#[test]
fn two_signals_one_millisecond_apart_are_both_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    enqueue(dir.path(), ControlAction::Pause, "a").unwrap();
    std::thread::sleep(Duration::from_millis(1));
    enqueue(dir.path(), ControlAction::Resume, "a").unwrap();
    let actions: Vec<ControlAction> = drain_ready(dir.path(), None)
        .delivered
        .into_iter()
        .map(|m| m.action)
        .collect();
    assert_eq!(actions, vec![ControlAction::Pause, ControlAction::Resume]);
    assert!(drain_ready(dir.path(), None).delivered.is_empty());
}

/// A burst of 1000 from two threads, drained while it is being written: each signal
/// once, each thread's signals in order.
#[test]
fn burst_of_1000_from_two_threads_is_delivered_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().to_path_buf();
    let senders: Vec<_> = ["t0", "t1"]
        .into_iter()
        .map(|name| {
            let project = project.clone();
            std::thread::spawn(move || {
                for n in 0..500 {
                    enqueue(&project, ControlAction::Go, &format!("{name}-{n}")).unwrap();
                }
            })
        })
        .collect();
    let got = drain_until(&project, 1000);
    for s in senders {
        s.join().unwrap();
    }
    assert_once_in_order(&got, &["t0", "t1"], 500);
    assert!(drain_ready(&project, None).delivered.is_empty());
}

/// The same from two separate processes.
#[test]
fn burst_of_1000_from_two_processes_is_delivered_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().to_path_buf();
    let mut workers: Vec<Worker> = ["p0", "p1"]
        .into_iter()
        .map(|from| {
            Worker::spawn(
                "signals::child_sender",
                &[
                    ("PIV_TEST_CHILD", "send".into()),
                    ("PIV_TEST_PROJECT", project.display().to_string()),
                    ("PIV_TEST_FROM", from.into()),
                    ("PIV_TEST_COUNT", "500".into()),
                ],
            )
        })
        .collect();
    let got = drain_until(&project, 1000);
    for w in &mut workers {
        w.wait_for("SENT");
    }
    for w in workers {
        w.finish();
    }
    assert_once_in_order(&got, &["p0", "p1"], 500);
}

/// Each invalid kind (bad JSON, unknown action, oversized, a symlink to /etc/passwd, a
/// FIFO, a directory) lands in rejected/ without being opened or followed, and the valid
/// signal queued after them is still delivered.
#[test]
fn every_invalid_kind_is_rejected_and_the_next_valid_signal_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().to_path_buf();
    let queue = signals_dir(&project);
    fs::create_dir_all(&queue).unwrap();
    let name = |n: u128| queue.join(queue_file_name(n, 1, 0));
    let ts = "2024-01-01T00:00:00Z";
    fs::write(name(1), "{ not json").unwrap();
    fs::write(
        name(2),
        format!(r#"{{"action":"reboot","timestamp":"{ts}","from":"x"}}"#),
    )
    .unwrap();
    let mut big = format!(r#"{{"action":"go","timestamp":"{ts}","from":""#).into_bytes();
    big.resize(MAX_SIGNAL_BYTES as usize + 10, b'x');
    big.extend_from_slice(b"\"}");
    fs::write(name(3), big).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", name(4)).unwrap();
    let fifo = std::ffi::CString::new(name(5).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    fs::create_dir(name(6)).unwrap();
    enqueue(&project, ControlAction::Shutdown, "ops").unwrap();

    // Run the drain on a thread so that a blocking open of the FIFO would fail the test
    // instead of hanging it.
    let (tx, rx) = mpsc::channel();
    let p = project.clone();
    std::thread::spawn(move || tx.send(drain_ready(&p, None)).unwrap());
    let result = rx.recv_timeout(DEADLINE).expect("drain must not block");

    let actions: Vec<ControlAction> = result.delivered.iter().map(|m| m.action).collect();
    assert_eq!(actions, vec![ControlAction::Shutdown]);
    assert_eq!(result.rejected.len(), 6, "{:?}", result.rejected);
    let mut in_rejected: Vec<String> = fs::read_dir(rejected_dir(&project))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    in_rejected.sort();
    let expected: Vec<String> = (1..=6).map(|n| queue_file_name(n, 1, 0)).collect();
    assert_eq!(in_rejected, expected);
    // The symlink was moved as a link, never followed.
    let moved_link = rejected_dir(&project).join(queue_file_name(4, 1, 0));
    assert!(fs::symlink_metadata(&moved_link)
        .unwrap()
        .file_type()
        .is_symlink());
    // Only rejected/ remains in the queue directory.
    let left: Vec<_> = fs::read_dir(&queue).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // And the queue keeps working afterwards.
    enqueue(&project, ControlAction::Go, "ops").unwrap();
    assert_eq!(drain_ready(&project, None).delivered.len(), 1);
}

/// A signal stamped before the instance started is discarded (and removed), a newer one
/// delivered.
#[test]
fn signals_older_than_the_start_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let old = SignalMessage {
        action: ControlAction::Shutdown,
        timestamp: (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
        from: "yesterday".into(),
        escalation: None,
        text: None,
    };
    enqueue_message(dir.path(), &old).unwrap();
    let start = SystemTime::now() - Duration::from_secs(60);
    enqueue(dir.path(), ControlAction::Go, "now").unwrap();
    let result = drain_ready(dir.path(), Some(start));
    assert_eq!(result.discarded, vec![old]);
    assert_eq!(result.delivered.len(), 1);
    assert_eq!(result.delivered[0].from, "now");
    assert!(drain_ready(dir.path(), Some(start)).discarded.is_empty());
}

/// The reference's single file `.agents/orchestrator.signal` is still accepted, and an
/// invalid one is set aside like any other.
#[test]
fn legacy_signal_file_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = legacy_signal_path(dir.path());
    fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    fs::write(
        &legacy,
        r#"{"action":"pause","timestamp":"2030-01-01T00:00:00.000Z","from":"owner"}"#,
    )
    .unwrap();
    let result = drain_ready(dir.path(), Some(SystemTime::now()));
    assert_eq!(result.delivered.len(), 1);
    assert_eq!(result.delivered[0].action, ControlAction::Pause);
    assert!(!legacy.exists());

    fs::write(&legacy, "garbage").unwrap();
    let result = drain_ready(dir.path(), None);
    assert!(result.delivered.is_empty());
    assert_eq!(result.rejected.len(), 1);
    assert!(!legacy.exists());
}

/// Collects what a watcher delivers.
struct Collector(Arc<Mutex<Vec<SignalMessage>>>);

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<SignalReceived> for Collector {
    type Result = ();
    fn handle(&mut self, SignalReceived(message): SignalReceived, _: &mut Self::Context) {
        self.0.lock().unwrap().push(message);
    }
}

/// Waits (yielding to the actors) until `seen` holds `count` messages.
async fn wait_for_count(seen: &Arc<Mutex<Vec<SignalMessage>>>, count: usize, what: &str) {
    let end = Instant::now() + DEADLINE;
    while seen.lock().unwrap().len() < count {
        assert!(
            Instant::now() < end,
            "{what}: {} of {count} delivered",
            seen.lock().unwrap().len()
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

fn start_watcher(
    project: &Path,
    poll: Duration,
    use_notify: bool,
) -> (Addr<SignalWatcherActor>, Arc<Mutex<Vec<SignalMessage>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector(seen.clone()).start();
    let watcher = SignalWatcherActor::new(
        project.to_path_buf(),
        SystemTime::now(),
        poll,
        use_notify,
        collector.recipient(),
    )
    .start();
    (watcher, seen)
}

/// With notify disabled, polling alone delivers (100 ms interval, generous deadline), and
/// a leftover from before the start is discarded rather than delivered.
#[actix_rt::test]
async fn polling_fallback_delivers_without_notify() {
    let dir = tempfile::tempdir().unwrap();
    let leftover = SignalMessage {
        action: ControlAction::Shutdown,
        timestamp: (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339(),
        from: "old".into(),
        escalation: None,
        text: None,
    };
    enqueue_message(dir.path(), &leftover).unwrap();
    let (_watcher, seen) = start_watcher(dir.path(), Duration::from_millis(100), false);
    enqueue(dir.path(), ControlAction::Pause, "t-0").unwrap();
    enqueue(dir.path(), ControlAction::Resume, "t-1").unwrap();
    wait_for_count(&seen, 2, "polling").await;
    let got = seen.lock().unwrap().clone();
    let actions: Vec<_> = got.iter().map(|m| m.action).collect();
    assert_eq!(actions, vec![ControlAction::Pause, ControlAction::Resume]);
}

/// With notify on and polling effectively off (one hour), notify alone delivers, and the
/// actor keeps delivering later signals.
#[actix_rt::test]
async fn watcher_delivers_through_notify() {
    let dir = tempfile::tempdir().unwrap();
    let (_watcher, seen) = start_watcher(dir.path(), Duration::from_secs(3600), true);
    // `started` creates the directory and sets up the watch in one go, so once the
    // directory exists the watch is in place.
    let end = Instant::now() + DEADLINE;
    while !signals_dir(dir.path()).exists() {
        assert!(Instant::now() < end, "watcher did not start");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    enqueue(dir.path(), ControlAction::Go, "n-0").unwrap();
    wait_for_count(&seen, 1, "notify").await;
    for n in 1..20 {
        enqueue(dir.path(), ControlAction::Pause, &format!("n-{n}")).unwrap();
    }
    wait_for_count(&seen, 20, "notify burst").await;
    let got = seen.lock().unwrap().clone();
    assert_once_in_order(&got, &["n"], 20);
}

/// Writes `content` as `name` in the queue the way a script should: a dot-file first,
/// then a rename into place.
fn drop_in_queue(project: &Path, name: &str, content: &str) -> PathBuf {
    let queue = signals_dir(project);
    fs::create_dir_all(&queue).unwrap();
    let temp = queue.join(format!(".{name}.writing"));
    fs::write(&temp, content).unwrap();
    let path = queue.join(name);
    fs::rename(&temp, &path).unwrap();
    path
}

fn signal_json(action: &str, from: &str) -> String {
    format!(
        r#"{{"action":"{action}","timestamp":"{}","from":"{from}"}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

/// A script's `*.json` file, whatever its name, is delivered, in name order with piv's
/// own queue files; a script's temp file is left to its writer.
#[test]
fn a_scripts_json_file_is_delivered_in_name_order_with_pivs_own() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path();
    enqueue(project, ControlAction::Pause, "piv-0").unwrap();
    drop_in_queue(project, "zz-my-script.json", &signal_json("resume", "zz"));
    drop_in_queue(project, "aa-first.json", &signal_json("go", "aa"));
    enqueue(project, ControlAction::Go, "piv-1").unwrap();
    let pending = signals_dir(project).join("later.json.tmp");
    fs::write(&pending, "{ half written").unwrap();

    let result = drain_ready(project, None);
    assert!(result.rejected.is_empty(), "{:?}", result.rejected);
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    let from: Vec<&str> = result.delivered.iter().map(|m| m.from.as_str()).collect();
    // "aa-…" < "sig-…" (piv's, in send order) < "zz-…".
    assert_eq!(from, ["aa", "piv-0", "piv-1", "zz"]);
    assert_eq!(result.delivered[3].action, ControlAction::Resume);
    let left: Vec<String> = fs::read_dir(signals_dir(project))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, ["later.json.tmp"], "only the temp file is left");
}

/// Against a real `piv run`: a script's `zz-my-script.json` pauses it (the state shows
/// `pausing` and the file is gone), an invalid `broken.json` and a `notes.txt` end in
/// `rejected/` with their reasons in the log, and a script's resume lets it finish.
#[test]
fn a_running_instance_takes_a_scripts_signal_and_rejects_junk_with_the_reason_logged() {
    use crate::pause_visible::{held_execute, release_file, status_json, wait_held};
    use crate::support::{wait_exit, wait_until, Sandbox, DEADLINE};

    let sb = Sandbox::new("scripted", &piv_testkit::project::ready_manifest(1));
    let release = release_file(&sb);
    sb.scenario(held_execute(&release));
    let mut run = crate::support::telegram_run::Kill(vec![sb.spawn_run(&[])]);
    wait_held(&sb, &sb.dump());

    let script = drop_in_queue(
        &sb.project,
        "zz-my-script.json",
        &signal_json("pause", "cron"),
    );
    assert!(
        wait_until(DEADLINE, || status_json(&sb)["state"] == "pausing"),
        "the script's pause is delivered\n{}",
        sb.dump()
    );
    assert!(!script.exists(), "taken from the queue");
    assert_eq!(
        status_json(&sb)["pauseRequestedBy"],
        "signal from cron",
        "{}",
        sb.dump()
    );

    drop_in_queue(&sb.project, "broken.json", r#"{"action":"reboot"}"#);
    drop_in_queue(&sb.project, "notes.txt", "pause please");
    let rejected = rejected_dir(&sb.project);
    assert!(
        wait_until(DEADLINE, || rejected.join("broken.json").exists()
            && rejected.join("notes.txt").exists()),
        "both set aside\n{}",
        sb.dump()
    );
    assert!(!signals_dir(&sb.project).join("broken.json").exists());
    assert!(!signals_dir(&sb.project).join("notes.txt").exists());
    let log = sb.log();
    assert!(
        log.contains("broken.json")
            && log.contains("unknown signal action")
            && log.contains("reboot"),
        "the reason is logged\n{log}"
    );
    assert!(
        log.contains("notes.txt") && log.contains("does not end in .json"),
        "the reason is logged\n{log}"
    );

    drop_in_queue(
        &sb.project,
        "zz-my-script.json",
        &signal_json("resume", "cron"),
    );
    std::fs::write(&release, "go on").unwrap();
    let status = wait_exit(&sb, &mut run.0[0]);
    assert_eq!(status.code(), Some(0), "{}", sb.dump());
    assert_eq!(sb.manifest()["next_action"]["command"], "done");
}
