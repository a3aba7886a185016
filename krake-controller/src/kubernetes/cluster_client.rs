//! Talking to the Kubernetes clusters: one client per cluster, built from its
//! `spec.kubeconfig`, cached, and rebuilt when the kubeconfig changes.
//!
//! [`ClusterClients`] hands out a [`ClusterClient`] for a
//! [`Cluster`](krake_data::kinds::kubernetes::Cluster). A client carries two
//! `kube` clients over the same configuration: one for requests, with
//! connect and request timeouts, and one for watches, with the connect
//! timeout only (a watch is a long request; the watcher's own idle timeout
//! protects it). Kinds are resolved through discovery and cached per client
//! ([`ClusterClient::resolve`]): built-in kinds and custom resources alike.
//!
//! Writes use server-side apply with the field manager `krake`, forced
//! ([`ClusterClient::apply`]): the cluster object then holds exactly the
//! fields of the manifest that Krake manages, so a field removed from the
//! manifest is removed from the object (Krake's merge patch cannot do that).
//!
//! Errors are classified ([`KubeError`]) into what retrying may fix (a
//! cluster that cannot be reached, 5xx, 429, timeouts) and what it cannot
//! (a manifest the cluster refuses, an unknown kind).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersion, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::{Map, Value};

use crate::object_key::ObjectKey;

/// The field manager of every server-side apply of krake-rs.
pub const FIELD_MANAGER: &str = "krake";

/// How long a "this cluster does not serve that kind" answer is trusted
/// before discovery is asked again (a CRD may be installed meanwhile).
const NEGATIVE_DISCOVERY_TTL: Duration = Duration::from_secs(5);

/// Why talking to a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig does not describe a usable cluster (no single
    /// context, a certificate that does not load, ...). Fix the Cluster.
    #[error("invalid kubeconfig: {0}")]
    InvalidKubeconfig(String),
    /// The cluster could not be reached or did not answer in time, or
    /// answered with a server error (5xx) or 429: retrying may help.
    #[error("cluster not reachable: {0}")]
    Unreachable(String),
    /// The cluster refused the request (400, 403, 404, 409, 422, ...) with
    /// its own message: retrying the same request will not help.
    #[error("{message}")]
    Refused {
        /// The HTTP status code.
        code: u16,
        /// The cluster's reason (`Invalid`, `NotFound`, ...).
        reason: String,
        /// The cluster's message.
        message: String,
    },
    /// The cluster does not serve this kind (Krake's UNSUPPORTED_RESOURCE).
    #[error("{0}")]
    UnsupportedResource(String),
    /// A custom resource definition the cluster lists could not be read
    /// (Krake's INVALID_CUSTOM_RESOURCE).
    #[error("{0}")]
    InvalidCustomResource(String),
    /// A manifest resource without `apiVersion`, `kind` or `metadata.name`.
    #[error("invalid resource: {0}")]
    InvalidResource(String),
}

impl KubeError {
    /// Whether retrying the same request later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, KubeError::Unreachable(_))
    }

    /// Whether the cluster answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::Refused { code: 404, .. })
    }

    /// Classifies an error of the `kube` client.
    pub fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                let code = status.code;
                if code >= 500 || code == 429 || code == 0 {
                    KubeError::Unreachable(format!(
                        "the cluster answered {code} {}: {}",
                        status.reason, status.message
                    ))
                } else {
                    KubeError::Refused {
                        code,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    }
                }
            }
            kube::Error::Discovery(err) => KubeError::UnsupportedResource(err.to_string()),
            other => KubeError::Unreachable(error_chain(&other)),
        }
    }
}

/// An error and its sources on one line (kube's top-level messages alone,
/// "ServiceError: client error (Connect)", hide the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
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

/// Timeouts of the cluster clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// How long connecting (TCP and TLS) may take (default 5 s).
    pub connect: Duration,
    /// How long a request (not a watch) may wait for its answer (default 20 s).
    pub request: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(20),
        }
    }
}

/// A kind as a cluster serves it.
#[derive(Debug, Clone)]
pub struct ResolvedKind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

/// The client of one cluster; cheap to clone.
#[derive(Clone)]
pub struct ClusterClient {
    requests: kube::Client,
    watches: kube::Client,
    default_namespace: String,
    host: String,
    kinds: Arc<Mutex<HashMap<(String, String), Discovered>>>,
}

#[derive(Clone)]
enum Discovered {
    Found(ResolvedKind),
    Missing(Instant, String),
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("host", &self.host)
            .field("default_namespace", &self.default_namespace)
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// A client for the cluster `kubeconfig` describes (Krake's rule: one
    /// context, one user, one cluster; the context's namespace, else
    /// `default`, is the default namespace).
    pub async fn from_kubeconfig(
        kubeconfig: &Map<String, Value>,
        timeouts: ClientTimeouts,
    ) -> Result<Self, KubeError> {
        let parsed: Kubeconfig = serde_json::from_value(Value::Object(kubeconfig.clone()))
            .map_err(|err| KubeError::InvalidKubeconfig(err.to_string()))?;
        let context = match (&parsed.current_context, parsed.contexts.as_slice()) {
            (Some(current), _) => Some(current.clone()),
            (None, [only]) => Some(only.name.clone()),
            (None, _) => None,
        };
        let options = KubeConfigOptions {
            context,
            ..KubeConfigOptions::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(parsed, &options)
            .await
            .map_err(|err| KubeError::InvalidKubeconfig(error_chain(&err)))?;
        config.connect_timeout = Some(timeouts.connect);
        // kube retries 429/503/504 itself by default; the controllers have
        // their own backoff and must see the failure to report it.
        config.default_retry = false;
        let host = config.cluster_url.host().unwrap_or("").to_owned();
        let default_namespace = config.default_namespace.clone();
        let mut watch_config = config.clone();
        watch_config.read_timeout = None;
        config.read_timeout = Some(timeouts.request);
        config.write_timeout = Some(timeouts.request);
        config.reset_reader_on_write = true;
        let requests = kube::Client::try_from(config)
            .map_err(|err| KubeError::InvalidKubeconfig(error_chain(&err)))?;
        let watches = kube::Client::try_from(watch_config)
            .map_err(|err| KubeError::InvalidKubeconfig(error_chain(&err)))?;
        Ok(ClusterClient {
            requests,
            watches,
            default_namespace,
            host,
            kinds: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The `kube` client for requests (with timeouts).
    pub fn client(&self) -> &kube::Client {
        &self.requests
    }

    /// The `kube` client for watches (no request timeout).
    pub fn watch_client(&self) -> &kube::Client {
        &self.watches
    }

    /// The namespace of resources that name none.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The host of the cluster's API server (for `status.services` of
    /// NodePort services, as Krake).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The kind `api_version`/`kind` as this cluster serves it, through
    /// discovery (cached). A kind the cluster does not serve is
    /// [`KubeError::UnsupportedResource`], unless it belongs to one of
    /// `custom_resources` (`<plural>.<group>` names of the Cluster's
    /// `spec.custom_resources`) whose definition cannot be read:
    /// [`KubeError::InvalidCustomResource`].
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
        custom_resources: &[String],
    ) -> Result<ResolvedKind, KubeError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.cached(&key) {
            return found;
        }
        let gv: GroupVersion = api_version.parse().map_err(|_| {
            KubeError::InvalidResource(format!("invalid apiVersion {api_version:?}"))
        })?;
        let gvk = GroupVersionKind::gvk(&gv.group, &gv.version, kind);
        let outcome = match kube::discovery::pinned_kind(&self.requests, &gvk).await {
            Ok((resource, capabilities)) => Ok(resolved(resource, &capabilities)),
            Err(err) => match KubeError::from_kube(err) {
                KubeError::Refused { code: 404, .. } | KubeError::UnsupportedResource(_) => {
                    Err(self.unsupported(&gv, kind, custom_resources).await)
                }
                other => return Err(other),
            },
        };
        if let Ok(mut kinds) = self.kinds.lock() {
            let entry = match &outcome {
                Ok(found) => Discovered::Found(found.clone()),
                Err(err) => Discovered::Missing(Instant::now(), err.to_string()),
            };
            if matches!(outcome, Ok(_) | Err(KubeError::UnsupportedResource(_))) {
                kinds.insert(key, entry);
            }
        }
        outcome
    }

    fn cached(&self, key: &(String, String)) -> Option<Result<ResolvedKind, KubeError>> {
        let kinds = self.kinds.lock().ok()?;
        match kinds.get(key)? {
            Discovered::Found(found) => Some(Ok(found.clone())),
            Discovered::Missing(at, message) if at.elapsed() < NEGATIVE_DISCOVERY_TTL => {
                Some(Err(KubeError::UnsupportedResource(message.clone())))
            }
            Discovered::Missing(..) => None,
        }
    }

    /// The error for a kind discovery does not know: Krake reads the
    /// definitions of the cluster's custom resources of that group, and a
    /// definition it cannot read is INVALID_CUSTOM_RESOURCE.
    async fn unsupported(
        &self,
        gv: &GroupVersion,
        kind: &str,
        custom_resources: &[String],
    ) -> KubeError {
        let unsupported = KubeError::UnsupportedResource(format!(
            "the cluster does not serve {kind} in {}",
            gv.api_version()
        ));
        let crds = ApiResource::erase::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(&());
        let api: Api<DynamicObject> = Api::all_with(self.requests.clone(), &crds);
        for name in custom_resources.iter().filter(|name| {
            name.split_once('.')
                .is_some_and(|(_, group)| group == gv.group)
        }) {
            match api.get(name).await {
                Ok(crd) => {
                    let served_kind = crd.data.pointer("/spec/names/kind").and_then(Value::as_str);
                    if served_kind == Some(kind) {
                        return KubeError::InvalidCustomResource(format!(
                            "the custom resource definition {name} does not serve {kind} in {}",
                            gv.api_version()
                        ));
                    }
                }
                Err(err) => {
                    return KubeError::InvalidCustomResource(format!(
                        "cannot read the custom resource definition {name}: {}",
                        KubeError::from_kube(err)
                    ));
                }
            }
        }
        unsupported
    }

    /// The API of `kind` in `namespace` (ignored for cluster-wide kinds).
    pub fn api(&self, kind: &ResolvedKind, namespace: &str) -> Api<DynamicObject> {
        api_for(&self.requests, kind, namespace)
    }

    /// Server-side apply of `object` (field manager [`FIELD_MANAGER`],
    /// forced): creates it or makes Krake's fields of it equal `object`.
    /// Returns the object as the cluster stored it.
    pub async fn apply(
        &self,
        kind: &ResolvedKind,
        namespace: &str,
        object: &Map<String, Value>,
    ) -> Result<DynamicObject, KubeError> {
        let name = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| KubeError::InvalidResource("metadata.name is missing".into()))?;
        let mut body = object.clone();
        if kind.namespaced {
            if let Some(Value::Object(metadata)) = body.get_mut("metadata") {
                metadata.insert("namespace".into(), Value::String(namespace.to_owned()));
            }
        }
        // Status is never Krake's to apply; the cluster ignores it anyway.
        body.remove("status");
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api(kind, namespace)
            .patch(name, &params, &Patch::Apply(Value::Object(body)))
            .await
            .map_err(KubeError::from_kube)
    }

    /// Deletes `name` (background propagation); an object that is already
    /// gone is fine.
    pub async fn delete(
        &self,
        kind: &ResolvedKind,
        namespace: &str,
        name: &str,
    ) -> Result<(), KubeError> {
        match self
            .api(kind, namespace)
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match KubeError::from_kube(err) {
                err if err.is_not_found() => Ok(()),
                err => Err(err),
            },
        }
    }
}

fn resolved(resource: ApiResource, capabilities: &ApiCapabilities) -> ResolvedKind {
    ResolvedKind {
        resource,
        namespaced: capabilities.scope == Scope::Namespaced,
    }
}

/// The API of `kind` in `namespace` (all namespaces for cluster-wide kinds).
pub(crate) fn api_for(
    client: &kube::Client,
    kind: &ResolvedKind,
    namespace: &str,
) -> Api<DynamicObject> {
    if kind.namespaced {
        Api::namespaced_with(client.clone(), namespace, &kind.resource)
    } else {
        Api::all_with(client.clone(), &kind.resource)
    }
}

/// The clients of every cluster, one per cluster, rebuilt when its
/// kubeconfig changes.
#[derive(Debug, Default)]
pub struct ClusterClients {
    timeouts: ClientTimeouts,
    clients: Mutex<HashMap<ObjectKey, (u64, ClusterClient)>>,
}

impl ClusterClients {
    /// A cache building clients with `timeouts`.
    pub fn new(timeouts: ClientTimeouts) -> Self {
        ClusterClients {
            timeouts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client of the cluster `key` with `kubeconfig`: the cached one
    /// while the kubeconfig is the same, else a new one.
    pub async fn get(
        &self,
        key: &ObjectKey,
        kubeconfig: &Map<String, Value>,
    ) -> Result<ClusterClient, KubeError> {
        let fingerprint = fingerprint(kubeconfig);
        if let Ok(clients) = self.clients.lock()
            && let Some((known, client)) = clients.get(key)
            && *known == fingerprint
        {
            return Ok(client.clone());
        }
        let client = ClusterClient::from_kubeconfig(kubeconfig, self.timeouts).await?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key.clone(), (fingerprint, client.clone()));
        }
        Ok(client)
    }

    /// The fingerprint of the kubeconfig the cached client of `key` was
    /// built from, if any.
    pub fn fingerprint_of(&self, key: &ObjectKey) -> Option<u64> {
        self.clients
            .lock()
            .ok()
            .and_then(|clients| clients.get(key).map(|(f, _)| *f))
    }

    /// Drops the client of `key` (its cluster is gone).
    pub fn forget(&self, key: &ObjectKey) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(key);
        }
    }
}

/// A hash of a kubeconfig, to notice that it changed.
pub fn fingerprint(kubeconfig: &Map<String, Value>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(kubeconfig)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}
