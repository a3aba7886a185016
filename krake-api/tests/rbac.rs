//! RBAC end to end: users (TLS client certificates) x verbs x resources
//! (sub-operations included) x namespaces, list-all and watch-all included,
//! against a server over real Roles and RoleBindings (Krake's base roles
//! from `config/base_roles.yaml` plus test roles), on both stores. Every
//! cell is checked for its status code; lists and watches across all
//! namespaces are also checked for what they show.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use krake_api::bootstrap;
use krake_api::store::Store;
use krake_api::testing::pki::TestCa;
use krake_api::testing::{Backing, TestServer, embedded_store};
use krake_api::{ApiConfig, AuthorizationMode};
use krake_testkit::server::etcd_store;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const BASE_ROLES: &str = include_str!("../../config/base_roles.yaml");

const TEST_ROLES: &str = r#"
api: core
kind: Role
metadata: {name: editor-a}
rules:
- api: kubernetes
  resources: [applications, applications/status]
  namespaces: [a]
  verbs: [create, list, get, update, delete]
---
api: core
kind: Role
metadata: {name: reader-b}
rules:
- {api: "", resources: [""], namespaces: [b], verbs: [get, list]}
---
api: core
kind: Role
metadata: {name: role-reader}
rules:
- {api: core, resources: [roles], namespaces: [""], verbs: [get, list]}
---
api: core
kind: RoleBinding
metadata: {name: alice}
users: [alice]
roles: [editor-a]
---
api: core
kind: RoleBinding
metadata: {name: bob}
users: [bob]
roles: [reader-b]
---
api: core
kind: RoleBinding
metadata: {name: carol}
users: [carol]
roles: [role-reader]
---
api: core
kind: RoleBinding
metadata: {name: mallory}
users: [mallory]
roles: [ghost]
"#;

/// The users of the matrix, in the column order of [`MATRIX`].
const USERS: [&str; 6] = [
    "system:admin",
    "alice",
    "bob",
    "carol",
    "mallory",
    "anonymous",
];

#[derive(Debug, Clone, Copy)]
enum Op {
    Create(&'static str),
    Get(&'static str),
    List(&'static str),
    Watch(&'static str),
    Update(&'static str),
    Status(&'static str),
    Delete(&'static str),
    ListAll,
    WatchAll,
    RoleGet,
    RoleList,
    RoleCreate,
}

/// Expected status per user: admin, alice, bob, carol, mallory, anonymous.
const MATRIX: &[(Op, [u16; 6])] = &[
    (Op::Create("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Create("b"), [200, 403, 403, 403, 403, 401]),
    (Op::Get("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Get("b"), [200, 403, 200, 403, 403, 401]),
    (Op::List("a"), [200, 200, 403, 403, 403, 401]),
    (Op::List("b"), [200, 403, 200, 403, 403, 401]),
    (Op::Watch("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Watch("b"), [200, 403, 200, 403, 403, 401]),
    (Op::Update("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Update("b"), [200, 403, 403, 403, 403, 401]),
    (Op::Status("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Status("b"), [200, 403, 403, 403, 403, 401]),
    (Op::Delete("a"), [200, 200, 403, 403, 403, 401]),
    (Op::Delete("b"), [200, 403, 403, 403, 403, 401]),
    (Op::ListAll, [200, 200, 200, 403, 403, 401]),
    (Op::WatchAll, [200, 200, 200, 403, 403, 401]),
    (Op::RoleGet, [200, 403, 403, 200, 403, 401]),
    (Op::RoleList, [200, 403, 403, 200, 403, 401]),
    (Op::RoleCreate, [200, 403, 403, 403, 403, 401]),
];

fn app(name: &str, label: usize) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"n": label.to_string()}},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}],
            "constraints": {"cluster": {}},
        },
    })
}

fn apps(namespace: &str) -> String {
    format!("/kubernetes/namespaces/{namespace}/applications")
}

struct Users {
    base: String,
    clients: Vec<reqwest::Client>,
    admin: usize,
}

impl Users {
    fn new(server: &TestServer, ca: &TestCa) -> Self {
        let clients = USERS
            .iter()
            .map(|user| match *user {
                "anonymous" => ca.http_client(None),
                user => ca.http_client(Some(&ca.client(user))),
            })
            .collect();
        Users {
            base: server.url(),
            clients,
            admin: 0,
        }
    }

    async fn send(
        &self,
        user: usize,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.clients[user].request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Opens a watch; the status, and the stream when it is 200.
    async fn watch(
        &self,
        user: usize,
        path: &str,
    ) -> (
        StatusCode,
        Option<futures::stream::BoxStream<'static, Value>>,
    ) {
        let url = format!("{}{path}?watch&heartbeat=0", self.base);
        let response = self.clients[user].get(url).send().await.unwrap();
        let status = response.status();
        if status != StatusCode::OK {
            return (status, None);
        }
        let lines = response
            .bytes_stream()
            .map(|chunk| chunk.unwrap())
            .scan(Vec::new(), |buffer, chunk| {
                buffer.extend_from_slice(&chunk);
                let mut events = Vec::new();
                while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    if line.len() > 1 {
                        events.push(serde_json::from_slice::<Value>(&line).unwrap());
                    }
                }
                futures::future::ready(Some(futures::stream::iter(events)))
            })
            .flatten()
            .boxed();
        (status, Some(lines))
    }

    /// Makes sure `x` exists in `namespace` (as the admin).
    async fn ensure(&self, namespace: &str) {
        let path = format!("{}/x", apps(namespace));
        let (status, _) = self.send(self.admin, Method::GET, &path, None).await;
        if status == StatusCode::NOT_FOUND {
            let (status, body) = self
                .send(
                    self.admin,
                    Method::POST,
                    &apps(namespace),
                    Some(&app("x", 0)),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }

    async fn run(&self, user: usize, op: Op, counter: usize) -> StatusCode {
        match op {
            Op::Create(ns) => {
                let body = app(&format!("c{counter}"), counter);
                self.send(user, Method::POST, &apps(ns), Some(&body))
                    .await
                    .0
            }
            Op::Get(ns) => {
                self.ensure(ns).await;
                self.send(user, Method::GET, &format!("{}/x", apps(ns)), None)
                    .await
                    .0
            }
            Op::List(ns) => self.send(user, Method::GET, &apps(ns), None).await.0,
            Op::Watch(ns) => self.watch(user, &apps(ns)).await.0,
            Op::Update(ns) => {
                self.ensure(ns).await;
                let path = format!("{}/x", apps(ns));
                let (_, mut current) = self.send(self.admin, Method::GET, &path, None).await;
                current["metadata"]["labels"] = json!({"n": counter.to_string()});
                self.send(user, Method::PUT, &path, Some(&current)).await.0
            }
            Op::Status(ns) => {
                self.ensure(ns).await;
                let path = format!("{}/x", apps(ns));
                let (_, current) = self.send(self.admin, Method::GET, &path, None).await;
                self.send(user, Method::PUT, &format!("{path}/status"), Some(&current))
                    .await
                    .0
            }
            Op::Delete(ns) => {
                self.ensure(ns).await;
                let path = format!("{}/x?force=True", apps(ns));
                self.send(user, Method::DELETE, &path, None).await.0
            }
            Op::ListAll => {
                self.send(user, Method::GET, "/kubernetes/applications", None)
                    .await
                    .0
            }
            Op::WatchAll => self.watch(user, "/kubernetes/applications").await.0,
            Op::RoleGet => {
                self.send(user, Method::GET, "/core/roles/editor-a", None)
                    .await
                    .0
            }
            Op::RoleList => self.send(user, Method::GET, "/core/roles", None).await.0,
            Op::RoleCreate => {
                let role = json!({"metadata": {"name": format!("r{counter}")}, "rules": []});
                self.send(user, Method::POST, "/core/roles", Some(&role))
                    .await
                    .0
            }
        }
    }
}

async fn rbac_server(store: Arc<dyn Store>, backing: Backing, ca: &TestCa) -> TestServer {
    for text in [BASE_ROLES, TEST_ROLES] {
        bootstrap::load(store.clone(), text, false).await.unwrap();
    }
    let config = ApiConfig {
        authorization: AuthorizationMode::Rbac,
        ..ApiConfig::default()
    };
    let tls = ca.server_config().unwrap();
    TestServer::start_with(store, config, backing, Some(tls)).await
}

fn namespaces(list: &Value) -> BTreeSet<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["namespace"].as_str().unwrap().to_owned())
        .collect()
}

async fn matrix(store: Arc<dyn Store>, backing: Backing) {
    let ca = TestCa::new("krake test CA");
    let server = rbac_server(store, backing, &ca).await;
    let users = Users::new(&server, &ca);
    let mut failures = Vec::new();
    let mut counter = 0;
    for (op, expected) in MATRIX {
        for (user, want) in expected.iter().enumerate() {
            counter += 1;
            let got = users.run(user, *op, counter).await;
            if got.as_u16() != *want {
                failures.push(format!("{} {op:?}: {got}, expected {want}", USERS[user]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "cells that differ:\n{}",
        failures.join("\n")
    );

    // What list-all shows: each user only the namespaces it may list in.
    users.ensure("a").await;
    users.ensure("b").await;
    let shown = |user: usize| {
        let users = &users;
        async move {
            let (status, list) = users
                .send(user, Method::GET, "/kubernetes/applications", None)
                .await;
            assert_eq!(status, StatusCode::OK);
            namespaces(&list)
        }
    };
    let both = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
    assert_eq!(shown(0).await, both, "the admin sees every namespace");
    assert_eq!(shown(1).await, BTreeSet::from(["a".to_owned()]));
    assert_eq!(shown(2).await, BTreeSet::from(["b".to_owned()]));

    // What watch-all shows: alice sees the events of namespace a only.
    let (_, admin_events) = users.watch(0, "/kubernetes/applications").await;
    let (_, alice_events) = users.watch(1, "/kubernetes/applications").await;
    for (ns, name) in [("a", "w1"), ("b", "w2"), ("a", "w3")] {
        let (status, _) = users
            .send(0, Method::POST, &apps(ns), Some(&app(name, 0)))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let names = |events: futures::stream::BoxStream<'static, Value>, count: usize| async move {
        tokio::time::timeout(
            Duration::from_secs(10),
            events
                .take(count)
                .map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap()
    };
    assert_eq!(names(admin_events.unwrap(), 3).await, ["w1", "w2", "w3"]);
    assert_eq!(names(alice_events.unwrap(), 2).await, ["w1", "w3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_on_embedded_store() {
    let (store, backing) = embedded_store();
    matrix(store, backing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_on_etcd() {
    let (store, backing) = etcd_store().await;
    matrix(store, backing).await;
}

/// A change of Roles or RoleBindings takes effect without a restart: the
/// authorizer follows them through the watch hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_take_effect_without_restart() {
    let ca = TestCa::new("krake test CA");
    let (store, backing) = embedded_store();
    let server = rbac_server(store, backing, &ca).await;
    let users = Users::new(&server, &ca);
    let dave = ca.http_client(Some(&ca.client("dave")));
    let list_b = format!("{}{}", server.url(), apps("b"));
    let status = dave.get(&list_b).send().await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN);

    let binding = json!({"metadata": {"name": "dave"}, "users": ["dave"], "roles": ["reader-b"]});
    let (status, body) = users
        .send(0, Method::POST, "/core/rolebindings", Some(&binding))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = dave.get(&list_b).send().await.unwrap().status();
        if status == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let me: Value = dave
        .get(format!("{}/me", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me, json!({"user": "dave", "roles": ["reader-b"]}));
    // A watch opened while allowed...
    let watch = dave
        .get(format!("{list_b}?watch&heartbeat=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), StatusCode::OK);
    let mut watch_body = watch.bytes_stream();

    let (status, _) = users
        .send(0, Method::DELETE, "/core/rolebindings/dave", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = dave.get(&list_b).send().await.unwrap().status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...ends at the next event once the access is revoked, without it.
    let (status, _) = users
        .send(0, Method::POST, &apps("b"), Some(&app("after-revoke", 0)))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut received = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = watch_body.next().await {
            match chunk {
                Ok(bytes) => received.extend_from_slice(&bytes),
                Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch did not end");
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("after-revoke"), "{text}");
}

/// Krake's base roles give each component what it needs and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_roles_are_least_privilege() {
    let ca = TestCa::new("krake test CA");
    let (store, backing) = embedded_store();
    let server = rbac_server(store, backing, &ca).await;
    let client = |user: &str| ca.http_client(Some(&ca.client(user)));
    let base = server.url();
    let get = |user: &str, path: &str| {
        let request = client(user).get(format!("{base}{path}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        get("system:scheduler", "/kubernetes/applications").await,
        200
    );
    assert_eq!(get("system:scheduler", "/core/globalmetrics").await, 200);
    assert_eq!(get("system:scheduler", "/core/roles").await, 403);
    assert_eq!(get("system:gc", "/infrastructure/globalclouds").await, 200);
    assert_eq!(
        get("system:complete-hook", "/kubernetes/applications").await,
        403
    );
    assert_eq!(get("system:admin", "/core/rolebindings").await, 200);
    let me: Value = client("system:scheduler")
        .get(format!("{base}/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"user": "system:scheduler", "roles": ["role:scheduler"]})
    );
    // The complete hook may complete, but nothing else.
    let put = client("system:complete-hook")
        .put(format!(
            "{base}/kubernetes/namespaces/a/applications/x/complete"
        ))
        .json(&json!({"token": "t"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(put, StatusCode::NOT_FOUND, "allowed, and x does not exist");
}
