//! A keyed work queue with due times: the scheduling stage between the
//! triggers of a controller (watch events, resyncs, requeues) and the
//! [runner](crate::runner) that calls its handler.
//!
//! # Guarantees
//!
//! - **Deduplication.** A key waits in the queue at most once. Triggering a
//!   waiting key again keeps the earlier of the two due times.
//! - **Debounce.** Every trigger is due [`QueueConfig::debounce`] after it is
//!   made, so the triggers of a key within that window (counted from the first
//!   one) collapse into one run, as Krake's `WorkQueue(debounce=...)` does.
//! - **Mutual exclusion.** A key never runs twice at the same time: a key is
//!   either waiting, running or neither, never both waiting and running.
//! - **No lost triggers.** A key triggered while it runs is not dropped: it
//!   runs once more after the current run finishes (at the earliest of the
//!   trigger's due time and what the handler asked for), however many times
//!   it was triggered meanwhile.
//! - **Backoff.** Failures of a key ([`Reschedule::Failed`]) delay its next run
//!   by the [`BackoffPolicy`]; the handler is told how many failures came
//!   before and when the first of them happened ([`Attempt`]); a success
//!   ([`Reschedule::Done`] or [`Reschedule::After`]) resets both.
//!
//! # Caveats
//!
//! - A trigger is news about the object, so it is not held back by a backoff:
//!   a key waiting for a retry that is triggered sooner runs sooner (with its
//!   retry count kept until a success). Only the handler's own outcome is
//!   delayed by the policy.
//! - Due times are [`tokio::time::Instant`]s, so tests may pause and advance
//!   tokio's clock.
//! - One [runner](crate::runner::run) at a time should serve a queue. A second
//!   one would never run a key twice at once either (the running set is
//!   shared), but each wakes only on its own timer and tasks, so keys could
//!   wait longer than their due time.

use std::cmp::{Ordering, Reverse};
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// What a key of a [`WorkQueue`] must be: usually an object reference (kind,
/// namespace, name). Implemented for every type with these bounds.
pub trait QueueKey: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static {}

impl<T: Clone + Eq + Hash + Send + Sync + fmt::Debug + 'static> QueueKey for T {}

/// When and how often a key is tried again after failures.
///
/// The `n`-th consecutive failure (`retries = n`) waits
/// `min(initial * factor^(n - 1), max)`; with `jitter`, a delay drawn
/// uniformly from the upper half of that, `[d/2, d]`, so that keys failing
/// together do not retry together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay, however many failures came before (the cap).
    pub max: Duration,
    /// How much each further failure multiplies the delay (usually 2.0; a
    /// value that is not finite and positive gives `max` every time).
    pub factor: f64,
    /// Whether to draw the delay from `[d/2, d]` instead of using `d` itself.
    pub jitter: bool,
}

impl Default for BackoffPolicy {
    /// 500 ms doubling up to 5 minutes, with jitter.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(300),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl BackoffPolicy {
    /// The delay before the next run of a key that has failed `retries`
    /// times in a row (`retries >= 1`; 0 is treated as 1). Never more than
    /// [`max`](Self::max).
    pub fn delay(&self, retries: u32) -> Duration {
        let exponent = i32::try_from(retries.saturating_sub(1)).unwrap_or(i32::MAX);
        let seconds = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let delay = if self.factor > 0.0 && seconds.is_finite() {
            Duration::try_from_secs_f64(seconds).map_or(self.max, |d| d.min(self.max))
        } else {
            self.max
        };
        if self.jitter {
            // A factor in [0.5, 1.0] of a delay never overflows.
            delay.mul_f64(0.5 + 0.5 * fastrand::f64())
        } else {
            delay
        }
    }
}

/// What a handler is told about the earlier attempts of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attempt {
    /// Failures of the key since its last success (0 on a first try or after
    /// a success).
    pub retries: u32,
    /// When the first of those failures was reported; `None` when `retries`
    /// is 0.
    pub first_failure: Option<Instant>,
}

/// What the handler of a key decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reschedule {
    /// Success; run again only when triggered. Resets the key's backoff.
    Done,
    /// Success; run again after this long (unless triggered sooner). Resets
    /// the backoff.
    After(Duration),
    /// Failure; run again after the policy's backoff delay (or this delay if
    /// given). Increments the retry count; `first_failure` is kept until a
    /// success.
    Failed(Option<Duration>),
}

/// The settings of a [`WorkQueue`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Triggers of a key within this window collapse into one run (Krake's
    /// `debounce`): every trigger is due this long after it is made.
    pub debounce: Duration,
    /// At most this many keys run at once (Krake's `worker_count`); 0 counts
    /// as 1.
    pub concurrency: usize,
    /// When failed keys are tried again.
    pub backoff: BackoffPolicy,
}

impl Default for QueueConfig {
    /// No debounce, 5 workers (Krake's default `worker_count`), the default
    /// backoff.
    fn default() -> Self {
        QueueConfig {
            debounce: Duration::ZERO,
            concurrency: 5,
            backoff: BackoffPolicy::default(),
        }
    }
}

/// A queue of keys with due times. Cheap to clone: clones share one queue.
///
/// Invariants: a key is in the queue at most once (the earliest due time
/// wins); a key never runs twice at the same time; a key triggered while it
/// runs runs once more after it finishes. See the [module](self) docs for the
/// full contract, and [`run`](crate::runner::run) for the stage that takes
/// keys out.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

impl<K> fmt::Debug for WorkQueue<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("WorkQueue")
            .field("waiting", &state.waiting.len())
            .field("running", &state.running.len())
            .field("failing", &state.failures.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// What every clone of a queue shares.
struct Shared<K> {
    config: QueueConfig,
    state: Mutex<State<K>>,
    /// Wakes the runner when a key becomes due earlier than anything it was
    /// waiting for, or when the queue is closed. `notify_one` keeps a permit
    /// when the runner is not waiting yet, so no wake-up is lost between the
    /// runner looking at the queue and waiting.
    wake: Notify,
}

impl<K> Shared<K> {
    /// The state; critical sections never panic (short of a panicking `Hash`
    /// or `Eq` of the key), so a poisoned lock still holds consistent state.
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The mutable state of a queue, behind one lock.
struct State<K> {
    /// Keys waiting to run: their due time and the sequence number of their
    /// live entry in `heap`.
    ///
    /// Invariant: disjoint from `running`; every key here has exactly one
    /// entry in `heap` with the same `seq` and `due` (its live entry).
    waiting: HashMap<K, Due>,
    /// Due keys, earliest first (ties in trigger order, by `seq`).
    ///
    /// Invariant: holds the live entry of every key of `waiting`, plus stale
    /// entries (whose key is not waiting, or waits with another `seq`) left by
    /// forgotten keys and by triggers that moved a due time earlier. Stale
    /// entries are skipped when they reach the top and dropped when they
    /// outnumber the live ones (see [`State::compact`]).
    heap: BinaryHeap<Reverse<HeapEntry<K>>>,
    /// Keys whose handler runs now, and what happened to them meanwhile.
    ///
    /// Invariant: disjoint from `waiting`; only the runner inserts (when it
    /// takes a key) and removes (when the run finishes or is cancelled).
    running: HashMap<K, Run>,
    /// Consecutive failures of keys since their last success.
    ///
    /// Invariant: every entry has `retries >= 1`; a key without failures has
    /// no entry. Independent of `waiting`/`running`: a failing key keeps its
    /// entry while it waits for its retry.
    failures: HashMap<K, Failures>,
    /// The next sequence number for a heap entry; strictly increasing.
    next_seq: u64,
    /// Set once by [`WorkQueue::close`]; never cleared.
    closed: bool,
}

/// When a waiting key is due, and which heap entry says so.
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    seq: u64,
}

/// An entry of the due heap, ordered by due time then sequence number.
struct HeapEntry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for HeapEntry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}

impl<K> Eq for HeapEntry<K> {}

impl<K> PartialOrd for HeapEntry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for HeapEntry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What happened to a running key since its run started.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// The earliest due time of the triggers received during the run; the
    /// key runs again no later than that once the run is over.
    retrigger: Option<Instant>,
    /// [`WorkQueue::forget`] was called during the run: the run's outcome is
    /// ignored (no reschedule, no failure recorded).
    forgotten: bool,
}

/// The failures of a key since its last success.
#[derive(Debug, Clone, Copy)]
struct Failures {
    retries: u32,
    first: Instant,
}

/// What the runner finds when it looks for work.
#[derive(Debug)]
pub(crate) enum Next<K> {
    /// This key is due; it is now running and must be
    /// [finished](WorkQueue::finish) or [cancelled](WorkQueue::cancelled).
    Run(K, Attempt),
    /// Nothing is due before this instant.
    At(Instant),
    /// Nothing waits at all; `closed` tells whether anything ever will (the
    /// queue is closed).
    Empty {
        /// Whether the queue is closed.
        closed: bool,
    },
}

/// `now + delay`, or about 30 years from now (tokio's own "far future") if
/// that overflows.
fn deadline(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

fn earliest(a: Option<Instant>, b: Instant) -> Instant {
    a.map_or(b, |a| a.min(b))
}

impl<K: QueueKey> State<K> {
    /// Makes `key` due no later than `at` (the earliest due time wins).
    /// Returns whether `at` is earlier than everything the heap held, i.e.
    /// whether the runner may need to wake up sooner than it planned.
    fn schedule(&mut self, key: K, at: Instant) -> bool {
        if let Some(run) = self.running.get_mut(&key) {
            run.retrigger = Some(earliest(run.retrigger, at));
            // The runner looks at the queue again when the run finishes.
            return false;
        }
        let seq = self.next_seq;
        let key = match self.waiting.entry(key) {
            Entry::Occupied(entry) if entry.get().at <= at => return false,
            Entry::Occupied(mut entry) => {
                *entry.get_mut() = Due { at, seq };
                entry.key().clone()
            }
            Entry::Vacant(entry) => {
                let key = entry.key().clone();
                entry.insert(Due { at, seq });
                key
            }
        };
        self.next_seq += 1;
        let sooner = self.heap.peek().is_none_or(|Reverse(top)| at < top.at);
        self.heap.push(Reverse(HeapEntry { at, seq, key }));
        self.compact();
        sooner
    }

    /// Drops the stale heap entries once they outnumber the live ones, so
    /// that the heap stays within about twice the number of waiting keys.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.waiting.len() + 64 {
            let waiting = &self.waiting;
            self.heap.retain(|Reverse(entry)| {
                waiting.get(&entry.key).is_some_and(|d| d.seq == entry.seq)
            });
        }
    }

    fn attempt(&self, key: &K) -> Attempt {
        self.failures
            .get(key)
            .map_or_else(Attempt::default, |failures| Attempt {
                retries: failures.retries,
                first_failure: Some(failures.first),
            })
    }
}

impl<K: QueueKey> WorkQueue<K> {
    /// An empty, open queue.
    pub fn new(config: QueueConfig) -> Self {
        WorkQueue {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State {
                    waiting: HashMap::new(),
                    heap: BinaryHeap::new(),
                    running: HashMap::new(),
                    failures: HashMap::new(),
                    next_seq: 0,
                    closed: false,
                }),
                wake: Notify::new(),
            }),
        }
    }

    /// The queue's settings.
    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Schedules `key` after `delay` (plus the debounce); keeps an earlier
    /// due time if the key already waits. A running key runs once more after
    /// its current run. Ignored once the queue is [closed](Self::close).
    pub fn trigger(&self, key: K, delay: Duration) {
        let at = deadline(
            Instant::now(),
            delay.saturating_add(self.shared.config.debounce),
        );
        let sooner = {
            let mut state = self.shared.lock();
            if state.closed {
                return;
            }
            state.schedule(key, at)
        };
        if sooner {
            self.shared.wake.notify_one();
        }
    }

    /// Schedules `key` now (plus the debounce).
    pub fn trigger_now(&self, key: K) {
        self.trigger(key, Duration::ZERO)
    }

    /// Forgets a key, e.g. when its object is gone: it stops waiting and its
    /// failures are forgotten. A running key finishes, but its outcome is
    /// ignored (it is not rescheduled) unless it is triggered again after
    /// this call.
    pub fn forget(&self, key: &K) {
        {
            let mut state = self.shared.lock();
            state.waiting.remove(key);
            state.failures.remove(key);
            if let Some(run) = state.running.get_mut(key) {
                *run = Run {
                    retrigger: None,
                    forgotten: true,
                };
            }
            state.compact();
        }
        // A closed runner may be waiting for this key only.
        self.shared.wake.notify_one();
    }

    /// How many keys wait (the queue depth), due or not; running keys are
    /// not counted.
    pub fn len(&self) -> usize {
        self.shared.lock().waiting.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many keys run now.
    pub fn running(&self) -> usize {
        self.shared.lock().running.len()
    }

    /// How many keys have failed since their last success (waiting for a
    /// retry, running it, or forgotten only once they succeed).
    pub fn failing(&self) -> usize {
        self.shared.lock().failures.len()
    }

    /// Stops intake: later triggers are ignored, and so are the reschedules
    /// the handler asks for ([`Reschedule::After`], [`Reschedule::Failed`])
    /// from now on. Keys already waiting still run when due (triggers that
    /// arrived during a run before the close count as waiting), so a runner
    /// of a closed queue returns once nothing waits or runs.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Takes the earliest key due at `now`, marking it running, or tells when
    /// the next one is due.
    pub(crate) fn pop_due(&self, now: Instant) -> Next<K> {
        let mut state = self.shared.lock();
        loop {
            let (at, live) = match state.heap.peek() {
                None => {
                    return Next::Empty {
                        closed: state.closed,
                    };
                }
                Some(Reverse(top)) => (
                    top.at,
                    state
                        .waiting
                        .get(&top.key)
                        .is_some_and(|due| due.seq == top.seq),
                ),
            };
            if live && at > now {
                return Next::At(at);
            }
            let Some(Reverse(entry)) = state.heap.pop() else {
                continue;
            };
            if !live {
                continue;
            }
            state.waiting.remove(&entry.key);
            state.running.insert(entry.key.clone(), Run::default());
            let attempt = state.attempt(&entry.key);
            return Next::Run(entry.key, attempt);
        }
    }

    /// Ends the run of `key` (taken by [`pop_due`](Self::pop_due)) with the
    /// handler's `outcome`: records or resets its failures and schedules its
    /// next run, if any.
    pub(crate) fn finish(&self, key: K, outcome: Reschedule) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let Some(run) = state.running.remove(&key) else {
            return;
        };
        let mut next = run.retrigger;
        if !run.forgotten {
            let asked = match outcome {
                Reschedule::Done => {
                    state.failures.remove(&key);
                    None
                }
                Reschedule::After(delay) => {
                    state.failures.remove(&key);
                    Some(delay)
                }
                Reschedule::Failed(delay) => {
                    let failures = state.failures.entry(key.clone()).or_insert(Failures {
                        retries: 0,
                        first: now,
                    });
                    failures.retries = failures.retries.saturating_add(1);
                    let retries = failures.retries;
                    Some(delay.unwrap_or_else(|| self.shared.config.backoff.delay(retries)))
                }
            };
            if let Some(delay) = asked.filter(|_| !state.closed) {
                next = Some(earliest(next, deadline(now, delay)));
            }
        }
        if let Some(at) = next {
            // The runner looks at the queue again when it sees this run end.
            state.schedule(key, at);
        }
    }

    /// Ends the run of `key` without an outcome (its handler was cancelled):
    /// it runs again at once (nothing is recorded about the attempt) unless
    /// it was forgotten or the queue is closed; a trigger received during the
    /// run is kept either way.
    pub(crate) fn cancelled(&self, key: K) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        let Some(run) = state.running.remove(&key) else {
            return;
        };
        let next = if run.forgotten || state.closed {
            run.retrigger
        } else {
            Some(earliest(run.retrigger, now))
        };
        if let Some(at) = next {
            state.schedule(key, at);
        }
    }

    /// The number of keys any runner may run at once (at least 1).
    pub(crate) fn concurrency(&self) -> usize {
        self.shared.config.concurrency.max(1)
    }

    /// Resolves when a key became due sooner than before or the queue was
    /// closed or a key forgotten, since the last such wake-up was consumed.
    pub(crate) async fn woken(&self) {
        self.shared.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn config(debounce: Duration) -> QueueConfig {
        QueueConfig {
            debounce,
            concurrency: 4,
            backoff: BackoffPolicy {
                jitter: false,
                ..BackoffPolicy::default()
            },
        }
    }

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(config(Duration::ZERO))
    }

    /// Takes every key due now, in order.
    fn due_now<K: QueueKey>(queue: &WorkQueue<K>) -> Vec<(K, Attempt)> {
        let mut keys = Vec::new();
        while let Next::Run(key, attempt) = queue.pop_due(Instant::now()) {
            keys.push((key, attempt));
        }
        keys
    }

    fn keys<K>(popped: Vec<(K, Attempt)>) -> Vec<K> {
        popped.into_iter().map(|(key, _)| key).collect()
    }

    fn next_at<K: QueueKey>(queue: &WorkQueue<K>) -> Option<Instant> {
        match queue.pop_due(Instant::now()) {
            Next::At(at) => Some(at),
            Next::Empty { .. } => None,
            Next::Run(key, _) => panic!("{key:?} is due, expected nothing due"),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            factor: 2.0,
            jitter: false,
        };
        let delays: Vec<u64> = (1..=7)
            .map(|retries| policy.delay(retries).as_millis() as u64)
            .collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(policy.delay(0), policy.delay(1));
    }

    #[test]
    fn backoff_survives_extreme_inputs() {
        let policy = BackoffPolicy {
            jitter: false,
            ..BackoffPolicy::default()
        };
        assert_eq!(policy.delay(u32::MAX), policy.max);
        for factor in [f64::INFINITY, f64::NAN, -2.0, 0.0, 1e300] {
            let policy = BackoffPolicy { factor, ..policy };
            assert_eq!(policy.delay(40), policy.max, "factor {factor}");
        }
        let huge = BackoffPolicy {
            initial: Duration::MAX,
            max: Duration::MAX,
            ..policy
        };
        assert_eq!(huge.delay(3), Duration::MAX);
    }

    #[test]
    fn backoff_jitter_draws_from_the_upper_half() {
        let policy = BackoffPolicy::default();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let delay = policy.delay(3);
            assert!(delay >= Duration::from_secs(1), "{delay:?}");
            assert!(delay <= Duration::from_secs(2), "{delay:?}");
            seen.insert(delay);
        }
        assert!(
            seen.len() > 100,
            "jitter should vary: {} values",
            seen.len()
        );
        assert!(policy.delay(u32::MAX) <= policy.max);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_collapse_and_the_earliest_wins() {
        let queue = queue();
        queue.trigger("a", Duration::from_secs(5));
        queue.trigger("a", Duration::from_secs(1));
        queue.trigger("a", Duration::from_secs(3));
        queue.trigger_now("b");
        queue.trigger("b", Duration::from_secs(2));
        assert_eq!(queue.len(), 2);
        let start = Instant::now();
        assert_eq!(keys(due_now(&queue)), ["b"]);
        assert_eq!(next_at(&queue), Some(start + Duration::from_secs(1)));
        advance(Duration::from_secs(1)).await;
        assert_eq!(keys(due_now(&queue)), ["a"]);
        // Nothing is left: the later due times were dropped, not kept.
        assert!(queue.is_empty());
        assert_eq!(next_at(&queue), None);
        advance(Duration::from_secs(10)).await;
        assert!(due_now(&queue).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn keys_due_together_run_in_trigger_order() {
        let queue = WorkQueue::new(config(Duration::ZERO));
        for key in [3, 1, 2, 5, 4] {
            queue.trigger_now(key);
        }
        assert_eq!(keys(due_now(&queue)), [3, 1, 2, 5, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_collapses_triggers_within_the_window() {
        let queue = WorkQueue::new(config(Duration::from_secs(1)));
        queue.trigger_now("a");
        advance(Duration::from_millis(400)).await;
        queue.trigger_now("a");
        advance(Duration::from_millis(400)).await;
        queue.trigger_now("a");
        assert_eq!(queue.len(), 1);
        assert!(due_now(&queue).is_empty(), "due only after the window");
        advance(Duration::from_millis(200)).await;
        assert_eq!(keys(due_now(&queue)), ["a"]);
        queue.finish("a", Reschedule::Done);
        assert!(queue.is_empty(), "the triggers collapsed into one run");
        // A trigger after the run starts a new window.
        queue.trigger_now("a");
        advance(Duration::from_millis(999)).await;
        assert!(due_now(&queue).is_empty());
        advance(Duration::from_millis(1)).await;
        assert_eq!(keys(due_now(&queue)), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_key_is_not_taken_again() {
        let queue = queue();
        queue.trigger_now("a");
        assert_eq!(keys(due_now(&queue)), ["a"]);
        assert_eq!((queue.len(), queue.running()), (0, 1));
        queue.trigger_now("a");
        queue.trigger_now("a");
        assert_eq!(queue.len(), 0, "a running key does not wait as well");
        advance(Duration::from_secs(60)).await;
        assert!(due_now(&queue).is_empty(), "never twice at the same time");
        queue.finish("a", Reschedule::Done);
        assert_eq!((queue.len(), queue.running()), (1, 0));
        assert_eq!(keys(due_now(&queue)), ["a"], "runs once more after");
        queue.finish("a", Reschedule::Done);
        assert!(queue.is_empty(), "and only once more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_during_a_run_keeps_its_due_time() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        let start = Instant::now();
        queue.trigger("a", Duration::from_secs(10));
        queue.trigger("a", Duration::from_secs(3));
        queue.finish("a", Reschedule::After(Duration::from_secs(5)));
        assert_eq!(next_at(&queue), Some(start + Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn done_without_triggers_is_not_rescheduled() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        queue.finish("a", Reschedule::Done);
        assert_eq!((queue.len(), queue.running()), (0, 0));
        advance(Duration::from_secs(3600)).await;
        assert!(due_now(&queue).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn after_requeues_unless_triggered_sooner() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        let start = Instant::now();
        queue.finish("a", Reschedule::After(Duration::from_secs(30)));
        assert_eq!(next_at(&queue), Some(start + Duration::from_secs(30)));
        // A later trigger changes nothing, a sooner one wins.
        queue.trigger("a", Duration::from_secs(40));
        assert_eq!(next_at(&queue), Some(start + Duration::from_secs(30)));
        queue.trigger("a", Duration::from_secs(10));
        assert_eq!(next_at(&queue), Some(start + Duration::from_secs(10)));
        advance(Duration::from_secs(10)).await;
        assert_eq!(keys(due_now(&queue)), ["a"]);
        queue.finish("a", Reschedule::Done);
        assert!(queue.is_empty(), "the requeue collapsed into the trigger");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_doubling_with_a_cap_and_reset_on_success() {
        let queue = WorkQueue::new(QueueConfig {
            backoff: BackoffPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(3),
                factor: 2.0,
                jitter: false,
            },
            ..config(Duration::ZERO)
        });
        queue.trigger_now("a");
        let first = Instant::now();
        let mut attempts = Vec::new();
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let popped = due_now(&queue);
            assert_eq!(keys(popped.clone()), ["a"]);
            attempts.push(popped[0].1);
            let failed_at = Instant::now();
            queue.finish("a", Reschedule::Failed(None));
            let at = next_at(&queue).expect("a retry is scheduled");
            gaps.push((at - failed_at).as_millis() as u64);
            advance(at - failed_at).await;
        }
        assert_eq!(gaps, [500, 1000, 2000, 3000, 3000]);
        let retries: Vec<u32> = attempts.iter().map(|a| a.retries).collect();
        assert_eq!(retries, [0, 1, 2, 3, 4]);
        assert_eq!(attempts[0].first_failure, None);
        assert!(
            attempts[1..].iter().all(|a| a.first_failure == Some(first)),
            "the first failure is kept: {attempts:?}"
        );
        assert_eq!(queue.failing(), 1);

        // The sixth try succeeds and asks to run again later: a fresh start.
        let popped = due_now(&queue);
        assert_eq!(popped[0].1.retries, 5);
        queue.finish("a", Reschedule::After(Duration::from_secs(1)));
        assert_eq!(queue.failing(), 0);
        advance(Duration::from_secs(1)).await;
        let popped = due_now(&queue);
        assert_eq!(popped[0].1, Attempt::default());
        let failed_at = Instant::now();
        queue.finish("a", Reschedule::Failed(None));
        assert_eq!(
            next_at(&queue),
            Some(failed_at + Duration::from_millis(500)),
            "the backoff starts over"
        );
        advance(Duration::from_millis(500)).await;
        let popped = due_now(&queue);
        assert_eq!(
            popped[0].1,
            Attempt {
                retries: 1,
                first_failure: Some(failed_at)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_may_name_its_own_delay() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        let now = Instant::now();
        queue.finish("a", Reschedule::Failed(Some(Duration::from_secs(42))));
        assert_eq!(next_at(&queue), Some(now + Duration::from_secs(42)));
        assert_eq!(queue.failing(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_overrides_the_backoff_but_not_the_retry_count() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        let failed_at = Instant::now();
        queue.finish("a", Reschedule::Failed(Some(Duration::from_secs(60))));
        queue.trigger_now("a");
        let popped = due_now(&queue);
        assert_eq!(
            popped,
            [(
                "a",
                Attempt {
                    retries: 1,
                    first_failure: Some(failed_at)
                }
            )]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn forget_drops_a_waiting_key_and_its_failures() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        queue.finish("a", Reschedule::Failed(None));
        queue.trigger("b", Duration::from_secs(1));
        assert_eq!((queue.len(), queue.failing()), (2, 1));
        queue.forget(&"a");
        assert_eq!((queue.len(), queue.failing()), (1, 0));
        advance(Duration::from_secs(3600)).await;
        assert_eq!(keys(due_now(&queue)), ["b"]);
        // Triggered again, the key starts over.
        queue.trigger_now("a");
        assert_eq!(due_now(&queue), [("a", Attempt::default())]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_running_key_finishes_but_is_not_rescheduled() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        queue.trigger_now("a");
        queue.forget(&"a");
        assert_eq!(queue.running(), 1, "the run goes on");
        queue.finish("a", Reschedule::Failed(None));
        assert_eq!((queue.len(), queue.running(), queue.failing()), (0, 0, 0));

        // A trigger after the forget counts: the object came back.
        queue.trigger_now("a");
        due_now(&queue);
        queue.forget(&"a");
        queue.trigger_now("a");
        queue.finish("a", Reschedule::After(Duration::from_secs(600)));
        assert_eq!(due_now(&queue), [("a", Attempt::default())]);
    }

    #[tokio::test(start_paused = true)]
    async fn close_ignores_later_triggers_and_reschedules() {
        let queue = queue();
        queue.trigger_now("waiting");
        queue.trigger_now("running");
        assert_eq!(keys(due_now(&queue)), ["waiting", "running"]);
        queue.finish("waiting", Reschedule::Done);
        queue.trigger_now("waiting");
        queue.trigger_now("running");
        queue.close();
        assert!(queue.is_closed());
        queue.trigger_now("late");
        assert_eq!(queue.len(), 1, "only the trigger from before the close");
        // The running key's trigger from before the close is kept, its own
        // requeue is not.
        queue.finish("running", Reschedule::After(Duration::ZERO));
        assert_eq!(keys(due_now(&queue)), ["waiting", "running"]);
        queue.finish("waiting", Reschedule::Failed(None));
        queue.finish("running", Reschedule::After(Duration::ZERO));
        assert!(matches!(
            queue.pop_due(Instant::now()),
            Next::Empty { closed: true }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_run_is_tried_again_at_once() {
        let queue = queue();
        queue.trigger_now("a");
        due_now(&queue);
        queue.finish("a", Reschedule::Failed(None));
        advance(Duration::from_secs(1)).await;
        assert_eq!(due_now(&queue)[0].1.retries, 1);
        queue.cancelled("a");
        assert_eq!(queue.running(), 0);
        assert_eq!(due_now(&queue)[0].1.retries, 1, "nothing recorded");
        queue.forget(&"a");
        queue.cancelled("a");
        assert!(queue.is_empty(), "not after a forget");
    }

    #[tokio::test(start_paused = true)]
    async fn moving_due_times_earlier_keeps_the_heap_small_and_ordered() {
        let queue = WorkQueue::new(config(Duration::ZERO));
        for round in (0..100u64).rev() {
            for key in 0..50u64 {
                queue.trigger(key, Duration::from_secs(round * 100 + key));
            }
        }
        {
            let state = queue.shared.lock();
            assert_eq!(state.waiting.len(), 50);
            assert!(state.heap.len() <= 2 * 50 + 65, "{}", state.heap.len());
        }
        for key in (0..50u64).step_by(2) {
            queue.forget(&key);
        }
        advance(Duration::from_secs(100)).await;
        let order = keys(due_now(&queue));
        assert_eq!(order, (1..50).step_by(2).collect::<Vec<u64>>());
    }

    #[test]
    fn debug_shows_the_counts() {
        let queue = WorkQueue::<u8>::new(QueueConfig::default());
        assert_eq!(
            format!("{queue:?}"),
            "WorkQueue { waiting: 0, running: 0, failing: 0, closed: false }"
        );
    }
}
