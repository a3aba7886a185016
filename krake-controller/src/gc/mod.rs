//! The garbage collector (feature `gc`): cascading deletion.
//!
//! Krake objects name the objects they depend on in `metadata.owners`: an
//! application bound to a cluster is owned by it (the `/binding`
//! sub-resource appends the owner), a cluster bound to a cloud by the cloud,
//! a Magnum cluster by its project. Deleting an owner deletes its
//! dependents first, then the owner: Cloud → Cluster → Application, or
//! Project → MagnumCluster → Cluster → Application.
//!
//! # The finalizer stack protocol
//!
//! `metadata.finalizers` is a stack handled from its tail. `DELETE` does not
//! remove an object: it sets `metadata.deleted` and pushes
//! `cascade_deletion` (the collector's finalizer), so the collector acts
//! first; a `PUT` that leaves a deleted object without finalizers removes
//! it. Once the collector popped `cascade_deletion`, the finalizer of the
//! owning controller (`kubernetes_resources_deletion`,
//! `infrastructure_resources_deletion`, `magnum_cluster_deletion`) is at the
//! tail and that controller cleans up and pops it. Each controller only
//! touches its own finalizer, and only when it is at the tail.
//!
//! The collector handles an object when it is deleted **and**
//! `cascade_deletion` is at the tail of its finalizers:
//!
//! 1. every direct dependent that is not deleted yet is `DELETE`d through the
//!    API (which marks it and pushes `cascade_deletion` on it, so the
//!    cascade goes on one level down); a 404 means it is gone already;
//! 2. while a dependent still exists (deleted or not), the object waits: it
//!    is handled again when a dependent changes or disappears;
//! 3. once no dependent is left, `cascade_deletion` is popped with a
//!    conditional `PUT` (the `metadata.resource_version` it was read with):
//!    on 409 the object is read again and the pop retried on the fresh
//!    version, so another writer's change is never overwritten. If no
//!    finalizer is left, the API removes the object, which lets its own
//!    owners go on.
//!
//! So with a Cloud, a Cluster owned by it and an Application owned by the
//! cluster, deleting the cloud marks the cluster, which marks the
//! application; the application goes first (once its controller popped its
//! own finalizer), then the cluster, then the cloud.
//!
//! # The graph and the work
//!
//! The collector follows every kind of the registry (the 14 Krake kinds and
//! `core/Lease`, which has owners too) in every namespace through the
//! process's shared [`Reflectors`], and keeps a [`DependencyGraph`] of owner
//! → dependents built from their stores. Dependents are looked up by the
//! owner's api, kind, namespace and name (a global kind's namespace is
//! ignored). An owner reference to an object that does not exist blocks
//! nothing. One work queue keyed by the object's [`ResourceRef`] (kind,
//! namespace, name) runs the steps above, never twice at once for an
//! object, with `workers` at a time; failures (transient API errors,
//! exhausted conflict retries) go back to the queue with its exponential
//! backoff.
//!
//! The work is level-based: when a dependent changes or disappears its
//! owners (before and after the change) are queued, with the other members
//! of their cycles (which wait for the same dependents, even through a
//! member that is not the collector's any more); when an object becomes
//! ours it is queued; and at start, after every relist of a kind and on
//! every leadership gain every object that is ours is queued, with the graph
//! rebuilt from the stores. A restart in the middle of a cascade loses
//! nothing: the marks and finalizers are in the API, not in memory.
//!
//! # Cycles
//!
//! Owners can form cycles (A owns B owns A, or longer). The rule: **the
//! members of a cycle (a strongly connected component of the graph) do not
//! block one another**. A member is handled like any object: its direct
//! dependents are `DELETE`d, members included, so the whole cycle gets
//! marked; but it waits only for the dependents of the cycle that are
//! outside it (the dependents of every member that are not members), and
//! once none is left each member's `cascade_deletion` is popped (a member
//! that pops wakes the others). So the cycle goes after what it owns, no
//! member waits for another forever, and every object still sees at most
//! one effective `DELETE` and one pop: the writes are bounded. Each distinct
//! cycle (by its members) is logged once with a warning, counted in the
//! `krake_controller_ownership_cycles_total` metric and listed by
//! [`Cycles::detected`]. Cycles are looked for in the whole graph at start
//! and after relists, and whenever an object on one is handled.
//!
//! # Differences from Krake
//!
//! - Krake drops the nodes of a cycle from its graph, so their deletion
//!   never cascades (and an owner deleting into a cycle may wait forever);
//!   here cycles are deleted under the rule above.
//! - Krake's `PUT`s are unconditional (last writer wins): a concurrent
//!   change of another controller could be overwritten. Here every pop is
//!   conditional and retried on the fresh object.
//! - Krake keeps its graph in memory only and rebuilds it at every start
//!   from a full relist; here it is rebuilt from the shared stores at start,
//!   after every relist (a watch that had to list again, or a change feed
//!   that lagged) and on every leadership gain, so no event lost in between
//!   leaves an owner waiting.
//! - Only objects whose **tail** finalizer is `cascade_deletion` are handled;
//!   other controllers' finalizers are never touched.
//! - Active-passive replicas: with [`GarbageCollector::leader`] only the
//!   leader writes.
//!
//! # Caveats
//!
//! - A dependent created in the instant between the collector's last look
//!   and the owner's removal keeps a dangling owner reference (the API has
//!   no transaction across objects); a forced delete (`?force=True`) also
//!   leaves its dependents alone.
//! - A dependent whose other finalizers are never removed keeps its owners
//!   waiting, as in Krake: that is the other controller's business.

mod collector;
pub mod graph;
mod kinds;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use krake_data::metadata::ResourceRef;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use graph::DependencyGraph;

use crate::metrics::Metrics;
use crate::shared::Reflectors;

/// The collector's name in metrics and logs.
pub const NAME: &str = "garbage_collector";

/// How long running steps may take to finish on shutdown or at the end of a
/// leadership term.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Settings of the [`GarbageCollector`].
#[derive(Debug, Clone, PartialEq)]
pub struct GcConfig {
    /// How many objects are handled at once (Krake's `worker_count`, default 5).
    pub workers: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { workers: 5 }
    }
}

/// Why a step of the collector failed (the object is tried again with the
/// queue's backoff).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// `DELETE` of a dependent failed (other than 404).
    #[error("cannot delete the dependent {node}: {source}")]
    Delete {
        /// The dependent.
        node: ResourceRef,
        /// The API's error.
        #[source]
        source: krake_client::Error,
    },
    /// The `PUT` popping `cascade_deletion` failed (other than 404 and 409).
    #[error("cannot remove cascade_deletion from {node}: {source}")]
    Update {
        /// The object.
        node: ResourceRef,
        /// The API's error.
        #[source]
        source: krake_client::Error,
    },
    /// Reading the object again after a 409 failed.
    #[error("cannot read {node} again after a conflict: {source}")]
    Read {
        /// The object.
        node: ResourceRef,
        /// The API's error.
        #[source]
        source: krake_client::Error,
    },
    /// Every conditional `PUT` met a newer version of the object.
    #[error("{node} kept changing while cascade_deletion was being removed")]
    Contended {
        /// The object.
        node: ResourceRef,
    },
}

/// The ownership cycles a [`GarbageCollector`] detected. Cheap to clone:
/// clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Cycles {
    detected: Arc<Mutex<BTreeSet<Vec<ResourceRef>>>>,
}

impl Cycles {
    /// Every distinct cycle detected since the collector was made, each as
    /// its sorted members, in sorted order. A cycle stays listed after its
    /// objects are gone.
    pub fn detected(&self) -> Vec<Vec<ResourceRef>> {
        self.detected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// How many distinct cycles were detected.
    pub fn len(&self) -> usize {
        self.detected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True if no cycle was detected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records `cycle` (sorted members); true if it was not known yet.
    fn record(&self, cycle: Vec<ResourceRef>) -> bool {
        self.detected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cycle)
    }
}

/// Krake's garbage collector; see the [module](self) docs.
#[derive(Debug)]
pub struct GarbageCollector {
    reflectors: Reflectors,
    config: GcConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
    cycles: Cycles,
}

impl GarbageCollector {
    /// A garbage collector over the shared reflectors of the process (it
    /// writes through their client).
    pub fn new(reflectors: &Reflectors, config: GcConfig) -> Self {
        GarbageCollector {
            reflectors: reflectors.clone(),
            config,
            metrics: Metrics::new(),
            leader: None,
            cycles: Cycles::default(),
        }
    }

    /// Records into `metrics` (as controller [`NAME`]).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Works only while `leader` is true; each new term looks at everything
    /// again.
    #[must_use]
    pub fn leader(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// The cycles this collector detects (a handle to keep before
    /// [`GarbageCollector::run`]).
    pub fn cycles(&self) -> Cycles {
        self.cycles.clone()
    }

    /// Runs until `shutdown`: subscribes to every kind, waits for their
    /// first lists, then collects (while leading, with
    /// [`GarbageCollector::leader`]). Returns once running steps drained.
    pub async fn run(self, shutdown: CancellationToken) {
        let core = Arc::new(collector::Core::new(
            &self.reflectors,
            self.config.workers,
            self.metrics.clone(),
            self.cycles.clone(),
        ));
        crate::leader::each_term(
            self.leader.clone(),
            &shutdown,
            &self.metrics,
            NAME,
            |term| {
                let core = core.clone();
                async move {
                    collector::term(core, &term, DRAIN_DEADLINE).await;
                    // A term that ended on its own: the reflectors stopped.
                    term.is_cancelled()
                }
            },
        )
        .await;
    }
}
