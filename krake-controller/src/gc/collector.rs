//! One leadership term of the collector: the graph rebuilt from the stores,
//! the followers of every kind feeding it and the queue, and the step run
//! on each queued object (see the [parent](super) docs for the rules).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use krake_client::Client;
use krake_data::metadata::{Metadata, ResourceRef};
use krake_data::registry::KindInfo;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::graph::{DependencyGraph, owners_of};
use super::kinds::{self, AnyKind, Heard, Popped, is_ours};
use super::{Cycles, GcError, NAME};
use crate::metrics::Metrics;
use crate::runner::run;
use crate::shared::Reflectors;
use crate::work_queue::{Attempt, QueueConfig, Reschedule, WorkQueue};

/// What lasts across terms: the kinds (their stores and feeds), the client,
/// metrics and the record of cycles.
pub(crate) struct Core {
    kinds: Vec<Arc<dyn AnyKind>>,
    client: Client,
    workers: usize,
    metrics: Metrics,
    cycles: Cycles,
}

impl Core {
    /// Subscribes to every kind.
    pub(crate) fn new(
        reflectors: &Reflectors,
        workers: usize,
        metrics: Metrics,
        cycles: Cycles,
    ) -> Self {
        Core {
            kinds: kinds::all(reflectors),
            client: reflectors.client().clone(),
            workers,
            metrics,
            cycles,
        }
    }

    fn kind(&self, node: &ResourceRef) -> Option<&Arc<dyn AnyKind>> {
        self.kinds
            .iter()
            .find(|k| k.info().api == node.api && k.info().kind == node.kind)
    }

    /// The object's metadata as its store has it (`None`: it does not exist).
    fn metadata(&self, node: &ResourceRef) -> Option<Metadata> {
        self.kind(node)?
            .metadata(node.namespace.as_deref(), &node.name)
    }

    /// Records a cycle; warns and counts it the first time.
    fn report(&self, cycle: Vec<ResourceRef>) {
        let members: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        if self.cycles.record(cycle) {
            tracing::warn!(
                controller = NAME,
                members = ?members,
                "ownership cycle: its members do not wait for one another"
            );
            self.metrics.cycle_detected(NAME);
        }
    }
}

/// The state of one term.
struct Term {
    core: Arc<Core>,
    queue: WorkQueue<ResourceRef>,
    graph: Mutex<DependencyGraph>,
}

impl Term {
    fn graph(&self) -> MutexGuard<'_, DependencyGraph> {
        self.graph.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `node` if it is the collector's to handle now.
    fn trigger_if_ours(&self, node: &ResourceRef) {
        if self.core.metadata(node).is_some_and(|m| is_ours(&m)) {
            self.queue.trigger_now(node.clone());
        }
    }

    fn heard(&self, heard: Heard) {
        match heard {
            Heard::Object(node) => self.sync(&node),
            Heard::Restarted(info) => {
                self.resync(info);
                self.everything();
                self.scan_cycles();
            }
        }
    }

    /// Brings `node` in the graph up to its store; queues its owners
    /// (before and after the change) and the other members of their cycles
    /// (which wait for the same dependents), and itself, if they are ours.
    fn sync(&self, node: &ResourceRef) {
        let Some(kind) = self.core.kind(node) else {
            return;
        };
        // The store is read under the graph's lock, so a concurrent resync
        // cannot put back an older state.
        let (current, wake) = {
            let mut graph = self.graph();
            let current = kind.metadata(node.namespace.as_deref(), &node.name);
            let new = current.as_ref().map(owners_of).unwrap_or_default();
            let old = graph.set(node.clone(), new.clone());
            let mut wake = BTreeSet::new();
            for owner in old.iter().chain(&new) {
                if !wake.contains(owner) {
                    wake.extend(graph.component(owner));
                }
            }
            (current, wake)
        };
        for owner in &wake {
            self.trigger_if_ours(owner);
        }
        if current.is_some_and(|m| is_ours(&m)) {
            self.queue.trigger_now(node.clone());
        }
    }

    /// Rebuilds the nodes of `info` from its store.
    fn resync(&self, info: &'static KindInfo) {
        let Some(kind) = self.core.kinds.iter().find(|k| k.info() == info) else {
            return;
        };
        let mut graph = self.graph();
        let current = kind.all();
        let present: HashSet<ResourceRef> = current.iter().map(|m| info.reference(m)).collect();
        let stale: Vec<ResourceRef> = graph
            .nodes()
            .filter(|n| n.api == info.api && n.kind == info.kind && !present.contains(*n))
            .cloned()
            .collect();
        for node in &stale {
            graph.remove(node);
        }
        for metadata in &current {
            graph.set(info.reference(metadata), owners_of(metadata));
        }
    }

    /// Queues every object that is ours, of every kind.
    fn everything(&self) {
        for kind in &self.core.kinds {
            for metadata in kind.all() {
                if is_ours(&metadata) {
                    self.queue.trigger_now(kind.info().reference(&metadata));
                }
            }
        }
    }

    /// Reports every cycle of the graph.
    fn scan_cycles(&self) {
        let cycles = self.graph().cycles();
        for cycle in cycles {
            self.core.report(cycle);
        }
    }

    /// The step on one object; see the parent docs.
    async fn step(&self, node: &ResourceRef) -> Result<(), GcError> {
        let Some(kind) = self.core.kind(node).cloned() else {
            return Ok(());
        };
        let Some(metadata) = kind.metadata(node.namespace.as_deref(), &node.name) else {
            return Ok(());
        };
        if !is_ours(&metadata) {
            return Ok(());
        }
        let (component, cycle, direct, external) = {
            let graph = self.graph();
            let component = graph.component(node);
            let cycle = graph.is_cycle(&component);
            let direct = graph.dependents(node);
            let external = graph.external_dependents(&component);
            (component, cycle, direct, external)
        };
        if cycle {
            self.core.report(component.iter().cloned().collect());
        }
        // A dependent counts while its store still has it naming `owners`
        // (the graph may lag a little behind the stores).
        let names = |dependent: &ResourceRef, owners: &BTreeSet<ResourceRef>| {
            self.core
                .metadata(dependent)
                .filter(|m| owners_of(m).iter().any(|owner| owners.contains(owner)))
        };
        let this = BTreeSet::from([node.clone()]);
        for dependent in &direct {
            let Some(dependent_metadata) = names(dependent, &this) else {
                continue;
            };
            if dependent_metadata.is_deleted() {
                continue;
            }
            let Some(dependent_kind) = self.core.kind(dependent) else {
                continue;
            };
            tracing::debug!(dependent = %dependent, "deleting a dependent");
            dependent_kind
                .delete(self.core.client.clone(), dependent.clone())
                .await?;
        }
        let waiting = external
            .iter()
            .filter(|dependent| names(dependent, &component).is_some())
            .count();
        if waiting > 0 {
            tracing::debug!(waiting, "waiting for dependents to go");
            return Ok(());
        }
        let popped = kind.pop(self.core.client.clone(), node.clone()).await?;
        if popped == Popped::Done {
            tracing::debug!("cascade_deletion removed");
            // The other members of a cycle waited for the same dependents.
            for member in component.iter().filter(|member| *member != node) {
                self.trigger_if_ours(member);
            }
        }
        Ok(())
    }
}

/// Runs one term until `stop`: waits for every store, rebuilds the graph,
/// queues everything that is ours and runs the queue.
pub(crate) async fn term(core: Arc<Core>, stop: &CancellationToken, drain: Duration) {
    for kind in &core.kinds {
        tokio::select! {
            ready = kind.ready() => {
                if ready.is_err() {
                    // The reflectors stopped (the process shuts down).
                    return;
                }
            }
            () = stop.cancelled() => return,
        }
    }
    let queue = WorkQueue::new(QueueConfig {
        concurrency: core.workers.max(1),
        ..QueueConfig::default()
    });
    let state = Arc::new(Term {
        core: core.clone(),
        queue: queue.clone(),
        graph: Mutex::default(),
    });
    // Followers first, so that nothing after the rebuild is missed.
    let heard: Arc<dyn Fn(Heard) + Send + Sync> = {
        let state = state.clone();
        Arc::new(move |heard| state.heard(heard))
    };
    for kind in &core.kinds {
        tokio::spawn(kind.follow(stop.clone(), heard.clone()));
    }
    for kind in &core.kinds {
        state.resync(kind.info());
    }
    state.everything();
    state.scan_cycles();
    let depth = queue.clone();
    let handler = move |node: ResourceRef, attempt: Attempt| {
        let state = state.clone();
        let metrics = state.core.metrics.clone();
        metrics.set_queue_depth(NAME, depth.len());
        async move {
            let span = tracing::info_span!(
                "reconcile",
                controller = NAME,
                kind = %node.kind,
                namespace = node.namespace.as_deref().unwrap_or(""),
                name = %node.name,
                retries = attempt.retries,
            );
            metrics.reconcile_started(NAME);
            let started = tokio::time::Instant::now();
            let result = state.step(&node).instrument(span.clone()).await;
            let ok = result.is_ok();
            metrics.reconcile_finished(NAME, ok, started.elapsed());
            match result {
                Ok(()) => Reschedule::Done,
                Err(err) => {
                    tracing::warn!(parent: &span, error = %err, "garbage collection step failed");
                    Reschedule::Failed(None)
                }
            }
        }
    };
    let cancelled = run(queue.clone(), stop.clone(), drain, handler).await;
    queue.close();
    if cancelled > 0 {
        tracing::warn!(
            controller = NAME,
            cancelled,
            "steps cancelled at the drain deadline"
        );
    }
}
