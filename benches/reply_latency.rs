//! Reply latency bench: 10 instances flood one chat with notifications through the real shared send budget (`io::send_budget` on a real `$PIV_HOME`), replies are injected at random moments; how long a reply waits for its slot, with replies-first booking and with the FIFO booking piv had before, in the same run.
//!
//! Each instance is a thread with its own `SendBudget` handle (each call opens and locks
//! the budget file itself, as separate processes do). An instance sends its notifications
//! one after another, like the notifier's sender task: book a slot, sleep until it (the
//! send itself is not simulated: the slot is what the budget decides), book the next.
//! With replies first (what piv does) a notification books with
//! `book_now(Notification)` and asks again when told to; a reply books with
//! `book_now(Reply)`. The FIFO baseline books everything with `reserve_now()`, the
//! first-come booking that is still in the library (and what a reply does under the new
//! rule). A sample is a reply's latency: from just before it books to the end of the
//! wait for its slot. The notification throughput of the flood is printed too: the new
//! rule must not slow the backlog down.
//!
//! `cargo bench --bench reply_latency` (`PIV_BENCH_REPLIES` default 60 per mode,
//! `PIV_BENCH_INSTANCES` 10, `PIV_BENCH_INTERVAL_MS` 50).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use piv::core::outbox::MessageKind;
use piv::io::send_budget::{Reservation, SendBudget};
use piv_testkit::rng::Rng;

const CHAT: i64 = 4242;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    RepliesFirst,
    Fifo,
}

/// Books a slot for `kind` as `mode` does and sleeps until it.
fn wait_for_slot(budget: &SendBudget, mode: Mode, kind: MessageKind) {
    loop {
        let asked = Instant::now();
        let reservation = match mode {
            Mode::RepliesFirst => budget.book_now(kind).expect("book"),
            Mode::Fifo => Reservation::SendIn(budget.reserve_now().expect("reserve")),
        };
        match reservation {
            Reservation::SendIn(wait) => {
                std::thread::sleep((asked + wait).saturating_duration_since(Instant::now()));
                return;
            }
            Reservation::AskAgainIn(wait) => {
                std::thread::sleep((asked + wait).saturating_duration_since(Instant::now()))
            }
        }
    }
}

struct Run {
    latencies_ms: Vec<f64>,
    notifications_per_s: f64,
    /// Notifications and replies: how much of the budget (1 / interval) was used.
    slots_per_s: f64,
}

fn run(mode: Mode, instances: usize, replies: usize, interval: Duration, seed: u64) -> Run {
    let home = tempfile::tempdir().expect("tempdir");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..instances)
        .map(|_| {
            let budget = SendBudget::with_interval(home.path(), CHAT, interval);
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    wait_for_slot(&budget, mode, MessageKind::Notification);
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // The flood is backed up once every instance has sent a few.
    wait_for(Duration::from_secs(120), "the flood to start", || {
        sent.load(Ordering::SeqCst) >= instances * 2
    });
    let mut rng = Rng::new(seed);
    let budget = SendBudget::with_interval(home.path(), CHAT, interval);
    let started = Instant::now();
    let sent_before = sent.load(Ordering::SeqCst);
    let mut latencies_ms = Vec::with_capacity(replies);
    for _ in 0..replies {
        // A random moment, 0–6 intervals after the last reply went out.
        let pause = interval.as_millis() as u64 * 6;
        std::thread::sleep(Duration::from_millis(rng.range(0, pause)));
        let t = Instant::now();
        wait_for_slot(&budget, mode, MessageKind::Reply);
        latencies_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    let notifications = sent.load(Ordering::SeqCst) - sent_before;
    stop.store(true, Ordering::SeqCst);
    for f in flooders {
        f.join().expect("flooder");
    }
    Run {
        latencies_ms,
        notifications_per_s: notifications as f64 / elapsed.as_secs_f64(),
        slots_per_s: (notifications + replies) as f64 / elapsed.as_secs_f64(),
    }
}

fn main() {
    let replies = env_or("PIV_BENCH_REPLIES", 60usize);
    let instances = env_or("PIV_BENCH_INSTANCES", 10usize);
    let interval = Duration::from_millis(env_or("PIV_BENCH_INTERVAL_MS", 50u64));
    println!(
        "reply latency: {instances} instances flooding one chat, {replies} replies per mode, \
         slot interval {interval:?}"
    );
    let mut results = Vec::new();
    for mode in [Mode::RepliesFirst, Mode::Fifo] {
        let r = run(mode, instances, replies, interval, 0x5eed_2026);
        let name = match mode {
            Mode::RepliesFirst => "replies_first",
            Mode::Fifo => "fifo",
        };
        let l = &r.latencies_ms;
        figure(
            &format!("{name}_reply_latency_p50"),
            format!("{:.1}", percentile(l, 50.0)),
            "ms",
        );
        figure(
            &format!("{name}_reply_latency_p99"),
            format!("{:.1}", percentile(l, 99.0)),
            "ms",
        );
        figure(
            &format!("{name}_reply_latency_max"),
            format!("{:.1}", max(l)),
            "ms",
        );
        figure(
            &format!("{name}_notifications_per_s"),
            format!("{:.1}", r.notifications_per_s),
            "msg/s",
        );
        figure(
            &format!("{name}_slots_used_per_s"),
            format!("{:.1}", r.slots_per_s),
            &format!("1/s (budget {:.1})", 1.0 / interval.as_secs_f64()),
        );
        results.push(r);
    }
    let p50 = |r: &Run| percentile(&r.latencies_ms, 50.0);
    let p99 = |r: &Run| percentile(&r.latencies_ms, 99.0);
    figure(
        "fifo_over_replies_first_p50",
        format!("{:.1}", p50(&results[1]) / p50(&results[0]).max(0.1)),
        "x",
    );
    figure(
        "fifo_over_replies_first_p99",
        format!("{:.1}", p99(&results[1]) / p99(&results[0]).max(0.1)),
        "x",
    );
    figure(
        "interval",
        interval.as_millis(),
        "ms (one budget slot; replies first promises about one, at most two)",
    );
}
