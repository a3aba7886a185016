//! Krake's scheduler (feature `scheduler`): places applications on
//! clusters, clusters on clouds and Magnum clusters on projects, by labels,
//! custom resources and live metrics.
//!
//! Three controllers, one per kind, share the process's reflectors:
//!
//! - [`application`]: applications on the clusters of their namespace,
//!   rescheduling every `reschedule_after`, migration, the hand-off to the
//!   Kubernetes controller, DEGRADED/FAILED with backoff, automatic cluster
//!   creation on clouds. An application that nothing can take is tried
//!   again when something that could change the answer changes (per
//!   namespace: a Cluster that can be a candidate, a Cloud, Metric or
//!   metrics provider, or a global one; its own spec), otherwise on a
//!   backoff growing up to `reschedule_after`, and its status is written
//!   only when the outcome changes (see
//!   [`application`](application#waiting-applications) for what
//!   `scheduled_retry` and `backoff_limit` mean then);
//! - [`cluster`]: clusters without a kubeconfig bound to a cloud (waiting
//!   for one like applications wait for a cluster); unused automatically
//!   created clusters deleted;
//! - [`magnum`]: Magnum clusters bound to projects.
//!
//! [`placement`] is the pure decision (filter and score, Krake's formula)
//! and the private `candidates` module the per-namespace snapshot of clusters and clouds
//! with their metrics, fetched through
//! [`MetricsProviders`] and
//! reused by every decision until something changes or the provider cache's
//! TTL passes. Metric failures set the cluster or cloud to FAILING_METRICS
//! (codes 91 to 94 in `status.metrics_reasons`); a clean fetch sets it back
//! to ONLINE.
//!
//! Differences from Krake (its bugs, section 8 of the reference, fixed):
//! metric constraints compare the metric's value, not `weight ×
//! normalized` (see [`placement`]); a cluster without fetched metrics never
//! raises, its metric constraints simply do not match; cloud labels are
//! inherited from the cloud (Krake's loop walks the metric constraints); the
//! cloud state is reset to ONLINE only after a clean fetch; the cloud chosen
//! for an automatically created cluster is kept (bound at once); the unused
//! cluster check looks at every application; Magnum clusters stay in their
//! namespace.
//!
//! ```no_run
//! # async fn example(client: krake_client::Client) {
//! use krake_controller::scheduler::{Scheduler, SchedulerConfig};
//! use krake_controller::shared::Reflectors;
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let reflectors = Reflectors::new(client, shutdown.clone());
//! Scheduler::new(&reflectors, SchedulerConfig::default())
//!     .run(shutdown)
//!     .await;
//! # }
//! ```

pub mod application;
mod candidates;
pub mod cluster;
mod fetch;
pub mod magnum;
pub mod placement;
mod waiting;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krake_client::Client;
use krake_data::Resource;
use krake_data::kinds::core::{GlobalMetric, GlobalMetricsProvider, Metric, MetricsProvider};
use krake_data::kinds::infrastructure::{Cloud, GlobalCloud};
use krake_data::kinds::kubernetes::{Application, Cluster, ClusterState};
use krake_data::kinds::openstack::{MagnumCluster, Project};
use serde_json::{Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::controller::{Controller, ControllerConfig, follow};
use crate::metrics::Metrics;
use crate::metrics_provider::{MetricsProviders, ProvidersConfig};
use crate::object_key::ObjectKey;
use crate::scheduler::candidates::{Candidates, bound_cloud};
use crate::scheduler::fetch::MetricFetcher;
use crate::scheduler::waiting::{Changes, WAKE_CAPACITY, Waits, wake_waiting};
use crate::shared::{Change, Reflectors};
use crate::store::Store;
use crate::work_queue::{Attempt, QueueConfig};

/// Why a scheduling step could not be carried out (the API could not be
/// reached or refused a write); the object is tried again with backoff.
/// Scheduling outcomes (no suitable cluster, ...) are not errors: they are
/// written into the object's status.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// An API request failed.
    #[error(transparent)]
    Api(#[from] krake_client::Error),
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Context {
    pub client: Client,
    pub config: SchedulerConfig,
    pub candidates: Candidates,
    pub applications: Store<Application>,
    pub projects: Store<Project>,
    /// Automatically created clusters seen unused, and since when.
    pub unused_since: Mutex<HashMap<ObjectKey, Instant>>,
    /// Applications no cluster (or cloud) can take yet.
    pub app_waits: Arc<Waits>,
    /// Clusters to be created that no cloud can take yet.
    pub cluster_waits: Arc<Waits>,
}

/// Settings of the [`Scheduler`] (Krake's `scheduler.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// How many objects are scheduled at once (`worker_count`, default 5).
    pub workers: usize,
    /// How often a scheduled application is scheduled again
    /// (`reschedule_after`, default 60 s); also the longest delay between
    /// the periodic attempts of an application or cluster that nothing can
    /// take (see [`application`]).
    pub reschedule_after: Duration,
    /// The weight of staying on the current cluster (`stickiness`, default 0.1).
    pub stickiness: f64,
    /// The TOSCA template of clusters created for applications with
    /// `auto_cluster_create` (`automatic_cluster_creation.tosca_file`,
    /// loaded); `None`: the scheduler creates no clusters.
    pub cluster_tosca: Option<Map<String, Value>>,
    /// How long an automatically created cluster that no application uses
    /// is kept (`automatic_cluster_creation.deletion_retention`, default 600 s).
    pub deletion_retention: Duration,
    /// Metrics providers: query timeout and cache.
    pub providers: ProvidersConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            workers: 5,
            reschedule_after: Duration::from_secs(60),
            stickiness: 0.1,
            cluster_tosca: None,
            deletion_retention: Duration::from_secs(600),
            providers: ProvidersConfig::default(),
        }
    }
}

/// Krake's scheduler.
#[derive(Debug)]
pub struct Scheduler {
    reflectors: Reflectors,
    config: SchedulerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl Scheduler {
    /// A scheduler over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: SchedulerConfig) -> Self {
        Scheduler {
            reflectors: reflectors.clone(),
            config,
            metrics: Metrics::new(),
            leader: None,
        }
    }

    /// Records into `metrics`.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Works only while `leader` is true.
    #[must_use]
    pub fn leader(mut self, leader: watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// Runs until `shutdown`: waits for the first list of every kind it
    /// reads, then runs the three handlers.
    pub async fn run(self, shutdown: CancellationToken) {
        let reflectors = &self.reflectors;
        let client = reflectors.client().clone();
        let clusters = reflectors.subscribe::<Cluster>(None, None);
        let clouds = reflectors.subscribe::<Cloud>(None, None);
        let global_clouds = reflectors.subscribe::<GlobalCloud>(None, None);
        let metrics = reflectors.subscribe::<Metric>(None, None);
        let global_metrics = reflectors.subscribe::<GlobalMetric>(None, None);
        let providers = reflectors.subscribe::<MetricsProvider>(None, None);
        let global_providers = reflectors.subscribe::<GlobalMetricsProvider>(None, None);
        let projects = reflectors.subscribe::<Project>(None, None);
        let applications = Controller::<Application>::new(reflectors, None);
        let app_store = applications.store();
        let fetcher = MetricFetcher {
            metrics: metrics.store.clone(),
            global_metrics: global_metrics.store.clone(),
            providers: providers.store.clone(),
            global_providers: global_providers.store.clone(),
            backends: MetricsProviders::new(self.config.providers.clone()),
        };
        let candidates = Candidates::new(
            clusters.store.clone(),
            clouds.store.clone(),
            global_clouds.store.clone(),
            fetcher,
            client.clone(),
            self.config.providers.cache_ttl,
        );
        // Any change (or missed changes) of a kind the snapshots read, in
        // its namespace (global kinds and relists: everywhere).
        // Only a cluster that can be a candidate (ONLINE, FAILING_METRICS)
        // may give a waiting application a place, and a deleted one never;
        // every change of the other kinds may (a deleted cloud takes its
        // labels from its clusters, which a `!=` constraint may then match).
        let changes = &candidates.changes;
        bump_on(clusters.changes, &shutdown, changes, |cluster, deleted| {
            !deleted
                && !cluster.metadata.is_deleted()
                && matches!(
                    cluster.status.state,
                    ClusterState::Online | ClusterState::FailingMetrics
                )
        });
        bump_on(clouds.changes, &shutdown, changes, |_, _| true);
        bump_on(global_clouds.changes, &shutdown, changes, |_, _| true);
        bump_on(metrics.changes, &shutdown, changes, |_, _| true);
        bump_on(global_metrics.changes, &shutdown, changes, |_, _| true);
        bump_on(providers.changes, &shutdown, changes, |_, _| true);
        bump_on(global_providers.changes, &shutdown, changes, |_, _| true);
        // ... wakes the applications and clusters waiting in that namespace.
        let app_waits = Arc::new(Waits::default());
        let cluster_waits = Arc::new(Waits::default());
        let (wake_apps, _) = broadcast::channel(WAKE_CAPACITY);
        let (wake_clusters, _) = broadcast::channel(WAKE_CAPACITY);
        tokio::spawn(wake_waiting(
            changes.clone(),
            vec![
                (app_waits.clone(), wake_apps.clone()),
                (cluster_waits.clone(), wake_clusters.clone()),
            ],
            shutdown.clone(),
        ));

        let ready = async {
            clusters.store.wait_ready().await?;
            clouds.store.wait_ready().await?;
            global_clouds.store.wait_ready().await?;
            metrics.store.wait_ready().await?;
            global_metrics.store.wait_ready().await?;
            providers.store.wait_ready().await?;
            global_providers.store.wait_ready().await?;
            projects.store.wait_ready().await?;
            app_store.wait_ready().await
        };
        tokio::select! {
            result = ready => if result.is_err() { return },
            () = shutdown.cancelled() => return,
        }

        let context = Arc::new(Context {
            client,
            config: self.config.clone(),
            candidates,
            applications: app_store.clone(),
            projects: projects.store.clone(),
            unused_since: Mutex::default(),
            app_waits,
            cluster_waits,
        });
        let queue = QueueConfig {
            concurrency: self.config.workers.max(1),
            ..QueueConfig::default()
        };
        let config = |name: &str| ControllerConfig {
            queue: queue.clone(),
            ..ControllerConfig::new(name)
        };

        let waiting_apps = app_store.clone();
        let applications = applications
            .config(config("scheduler-applications"))
            .triggered_by(wake_apps)
            .watches::<Cluster>(None, move |cluster: &Cluster| {
                // Applications waiting for this cluster to be created.
                let name = cluster.metadata.name.as_str();
                waiting_apps
                    .filter(|app| {
                        app.metadata.namespace == cluster.metadata.namespace
                            && app.status.auto_cluster_create_started.as_deref() == Some(name)
                    })
                    .iter()
                    .map(|app| ObjectKey::of(app.as_ref()))
                    .collect()
            });
        let unbound = clusters.store.clone();
        let unbound_global = clusters.store.clone();
        let clusters = Controller::<Cluster>::new(reflectors, None)
            .config(config("scheduler-clusters"))
            .triggered_by(wake_clusters)
            .watches::<Cloud>(None, move |cloud: &Cloud| {
                unbound_keys(&unbound, cloud.metadata.namespace.as_deref())
            })
            .watches::<GlobalCloud>(None, move |_: &GlobalCloud| {
                unbound_keys(&unbound_global, None)
            })
            .watches::<Application>(None, |app: &Application| {
                // An application leaving an automatically created cluster.
                app.status
                    .scheduled_to
                    .iter()
                    .chain(app.status.running_on.iter())
                    .filter(|c| c.kind == "Cluster")
                    .map(|c| ObjectKey::new(c.namespace.as_deref(), &c.name))
                    .chain(
                        app.status
                            .auto_cluster_create_started
                            .iter()
                            .map(|name| ObjectKey::new(app.metadata.namespace.as_deref(), name)),
                    )
                    .collect()
            });
        let magnum_store = reflectors.subscribe::<MagnumCluster>(None, None).store;
        let magnum = Controller::<MagnumCluster>::new(reflectors, None)
            .config(config("scheduler-magnum"))
            .watches::<Project>(None, move |project: &Project| {
                magnum_store
                    .filter(|c| {
                        c.status.project.is_none()
                            && c.metadata.namespace == project.metadata.namespace
                    })
                    .iter()
                    .map(|c| ObjectKey::of(c.as_ref()))
                    .collect()
            });
        let (applications, clusters, magnum) = match &self.leader {
            Some(leader) => (
                applications.leader(leader.clone()),
                clusters.leader(leader.clone()),
                magnum.leader(leader.clone()),
            ),
            None => (applications, clusters, magnum),
        };
        tokio::join!(
            applications.metrics(self.metrics.clone()).run(
                application::reconcile,
                error_policy,
                context.clone(),
                shutdown.clone(),
            ),
            clusters.metrics(self.metrics.clone()).run(
                cluster::reconcile,
                error_policy,
                context.clone(),
                shutdown.clone(),
            ),
            magnum.metrics(self.metrics.clone()).run(
                magnum::reconcile,
                error_policy,
                context,
                shutdown.clone(),
            ),
        );
    }
}

/// Krake's retry delay after a scheduling failure: `backoff_delay ×
/// backoff` seconds, at least one. The first periodic attempt of a waiting
/// object comes after it; later ones back off further (see
/// [`application`]).
pub(crate) fn retry_delay(backoff_delay: i64, backoff: i64) -> Duration {
    Duration::from_secs(
        u64::try_from(backoff_delay.saturating_mul(backoff))
            .unwrap_or(1)
            .max(1),
    )
}

/// Unbound clusters to be created of `namespace` (`None`: all).
fn unbound_keys(clusters: &Store<Cluster>, namespace: Option<&str>) -> Vec<ObjectKey> {
    clusters
        .filter(|c| {
            (namespace.is_none() || c.metadata.namespace.as_deref() == namespace)
                && c.spec.kubeconfig.is_empty()
                && bound_cloud(c).is_none()
        })
        .iter()
        .map(|c| ObjectKey::of(c.as_ref()))
        .collect()
}

/// After an API failure: the queue's exponential backoff (its
/// [`BackoffPolicy`](crate::work_queue::BackoffPolicy), 0.5 s doubling up
/// to 5 minutes, with jitter), so a failure that repeats is never retried in
/// a tight loop.
fn error_policy<K>(
    object: Arc<K>,
    error: &SchedulerError,
    attempt: Attempt,
    _: Arc<Context>,
) -> Action
where
    K: Resource,
{
    let metadata = object.metadata();
    tracing::warn!(
        kind = K::INFO.kind,
        namespace = metadata.namespace.as_deref().unwrap_or(""),
        name = %metadata.name,
        retries = attempt.retries,
        error = %error,
        "scheduling step failed; trying again"
    );
    Action::await_change()
}

/// Counts every change of `changes` in its namespace (a global kind's
/// changes and missed changes everywhere) until `stop`; wakes the waiting
/// objects there when `wakes(object, deleted)` holds for the changed
/// object (always after missed changes).
fn bump_on<K: Resource>(
    changes: broadcast::Receiver<Change<K>>,
    stop: &CancellationToken,
    counters: &Arc<Changes>,
    wakes: fn(&K, bool) -> bool,
) {
    let counters = counters.clone();
    tokio::spawn(follow(changes, stop.clone(), move |change| match change {
        Change::Applied(object) => counters.bump(
            object.metadata().namespace.as_deref(),
            wakes(&object, false),
        ),
        Change::Deleted(object) => {
            counters.bump(object.metadata().namespace.as_deref(), wakes(&object, true))
        }
        Change::Restarted => counters.bump(None, true),
    }));
}
