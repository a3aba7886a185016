//! The application handler: places applications on clusters.
//!
//! For each application that is not deleted and not FAILED:
//!
//! 1. An application that nothing could take waits for a change or its next
//!    periodic attempt (below); one whose migration failed recently until
//!    `status.migration_timeout`.
//! 2. Already placed with `constraints.migration` false: only the hand-off
//!    below.
//! 3. Candidates: the clusters of the application's namespace only (tenant
//!    separation), ONLINE, matching the label, custom-resource and metric
//!    constraints (see [`placement`]); with
//!    `auto_cluster_create`, also the clouds of the namespace and the global
//!    clouds.
//! 4. Stickiness shortcut: the current cluster still matches and was chosen
//!    less than `reschedule_after` ago: keep it. Otherwise rank.
//! 5. A new cluster: `PUT /binding` (the API sets `scheduled`,
//!    `kube_controller_triggered`, `scheduled_to` and the owner). The same
//!    cluster: if the spec changed since the Kubernetes controller was last
//!    triggered (`modified > kube_controller_triggered`), set
//!    `kube_controller_triggered` through `/status`, which hands the new
//!    version to the Kubernetes controller. A cloud: create a cluster on it
//!    (below).
//! 6. Every placed application is looked at again after `reschedule_after`
//!    (Krake's default 60 s) and moves when a better cluster appeared and
//!    migration is allowed.
//!
//! No match: `status.reason` NO_SUITABLE_RESOURCE and, while retries are
//! left (`spec.backoff_limit`, -1 forever), DEGRADED with `scheduled_retry`
//! the time of the next periodic attempt; then FAILED.
//!
//! # Waiting applications
//!
//! An application that nothing can take is tried again
//!
//! - at once when something that could change the answer changes: a
//!   Cluster, Cloud, Metric or MetricsProvider of its namespace, a
//!   GlobalCloud, GlobalMetric or GlobalMetricsProvider, or its own spec (a
//!   new matching cluster places every waiting application within a
//!   second);
//! - otherwise periodically (metric values move without any change of an
//!   object): first after `backoff_delay × backoff` seconds, as in Krake,
//!   then after twice as long at each attempt, up to `reschedule_after`
//!   (60 s by default). A spec update starts this backoff again.
//!
//! Its status is written only when the outcome changes (state, reason, the
//! `retries` left), not on every attempt: a namespace of pending
//! applications costs no writes. Differences from Krake, for users:
//!
//! - `scheduled_retry` is the time of the next periodic attempt *when the
//!   status was last written*; later attempts that end the same way do not
//!   rewrite it (with `backoff_limit: -1` it is written once), so it may lie
//!   in the past while the application keeps waiting. Changes are tried
//!   at once whatever it says.
//! - `backoff_limit` counts the periodic attempts only (each one that fails
//!   decrements `retries` and is written): FAILED comes after
//!   `backoff_limit` attempts as in Krake, but with the growing backoff
//!   later than `backoff_limit × backoff_delay × backoff` seconds, and
//!   attempts woken by changes do not use retries up.
//! - A restarted scheduler tries every waiting application once at start
//!   (without counting it when it ends as before).
//!
//! Automatic cluster creation: the winner is a cloud, so the scheduler
//! creates a cluster `cluster-<1000..9999>` in the application's namespace
//! from the configured TOSCA template, inheriting the cloud's labels and
//! metrics, with the application's label and metric constraints as its
//! cloud constraints, and binds it to the chosen cloud at once (Krake loses
//! that choice). The application waits in WAITING_FOR_CLUSTER_CREATION until
//! the cluster is ONLINE, then is placed on it.

use std::sync::Arc;
use std::time::Duration;

use krake_client::Api;
use krake_data::kinds::infrastructure::CloudBinding;
use krake_data::kinds::kubernetes::{
    Application, ApplicationState, ApplicationStatus, CloudConstraints, Cluster, ClusterBinding,
    ClusterCloudConstraints, ClusterSpec, ClusterState,
};
use krake_data::metadata::Metadata;
use krake_data::{Reason, ReasonCode, ResourceRef, Timestamp};

use crate::action::Action;
use crate::object_key::ObjectKey;
use crate::scheduler::placement::{self, Candidate, CandidateKind, CandidateSet};
use crate::scheduler::{Context, SchedulerError, retry_delay};

/// How often an application waiting for its new cluster looks again (the
/// cluster's changes also wake it).
pub(crate) const CLUSTER_CREATION_POLL: Duration = Duration::from_secs(30);

/// What the scheduler decided for an application.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Stay on (or go to, for the first time the same as) this cluster.
    Keep(ResourceRef),
    /// Bind to this cluster.
    Bind(ResourceRef),
    /// Create a cluster on this cloud.
    CreateOn(ResourceRef),
}

/// The decision for `app` among `clusters` and `clouds` (the candidates of
/// its namespace), or `None` when nothing matches. Pure: the benchmark and
/// custom schedulers call it directly.
pub fn decide(
    app: &Application,
    clusters: &CandidateSet,
    clouds: &CandidateSet,
    stickiness: f64,
    reschedule_after: Duration,
    now: Timestamp,
) -> Option<Decision> {
    let constraints = &app.spec.constraints.cluster;
    let mut matching: Vec<&Candidate> = clusters.matching_cluster(constraints).collect();
    let current = app.status.scheduled_to.as_ref();
    if let Some(current) = current
        && matching.iter().any(|c| &c.target == current)
        && app
            .status
            .scheduled
            .is_some_and(|at| elapsed(at, now) < reschedule_after)
    {
        return Some(Decision::Keep(current.clone()));
    }
    if app.spec.auto_cluster_create {
        matching.extend(clouds.matching_cloud(
            constraints.labels.as_deref(),
            constraints.metrics.as_deref(),
        ));
    }
    let winner = placement::choose(&matching, current, stickiness, |n| fastrand::usize(..n))?;
    Some(match winner.kind {
        CandidateKind::Cloud => Decision::CreateOn(winner.target.clone()),
        CandidateKind::Cluster if Some(&winner.target) == current => {
            Decision::Keep(winner.target.clone())
        }
        CandidateKind::Cluster => Decision::Bind(winner.target.clone()),
    })
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    (now - since).to_std().unwrap_or(Duration::ZERO)
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    (at - now).to_std().unwrap_or(Duration::ZERO)
}

/// One application.
pub(crate) async fn reconcile(
    app: Arc<Application>,
    cx: Arc<Context>,
) -> Result<Action, SchedulerError> {
    let key = ObjectKey::of(app.as_ref());
    if app.metadata.is_deleted() || app.status.state == ApplicationState::Failed {
        cx.app_waits.clear(&key);
        return Ok(Action::await_change());
    }
    let Some(namespace) = app.metadata.namespace.as_deref() else {
        return Ok(Action::await_change());
    };
    // Read before the candidates: a change after this wakes it again.
    let generation = cx.candidates.changes.of(namespace);
    if let Some(remaining) = cx
        .app_waits
        .remaining(&key, generation, app.metadata.modified)
    {
        return Ok(Action::requeue(remaining));
    }
    let now = Timestamp::now();
    if app.status.scheduled_to.is_some() && !app.spec.constraints.migration {
        cx.app_waits.clear(&key);
        if needs_hand_off(&app) {
            let mut updated = (*app).clone();
            updated.status.kube_controller_triggered = Some(Timestamp::now());
            write_status(&app, &updated, &cx).await?;
        }
        return Ok(Action::await_change());
    }
    if app.status.migration_timeout > 0 {
        let timeout = Timestamp::from_datetime(
            chrono::DateTime::from_timestamp(app.status.migration_timeout, 0).unwrap_or_default(),
        );
        if timeout > now {
            return Ok(Action::requeue(until(timeout, now)));
        }
    }
    if app.status.state == ApplicationState::WaitingForClusterCreation
        && let Some(name) = app.status.auto_cluster_create_started.as_deref()
    {
        match cx.candidates.clusters.get(Some(namespace), name) {
            Some(cluster) if cluster.metadata.is_deleted() => {}
            Some(cluster) if cluster.status.state != ClusterState::Online => {
                return Ok(Action::requeue(CLUSTER_CREATION_POLL));
            }
            Some(cluster) => {
                cx.app_waits.clear(&key);
                let target = ResourceRef::of(cluster.as_ref());
                bind(&app, &cx, target).await?;
                return Ok(Action::requeue(cx.config.reschedule_after));
            }
            None => {}
        }
    }
    let snapshot = cx.candidates.snapshot(namespace).await;
    let decision = decide(
        &app,
        &snapshot.clusters,
        &snapshot.clouds,
        cx.config.stickiness,
        cx.config.reschedule_after,
        now,
    );
    if matches!(decision, Some(Decision::Keep(_) | Decision::Bind(_))) {
        cx.app_waits.clear(&key);
    }
    match decision {
        Some(Decision::Keep(_)) => keep(&app, &cx).await?,
        Some(Decision::Bind(target)) => bind(&app, &cx, target).await?,
        Some(Decision::CreateOn(cloud)) => {
            return create_cluster(&app, &cx, cloud, generation).await;
        }
        None => {
            return failed(
                &app,
                &cx,
                Reason::new(
                    ReasonCode::NoSuitableResource,
                    "No matching Kubernetes cluster found",
                ),
                generation,
            )
            .await;
        }
    }
    Ok(Action::requeue(cx.config.reschedule_after))
}

fn apps(app: &Application, cx: &Context) -> Api<Application> {
    match app.metadata.namespace.as_deref() {
        Some(namespace) => Api::namespaced(cx.client.clone(), namespace),
        None => Api::all(cx.client.clone()),
    }
}

/// Whether the spec changed since the Kubernetes controller was last
/// triggered.
fn needs_hand_off(app: &Application) -> bool {
    let triggered = app.status.kube_controller_triggered;
    triggered.is_none() || triggered < app.metadata.modified
}

/// A successfully placed application: no reason, retries reset, out of
/// DEGRADED and WAITING_FOR_CLUSTER_CREATION.
/// A DEGRADED state is the scheduler's to clear only when the scheduler set
/// it (no suitable cluster); the Kubernetes application controller's
/// DEGRADED (unhealthy workloads, unreachable cluster) stays with its reason.
fn settle(status: &mut ApplicationStatus, backoff_limit: i64) {
    let ours = status.scheduled_retry.is_some()
        || status
            .reason
            .as_ref()
            .is_some_and(|r| r.code == ReasonCode::NoSuitableResource);
    match status.state {
        ApplicationState::WaitingForClusterCreation => {
            status.state = ApplicationState::Pending;
            status.scheduled_retry = None;
            status.reason = None;
        }
        ApplicationState::Degraded if ours => {
            status.state = ApplicationState::Pending;
            status.scheduled_retry = None;
            status.reason = None;
        }
        ApplicationState::Degraded => {}
        _ if ours => status.reason = None,
        _ => {}
    }
    // `None` (never failed) needs no reset, and no write.
    if status.retries.is_some() {
        status.retries = Some(backoff_limit);
    }
    status.auto_cluster_create_started = None;
}

/// Writes `updated`'s status if it differs from `app`'s.
async fn write_status(
    app: &Application,
    updated: &Application,
    cx: &Context,
) -> Result<(), SchedulerError> {
    if updated.status != app.status {
        apps(app, cx).status(updated).await?;
    }
    Ok(())
}

/// The application stays where it is: hands a changed spec to the
/// Kubernetes controller and settles the status.
async fn keep(app: &Application, cx: &Context) -> Result<(), SchedulerError> {
    let mut updated = app.clone();
    if needs_hand_off(app) {
        updated.status.kube_controller_triggered = Some(Timestamp::now());
    }
    settle(&mut updated.status, app.spec.backoff_limit);
    write_status(app, &updated, cx).await
}

async fn bind(app: &Application, cx: &Context, cluster: ResourceRef) -> Result<(), SchedulerError> {
    tracing::info!(
        namespace = app.metadata.namespace.as_deref().unwrap_or(""),
        application = %app.metadata.name,
        cluster = %cluster.name,
        from = app.status.scheduled_to.as_ref().map(|c| c.name.as_str()).unwrap_or(""),
        "binding application"
    );
    let bound = apps(app, cx)
        .binding(&app.metadata.name, &ClusterBinding::new(cluster))
        .await?;
    let mut updated = bound.clone();
    settle(&mut updated.status, app.spec.backoff_limit);
    write_status(&bound, &updated, cx).await
}

/// A scheduling failure (the attempt saw the change counter `generation`):
/// DEGRADED while retries are left, else FAILED; the status is written only
/// when the outcome changed (see the module docs).
pub(crate) async fn failed(
    app: &Application,
    cx: &Context,
    reason: Reason,
    generation: u64,
) -> Result<Action, SchedulerError> {
    let key = ObjectKey::of(app);
    let limit = app.spec.backoff_limit;
    let retries = app.status.retries.unwrap_or(limit);
    let attempt = cx.app_waits.attempt(
        &key,
        generation,
        app.metadata.modified,
        retry_delay(app.spec.backoff_delay, app.spec.backoff),
        cx.config.reschedule_after,
    );
    let already = app.status.state == ApplicationState::Degraded
        && app.status.reason.as_ref() == Some(&reason);
    // A periodic attempt uses a retry up, unless it is the first one of
    // this scheduler and the status already tells this outcome (a restart).
    let counted = attempt.periodic && !(already && attempt.wait.attempts == 1);
    let degraded = limit < 0 || retries > 0;
    let (state, retries_left) = if degraded {
        let left = if limit > 0 && counted {
            retries - 1
        } else {
            retries
        };
        (ApplicationState::Degraded, left)
    } else {
        (ApplicationState::Failed, 0)
    };
    // Compared field by field: most attempts change nothing, and cloning
    // the application (its manifest) for nothing is most of their cost.
    let changed = app.status.state != state
        || app.status.reason.as_ref() != Some(&reason)
        || app.status.retries != Some(retries_left)
        || app.status.scheduled_retry.is_none() == degraded;
    let (action, scheduled_retry) = if degraded {
        cx.app_waits.record(key, attempt.wait);
        cx.app_waits.prune(|k| {
            cx.applications
                .get(k.namespace.as_deref(), &k.name)
                .is_some()
        });
        let after = attempt.wait.next - tokio::time::Instant::now();
        let changed_since = app
            .metadata
            .namespace
            .as_deref()
            .is_some_and(|ns| cx.candidates.changes.of(ns) != generation);
        // A change during the attempt may have come before this wait was
        // recorded, so that it woke nothing: look again at once.
        (
            Action::requeue(if changed_since { Duration::ZERO } else { after }),
            Some(Timestamp::now() + chrono::TimeDelta::from_std(after).unwrap_or_default()),
        )
    } else {
        cx.app_waits.clear(&key);
        (Action::await_change(), None)
    };
    if changed {
        tracing::warn!(
            namespace = app.metadata.namespace.as_deref().unwrap_or(""),
            application = %app.metadata.name,
            state = ?state,
            reason = %reason.message,
            "cannot schedule application"
        );
        let mut updated = app.clone();
        updated.status.reason = Some(reason);
        updated.status.retries = Some(retries_left);
        updated.status.state = state;
        updated.status.scheduled_retry = scheduled_retry;
        apps(app, cx).status(&updated).await?;
    }
    Ok(action)
}

/// Creates a cluster on `cloud` for `app` and makes it wait for it.
async fn create_cluster(
    app: &Application,
    cx: &Context,
    cloud: ResourceRef,
    generation: u64,
) -> Result<Action, SchedulerError> {
    let Some(tosca) = cx.config.cluster_tosca.clone() else {
        return failed(
            app,
            cx,
            Reason::new(
                ReasonCode::NoSuitableResource,
                "No matching Kubernetes cluster found, and automatic cluster creation is not configured",
            ),
            generation,
        )
        .await;
    };
    let Some(namespace) = app.metadata.namespace.clone() else {
        return Ok(Action::await_change());
    };
    let constraints = &app.spec.constraints.cluster;
    let clusters: Api<Cluster> = Api::namespaced(cx.client.clone(), &namespace);
    let mut created = None;
    for _ in 0..3 {
        let mut metadata = Metadata::namespaced(
            namespace.clone(),
            format!("cluster-{}", fastrand::u32(1000..10000)),
        );
        metadata.inherit_labels = true;
        let spec = ClusterSpec {
            kubeconfig: Default::default(),
            tosca: tosca.clone(),
            custom_resources: Vec::new(),
            constraints: ClusterCloudConstraints {
                cloud: CloudConstraints {
                    labels: constraints.labels.clone(),
                    metrics: constraints.metrics.clone(),
                },
            },
            metrics: Vec::new(),
            inherit_metrics: true,
            backoff: 1,
            backoff_delay: 1,
            backoff_limit: -1,
            auto_generated: true,
        };
        match clusters.create(&Cluster::new(metadata, spec)).await {
            Ok(cluster) => {
                created = Some(cluster);
                break;
            }
            Err(err) if err.is_conflict() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    let Some(cluster) = created else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    tracing::info!(
        namespace = %namespace,
        application = %app.metadata.name,
        cluster = %cluster.metadata.name,
        cloud = %cloud.name,
        "creating a cluster for application"
    );
    clusters
        .binding(&cluster.metadata.name, &CloudBinding::new(cloud))
        .await?;
    cx.app_waits.clear(&ObjectKey::of(app));
    let mut updated = app.clone();
    updated.status.auto_cluster_create_started = Some(cluster.metadata.name.clone());
    updated.status.state = ApplicationState::WaitingForClusterCreation;
    updated.status.reason = None;
    apps(app, cx).status(&updated).await?;
    Ok(Action::requeue(CLUSTER_CREATION_POLL))
}
