//! A fake Kubernetes API server that the unmodified `kube` client talks to
//! over HTTPS on loopback, with a simulated kubelet and fault injection.
//!
//! [`FakeCluster::start`] serves HTTPS on `127.0.0.1:<free port>` with its
//! own CA (several fakes at once each have their own CA and port), and
//! [`FakeCluster::kubeconfig`] gives a complete kubeconfig for it (client
//! certificate), [`kubeconfig_with_token`](FakeCluster::kubeconfig_with_token)
//! one with a bearer token and
//! [`kubeconfig_with_wrong_ca`](FakeCluster::kubeconfig_with_wrong_ca) one
//! whose CA did not sign the server certificate. A request with neither a
//! client certificate the fake's CA signed nor its token is answered
//! `401 Unauthorized`.
//!
//! # What it emulates
//!
//! Written from the Kubernetes API conventions, so that clients relying on
//! the real API server's behaviour see it:
//!
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}` (legacy JSON, and the aggregated
//!   `apidiscovery.k8s.io/v2` form when the `Accept` header asks for it),
//!   for the built-in kinds (core `v1` namespaces, nodes, pods, services,
//!   configmaps, secrets, serviceaccounts, persistentvolumeclaims, events;
//!   `apps/v1` deployments, statefulsets, replicasets, daemonsets;
//!   `batch/v1` jobs, cronjobs; `networking.k8s.io/v1` ingresses;
//!   `apiextensions.k8s.io/v1` customresourcedefinitions;
//!   `rbac.authorization.k8s.io/v1` roles, rolebindings, clusterroles,
//!   clusterrolebindings) and the kinds that CustomResourceDefinitions add
//!   at run time;
//! - create (`201`, uid, resourceVersion, creationTimestamp, generation,
//!   `generateName`; `409 AlreadyExists`; `404 NotFound` into a missing
//!   namespace), get, list (namespaced and all namespaces, label and field
//!   selectors, `metadata.resourceVersion`), replace (`409 Conflict` on a
//!   stale resourceVersion), patch (merge, strategic merge with list-maps
//!   merged by key, JSON patch), server-side apply (`fieldManager`,
//!   `force`, managed fields, conflicts, removal of fields a manager no
//!   longer applies, list-map merges, create when missing), the `/status`
//!   subresource (spec and status written apart; generation bumped on spec
//!   changes only), delete (`200` with a `Success` Status, or the object
//!   while finalizers hold it with a deletionTimestamp; background cascading
//!   over ownerReferences; namespace deletion removes its content),
//!   deletecollection, a little validation (`422 Invalid` with
//!   `details.causes`) and defaulting, Service cluster IPs and node ports
//!   (30000-32767) allocated at create;
//! - watch: newline-delimited events after a resourceVersion (or synthetic
//!   `ADDED` events for the current objects when it is absent or `0`),
//!   selectors applied (an object leaving the selection is `DELETED`),
//!   `BOOKMARK`s every [`FakeCluster::BOOKMARK_INTERVAL`] (see
//!   [`FakeCluster::set_bookmark_interval`]), `timeoutSeconds`,
//!   and an `ERROR` event with a `410 Expired` Status for a resourceVersion
//!   older than the retained history ([`FakeCluster::compact`] drops it);
//! - a simulated kubelet and controllers ([`Kubelet`]) and faults
//!   ([`Faults`]): an outage ([`Faults::refuse_connections`]) ends like an
//!   API server restart, with a watch cache that starts afresh (resuming
//!   watches get `410 Expired` and relist); request counts
//!   ([`RequestStats`]).
//!
//! # What it does not emulate
//!
//! - Protobuf, CBOR, YAML answers, `Table` output, `PartialObjectMetadata`
//!   (`as=` other than aggregated discovery): everything is JSON.
//! - Paging: `limit` and `continue` are ignored; a list returns everything.
//! - `sendInitialEvents` (streaming lists) is ignored: watches start as
//!   plain watches; `resourceVersionMatch` is ignored.
//! - Authorization (RBAC is stored, never enforced), admission webhooks,
//!   CRD schema validation, defaulting and pruning, conversion between
//!   versions (every version of a kind stores the same JSON).
//! - Graceful Pod deletion, subresources other than `/status`
//!   (`scale`, `log`, `exec`, `eviction`, namespace `finalize`), HTTP/2,
//!   websockets, table printing, server-side field validation.
//! - Deployments own their Pods directly (no ReplicaSets in between); Jobs
//!   complete without Pods; CronJobs never fire.

mod apply;
mod discovery;
mod faults;
mod fields;
mod kubelet;
mod lists;
mod objects;
mod patch;
mod registry;
mod selector;
mod server;
mod status;
mod storage;
mod tls;
mod validation;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use faults::{Faults, RequestStats};
pub use kubelet::Kubelet;
pub use status::Status;

use objects::Write;
use patch::PatchType;
use registry::ResourceType;
use storage::{Store, StoreInner};
use tls::Pki;

/// Why a [`FakeCluster`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// Generating certificates or the TLS configuration failed.
    #[error("fake kube TLS setup failed: {0}")]
    Tls(String),
    /// Binding the listening socket failed.
    #[error("fake kube could not listen on loopback: {0}")]
    Bind(#[from] std::io::Error),
    /// Seeding the initial objects failed.
    #[error("fake kube could not seed its objects: {0}")]
    Seed(#[from] Status),
}

/// What the server tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<Store>,
    pub(crate) faults: Faults,
    pub(crate) stats: RequestStats,
    pub(crate) kubelet: Arc<Kubelet>,
    pub(crate) pki: Pki,
    pub(crate) token: String,
    /// `127.0.0.1:port`.
    pub(crate) address: String,
    pub(crate) cancel: CancellationToken,
    /// Milliseconds between bookmarks.
    pub(crate) bookmark_ms: std::sync::atomic::AtomicU64,
}

/// A running fake Kubernetes API server. Dropping it stops the server,
/// its kubelet and every open connection.
#[derive(Debug)]
pub struct FakeCluster {
    shared: Arc<Shared>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// The manager of writes through [`FakeCluster::create`].
const DIRECT_MANAGER: &str = "krake-testkit";
/// The manager of [`FakeCluster::merge_patch`].
const EDIT_MANAGER: &str = "kubectl-edit";

fn node_conditions(now: &str) -> Value {
    let c = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "lastHeartbeatTime": now, "lastTransitionTime": now, "reason": reason, "message": message});
    json!([
        c(
            "NetworkUnavailable",
            "False",
            "RouteCreated",
            "RouteController created a route"
        ),
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl FakeCluster {
    /// How often watches with `allowWatchBookmarks` get a `BOOKMARK` (a real
    /// server sends one about every minute).
    pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

    /// How many changes the watch history keeps.
    pub const HISTORY: usize = 10_000;

    /// Starts a fake on `127.0.0.1:<free port>` with the namespaces
    /// `default`, `kube-system` and `kube-public`, one Ready Node `node-1`
    /// and the automatic kubelet on.
    pub async fn start() -> Result<FakeCluster, FakeError> {
        let pki = Pki::generate()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let store = Arc::new(Store::new(Self::HISTORY));
        let kubelet = Arc::new(Kubelet::new(store.clone()));
        let shared = Arc::new(Shared {
            store: store.clone(),
            faults: Faults::new(store.clone()),
            stats: RequestStats::default(),
            kubelet: kubelet.clone(),
            pki,
            token: format!("krake-testkit-{}", uuid::Uuid::new_v4().simple()),
            address,
            cancel: CancellationToken::new(),
            bookmark_ms: std::sync::atomic::AtomicU64::new(
                Self::BOOKMARK_INTERVAL.as_millis() as u64
            ),
        });
        let fake = FakeCluster {
            shared: shared.clone(),
        };
        for ns in ["default", "kube-system", "kube-public"] {
            fake.create(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )?;
        }
        fake.add_node("node-1");
        tokio::spawn(server::serve(
            listener,
            shared.clone(),
            shared.cancel.clone(),
        ));
        tokio::spawn(kubelet.run(shared.cancel.clone()));
        let ticker = shared.clone();
        tokio::spawn(async move {
            loop {
                let ms = ticker
                    .bookmark_ms
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(10);
                tokio::select! {
                    _ = ticker.cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => ticker.store.lock().bookmark(),
                }
            }
        });
        Ok(fake)
    }

    /// Sets how often watches get a `BOOKMARK` (default
    /// [`BOOKMARK_INTERVAL`](Self::BOOKMARK_INTERVAL); at least 10 ms),
    /// from the next one on.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .bookmark_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.shared.address)
    }

    fn kubeconfig_of(&self, ca_pem: &str, user: Value) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "fake", "cluster": {"server": self.url(), "certificate-authority-data": b64(ca_pem)}}],
            "users": [{"name": "fake-admin", "user": user}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake-admin", "namespace": "default"}}],
            "current-context": "fake",
        })
    }

    fn cert_user(&self) -> Value {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        json!({
            "client-certificate-data": b64(&self.shared.pki.client_cert_pem),
            "client-key-data": b64(&self.shared.pki.client_key_pem),
        })
    }

    /// A complete kubeconfig (client certificate) as JSON.
    pub fn kubeconfig(&self) -> Value {
        self.kubeconfig_of(&self.shared.pki.ca_pem, self.cert_user())
    }

    /// The same kubeconfig, but with a CA that did not sign the server
    /// certificate: clients fail the TLS handshake.
    pub fn kubeconfig_with_wrong_ca(&self) -> Value {
        self.kubeconfig_of(&self.shared.pki.wrong_ca_pem, self.cert_user())
    }

    /// A kubeconfig authenticating with a bearer token instead of a client
    /// certificate.
    pub fn kubeconfig_with_token(&self) -> Value {
        self.kubeconfig_of(&self.shared.pki.ca_pem, json!({"token": self.shared.token}))
    }

    /// The bearer token the fake accepts.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The CA certificate (PEM) that signed the server and client
    /// certificates.
    pub fn ca_pem(&self) -> &str {
        &self.shared.pki.ca_pem
    }

    /// The private key (PKCS#8 PEM) of [`ca_pem`](Self::ca_pem): whoever
    /// holds it can issue client certificates the fake accepts, as a Magnum
    /// fake signing CSRs with the cluster's CA does
    /// ([`crate::openstack::FakeOpenStack::serve_kube`]).
    pub fn ca_key_pem(&self) -> &str {
        &self.shared.pki.ca_key_pem
    }

    fn resolve(st: &StoreInner, api_version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        st.registry.by_kind(api_version, kind)
    }

    fn ns_of(rt: &ResourceType, namespace: Option<&str>) -> String {
        if rt.namespaced {
            namespace.unwrap_or("default").to_string()
        } else {
            String::new()
        }
    }

    /// One object as stored, if it exists (`namespace` is ignored for
    /// cluster-scoped kinds and defaults to `default` for namespaced ones).
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let st = self.shared.store.lock();
        let rt = Self::resolve(&st, api_version, kind)?;
        st.get(&rt.key, &Self::ns_of(&rt, namespace), name)
            .map(|o| (*o).clone())
    }

    /// The objects of a kind, in one namespace or (`None`) all.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let st = self.shared.store.lock();
        let Some(rt) = Self::resolve(&st, api_version, kind) else {
            return Vec::new();
        };
        let ns = if rt.namespaced { namespace } else { None };
        st.list(&rt.key, ns).iter().map(|o| (**o).clone()).collect()
    }

    /// Creates an object as a `POST` would (namespace from its metadata,
    /// `default` when absent for namespaced kinds). Creating a
    /// CustomResourceDefinition serves its kind at once.
    pub fn create(&self, object: Value) -> Result<Value, Status> {
        let mut st = self.shared.store.lock();
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let rt = Self::resolve(&st, api_version, kind).ok_or_else(|| {
            Status::new(
                404,
                format!("no matches for kind {kind:?} in version {api_version:?}"),
            )
        })?;
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_string);
        objects::create(
            &mut st,
            &rt,
            namespace.as_deref(),
            object,
            Write::by(DIRECT_MANAGER),
        )
        .map(|o| (*o).clone())
    }

    /// Deletes an object as a `DELETE` would (background propagation).
    /// `true` if it existed.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> bool {
        let mut st = self.shared.store.lock();
        let Some(rt) = Self::resolve(&st, api_version, kind) else {
            return false;
        };
        objects::delete(&mut st, &rt, namespace, name, None, None, false).is_ok()
    }

    /// Applies a JSON merge patch as the manager `kubectl-edit`: the
    /// resourceVersion moves and watchers see `MODIFIED`. Status is
    /// ignored for kinds with a status subresource, as for a real patch.
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, Status> {
        self.merge_patch_as_editor(api_version, kind, namespace, name, &patch, false)
    }

    /// Applies a JSON merge patch to the `/status` subresource of an object
    /// as the manager `kubectl-edit`.
    pub fn merge_patch_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Result<Value, Status> {
        self.merge_patch_as_editor(api_version, kind, namespace, name, &patch, true)
    }

    /// A JSON merge patch as `kubectl-edit`, to the object or (`status`,
    /// for kinds that have one) its `/status` subresource.
    fn merge_patch_as_editor(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value, Status> {
        let mut st = self.shared.store.lock();
        let rt = Self::resolve(&st, api_version, kind).ok_or_else(|| {
            Status::new(
                404,
                format!("no matches for kind {kind:?} in version {api_version:?}"),
            )
        })?;
        let write = Write {
            subresource: (status && rt.status).then_some("status"),
            ..Write::by(EDIT_MANAGER)
        };
        objects::patch(
            &mut st,
            &rt,
            namespace,
            name,
            PatchType::Merge,
            patch,
            write,
        )
        .map(|o| (*o).clone())
    }

    /// Sets one condition of a Node (created if missing) as its kubelet
    /// would report it; `None` leaves `reason` or `message` out.
    pub fn set_node_condition(
        &self,
        node: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) {
        self.add_node(node);
        let mut st = self.shared.store.lock();
        let Some(rt) = Self::resolve(&st, "v1", "Node") else {
            return;
        };
        let Some(current) = st.get(&rt.key, "", node) else {
            return;
        };
        let mut new = (*current).clone();
        let t = now();
        let mut conditions: Vec<Value> = new
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut condition = json!({"type": type_, "status": status, "lastHeartbeatTime": t, "lastTransitionTime": t});
        if let Some(r) = reason {
            condition["reason"] = json!(r);
        }
        if let Some(m) = message {
            condition["message"] = json!(m);
        }
        match conditions.iter_mut().find(|c| c["type"] == type_) {
            Some(c) => {
                if c["status"] == status
                    && let Some(old) = c.get("lastTransitionTime")
                {
                    condition["lastTransitionTime"] = old.clone();
                }
                *c = condition;
            }
            None => conditions.push(condition),
        }
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        new["status"]["conditions"] = Value::Array(conditions);
        let w = Write {
            manager: "kubelet",
            subresource: Some("status"),
            dry_run: false,
        };
        if let Err(e) = objects::replace(&mut st, &rt, None, node, new, w) {
            tracing::debug!(error = %e, "fake kube: node condition not written");
        }
    }

    /// Adds a Ready Node (nothing if it exists).
    pub fn add_node(&self, name: &str) {
        if self.get("v1", "Node", None, name).is_some() {
            return;
        }
        let count = self.list("v1", "Node", None).len() + 1;
        let t = now();
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "fake",
                },
            },
            "spec": {"podCIDR": format!("10.244.{count}.0/24"), "podCIDRs": [format!("10.244.{count}.0/24")]},
            "status": {
                "conditions": node_conditions(&t),
                "addresses": [
                    {"type": "InternalIP", "address": format!("10.0.0.{count}")},
                    {"type": "Hostname", "address": name},
                ],
                "capacity": {"cpu": "4", "memory": "8145440Ki", "pods": "110", "ephemeral-storage": "61202244Ki"},
                "allocatable": {"cpu": "4", "memory": "8043040Ki", "pods": "110", "ephemeral-storage": "56403987978"},
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 13 (trixie)",
                    "kernelVersion": "6.12.0",
                    "containerRuntimeVersion": "containerd://2.0.0",
                    "kubeletVersion": "v1.33.0",
                    "kubeProxyVersion": "v1.33.0",
                    "machineID": uuid::Uuid::new_v4().simple().to_string(),
                    "systemUUID": uuid::Uuid::new_v4().to_string(),
                    "bootID": uuid::Uuid::new_v4().to_string(),
                },
            },
        });
        if let Err(e) = self.create(node) {
            tracing::debug!(error = %e, "fake kube: node not added");
        }
    }

    /// Drops the watch history: a watch resuming from any resourceVersion
    /// older than the current one gets `410 Expired`, as after an etcd
    /// compaction.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().rv()
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Request counts.
    pub fn stats(&self) -> &RequestStats {
        &self.shared.stats
    }

    /// The simulated kubelet and controllers.
    pub fn kubelet(&self) -> &Kubelet {
        &self.shared.kubelet
    }
}
