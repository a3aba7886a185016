//! The runner: takes due keys out of a [`WorkQueue`] and runs a handler on
//! each, with the queue's concurrency limit, until shut down.
//!
//! # Expected flow
//!
//! 1. [`run`] waits for the earliest due key of the queue (or for a trigger
//!    that makes one due sooner), marks it running and spawns the handler on
//!    it as a tokio task, as long as fewer than
//!    [`QueueConfig::concurrency`](crate::work_queue::QueueConfig::concurrency)
//!    handlers run.
//! 2. When a handler returns, its [`Reschedule`] goes back to the queue
//!    (reset or grow the key's backoff, schedule its next run) and its slot
//!    is free for the next due key.
//! 3. When `shutdown` is cancelled, the runner takes no more keys, waits up
//!    to `drain_deadline` for the running handlers, then cancels (drops) the
//!    ones still running and returns how many it cancelled.
//!
//! # Guarantees
//!
//! - A key never runs twice at the same time (the queue's running set, see
//!   [`work_queue`](crate::work_queue)).
//! - Every key taken is given back to the queue exactly once: finished with
//!   the handler's outcome, finished as [`Reschedule::Failed`]`(None)` if the
//!   handler panicked (the panic is logged, not propagated), or released as
//!   cancelled if its task was dropped (drain deadline, the `run` future
//!   dropped, the runtime shut down). A cancelled key waits again, due at
//!   once, so a later runner of the same queue (say, after regaining a
//!   leadership) runs it again.
//! - `run` returns once every task it spawned has ended: on return, none of
//!   its handlers is still running.
//!
//! # Caveats
//!
//! - Cancellation drops the handler's future at an `.await`: handlers must
//!   tolerate that (as reconciles of a level-triggered controller do).
//! - A closed queue ([`WorkQueue::close`]) ends `run` on its own once nothing
//!   waits or runs.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::work_queue::{Attempt, Next, QueueKey, Reschedule, WorkQueue};

/// Hooks into the life of every run, for metrics and logs. Every method has
/// a default that does nothing; they are called on the runner's or the
/// handler's task, so they must be quick and must not block.
pub trait RunnerObserver<K>: Send + Sync + 'static {
    /// The handler is about to run on `key`.
    fn on_start(&self, _key: &K, _attempt: &Attempt) {}
    /// The handler of `key` returned `outcome` (or panicked, reported as
    /// `Failed(None)`) after `elapsed`.
    fn on_finish(&self, _key: &K, _outcome: &Reschedule, _elapsed: Duration) {}
    /// The handler of `key` was cancelled after `elapsed` (the drain deadline
    /// passed, or the runner was dropped).
    fn on_cancel(&self, _key: &K, _elapsed: Duration) {}
}

/// A [`RunnerObserver`] that observes nothing (what [`run`] uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl<K> RunnerObserver<K> for NoObserver {}

/// Runs the queue's keys through `handler` with the queue's concurrency limit
/// until `shutdown` is cancelled; then stops taking keys, lets running
/// handlers finish within `drain_deadline`, and cancels (drops) the rest.
/// Returns how many were cancelled. Also returns (with 0) when the queue is
/// closed and nothing waits or runs.
///
/// See the [module](self) docs for the contract; [`run_observed`] is the
/// same with a [`RunnerObserver`].
pub async fn run<K, F, Fut>(
    queue: WorkQueue<K>,
    shutdown: CancellationToken,
    drain_deadline: Duration,
    handler: F,
) -> usize
where
    K: QueueKey,
    F: Fn(K, Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reschedule> + Send + 'static,
{
    run_observed(
        queue,
        shutdown,
        drain_deadline,
        Arc::new(NoObserver),
        handler,
    )
    .await
}

/// [`run`], telling `observer` about every start, finish and cancellation.
pub async fn run_observed<K, F, Fut>(
    queue: WorkQueue<K>,
    shutdown: CancellationToken,
    drain_deadline: Duration,
    observer: Arc<dyn RunnerObserver<K>>,
    handler: F,
) -> usize
where
    K: QueueKey,
    F: Fn(K, Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reschedule> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limit = queue.concurrency();
    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Fill the free slots with due keys.
        let mut next_due = None;
        while tasks.len() < limit {
            match queue.pop_due(Instant::now()) {
                Next::Run(key, attempt) => {
                    let guard = RunGuard {
                        queue: queue.clone(),
                        observer: observer.clone(),
                        cancelled: cancelled.clone(),
                        key: Some(key.clone()),
                        started: Instant::now(),
                    };
                    observer.on_start(&key, &attempt);
                    tasks.spawn(run_one(guard, handler.clone(), key, attempt));
                }
                Next::At(at) => {
                    next_due = Some(at);
                    break;
                }
                Next::Empty { closed } => {
                    if closed && tasks.is_empty() {
                        return 0;
                    }
                    break;
                }
            }
        }
        let free = tasks.len() < limit;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                // Collect every other finished task before looking again.
                while tasks.try_join_next().is_some() {}
            }
            () = queue.woken(), if free => {}
            () = sleep_until(next_due), if free && next_due.is_some() => {}
        }
    }
    drain(tasks, drain_deadline).await;
    cancelled.load(Ordering::Acquire)
}

/// Waits up to `deadline` for `tasks` to end, then cancels the rest and
/// waits for them to be dropped (their guards release their keys).
async fn drain(mut tasks: JoinSet<()>, deadline: Duration) {
    let finished = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tasks.shutdown().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The task of one run: the handler on `key`, its panic caught, its outcome
/// given back to the queue by `guard`.
async fn run_one<K, F, Fut>(guard: RunGuard<K>, handler: Arc<F>, key: K, attempt: Attempt)
where
    K: QueueKey,
    F: Fn(K, Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reschedule> + Send + 'static,
{
    // The handler is called inside the catch too: a panic before its future
    // exists counts like one inside it.
    let outcome = AssertUnwindSafe(async move { handler(key, attempt).await })
        .catch_unwind()
        .await;
    let outcome = outcome.unwrap_or_else(|_| {
        tracing::error!(key = ?guard.key, "the handler panicked; its key is retried");
        Reschedule::Failed(None)
    });
    guard.finish(outcome);
}

/// Owns a running key on behalf of its task: gives it back to the queue
/// exactly once, with the outcome ([`RunGuard::finish`]) or, when the task is
/// dropped before that, as cancelled.
struct RunGuard<K: QueueKey> {
    queue: WorkQueue<K>,
    observer: Arc<dyn RunnerObserver<K>>,
    /// The runner's count of cancelled runs.
    cancelled: Arc<AtomicUsize>,
    /// The running key; `None` once given back.
    key: Option<K>,
    started: Instant,
}

impl<K: QueueKey> fmt::Debug for RunGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunGuard")
            .field("key", &self.key)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl<K: QueueKey> RunGuard<K> {
    fn finish(mut self, outcome: Reschedule) {
        if let Some(key) = self.key.take() {
            self.observer
                .on_finish(&key, &outcome, self.started.elapsed());
            self.queue.finish(key, outcome);
        }
    }
}

impl<K: QueueKey> Drop for RunGuard<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cancelled.fetch_add(1, Ordering::AcqRel);
            self.observer.on_cancel(&key, self.started.elapsed());
            self.queue.cancelled(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work_queue::{BackoffPolicy, QueueConfig};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;
    use tokio::sync::mpsc;
    use tokio::time::sleep;

    fn queue(concurrency: usize) -> WorkQueue<u32> {
        WorkQueue::new(QueueConfig {
            debounce: Duration::ZERO,
            concurrency,
            backoff: BackoffPolicy {
                jitter: false,
                ..BackoffPolicy::default()
            },
        })
    }

    /// Counts, per key, how many handlers run now and the most that ever ran
    /// at once; and overall.
    #[derive(Default)]
    struct Concurrency {
        now: Mutex<HashMap<u32, u32>>,
        max_per_key: AtomicU32,
        total_now: AtomicU32,
        max_total: AtomicU32,
        runs: Mutex<HashMap<u32, u32>>,
    }

    impl Concurrency {
        fn enter(&self, key: u32) {
            let mut now = self.now.lock().unwrap();
            let count = now.entry(key).or_default();
            *count += 1;
            self.max_per_key.fetch_max(*count, Ordering::SeqCst);
            *self.runs.lock().unwrap().entry(key).or_default() += 1;
            let total = self.total_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_total.fetch_max(total, Ordering::SeqCst);
        }

        fn exit(&self, key: u32) {
            *self.now.lock().unwrap().get_mut(&key).unwrap() -= 1;
            self.total_now.fetch_sub(1, Ordering::SeqCst);
        }

        fn runs(&self, key: u32) -> u32 {
            self.runs.lock().unwrap().get(&key).copied().unwrap_or(0)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_make_one_run_per_key() {
        let queue = queue(4);
        for _ in 0..10 {
            for key in 0..100 {
                queue.trigger_now(key);
            }
        }
        queue.close();
        let stats = Arc::new(Concurrency::default());
        let seen = stats.clone();
        let cancelled = run(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            move |key, _| {
                seen.enter(key);
                seen.exit(key);
                async { Reschedule::Done }
            },
        )
        .await;
        assert_eq!(cancelled, 0);
        assert!((0..100).all(|key| stats.runs(key) == 1));
        assert_eq!((queue.len(), queue.running()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_never_runs_twice_at_once_and_reruns_after_a_trigger() {
        let queue = queue(8);
        let stats = Arc::new(Concurrency::default());
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let seen = stats.clone();
        let runner = tokio::spawn(run(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            move |key, _| {
                let seen = seen.clone();
                let started_tx = started_tx.clone();
                async move {
                    seen.enter(key);
                    started_tx.send(key).unwrap();
                    sleep(Duration::from_secs(1)).await;
                    seen.exit(key);
                    Reschedule::Done
                }
            },
        ));
        queue.trigger_now(7);
        assert_eq!(started.recv().await, Some(7));
        // Triggered again and again while it runs.
        for _ in 0..5 {
            queue.trigger_now(7);
            sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(queue.running(), 1);
        assert_eq!(started.recv().await, Some(7), "runs once more after");
        queue.close();
        runner.await.unwrap();
        assert_eq!(stats.runs(7), 2, "and only once more");
        assert_eq!(stats.max_per_key.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_concurrency_limit_holds() {
        let queue = queue(3);
        for key in 0..20 {
            queue.trigger_now(key);
        }
        queue.close();
        let stats = Arc::new(Concurrency::default());
        let seen = stats.clone();
        run(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            move |key, _| {
                let seen = seen.clone();
                async move {
                    seen.enter(key);
                    sleep(Duration::from_millis(10 + u64::from(key % 7))).await;
                    seen.exit(key);
                    Reschedule::Done
                }
            },
        )
        .await;
        assert_eq!(stats.max_total.load(Ordering::SeqCst), 3);
        assert!((0..20).all(|key| stats.runs(key) == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_a_success_resets() {
        let queue = WorkQueue::new(QueueConfig {
            debounce: Duration::ZERO,
            concurrency: 2,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(2),
                factor: 2.0,
                jitter: false,
            },
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        queue.trigger_now("a");
        let start = Instant::now();
        let handler_queue = queue.clone();
        run(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            move |_key, attempt| {
                seen.lock().unwrap().push((Instant::now(), attempt));
                let runs = seen.lock().unwrap().len();
                // Fail four times, succeed, fail once more, then stop.
                let outcome = match runs {
                    1..=4 | 6 => Reschedule::Failed(None),
                    5 => Reschedule::After(Duration::from_secs(10)),
                    _ => {
                        handler_queue.close();
                        Reschedule::Done
                    }
                };
                async move { outcome }
            },
        )
        .await;
        let log = log.lock().unwrap();
        let times: Vec<u64> = log
            .iter()
            .map(|(at, _)| (*at - start).as_millis() as u64)
            .collect();
        // 500 ms, 1 s, 2 s, 2 s (capped), then 10 s after the success, then
        // 500 ms again.
        assert_eq!(times, [0, 500, 1500, 3500, 5500, 15500, 16000]);
        let retries: Vec<u32> = log.iter().map(|(_, a)| a.retries).collect();
        assert_eq!(retries, [0, 1, 2, 3, 4, 0, 1]);
        let firsts: Vec<Option<u64>> = log
            .iter()
            .map(|(_, a)| a.first_failure.map(|f| (f - start).as_millis() as u64))
            .collect();
        assert_eq!(
            firsts,
            [None, Some(0), Some(0), Some(0), Some(0), None, Some(15500)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requeue_after_runs_again_after_the_delay() {
        let queue = queue(1);
        let (tx, mut runs) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run(
            queue.clone(),
            shutdown.clone(),
            Duration::from_secs(1),
            move |key: u32, _| {
                tx.send((key, Instant::now())).unwrap();
                async { Reschedule::After(Duration::from_secs(30)) }
            },
        ));
        let start = Instant::now();
        queue.trigger_now(1);
        let mut times = Vec::new();
        for _ in 0..3 {
            let (key, at) = runs.recv().await.unwrap();
            assert_eq!(key, 1);
            times.push((at - start).as_secs());
        }
        assert_eq!(times, [0, 30, 60]);
        shutdown.cancel();
        assert_eq!(runner.await.unwrap(), 0);
        assert_eq!(
            queue.len(),
            1,
            "the requeue still waits for the next runner"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_wakes_a_runner_waiting_for_a_later_key() {
        let queue = queue(2);
        let (tx, mut runs) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run(
            queue.clone(),
            shutdown.clone(),
            Duration::from_secs(1),
            move |key: u32, _| {
                tx.send((key, Instant::now())).unwrap();
                async { Reschedule::Done }
            },
        ));
        let start = Instant::now();
        queue.trigger(1, Duration::from_secs(60));
        sleep(Duration::from_secs(1)).await;
        queue.trigger(2, Duration::from_secs(5));
        let (key, at) = runs.recv().await.unwrap();
        assert_eq!((key, (at - start).as_secs()), (2, 6));
        let (key, at) = runs.recv().await.unwrap();
        assert_eq!((key, (at - start).as_secs()), (1, 60));
        shutdown.cancel();
        runner.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn forget_stops_a_key_from_running() {
        let queue = queue(2);
        let stats = Arc::new(Concurrency::default());
        let seen = stats.clone();
        queue.trigger(1, Duration::from_secs(5));
        queue.trigger(2, Duration::from_secs(5));
        queue.forget(&1);
        queue.close();
        run(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            move |key, _| {
                seen.enter(key);
                seen.exit(key);
                async { Reschedule::Failed(None) }
            },
        )
        .await;
        assert_eq!((stats.runs(1), stats.runs(2)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_running_handlers_within_the_deadline() {
        let queue = queue(4);
        let finished = Arc::new(AtomicU32::new(0));
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let done = finished.clone();
        let runner = tokio::spawn(run(
            queue.clone(),
            shutdown.clone(),
            Duration::from_secs(10),
            move |key: u32, _| {
                let done = done.clone();
                started_tx.send(key).unwrap();
                async move {
                    sleep(Duration::from_secs(u64::from(key))).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Reschedule::Done
                }
            },
        ));
        for key in 1..=3 {
            queue.trigger_now(key);
        }
        for _ in 1..=3 {
            started.recv().await.unwrap();
        }
        let stopped = Instant::now();
        shutdown.cancel();
        // Not taken any more: the runner has stopped intake.
        queue.trigger_now(9);
        assert_eq!(runner.await.unwrap(), 0, "nothing cancelled");
        assert_eq!(finished.load(Ordering::SeqCst), 3);
        assert_eq!(stopped.elapsed(), Duration::from_secs(3), "waited for all");
        assert_eq!((queue.running(), queue.len()), (0, 1));
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
        /// Gets a permit on every cancellation.
        cancelled: tokio::sync::Notify,
    }

    impl RunnerObserver<u32> for Recorder {
        fn on_start(&self, key: &u32, attempt: &Attempt) {
            let event = format!("start {key} retries {}", attempt.retries);
            self.events.lock().unwrap().push(event);
        }
        fn on_finish(&self, key: &u32, outcome: &Reschedule, elapsed: Duration) {
            let event = format!("finish {key} {outcome:?} after {}s", elapsed.as_secs());
            self.events.lock().unwrap().push(event);
        }
        fn on_cancel(&self, key: &u32, elapsed: Duration) {
            let event = format!("cancel {key} after {}s", elapsed.as_secs());
            self.events.lock().unwrap().push(event);
            self.cancelled.notify_one();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_cancels_what_outlives_the_deadline() {
        let queue = queue(4);
        let recorder = Arc::new(Recorder::default());
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let runner = tokio::spawn(run_observed(
            queue.clone(),
            shutdown.clone(),
            Duration::from_secs(5),
            recorder.clone(),
            move |key: u32, _| {
                started_tx.send(key).unwrap();
                async move {
                    sleep(Duration::from_secs(u64::from(key))).await;
                    Reschedule::Done
                }
            },
        ));
        queue.trigger_now(2);
        started.recv().await.unwrap();
        queue.trigger_now(60);
        queue.trigger_now(70);
        for _ in 0..2 {
            started.recv().await.unwrap();
        }
        let stopped = Instant::now();
        shutdown.cancel();
        assert_eq!(runner.await.unwrap(), 2, "two outlived the deadline");
        assert_eq!(stopped.elapsed(), Duration::from_secs(5));
        assert_eq!(queue.running(), 0, "every key was given back");
        assert_eq!(queue.len(), 2, "the cancelled keys wait to run again");
        let mut events = recorder.events.lock().unwrap().clone();
        events.sort();
        assert_eq!(
            events,
            [
                "cancel 60 after 5s",
                "cancel 70 after 5s",
                "finish 2 Done after 2s",
                "start 2 retries 0",
                "start 60 retries 0",
                "start 70 retries 0",
            ]
        );
        // The next runner of the queue runs them again.
        queue.close();
        let reruns = Arc::new(Mutex::new(Vec::new()));
        let seen = reruns.clone();
        run(
            queue.clone(),
            CancellationToken::new(),
            Duration::ZERO,
            move |key, _| {
                seen.lock().unwrap().push(key);
                async { Reschedule::Done }
            },
        )
        .await;
        let mut reruns = reruns.lock().unwrap().clone();
        reruns.sort();
        assert_eq!(reruns, [60, 70]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_already_cancelled_shutdown_runs_nothing() {
        let queue = queue(4);
        queue.trigger_now(1);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let ran = Arc::new(AtomicU32::new(0));
        let runs = ran.clone();
        let cancelled = run(queue.clone(), shutdown, Duration::ZERO, move |_, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Reschedule::Done }
        })
        .await;
        assert_eq!((cancelled, queue.len()), (0, 1));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_counts_as_a_failure() {
        let queue = queue(2);
        let recorder = Arc::new(Recorder::default());
        queue.trigger_now(1);
        let handler_queue = queue.clone();
        let cancelled = run_observed(
            queue.clone(),
            CancellationToken::new(),
            Duration::ZERO,
            recorder.clone(),
            move |key: u32, attempt| {
                if attempt.retries == 0 {
                    panic!("synchronous panic of {key}");
                }
                let handler_queue = handler_queue.clone();
                async move {
                    if attempt.retries == 1 {
                        panic!("asynchronous panic");
                    }
                    handler_queue.close();
                    Reschedule::Done
                }
            },
        )
        .await;
        assert_eq!(cancelled, 0);
        let events = recorder.events.lock().unwrap().clone();
        assert_eq!(
            events,
            [
                "start 1 retries 0",
                "finish 1 Failed(None) after 0s",
                "start 1 retries 1",
                "finish 1 Failed(None) after 0s",
                "start 1 retries 2",
                "finish 1 Done after 0s",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_runner_gives_the_keys_back() {
        let queue = queue(2);
        let recorder = Arc::new(Recorder::default());
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let runner = tokio::spawn(run_observed(
            queue.clone(),
            CancellationToken::new(),
            Duration::from_secs(1),
            recorder.clone(),
            move |key: u32, _| {
                started_tx.send(key).unwrap();
                std::future::pending()
            },
        ));
        queue.trigger_now(1);
        started.recv().await.unwrap();
        assert_eq!(queue.running(), 1);
        runner.abort();
        assert!(runner.await.unwrap_err().is_cancelled());
        // The handler's task is dropped after the runner's.
        recorder.cancelled.notified().await;
        assert_eq!((queue.running(), queue.len()), (0, 1));
    }
}
