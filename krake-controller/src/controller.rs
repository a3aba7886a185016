//! The controller: the stages put together.
//!
//! ```text
//! reflector (main kind) --changes--+
//! reflector (owned kinds) --owners-+--> work queue --> runner --> reconcile(obj, ctx)
//! reflector (watched kinds) --map--+        ^                        |
//! resync timer ---------------------+       +--- requeue / backoff --+
//! ```
//!
//! [`Controller`] subscribes to the shared [`Reflectors`] of the process
//! for its main kind (and for the kinds it [`owns`](Controller::owns) or
//! [`watches`](Controller::watches)), turns their changes into keys on a
//! [`WorkQueue`], and runs `reconcile` on the current object of each key
//! from the store, never twice at once for one key. It is level-based: at
//! start, after every relist, at every resync and on every leadership gain
//! every object is reconciled; events only make it sooner.
//!
//! - `Ok(Action::requeue(d))` runs the key again after `d`;
//!   `Ok(Action::await_change())` only on the next trigger. Success resets
//!   the key's backoff.
//! - `Err(e)` asks the error policy, which sees the retry count and the time
//!   of the first failure ([`Attempt`]) and returns an [`Action`]: its delay,
//!   or the queue's exponential backoff with jitter when it has none.
//! - A [`predicate`](Controller::predicate) skips change events that leave
//!   the value it computes unchanged (for instance everything but the spec).
//! - With [`leader`](Controller::leader) it reconciles only while the
//!   replica leads ([`crate::leader`]); each new term reconciles everything.
//!   To hand over cleanly, stop the controller first (its `run` returns once
//!   running reconciles drained), then the elector (which releases the
//!   lease): stopping the elector first would let the next leader start
//!   while this one still drains.
//! - Secondary indexes: declare them with
//!   [`Reflectors::subscribe_with_index`] before building the controller;
//!   the controller shares that reflector and its store
//!   ([`Controller::store`]).
//! - On shutdown it stops taking triggers, lets running reconciles finish
//!   within the drain deadline and cancels the rest.
//!
//! Each reconcile runs in a tracing span `reconcile` with the controller,
//! kind, namespace, name, the reason it was queued and the retry count; the
//! [`Metrics`] count and time them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use krake_data::registry::Resource;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::action::Action;
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::runner::run;
use crate::shared::{Change, Reflectors};
use crate::store::Store;
use crate::work_queue::{Attempt, QueueConfig, Reschedule, WorkQueue};

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The controller's name (metrics, logs).
    pub name: String,
    /// The work queue: debounce, concurrency, backoff.
    pub queue: QueueConfig,
    /// Reconcile every object this often, whatever happens (`None`: never).
    pub resync: Option<Duration>,
    /// How long running reconciles may take to finish on shutdown.
    pub drain_deadline: Duration,
}

impl ControllerConfig {
    /// Settings named `name` with the defaults: the queue's defaults (no
    /// debounce, 5 workers, exponential backoff), no resync, 10 s drain.
    pub fn new(name: impl Into<String>) -> Self {
        ControllerConfig {
            name: name.into(),
            queue: QueueConfig::default(),
            resync: None,
            drain_deadline: Duration::from_secs(10),
        }
    }
}

/// Why a key was queued (for the reconcile span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Changed,
    Related,
    Resync,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Changed => "object changed",
            Reason::Related => "related object changed",
            Reason::Resync => "resync",
        }
    }
}

/// The keys to trigger, and why.
#[derive(Clone)]
struct Triggers {
    queue: WorkQueue<ObjectKey>,
    reasons: Arc<Mutex<HashMap<ObjectKey, Reason>>>,
}

impl Triggers {
    fn trigger(&self, key: ObjectKey, reason: Reason) {
        if let Ok(mut reasons) = self.reasons.lock() {
            reasons.insert(key.clone(), reason);
        }
        self.queue.trigger_now(key);
    }

    fn reason(&self, key: &ObjectKey) -> Option<Reason> {
        self.reasons.lock().ok().and_then(|mut r| r.remove(key))
    }
}

type Source = Box<dyn Fn(&Reflectors, Triggers, CancellationToken) + Send + Sync>;
type Predicate<K> = Arc<dyn Fn(&K) -> Option<u64> + Send + Sync>;
type Reconcile<K, C, E> =
    Arc<dyn Fn(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, E>> + Send + Sync>;

/// A controller of kind `K`; see the module docs.
pub struct Controller<K: Resource> {
    reflectors: Reflectors,
    store: Store<K>,
    changes: broadcast::Receiver<Change<K>>,
    config: ControllerConfig,
    sources: Vec<Source>,
    predicate: Option<Predicate<K>>,
    leader: Option<watch::Receiver<bool>>,
    metrics: Metrics,
}

impl<K: Resource> std::fmt::Debug for Controller<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("kind", &K::INFO.kind)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K: Resource> Controller<K> {
    /// A controller of the `K` objects of `namespace` (`None`: all
    /// namespaces, or a global kind), named after the kind.
    pub fn new(reflectors: &Reflectors, namespace: Option<&str>) -> Self {
        Self::with_selector(reflectors, namespace, None)
    }

    /// A controller of the `K` objects of `namespace` whose labels match
    /// `selector` (the API's `label_selector` syntax).
    pub fn with_selector(
        reflectors: &Reflectors,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> Self {
        let subscription = reflectors.subscribe::<K>(namespace, selector);
        Controller {
            reflectors: reflectors.clone(),
            store: subscription.store,
            changes: subscription.changes,
            config: ControllerConfig::new(K::INFO.plural),
            sources: Vec::new(),
            predicate: None,
            leader: None,
            metrics: Metrics::new(),
        }
    }

    /// The objects the controller sees (ready after the first list).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Replaces the settings.
    #[must_use]
    pub fn config(mut self, config: ControllerConfig) -> Self {
        self.config = config;
        self
    }

    /// Also reconciles an object when a `D` it owns (it is in the `D`'s
    /// `metadata.owners`) changes; `D`s of `namespace` (`None`: all).
    #[must_use]
    pub fn owns<D: Resource>(self, namespace: Option<&str>) -> Self {
        self.watches::<D>(namespace, |dependent: &D| {
            dependent
                .metadata()
                .owners
                .iter()
                .filter(|owner| owner.api == K::INFO.api && owner.kind == K::INFO.kind)
                .map(|owner| ObjectKey::new(owner.namespace.as_deref(), &owner.name))
                .collect()
        })
    }

    /// Also reconciles the objects `map` names when an `O` of `namespace`
    /// (`None`: all) changes.
    #[must_use]
    pub fn watches<O: Resource>(
        mut self,
        namespace: Option<&str>,
        map: impl Fn(&O) -> Vec<ObjectKey> + Send + Sync + 'static,
    ) -> Self {
        let namespace = namespace.map(str::to_owned);
        let map = Arc::new(map);
        self.sources
            .push(Box::new(move |reflectors, triggers, stop| {
                let subscription = reflectors.subscribe::<O>(namespace.as_deref(), None);
                let store = subscription.store;
                let map = map.clone();
                tokio::spawn(follow(subscription.changes, stop, move |change| {
                    let objects = match change {
                        Change::Applied(object) | Change::Deleted(object) => vec![object],
                        Change::Restarted => store.list(),
                    };
                    for object in objects {
                        for key in map(&object) {
                            triggers.trigger(key, Reason::Related);
                        }
                    }
                }));
            }));
        self
    }

    /// Also reconciles the keys sent on `keys`: events from outside the
    /// Krake API, such as watches on the Kubernetes clusters an object's
    /// resources run on. Keys lost because the receiver lagged are not
    /// recovered: use [`ControllerConfig::resync`] or requeues as the
    /// safety net (level-based, events only make it sooner).
    #[must_use]
    pub fn triggered_by(mut self, keys: broadcast::Sender<ObjectKey>) -> Self {
        self.sources.push(Box::new(move |_, triggers, stop| {
            let mut keys = keys.subscribe();
            tokio::spawn(async move {
                loop {
                    let key = tokio::select! {
                        key = keys.recv() => key,
                        () = stop.cancelled() => return,
                    };
                    match key {
                        Ok(key) => triggers.trigger(key, Reason::Related),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }));
        self
    }

    /// Skips change events of an object when `value` of it is the same as
    /// at its previous event (`None` never skips). Resyncs, relists and
    /// requeues are not filtered.
    #[must_use]
    pub fn predicate(mut self, value: impl Fn(&K) -> Option<u64> + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(value));
        self
    }

    /// Reconciles only while `leader` is true (see [`crate::leader`]).
    #[must_use]
    pub fn leader(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// Records into `metrics` (shared by every controller of the process).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown`: `reconcile(object, context)` for every object
    /// that needs it, `error_policy(object, error, attempt, context)` after a
    /// failure.
    pub async fn run<C, E, R, RFut, P>(
        self,
        reconcile: R,
        error_policy: P,
        context: Arc<C>,
        shutdown: CancellationToken,
    ) where
        C: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        R: Fn(Arc<K>, Arc<C>) -> RFut + Send + Sync + 'static,
        RFut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(Arc<K>, &E, Attempt, Arc<C>) -> Action + Send + Sync + 'static,
    {
        let reconcile: Reconcile<K, C, E> =
            Arc::new(move |object, context| Box::pin(reconcile(object, context)));
        let error_policy = Arc::new(error_policy);
        let name = self.config.name.clone();
        crate::leader::each_term(
            self.leader.clone(),
            &shutdown,
            &self.metrics,
            &name,
            |term| {
                let handler = {
                    let store = self.store.clone();
                    let reconcile = reconcile.clone();
                    let error_policy = error_policy.clone();
                    let context = context.clone();
                    let metrics = self.metrics.clone();
                    let name = name.clone();
                    move |key: ObjectKey, attempt: Attempt, reason: Option<Reason>| {
                        let object = store.get(key.namespace.as_deref(), &key.name);
                        let reconcile = reconcile.clone();
                        let error_policy = error_policy.clone();
                        let context = context.clone();
                        let metrics = metrics.clone();
                        let name = name.clone();
                        async move {
                            let Some(object) = object else {
                                return Reschedule::Done;
                            };
                            let reason = match (attempt.retries, reason) {
                                (0, Some(reason)) => reason.as_str(),
                                (0, None) => "requeued",
                                (_, _) => "retry after a failure",
                            };
                            let span = tracing::info_span!(
                                "reconcile",
                                controller = %name,
                                kind = K::INFO.kind,
                                namespace = key.namespace.as_deref().unwrap_or(""),
                                name = %key.name,
                                reason,
                                retries = attempt.retries,
                            );
                            metrics.reconcile_started(&name);
                            let started = tokio::time::Instant::now();
                            let result = reconcile(object.clone(), context.clone())
                                .instrument(span.clone())
                                .await;
                            let outcome = match result {
                                Ok(action) => match action.requeue_after() {
                                    Some(after) => Reschedule::After(after),
                                    None => Reschedule::Done,
                                },
                                Err(err) => {
                                    tracing::warn!(parent: &span, error = %err, "reconcile failed");
                                    let action = error_policy(object, &err, attempt, context);
                                    Reschedule::Failed(action.requeue_after())
                                }
                            };
                            metrics.reconcile_finished(
                                &name,
                                !matches!(outcome, Reschedule::Failed(_)),
                                started.elapsed(),
                            );
                            outcome
                        }
                    }
                };
                let this = &self;
                async move {
                    this.term(handler, &term).await;
                    true
                }
            },
        )
        .await;
    }

    /// One term: triggers and the runner until `term` ends.
    async fn term<H, Fut>(&self, handler: H, term: &CancellationToken)
    where
        H: Fn(ObjectKey, Attempt, Option<Reason>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reschedule> + Send + 'static,
    {
        let queue = WorkQueue::new(self.config.queue.clone());
        let triggers = Triggers {
            queue: queue.clone(),
            reasons: Arc::default(),
        };
        tokio::select! {
            ready = self.store.wait_ready() => {
                if ready.is_err() {
                    // The reflector stopped (the process shuts down).
                    return;
                }
            }
            () = term.cancelled() => return,
        }
        let everything = {
            let store = self.store.clone();
            let triggers = triggers.clone();
            move |reason: Reason| {
                for object in store.list() {
                    triggers.trigger(ObjectKey::of(object.as_ref()), reason);
                }
            }
        };
        let predicate = self.predicate.clone();
        let remembered: Arc<Mutex<HashMap<ObjectKey, u64>>> = Arc::default();
        // The predicate's values of what is reconciled now: later events
        // are compared with them.
        let prime = {
            let predicate = predicate.clone();
            let remembered = remembered.clone();
            let store = self.store.clone();
            move || {
                let (Some(predicate), Ok(mut remembered)) = (&predicate, remembered.lock()) else {
                    return;
                };
                remembered.clear();
                for object in store.list() {
                    if let Some(value) = predicate(&object) {
                        remembered.insert(ObjectKey::of(object.as_ref()), value);
                    }
                }
            }
        };
        // Level-based: everything once, then changes.
        prime();
        everything(Reason::Changed);
        {
            let triggers = triggers.clone();
            let queue = queue.clone();
            let everything = everything.clone();
            tokio::spawn(follow(
                self.changes.resubscribe(),
                term.clone(),
                move |change| match change {
                    Change::Applied(object) => {
                        let key = ObjectKey::of(object.as_ref());
                        if let Some(predicate) = &predicate {
                            if let Some(value) = predicate(&object) {
                                let Ok(mut remembered) = remembered.lock() else {
                                    return;
                                };
                                if remembered.insert(key.clone(), value) == Some(value) {
                                    return;
                                }
                            }
                        }
                        triggers.trigger(key, Reason::Changed);
                    }
                    Change::Deleted(object) => {
                        let key = ObjectKey::of(object.as_ref());
                        if let Ok(mut remembered) = remembered.lock() {
                            remembered.remove(&key);
                        }
                        queue.forget(&key);
                    }
                    Change::Restarted => {
                        prime();
                        everything(Reason::Changed);
                    }
                },
            ));
        }
        for source in &self.sources {
            source(&self.reflectors, triggers.clone(), term.clone());
        }
        if let Some(every) = self.config.resync {
            let term = term.clone();
            let everything = everything.clone();
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        _ = ticks.tick() => everything(Reason::Resync),
                        () = term.cancelled() => return,
                    }
                }
            });
        }
        let metrics = self.metrics.clone();
        let name = self.config.name.clone();
        let depth = queue.clone();
        let handler = Arc::new(handler);
        let cancelled = run(
            queue.clone(),
            term.clone(),
            self.config.drain_deadline,
            move |key: ObjectKey, attempt: Attempt| {
                metrics.set_queue_depth(&name, depth.len());
                let reason = triggers.reason(&key);
                handler(key, attempt, reason)
            },
        )
        .await;
        queue.close();
        if cancelled > 0 {
            tracing::warn!(
                controller = %self.config.name,
                cancelled,
                "reconciles cancelled at the drain deadline"
            );
        }
    }
}

/// Calls `on_change` for every change until `stop`; a lagging receiver
/// (events were dropped) is treated as a relist, so nothing is missed.
pub(crate) async fn follow<K: Clone + Send + Sync + 'static>(
    mut changes: broadcast::Receiver<Change<K>>,
    stop: CancellationToken,
    on_change: impl Fn(Change<K>) + Send + 'static,
) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = stop.cancelled() => return,
        };
        match change {
            Ok(change) => on_change(change),
            Err(broadcast::error::RecvError::Lagged(_)) => on_change(Change::Restarted),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
