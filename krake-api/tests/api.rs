//! The REST API end to end over HTTP, against the embedded store and a real
//! etcd: every test runs once on each (`on_both_stores!`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use krake_api::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

// --- helpers ---

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(server: &TestServer) -> Self {
        Api {
            base: server.url(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value, String) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, content_type)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.send(reqwest::Method::GET, path, None).await;
        (s, v)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (s, v, _) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (s, v)
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let (s, v, _) = self.send(reqwest::Method::PUT, path, Some(body)).await;
        (s, v)
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let (s, v, _) = self.send(reqwest::Method::DELETE, path, None).await;
        (s, v)
    }

    /// Opens a watch and returns a stream of its lines (heartbeats as "").
    async fn watch(
        &self,
        path: &str,
    ) -> (
        StatusCode,
        String,
        futures::stream::BoxStream<'static, String>,
    ) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.bytes_stream();
        let lines = futures::stream::unfold(
            (bytes, Vec::<u8>::new()),
            |(mut bytes, mut buffer)| async move {
                loop {
                    if let Some(position) = buffer.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=position).collect();
                        let text = String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
                        return Some((text, (bytes, buffer)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                        _ => return None,
                    }
                }
            },
        );
        (status, content_type, lines.boxed())
    }
}

async fn next_event(lines: &mut futures::stream::BoxStream<'static, String>) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next())
            .await
            .expect("an event within 10 s")
            .expect("the stream is open");
        if !line.is_empty() {
            return serde_json::from_str(&line).unwrap();
        }
    }
}

fn app_body(name: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "manifest": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {"replicas": 1}}],
            "constraints": {"cluster": {}},
        },
    })
}

fn kubeconfig() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    })
}

const APPS: &str = "/kubernetes/namespaces/testing/applications";

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = krake_api::testing::TestServer::embedded().await;
                    super::$name(server).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = krake_testkit::server::etcd_server().await;
                    super::$name(server).await;
                }
            )*
        }
    };
}

on_both_stores!(
    create_read_list_and_errors,
    update_semantics,
    deletion_and_finalizers,
    force_delete,
    sub_operations,
    global_kinds,
    watch_events_in_order_with_heartbeats,
    watch_resume,
    selectors_and_pagination,
    blocking_requests,
    concurrent_writers_without_version,
    misc_endpoints,
);

// --- the cases ---

async fn create_read_list_and_errors(server: TestServer) {
    let api = Api::new(&server);
    let (status, created) = api.post(APPS, &app_body("echo")).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["metadata"]["namespace"], "testing");
    assert_eq!(created["status"]["state"], "PENDING");
    assert!(created["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert_eq!(
        created["metadata"]["created"],
        created["metadata"]["modified"]
    );
    assert!(created["metadata"]["resource_version"].is_string());

    let (status, read) = api.get(&format!("{APPS}/echo")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);

    let (status, problem) = api.post(APPS, &app_body("echo")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["title"], "RESOURCE_ALREADY_EXISTS");
    assert_eq!(
        problem["detail"],
        "Application 'echo' already exists in namespace 'testing'"
    );

    let (status, problem, content_type) = api
        .send(reqwest::Method::GET, &format!("{APPS}/nope"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    assert_eq!(
        problem["detail"],
        "'Application' 'nope' does not exist in namespace 'testing'"
    );

    // 415: not JSON.
    let response = api
        .http
        .post(format!("{}{APPS}", api.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"type": "about:blank", "status": 415, "detail": "415: Unsupported Media Type"})
    );

    // 422 with Krake's detail and the structured errors.
    let (status, problem) = api.post(APPS, &json!({"metadata": {"name": "bad name!"}, "spec": {"manifest": [], "constraints": {"cluster": {}}}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        problem["detail"],
        "{'metadata': {'name': ['Invalid character in resource name.']}, 'spec': {'_schema': ['The application should be defined by a manifest file, a TOSCA template or a CSAR file.']}}"
    );
    assert_eq!(problem["errors"][0]["field"], "metadata.name");

    // 405 and 404 on unknown routes, with problem bodies.
    let (status, problem, _) = api
        .send(
            reqwest::Method::PATCH,
            &format!("{APPS}/echo"),
            Some(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem["detail"], "405: Method Not Allowed");
    let (status, problem) = api.get("/kubernetes/namespaces/testing/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["detail"], "404: Not Found");

    // Lists: in the namespace, across all namespaces; other namespaces apart.
    api.post(
        "/kubernetes/namespaces/other/applications",
        &app_body("app2"),
    )
    .await;
    let (_, list) = api.get(APPS).await;
    assert_eq!(list["kind"], "ApplicationList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, all) = api.get("/kubernetes/applications").await;
    let names: Vec<_> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["app2", "echo"],
        "store key order: namespace, then name"
    );

    // A name that cannot be a key is simply not found.
    let (status, _) = api.get(&format!("{APPS}/a%20b")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn update_semantics(server: TestServer) {
    let api = Api::new(&server);
    let (_, created) = api.post(APPS, &app_body("echo")).await;
    let path = format!("{APPS}/echo");

    // Unchanged body: 400 "no update".
    let (status, problem) = api.put(&path, &created).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["detail"], "The body contained no update.");

    // A change: 200, modified bumped, status untouched even if the body's differs.
    let mut body = created.clone();
    body["metadata"]["labels"] = json!({"tier": "web"});
    body["spec"]["manifest"][0]["spec"]["replicas"] = json!(2);
    body["status"]["state"] = json!("RUNNING");
    let (status, updated) = api.put(&path, &body).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["metadata"]["labels"]["tier"], "web");
    assert_eq!(updated["status"]["state"], "PENDING");
    assert_ne!(
        updated["metadata"]["modified"],
        created["metadata"]["modified"]
    );
    assert_eq!(
        updated["metadata"]["created"],
        created["metadata"]["created"]
    );
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The stale resource_version of the first read: 409.
    let mut stale = created.clone();
    stale["metadata"]["labels"] = json!({"tier": "db"});
    let (status, problem) = api.put(&path, &stale).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["title"], "TRANSACTION_ERROR");
    // Without a resource_version (a Krake client): last writer wins.
    let mut krake_client = stale.clone();
    krake_client["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resource_version");
    let (status, _) = api.put(&path, &krake_client).await;
    assert_eq!(status, StatusCode::OK);

    // Immutable field: 400 naming it.
    let (_, current) = api.get(&path).await;
    let mut renamed = current.clone();
    renamed["metadata"]["name"] = json!("other");
    let (status, problem) = api.put(&path, &renamed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["detail"],
        "Trying to update an immutable field: name"
    );

    // A body missing server fields: 422 as Krake.
    let (status, problem) = api.put(&path, &app_body("echo")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("'uid': ['Missing data for required field.']")
    );

    // Missing object: 404.
    let mut ghost = current.clone();
    ghost["metadata"]["name"] = json!("ghost");
    let (status, _) = api.put(&format!("{APPS}/ghost"), &ghost).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn deletion_and_finalizers(server: TestServer) {
    let api = Api::new(&server);
    let mut body = app_body("echo");
    body["metadata"]["finalizers"] = json!(["keep"]);
    api.post(APPS, &body).await;
    let path = format!("{APPS}/echo");

    let (status, deleted) = api.delete(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(deleted["metadata"]["deleted"].is_string());
    assert_eq!(
        deleted["metadata"]["finalizers"],
        json!(["keep", "cascade_deletion"])
    );
    // A second DELETE changes nothing.
    let (status, again) = api.delete(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["metadata"]["deleted"], deleted["metadata"]["deleted"]);
    assert_eq!(
        again["metadata"]["finalizers"],
        deleted["metadata"]["finalizers"]
    );

    // Adding a finalizer while deleting: 409.
    let mut add = again.clone();
    add["metadata"]["finalizers"] = json!(["keep", "cascade_deletion", "extra"]);
    let (status, problem) = api.put(&path, &add).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        problem["detail"],
        "Finalizers can only be removed if a deletion is in progress."
    );

    // Popping the finalizers one by one; the last pop removes the object.
    let mut pop = again.clone();
    pop["metadata"]["finalizers"] = json!(["keep"]);
    let (status, popped) = api.put(&path, &pop).await;
    assert_eq!(status, StatusCode::OK);
    let mut last = popped.clone();
    last["metadata"]["finalizers"] = json!([]);
    let (status, gone) = api.put(&path, &last).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(gone["metadata"]["finalizers"], json!([]));
    let (status, _) = api.get(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.delete(&path).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An application with a shutdown hook waits for cleaning.
    let mut hooked = app_body("hooked");
    hooked["spec"]["hooks"] = json!(["shutdown"]);
    api.post(APPS, &hooked).await;
    let (_, deleted) = api.delete(&format!("{APPS}/hooked")).await;
    assert_eq!(deleted["status"]["state"], "WAITING_FOR_CLEANING");
}

async fn force_delete(server: TestServer) {
    let api = Api::new(&server);
    api.post(APPS, &app_body("echo")).await;
    let (status, removed) = api.delete(&format!("{APPS}/echo?force=True")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(removed["metadata"]["deleted"].is_string());
    let (status, _) = api.get(&format!("{APPS}/echo")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.delete(&format!("{APPS}/echo?force=True")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // `force=true` (not the exact string True) is an ordinary delete.
    api.post(APPS, &app_body("soft")).await;
    api.delete(&format!("{APPS}/soft?force=true")).await;
    let (status, _) = api.get(&format!("{APPS}/soft")).await;
    assert_eq!(status, StatusCode::OK);
    // Only applications and clusters can be forced.
    let role = json!({"metadata": {"name": "r"}, "rules": []});
    api.post("/core/roles", &role).await;
    api.delete("/core/roles/r?force=True").await;
    let (status, still) = api.get("/core/roles/r").await;
    assert_eq!(status, StatusCode::OK);
    assert!(still["metadata"]["deleted"].is_string());
}

async fn sub_operations(server: TestServer) {
    let api = Api::new(&server);
    let (_, created) = api.post(APPS, &app_body("st")).await;
    let path = format!("{APPS}/st");

    // /status: only the status changes, modified stays.
    let mut body = created.clone();
    body["status"]["state"] = json!("RUNNING");
    body["status"]["complete_token"] = json!("secret");
    body["status"]["shutdown_token"] = json!("bye");
    body["metadata"]["labels"] = json!({"ignored": "yes"});
    let (status, updated) = api.put(&format!("{path}/status"), &body).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"]["state"], "RUNNING");
    assert_eq!(updated["metadata"]["labels"], json!({}));
    assert_eq!(
        updated["metadata"]["modified"],
        created["metadata"]["modified"]
    );

    // /binding: scheduled_to, timestamps, owner.
    let cluster =
        json!({"api": "kubernetes", "kind": "Cluster", "namespace": "testing", "name": "c1"});
    let (status, bound) = api
        .put(&format!("{path}/binding"), &json!({"cluster": cluster}))
        .await;
    assert_eq!(status, StatusCode::OK, "{bound}");
    assert_eq!(bound["status"]["scheduled_to"], cluster);
    assert!(bound["status"]["scheduled"].is_string());
    assert!(bound["status"]["kube_controller_triggered"].is_string());
    assert_eq!(bound["metadata"]["owners"], json!([cluster]));
    let (_, again) = api
        .put(&format!("{path}/binding"), &json!({"cluster": cluster}))
        .await;
    assert_eq!(again["metadata"]["owners"].as_array().unwrap().len(), 1);
    let (status, _) = api
        .put(&format!("{path}/binding"), &json!({"cloud": cluster}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // /shutdown: token checked; moves DEGRADED/WAITING_FOR_CLEANING on.
    let (status, problem) = api
        .put(&format!("{path}/shutdown"), &json!({"token": "wrong"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        problem["detail"],
        "401: No token has been provided or the provided one is invalid."
    );
    let (status, _) = api
        .put(&format!("{path}/shutdown"), &json!({"token": "bye"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // /retry: only for DEGRADED.
    let (status, problem) = api.put(&format!("{path}/retry"), &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // As Krake answers (wire/krakectl/krakectl_transcript2.txt).
    assert_eq!(problem["title"], "UPDATE_ERROR");
    assert_eq!(problem["detail"], "No migration or deletion retry needed");
    let (_, current) = api.get(&path).await;
    let mut degraded = current.clone();
    degraded["status"]["state"] = json!("DEGRADED");
    api.put(&format!("{path}/status"), &degraded).await;
    let (status, retried) = api.put(&format!("{path}/retry"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(retried["status"]["state"], "WAITING_FOR_CLEANING");
    let (_, shut) = api
        .put(&format!("{path}/shutdown"), &json!({"token": "bye"}))
        .await;
    assert_eq!(shut["status"]["state"], "READY_FOR_ACTION");

    // /complete: no token set means 401; the right token completes.
    let (status, _) = api.put(&format!("{path}/complete"), &json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, done) = api
        .put(&format!("{path}/complete"), &json!({"token": "secret"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(done["status"]["state"], "READY_FOR_ACTION");
    assert!(done["metadata"]["deleted"].is_string());
    assert_eq!(done["metadata"]["finalizers"], json!([]));

    // Cluster binding to a cloud.
    let clusters = "/kubernetes/namespaces/testing/clusters";
    let (status, _) = api.post(clusters, &json!({"metadata": {"name": "c1"}, "spec": {"kubeconfig": kubeconfig(), "constraints": {"cloud": {}}}})).await;
    assert_eq!(status, StatusCode::OK);
    let cloud =
        json!({"api": "infrastructure", "kind": "Cloud", "namespace": "testing", "name": "os"});
    let (status, bound) = api
        .put(&format!("{clusters}/c1/binding"), &json!({"cloud": cloud}))
        .await;
    assert_eq!(status, StatusCode::OK, "{bound}");
    assert_eq!(bound["status"]["scheduled_to"], cloud);
    // Sub-operations a kind does not have are not routes.
    let (status, _) = api
        .put(&format!("{clusters}/c1/complete"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn global_kinds(server: TestServer) {
    let api = Api::new(&server);
    let role = json!({"metadata": {"name": "reader"}, "rules": [{"api": "kubernetes", "resources": ["applications"], "namespaces": [""], "verbs": ["get", "list"]}]});
    let (status, created) = api.post("/core/roles", &role).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["metadata"]["namespace"], Value::Null);
    let binding = json!({"metadata": {"name": "b"}, "users": ["system:anonymous"], "roles": ["reader", "admin"]});
    api.post("/core/rolebindings", &binding).await;
    let (_, me) = api.get("/me").await;
    assert_eq!(
        me,
        json!({"user": "system:anonymous", "roles": ["admin", "reader"]})
    );
    let (status, problem) = api.get("/core/roles/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Krake's words, `None` included (krake/api/helpers.py, `load`).
    assert_eq!(
        problem["detail"],
        "'Role' 'nope' does not exist in namespace None"
    );
    let (_, list) = api.get("/core/roles").await;
    assert_eq!(list["kind"], "RoleList");
    // Every kind answers its list route.
    for kind in krake_data::registry::ALL {
        let path = kind.collection_path(Some("testing"));
        let (status, list) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(list["kind"], kind.list_kind);
    }
}

async fn watch_events_in_order_with_heartbeats(server: TestServer) {
    let api = Api::new(&server);
    let (status, content_type, mut lines) = api.watch(&format!("{APPS}?watch&heartbeat=1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/x-ndjson");
    let (_, mut all_lines) = {
        let (_, _, lines) = api
            .watch("/kubernetes/applications?watch=false&heartbeat=0")
            .await;
        ((), lines)
    };
    // A change in another namespace is not seen by the namespaced watch.
    api.post(
        "/kubernetes/namespaces/other/applications",
        &app_body("elsewhere"),
    )
    .await;
    let (_, created) = api.post(APPS, &app_body("echo")).await;
    let mut body = created.clone();
    body["metadata"]["labels"] = json!({"a": "b"});
    api.put(&format!("{APPS}/echo"), &body).await;
    api.delete(&format!("{APPS}/echo?force=True")).await;

    let added = next_event(&mut lines).await;
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["metadata"]["name"], "echo");
    assert_eq!(added["object"], created);
    let modified = next_event(&mut lines).await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["metadata"]["labels"]["a"], "b");
    let deleted = next_event(&mut lines).await;
    assert_eq!(deleted["type"], "DELETED");
    // DELETED carries the object as it was just before.
    assert_eq!(deleted["object"]["metadata"]["labels"]["a"], "b");

    // Heartbeats: bare newlines, about one per second.
    let mut heartbeats = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2600);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next()).await {
        assert!(line.is_empty(), "only heartbeats now, got {line}");
        heartbeats += 1;
    }
    assert!(heartbeats >= 2, "{heartbeats} heartbeats");

    // The all-namespaces watch saw all four events, in order.
    let types: Vec<String> = {
        let mut types = Vec::new();
        for _ in 0..4 {
            let event = next_event(&mut all_lines).await;
            types.push(format!(
                "{} {}",
                event["type"].as_str().unwrap(),
                event["object"]["metadata"]["name"].as_str().unwrap()
            ));
        }
        types
    };
    assert_eq!(
        types,
        [
            "ADDED elsewhere",
            "ADDED echo",
            "MODIFIED echo",
            "DELETED echo"
        ]
    );
    assert!(server.state().metrics().open_watches() >= 1);

    let (status, problem) = api.get(&format!("{APPS}?watch&heartbeat=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
}

async fn watch_resume(server: TestServer) {
    let api = Api::new(&server);
    let (_, first) = api.post(APPS, &app_body("one")).await;
    let version: i64 = first["metadata"]["resource_version"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    api.post(APPS, &app_body("two")).await;
    api.post(APPS, &app_body("three")).await;
    // Resume after the first: exactly the two later creations, then live ones.
    let (status, _, mut lines) = api
        .watch(&format!(
            "{APPS}?watch&heartbeat=0&resource_version={version}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        next_event(&mut lines).await["object"]["metadata"]["name"],
        "two"
    );
    assert_eq!(
        next_event(&mut lines).await["object"]["metadata"]["name"],
        "three"
    );
    api.post(APPS, &app_body("four")).await;
    assert_eq!(
        next_event(&mut lines).await["object"]["metadata"]["name"],
        "four"
    );
    // A second resume is served too (now from the hub's buffer).
    let (_, _, mut again) = api
        .watch(&format!(
            "{APPS}?watch&heartbeat=0&resource_version={version}"
        ))
        .await;
    assert_eq!(
        next_event(&mut again).await["object"]["metadata"]["name"],
        "two"
    );

    let (status, _) = api.get(&format!("{APPS}?watch&resource_version=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn selectors_and_pagination(server: TestServer) {
    let api = Api::new(&server);
    for i in 0..25 {
        let mut body = app_body(&format!("app-{i:02}"));
        body["metadata"]["labels"] = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }, "group": format!("g{}", i % 3)});
        let (status, _) = api.post(APPS, &body).await;
        assert_eq!(status, StatusCode::OK);
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, even) = api
        .get(&format!("{APPS}?label_selector=parity%3Deven"))
        .await;
    assert_eq!(names(&even).len(), 13);
    let (_, some) = api
        .get(&format!(
            "{APPS}?label_selector=parity%3Dodd,group%20in%20(g0,%20g1)"
        ))
        .await;
    assert!(names(&some).iter().all(|n| {
        let i: u32 = n[4..].parse().unwrap();
        i % 2 == 1 && i % 3 != 2
    }));
    assert_eq!(names(&some).len(), 8);
    let (status, problem) = api
        .get(&format!("{APPS}?label_selector=parity%20in%20("))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid label selector")
    );

    // Pages of 10 from one snapshot: a creation between pages is not seen.
    let (_, page1) = api.get(&format!("{APPS}?limit=10")).await;
    assert_eq!(names(&page1).len(), 10);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_owned();
    api.post(APPS, &app_body("app-99")).await;
    let (_, page2) = api.get(&format!("{APPS}?limit=10&continue={token}")).await;
    let token = page2["metadata"]["continue"].as_str().unwrap().to_owned();
    let (_, page3) = api.get(&format!("{APPS}?limit=10&continue={token}")).await;
    assert!(page3["metadata"].get("continue").is_none());
    let all: Vec<String> = [names(&page1), names(&page2), names(&page3)].concat();
    let expected: Vec<String> = (0..25).map(|i| format!("app-{i:02}")).collect();
    assert_eq!(all, expected);
    let (status, _) = api.get(&format!("{APPS}?limit=10&continue=garbage")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get(&format!("{APPS}?limit=ten")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn blocking_requests(server: TestServer) {
    let api = Api::new(&server);
    let base = api.base.clone();
    // Create, blocking until RUNNING; another client sets the status.
    let creator = tokio::spawn(async move {
        let http = reqwest::Client::new();
        http.post(format!("{base}{APPS}?blocking=running"))
            .json(&app_body("slow"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let mut current = Value::Null;
    for _ in 0..100 {
        let (status, value) = api.get(&format!("{APPS}/slow")).await;
        if status == StatusCode::OK {
            current = value;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Unrelated objects of the namespace do not wake it (Krake's bug).
    let mut other = app_body("other");
    other["metadata"]["labels"] = json!({"x": "y"});
    api.post(APPS, &other).await;
    let (_, other_now) = api.get(&format!("{APPS}/other")).await;
    let mut other_running = other_now.clone();
    other_running["status"]["state"] = json!("RUNNING");
    api.put(&format!("{APPS}/other/status"), &other_running)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!creator.is_finished(), "woken by another object");
    current["status"]["state"] = json!("RUNNING");
    api.put(&format!("{APPS}/slow/status"), &current).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), creator)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answered["status"]["state"], "RUNNING");
    assert_eq!(answered["metadata"]["name"], "slow");

    // Delete, blocking until the object is gone.
    let base = api.base.clone();
    let deleter = tokio::spawn(async move {
        let http = reqwest::Client::new();
        http.delete(format!("{base}{APPS}/slow?blocking=deleted"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let (_, deleting) = {
        let mut result = (StatusCode::OK, Value::Null);
        for _ in 0..100 {
            result = api.get(&format!("{APPS}/slow")).await;
            if result.1["metadata"]["deleted"].is_string() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        result
    };
    let mut release = deleting.clone();
    release["metadata"]["finalizers"] = json!([]);
    api.put(&format!("{APPS}/slow"), &release).await;
    let answered = tokio::time::timeout(Duration::from_secs(10), deleter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answered["status"]["state"], "DELETED");
}

async fn concurrent_writers_without_version(server: TestServer) {
    let api = Api::new(&server);
    let (_, created) = api.post(APPS, &app_body("busy")).await;
    let mut base = created.clone();
    base["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resource_version");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut body = base.clone();
        body["metadata"]["labels"] = json!({"writer": format!("w{i}")});
        let url = format!("{}{APPS}/busy", api.base);
        tasks.push(tokio::spawn(async move {
            reqwest::Client::new()
                .put(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(
            status == StatusCode::OK
                || status == StatusCode::BAD_REQUEST
                || status == StatusCode::CONFLICT,
            "{status}"
        );
        if status == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok >= 1);
    let (_, last) = api.get(&format!("{APPS}/busy")).await;
    assert!(
        last["metadata"]["labels"]["writer"]
            .as_str()
            .unwrap()
            .starts_with('w')
    );
}

async fn misc_endpoints(server: TestServer) {
    let api = Api::new(&server);
    let (status, version) = api.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version["version"], "1.0.1");
    let (status, release) = api.get("/release").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(release, json!("You released the Krake."));
    let (status, _) = api.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, ready) = api.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (status, openapi) = api.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(
        openapi["paths"]["/kubernetes/namespaces/{namespace}/applications/{name}/binding"]["put"]
            .is_object()
    );
    assert!(openapi["components"]["schemas"]["Application"]["properties"]["spec"].is_object());
    api.get(APPS).await;
    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().unwrap();
    assert!(text.contains("krake_api_http_requests_total{route=\"/kubernetes/namespaces/{namespace}/applications\",method=\"GET\",code=\"200\"}"), "{text}");
    assert!(
        text.contains("krake_api_store_operation_duration_seconds_count{operation=\"list\""),
        "{text}"
    );
}
