//! Objects that nothing can take yet, and when to try them again.
//!
//! An application with no matching cluster (or a cluster with no matching
//! cloud) can only be placed once something it depends on changes: a
//! Cluster, Cloud, GlobalCloud, Metric, GlobalMetric, MetricsProvider or
//! GlobalMetricsProvider, or its own spec. So:
//!
//! - [`Changes`] counts the changes of those kinds per namespace (a global
//!   kind, or a relist, counts for every namespace). The counters also key
//!   the cached candidate snapshots, so that a change in one namespace does
//!   not rebuild the snapshots of the others.
//! - [`Waits`] remembers, per waiting object, the counter and spec version
//!   its last attempt saw and when its next periodic attempt is due. A
//!   reconcile of a waiting object in which nothing changed and that is not
//!   due (its own status write, a resync) returns at once.
//! - [`wake_waiting`] re-queues the waiting objects of every namespace that
//!   changed, so a new matching cluster places them at once.
//! - Without changes, the periodic attempts back off: `backoff_delay ×
//!   backoff` seconds after the first failure (Krake's delay), doubling at
//!   each attempt, up to `reschedule_after` (see [`periodic_delay`]).
//!
//! The handlers write a waiting object's status only when the outcome
//! changes (state, reason, the `retries` left), not on every attempt.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use krake_data::Timestamp;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::object_key::ObjectKey;

/// How many keys may wait in a wake-up channel before the sender pauses
/// (the controller's trigger task drains it quickly; the pause keeps it
/// from lagging, which would lose keys).
pub(crate) const WAKE_CAPACITY: usize = 4096;

/// Change counters per namespace, and the namespaces changed since the
/// waiting objects were last woken.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Changes of global kinds and relists: count for every namespace.
    all: AtomicU64,
    namespaces: Mutex<HashMap<String, u64>>,
    dirty: Mutex<Dirty>,
    notify: Notify,
}

/// Namespaces changed since the last wake-up.
#[derive(Debug, Default)]
struct Dirty {
    all: bool,
    namespaces: HashSet<String>,
}

impl Dirty {
    fn contains(&self, namespace: Option<&str>) -> bool {
        self.all || namespace.is_some_and(|ns| self.namespaces.contains(ns))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Changes {
    /// Counts a change in `namespace` (`None`: a global kind or a relist,
    /// which count for every namespace) and, with `wake`, wakes its waiting
    /// objects. (A change that cannot give a waiting object a place, such as
    /// a cluster that is not ONLINE, only invalidates the cached candidates:
    /// a waiting object that is tried for another reason sees it.)
    pub fn bump(&self, namespace: Option<&str>, wake: bool) {
        match namespace {
            None => {
                self.all.fetch_add(1, Ordering::AcqRel);
                if wake {
                    lock(&self.dirty).all = true;
                }
            }
            Some(namespace) => {
                *lock(&self.namespaces)
                    .entry(namespace.to_owned())
                    .or_default() += 1;
                if wake {
                    lock(&self.dirty).namespaces.insert(namespace.to_owned());
                }
            }
        }
        if wake {
            self.notify.notify_one();
        }
    }

    /// The change counter of `namespace`: grows with every change that
    /// counts for it.
    pub fn of(&self, namespace: &str) -> u64 {
        let own = lock(&self.namespaces).get(namespace).copied().unwrap_or(0);
        self.all.load(Ordering::Acquire).wrapping_add(own)
    }

    /// Waits for changes, then takes the namespaces changed so far.
    async fn changed(&self) -> Dirty {
        self.notify.notified().await;
        std::mem::take(&mut *lock(&self.dirty))
    }
}

/// What the last attempt of a waiting object saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Wait {
    /// The change counter of its namespace before the attempt.
    pub generation: u64,
    /// Its `metadata.modified` (bumped by spec updates, not by status
    /// writes).
    pub modified: Option<Timestamp>,
    /// Periodic attempts since it started waiting (or since its spec
    /// changed); sets the backoff.
    pub attempts: u32,
    /// When the next periodic attempt is due.
    pub next: Instant,
}

/// The objects of one kind that wait, by key.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    entries: Mutex<HashMap<ObjectKey, Wait>>,
    /// How many entries there were after the last pruning.
    pruned: AtomicUsize,
}

/// How a new attempt of a waiting object counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Attempt {
    /// Whether it is a periodic attempt (the first one, or one that was
    /// due): those count against `backoff_limit`. An attempt woken by a
    /// change does not.
    pub periodic: bool,
    /// What to remember after it, if it fails again.
    pub wait: Wait,
}

impl Waits {
    /// How long `key` still waits when nothing it depends on changed since
    /// its last attempt (`generation`, `modified`) and its next periodic
    /// attempt is not due; `None`: try it now.
    pub fn remaining(
        &self,
        key: &ObjectKey,
        generation: u64,
        modified: Option<Timestamp>,
    ) -> Option<Duration> {
        let wait = *lock(&self.entries).get(key)?;
        let now = Instant::now();
        (wait.generation == generation && wait.modified == modified && now < wait.next)
            .then(|| wait.next - now)
    }

    /// A failed attempt of `key` that saw `generation` and `modified`: how
    /// it counts and when the next periodic one is due (`base` after the
    /// first failure, doubling, at most `cap`). Call [`record`](Self::record)
    /// with the outcome's wait.
    pub fn attempt(
        &self,
        key: &ObjectKey,
        generation: u64,
        modified: Option<Timestamp>,
        base: Duration,
        cap: Duration,
    ) -> Attempt {
        let now = Instant::now();
        let previous = lock(&self.entries).get(key).copied();
        let periodic = previous.is_none_or(|w| now >= w.next);
        let spec_changed = previous.is_some_and(|w| w.modified != modified);
        let attempts = match previous {
            Some(_) if spec_changed => 1,
            Some(w) if periodic => w.attempts.saturating_add(1),
            Some(w) => w.attempts,
            None => 1,
        };
        let next = match previous {
            Some(w) if !periodic && !spec_changed => w.next,
            _ => now + periodic_delay(base, attempts, cap),
        };
        Attempt {
            periodic,
            wait: Wait {
                generation,
                modified,
                attempts,
                next,
            },
        }
    }

    /// Remembers the wait of `key` after a failed attempt.
    pub fn record(&self, key: ObjectKey, wait: Wait) {
        lock(&self.entries).insert(key, wait);
    }

    /// `key` does not wait (placed, FAILED, deleted).
    pub fn clear(&self, key: &ObjectKey) {
        lock(&self.entries).remove(key);
    }

    /// Forgets the keys for which `exists` is false (objects deleted while
    /// they waited, which are not reconciled again) once the entries have
    /// doubled since the last pruning: amortized constant cost.
    pub fn prune(&self, exists: impl Fn(&ObjectKey) -> bool) {
        let mut entries = lock(&self.entries);
        if entries.len() > 2 * self.pruned.load(Ordering::Relaxed) + 64 {
            entries.retain(|key, _| exists(key));
            self.pruned.store(entries.len(), Ordering::Relaxed);
        }
    }

    /// How many objects wait.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    fn keys_in(&self, dirty: &Dirty) -> Vec<ObjectKey> {
        lock(&self.entries)
            .keys()
            .filter(|key| dirty.contains(key.namespace.as_deref()))
            .cloned()
            .collect()
    }
}

/// The delay before the `attempts`-th periodic attempt's successor: `base`
/// after the first, doubling with every further attempt, never more than
/// `cap` (unless `base` itself is more: Krake's delay is never shortened).
pub(crate) fn periodic_delay(base: Duration, attempts: u32, cap: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(32);
    let grown = base.saturating_mul(1u32 << exponent.min(31));
    grown.min(cap.max(base))
}

/// Until `stop`: whenever namespaces change, sends the keys of the objects
/// of `waits` that wait in them to the paired channel (a controller's
/// [`triggered_by`](crate::controller::Controller::triggered_by)).
pub(crate) async fn wake_waiting(
    changes: Arc<Changes>,
    targets: Vec<(Arc<Waits>, broadcast::Sender<ObjectKey>)>,
    stop: CancellationToken,
) {
    loop {
        let dirty = tokio::select! {
            dirty = changes.changed() => dirty,
            () = stop.cancelled() => return,
        };
        for (waits, sender) in &targets {
            for key in waits.keys_in(&dirty) {
                // Never more queued than the channel holds: a lagging
                // receiver would lose keys.
                while sender.receiver_count() > 0 && sender.len() >= WAKE_CAPACITY / 2 {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(1)) => {}
                        () = stop.cancelled() => return,
                    }
                }
                // No receiver: the controller is not running (not leading);
                // it reconciles everything when it starts.
                let _ = sender.send(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_periodic_delay_doubles_up_to_the_cap() {
        let s = Duration::from_secs;
        let delays: Vec<u64> = (1..=9)
            .map(|n| periodic_delay(s(1), n, s(60)).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(periodic_delay(s(90), 1, s(60)), s(90));
        assert_eq!(periodic_delay(s(90), 5, s(60)), s(90));
        assert_eq!(periodic_delay(s(1), u32::MAX, s(60)), s(60));
    }

    #[test]
    fn change_counters_are_per_namespace_and_global_changes_count_everywhere() {
        let changes = Changes::default();
        let (a, b) = (changes.of("a"), changes.of("b"));
        changes.bump(Some("a"), true);
        assert_ne!(changes.of("a"), a);
        assert_eq!(changes.of("b"), b);
        changes.bump(None, true);
        assert_ne!(changes.of("b"), b);
        let dirty = lock(&changes.dirty);
        assert!(dirty.contains(Some("a")) && dirty.contains(Some("zzz")));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_woken_by_changes_do_not_count_and_keep_the_schedule() {
        let waits = Waits::default();
        let key = ObjectKey::new(Some("ns"), "app");
        let (s, cap) = (Duration::from_secs(1), Duration::from_secs(60));
        let first = waits.attempt(&key, 0, None, s, cap);
        assert!(first.periodic);
        assert_eq!(first.wait.attempts, 1);
        waits.record(key.clone(), first.wait);
        // Nothing changed, not due: wait.
        assert_eq!(waits.remaining(&key, 0, None), Some(s));
        // A change: try now, without counting, same schedule.
        assert_eq!(waits.remaining(&key, 1, None), None);
        let woken = waits.attempt(&key, 1, None, s, cap);
        assert!(!woken.periodic);
        assert_eq!(woken.wait.next, first.wait.next);
        waits.record(key.clone(), woken.wait);
        // Due: counts and backs off further.
        tokio::time::advance(s).await;
        assert_eq!(waits.remaining(&key, 1, None), None);
        let due = waits.attempt(&key, 1, None, s, cap);
        assert!(due.periodic);
        assert_eq!(due.wait.attempts, 2);
        assert_eq!(due.wait.next, Instant::now() + 2 * s);
        // A spec change restarts the backoff.
        let modified = Some(Timestamp::now());
        waits.record(key.clone(), due.wait);
        assert_eq!(waits.remaining(&key, 1, modified), None);
        let edited = waits.attempt(&key, 1, modified, s, cap);
        assert_eq!(edited.wait.attempts, 1);
        assert_eq!(edited.wait.next, Instant::now() + s);
        waits.clear(&key);
        assert_eq!(waits.len(), 0);
    }
}
