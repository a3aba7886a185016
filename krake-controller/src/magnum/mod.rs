//! Krake's Magnum controller (feature `magnum`; deprecated in Krake, kept
//! small): Kubernetes clusters created through OpenStack Magnum for
//! MagnumClusters the scheduler bound to a Project, and a Krake `Cluster`
//! for each.
//!
//! Only bound MagnumClusters (`status.project` set) are handled; FAILED
//! ones are left alone until they are deleted. Krake's states:
//!
//! - PENDING → CREATING: `status.cluster` gets the forward reference to the
//!   Krake Cluster to come (`<name>-<7 random characters>`, as Krake), the
//!   template's COE must be `kubernetes` (else FAILED,
//!   INVALID_CLUSTER_TEMPLATE), Magnum creates the cluster and
//!   `status.cluster_id` keeps its uuid;
//! - CREATING and RECONCILING poll Magnum every `poll_interval` (the
//!   runtime's requeue, no worker waits): `*_COMPLETE` → RUNNING with
//!   `node_count`, `api_address` and the addresses; CREATE_FAILED →
//!   FAILED CREATE_FAILED, UPDATE_FAILED → FAILED RECONCILE_FAILED; gone
//!   from Magnum → PENDING again (created anew);
//! - RUNNING with `spec.node_count` ≠ `status.node_count` → RECONCILING and
//!   a resize (`POST /v1/clusters/{id}/actions/resize`);
//! - RUNNING: the Krake Cluster `status.cluster` exists with an admin
//!   kubeconfig (a fresh key, a CSR `CN=admin, O=system:masters` signed
//!   through Magnum, the cluster CA from Magnum), the MagnumCluster's labels
//!   and metrics copied and the MagnumCluster as its owner. It is
//!   rewritten when its server is no longer the cluster's `api_address`.
//!
//! Deletion: the finalizer `magnum_cluster_deletion` (added while the
//! cluster lives) is handled at the tail of the stack: Magnum delete, state
//! DELETING, polled until Magnum answers 404 (DELETE_FAILED → FAILED
//! DELETE_FAILED, tried again after `poll_interval`), then the finalizer is
//! removed. The Krake Cluster goes with its owner through the garbage
//! collector (`cascade_deletion` runs before this finalizer), as in Krake.
//!
//! Errors: Keystone or Magnum unreachable, 5xx, 429 or 409 and Krake API
//! failures are tried again with the queue's backoff, never FAILED; other
//! OpenStack errors (wrong credentials, a template that does not exist)
//! make the cluster FAILED with OPENSTACK_ERROR and the service's message.
//! Credentials and tokens are in no log, status or error.
//!
//! Differences from Krake: Krake polls in a sleeping worker; it checks an
//! existing kubeconfig by listing nodes (here: by its server).

pub mod openstack;

use std::sync::Arc;
use std::time::Duration;

use krake_client::{Api, Client};
use krake_data::kinds::kubernetes::{Cluster, ClusterCloudConstraints};
use krake_data::kinds::openstack::{
    MAGNUM_CLUSTER_DELETION_FINALIZER, MagnumCluster, MagnumClusterState, Project,
};
use krake_data::{Reason, ReasonCode, ResourceRef};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::action::Action;
use crate::controller::{Controller, ControllerConfig};
use crate::metrics::Metrics;
use crate::shared::Reflectors;
use crate::work_queue::{Attempt, QueueConfig};

pub use openstack::{ClusterInfo, Magnum, OpenStack, OpenStackError};

/// Settings of the [`MagnumController`] (Krake's `magnum.yaml`).
#[derive(Debug, Clone)]
pub struct MagnumControllerConfig {
    /// How many Magnum clusters are worked on at once (`worker_count`,
    /// default 5).
    pub workers: usize,
    /// How often a cluster under creation, resize or deletion is looked at
    /// (`poll_interval`, default 30 s).
    pub poll_interval: Duration,
    /// How long one request to Keystone or Magnum may take (default 30 s).
    pub request_timeout: Duration,
}

impl Default for MagnumControllerConfig {
    fn default() -> Self {
        MagnumControllerConfig {
            workers: 5,
            poll_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum MagnumError {
    /// A request to the Krake API failed (tried again).
    #[error("krake api: {0}")]
    Api(#[from] krake_client::Error),
    /// A request to Keystone or Magnum failed.
    #[error("openstack: {0}")]
    OpenStack(#[from] OpenStackError),
    /// The cluster cannot be made: it becomes FAILED with this reason.
    #[error("{message}")]
    Failed {
        /// The reason's code.
        code: ReasonCode,
        /// The reason's message.
        message: String,
    },
    /// Making the client certificate failed.
    #[error("client certificate: {0}")]
    Certificate(String),
}

impl MagnumError {
    /// The reason of a FAILED cluster, if this error makes it FAILED.
    fn reason(&self) -> Option<Reason> {
        match self {
            MagnumError::Failed { code, message } => Some(Reason::new(*code, message.clone())),
            MagnumError::OpenStack(err) if !err.is_transient() => {
                Some(Reason::new(ReasonCode::OpenstackError, err.to_string()))
            }
            _ => None,
        }
    }
}

/// What the reconciles share.
struct Context {
    client: Client,
    openstack: OpenStack,
    poll_interval: Duration,
}

/// The Magnum controller; see the module docs.
#[derive(Debug)]
pub struct MagnumController {
    reflectors: Reflectors,
    config: MagnumControllerConfig,
    metrics: Metrics,
    leader: Option<watch::Receiver<bool>>,
}

impl MagnumController {
    /// A controller over the shared reflectors of the process.
    pub fn new(reflectors: &Reflectors, config: MagnumControllerConfig) -> Self {
        MagnumController {
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
        let context = Arc::new(Context {
            client: self.reflectors.client().clone(),
            openstack: OpenStack::new(self.config.request_timeout),
            poll_interval: self.config.poll_interval,
        });
        let controller = Controller::<MagnumCluster>::new(&self.reflectors, None)
            .config(ControllerConfig {
                queue: QueueConfig {
                    concurrency: self.config.workers.max(1),
                    ..QueueConfig::default()
                },
                ..ControllerConfig::new("magnum")
            })
            .owns::<Cluster>(None)
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

/// After a failure that is tried again: the queue's backoff.
fn error_policy(
    cluster: Arc<MagnumCluster>,
    error: &MagnumError,
    attempt: Attempt,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(
        magnum_cluster = %cluster.metadata.name,
        retries = attempt.retries,
        error = %error,
        "magnum cluster: trying again"
    );
    Action::await_change()
}

/// Seven random lowercase letters and digits (Krake's `randstr`).
fn random_suffix() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..7)
        .map(|_| char::from(CHARS[fastrand::usize(..CHARS.len())]))
        .collect()
}

/// The Magnum name of a cluster: `<namespace>-<name>-<random>`, characters
/// Magnum refuses replaced by `_`.
fn magnum_name(cluster: &MagnumCluster) -> String {
    let raw = format!(
        "{}-{}-{}",
        cluster.metadata.namespace.as_deref().unwrap_or_default(),
        cluster.metadata.name,
        random_suffix()
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One MagnumCluster.
async fn reconcile(cluster: Arc<MagnumCluster>, cx: Arc<Context>) -> Result<Action, MagnumError> {
    let Some(namespace) = cluster.metadata.namespace.clone() else {
        return Ok(Action::await_change());
    };
    let api: Api<MagnumCluster> = Api::namespaced(cx.client.clone(), &namespace);
    if cluster.metadata.is_deleted() {
        if cluster.metadata.tail_finalizer() != Some(MAGNUM_CLUSTER_DELETION_FINALIZER) {
            return Ok(Action::await_change());
        }
        let mut current = (*cluster).clone();
        return match cleanup(&mut current, &api, &cx).await {
            Ok(Some(again)) => Ok(Action::requeue(again)),
            Ok(None) => {
                current.metadata.finalizers.pop();
                match api.update(&current).await {
                    Ok(_) => {}
                    Err(err) if err.is_not_found() => {}
                    Err(err) => return Err(err.into()),
                }
                tracing::info!(magnum_cluster = %current.metadata.name, "magnum cluster deleted");
                Ok(Action::await_change())
            }
            Err(err) => match err.reason() {
                Some(reason) => {
                    fail(&api, &mut current, reason).await?;
                    // Krake tries a failed deletion again after the poll
                    // interval.
                    Ok(Action::requeue(cx.poll_interval))
                }
                None => Err(err),
            },
        };
    }
    if cluster.status.project.is_none() || cluster.status.state == MagnumClusterState::Failed {
        return Ok(Action::await_change());
    }
    let mut current = (*cluster).clone();
    if !current
        .metadata
        .finalizers
        .iter()
        .any(|f| f == MAGNUM_CLUSTER_DELETION_FINALIZER)
    {
        current
            .metadata
            .finalizers
            .push(MAGNUM_CLUSTER_DELETION_FINALIZER.to_owned());
        current = api.update(&current).await?;
    }
    match apply(&mut current, &api, &cx).await {
        Ok(action) => Ok(action),
        Err(err) => match err.reason() {
            Some(reason) => {
                fail(&api, &mut current, reason).await?;
                Ok(Action::await_change())
            }
            None => Err(err),
        },
    }
}

/// Writes FAILED with `reason`.
async fn fail(
    api: &Api<MagnumCluster>,
    cluster: &mut MagnumCluster,
    reason: Reason,
) -> Result<(), MagnumError> {
    tracing::warn!(
        magnum_cluster = %cluster.metadata.name,
        code = ?reason.code,
        message = %reason.message,
        "magnum cluster failed"
    );
    cluster.status.state = MagnumClusterState::Failed;
    cluster.status.reason = Some(reason);
    *cluster = api.status(cluster).await?;
    Ok(())
}

/// Writes the status of `cluster` and keeps what the API answered.
async fn write_status(
    api: &Api<MagnumCluster>,
    cluster: &mut MagnumCluster,
) -> Result<(), MagnumError> {
    *cluster = api.status(cluster).await?;
    Ok(())
}

/// The project `cluster` is bound to and a Magnum session in it.
async fn session(cluster: &MagnumCluster, cx: &Context) -> Result<Option<Magnum>, MagnumError> {
    let Some(reference) = &cluster.status.project else {
        return Ok(None);
    };
    let namespace = reference
        .namespace
        .as_deref()
        .or(cluster.metadata.namespace.as_deref())
        .unwrap_or_default();
    let project = match Api::<Project>::namespaced(cx.client.clone(), namespace)
        .get(&reference.name)
        .await
    {
        Ok(project) => project,
        Err(err) if err.is_not_found() => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    Ok(Some(
        cx.openstack
            .authenticate(&project.spec.url, &project.spec.auth)
            .await?,
    ))
}

/// A session, or FAILED when the project is gone.
async fn live_session(cluster: &MagnumCluster, cx: &Context) -> Result<Magnum, MagnumError> {
    session(cluster, cx)
        .await?
        .ok_or_else(|| MagnumError::Failed {
            code: ReasonCode::OpenstackError,
            message: format!(
                "the project {} does not exist",
                cluster
                    .status
                    .project
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default()
            ),
        })
}

/// A living, bound cluster with our finalizer.
async fn apply(
    cluster: &mut MagnumCluster,
    api: &Api<MagnumCluster>,
    cx: &Context,
) -> Result<Action, MagnumError> {
    let name = cluster.metadata.name.clone();
    match (cluster.status.state, cluster.status.cluster_id.clone()) {
        (MagnumClusterState::Pending, _)
        | (MagnumClusterState::Creating | MagnumClusterState::Reconciling, None) => {
            cluster.status.state = MagnumClusterState::Creating;
            if cluster.status.cluster.is_none() {
                cluster.status.cluster = Some(ResourceRef {
                    api: "kubernetes".into(),
                    kind: "Cluster".into(),
                    name: format!("{name}-{}", random_suffix()),
                    namespace: cluster.metadata.namespace.clone(),
                });
            }
            cluster.status.reason = None;
            write_status(api, cluster).await?;
            let magnum = live_session(cluster, cx).await?;
            let template = cluster.status.template.clone().unwrap_or_default();
            let coe = magnum.template_coe(&template).await?;
            if coe != "kubernetes" {
                return Err(MagnumError::Failed {
                    code: ReasonCode::InvalidClusterTemplate,
                    message: format!("Invalid cluster template type {coe:?}"),
                });
            }
            let uuid = magnum
                .create_cluster(
                    &magnum_name(cluster),
                    &template,
                    cluster.spec.master_count,
                    cluster.spec.node_count,
                )
                .await?;
            tracing::info!(magnum_cluster = %name, cluster_id = %uuid, "magnum cluster creation started");
            cluster.status.cluster_id = Some(uuid);
            write_status(api, cluster).await?;
            Ok(Action::requeue(cx.poll_interval))
        }
        (MagnumClusterState::Creating | MagnumClusterState::Reconciling, Some(id)) => {
            let magnum = live_session(cluster, cx).await?;
            let info = match magnum.cluster(&id).await {
                Ok(info) => info,
                Err(err) if err.is_not_found() => {
                    // Gone from Magnum: created anew (Krake).
                    tracing::warn!(magnum_cluster = %name, cluster_id = %id, "magnum cluster gone; creating it again");
                    cluster.status.cluster_id = None;
                    cluster.status.state = MagnumClusterState::Pending;
                    write_status(api, cluster).await?;
                    return Ok(Action::await_change());
                }
                Err(err) => return Err(err.into()),
            };
            let reason = || info.status_reason.clone().unwrap_or_default();
            match info.status.as_str() {
                "CREATE_COMPLETE" | "UPDATE_COMPLETE" => {}
                "CREATE_FAILED" => {
                    return Err(MagnumError::Failed {
                        code: ReasonCode::CreateFailed,
                        message: reason(),
                    });
                }
                "UPDATE_FAILED" => {
                    return Err(MagnumError::Failed {
                        code: ReasonCode::ReconcileFailed,
                        message: reason(),
                    });
                }
                "DELETE_FAILED" => {
                    return Err(MagnumError::Failed {
                        code: ReasonCode::DeleteFailed,
                        message: reason(),
                    });
                }
                _ => return Ok(Action::requeue(cx.poll_interval)),
            }
            cluster.status.node_count = info.node_count;
            cluster.status.api_address = info.api_address.clone();
            cluster.status.master_addresses = Some(info.master_addresses.clone());
            cluster.status.node_addresses = Some(info.node_addresses.clone());
            cluster.status.state = MagnumClusterState::Running;
            write_status(api, cluster).await?;
            tracing::info!(magnum_cluster = %name, node_count = ?info.node_count, "magnum cluster running");
            ensure_krake_cluster(cluster, &magnum, cx).await?;
            Ok(Action::await_change())
        }
        (MagnumClusterState::Running, id) => {
            let Some(id) = id else {
                cluster.status.state = MagnumClusterState::Pending;
                write_status(api, cluster).await?;
                return Ok(Action::await_change());
            };
            if let Some(wanted) = cluster.spec.node_count
                && cluster.status.node_count != Some(wanted)
            {
                cluster.status.state = MagnumClusterState::Reconciling;
                write_status(api, cluster).await?;
                let magnum = live_session(cluster, cx).await?;
                magnum.resize(&id, wanted).await?;
                tracing::info!(magnum_cluster = %name, node_count = wanted, "magnum cluster resize started");
                return Ok(Action::requeue(cx.poll_interval));
            }
            if krake_cluster_current(cluster, cx).await? {
                return Ok(Action::await_change());
            }
            let magnum = live_session(cluster, cx).await?;
            ensure_krake_cluster(cluster, &magnum, cx).await?;
            Ok(Action::await_change())
        }
        (MagnumClusterState::Deleting | MagnumClusterState::Failed, _) => {
            Ok(Action::await_change())
        }
    }
}

/// The Krake Cluster of `cluster`'s forward reference, if it exists.
async fn krake_cluster(
    cluster: &MagnumCluster,
    cx: &Context,
) -> Result<Option<(Api<Cluster>, Option<Cluster>)>, MagnumError> {
    let Some(target) = &cluster.status.cluster else {
        return Ok(None);
    };
    let namespace = target
        .namespace
        .as_deref()
        .or(cluster.metadata.namespace.as_deref())
        .unwrap_or_default();
    let api: Api<Cluster> = Api::namespaced(cx.client.clone(), namespace);
    match api.get(&target.name).await {
        Ok(existing) => Ok(Some((api, Some(existing)))),
        Err(err) if err.is_not_found() => Ok(Some((api, None))),
        Err(err) => Err(err.into()),
    }
}

/// The server of a kubeconfig's first cluster.
fn server_of(kubeconfig: &Map<String, Value>) -> Option<&str> {
    kubeconfig.get("clusters")?[0]["cluster"]["server"].as_str()
}

/// Whether the Krake Cluster exists with a kubeconfig for the cluster's
/// `api_address` (or is being deleted, and must not be rewritten).
async fn krake_cluster_current(cluster: &MagnumCluster, cx: &Context) -> Result<bool, MagnumError> {
    Ok(match krake_cluster(cluster, cx).await? {
        None => true,
        Some((_, None)) => false,
        Some((_, Some(existing))) => {
            existing.metadata.is_deleted()
                || server_of(&existing.spec.kubeconfig) == cluster.status.api_address.as_deref()
        }
    })
}

/// Creates or updates the Krake Cluster with a fresh admin kubeconfig,
/// unless it is current.
async fn ensure_krake_cluster(
    cluster: &MagnumCluster,
    magnum: &Magnum,
    cx: &Context,
) -> Result<(), MagnumError> {
    let Some((api, existing)) = krake_cluster(cluster, cx).await? else {
        return Ok(());
    };
    if let Some(existing) = &existing
        && (existing.metadata.is_deleted()
            || server_of(&existing.spec.kubeconfig) == cluster.status.api_address.as_deref())
    {
        return Ok(());
    }
    let (Some(target), Some(id)) = (&cluster.status.cluster, &cluster.status.cluster_id) else {
        return Ok(());
    };
    let kubeconfig = make_kubeconfig(magnum, id, &target.name, cluster).await?;
    match existing {
        Some(mut existing) => {
            existing.spec.kubeconfig = kubeconfig;
            api.update(&existing).await?;
            tracing::info!(magnum_cluster = %cluster.metadata.name, cluster = %target.name, "kubeconfig of the krake cluster renewed");
        }
        None => {
            let object = json!({
                "api": "kubernetes",
                "kind": "Cluster",
                "metadata": {
                    "name": target.name,
                    "namespace": target.namespace.clone().or(cluster.metadata.namespace.clone()),
                    "labels": cluster.metadata.labels,
                    "owners": [ResourceRef::of(cluster)],
                },
                "spec": {
                    "kubeconfig": kubeconfig,
                    "metrics": cluster.spec.metrics,
                    "constraints": ClusterCloudConstraints::default(),
                },
            });
            let object: Cluster = serde_json::from_value(object).map_err(|err| {
                MagnumError::Certificate(format!("cannot build the cluster: {err}"))
            })?;
            match api.create(&object).await {
                Ok(_) => {}
                Err(err) if err.is_conflict() => {}
                Err(err) => return Err(err.into()),
            }
            tracing::info!(magnum_cluster = %cluster.metadata.name, cluster = %target.name, "krake cluster created");
        }
    }
    Ok(())
}

/// An admin kubeconfig for the Magnum cluster `id`: a new key, its CSR
/// (`CN=admin`, `O=system:masters`) signed through Magnum, Magnum's CA.
async fn make_kubeconfig(
    magnum: &Magnum,
    id: &str,
    name: &str,
    cluster: &MagnumCluster,
) -> Result<Map<String, Value>, MagnumError> {
    use base64::Engine as _;
    let certificate = |err: rcgen::Error| MagnumError::Certificate(err.to_string());
    let key = rcgen::KeyPair::generate().map_err(certificate)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(certificate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    let csr = params
        .serialize_request(&key)
        .map_err(certificate)?
        .pem()
        .map_err(certificate)?;
    let ca = magnum.ca(id).await?;
    let signed = magnum.sign(id, &csr).await?;
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let kubeconfig = json!({
        "kind": "Config",
        "apiVersion": "v1",
        "clusters": [{
            "cluster": {
                "certificate-authority-data": b64(&ca),
                "server": cluster.status.api_address,
            },
            "name": name,
        }],
        "contexts": [{"context": {"cluster": name, "user": "krake"}, "name": "admin"}],
        "current-context": "admin",
        "preferences": {},
        "users": [{
            "name": "krake",
            "user": {
                "client-certificate-data": b64(&signed),
                "client-key-data": b64(&key.serialize_pem()),
            },
        }],
    });
    match kubeconfig {
        Value::Object(map) => Ok(map),
        _ => Ok(Map::new()),
    }
}

/// A deleted cluster whose finalizer is at the tail: `None` when it is
/// gone from Magnum (or never made it there), else when to look again.
async fn cleanup(
    cluster: &mut MagnumCluster,
    api: &Api<MagnumCluster>,
    cx: &Context,
) -> Result<Option<Duration>, MagnumError> {
    let Some(id) = cluster.status.cluster_id.clone() else {
        return Ok(None);
    };
    if cluster.status.state == MagnumClusterState::Pending {
        return Ok(None);
    }
    let Some(magnum) = session(cluster, cx).await? else {
        tracing::warn!(
            magnum_cluster = %cluster.metadata.name,
            "the project is gone: the Magnum cluster cannot be deleted and is left behind"
        );
        return Ok(None);
    };
    if cluster.status.state != MagnumClusterState::Deleting {
        match magnum.delete(&id).await {
            Ok(()) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => return Err(err.into()),
        }
        cluster.status.state = MagnumClusterState::Deleting;
        cluster.status.reason = None;
        write_status(api, cluster).await?;
        tracing::info!(magnum_cluster = %cluster.metadata.name, cluster_id = %id, "magnum cluster deletion started");
    }
    match magnum.cluster(&id).await {
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err.into()),
        Ok(info) if info.status == "DELETE_FAILED" => Err(MagnumError::Failed {
            code: ReasonCode::DeleteFailed,
            message: info.status_reason.unwrap_or_default(),
        }),
        Ok(_) => Ok(Some(cx.poll_interval)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krake_data::Metadata;
    use krake_data::kinds::openstack::MagnumClusterSpec;

    #[test]
    fn names_are_krakes() {
        let suffix = random_suffix();
        assert_eq!(suffix.len(), 7);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let cluster = MagnumCluster::new(
            Metadata::namespaced("team a", "my:cluster"),
            MagnumClusterSpec::default(),
        );
        let name = magnum_name(&cluster);
        assert!(name.starts_with("team_a-my_cluster-"), "{name}");
    }

    #[test]
    fn only_lasting_openstack_errors_fail_the_cluster() {
        let http = |status| {
            MagnumError::OpenStack(OpenStackError::Http {
                service: "Keystone",
                status,
                method: "POST".into(),
                url: "http://k/v3/auth/tokens".into(),
                message: "The request you have made requires authentication.".into(),
            })
        };
        let reason = http(401).reason().unwrap();
        assert_eq!(reason.code, ReasonCode::OpenstackError);
        assert!(reason.message.contains("HTTP 401"), "{}", reason.message);
        assert!(http(503).reason().is_none());
        let unreachable = MagnumError::OpenStack(OpenStackError::Unreachable {
            service: "Magnum",
            method: "GET".into(),
            url: "u".into(),
            message: "connection refused".into(),
        });
        assert!(unreachable.reason().is_none());
    }
}
