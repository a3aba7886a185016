//! The controller runtime's queue and dispatch path against plain tokio
//! baselines (`cargo bench -p krake-benches --bench controller`).
//!
//! - **Duplicate triggers**: 10,000 keys (`namespace/name` strings, as object
//!   references are) triggered 10 times each, interleaved, into a
//!   [`WorkQueue`] while a [`runner::run`] with a no-op handler drains it;
//!   a round ends when the queue is closed and every key has been reconciled
//!   after its last trigger. Measured in triggers per second, against the
//!   same 100,000 keys sent through a `tokio::sync::mpsc` channel to a
//!   dispatcher that spawns the same no-op handler per message with the same
//!   concurrency limit (no dedup, no due times). The reconciles per second
//!   (fewer than the triggers: duplicates collapse) are printed as well.
//! - **Dispatch**: the same 10,000 keys triggered once each, in reconciles
//!   per second, against the same channel dispatcher with 10,000 messages:
//!   the cost of the queue's bookkeeping per reconcile.
//! - **Trigger**: the duplicate triggers alone into a queue nobody drains,
//!   against inserting the same keys into a `HashSet` (dedup and nothing
//!   else).
//!
//! The target is over 100,000 queued reconciles per second. In
//! [`Mode::Smoke`] every measurement runs a few small rounds and checks its
//! counts (every key reconciled at least once and at most once per trigger,
//! every message of the baseline handled).

use std::collections::HashSet;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use krake_controller::runner;
use krake_controller::work_queue::{BackoffPolicy, QueueConfig, Reschedule, WorkQueue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Mode, Throughput, report};

/// The sizes of one run of the suite.
#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    /// Distinct keys per round.
    keys: usize,
    /// Triggers per key in the duplicate-trigger rounds.
    triggers: usize,
    /// Handlers running at once (the queue's concurrency, the baseline's
    /// limit of in-flight tasks).
    concurrency: usize,
    /// Rounds run before measuring.
    warm_up: usize,
    /// Rounds measured at least, whatever the time budget.
    min_rounds: usize,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bench => Plan {
                mode,
                keys: 10_000,
                triggers: 10,
                concurrency: 8,
                warm_up: 3,
                min_rounds: 10,
            },
            Mode::Smoke | Mode::List => Plan {
                mode,
                keys: 500,
                triggers: 3,
                concurrency: 4,
                warm_up: 1,
                min_rounds: 2,
            },
        }
    }
}

/// Runs every measurement of the suite in `mode` (on its own tokio runtime)
/// and prints the results.
pub fn run(mode: Mode) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run_async(Plan::new(mode)));
}

async fn run_async(plan: Plan) {
    println!(
        "krake-controller work queue and runner benchmarks ({:?} mode, {} keys, concurrency {})",
        plan.mode, plan.keys, plan.concurrency
    );
    let keys: Arc<Vec<String>> = Arc::new(
        (0..plan.keys)
            .map(|i| format!("team-{}/app-{i:05}", i % 16))
            .collect(),
    );

    // Duplicate triggers through the queue and the runner.
    let reconciles = Arc::new(AtomicU64::new(0));
    let triggers_per_round = (plan.keys * plan.triggers) as u64;
    let queued = rounds(plan, || {
        let keys = keys.clone();
        let reconciles = reconciles.clone();
        async move {
            let done = queue_round(&keys, plan.triggers, plan.concurrency).await;
            check_reconciles(done, keys.len(), plan.triggers);
            reconciles.fetch_add(done, Ordering::Relaxed);
            triggers_per_round
        }
    })
    .await;
    let channel = rounds(plan, || {
        let keys = keys.clone();
        async move {
            let handled = channel_round(&keys, plan.triggers, plan.concurrency).await;
            assert_eq!(handled, triggers_per_round, "the channel lost messages");
            handled
        }
    })
    .await;
    report(
        &format!(
            "queue+runner, {} keys x {} triggers: triggers",
            plan.keys, plan.triggers
        ),
        queued,
        &format!("mpsc+spawn, {} messages", triggers_per_round),
        channel,
    );
    let reconciled = Throughput {
        operations: reconciles.load(Ordering::Relaxed),
        elapsed: queued.elapsed,
    };
    println!(
        "queue+runner, {} keys x {} triggers: {:.0} reconciles/s ({:.0} reconciles per round of {} triggers) | target > 100000 reconciles/s: {}",
        plan.keys,
        plan.triggers,
        reconciled.per_second(),
        reconciled.operations as f64 * triggers_per_round as f64 / queued.operations as f64,
        triggers_per_round,
        if reconciled.per_second() > 100_000.0 {
            "met"
        } else {
            "NOT met"
        },
    );

    // One trigger per key: the dispatch cost per reconcile.
    let dispatched = rounds(plan, || {
        let keys = keys.clone();
        async move {
            let done = queue_round(&keys, 1, plan.concurrency).await;
            check_reconciles(done, keys.len(), 1);
            done
        }
    })
    .await;
    let channel = rounds(plan, || {
        let keys = keys.clone();
        async move {
            let handled = channel_round(&keys, 1, plan.concurrency).await;
            assert_eq!(handled, keys.len() as u64, "the channel lost messages");
            handled
        }
    })
    .await;
    report(
        &format!("queue+runner, {} keys x 1 trigger: reconciles", plan.keys),
        dispatched,
        &format!("mpsc+spawn, {} messages", plan.keys),
        channel,
    );

    // Triggers alone: the queue's dedup against a HashSet's.
    let triggered = rounds(plan, || {
        let keys = keys.clone();
        async move {
            let queue = WorkQueue::new(config(plan.concurrency));
            for _ in 0..plan.triggers {
                for key in keys.iter() {
                    queue.trigger_now(key.clone());
                }
            }
            assert_eq!(queue.len(), keys.len(), "duplicates must collapse");
            triggers_per_round
        }
    })
    .await;
    let hashed = rounds(plan, || {
        let keys = keys.clone();
        async move {
            let mut set = HashSet::new();
            for _ in 0..plan.triggers {
                for key in keys.iter() {
                    set.insert(key.clone());
                }
            }
            assert_eq!(black_box(&set).len(), keys.len());
            triggers_per_round
        }
    })
    .await;
    report(
        &format!(
            "trigger only, {} keys x {} triggers",
            plan.keys, plan.triggers
        ),
        triggered,
        "HashSet insert",
        hashed,
    );
}

fn config(concurrency: usize) -> QueueConfig {
    QueueConfig {
        debounce: Duration::ZERO,
        concurrency,
        backoff: BackoffPolicy::default(),
    }
}

/// Every key ran at least once after its last trigger, and never more often
/// than it was triggered.
fn check_reconciles(done: u64, keys: usize, triggers: usize) {
    assert!(
        done >= keys as u64 && done <= (keys * triggers) as u64,
        "{done} reconciles of {keys} keys triggered {triggers} times each"
    );
}

/// Runs `round` `warm_up` times untimed, then for the time budget (and at
/// least `min_rounds` times), summing the operations each round reports.
async fn rounds<F, Fut>(plan: Plan, mut round: F) -> Throughput
where
    F: FnMut() -> Fut,
    Fut: Future<Output = u64>,
{
    for _ in 0..plan.warm_up {
        round().await;
    }
    let budget = plan.mode.budget();
    let start = Instant::now();
    let mut operations = 0;
    let mut done = 0;
    while start.elapsed() < budget || done < plan.min_rounds {
        operations += round().await;
        done += 1;
    }
    Throughput {
        operations,
        elapsed: start.elapsed(),
    }
}

/// The no-op reconcile both sides run: counts itself.
fn reconcile(count: &AtomicU64) -> impl Future<Output = Reschedule> + use<> {
    count.fetch_add(1, Ordering::Relaxed);
    async { Reschedule::Done }
}

/// Triggers every key `triggers` times (interleaved) into a fresh queue
/// while a runner drains it, closes the queue and waits for the runner to
/// finish. Returns how many reconciles ran.
async fn queue_round(keys: &[String], triggers: usize, concurrency: usize) -> u64 {
    let queue = WorkQueue::new(config(concurrency));
    let count = Arc::new(AtomicU64::new(0));
    let handled = count.clone();
    let runner = tokio::spawn(runner::run(
        queue.clone(),
        CancellationToken::new(),
        Duration::from_secs(10),
        move |_key: String, _| reconcile(&handled),
    ));
    for _ in 0..triggers {
        for key in keys {
            queue.trigger_now(key.clone());
        }
    }
    queue.close();
    let cancelled = runner.await.expect("the runner finishes");
    assert_eq!(cancelled, 0);
    count.load(Ordering::Relaxed)
}

/// The baseline: sends every key `triggers` times through an unbounded mpsc
/// channel to a dispatcher that spawns the reconcile of each message, at most
/// `concurrency` at once. Returns how many reconciles ran.
async fn channel_round(keys: &[String], triggers: usize, concurrency: usize) -> u64 {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    let count = Arc::new(AtomicU64::new(0));
    let handled = count.clone();
    let dispatcher = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        while let Some(key) = receiver.recv().await {
            while tasks.len() >= concurrency {
                tasks.join_next().await;
            }
            let handled = handled.clone();
            tasks.spawn(async move {
                black_box(key);
                reconcile(&handled).await
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    for _ in 0..triggers {
        for key in keys {
            sender.send(key.clone()).expect("the dispatcher runs");
        }
    }
    drop(sender);
    dispatcher.await.expect("the dispatcher finishes");
    count.load(Ordering::Relaxed)
}
