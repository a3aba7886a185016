//! The API when things go wrong: etcd down and back, watch resume from
//! compacted history, and one store watch shared by many HTTP watchers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use krake_api::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const APPS: &str = "/kubernetes/namespaces/testing/applications";

fn app_body(name: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}],
            "constraints": {"cluster": {}},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_gives_503_quickly_then_recovers() {
    let mut server = krake_testkit::server::etcd_server().await;
    let http = reqwest::Client::new();
    let url = server.url();
    let created = http
        .post(format!("{url}{APPS}"))
        .json(&app_body("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::OK);
    // A watch open across the outage.
    let watch = http
        .get(format!("{url}{APPS}?watch&heartbeat=0"))
        .send()
        .await
        .unwrap();
    let mut watch_body = watch.bytes_stream();

    krake_testkit::server::etcd_of(&mut server).unwrap().stop();
    for (method, path, body) in [
        (reqwest::Method::GET, format!("{APPS}/a"), None),
        (reqwest::Method::GET, APPS.to_owned(), None),
        (reqwest::Method::POST, APPS.to_owned(), Some(app_body("b"))),
        (reqwest::Method::DELETE, format!("{APPS}/a"), None),
        (reqwest::Method::GET, "/readyz".to_owned(), None),
    ] {
        let start = Instant::now();
        let mut request = http.request(method.clone(), format!("{url}{path}"));
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {path}"
        );
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 503);
        // The etcd store's request timeout in tests is 2 s.
        assert!(
            elapsed < Duration::from_secs(4),
            "{method} {path} took {elapsed:?}"
        );
    }
    // Liveness is not readiness.
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    krake_testkit::server::etcd_of(&mut server)
        .unwrap()
        .start_again()
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..100 {
        let response = http.get(format!("{url}{APPS}/a")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the API did not recover after etcd came back");
    let ready = http.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // The watch opened before the outage still delivers: the hub reconnected.
    let response = http
        .post(format!("{url}{APPS}"))
        .json(&app_body("after"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let chunk = tokio::time::timeout(Duration::from_secs(15), watch_body.next())
        .await
        .expect("an event after recovery")
        .unwrap()
        .unwrap();
    let event: Value =
        serde_json::from_slice(chunk.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["metadata"]["name"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_compacted_history_is_410_on_embedded() {
    let (store, backing, config) = krake_api::testing::short_history_store();
    let server = TestServer::start(store, config, backing).await;
    let http = reqwest::Client::new();
    let url = server.url();
    for i in 0..20 {
        let response = http
            .post(format!("{url}{APPS}"))
            .json(&app_body(&format!("a{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = http
        .get(format!("{url}{APPS}?watch&resource_version=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 410);
    assert!(
        problem["detail"].as_str().unwrap().contains("too old"),
        "{problem}"
    );
    // A recent version is still served.
    let response = http
        .get(format!("{url}{APPS}?watch&heartbeat=0&resource_version=18"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let event: Value =
        serde_json::from_slice(chunk.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(event["object"]["metadata"]["resource_version"], "19");
    // Pages of an old snapshot are gone too.
    let token = krake_api::pagination::ContinueToken {
        revision: 1,
        last_key: String::new(),
    }
    .encode();
    let response = http
        .get(format!("{url}{APPS}?limit=5&continue={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_compacted_history_is_410_on_etcd() {
    let mut server = krake_testkit::server::etcd_server().await;
    let http = reqwest::Client::new();
    let url = server.url();
    let mut last = 0;
    for i in 0..5 {
        let created: Value = http
            .post(format!("{url}{APPS}"))
            .json(&app_body(&format!("a{i}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        last = created["metadata"]["resource_version"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    }
    krake_testkit::server::etcd_of(&mut server)
        .unwrap()
        .compact(last)
        .await
        .unwrap();
    let response = http
        .get(format!("{url}{APPS}?watch&resource_version=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_share_one_store_watch() {
    let server = TestServer::embedded().await;
    let http = reqwest::Client::new();
    let url = server.url();
    let mut streams = Vec::new();
    for i in 0..30 {
        // Namespaced and all-namespace watchers of one kind share the store watch.
        let path = if i % 2 == 0 {
            APPS.to_owned()
        } else {
            "/kubernetes/applications".to_owned()
        };
        let response = http
            .get(format!("{url}{path}?watch&heartbeat=0"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        streams.push(response.bytes_stream());
    }
    http.post(format!("{url}{APPS}"))
        .json(&app_body("shared"))
        .send()
        .await
        .unwrap();
    for stream in &mut streams {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&chunk).contains("\"shared\""));
    }
    assert_eq!(server.state().metrics().open_watches(), 30);
    let metrics = server.state().metrics().encode();
    let watches = metrics
        .lines()
        .find(|line| {
            line.starts_with("krake_api_store_operation_duration_seconds_count{operation=\"watch\"")
        })
        .expect("a store watch was recorded");
    assert!(
        watches.ends_with(" 1"),
        "expected one store watch: {watches}"
    );
    drop(streams);
    for _ in 0..50 {
        if server.state().metrics().open_watches() == 0 {
            break;
        }
        // The server notices closed connections when it next writes.
        http.post(format!("{url}{APPS}"))
            .json(&app_body(&format!("n{}", rand_suffix())))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.state().metrics().open_watches(), 0);
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
