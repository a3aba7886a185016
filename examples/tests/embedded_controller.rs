//! `examples/embedded_controller.rs` against a real API server: the
//! controller puts its finalizer on applications, keeps the inventory the
//! service's own route answers, cleans up after the garbage collector's
//! turn, and its metrics are served next to the route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../embedded_controller.rs"]
mod embedded_controller;

use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams};
use krake_data::kinds::kubernetes::Application;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn app(name: &str) -> Application {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}],
            "constraints": {"cluster": {}},
        },
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_controller_keeps_the_inventory() {
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), "shop");
    apps.create(&app("before")).await.unwrap();

    let shutdown = CancellationToken::new();
    let (router, _, controller) = embedded_controller::service(client, shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = shutdown.clone();
    let service = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    apps.create(&app("after")).await.unwrap();

    let inventory = || async {
        reqwest::get(format!("{base}/inventory"))
            .await
            .unwrap()
            .json::<Vec<String>>()
            .await
            .unwrap()
    };
    eventually("both applications in the inventory", async || {
        (inventory().await == ["shop/after", "shop/before"]).then_some(())
    })
    .await;
    let finalizers = apps.get("before").await.unwrap().metadata.finalizers;
    assert_eq!(finalizers, [embedded_controller::FINALIZER]);

    // Delete: cascade_deletion goes on top; the controller waits for it.
    apps.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(inventory().await, ["shop/after", "shop/before"]);
    // The garbage collector's turn (no dependents): pop cascade_deletion.
    let mut deleted = apps.get("before").await.unwrap();
    assert_eq!(
        deleted.metadata.finalizers.pop().as_deref(),
        Some("cascade_deletion")
    );
    apps.update(&deleted).await.unwrap();
    eventually("the cleanup", async || {
        (inventory().await == ["shop/after"]).then_some(())
    })
    .await;
    let gone = eventually("the application to disappear", async || {
        apps.get("before").await.err()
    })
    .await;
    assert!(gone.is_not_found(), "{gone}");

    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ok: Value = metrics
        .lines()
        .find(|line| {
            line.starts_with(
                "krake_controller_reconciles_total{controller=\"inventory\",outcome=\"ok\"}",
            )
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(|n| json!(n.parse::<f64>().unwrap()))
        .unwrap_or(Value::Null);
    assert!(ok.as_f64().unwrap() >= 3.0, "{metrics}");

    shutdown.cancel();
    controller.await.unwrap();
    service.await.unwrap().unwrap();
}
