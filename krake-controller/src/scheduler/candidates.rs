//! The candidates of a namespace: its usable clusters and the clouds an
//! application of it may get a cluster on, with their effective labels and
//! fetched metrics, kept as a snapshot that every scheduling decision of the
//! namespace reuses until something it depends on changes or its metrics
//! are older than the provider cache's TTL.
//!
//! Building a snapshot is also where the scheduler observes metrics: a
//! cluster or cloud whose metrics fail is set to `FAILING_METRICS` with
//! `status.metrics_reasons`, and set back to `ONLINE` after a fetch without
//! failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use krake_client::{Api, Client};
use krake_data::kinds::core::MetricRef;
use krake_data::kinds::infrastructure::{Cloud, CloudState, CloudStatus, GlobalCloud};
use krake_data::kinds::kubernetes::{Cluster, ClusterState};
use krake_data::metadata::Labels;
use krake_data::registry::HasStatus;
use krake_data::{Resource, ResourceRef};

use crate::scheduler::fetch::{Fetched, MetricFetcher};
use crate::scheduler::placement::{Candidate, CandidateKind, CandidateSet};
use crate::scheduler::waiting::Changes;
use crate::store::Store;

/// The candidates of one namespace at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    built: Instant,
    generation: u64,
    /// Clusters of the namespace that are not deleted and ONLINE (or
    /// FAILING_METRICS, ranked without metrics).
    pub clusters: CandidateSet,
    /// Namespaced clouds of the namespace, then every global cloud.
    pub clouds: CandidateSet,
}

/// Builds and caches [`Snapshot`]s.
#[derive(Debug)]
pub(crate) struct Candidates {
    pub clusters: Store<Cluster>,
    pub clouds: Store<Cloud>,
    pub global_clouds: Store<GlobalCloud>,
    pub fetcher: MetricFetcher,
    pub client: Client,
    /// Counts the changes of the kinds a snapshot depends on, per
    /// namespace.
    pub changes: Arc<Changes>,
    pub ttl: Duration,
    cache: Mutex<HashMap<String, Arc<Snapshot>>>,
    /// One lock per namespace, so that a slow provider in one namespace
    /// does not hold up the decisions of the others.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The cloud a cluster is bound to, if any.
pub(crate) fn bound_cloud(cluster: &Cluster) -> Option<&ResourceRef> {
    cluster
        .status
        .scheduled_to
        .as_ref()
        .or(cluster.status.running_on.as_ref())
        .filter(|r| r.api == "infrastructure" && (r.kind == "Cloud" || r.kind == "GlobalCloud"))
}

/// A cloud of either kind.
enum AnyCloud {
    Namespaced(Arc<Cloud>),
    Global(Arc<GlobalCloud>),
}

impl AnyCloud {
    fn labels(&self) -> &Labels {
        match self {
            AnyCloud::Namespaced(c) => &c.metadata.labels,
            AnyCloud::Global(c) => &c.metadata.labels,
        }
    }
}

impl Candidates {
    pub fn new(
        clusters: Store<Cluster>,
        clouds: Store<Cloud>,
        global_clouds: Store<GlobalCloud>,
        fetcher: MetricFetcher,
        client: Client,
        ttl: Duration,
    ) -> Self {
        Candidates {
            clusters,
            clouds,
            global_clouds,
            fetcher,
            client,
            changes: Arc::default(),
            ttl,
            cache: Mutex::default(),
            building: Mutex::default(),
        }
    }

    fn cached(&self, namespace: &str) -> Option<Arc<Snapshot>> {
        let generation = self.changes.of(namespace);
        let cache = self.cache.lock().ok()?;
        cache
            .get(namespace)
            .filter(|s| s.generation == generation && s.built.elapsed() < self.ttl)
            .cloned()
    }

    /// The snapshot of `namespace`, built if the cached one is stale.
    pub async fn snapshot(&self, namespace: &str) -> Arc<Snapshot> {
        if let Some(snapshot) = self.cached(namespace) {
            return snapshot;
        }
        let lock = match self.building.lock() {
            Ok(mut locks) => locks.entry(namespace.to_owned()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _building = lock.lock().await;
        if let Some(snapshot) = self.cached(namespace) {
            return snapshot;
        }
        let generation = self.changes.of(namespace);
        let snapshot = Arc::new(self.build(namespace, generation).await);
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, s| s.built.elapsed() < self.ttl);
            cache.insert(namespace.to_owned(), snapshot.clone());
        }
        snapshot
    }

    fn cloud_of(&self, cluster: &Cluster) -> Option<AnyCloud> {
        let cloud = bound_cloud(cluster)?;
        if cloud.kind == "GlobalCloud" {
            self.global_clouds
                .get(None, &cloud.name)
                .map(AnyCloud::Global)
        } else {
            self.clouds
                .get(cloud.namespace.as_deref(), &cloud.name)
                .map(AnyCloud::Namespaced)
        }
    }

    async fn build(&self, namespace: &str, generation: u64) -> Snapshot {
        let clusters = self.clusters.filter(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && !c.metadata.is_deleted()
                && matches!(
                    c.status.state,
                    ClusterState::Online | ClusterState::FailingMetrics
                )
        });
        let clusters = join_all(clusters.into_iter().map(|c| self.cluster_candidate(c))).await;
        let mut clouds: Vec<AnyCloud> = self
            .clouds
            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
            .into_iter()
            .map(AnyCloud::Namespaced)
            .collect();
        clouds.extend(self.global_clouds.list().into_iter().map(AnyCloud::Global));
        let clouds = join_all(
            clouds
                .into_iter()
                .filter(|c| match c {
                    AnyCloud::Namespaced(c) => !c.metadata.is_deleted(),
                    AnyCloud::Global(c) => !c.metadata.is_deleted(),
                })
                .map(|c| self.cloud_candidate(c)),
        )
        .await;
        Snapshot {
            built: Instant::now(),
            generation,
            clusters: CandidateSet::new(clusters),
            clouds: CandidateSet::new(clouds),
        }
    }

    async fn cluster_candidate(&self, cluster: Arc<Cluster>) -> Candidate {
        let namespace = cluster.metadata.namespace.as_deref();
        let cloud = self.cloud_of(&cluster);
        let mut labels = cluster.metadata.labels.clone();
        if cluster.metadata.inherit_labels
            && let Some(cloud) = &cloud
        {
            for (key, value) in cloud.labels() {
                labels.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        let mut fetched = self.fetcher.fetch(&cluster.spec.metrics, namespace).await;
        if cluster.spec.inherit_metrics {
            match &cloud {
                Some(AnyCloud::Namespaced(c)) => fetched.extend(
                    self.fetcher
                        .fetch(c.spec.metrics(), c.metadata.namespace.as_deref())
                        .await,
                ),
                Some(AnyCloud::Global(c)) => {
                    fetched.extend(self.fetcher.fetch(c.spec.metrics(), None).await)
                }
                None => {}
            }
        }
        self.observe_cluster(&cluster, &fetched).await;
        candidate(
            ResourceRef::of(cluster.as_ref()),
            CandidateKind::Cluster,
            labels,
            cluster.spec.custom_resources.clone(),
            fetched,
        )
    }

    async fn cloud_candidate(&self, cloud: AnyCloud) -> Candidate {
        match cloud {
            AnyCloud::Namespaced(cloud) => {
                self.observed_cloud(cloud.as_ref(), cloud.spec.metrics())
                    .await
            }
            AnyCloud::Global(cloud) => {
                self.observed_cloud(cloud.as_ref(), cloud.spec.metrics())
                    .await
            }
        }
    }

    /// Fetches a cloud's metrics, records FAILING_METRICS or ONLINE, and
    /// makes it a candidate.
    async fn observed_cloud<K: HasStatus<Status = CloudStatus>>(
        &self,
        cloud: &K,
        metrics: &[MetricRef],
    ) -> Candidate {
        let metadata = cloud.metadata();
        let fetched = self
            .fetcher
            .fetch(metrics, metadata.namespace.as_deref())
            .await;
        if let Some(status) = observed_cloud(cloud.status(), &fetched) {
            let mut updated = cloud.clone();
            *updated.status_mut() = status;
            let api: Api<K> = Api::all(self.client.clone());
            write_status(api.status(&updated).await, cloud);
        }
        candidate(
            ResourceRef::of(cloud),
            CandidateKind::Cloud,
            metadata.labels.clone(),
            Vec::new(),
            fetched,
        )
    }

    /// Sets FAILING_METRICS or back to ONLINE when the fetch says so.
    async fn observe_cluster(&self, cluster: &Cluster, fetched: &Fetched) {
        let status = &cluster.status;
        let (state, reasons) = if fetched.failures.is_empty() {
            if status.state != ClusterState::FailingMetrics {
                return;
            }
            (ClusterState::Online, Default::default())
        } else {
            if status.state == ClusterState::FailingMetrics
                && status.metrics_reasons == fetched.failures
            {
                return;
            }
            (ClusterState::FailingMetrics, fetched.failures.clone())
        };
        let mut updated = cluster.clone();
        updated.status.state = state;
        updated.status.metrics_reasons = reasons;
        let api: Api<Cluster> = Api::all(self.client.clone());
        write_status(api.status(&updated).await, cluster);
    }
}

/// The cloud status a fetch calls for, if it differs from `status`.
fn observed_cloud(status: &CloudStatus, fetched: &Fetched) -> Option<CloudStatus> {
    let wanted = if fetched.failures.is_empty() {
        CloudStatus {
            state: CloudState::Online,
            metrics_reasons: Default::default(),
        }
    } else {
        CloudStatus {
            state: CloudState::FailingMetrics,
            metrics_reasons: fetched.failures.clone(),
        }
    };
    (wanted != *status).then_some(wanted)
}

/// Logs the outcome of a status write made while observing metrics (a
/// failed one is tried again at the next snapshot).
pub(crate) fn write_status<K: Resource, T>(result: krake_client::Result<T>, object: &K) {
    let metadata = object.metadata();
    match result {
        Ok(_) => tracing::info!(
            kind = K::INFO.kind,
            namespace = metadata.namespace.as_deref().unwrap_or(""),
            name = %metadata.name,
            "metrics state changed"
        ),
        Err(err) => tracing::warn!(
            kind = K::INFO.kind,
            namespace = metadata.namespace.as_deref().unwrap_or(""),
            name = %metadata.name,
            error = %err,
            "cannot record the metrics state"
        ),
    }
}

/// A candidate with the fetched metrics, or without metrics when any failed.
pub(crate) fn candidate(
    target: ResourceRef,
    kind: CandidateKind,
    labels: Labels,
    custom_resources: Vec<String>,
    fetched: Fetched,
) -> Candidate {
    let candidate = Candidate::new(target, kind, labels, custom_resources);
    if fetched.failures.is_empty() {
        candidate.with_metrics(fetched.values)
    } else {
        candidate
    }
}
