//! The `two_instances` demo (the SC-010 story): two projects, two real `piv run`
//! processes, ONE bot token.
//!
//! With no accounts it starts a local Bot API stand-in and drives two temporary projects
//! with the scripted `claude` (`piv-fake-claude`), and narrates: both instances
//! registered, which one owns the bot, `/status all` as the chat sees it, `/pause` routed
//! to the other instance, the owner killed and the standby taking over (measured), both
//! projects driven to done, a clean shutdown and an empty registry. The stand-in's chat is
//! a forum group (issue 14): each project talks in its own topic, `/pause` is typed in a
//! project's topic without a prefix, each phase shows as one live status message edited
//! in place, and a third project's escalation is settled with its Retry button.
//!
//! With `TELEGRAM_BOT_TOKEN` and `TELEGRAM_CHAT_ID` set it uses the real Telegram instead
//! (watch it from your phone); the chat commands are then sent with `piv signal` and the
//! status is read with `piv status --all`, since the demo cannot type in your chat; the
//! escalation's Retry button is yours to tap (the demo waits up to two minutes for it).
//!
//! Run: `cargo run --example two_instances`. It finishes by itself (bounded in time).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use piv_testkit::bot_api::{parse_telegram_html, BotApiStandIn, ChatSetup};
use piv_testkit::fake_claude::{Action, Rule, Scenario, SCRIPT_ENV, STATE_DIR_ENV};
use piv_testkit::project::{ready_manifest, scaffold};

/// The whole demo must end within this.
const DEMO_DEADLINE: Duration = Duration::from_secs(240);
/// One wait for one condition.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// With the real Telegram, how long the demo waits for you to tap a button.
const TAP_WAIT: Duration = Duration::from_secs(120);
const DEMO_TOKEN: &str = "424242:demo-token-for-the-local-stand-in";
/// A forum supergroup of the stand-in (topics on).
const DEMO_CHAT: i64 = -1_001_777_000_000;

fn main() -> ExitCode {
    let started = Instant::now();
    match run_demo() {
        Ok(()) => {
            say(&format!(
                "Demo finished in {:.1}s.",
                started.elapsed().as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\ndemo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(text: &str) {
    println!("{text}");
}

fn step(n: u32, text: &str) {
    println!("\n== {n}. {text}");
}

/// Where the chat messages go: the local stand-in, or the real Telegram.
enum Chat {
    StandIn(BotApiStandIn),
    Real {
        url: String,
        token: String,
        chat: i64,
    },
}

impl Chat {
    fn api_url(&self) -> String {
        match self {
            Chat::StandIn(s) => s.url().to_string(),
            Chat::Real { url, .. } => url.clone(),
        }
    }
    fn token(&self) -> String {
        match self {
            Chat::StandIn(_) => DEMO_TOKEN.to_string(),
            Chat::Real { token, .. } => token.clone(),
        }
    }
    fn chat_id(&self) -> i64 {
        match self {
            Chat::StandIn(_) => DEMO_CHAT,
            Chat::Real { chat, .. } => *chat,
        }
    }
}

struct Demo {
    piv: PathBuf,
    fake_claude: PathBuf,
    root: tempfile::TempDir,
    home: PathBuf,
    script: PathBuf,
    chat: Chat,
}

struct Instance {
    prefix: &'static str,
    dir: PathBuf,
    child: Child,
}

fn run_demo() -> Result<(), String> {
    // `cargo run --example` builds only this example: the testkit builds `piv` and the
    // scripted claude (a no-op when they are up to date) with the same cargo and profile.
    let (piv, fake_claude) = piv_testkit::binaries::piv_and_fake_claude()?;
    let chat = match (
        std::env::var("TELEGRAM_BOT_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        std::env::var("TELEGRAM_CHAT_ID")
            .ok()
            .and_then(|c| c.trim().parse::<i64>().ok()),
    ) {
        (Some(token), Some(chat)) => Chat::Real {
            url: std::env::var("TELEGRAM_API_URL")
                .unwrap_or_else(|_| "https://api.telegram.org".into()),
            token,
            chat,
        },
        _ => {
            let s = BotApiStandIn::start(DEMO_TOKEN);
            s.set_chat(DEMO_CHAT, ChatSetup::Forum);
            Chat::StandIn(s)
        }
    };
    let root = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let home = root.path().join("piv-home");
    let script = root.path().join("scenario.json");
    // Every agent session takes a little time, so there is a run to watch and steer.
    Scenario::new()
        .rule(Rule::new("", Action::Succeed).delay(Duration::from_millis(400)))
        .write(&script)
        .map_err(|e| format!("scenario: {e}"))?;
    let demo = Demo {
        piv,
        fake_claude,
        root,
        home,
        script,
        chat,
    };
    let deadline = Instant::now() + DEMO_DEADLINE;

    say("piv two_instances demo — two projects, two `piv run` processes, one bot token.");
    match &demo.chat {
        Chat::StandIn(s) => say(&format!(
            "Telegram: a local Bot API stand-in at {} (no account needed).",
            s.url()
        )),
        Chat::Real { .. } => say("Telegram: the REAL Bot API — watch your chat."),
    }
    say(&format!("PIV_HOME: {}", demo.home.display()));

    step(1, "Two projects, two instances");
    let alpha_dir = demo.project("alpha", 2)?;
    let beta_dir = demo.project("beta", 2)?;
    let alpha = demo.start("alpha", &alpha_dir)?;
    wait(STEP_DEADLINE, "alpha to register", || {
        demo.registered().iter().any(|(p, _, _)| p == "alpha")
    })?;
    let beta = demo.start("beta", &beta_dir)?;
    wait(STEP_DEADLINE, "both to register", || {
        demo.registered().len() == 2
    })?;
    for (prefix, pid, owner) in demo.registered() {
        say(&format!(
            "  registered: [{prefix}] pid {pid}{}",
            if owner {
                "  ← bot owner (polls Telegram)"
            } else {
                "  (standby: sends only)"
            }
        ));
    }

    if let Chat::StandIn(s) = &demo.chat {
        let topics = s.wait_for_topics(DEMO_CHAT, 2, STEP_DEADLINE);
        for t in &topics {
            say(&format!(
                "  forum topic \"{}\" (thread {}, icon #{:06X}) — every message of [{}] goes there",
                t.name,
                t.thread_id,
                t.icon_color.unwrap_or(0),
                t.name
            ));
        }
    }

    step(2, "Who owns the bot");
    wait(STEP_DEADLINE, "a bot owner", || {
        demo.registered().iter().any(|(_, _, o)| *o)
    })?;
    let (owner_prefix, owner_pid, _) = demo
        .registered()
        .into_iter()
        .find(|(_, _, o)| *o)
        .ok_or("no bot owner")?;
    say(&format!(
        "  [{owner_prefix}] (pid {owner_pid}) holds $PIV_HOME/bots/<bot id>/owner.lock and polls getUpdates; the other waits on the lock."
    ));
    if let Chat::StandIn(s) = &demo.chat {
        wait(STEP_DEADLINE, "the owner's first getUpdates", || {
            s.poll_starts().iter().any(|p| p.pid == Some(owner_pid))
        })?;
        let pollers: std::collections::BTreeSet<u32> =
            s.poll_starts().iter().filter_map(|p| p.pid).collect();
        say(&format!(
            "  the stand-in has seen getUpdates from {} process(es): {pollers:?}",
            pollers.len()
        ));
    }
    let (owner, standby) = if owner_prefix == "alpha" {
        (alpha, beta)
    } else {
        (beta, alpha)
    };

    step(3, "`/status all`, as the chat sees it");
    match demo.command("/status all", |t| t.contains("All Instances"))? {
        Some(reply) => print_chat(&reply),
        None => {
            let out = demo
                .piv_cmd(&standby.dir)
                .args(["status", "--all"])
                .output()
                .map_err(|e| e.to_string())?;
            print_chat(&String::from_utf8_lossy(&out.stdout));
        }
    }

    step(
        4,
        &format!(
            "`/pause` typed in [{}]'s topic — routed to the other instance",
            standby.prefix
        ),
    );
    let pause = match &demo.chat {
        Chat::StandIn(_) => "/pause".to_string(),
        Chat::Real { .. } => format!("/pause {}", standby.prefix),
    };
    match demo.command_in(demo.topic_of(standby.prefix), &pause, |t| {
        t.contains("pause") && t.contains(standby.prefix)
    })? {
        Some(reply) => print_chat(&reply),
        None => {
            demo.signal(&standby.dir, standby.prefix, "pause")?;
            say(&format!(
                "  (real Telegram: sent with `piv signal {} pause`)",
                standby.prefix
            ));
        }
    }
    wait(STEP_DEADLINE, "the standby to pause", || {
        state_of(&standby.dir).as_deref() == Some("paused")
    })?;
    say(&format!(
        "  [{}] is paused (its published state says so); [{}] keeps running.",
        standby.prefix, owner.prefix
    ));

    step(5, "The owner is killed (SIGKILL); the standby takes over");
    let mut owner = owner;
    let killed_at = Instant::now();
    let _ = owner.child.kill();
    let _ = owner.child.wait();
    let resume = format!("/resume {}", standby.prefix);
    let takeover = match &demo.chat {
        Chat::StandIn(s) => {
            // A command sent while nobody polls: the new owner must answer it, once.
            s.inject_message(DEMO_CHAT, &resume);
            let standby_pid = standby.child.id();
            wait(STEP_DEADLINE, "the standby's first getUpdates", || {
                s.poll_starts()
                    .iter()
                    .any(|p| p.pid == Some(standby_pid) && p.at > killed_at)
            })?;
            let first = s
                .poll_starts()
                .into_iter()
                .filter(|p| p.pid == Some(standby_pid) && p.at > killed_at)
                .map(|p| p.at)
                .min()
                .ok_or("no poll")?;
            Some(first.duration_since(killed_at))
        }
        Chat::Real { .. } => None,
    };
    match takeover {
        Some(t) => say(&format!(
            "  [{}] polled getUpdates {:.1} ms after the kill (the kernel released the lock).",
            standby.prefix,
            t.as_secs_f64() * 1000.0
        )),
        None => say("  (real Telegram: takeover time is measured against the local stand-in only)"),
    }
    match &demo.chat {
        Chat::StandIn(s) => {
            wait(
                STEP_DEADLINE,
                "the answer to the command sent meanwhile",
                || s.sent_messages().iter().any(|m| is_resume_reply(&m.text)),
            )?;
            let answers: Vec<_> = s
                .sent_messages()
                .into_iter()
                .filter(|m| is_resume_reply(&m.text))
                .collect();
            print_chat(&answers[0].text);
            say(&format!(
                "  `{resume}`, sent while no one polled, was answered {} time(s).",
                answers.len()
            ));
        }
        Chat::Real { .. } => demo.signal(&standby.dir, standby.prefix, "resume")?,
    }
    wait(STEP_DEADLINE, "the standby to resume", || {
        state_of(&standby.dir).as_deref() != Some("paused")
    })?;

    step(
        6,
        &format!(
            "[{}] starts again and resumes from its manifest",
            owner.prefix
        ),
    );
    let restarted = demo.start(owner.prefix, &owner.dir)?;
    say(&format!(
        "  `piv run` on {} again (pid {}): the stale PID file and registry entry are replaced.",
        owner.prefix,
        restarted.child.id()
    ));

    step(7, "Both projects driven to done");
    let mut finals = vec![];
    for mut inst in [standby, restarted] {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let status = wait_child(&mut inst.child, remaining)?;
        let commits = git_log(&inst.dir);
        say(&format!(
            "  [{}] exited with {status}; commits: {}",
            inst.prefix,
            commits.join(" | ")
        ));
        if !status.success() {
            return Err(format!(
                "[{}] did not end cleanly; its log is in {}",
                inst.prefix,
                inst.dir.join(".agents/orchestrator.log").display()
            ));
        }
        finals.push(inst);
    }

    if let Chat::StandIn(s) = &demo.chat {
        step(
            8,
            "The live status message: one per project and phase, edited in place",
        );
        let sent = s.sent_messages();
        let cards: Vec<_> = sent.iter().filter(|m| m.text.contains("📊")).collect();
        let edits = s.edits();
        say(&format!(
            "  {} status messages, edited {} times in all (each at most once per 3 s); {} messages in all",
            cards.len(),
            edits.len(),
            sent.len()
        ));
        if let Some(last) = edits.last() {
            say("  the last edit, as the chat shows it:");
            print_chat(&last.text);
        }

        step(9, "An escalation settled with its button");
        demo.button_press(s)?;
    } else {
        step(9, "An escalation settled with its button (you tap it)");
        demo.button_press_by_you()?;
    }

    step(10, "Clean shutdown");
    let left = demo.registered();
    say(&format!(
        "  registry entries left: {} {}",
        left.len(),
        if left.is_empty() {
            "(empty, as it should be)"
        } else {
            "(!)"
        }
    ));
    if let Chat::StandIn(s) = &demo.chat {
        let sent = s.sent_messages();
        let topics = s.topics();
        let in_own_topic = sent.iter().all(|m| {
            m.thread_id.is_none()
                || topics
                    .iter()
                    .any(|t| Some(t.thread_id) == m.thread_id && !t.deleted)
        });
        say(&format!(
            "  the chat received {} messages, {} of them in the projects' topics; none outside a known topic: {in_own_topic}",
            sent.len(),
            sent.iter().filter(|m| m.thread_id.is_some()).count(),
        ));
        say("  the last few, as the chat shows them:");
        for m in sent.iter().rev().take(4).rev() {
            print_chat(&m.text);
        }
    }
    if !left.is_empty() {
        return Err("the registry is not empty after both instances exited".into());
    }
    Ok(())
}

fn is_resume_reply(text: &str) -> bool {
    text.contains("Resuming") || text.contains("resume")
}

impl Demo {
    fn project(&self, name: &str, phases: u32) -> Result<PathBuf, String> {
        let dir = self.root.path().join(name);
        scaffold(&dir, &ready_manifest(phases)).map_err(|e| format!("project {name}: {e}"))?;
        Ok(dir)
    }

    fn piv_cmd(&self, project: &Path) -> Command {
        let mut cmd = Command::new(&self.piv);
        cmd.env("PIV_HOME", &self.home)
            .env("PIV_PROJECT_DIR", project)
            .env("PIV_CLAUDE_BIN", &self.fake_claude)
            .env(SCRIPT_ENV, &self.script)
            .env(STATE_DIR_ENV, self.root.path())
            .env("PIV_SIGNAL_POLL_MS", "200")
            .env("PIV_KILL_GRACE_SECS", "2")
            // The scripted agent runs in a throwaway sandbox; as root, the real CLI would
            // need this too (see the README).
            .env("IS_SANDBOX", "1")
            .env("TELEGRAM_BOT_TOKEN", self.chat.token())
            .env("TELEGRAM_CHAT_ID", self.chat.chat_id().to_string())
            .env("TELEGRAM_API_URL", self.chat.api_url())
            .env("GIT_AUTHOR_NAME", "piv-demo")
            .env("GIT_AUTHOR_EMAIL", "demo@piv")
            .env("GIT_COMMITTER_NAME", "piv-demo")
            .env("GIT_COMMITTER_EMAIL", "demo@piv")
            .env_remove("ANTHROPIC_API_KEY")
            .current_dir(project);
        cmd
    }

    fn start(&self, prefix: &'static str, dir: &Path) -> Result<Instance, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join(format!("{prefix}.out")))
            .map_err(|e| e.to_string())?;
        let child = self
            .piv_cmd(dir)
            .env("TELEGRAM_PROJECT_PREFIX", prefix)
            .args(["run", "--exit-when-done"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start piv: {e}"))?;
        say(&format!(
            "  started `piv run` for [{prefix}] (pid {})",
            child.id()
        ));
        Ok(Instance {
            prefix,
            dir: dir.to_path_buf(),
            child,
        })
    }

    /// `(prefix, pid, isBotOwner)` of every registry entry.
    fn registered(&self) -> Vec<(String, u32, bool)> {
        let text = std::fs::read_to_string(self.home.join("registry.json")).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["prefix"].as_str().unwrap_or("?").to_string(),
                            i["pid"].as_u64().unwrap_or(0) as u32,
                            i["isBotOwner"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sends `text` from the chat and waits for the reply matching `is_reply` (stand-in
    /// only; `None` with the real Telegram, where the demo cannot type in the chat).
    fn command(
        &self,
        text: &str,
        is_reply: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, String> {
        self.command_in(None, text, is_reply)
    }

    /// The forum topic of a project in the stand-in's chat.
    fn topic_of(&self, prefix: &str) -> Option<i64> {
        let Chat::StandIn(s) = &self.chat else {
            return None;
        };
        s.topics()
            .into_iter()
            .find(|t| t.name == prefix && !t.deleted)
            .map(|t| t.thread_id)
    }

    /// [`Demo::command`] typed inside forum topic `topic` (none: General).
    fn command_in(
        &self,
        topic: Option<i64>,
        text: &str,
        is_reply: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, String> {
        let Chat::StandIn(s) = &self.chat else {
            return Ok(None);
        };
        let before = s.sent_messages().len();
        match topic {
            Some(thread) => {
                say(&format!("  chat, in topic {thread} → {text}"));
                s.inject_topic_message(DEMO_CHAT, thread, text);
            }
            None => {
                say(&format!("  chat → {text}"));
                s.inject_message(DEMO_CHAT, text);
            }
        }
        let mut reply = None;
        wait(STEP_DEADLINE, &format!("the reply to {text}"), || {
            reply = s
                .sent_messages()
                .into_iter()
                .skip(before)
                .find(|m| is_reply(&m.text))
                .map(|m| m.text);
            reply.is_some()
        })?;
        Ok(reply)
    }

    /// A third project escalates (a 401 while planning, once); its message carries a Retry
    /// button; the demo taps it; the project runs again and finishes; a second tap is
    /// refused.
    /// Starts a third project, [gamma], whose first plan fails with a 401 once: it
    /// escalates (a message with a Retry button) and waits for a human.
    fn start_escalating_project(&self) -> Result<(PathBuf, Child), String> {
        let dir = self.project("gamma", 1)?;
        let script = self.root.path().join("gamma-scenario.json");
        Scenario::new()
            .rule(
                Rule::new(
                    "/plan-feature",
                    Action::Fail {
                        subtype: "success".into(),
                        is_error: true,
                        message: "HTTP 401 Unauthorized".into(),
                        exit_code: None,
                    },
                )
                .times(1),
            )
            .rule(Rule::new("", Action::Succeed).delay(Duration::from_millis(200)))
            .write(&script)
            .map_err(|e| format!("scenario: {e}"))?;
        let out =
            std::fs::File::create(self.root.path().join("gamma.out")).map_err(|e| e.to_string())?;
        // Without --exit-when-done: it waits for a human after the escalation.
        let child = self
            .piv_cmd(&dir)
            .env(SCRIPT_ENV, &script)
            .env("TELEGRAM_PROJECT_PREFIX", "gamma")
            .arg("run")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start piv: {e}"))?;
        say(&format!(
            "  started `piv run` for [gamma] (pid {}); its first plan fails with a 401",
            child.id()
        ));
        Ok((dir, child))
    }

    /// With the real Telegram: [gamma] escalates in your chat and the demo waits for you
    /// to tap its Retry button (the demo cannot tap for you); it goes on without a tap
    /// after [`TAP_WAIT`].
    fn button_press_by_you(&self) -> Result<(), String> {
        let (dir, mut child) = self.start_escalating_project()?;
        wait(STEP_DEADLINE, "gamma to wait for a human", || {
            state_of(&dir).as_deref() == Some("waiting_for_human")
        })?;
        say(&format!(
            "  [gamma]'s escalation is in your chat (its topic in a forum group), with a \
             [🔁 Retry] button: tap it now (waiting up to {} s)",
            TAP_WAIT.as_secs()
        ));
        match wait(TAP_WAIT, "your tap", || {
            state_of(&dir).as_deref() == Some("done")
        }) {
            Ok(()) => {
                say("  tapped: [gamma] ran again and finished; the message says who chose what")
            }
            Err(_) => say("  no tap: [gamma] still waits; moving on"),
        }
        self.signal(&dir, "gamma", "shutdown")?;
        let status = wait_child(&mut child, STEP_DEADLINE)?;
        say(&format!("  [gamma] shut down: {status}"));
        Ok(())
    }

    fn button_press(&self, s: &BotApiStandIn) -> Result<(), String> {
        let (dir, mut child) = self.start_escalating_project()?;
        let mut escalation = None;
        wait(STEP_DEADLINE, "gamma's escalation with a button", || {
            escalation = s
                .sent_messages()
                .into_iter()
                .find(|m| !m.buttons.is_empty());
            escalation.is_some()
        })?;
        let escalation = escalation.ok_or("no escalation")?;
        print_chat(&escalation.text);
        let (label, data) = escalation.buttons[0][0].clone();
        say(&format!("  its button: [{label}] (callback data {data:?})"));
        wait(STEP_DEADLINE, "gamma to wait for a human", || {
            state_of(&dir).as_deref() == Some("waiting_for_human")
        })?;
        let tap = s
            .inject_tap(escalation.message_id, &data, 4242)
            .ok_or("cannot tap")?;
        say(&format!("  chat → taps [{label}]"));
        let answer = s
            .wait_for_callback_answer(&tap, STEP_DEADLINE)
            .ok_or("the tap was not answered")?;
        say(&format!(
            "  answered after {:.0} ms: {:?}",
            s.tap_answered_after(&tap).unwrap_or_default().as_secs_f64() * 1000.0,
            answer.text.unwrap_or_default()
        ));
        wait(STEP_DEADLINE, "gamma to finish after the retry", || {
            state_of(&dir).as_deref() == Some("done")
        })?;
        if let Some(edit) = s
            .edits()
            .into_iter()
            .find(|e| e.message_id == escalation.message_id)
        {
            say("  the escalation now reads:");
            print_chat(&edit.text);
        }
        let again = s
            .inject_tap(escalation.message_id, &data, 4242)
            .ok_or("cannot tap")?;
        let refused = s
            .wait_for_callback_answer(&again, STEP_DEADLINE)
            .ok_or("the second tap was not answered")?;
        say(&format!(
            "  a second tap: alert {:?} — nothing done",
            refused.text.unwrap_or_default()
        ));
        self.signal(&dir, "gamma", "shutdown")?;
        let status = wait_child(&mut child, STEP_DEADLINE)?;
        say(&format!("  [gamma] shut down: {status}"));
        Ok(())
    }

    fn signal(&self, project: &Path, prefix: &str, action: &str) -> Result<(), String> {
        let status = self
            .piv_cmd(project)
            .args(["signal", prefix, action])
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("piv signal {prefix} {action} failed: {status}"))
        }
    }
}

/// The published state of an instance (`.agents/orchestrator.state.json`).
fn state_of(project: &Path) -> Option<String> {
    piv::io::state_file::read(project).map(|s| s.state.as_str().to_string())
}

fn print_chat(html: &str) {
    let plain = parse_telegram_html(html).unwrap_or_else(|_| html.to_string());
    for line in plain.lines() {
        println!("  │ {line}");
    }
}

fn git_log(dir: &Path) -> Vec<String> {
    Command::new("git")
        .args(["log", "--format=%s"])
        .current_dir(dir)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn wait(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return Err(format!(
                "timed out after {}s waiting for {what}",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus, String> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            return Err("an instance did not finish in time".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
