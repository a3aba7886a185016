//! The Kubernetes cluster controller: the state of every cluster with a
//! kubeconfig, from a watch on its Nodes (Krake polls them every 2 s).
//!
//! Per cluster, one task keeps a `kube` watcher on `/api/v1/nodes` with a
//! reflector store and wakes the cluster's reconcile on every change and
//! every failure. The reconcile turns the latest observation into the
//! status, Krake's rules:
//!
//! - the cluster cannot be reached (or refuses the credentials): OFFLINE,
//!   with reason CLUSTER_NOT_REACHABLE and the cause;
//! - reachable again after OFFLINE: CONNECTING first (Krake's one step to
//!   smooth the transition), the real state a moment later;
//! - a `*Pressure` condition `True` on a node: UNHEALTHY; else a `Ready`
//!   condition that is not `True`: NOTREADY; else ONLINE;
//! - FAILING_METRICS belongs to the scheduler: a healthy observation does
//!   not overwrite it.
//!
//! `status.nodes` holds the nodes' conditions (type, status, reason and
//! message; a condition without reason or message gets an empty string,
//! where Krake's API refuses Krake's own status and its observer stops for
//! good). The status is written only when it changed, with
//! `kube_controller_triggered` set as Krake does.
//!
//! Clusters without a kubeconfig, deleted, FAILED, or being created or
//! reconciled by the infrastructure controller (CREATING, RECONCILING, and
//! FAILING_RECONCILIATION or DEGRADED once created) are not observed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use krake_client::Client;
use krake_data::kinds::kubernetes::{
    Cluster, ClusterNode, ClusterNodeCondition, ClusterNodeMetadata, ClusterNodeStatus,
    ClusterState, ClusterStatus,
};
use krake_data::{Reason, ReasonCode, Timestamp};
use kube::api::Api;
use kube::runtime::reflector::{self, Store as NodeStore};
use kube::runtime::watcher::{self, Event};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::kubernetes::cluster_client::{ClusterClients, KubeError, fingerprint};
use crate::kubernetes::cluster_watch;
use crate::object_key::ObjectKey;
use crate::work_queue::Attempt;

/// How long a cluster shows CONNECTING after it was OFFLINE.
const CONNECTING_FOR: Duration = Duration::from_secs(1);

/// What the node watch of a cluster last saw.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeObservation {
    /// Nothing yet (the first list is under way).
    Unknown,
    /// The nodes were listed; their conditions.
    Reachable(Vec<ClusterNode>),
    /// The last attempt failed.
    Unreachable(String),
}

pub(crate) struct Observer {
    kubeconfig: u64,
    latest: Arc<Mutex<NodeObservation>>,
    stop: CancellationToken,
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the reconciles share.
pub(crate) struct Context {
    pub client: Client,
    pub clients: Arc<ClusterClients>,
    pub observers: Mutex<HashMap<ObjectKey, Observer>>,
    pub triggers: broadcast::Sender<ObjectKey>,
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// Why a reconcile failed (an API write); tried again with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A request to the Krake API failed.
    #[error("krake api: {0}")]
    Api(#[from] krake_client::Error),
}

/// Whether the cluster controller observes `cluster`.
fn observed(cluster: &Cluster) -> bool {
    // A created cluster (`cluster_id`) that is FAILING_RECONCILIATION or
    // DEGRADED is the infrastructure controller's until it is CONNECTING
    // again: an observation would hide what it still has to do.
    let infrastructure_busy = cluster.status.cluster_id.is_some()
        && matches!(
            cluster.status.state,
            ClusterState::FailingReconciliation | ClusterState::Degraded
        );
    !cluster.metadata.is_deleted()
        && !cluster.spec.kubeconfig.is_empty()
        && !infrastructure_busy
        && !matches!(
            cluster.status.state,
            ClusterState::Failed | ClusterState::Creating | ClusterState::Reconciling
        )
}

/// One cluster.
pub(crate) async fn reconcile(
    cluster: Arc<Cluster>,
    cx: Arc<Context>,
) -> Result<Action, ClusterError> {
    let key = ObjectKey::of(cluster.as_ref());
    if !observed(&cluster) {
        if let Ok(mut observers) = cx.observers.lock() {
            observers.remove(&key);
        }
        return Ok(Action::await_change());
    }
    let observation = match observe(&cx, &key, &cluster).await {
        Ok(observation) => observation,
        Err(err) => NodeObservation::Unreachable(err.to_string()),
    };
    let (status, again) = next_status(&cluster.status, &observation);
    if status != cluster.status {
        let mut updated = (*cluster).clone();
        updated.status = status;
        updated.status.kube_controller_triggered = Some(Timestamp::now());
        let api = match cluster.metadata.namespace.as_deref() {
            Some(namespace) => {
                krake_client::Api::<Cluster>::namespaced(cx.client.clone(), namespace)
            }
            None => krake_client::Api::<Cluster>::all(cx.client.clone()),
        };
        api.status(&updated).await?;
    }
    Ok(match again {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The latest observation of the cluster's nodes, starting (or restarting,
/// after a kubeconfig change) its watch.
async fn observe(
    cx: &Context,
    key: &ObjectKey,
    cluster: &Cluster,
) -> Result<NodeObservation, KubeError> {
    let kubeconfig = fingerprint(&cluster.spec.kubeconfig);
    if let Ok(observers) = cx.observers.lock()
        && let Some(observer) = observers.get(key)
        && observer.kubeconfig == kubeconfig
    {
        return Ok(observer
            .latest
            .lock()
            .map(|o| o.clone())
            .unwrap_or(NodeObservation::Unknown));
    }
    let client = cx.clients.get(key, &cluster.spec.kubeconfig).await?;
    let latest = Arc::new(Mutex::new(NodeObservation::Unknown));
    let stop = cx.shutdown.child_token();
    let nodes: Api<Node> = Api::all(client.watch_client().clone());
    spawn_watch(
        nodes,
        key.clone(),
        latest.clone(),
        cx.triggers.clone(),
        stop.clone(),
    );
    if let Ok(mut observers) = cx.observers.lock() {
        observers.insert(
            key.clone(),
            Observer {
                kubeconfig,
                latest,
                stop,
            },
        );
    }
    Ok(NodeObservation::Unknown)
}

fn spawn_watch(
    nodes: Api<Node>,
    key: ObjectKey,
    latest: Arc<Mutex<NodeObservation>>,
    triggers: broadcast::Sender<ObjectKey>,
    stop: CancellationToken,
) {
    let writer = reflector::store::Writer::<Node>::default();
    let store = writer.as_reader();
    tokio::spawn(cluster_watch::drive(writer, nodes, stop, move |event| {
        let observation = match event {
            Ok(Event::Apply(_) | Event::Delete(_) | Event::InitDone) => {
                NodeObservation::Reachable(node_conditions(&store))
            }
            Ok(Event::Init | Event::InitApply(_)) => return true,
            Err(err) => NodeObservation::Unreachable(unreachable_message(&err)),
        };
        let changed = match latest.lock() {
            Ok(mut latest) => {
                let changed = *latest != observation;
                *latest = observation;
                changed
            }
            Err(_) => return false,
        };
        if changed {
            let _ = triggers.send(key.clone());
        }
        true
    }));
}

/// A watcher error in one line, with its cause.
fn unreachable_message(err: &watcher::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The nodes of the store with their conditions, sorted by name.
fn node_conditions(store: &NodeStore<Node>) -> Vec<ClusterNode> {
    let mut nodes: Vec<ClusterNode> = store
        .state()
        .iter()
        .map(|node| ClusterNode {
            api: "kubernetes".into(),
            kind: ClusterNode::default_kind(),
            metadata: ClusterNodeMetadata {
                name: node.metadata.name.clone().unwrap_or_default(),
            },
            status: Some(ClusterNodeStatus {
                conditions: node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .map(|conditions| {
                        conditions
                            .iter()
                            .map(|c| ClusterNodeCondition {
                                message: c.message.clone().unwrap_or_default(),
                                reason: c.reason.clone().unwrap_or_default(),
                                status: c.status.clone(),
                                condition_type: c.type_.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
        })
        .collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    nodes
}

/// The state the nodes' conditions give (Krake's rules).
pub fn state_of(nodes: &[ClusterNode]) -> ClusterState {
    let conditions = || {
        nodes
            .iter()
            .filter_map(|n| n.status.as_ref())
            .flat_map(|s| s.conditions.iter())
    };
    if conditions().any(|c| c.condition_type.ends_with("Pressure") && c.status == "True") {
        ClusterState::Unhealthy
    } else if conditions().any(|c| c.condition_type == "Ready" && c.status != "True") {
        ClusterState::NotReady
    } else {
        ClusterState::Online
    }
}

/// The status after `observation`, and when to look again without a new
/// observation (the end of CONNECTING).
pub fn next_status(
    current: &ClusterStatus,
    observation: &NodeObservation,
) -> (ClusterStatus, Option<Duration>) {
    let mut status = current.clone();
    let mut again = None;
    match observation {
        NodeObservation::Unknown => {}
        NodeObservation::Unreachable(message) => {
            status.state = ClusterState::Offline;
            status.reason = Some(Reason::new(
                ReasonCode::ClusterNotReachable,
                message.clone(),
            ));
        }
        NodeObservation::Reachable(nodes) => {
            let state = state_of(nodes);
            status.nodes = nodes.clone();
            if status.reason.as_ref().map(|r| r.code) == Some(ReasonCode::ClusterNotReachable) {
                status.reason = None;
            }
            status.state = match current.state {
                ClusterState::Offline => {
                    again = Some(CONNECTING_FOR);
                    ClusterState::Connecting
                }
                ClusterState::FailingMetrics if state == ClusterState::Online => {
                    ClusterState::FailingMetrics
                }
                _ => state,
            };
        }
    }
    (status, again)
}

/// After a failed API write: the queue's exponential backoff.
pub(crate) fn error_policy(
    cluster: Arc<Cluster>,
    error: &ClusterError,
    attempt: Attempt,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(
        cluster = %cluster.metadata.name,
        retries = attempt.retries,
        error = %error,
        "cluster status update failed; trying again"
    );
    Action::await_change()
}

#[cfg(test)]
mod tests {
    use krake_data::kinds::kubernetes::{ClusterSpec, ClusterState};
    use krake_data::metadata::Metadata;
    use serde_json::{Map, Value, json};

    use super::*;

    fn with_kubeconfig() -> Cluster {
        let kubeconfig: Map<String, Value> = json!({"clusters": [{"name": "c"}]})
            .as_object()
            .cloned()
            .unwrap_or_default();
        Cluster::new(
            Metadata::namespaced("ns", "c"),
            ClusterSpec::from_kubeconfig(kubeconfig),
        )
    }

    #[test]
    fn created_clusters_the_infrastructure_controller_works_on_are_not_observed() {
        let mut cluster = with_kubeconfig();
        cluster.status.state = ClusterState::Online;
        assert!(observed(&cluster));
        for busy in [
            ClusterState::Creating,
            ClusterState::Reconciling,
            ClusterState::Failed,
        ] {
            cluster.status.state = busy;
            assert!(!observed(&cluster), "{busy:?}");
        }
        // Registered clusters: DEGRADED or FAILING_RECONCILIATION are
        // observed as before; created ones (cluster_id) are not.
        for state in [ClusterState::Degraded, ClusterState::FailingReconciliation] {
            cluster.status.state = state;
            cluster.status.cluster_id = None;
            assert!(observed(&cluster), "{state:?}");
            cluster.status.cluster_id = Some("id".into());
            assert!(!observed(&cluster), "{state:?}");
        }
        cluster.status.state = ClusterState::Connecting;
        assert!(observed(&cluster));
    }
}
