//! The cluster handler: binds clusters that are to be created (no
//! kubeconfig) to a cloud, and deletes automatically created clusters that
//! no application uses any more.
//!
//! A cluster that is not deleted, has no kubeconfig, is not FAILED and is
//! not bound yet is bound (`PUT /binding` with a CloudBinding) to the best
//! matching cloud: the clouds of its namespace first, the global clouds only
//! when none of those matches. A cloud matches when it is not deleted and
//! the cluster's cloud label and metric constraints hold; clouds whose
//! metrics were fetched are preferred, then the highest `Σ value·weight /
//! Σ weight`, ties at random. No match: `status.reason`
//! NO_SUITABLE_RESOURCE, then FAILED after `spec.backoff_limit` periodic
//! attempts (-1: never).
//!
//! A cluster that no cloud can take waits like an application (see
//! [`application`](super::application#waiting-applications)): it is tried
//! again at once when a Cloud, Metric or MetricsProvider of its namespace, a
//! GlobalCloud, GlobalMetric or GlobalMetricsProvider, or its own spec
//! changes, and otherwise first after `backoff_delay × backoff` seconds,
//! then after twice as long at each attempt, up to `reschedule_after`. Its
//! status is written only when the outcome changes: `status.retries` counts
//! the periodic attempts only while `backoff_limit` is not -1 (with -1 it
//! stays at 1 instead of growing with every attempt).
//!
//! A cluster with `spec.auto_generated` that no application of its
//! namespace is scheduled to or waits for is deleted once it has been
//! unused for `deletion_retention` (Krake looks at the first application
//! only; this looks at all of them).

use std::sync::Arc;
use std::time::{Duration, Instant};

use krake_client::{Api, DeleteParams};
use krake_data::kinds::infrastructure::CloudBinding;
use krake_data::kinds::kubernetes::{Cluster, ClusterState};
use krake_data::{Reason, ReasonCode, ResourceRef};

use crate::action::Action;
use crate::object_key::ObjectKey;
use crate::scheduler::candidates::bound_cloud;
use crate::scheduler::placement::{self, Candidate};
use crate::scheduler::{Context, SchedulerError, retry_delay};

/// One cluster.
pub(crate) async fn reconcile(
    cluster: Arc<Cluster>,
    cx: Arc<Context>,
) -> Result<Action, SchedulerError> {
    if cluster.metadata.is_deleted() {
        return Ok(Action::await_change());
    }
    let cleanup = if cluster.spec.auto_generated {
        unused(&cluster, &cx).await?
    } else {
        Action::await_change()
    };
    if !cluster.spec.kubeconfig.is_empty()
        || cluster.status.state == ClusterState::Failed
        || bound_cloud(&cluster).is_some()
    {
        return Ok(cleanup);
    }
    let Some(namespace) = cluster.metadata.namespace.as_deref() else {
        return Ok(cleanup);
    };
    let key = ObjectKey::of(cluster.as_ref());
    // Read before the candidates: a change after this wakes it again.
    let generation = cx.candidates.changes.of(namespace);
    if let Some(remaining) = cx
        .cluster_waits
        .remaining(&key, generation, cluster.metadata.modified)
    {
        return Ok(sooner(cleanup, remaining));
    }
    let snapshot = cx.candidates.snapshot(namespace).await;
    let constraints = &cluster.spec.constraints.cloud;
    let matches = |kind: &str| -> Vec<&Candidate> {
        snapshot
            .clouds
            .matching_cloud(
                constraints.labels.as_deref(),
                constraints.metrics.as_deref(),
            )
            .filter(|c| c.target.kind == kind)
            .collect()
    };
    let mut matching = matches("Cloud");
    if matching.is_empty() {
        matching = matches("GlobalCloud");
    }
    let Some(cloud) = placement::choose(&matching, None, 0.0, |n| fastrand::usize(..n)) else {
        let retry = no_cloud(&cluster, &cx, generation).await?;
        return Ok(match retry {
            Some(after) => sooner(cleanup, after),
            None => cleanup,
        });
    };
    cx.cluster_waits.clear(&key);
    tracing::info!(
        namespace = %namespace,
        cluster = %cluster.metadata.name,
        cloud = %cloud.target,
        "binding cluster to a cloud"
    );
    let clusters: Api<Cluster> = Api::namespaced(cx.client.clone(), namespace);
    let bound = clusters
        .binding(
            &cluster.metadata.name,
            &CloudBinding::new(cloud.target.clone()),
        )
        .await?;
    if bound.status.reason.is_some() || bound.status.retries != 0 {
        let mut updated = bound.clone();
        updated.status.reason = None;
        updated.status.retries = 0;
        clusters.status(&updated).await?;
    }
    Ok(cleanup)
}

/// The earlier of `action`'s requeue and `after`.
fn sooner(action: Action, after: Duration) -> Action {
    Action::requeue(action.requeue_after().map_or(after, |a| a.min(after)))
}

/// No cloud matches (the attempt saw the change counter `generation`):
/// records the wait and writes the status if the outcome changed; returns
/// when to try again (`None`: FAILED, only on a change).
async fn no_cloud(
    cluster: &Cluster,
    cx: &Context,
    generation: u64,
) -> Result<Option<Duration>, SchedulerError> {
    let key = ObjectKey::of(cluster);
    let reason = Reason::new(ReasonCode::NoSuitableResource, "No matching cloud found");
    let attempt = cx.cluster_waits.attempt(
        &key,
        generation,
        cluster.metadata.modified,
        retry_delay(cluster.spec.backoff_delay, cluster.spec.backoff),
        cx.config.reschedule_after,
    );
    let already = cluster.status.reason.as_ref() == Some(&reason);
    // A periodic attempt counts, unless it is the first one of this
    // scheduler and the status already tells this outcome (a restart).
    let counted = attempt.periodic && !(already && attempt.wait.attempts == 1);
    let mut updated = cluster.clone();
    updated.status.reason = Some(reason);
    let limit = cluster.spec.backoff_limit;
    let retry = if limit >= 0 && counted && cluster.status.retries >= limit {
        cx.cluster_waits.clear(&key);
        updated.status.state = ClusterState::Failed;
        None
    } else {
        if counted && (limit >= 0 || cluster.status.retries == 0) {
            updated.status.retries = cluster.status.retries.saturating_add(1);
        }
        cx.cluster_waits.record(key, attempt.wait);
        cx.cluster_waits.prune(|k| {
            cx.candidates
                .clusters
                .get(k.namespace.as_deref(), &k.name)
                .is_some()
        });
        let changed_since = cluster
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| cx.candidates.changes.of(ns) != generation);
        Some(if changed_since {
            Duration::ZERO
        } else {
            attempt.wait.next - tokio::time::Instant::now()
        })
    };
    if updated.status != cluster.status {
        tracing::warn!(
            namespace = cluster.metadata.namespace.as_deref().unwrap_or(""),
            cluster = %cluster.metadata.name,
            state = ?updated.status.state,
            "no matching cloud for cluster"
        );
        Api::<Cluster>::all(cx.client.clone())
            .status(&updated)
            .await?;
    }
    Ok(retry)
}

/// Deletes an automatically created cluster unused for the retention
/// time; otherwise says when to look again.
async fn unused(cluster: &Cluster, cx: &Context) -> Result<Action, SchedulerError> {
    let retention = cx.config.deletion_retention;
    let target = ResourceRef::of(cluster);
    let name = cluster.metadata.name.as_str();
    let used = !cx
        .applications
        .filter(|app| {
            app.metadata.namespace == cluster.metadata.namespace
                && !app.metadata.is_deleted()
                && (app.status.scheduled_to.as_ref() == Some(&target)
                    || app.status.running_on.as_ref() == Some(&target)
                    || app.status.auto_cluster_create_started.as_deref() == Some(name))
        })
        .is_empty();
    let key = ObjectKey::new(cluster.metadata.namespace.as_deref(), name);
    let since = {
        let Ok(mut unused) = cx.unused_since.lock() else {
            return Ok(Action::requeue(retention));
        };
        if used {
            unused.remove(&key);
            return Ok(Action::requeue(retention));
        }
        *unused.entry(key.clone()).or_insert_with(Instant::now)
    };
    let idle = since.elapsed();
    if idle < retention {
        return Ok(Action::requeue(retention - idle));
    }
    tracing::info!(
        namespace = cluster.metadata.namespace.as_deref().unwrap_or(""),
        cluster = %name,
        idle_s = idle.as_secs(),
        "deleting an unused automatically created cluster"
    );
    let Some(namespace) = cluster.metadata.namespace.as_deref() else {
        return Ok(Action::await_change());
    };
    match Api::<Cluster>::namespaced(cx.client.clone(), namespace)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {}
        Err(err) if err.is_not_found() => {}
        Err(err) => return Err(err.into()),
    }
    if let Ok(mut unused) = cx.unused_since.lock() {
        unused.remove(&key);
    }
    Ok(Action::await_change())
}
