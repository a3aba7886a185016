//! Krake's infrastructure controller (feature `infrastructure`): clusters
//! created on clouds through an infrastructure provider (the
//! Infrastructure Manager, IM).
//!
//! A Cluster the scheduler bound to a Cloud or GlobalCloud
//! (`status.scheduled_to`) with a TOSCA template (`spec.tosca`) is created
//! through the cloud's provider, polled until configured, and gets the
//! kubeconfig output as `spec.kubeconfig` and the state CONNECTING (the
//! Kubernetes cluster controller takes it to ONLINE). A changed template is
//! an update (scaling up or down); an unconfigured infrastructure is
//! reconfigured; one that vanished is created again; a deleted cluster's
//! infrastructure is deleted before its finalizer
//! (`infrastructure_resources_deletion`) goes. [`reconcile`] has the rules.
//!
//! - [`provider`]: the provider seam ([`InfrastructureProvider`],
//!   [`ProviderFactory`]); another provider is another factory in
//!   [`InfrastructureControllerConfig::factory`].
//! - [`im`]: the IM's REST API, its credential header and its states.
//! - [`reconcile`]: the decisions, without I/O.
//!
//! The provider is the one the cloud names: an InfrastructureProvider of
//! the cloud's namespace when `infrastructure_provider.namespaced` is true,
//! else a GlobalInfrastructureProvider (Krake ignores the flag).
//!
//! Polling is per cluster on the work queue's timers (a requeue after
//! `poll_interval`, or after a backoff when the provider cannot be
//! reached): no worker waits in a sleep, so any number of clusters can be
//! in flight with a few workers. Each decision is taken on the latest
//! object only: a reconcile that sees an older version than the controller
//! last wrote waits for the newer one, and one that comes before the
//! cluster's timer on the version it already acted on waits for the timer,
//! so each provider call happens once per state change.
//!
//! ```no_run
//! # async fn example(client: krake_client::Client) {
//! use krake_controller::infrastructure::{InfrastructureController, InfrastructureControllerConfig};
//! use krake_controller::shared::Reflectors;
//! use tokio_util::sync::CancellationToken;
//!
//! let shutdown = CancellationToken::new();
//! let reflectors = Reflectors::new(client, shutdown.clone());
//! InfrastructureController::new(&reflectors, InfrastructureControllerConfig::default())
//!     .run(shutdown)
//!     .await;
//! # }
//! ```

pub mod im;
pub mod provider;
pub mod reconcile;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krake_client::{Api, Client};
use krake_data::ReasonCode;
use krake_data::kinds::infrastructure::{
    Cloud, CloudSpec, GlobalCloud, GlobalInfrastructureProvider,
    InfrastructureProvider as InfrastructureProviderObject,
};
use krake_data::kinds::kubernetes::{Cluster, ClusterStatus};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use im::{ImFactory, ImProvider};
pub use provider::{
    InfrastructureProvider, InfrastructureState, ProviderError, ProviderFactory, ProviderTarget,
};

use crate::action::Action;
use crate::controller::{Controller, ControllerConfig};
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::shared::Reflectors;
use crate::store::Store;
use crate::work_queue::{Attempt, BackoffPolicy, QueueConfig};
use reconcile::{Next, Plan, Step};

/// Settings of the [`InfrastructureController`] (Krake's
/// `infrastructure.yaml`).
#[derive(Debug, Clone)]
pub struct InfrastructureControllerConfig {
    /// How many clusters are worked on at once (`worker_count`, default 5).
    pub workers: usize,
    /// How often an infrastructure being created, updated or deleted is
    /// polled (`poll_interval`, default 30 s).
    pub poll_interval: Duration,
    /// Retries after the provider could not be reached (DEGRADED): 1 s
    /// doubling up to 60 s, with jitter.
    pub backoff: BackoffPolicy,
    /// Builds the provider of a cloud (default: the IM, 30 s per request).
    pub factory: Arc<dyn ProviderFactory>,
}

impl Default for InfrastructureControllerConfig {
    fn default() -> Self {
        InfrastructureControllerConfig {
            workers: 5,
            poll_interval: Duration::from_secs(30),
            backoff: BackoffPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                factor: 2.0,
                jitter: true,
            },
            factory: Arc::new(ImFactory::default()),
        }
    }
}

/// Why a reconcile failed: a write to the Krake API (tried again with the
/// queue's backoff). Provider failures are not errors: they are the
/// cluster's status.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    /// A request to the Krake API failed.
    #[error("krake api: {0}")]
    Api(#[from] krake_client::Error),
}

/// What the controller remembers of a cluster between reconciles.
#[derive(Debug, Clone, Default)]
struct Memo {
    /// The version of the cluster the last decision was taken on (or
    /// written by it).
    version: Option<u64>,
    /// The cluster's timer: no decision on that same version before it.
    not_before: Option<Instant>,
    /// Provider failures in a row (the backoff).
    failures: u32,
    /// A status decided after a provider call, not written yet (the API
    /// failed): written before anything else is decided.
    unwritten: Option<ClusterStatus>,
}

/// Whether to act on a cluster now.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Go,
    /// The store has not caught up with our last write.
    Stale,
    /// The cluster's timer runs.
    Wait(Duration),
}

/// What the reconciles share.
struct Context {
    client: Client,
    clouds: Store<Cloud>,
    global_clouds: Store<GlobalCloud>,
    providers: Store<InfrastructureProviderObject>,
    global_providers: Store<GlobalInfrastructureProvider>,
    config: InfrastructureControllerConfig,
    memos: Mutex<HashMap<ObjectKey, Memo>>,
}

fn version_of(cluster: &Cluster) -> Option<u64> {
    cluster
        .metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
}

impl Context {
    fn gate(&self, key: &ObjectKey, version: Option<u64>) -> Gate {
        let Ok(memos) = self.memos.lock() else {
            return Gate::Go;
        };
        let Some(memo) = memos.get(key) else {
            return Gate::Go;
        };
        if let (Some(seen), Some(ours)) = (version, memo.version)
            && seen < ours
        {
            return Gate::Stale;
        }
        match memo.not_before {
            Some(due) if version == memo.version => {
                let now = Instant::now();
                if now < due {
                    Gate::Wait(due - now)
                } else {
                    Gate::Go
                }
            }
            _ => Gate::Go,
        }
    }

    fn memo(&self, key: &ObjectKey, update: impl FnOnce(&mut Memo)) {
        if let Ok(mut memos) = self.memos.lock() {
            update(memos.entry(key.clone()).or_default());
        }
    }

    fn forget(&self, key: &ObjectKey) {
        if let Ok(mut memos) = self.memos.lock() {
            memos.remove(key);
        }
    }

    fn unwritten(&self, key: &ObjectKey) -> Option<ClusterStatus> {
        self.memos
            .lock()
            .ok()
            .and_then(|memos| memos.get(key).and_then(|m| m.unwritten.clone()))
    }

    fn api(&self, cluster: &Cluster) -> Api<Cluster> {
        match cluster.metadata.namespace.as_deref() {
            Some(namespace) => Api::namespaced(self.client.clone(), namespace),
            None => Api::all(self.client.clone()),
        }
    }

    /// The provider of the cloud the cluster runs on (or is bound to).
    fn provider(
        &self,
        cluster: &Cluster,
    ) -> Result<Arc<dyn InfrastructureProvider>, ProviderError> {
        let status = &cluster.status;
        let cloud = status
            .running_on
            .as_ref()
            .or(status.scheduled_to.as_ref())
            .ok_or_else(|| ProviderError::Unsupported("the cluster is bound to no cloud".into()))?;
        let missing = |what: String| ProviderError::Missing(format!("{what} does not exist"));
        let (namespace, spec): (Option<&str>, CloudSpec) = match cloud.kind.as_str() {
            "Cloud" => {
                let namespace = cloud
                    .namespace
                    .as_deref()
                    .or(cluster.metadata.namespace.as_deref());
                let found = self.clouds.get(namespace, &cloud.name).ok_or_else(|| {
                    missing(format!(
                        "Cloud {}/{}",
                        namespace.unwrap_or_default(),
                        cloud.name
                    ))
                })?;
                (namespace, found.spec.clone())
            }
            "GlobalCloud" => {
                let found = self
                    .global_clouds
                    .get(None, &cloud.name)
                    .ok_or_else(|| missing(format!("GlobalCloud {}", cloud.name)))?;
                (None, found.spec.clone())
            }
            other => {
                return Err(ProviderError::Unsupported(format!(
                    "clusters cannot be created on a {other}"
                )));
            }
        };
        let wanted = spec.infrastructure_provider();
        let provider = if wanted.namespaced {
            let Some(namespace) = namespace else {
                return Err(ProviderError::Unsupported(format!(
                    "GlobalCloud {} names a namespaced infrastructure provider",
                    cloud.name
                )));
            };
            self.providers
                .get(Some(namespace), &wanted.name)
                .map(|p| p.spec.clone())
                .ok_or_else(|| {
                    missing(format!(
                        "InfrastructureProvider {namespace}/{}",
                        wanted.name
                    ))
                })?
        } else {
            self.global_providers
                .get(None, &wanted.name)
                .map(|p| p.spec.clone())
                .ok_or_else(|| missing(format!("GlobalInfrastructureProvider {}", wanted.name)))?
        };
        self.config.factory.provider(ProviderTarget {
            provider_name: &wanted.name,
            provider: &provider,
            cloud_name: &cloud.name,
            cloud: &spec,
        })
    }
}

/// The fields of the status that belong to this controller, from `ours`
/// onto `status`.
fn merge(status: &mut ClusterStatus, ours: &ClusterStatus) {
    status.state = ours.state;
    status.reason.clone_from(&ours.reason);
    status.cluster_id.clone_from(&ours.cluster_id);
    status.running_on.clone_from(&ours.running_on);
    status
        .last_applied_tosca
        .clone_from(&ours.last_applied_tosca);
    status.retries = ours.retries;
}

/// Writes our fields of `status` on `cluster`: on a conflict (someone
/// wrote meanwhile) onto the latest version.
async fn write_status(
    cx: &Context,
    cluster: &Cluster,
    status: &ClusterStatus,
) -> Result<Cluster, krake_client::Error> {
    let api = cx.api(cluster);
    let mut current = cluster.clone();
    let mut attempts = 0;
    loop {
        merge(&mut current.status, status);
        match api.status(&current).await {
            Err(err) if err.is_conflict() && attempts < 3 => {
                attempts += 1;
                current = api.get(&cluster.metadata.name).await?;
            }
            other => return other,
        }
    }
}

/// Puts `kubeconfig` into the cluster's spec (onto the latest version on a
/// conflict).
async fn write_kubeconfig(
    cx: &Context,
    cluster: &Cluster,
    kubeconfig: &serde_json::Map<String, serde_json::Value>,
) -> Result<Cluster, krake_client::Error> {
    let api = cx.api(cluster);
    let mut current = cluster.clone();
    let mut attempts = 0;
    loop {
        current.spec.kubeconfig.clone_from(kubeconfig);
        match api.update(&current).await {
            Err(err) if err.is_conflict() && attempts < 3 => {
                attempts += 1;
                current = api.get(&cluster.metadata.name).await?;
            }
            other => return other,
        }
    }
}

/// The provider failed before it was asked anything (cloud or provider
/// object missing, unusable credentials).
fn no_provider(cluster: &Cluster, err: ProviderError) -> Step {
    let mut status = cluster.status.clone();
    let transient = err.is_transient();
    status.state = if transient && cluster.metadata.is_deleted() {
        status.state
    } else if transient {
        krake_data::kinds::kubernetes::ClusterState::Degraded
    } else {
        krake_data::kinds::kubernetes::ClusterState::Failed
    };
    let code = if cluster.metadata.is_deleted() {
        ReasonCode::DeleteFailed
    } else {
        ReasonCode::NotFound
    };
    status.reason = Some(krake_data::Reason::new(code, err.to_string()));
    Step {
        status,
        kubeconfig: None,
        next: if transient { Next::Retry } else { Next::Idle },
    }
}

/// One cluster.
async fn reconcile(cluster: Arc<Cluster>, cx: Arc<Context>) -> Result<Action, InfrastructureError> {
    let key = ObjectKey::of(cluster.as_ref());
    match cx.gate(&key, version_of(&cluster)) {
        Gate::Go => {}
        Gate::Stale => return Ok(Action::await_change()),
        Gate::Wait(left) => return Ok(Action::requeue(left)),
    }
    if let Some(unwritten) = cx.unwritten(&key) {
        let written = write_status(&cx, &cluster, &unwritten).await?;
        cx.memo(&key, |memo| {
            memo.unwritten = None;
            memo.version = version_of(&written);
            memo.not_before = None;
        });
        return Ok(Action::await_change());
    }
    let plan = reconcile::plan(&cluster);
    let mut cluster = (*cluster).clone();
    match plan {
        Plan::Ignore | Plan::Idle | Plan::WaitForOthers => {
            cx.forget(&key);
            return Ok(Action::await_change());
        }
        Plan::Release => {
            tracing::info!(cluster = %key.name, "infrastructure gone; removing the finalizer");
            cluster.metadata.finalizers.pop();
            match cx.api(&cluster).update(&cluster).await {
                Ok(_) => {}
                Err(err) if err.is_not_found() => {}
                Err(err) => return Err(err.into()),
            }
            cx.forget(&key);
            return Ok(Action::await_change());
        }
        _ => {}
    }
    let step = match cx.provider(&cluster) {
        Err(err) => no_provider(&cluster, err),
        Ok(provider) => {
            if plan == Plan::Create
                && !cluster
                    .metadata
                    .finalizers
                    .iter()
                    .any(|f| f == reconcile::FINALIZER)
            {
                cluster
                    .metadata
                    .finalizers
                    .push(reconcile::FINALIZER.to_owned());
                cluster = cx.api(&cluster).update(&cluster).await?;
                cx.memo(&key, |memo| memo.version = version_of(&cluster));
            }
            act(&cluster, plan, provider.as_ref()).await
        }
    };
    let mut written = false;
    if let Some(kubeconfig) = &step.kubeconfig {
        cluster = write_kubeconfig(&cx, &cluster, kubeconfig).await?;
        written = true;
    }
    if step.status != cluster.status {
        match write_status(&cx, &cluster, &step.status).await {
            Ok(updated) => {
                cluster = updated;
                written = true;
            }
            Err(err) => {
                cx.memo(&key, |memo| memo.unwritten = Some(step.status.clone()));
                return Err(err.into());
            }
        }
    }
    let version = version_of(&cluster);
    let now = Instant::now();
    let action = match step.next {
        Next::Poll => {
            let after = cx.config.poll_interval;
            cx.memo(&key, |memo| {
                memo.version = version;
                memo.not_before = Some(now + after);
                memo.failures = 0;
            });
            Action::requeue(after)
        }
        Next::Retry => {
            let mut after = Duration::ZERO;
            cx.memo(&key, |memo| {
                memo.failures = memo.failures.saturating_add(1);
                after = cx.config.backoff.delay(memo.failures);
                memo.version = version;
                memo.not_before = Some(now + after);
            });
            Action::requeue(after)
        }
        Next::Again | Next::FetchKubeconfig => {
            cx.memo(&key, |memo| {
                memo.version = version;
                memo.not_before = None;
                memo.failures = 0;
            });
            if written {
                // The event of our write brings the next decision.
                Action::await_change()
            } else {
                Action::requeue(Duration::ZERO)
            }
        }
        Next::Idle => {
            // The version is kept: the events of our earlier writes, still
            // on their way, must not be acted on.
            cx.memo(&key, |memo| {
                memo.version = version;
                memo.not_before = None;
                memo.failures = 0;
            });
            Action::await_change()
        }
    };
    Ok(action)
}

/// The provider calls of `plan` and the step they lead to.
async fn act(cluster: &Cluster, plan: Plan, provider: &dyn InfrastructureProvider) -> Step {
    let name = &cluster.metadata.name;
    let id = cluster.status.cluster_id.clone().unwrap_or_default();
    let template = || {
        reconcile::template_text(&cluster.spec.tosca).map_err(|err| {
            ProviderError::InvalidAnswer(format!("the template cannot be written as YAML: {err}"))
        })
    };
    match plan {
        Plan::Create => {
            let result = match template() {
                Ok(text) => provider.create(&text).await,
                Err(err) => Err(err),
            };
            match &result {
                Ok(id) => {
                    tracing::info!(cluster = %name, id = %id, "infrastructure creation started")
                }
                Err(err) => {
                    tracing::warn!(cluster = %name, error = %err, "infrastructure creation failed")
                }
            }
            reconcile::after_create(cluster, result)
        }
        Plan::Update => {
            let result = match template() {
                Ok(text) => provider.update(&id, &text).await,
                Err(err) => Err(err),
            };
            tracing::info!(cluster = %name, id = %id, ok = result.is_ok(), "infrastructure update");
            reconcile::after_update(cluster, result)
        }
        Plan::Reconfigure => {
            if !reconcile::may_reconfigure(cluster) {
                return reconcile::reconfigurations_exhausted(cluster);
            }
            let result = provider.reconfigure(&id).await;
            tracing::info!(cluster = %name, id = %id, ok = result.is_ok(), "infrastructure reconfiguration");
            reconcile::after_reconfigure(cluster, result)
        }
        Plan::Poll => {
            let step = reconcile::after_poll(cluster, provider.state(&id).await);
            if step.next != Next::FetchKubeconfig {
                return step;
            }
            tracing::info!(cluster = %name, id = %id, "infrastructure configured");
            reconcile::after_kubeconfig(cluster, provider.kubeconfig(&id).await)
        }
        Plan::Delete => {
            let result = provider.delete(&id).await;
            tracing::info!(cluster = %name, id = %id, ok = result.is_ok(), "infrastructure deletion");
            reconcile::after_delete(cluster, result)
        }
        Plan::PollDeletion => reconcile::after_deletion_poll(cluster, provider.state(&id).await),
        Plan::Ignore | Plan::Idle | Plan::WaitForOthers | Plan::Release => Step {
            status: cluster.status.clone(),
            kubeconfig: None,
            next: Next::Idle,
        },
    }
}

/// After a failed API write: the queue's exponential backoff.
fn error_policy(
    cluster: Arc<Cluster>,
    error: &InfrastructureError,
    attempt: Attempt,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(
        cluster = %cluster.metadata.name,
        retries = attempt.retries,
        error = %error,
        "cluster update failed; trying again"
    );
    Action::await_change()
}

/// The infrastructure controller; see the module docs.
#[derive(Debug)]
pub struct InfrastructureController {
    reflectors: Reflectors,
    config: InfrastructureControllerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl InfrastructureController {
    /// A controller over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: InfrastructureControllerConfig) -> Self {
        InfrastructureController {
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

    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let reflectors = &self.reflectors;
        let clouds = reflectors.subscribe::<Cloud>(None, None).store;
        let global_clouds = reflectors.subscribe::<GlobalCloud>(None, None).store;
        let providers = reflectors
            .subscribe::<InfrastructureProviderObject>(None, None)
            .store;
        let global_providers = reflectors
            .subscribe::<GlobalInfrastructureProvider>(None, None)
            .store;
        let clusters = Controller::<Cluster>::new(reflectors, None);
        let ready = async {
            clouds.wait_ready().await?;
            global_clouds.wait_ready().await?;
            providers.wait_ready().await?;
            global_providers.wait_ready().await
        };
        tokio::select! {
            result = ready => if result.is_err() { return },
            () = shutdown.cancelled() => return,
        }
        let workers = self.config.workers.max(1);
        let context = Arc::new(Context {
            client: reflectors.client().clone(),
            clouds,
            global_clouds,
            providers,
            global_providers,
            config: self.config,
            memos: Mutex::new(HashMap::new()),
        });
        let controller = clusters
            .config(ControllerConfig {
                queue: QueueConfig {
                    concurrency: workers,
                    ..QueueConfig::default()
                },
                ..ControllerConfig::new("infrastructure")
            })
            .metrics(self.metrics.clone());
        let controller = match &self.leader {
            Some(leader) => controller.leader(leader.clone()),
            None => controller,
        };
        controller
            .run(reconcile, error_policy, context, shutdown)
            .await;
    }
}
