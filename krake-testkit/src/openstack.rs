//! A fake OpenStack: Keystone v3 (tokens) and Magnum v1 (clusters, cluster
//! templates, certificates) over plain HTTP on a free loopback port, for
//! Krake's (deprecated) Magnum controller.
//!
//! [`FakeOpenStack::start`] serves both services on `127.0.0.1:<port>`:
//! [`auth_url`](FakeOpenStack::auth_url) is Keystone's (`.../v3`, what a
//! Krake `Project` has in `spec.url`), and the token's catalog has a
//! `container-infra` (Magnum) endpoint at `.../v1` of the same server.
//!
//! # What it emulates
//!
//! Written from the OpenStack API references (Identity v3, Container
//! Infrastructure Management):
//!
//! - `POST /v3/auth/tokens` with the `password` method (user by id, scoped
//!   to a project by id) or the `application_credential` method (id and
//!   secret): `201 Created`, the token in `X-Subject-Token`, and a body
//!   `{"token": {methods, user, project, expires_at, issued_at, catalog}}`;
//!   anything else `401` with Keystone's body
//!   `{"error": {"code": 401, "title": "Unauthorized", "message": ...}}`
//!   (`400` for a body that is not an auth request);
//! - every Magnum request needs a valid `X-Auth-Token` (else `401`);
//!   errors have Magnum's body `{"errors": [{"status", "code", "title",
//!   "detail", ...}]}`;
//! - `GET /v1/clustertemplates/{id}` (`uuid`, `name`, `coe`, ...);
//! - `POST /v1/clusters` (`202` with `{"uuid"}`; `cluster_template_id`
//!   must name a template, `name` is required): `CREATE_IN_PROGRESS`, then
//!   `CREATE_COMPLETE` after [`set_operation_time`](FakeOpenStack::set_operation_time)
//!   (or `CREATE_FAILED` with [`fail_creations`](FakeOpenStack::fail_creations));
//! - `GET /v1/clusters/{id}` (by uuid or name): `status`, `status_reason`,
//!   `node_count`, `master_count`, `api_address`, `master_addresses`,
//!   `node_addresses`, `cluster_template_id`, ...;
//! - `POST /v1/clusters/{id}/actions/resize` (`{"node_count", "nodes_to_remove"}`,
//!   `202` with `{"uuid"}`) and `PATCH /v1/clusters/{id}` (a JSON patch
//!   `replace /node_count`): `UPDATE_IN_PROGRESS` then `UPDATE_COMPLETE`
//!   with the new count (`409` while another operation runs);
//! - `DELETE /v1/clusters/{id}`: `204`, `DELETE_IN_PROGRESS`, then gone
//!   (`404`);
//! - `GET /v1/certificates/{cluster}` (the cluster CA: `{"cluster_uuid",
//!   "pem"}`) and `POST /v1/certificates` (`{"cluster_uuid", "csr"}`: the
//!   CSR signed by the cluster CA, `201` with `pem`).
//!
//! Every cluster's `api_address` is the one set with
//! [`serve_kube`](FakeOpenStack::serve_kube) (a
//! [`FakeCluster`]), whose CA is then the cluster
//! CA: certificates signed through Magnum are accepted by that fake
//! Kubernetes API. Without it, clusters point at an unreachable address
//! and the CA is the fake's own.
//!
//! Requests are recorded ([`requests`](FakeOpenStack::requests), secrets
//! of auth bodies replaced by `***`), and faults injected
//! ([`fail_next`](FakeOpenStack::fail_next), [`fail_requests`](FakeOpenStack::fail_requests),
//! [`fail_creations`](FakeOpenStack::fail_creations)).
//!
//! # What it does not emulate
//!
//! Token expiry, revocation and validation (`GET /v3/auth/tokens`), scoping
//! by name or domain, other auth methods (token, TOTP), roles and policy,
//! API microversions (`OpenStack-API-Version` is ignored), listing and
//! creating cluster templates, node groups, quotas, stats, federation, the
//! `location` header of `202` answers, cluster upgrades and rotating CAs.
//! Clusters of every project share one space.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::kube::FakeCluster;

/// Why a [`FakeOpenStack`] could not start or take a setting.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackFakeError {
    /// Binding the listening socket failed.
    #[error("fake openstack could not listen on loopback: {0}")]
    Bind(#[from] std::io::Error),
    /// Generating or loading the cluster CA failed.
    #[error("fake openstack CA: {0}")]
    Ca(String),
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path (`/v3/auth/tokens`, `/v1/clusters/<uuid>`, ...).
    pub path: String,
    /// The JSON body (`Null` when none or not JSON); passwords and secrets
    /// replaced by `***`.
    pub body: Value,
    /// Whether it carried a valid `X-Auth-Token` (Keystone: `false`).
    pub authenticated: bool,
}

/// A cluster in the fake's Magnum.
#[derive(Debug, Clone)]
struct MagnumCluster {
    uuid: String,
    name: String,
    template: String,
    status: String,
    status_reason: Option<String>,
    node_count: i64,
    master_count: i64,
    /// When the running operation ends, and how.
    pending: Option<(Instant, Outcome)>,
}

#[derive(Debug, Clone)]
enum Outcome {
    Status(&'static str, Option<String>),
    Resized(i64),
    Gone,
}

#[derive(Debug)]
struct Inner {
    users: HashMap<String, (String, String)>,
    app_credentials: HashMap<String, String>,
    tokens: HashMap<String, String>,
    templates: HashMap<String, (String, String)>,
    clusters: Vec<MagnumCluster>,
    operation_time: Duration,
    api_address: String,
    ca_pem: String,
    ca_key_pem: String,
    fail_next: (u32, u16),
    fail_all: Option<u16>,
    fail_creations: Option<String>,
    requests: Vec<RecordedRequest>,
}

#[derive(Debug)]
struct Shared {
    address: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake Keystone + Magnum; dropping it stops the server.
#[derive(Debug)]
pub struct FakeOpenStack {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeOpenStack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A fresh self-signed CA (certificate and key, PEM).
fn generate_ca() -> Result<(String, String), OpenStackFakeError> {
    let ca = |e: rcgen::Error| OpenStackFakeError::Ca(e.to_string());
    let key = KeyPair::generate().map_err(ca)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(ca)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "krake-testkit-fake-magnum-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl FakeOpenStack {
    /// The user of [`password_auth`](Self::password_auth).
    pub const USER_ID: &'static str = "krake-user";
    /// Its password.
    pub const PASSWORD: &'static str = "krake-password";
    /// Its project.
    pub const PROJECT_ID: &'static str = "krake-project";
    /// The application credential of
    /// [`application_credential_auth`](Self::application_credential_auth).
    pub const APP_CREDENTIAL_ID: &'static str = "krake-app-credential";
    /// Its secret.
    pub const APP_CREDENTIAL_SECRET: &'static str = "krake-app-secret";
    /// A cluster template with COE `kubernetes`.
    pub const KUBERNETES_TEMPLATE: &'static str = "0f6a3bd2-7d9c-4b0e-9a59-6b1d3c7c1a11";
    /// A cluster template with COE `swarm`.
    pub const SWARM_TEMPLATE: &'static str = "5a1c1b8e-2f3d-4c6a-8e7b-9d0f1e2a3b44";

    /// Starts the fake with one user ([`USER_ID`](Self::USER_ID) in
    /// [`PROJECT_ID`](Self::PROJECT_ID)), one application credential, the
    /// templates [`KUBERNETES_TEMPLATE`](Self::KUBERNETES_TEMPLATE) and
    /// [`SWARM_TEMPLATE`](Self::SWARM_TEMPLATE), operations that take
    /// 300 ms and its own cluster CA.
    pub async fn start() -> Result<FakeOpenStack, OpenStackFakeError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (ca_pem, ca_key_pem) = generate_ca()?;
        let mut users = HashMap::new();
        users.insert(
            Self::USER_ID.to_owned(),
            (Self::PASSWORD.to_owned(), Self::PROJECT_ID.to_owned()),
        );
        let mut app_credentials = HashMap::new();
        app_credentials.insert(
            Self::APP_CREDENTIAL_ID.to_owned(),
            Self::APP_CREDENTIAL_SECRET.to_owned(),
        );
        let mut templates = HashMap::new();
        templates.insert(
            Self::KUBERNETES_TEMPLATE.to_owned(),
            ("k8s-template".to_owned(), "kubernetes".to_owned()),
        );
        templates.insert(
            Self::SWARM_TEMPLATE.to_owned(),
            ("swarm-template".to_owned(), "swarm".to_owned()),
        );
        let shared = Arc::new(Shared {
            address: address.clone(),
            inner: Mutex::new(Inner {
                users,
                app_credentials,
                tokens: HashMap::new(),
                templates,
                clusters: Vec::new(),
                operation_time: Duration::from_millis(300),
                api_address: "https://127.0.0.1:1".to_owned(),
                ca_pem,
                ca_key_pem,
                fail_next: (0, 0),
                fail_all: None,
                fail_creations: None,
                requests: Vec::new(),
            }),
        });
        let router = Router::new().fallback(handle).with_state(shared.clone());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
        });
        Ok(FakeOpenStack { shared, stop })
    }

    /// Keystone's URL, `http://127.0.0.1:<port>/v3` (a Project's
    /// `spec.url`).
    pub fn auth_url(&self) -> String {
        format!("http://{}/v3", self.shared.address)
    }

    /// The Magnum endpoint of the catalog, `http://127.0.0.1:<port>/v1`.
    pub fn magnum_url(&self) -> String {
        format!("http://{}/v1", self.shared.address)
    }

    /// Krake's `spec.auth` of a Project with the fake's user (password).
    pub fn password_auth() -> Value {
        json!({"type": "password", "password": {
            "user": {"id": Self::USER_ID, "password": Self::PASSWORD},
            "project": {"id": Self::PROJECT_ID},
        }})
    }

    /// Krake's `spec.auth` of a Project with the fake's application
    /// credential.
    pub fn application_credential_auth() -> Value {
        json!({"type": "application_credential", "application_credential": {
            "id": Self::APP_CREDENTIAL_ID, "secret": Self::APP_CREDENTIAL_SECRET,
        }})
    }

    /// Adds (or replaces) a cluster template.
    pub fn add_template(&self, id: &str, coe: &str) {
        self.shared
            .lock()
            .templates
            .insert(id.to_owned(), (format!("{coe}-{id}"), coe.to_owned()));
    }

    /// How long creations, resizes and deletions take (default 300 ms).
    pub fn set_operation_time(&self, time: Duration) {
        self.shared.lock().operation_time = time;
    }

    /// Clusters' `api_address` becomes `cluster`'s URL and the cluster CA
    /// becomes `cluster`'s CA, so that client certificates signed through
    /// `POST /v1/certificates` are accepted by it.
    pub fn serve_kube(&self, cluster: &FakeCluster) {
        let mut inner = self.shared.lock();
        inner.api_address = cluster.url();
        inner.ca_pem = cluster.ca_pem().to_owned();
        inner.ca_key_pem = cluster.ca_key_pem().to_owned();
    }

    /// The cluster CA (PEM).
    pub fn ca_pem(&self) -> String {
        self.shared.lock().ca_pem.clone()
    }

    /// The next `n` requests (Keystone's and Magnum's) are answered with
    /// `status` (a 5xx: an outage).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.shared.lock().fail_next = (n, status);
    }

    /// Every request is answered with `status`; `None` ends it.
    pub fn fail_requests(&self, status: Option<u16>) {
        self.shared.lock().fail_all = status;
    }

    /// Clusters created from now on end `CREATE_FAILED` with this
    /// `status_reason`; `None` ends it.
    pub fn fail_creations(&self, reason: Option<&str>) {
        self.shared.lock().fail_creations = reason.map(str::to_owned);
    }

    /// The requests so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The recorded requests with this method whose path ends with
    /// `suffix`.
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .collect()
    }

    /// The clusters as `GET /v1/clusters/{id}` shows them now.
    pub fn clusters(&self) -> Vec<Value> {
        let mut inner = self.shared.lock();
        settle(&mut inner);
        let address = inner.api_address.clone();
        inner
            .clusters
            .iter()
            .map(|c| cluster_json(c, &address))
            .collect()
    }

    /// One cluster by uuid or name, as `GET /v1/clusters/{id}` shows it.
    pub fn cluster(&self, id: &str) -> Option<Value> {
        self.clusters()
            .into_iter()
            .find(|c| c["uuid"] == id || c["name"] == id)
    }

    /// Removes a cluster at once, as someone deleting it outside Krake.
    pub fn remove_cluster(&self, id: &str) -> bool {
        let mut inner = self.shared.lock();
        let before = inner.clusters.len();
        inner.clusters.retain(|c| c.uuid != id && c.name != id);
        inner.clusters.len() != before
    }
}

/// Applies the operations whose time has come.
fn settle(inner: &mut Inner) {
    let now = Instant::now();
    inner.clusters.retain_mut(|cluster| {
        let Some((due, outcome)) = cluster.pending.clone() else {
            return true;
        };
        if now < due {
            return true;
        }
        cluster.pending = None;
        match outcome {
            Outcome::Status(status, reason) => {
                cluster.status = status.to_owned();
                cluster.status_reason = reason;
                true
            }
            Outcome::Resized(count) => {
                cluster.status = "UPDATE_COMPLETE".to_owned();
                cluster.status_reason = None;
                cluster.node_count = count;
                true
            }
            Outcome::Gone => false,
        }
    });
}

fn addresses(prefix: &str, count: i64) -> Vec<String> {
    (1..=count.max(0))
        .map(|i| format!("{prefix}.{i}"))
        .collect()
}

fn cluster_json(cluster: &MagnumCluster, api_address: &str) -> Value {
    let complete = cluster.status.ends_with("_COMPLETE");
    json!({
        "uuid": cluster.uuid,
        "name": cluster.name,
        "cluster_template_id": cluster.template,
        "status": cluster.status,
        "status_reason": cluster.status_reason,
        "node_count": cluster.node_count,
        "master_count": cluster.master_count,
        "api_address": if complete { Value::from(api_address) } else { Value::Null },
        "master_addresses": addresses("10.0.1", if complete { cluster.master_count } else { 0 }),
        "node_addresses": addresses("10.0.2", if complete { cluster.node_count } else { 0 }),
        "coe_version": "v1.33.0",
        "create_timeout": 60,
        "stack_id": cluster.uuid,
        "links": [],
    })
}

fn json_response(status: u16, body: &Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(body.clone())).into_response()
}

fn keystone_error(status: u16, title: &str, message: &str) -> Response {
    json_response(
        status,
        &json!({"error": {"code": status, "title": title, "message": message}}),
    )
}

fn magnum_error(status: u16, detail: &str) -> Response {
    let title = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    json_response(
        status,
        &json!({"errors": [{
            "request_id": "",
            "code": if status >= 500 { "server" } else { "client" },
            "status": status,
            "title": title,
            "detail": detail,
            "links": [],
        }]}),
    )
}

/// `body` with passwords and secrets replaced.
fn redacted(mut body: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if (key == "password" && item.is_string()) || key == "secret" {
                        *item = json!("***");
                    } else {
                        walk(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut body);
    body
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().trim_end_matches('/').to_owned();
    let mut inner = shared.lock();
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let authenticated = inner.tokens.contains_key(token);
    inner.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        body: redacted(body.clone()),
        authenticated,
    });
    let failure = if inner.fail_next.0 > 0 {
        inner.fail_next.0 -= 1;
        Some(inner.fail_next.1)
    } else {
        inner.fail_all
    };
    if let Some(status) = failure {
        return if path.starts_with("/v3") {
            keystone_error(status, "Injected fault", "The fake answers with a fault.")
        } else {
            magnum_error(status, "The fake answers with a fault.")
        };
    }
    settle(&mut inner);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first() == Some(&"v3") {
        return match (method.clone(), segments.as_slice()) {
            (Method::POST, ["v3", "auth", "tokens"]) => {
                authenticate(&mut inner, &shared.address, &body)
            }
            _ => keystone_error(404, "Not Found", "The resource could not be found."),
        };
    }
    if !authenticated {
        return magnum_error(401, "The request you have made requires authentication.");
    }
    let api_address = inner.api_address.clone();
    let found = |inner: &Inner, id: &str| {
        inner
            .clusters
            .iter()
            .position(|c| c.uuid == id || c.name == id)
    };
    match (method, segments.as_slice()) {
        (Method::GET, ["v1", "clustertemplates", id]) => match inner.templates.get(*id) {
            Some((name, coe)) => json_response(
                200,
                &json!({"uuid": id, "name": name, "coe": coe, "image_id": "fedora-coreos",
                        "keypair_id": null, "network_driver": "calico", "links": []}),
            ),
            None => magnum_error(404, &format!("ClusterTemplate {id} could not be found.")),
        },
        (Method::POST, ["v1", "clusters"]) => create_cluster(&mut inner, &body),
        (Method::GET, ["v1", "clusters", id]) => match found(&inner, id) {
            Some(i) => json_response(200, &cluster_json(&inner.clusters[i], &api_address)),
            None => magnum_error(404, &format!("Cluster {id} could not be found.")),
        },
        (Method::POST, ["v1", "clusters", id, "actions", "resize"]) => {
            let count = body.get("node_count").and_then(Value::as_i64);
            {
                let index = found(&inner, id);
                resize(&mut inner, index, id, count)
            }
        }
        (Method::PATCH, ["v1", "clusters", id]) => {
            let count = body.as_array().and_then(|ops| {
                ops.iter()
                    .find(|op| op["path"] == "/node_count" && op["op"] == "replace")
                    .and_then(|op| op["value"].as_i64())
            });
            {
                let index = found(&inner, id);
                resize(&mut inner, index, id, count)
            }
        }
        (Method::DELETE, ["v1", "clusters", id]) => match found(&inner, id) {
            Some(i) => {
                let due = Instant::now() + inner.operation_time;
                let cluster = &mut inner.clusters[i];
                cluster.status = "DELETE_IN_PROGRESS".to_owned();
                cluster.status_reason = None;
                cluster.pending = Some((due, Outcome::Gone));
                StatusCode::NO_CONTENT.into_response()
            }
            None => magnum_error(404, &format!("Cluster {id} could not be found.")),
        },
        (Method::GET, ["v1", "certificates", id]) => match found(&inner, id) {
            Some(i) => json_response(
                200,
                &json!({"cluster_uuid": inner.clusters[i].uuid, "pem": inner.ca_pem, "links": []}),
            ),
            None => magnum_error(404, &format!("Cluster {id} could not be found.")),
        },
        (Method::POST, ["v1", "certificates"]) => sign(&inner, &body),
        _ => magnum_error(404, "The resource could not be found."),
    }
}

/// `POST /v3/auth/tokens`.
fn authenticate(inner: &mut Inner, address: &str, body: &Value) -> Response {
    let identity = &body["auth"]["identity"];
    let Some(methods) = identity["methods"].as_array() else {
        return keystone_error(
            400,
            "Bad Request",
            "Expecting to find identity in auth. The server could not comply with the request since it is either malformed or otherwise incorrect.",
        );
    };
    let unauthorized = || {
        keystone_error(
            401,
            "Unauthorized",
            "The request you have made requires authentication.",
        )
    };
    let (method, user, project) = if methods.iter().any(|m| m == "password") {
        let user = &identity["password"]["user"];
        let (Some(id), Some(password)) = (user["id"].as_str(), user["password"].as_str()) else {
            return unauthorized();
        };
        let project = body["auth"]["scope"]["project"]["id"].as_str();
        match inner.users.get(id) {
            Some((expected, own)) if expected == password && project == Some(own.as_str()) => {
                ("password", id.to_owned(), own.clone())
            }
            _ => return unauthorized(),
        }
    } else if methods.iter().any(|m| m == "application_credential") {
        let credential = &identity["application_credential"];
        let (Some(id), Some(secret)) = (credential["id"].as_str(), credential["secret"].as_str())
        else {
            return unauthorized();
        };
        match inner.app_credentials.get(id) {
            Some(expected) if expected == secret => (
                "application_credential",
                FakeOpenStack::USER_ID.to_owned(),
                FakeOpenStack::PROJECT_ID.to_owned(),
            ),
            _ => return unauthorized(),
        }
    } else {
        return unauthorized();
    };
    let token = format!("gAAAAA{}", uuid::Uuid::new_v4().simple());
    inner.tokens.insert(token.clone(), project.clone());
    let now = chrono::Utc::now();
    let stamp = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let magnum = format!("http://{address}/v1");
    let keystone = format!("http://{address}/v3");
    let body = json!({"token": {
        "methods": [method],
        "user": {"id": user, "name": user, "domain": {"id": "default", "name": "Default"}, "password_expires_at": null},
        "project": {"id": project, "name": project, "domain": {"id": "default", "name": "Default"}},
        "roles": [{"id": "member-role", "name": "member"}],
        "is_domain": false,
        "audit_ids": [uuid::Uuid::new_v4().simple().to_string()],
        "issued_at": stamp(now),
        "expires_at": stamp(now + chrono::Duration::hours(1)),
        "catalog": [
            {"type": "identity", "name": "keystone", "id": "keystone-service", "endpoints": [
                {"id": "keystone-public", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": keystone},
            ]},
            {"type": "container-infra", "name": "magnum", "id": "magnum-service", "endpoints": [
                {"id": "magnum-internal", "interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": magnum},
                {"id": "magnum-public", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": magnum},
            ]},
        ],
    }});
    let mut response = json_response(201, &body);
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

/// `POST /v1/clusters`.
fn create_cluster(inner: &mut Inner, body: &Value) -> Response {
    let Some(template) = body["cluster_template_id"].as_str() else {
        return magnum_error(
            400,
            "Invalid input for field/attribute cluster_template_id.",
        );
    };
    if !inner.templates.contains_key(template) {
        return magnum_error(
            404,
            &format!("ClusterTemplate {template} could not be found."),
        );
    }
    let Some(name) = body["name"].as_str() else {
        return magnum_error(400, "Invalid input for field/attribute name.");
    };
    let count = |key: &str| match &body[key] {
        Value::Null => Some(1),
        value => value.as_i64().filter(|n| *n >= 1),
    };
    let Some(node_count) = count("node_count") else {
        return magnum_error(400, "Invalid input for field/attribute node_count.");
    };
    let Some(master_count) = count("master_count") else {
        return magnum_error(400, "Invalid input for field/attribute master_count.");
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let outcome = match &inner.fail_creations {
        Some(reason) => Outcome::Status("CREATE_FAILED", Some(reason.clone())),
        None => Outcome::Status(
            "CREATE_COMPLETE",
            Some("Stack CREATE completed successfully".into()),
        ),
    };
    inner.clusters.push(MagnumCluster {
        uuid: uuid.clone(),
        name: name.to_owned(),
        template: template.to_owned(),
        status: "CREATE_IN_PROGRESS".to_owned(),
        status_reason: None,
        node_count,
        master_count,
        pending: Some((Instant::now() + inner.operation_time, outcome)),
    });
    json_response(202, &json!({"uuid": uuid}))
}

/// A resize to `count` of the cluster at `index`.
fn resize(inner: &mut Inner, index: Option<usize>, id: &str, count: Option<i64>) -> Response {
    let Some(i) = index else {
        return magnum_error(404, &format!("Cluster {id} could not be found."));
    };
    let Some(count) = count.filter(|n| *n >= 1) else {
        return magnum_error(400, "Invalid input for field/attribute node_count.");
    };
    let due = Instant::now() + inner.operation_time;
    let cluster = &mut inner.clusters[i];
    if cluster.pending.is_some() {
        return magnum_error(
            409,
            &format!(
                "Cluster {id} has an operation in progress ({}).",
                cluster.status
            ),
        );
    }
    cluster.status = "UPDATE_IN_PROGRESS".to_owned();
    cluster.status_reason = None;
    cluster.pending = Some((due, Outcome::Resized(count)));
    json_response(202, &json!({"uuid": cluster.uuid}))
}

/// `POST /v1/certificates`.
fn sign(inner: &Inner, body: &Value) -> Response {
    let Some(cluster) = body["cluster_uuid"].as_str() else {
        return magnum_error(400, "Invalid input for field/attribute cluster_uuid.");
    };
    let Some(existing) = inner
        .clusters
        .iter()
        .find(|c| c.uuid == cluster || c.name == cluster)
    else {
        return magnum_error(404, &format!("Cluster {cluster} could not be found."));
    };
    let Some(csr) = body["csr"].as_str() else {
        return magnum_error(400, "Invalid input for field/attribute csr.");
    };
    let signed = (|| {
        let mut request = CertificateSigningRequestParams::from_pem(csr)?;
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        request.params.is_ca = IsCa::ExplicitNoCa;
        let key = KeyPair::from_pem(&inner.ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&inner.ca_pem, key)?;
        Ok::<_, rcgen::Error>(request.signed_by(&issuer)?.pem())
    })();
    match signed {
        Ok(pem) => json_response(
            201,
            &json!({"cluster_uuid": existing.uuid, "csr": csr, "pem": pem, "links": []}),
        ),
        Err(err) => magnum_error(400, &format!("Invalid CSR: {err}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let body = json!({"auth": {"identity": {
            "password": {"user": {"id": "u", "password": "p"}},
            "application_credential": {"id": "a", "secret": "s"},
        }}});
        let shown = redacted(body).to_string();
        assert!(
            !shown.contains("\"p\"") && !shown.contains("\"s\""),
            "{shown}"
        );
        assert!(
            shown.contains("\"u\"") && shown.contains("\"a\""),
            "{shown}"
        );
    }
}
