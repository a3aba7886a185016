//! Per-object timers (kopf's): a periodic function for every object while
//! it exists, stopped cleanly when it goes away. This is what Krake's
//! observers are: "every 2 s, compare the real resource with the object".
//!
//! [`Timers`] keeps one task per object key. [`Timers::upsert`] starts the
//! key's timer, or hands it the newest version of the object (the next tick
//! sees it); [`Timers::remove`] stops it; [`Timers::retain`] stops every
//! timer whose key is not in a set (after a relist). Stopping follows kopf's
//! protocol: ask (a cancellation token the function may watch), wait up to
//! the grace period for a running tick to finish, then abort.
//!
//! A tick never overlaps the previous one of the same object: the period
//! counts from the end of a tick.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Tick<K> =
    dyn Fn(Arc<K>, CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync;

struct Running<K> {
    latest: watch::Sender<Arc<K>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Periodic functions per object; see the module docs.
pub struct Timers<Key, K> {
    period: Duration,
    grace: Duration,
    tick: Arc<Tick<K>>,
    running: Mutex<HashMap<Key, Running<K>>>,
}

impl<Key, K> std::fmt::Debug for Timers<Key, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("period", &self.period)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl<Key, K> Timers<Key, K>
where
    Key: Clone + Eq + Hash + Send + 'static,
    K: Send + Sync + 'static,
{
    /// Timers calling `tick(object, stop)` every `period` (first call one
    /// period after the start), with a grace period of 5 s on stop.
    pub fn new<F, Fut>(period: Duration, tick: F) -> Self
    where
        F: Fn(Arc<K>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Timers {
            period,
            grace: Duration::from_secs(5),
            tick: Arc::new(move |object, stop| Box::pin(tick(object, stop))),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// How long a running tick may take to finish when its timer stops.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Starts the timer of `key`, or gives it the newest `object`.
    pub fn upsert(&self, key: Key, object: Arc<K>) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if let Some(timer) = running.get(&key) {
            if !timer.task.is_finished() {
                timer.latest.send_replace(object);
                return;
            }
        }
        let (latest, receiver) = watch::channel(object);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(self.period, self.tick.clone(), receiver, stop.clone()));
        running.insert(key, Running { latest, stop, task });
    }

    /// Stops the timer of `key` (if any) and waits for it to end.
    pub async fn remove(&self, key: &Key) {
        let timer = self
            .running
            .lock()
            .ok()
            .and_then(|mut running| running.remove(key));
        if let Some(timer) = timer {
            stop(timer, self.grace).await;
        }
    }

    /// Stops every timer whose key is not in `keep`.
    pub async fn retain(&self, keep: &HashSet<Key>) {
        let stopped: Vec<Running<K>> = match self.running.lock() {
            Ok(mut running) => {
                let gone: Vec<Key> = running
                    .keys()
                    .filter(|key| !keep.contains(key))
                    .cloned()
                    .collect();
                gone.iter().filter_map(|key| running.remove(key)).collect()
            }
            Err(_) => Vec::new(),
        };
        futures::future::join_all(stopped.into_iter().map(|timer| stop(timer, self.grace))).await;
    }

    /// Stops every timer.
    pub async fn stop_all(&self) {
        self.retain(&HashSet::new()).await;
    }

    /// How many timers run.
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .map(|running| running.len())
            .unwrap_or(0)
    }

    /// True if no timer runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: krake_data::registry::Resource> Timers<crate::ObjectKey, K> {
    /// Keeps one timer per object of a shared reflector's subscription
    /// until `stop`: started when the object appears, given every new
    /// version, stopped when it is removed (or missing after a relist).
    /// Then stops every timer.
    pub async fn follow(
        &self,
        subscription: crate::shared::Subscription<K>,
        stop: CancellationToken,
    ) {
        use crate::ObjectKey;
        use crate::shared::Change;
        use tokio::sync::broadcast::error::RecvError;

        let crate::shared::Subscription { store, mut changes } = subscription;
        let sync_all = |timers: &Self| {
            let objects = store.list();
            for object in &objects {
                timers.upsert(ObjectKey::of(object.as_ref()), object.clone());
            }
            objects
                .iter()
                .map(|object| ObjectKey::of(object.as_ref()))
                .collect::<HashSet<_>>()
        };
        tokio::select! {
            ready = store.wait_ready() => {
                if ready.is_err() {
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
        sync_all(self);
        loop {
            let change = tokio::select! {
                change = changes.recv() => change,
                () = stop.cancelled() => break,
            };
            match change {
                Ok(Change::Applied(object)) => self.upsert(ObjectKey::of(object.as_ref()), object),
                Ok(Change::Deleted(object)) => self.remove(&ObjectKey::of(object.as_ref())).await,
                Ok(Change::Restarted) | Err(RecvError::Lagged(_)) => {
                    let present = sync_all(self);
                    self.retain(&present).await;
                }
                Err(RecvError::Closed) => break,
            }
        }
        self.stop_all().await;
    }
}

async fn run<K>(
    period: Duration,
    tick: Arc<Tick<K>>,
    latest: watch::Receiver<Arc<K>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = stop.cancelled() => return,
        }
        let object = latest.borrow().clone();
        tick(object, stop.clone()).await;
        if stop.is_cancelled() {
            return;
        }
    }
}

async fn stop<K>(timer: Running<K>, grace: Duration) {
    timer.stop.cancel();
    let mut task = timer.task;
    if tokio::time::timeout(grace, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn timers_tick_per_object_and_stop_with_it() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let timers = Timers::<&str, String>::new(Duration::from_secs(2), move |object, _| {
            let log = log.clone();
            async move { log.lock().unwrap().push(object.to_string()) }
        });
        timers.upsert("a", Arc::new("a1".into()));
        timers.upsert("b", Arc::new("b1".into()));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        timers.upsert("a", Arc::new("a2".into()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        timers.remove(&"b").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        // a: two ticks then a third with the new version; b: two ticks, then stopped.
        assert_eq!(seen, ["a1", "a2", "a2", "b1", "b1"]);
        assert_eq!(timers.len(), 1);
        timers.stop_all().await;
        assert!(timers.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_waits_for_a_running_tick_then_aborts() {
        let finished = Arc::new(AtomicUsize::new(0));
        let done = finished.clone();
        let timers = Timers::<u8, ()>::new(Duration::from_secs(1), move |_, stop| {
            let done = done.clone();
            async move {
                // A polite tick ends early when asked; a stubborn one would not.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(3)) => {}
                    () = stop.cancelled() => {}
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .grace(Duration::from_secs(1));
        timers.upsert(1, Arc::new(()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        timers.remove(&1).await;
        assert_eq!(finished.load(Ordering::SeqCst), 1, "the tick finished");

        let stubborn = Arc::new(AtomicUsize::new(0));
        let count = stubborn.clone();
        let timers = Timers::<u8, ()>::new(Duration::from_secs(1), move |_, _| {
            let count = count.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
        .grace(Duration::from_secs(1));
        timers.upsert(1, Arc::new(()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = tokio::time::Instant::now();
        timers.remove(&1).await;
        assert!(started.elapsed() <= Duration::from_secs(1) + Duration::from_millis(10));
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(stubborn.load(Ordering::SeqCst), 0, "the tick was aborted");
    }

    #[tokio::test(start_paused = true)]
    async fn retain_stops_the_others() {
        let timers = Timers::<u32, ()>::new(Duration::from_secs(1), |_, _| async {});
        for key in 0..5 {
            timers.upsert(key, Arc::new(()));
        }
        timers.retain(&HashSet::from([1, 3])).await;
        assert_eq!(timers.len(), 2);
    }
}
