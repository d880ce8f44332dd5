//! The send budget shared across machines through NATS (issue 17): two "machines" (their
//! own `$PIV_HOME` and project, one bot token and chat) both sending notifications on a
//! real 3-node cluster keep the chat's interval between any two sends; without
//! coordination they do not (the test discriminates). All nodes down → sends still go out,
//! each machine at its conservative share. A 429 one machine gets silences the other.
//! Skipped loudly without nats-server (failed in CI).

use std::process::Child;
use std::time::{Duration, Instant};

use piv::core::send_slots::degraded_interval_ms;

use piv::io::send_budget::PRIVATE_CHAT_INTERVAL;
use piv_testkit::bot_api::{BotApiStandIn, SentMessage};

use crate::support::nats_cluster::NatsCluster;
use crate::support::telegram_run::{output_of, slow, start_with_telegram, Kill};
use crate::support::*;

const TOKEN: &str = "880018:budget-token-SECRET-abc";
/// A private chat: 1.1 s between two sends (a group's 3 s would make the tests slow).
const CHAT: i64 = 181_818;
/// What a recorded gap may fall short of the interval. The booked slots are exact, but the
/// stand-in stamps a send when its request arrives: a send that load delays arrives late
/// and shortens the gap after it by as much (seen: 170 ms on a loaded 2-core machine).
/// Still discriminating: two machines pacing only themselves interleave at gaps under
/// half the interval (µs in practice).
const TOLERANCE: Duration = Duration::from_millis(400);

/// A "machine": its own project tree and `$PIV_HOME`; phases enough for a steady stream of
/// notifications.
fn machine(name: &str, phases: u32, session_ms: u64) -> Sandbox {
    let sb = Sandbox::new(name, &ready_manifest(phases));
    sb.scenario(slow(session_ms));
    sb
}

fn start_on(
    sb: &Sandbox,
    api: &BotApiStandIn,
    cluster: Option<&NatsCluster>,
    prefix: &str,
) -> Child {
    let urls = cluster.map(|c| c.urls());
    let mut env = vec![
        ("PIV_LEASE_TTL_SECS", "2"),
        ("RUST_LOG", "info,async_nats=warn"),
    ];
    if let Some(urls) = &urls {
        env.push(("PIV_COORDINATION", urls.as_str()));
    }
    start_with_telegram(sb, api, (TOKEN, CHAT), prefix, &[], &env)
}

/// The sends to the chat by `pids`, in the order they arrived.
fn sends_by(api: &BotApiStandIn, pids: &[u32]) -> Vec<SentMessage> {
    let mut sent: Vec<SentMessage> = api
        .sent_messages()
        .into_iter()
        .filter(|m| m.chat_id == CHAT && m.pid.is_some_and(|p| pids.contains(&p)))
        .collect();
    sent.sort_by_key(|m| m.at);
    sent
}

fn count_by(api: &BotApiStandIn, pid: u32) -> usize {
    sends_by(api, &[pid]).len()
}

/// The gaps between consecutive sends.
fn gaps(sent: &[SentMessage]) -> Vec<Duration> {
    sent.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Two machines started at once, each until it sent `each` messages: the sends of both.
fn two_machines_sending(
    api: &BotApiStandIn,
    cluster: Option<&NatsCluster>,
    each: usize,
) -> (Vec<SentMessage>, String) {
    let a = machine("a", 6, 300);
    let b = machine("b", 6, 300);
    let procs = Kill(vec![
        start_on(&a, api, cluster, "a"),
        start_on(&b, api, cluster, "b"),
    ]);
    let pids = [procs.0[0].id(), procs.0[1].id()];
    let both = wait_until(DEADLINE * 2, || {
        pids.iter().all(|p| count_by(api, *p) >= each)
    });
    let logs = format!("{}\n{}", output_of(&a, "a"), output_of(&b, "b"));
    assert!(both, "both machines send {each} messages\n{logs}");
    (sends_by(api, &pids), logs)
}

#[test]
fn two_machines_keep_the_chats_interval_only_when_they_share_the_budget() {
    let Some(cluster) = NatsCluster::start_or_skip("nats_budget::shared_interval") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let (sent, logs) = two_machines_sending(&api, Some(&cluster), 4);
    let gaps_shared = gaps(&sent);
    eprintln!("shared budget, gaps: {gaps_shared:?}");
    let floor = PRIVATE_CHAT_INTERVAL - TOLERANCE;
    assert!(
        gaps_shared.iter().all(|g| *g >= floor),
        "two sends closer than {floor:?} with the budget shared: {gaps_shared:?}\n{logs}"
    );
    // Over the whole train jitter cancels out: n sends span n - 1 intervals.
    let span = sent.last().unwrap().at - sent[0].at;
    let slots = PRIVATE_CHAT_INTERVAL * (sent.len() as u32 - 1);
    assert!(
        span + TOLERANCE >= slots,
        "{} sends in {span:?}, less than {slots:?}\n{logs}",
        sent.len()
    );

    // The same without PIV_COORDINATION: each machine spaces only its own sends.
    let api = BotApiStandIn::start(TOKEN);
    let (sent, _) = two_machines_sending(&api, None, 4);
    let gaps_alone = gaps(&sent);
    eprintln!("one budget per machine, gaps: {gaps_alone:?}");
    assert!(
        gaps_alone.iter().any(|g| *g < floor),
        "without coordination the machines' sends interleave closer than the interval: {gaps_alone:?}"
    );
}

/// All NATS nodes down: both machines still send, each spacing its own sends by its
/// conservative share (the interval × the machines last seen, at least 2); the log says
/// once that the budget fell back, and once that it is shared again when NATS is back.
#[test]
fn with_nats_down_each_machine_sends_at_its_conservative_share() {
    let Some(mut cluster) = NatsCluster::start_or_skip("nats_budget::degraded_share") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a", 12, 800);
    let b = machine("b", 12, 800);
    let procs = Kill(vec![
        start_on(&a, &api, Some(&cluster), "a"),
        start_on(&b, &api, Some(&cluster), "b"),
    ]);
    let pids = [procs.0[0].id(), procs.0[1].id()];
    let logs = || format!("{}\n{}", output_of(&a, "a"), output_of(&b, "b"));
    assert!(
        wait_until(DEADLINE, || pids.iter().all(|p| count_by(&api, *p) >= 2)),
        "both machines send\n{}",
        logs()
    );
    cluster.kill_all();
    let down = Instant::now();
    let after_down = |pid: u32| -> Vec<SentMessage> {
        sends_by(&api, &[pid])
            .into_iter()
            .filter(|m| m.at > down)
            .collect()
    };
    assert!(
        wait_until(DEADLINE * 2, || pids
            .iter()
            .all(|p| after_down(*p).len() >= 4)),
        "sends go on with NATS down: {:?}\n{}",
        pids.map(|p| after_down(p).len()),
        logs()
    );
    // Both run on this host: one machine seen, so the share is twice the interval. The
    // first send after the kill may have been booked in NATS before it.
    let share = Duration::from_millis(degraded_interval_ms(
        PRIVATE_CHAT_INTERVAL.as_millis() as u64,
        1,
    ));
    for pid in pids {
        let sent = after_down(pid);
        let spaced = gaps(&sent[1..]);
        eprintln!("NATS down, pid {pid}: gaps {spaced:?}");
        assert!(
            spaced.iter().all(|g| *g >= share - TOLERANCE),
            "pid {pid} sent closer than its share {share:?}: {spaced:?}\n{}",
            logs()
        );
    }
    // Said once per machine in its log, however many sends it booked meanwhile.
    let fell_back = |sb: &Sandbox| {
        sb.log()
            .matches("send budget across machines unavailable")
            .count()
    };
    assert!(
        fell_back(&a) == 1 && fell_back(&b) == 1,
        "the log says once that the budget fell back\n{}",
        logs()
    );
    cluster.restart_all();
    // The owner at least has something to send (coordination is back).
    let back = |sb: &Sandbox| {
        sb.log()
            .contains("send budget shared across machines again")
    };
    assert!(
        wait_until(DEADLINE * 2, || back(&a) || back(&b)),
        "the log says the budget is shared again\n{}",
        logs()
    );
}

/// A 429 with retry_after that one machine gets silences the other machine too: no send
/// from either until the back-off ends.
#[test]
fn a_rate_limit_seen_by_one_machine_silences_the_other() {
    let Some(cluster) = NatsCluster::start_or_skip("nats_budget::shared_429") else {
        return;
    };
    let api = BotApiStandIn::start(TOKEN);
    let a = machine("a", 12, 300);
    let b = machine("b", 12, 300);
    let procs = Kill(vec![
        start_on(&a, &api, Some(&cluster), "a"),
        start_on(&b, &api, Some(&cluster), "b"),
    ]);
    let pids = [procs.0[0].id(), procs.0[1].id()];
    let logs = || format!("{}\n{}", output_of(&a, "a"), output_of(&b, "b"));
    assert!(
        wait_until(DEADLINE, || pids.iter().all(|p| count_by(&api, *p) >= 2)),
        "both machines send\n{}",
        logs()
    );
    let retry_after = Duration::from_secs(4);
    api.force_429_retry_after(1, retry_after.as_secs());
    assert!(
        wait_until(DEADLINE, || api
            .rejected_sends()
            .iter()
            .any(|r| r.error_code == 429)),
        "a send gets the 429\n{}",
        logs()
    );
    let rejected = api
        .rejected_sends()
        .into_iter()
        .find(|r| r.error_code == 429)
        .unwrap();
    let limited = rejected.pid.expect("the sender's pid");
    let other = *pids.iter().find(|p| **p != limited).unwrap();
    // Both machines had more to send: each sends again after the back-off.
    assert!(
        wait_until(DEADLINE, || pids
            .iter()
            .all(|p| sends_by(&api, &[*p]).iter().any(|m| m.at > rejected.at))),
        "both send again after the back-off\n{}",
        logs()
    );
    let first_after = |pid: u32| {
        sends_by(&api, &[pid])
            .into_iter()
            .find(|m| m.at > rejected.at)
            .unwrap()
            .at
            - rejected.at
    };
    eprintln!(
        "429 retry_after {retry_after:?}: the limited machine sent again after {:?}, the other after {:?}",
        first_after(limited),
        first_after(other)
    );
    for pid in pids {
        assert!(
            first_after(pid) >= retry_after - TOLERANCE,
            "pid {pid} sent {:?} after the 429 (retry_after {retry_after:?}; {limited} got it)\n{}",
            first_after(pid),
            logs()
        );
    }
}
