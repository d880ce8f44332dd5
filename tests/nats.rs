//! Coordination across machines on a real 3-node NATS JetStream cluster (issue 17):
//! "machines" are `piv run`s with their own `$PIV_HOME` and project tree, sharing only
//! the bot token, the Bot API stand-in and the cluster. One poller across machines; the
//! owner SIGKILLed → another machine polls within TTL + 1 s and a command sent meanwhile
//! is answered once; the owner frozen (SIGSTOP) past its TTL does not poll after SIGCONT;
//! one NATS node killed → polling goes on. Without NATS configured or reachable: exit 2,
//! or single-machine mode when optional. Skipped loudly without nats-server (failed in CI).

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use piv_testkit::bot_api::BotApiStandIn;

use crate::support::nats_cluster::{free_port, NatsCluster};
use crate::support::telegram_run::{output_of, replies_after, slow, start_with_telegram, Kill};
use crate::support::*;

const TOKEN: &str = "880017:nats-token-SECRET-abc";
const CHAT: i64 = 171_717;
/// A short lease so that the tests run quickly (the default is 5 s).
const TTL_SECS: u64 = 2;

/// A "machine": its own project tree and `$PIV_HOME`.
fn machine(name: &str) -> Sandbox {
    let sb = Sandbox::new(name, &ready_manifest(2));
    sb.scenario(slow(300));
    sb
}

fn start_on(sb: &Sandbox, api: &BotApiStandIn, cluster: &NatsCluster, prefix: &str) -> Child {
    let ttl = TTL_SECS.to_string();
    let urls = cluster.urls();
    start_with_telegram(
        sb,
        api,
        (TOKEN, CHAT),
        prefix,
        &[],
        &[
            ("PIV_COORDINATION", urls.as_str()),
            ("PIV_LEASE_TTL_SECS", ttl.as_str()),
            ("RUST_LOG", "info,async_nats=warn"),
        ],
    )
}

/// `piv <args>` with extra environment, to its end (bounded by [`DEADLINE`]).
fn piv_with_env(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = sb.piv(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn piv");
    wait_output(child, DEADLINE)
}

/// The pids that started a `getUpdates` at or after `since`.
fn pollers_since(api: &BotApiStandIn, since: Instant) -> BTreeSet<u32> {
    api.poll_starts()
        .iter()
        .filter(|p| p.at >= since)
        .filter_map(|p| p.pid)
        .collect()
}

fn first_poll_by(api: &BotApiStandIn, pid: u32, since: Instant) -> Option<Instant> {
    api.poll_starts()
        .iter()
        .filter(|p| p.pid == Some(pid) && p.at >= since)
        .map(|p| p.at)
        .min()
}

/// Two machines, one poller; the owner SIGKILLed → the other polls within TTL + 1 s,
/// and a command sent at once is answered exactly once.
#[test]
fn one_poller_across_machines_and_takeover_after_sigkill() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::takeover_after_sigkill") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    let t0 = Instant::now();
    let mut procs = Kill(vec![start_on(&a, &api, &cluster, "a")]);
    let a_pid = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()),
        "a polls\n{}\n{}",
        output_of(&a, "a"),
        cluster.logs()
    );
    procs.0.push(start_on(&b, &api, &cluster, "b"));
    let b_pid = procs.0[1].id();
    assert!(
        wait_until(DEADLINE, || output_of(&b, "b").contains("standing by")),
        "b stands by on the lease\n{}",
        output_of(&b, "b")
    );
    // a answers commands; b never polls meanwhile.
    let t = Instant::now();
    let first = api.inject_message(CHAT, "/help");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()),
        "a answers\n{}",
        output_of(&a, "a")
    );
    // a confirmed it (its next poll asks for the next update): recorded in the bucket.
    assert!(wait_until(DEADLINE, || polled_past(&api, a_pid, first)));
    assert_eq!(
        pollers_since(&api, t0),
        BTreeSet::from([a_pid]),
        "one poller across machines\n{}",
        output_of(&b, "b")
    );

    // SIGKILL the owner; a command sent at once is answered by b, once.
    let mut owner = procs.0.remove(0);
    owner.kill().unwrap();
    let killed = Instant::now();
    owner.wait().unwrap();
    let during = api.inject_message(CHAT, "/help");
    assert!(
        wait_until(DEADLINE, || first_poll_by(&api, b_pid, killed).is_some()),
        "b takes over\n{}",
        output_of(&b, "b")
    );
    let took = first_poll_by(&api, b_pid, killed).unwrap() - killed;
    eprintln!("nats takeover after SIGKILL: {took:?} (TTL {TTL_SECS} s)");
    assert!(
        took <= Duration::from_secs(TTL_SECS + 1),
        "b polled {took:?} after the kill, more than TTL + 1 s\n{}",
        output_of(&b, "b")
    );
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, killed, "/status")
            .is_empty()),
        "the command sent during the takeover is answered\n{}",
        output_of(&b, "b")
    );
    // b recorded it and polled on: a second answer would have been sent by then.
    assert!(wait_until(DEADLINE, || polled_past(&api, b_pid, during)));
    let recorded = Instant::now();
    assert!(wait_until(DEADLINE, || first_poll_by(
        &api, b_pid, recorded
    )
    .is_some()));
    assert_eq!(
        replies_after(&api, killed, "/status").len(),
        1,
        "answered exactly once: {:#?}\n{}",
        replies_after(&api, killed, ""),
        output_of(&b, "b")
    );
}

/// `pid` started a `getUpdates` asking for updates after `update_id` (so it had recorded it).
fn polled_past(api: &BotApiStandIn, pid: u32, update_id: i64) -> bool {
    api.poll_starts()
        .iter()
        .any(|p| p.pid == Some(pid) && p.offset.is_some_and(|o| o > update_id))
}

/// The owner frozen past its TTL: another machine takes over, and after SIGCONT the
/// frozen one does not poll again (its lease is gone; it would have to win it again).
#[test]
fn a_frozen_owner_does_not_poll_after_it_wakes() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::frozen_owner") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    let t0 = Instant::now();
    let mut procs = Kill(vec![start_on(&a, &api, &cluster, "a")]);
    let a_pid = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()),
        "a polls\n{}",
        output_of(&a, "a")
    );
    procs.0.push(start_on(&b, &api, &cluster, "b"));
    let b_pid = procs.0[1].id();
    assert!(wait_until(DEADLINE, || output_of(&b, "b").contains("standing by")));

    send_signal(a_pid, libc::SIGSTOP);
    let stopped = Instant::now();
    assert!(
        wait_until(DEADLINE, || first_poll_by(&api, b_pid, stopped).is_some()),
        "b takes over from the frozen a\n{}",
        output_of(&b, "b")
    );
    // Frozen well past its TTL.
    assert!(!wait_until(Duration::from_secs(TTL_SECS + 1), || false));
    send_signal(a_pid, libc::SIGCONT);
    let woke = Instant::now();
    // b answers a command sent after the wake-up, and polls on several times.
    api.inject_message(CHAT, "/help");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, woke, "/status")
            .is_empty()),
        "b answers\n{}",
        output_of(&b, "b")
    );
    assert!(wait_until(DEADLINE, || api
        .poll_starts()
        .iter()
        .filter(|p| p.pid == Some(b_pid) && p.at > woke)
        .count()
        >= 3));
    assert_eq!(
        first_poll_by(&api, a_pid, woke),
        None,
        "the woken ex-owner polled without the lease\n{}",
        output_of(&a, "a")
    );
    assert!(
        output_of(&a, "a").contains("poller lease"),
        "a says it lost the lease\n{}",
        output_of(&a, "a")
    );
    assert_eq!(replies_after(&api, woke, "/status").len(), 1);
}

/// One node of three killed (R3): the owner goes on polling and answering.
#[test]
fn one_nats_node_down_changes_nothing() {
    let Some(mut cluster) = NatsCluster::start_or_skip("nats::one_node_down") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let t0 = Instant::now();
    let procs = Kill(vec![start_on(&a, &api, &cluster, "a")]);
    let a_pid = procs.0[0].id();
    assert!(wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()));
    for node in 0..3 {
        cluster.kill(node);
        let t = Instant::now();
        api.inject_message(CHAT, "/help");
        assert!(
            wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()),
            "answered with node {node} down\n{}\n{}",
            output_of(&a, "a"),
            cluster.logs()
        );
        // Well past a TTL with the node down: still the poller, still answering.
        let later = Instant::now() + Duration::from_secs(TTL_SECS * 2);
        assert!(wait_until(DEADLINE, || Instant::now() > later));
        let t = Instant::now();
        api.inject_message(CHAT, "/help");
        assert!(
            wait_until(DEADLINE, || !replies_after(&api, t, "/status").is_empty()),
            "still answered after 2 TTLs with node {node} down\n{}",
            output_of(&a, "a")
        );
        assert_eq!(pollers_since(&api, t0), BTreeSet::from([a_pid]));
        cluster.restart(node);
    }
}

/// All nodes down: the loop goes on, nobody polls once the lease would have run out, and
/// polling resumes once the cluster is back.
#[test]
fn all_nats_nodes_down_then_back() {
    let Some(mut cluster) = NatsCluster::start_or_skip("nats::all_down") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    // Many long sessions: the run is still going when the cluster comes back.
    let a = Sandbox::new("a", &ready_manifest(6));
    a.scenario(slow(1500));
    let t0 = Instant::now();
    let procs = Kill(vec![start_on(&a, &api, &cluster, "a")]);
    let a_pid = procs.0[0].id();
    assert!(wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()));
    cluster.kill_all();
    let down = Instant::now();
    // Past the lease's end nobody polls.
    let quiet_from = down + Duration::from_secs(TTL_SECS + 1);
    assert!(wait_until(DEADLINE, || Instant::now() > quiet_from));
    let calls_before = a.claude_calls().len();
    let quiet_until = Instant::now() + Duration::from_secs(TTL_SECS * 2);
    assert!(wait_until(DEADLINE, || Instant::now() > quiet_until));
    assert_eq!(
        first_poll_by(&api, a_pid, quiet_from),
        None,
        "polled with NATS down, past the lease\n{}",
        output_of(&a, "a")
    );
    // The loop went on meanwhile.
    assert!(
        a.claude_calls().len() > calls_before,
        "the loop stalled with NATS down\n{}",
        output_of(&a, "a")
    );
    cluster.restart_all();
    let back = Instant::now();
    api.inject_message(CHAT, "/help");
    assert!(
        wait_until(DEADLINE, || first_poll_by(&api, a_pid, back).is_some()),
        "polling resumes when NATS is back\n{}\n{}",
        output_of(&a, "a"),
        cluster.logs()
    );
    assert!(wait_until(DEADLINE, || !replies_after(
        &api, back, "/status"
    )
    .is_empty()));
    let log = output_of(&a, "a");
    assert!(log.contains("coordination lost"), "{log}");
    assert!(log.contains("coordination back"), "{log}");
    // The chat heard both, once each.
    assert!(wait_until(DEADLINE, || !replies_after(
        &api,
        down,
        "Coordination across machines is back"
    )
    .is_empty()));
    let said = |what: &str| replies_after(&api, down, what).len();
    assert_eq!(
        (
            said("Coordination across machines lost"),
            said("Coordination across machines is back")
        ),
        (1, 1),
        "the chat hears each once: {:#?}\n{}",
        replies_after(&api, down, ""),
        output_of(&a, "a")
    );
}

/// Set but unreachable: `run`, `status` and `signal` exit 2 naming the URL; optional:
/// single-machine mode, said on stderr.
#[test]
fn unreachable_coordination_is_exit_2_unless_optional() {
    let sb = Sandbox::new("u", &ready_manifest(1));
    let url = format!("nats://127.0.0.1:{}", free_port());
    for args in [vec!["run"], vec!["status"], vec!["signal", "u", "pause"]] {
        let out = piv_with_env(&sb, &args, &[("PIV_COORDINATION", url.as_str())]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&url), "{args:?} names the URL: {stderr}");
    }
    let out = piv_with_env(
        &sb,
        &["status"],
        &[
            ("PIV_COORDINATION", url.as_str()),
            ("PIV_COORDINATION_OPTIONAL", "1"),
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("this machine only"), "{stderr}");
    let out = piv_with_env(
        &sb,
        &["run", "--exit-when-done"],
        &[
            ("PIV_COORDINATION", url.as_str()),
            ("PIV_COORDINATION_OPTIONAL", "1"),
        ],
    );
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{}", show(&sb, &out));
    assert!(stderr.contains("this machine only"), "{stderr}");
    // A server list without schemes is a usage error before anything is tried.
    let out = piv_with_env(&sb, &["status"], &[("PIV_COORDINATION", "127.0.0.1:4222")]);
    assert_eq!(out.status.code(), Some(2));
}

/// The prefixes `piv status --all --json` lists, run on `sb`'s machine.
fn status_all_prefixes(sb: &Sandbox, cluster: &NatsCluster) -> Vec<String> {
    let urls = cluster.urls();
    let out = piv_with_env(
        sb,
        &["status", "--all", "--json"],
        &[("PIV_COORDINATION", urls.as_str())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(sb, &out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["prefix"].as_str().unwrap_or("").to_string())
        .collect()
}

/// `/status all` sent in the chat: the answer (a's instance answers the bot).
fn status_all_in_chat(api: &BotApiStandIn, a: &Sandbox) -> String {
    let t = Instant::now();
    api.inject_message(CHAT, "/status all");
    assert!(
        wait_until(DEADLINE, || !replies_after(api, t, "All Instances")
            .is_empty()),
        "answered\n{}",
        output_of(a, "a")
    );
    replies_after(api, t, "All Instances").remove(0)
}

/// `piv status --all` and `/status all` list every machine's instances (the others as
/// `prefix@host`); an instance that stops renewing its entry drops out.
#[test]
fn status_all_lists_every_machine() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::status_all") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    let host = piv::io::coordination::hostname();
    let mut procs = Kill(vec![
        start_on(&a, &api, &cluster, "a"),
        start_on(&b, &api, &cluster, "b"),
    ]);
    let b_remote = format!("b@{host}");
    assert!(
        wait_until(DEADLINE, || {
            let listed = status_all_prefixes(&a, &cluster);
            listed.contains(&"a".to_string()) && listed.contains(&b_remote)
        }),
        "a's machine lists b: {:?}\n{}",
        status_all_prefixes(&a, &cluster),
        output_of(&b, "b")
    );
    let reply = status_all_in_chat(&api, &a);
    assert!(reply.contains("[a") && reply.contains("[b"), "{reply}");
    // `/status b` on a's bot: b's status as b published it.
    let t = Instant::now();
    api.inject_message(CHAT, "/status b");
    assert!(
        wait_until(DEADLINE, || api.sent_messages().iter().any(|m| m.at >= t
            && m.text.starts_with("[b] ")
            && m.text.contains("PIV Orchestrator Status"))),
        "b's status from another machine: {:#?}\n{}",
        replies_after(&api, t, ""),
        output_of(&a, "a")
    );

    // b SIGKILLed: its entry expires (three publications' worth) and drops out.
    let mut b_child = procs.0.remove(1);
    b_child.kill().unwrap();
    b_child.wait().unwrap();
    assert!(
        wait_until(DEADLINE, || !status_all_prefixes(&b, &cluster)
            .iter()
            .any(|p| p.starts_with("b"))),
        "b drops out: {:?}",
        status_all_prefixes(&b, &cluster)
    );
    assert!(status_all_prefixes(&b, &cluster).contains(&format!("a@{host}")));
}

/// How many signals from other machines `sb`'s instance queued, by its stderr.
fn queued_from_other_machines(sb: &Sandbox, prefix: &str) -> usize {
    std::fs::read_to_string(sb.root.path().join(format!("{prefix}.err")))
        .unwrap_or_default()
        .matches("queued a signal from another machine")
        .count()
}

/// `/pause <prefix>` for an instance on another machine reaches it exactly once and is
/// confirmed once acknowledged; sent while that instance is down, the reply says it is
/// queued, and the restarted instance gets it, once.
#[test]
fn pause_reaches_another_machine_exactly_once() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::pause_other_machine") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    b.scenario(slow(1500));
    let t0 = Instant::now();
    let mut procs = Kill(vec![start_on(&a, &api, &cluster, "a")]);
    let a_pid = procs.0[0].id();
    assert!(wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()));
    procs.0.push(start_on(&b, &api, &cluster, "b"));
    let host = piv::io::coordination::hostname();
    assert!(
        wait_until(DEADLINE, || status_all_prefixes(&a, &cluster)
            .contains(&format!("b@{host}"))),
        "b published\n{}",
        output_of(&b, "b")
    );
    let t = Instant::now();
    api.inject_message(CHAT, "/pause b");
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t,
            "Sent /pause signal to [b]"
        )
        .is_empty()),
        "confirmed once acknowledged: {:#?}\n{}\n{}",
        replies_after(&api, t, ""),
        output_of(&a, "a"),
        output_of(&b, "b")
    );
    assert!(
        wait_until(DEADLINE, || crate::support::telegram_run::state_of(&b)
            .as_deref()
            == Some("paused")),
        "b pauses\n{}",
        output_of(&b, "b")
    );
    assert_ne!(
        crate::support::telegram_run::state_of(&a).as_deref(),
        Some("paused")
    );
    assert_eq!(queued_from_other_machines(&b, "b"), 1);
    assert_eq!(replies_after(&api, t, "/pause").len(), 1);

    // b down: the command is queued for it, and applied once when it is back.
    let mut b_child = procs.0.remove(1);
    b_child.kill().unwrap();
    b_child.wait().unwrap();
    let t = Instant::now();
    api.inject_message(CHAT, "/resume b");
    assert!(
        wait_until(DEADLINE, || !replies_after(&api, t, "is queued").is_empty()),
        "says queued: {:#?}\n{}",
        replies_after(&api, t, ""),
        output_of(&a, "a")
    );
    procs.0.push(start_on(&b, &api, &cluster, "b"));
    assert!(
        wait_until(DEADLINE, || queued_from_other_machines(&b, "b") == 1),
        "the restarted b gets the queued /resume\n{}",
        output_of(&b, "b")
    );
    // The old /pause is not delivered again: only the /resume is new to the restarted b.
    assert!(wait_until(DEADLINE, || output_of(&b, "b").contains("signal received")));
    let later = Instant::now() + Duration::from_secs(TTL_SECS);
    assert!(wait_until(DEADLINE, || Instant::now() > later));
    assert_eq!(
        queued_from_other_machines(&b, "b"),
        1,
        "{}",
        output_of(&b, "b")
    );
    let received = output_of(&b, "b");
    assert!(received.contains("action=resume"), "{received}");
}

/// `piv signal b pause` on a's machine: acknowledged, b pauses, and b queued it once
/// (still once a lease TTL later: no redelivery).
fn pause_b_from_a_once(a: &Sandbox, b: &Sandbox, cluster: &NatsCluster) {
    let urls = cluster.urls();
    let out = piv_with_env(
        a,
        &["signal", "b", "pause"],
        &[("PIV_COORDINATION", urls.as_str())],
    );
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{}", show(a, &out));
    assert!(stdout.contains("acknowledged"), "{stdout}");
    assert!(
        wait_until(DEADLINE, || crate::support::telegram_run::state_of(b)
            .as_deref()
            == Some("paused")),
        "b pauses\n{}",
        output_of(b, "b")
    );
    let later = Instant::now() + Duration::from_secs(TTL_SECS);
    assert!(wait_until(DEADLINE, || Instant::now() > later));
    assert_eq!(queued_from_other_machines(b, "b"), 1);
}

/// `piv signal <prefix>` on one machine for an instance on another: acknowledged, applied
/// once.
#[test]
fn piv_signal_reaches_another_machine_exactly_once() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::piv_signal_other_machine") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    b.scenario(slow(1500));
    let procs = Kill(vec![start_on(&b, &api, &cluster, "b")]);
    let host = piv::io::coordination::hostname();
    assert!(
        wait_until(DEADLINE, || status_all_prefixes(&a, &cluster)
            .contains(&format!("b@{host}"))),
        "b published\n{}",
        output_of(&b, "b")
    );
    pause_b_from_a_once(&a, &b, &cluster);
    // Without coordination the prefix is unknown on a's machine.
    let out = a.piv(&["signal", "b", "pause"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    drop(procs);
}

/// Unreachable but optional, with Telegram: the run goes on on this machine only and
/// says so in the chat, and it polls (the kernel lock alone decides).
#[test]
fn optional_coordination_falls_back_and_says_so_in_the_chat() {
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let url = format!("nats://127.0.0.1:{}", free_port());
    let t0 = Instant::now();
    let procs = Kill(vec![start_with_telegram(
        &a,
        &api,
        (TOKEN, CHAT),
        "a",
        &[],
        &[
            ("PIV_COORDINATION", url.as_str()),
            ("PIV_COORDINATION_OPTIONAL", "1"),
        ],
    )]);
    let a_pid = procs.0[0].id();
    assert!(
        wait_until(DEADLINE, || !replies_after(
            &api,
            t0,
            "Coordination across machines is off"
        )
        .is_empty()),
        "the chat hears it\n{}",
        output_of(&a, "a")
    );
    assert!(wait_until(DEADLINE, || first_poll_by(&api, a_pid, t0).is_some()));
    let out = output_of(&a, "a");
    assert!(out.contains(&url), "{out}");
    assert!(out.contains("this machine only"), "{out}");
}

/// A `piv run` without Telegram is on the registry across machines too, and takes
/// signals from them: another machine's `piv status --all` and `/status all` list it,
/// and `piv signal` there pauses it, once.
#[test]
fn a_run_without_telegram_is_listed_and_steered_across_machines() {
    let Some(cluster) = NatsCluster::start_or_skip("nats::run_without_telegram") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a");
    let b = machine("b");
    b.scenario(slow(1500));
    let urls = cluster.urls();
    let ttl = TTL_SECS.to_string();
    let b_run = b
        .piv(&["run"])
        .env("PIV_COORDINATION", urls.as_str())
        .env("PIV_LEASE_TTL_SECS", ttl.as_str())
        .stdout(std::fs::File::create(b.root.path().join("b.out")).unwrap())
        .stderr(std::fs::File::create(b.root.path().join("b.err")).unwrap())
        .spawn()
        .expect("spawn piv run");
    let _procs = Kill(vec![b_run, start_on(&a, &api, &cluster, "a")]);
    let host = piv::io::coordination::hostname();
    let b_remote = format!("b@{host}");
    assert!(
        wait_until(DEADLINE, || status_all_prefixes(&a, &cluster)
            .contains(&b_remote)),
        "a's machine lists b, which runs without Telegram: {:?}\n{}",
        status_all_prefixes(&a, &cluster),
        output_of(&b, "b")
    );
    let reply = status_all_in_chat(&api, &a);
    assert!(reply.contains("[b"), "b in /status all: {reply}");
    pause_b_from_a_once(&a, &b, &cluster);
}
