//! The shared reflectors of the controllers start from a list larger than
//! 16 MB over etcd (whose client once refused any answer over 4 MiB, so
//! every controller stayed unready) and follow the watch from there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use krake_client::{Api, Client, ListParams};
use krake_controller::shared::{Change, Reflectors};
use krake_data::Metadata;
use krake_data::kinds::kubernetes::{Application, ApplicationSpec};
use tokio_util::sync::CancellationToken;

/// The failure guard of every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

/// About 17 KB of JSON: a ConfigMap with 16 KB of data.
fn big_app(i: usize) -> Application {
    let blob: String = std::iter::repeat_n("0123456789abcdef", 1_000).collect();
    let manifest = serde_json::from_value(serde_json::json!([{
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("cm-{i}")},
        "data": {"blob": blob},
    }]))
    .unwrap();
    let mut metadata = Metadata::named(format!("app-{i:05}"));
    metadata.labels.insert(
        "half".into(),
        if i % 2 == 0 { "even" } else { "odd" }.into(),
    );
    Application::new(metadata, ApplicationSpec::from_manifest(manifest))
}

fn blob_len(app: &Application) -> Option<usize> {
    let manifest = serde_json::to_value(&app.spec.manifest).ok()?;
    Some(manifest[0]["data"]["blob"].as_str()?.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_start_from_a_list_over_16_mb_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    let client = Client::new(&server.url()).unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), "big");
    let count = 1_000;
    futures::stream::iter(0..count)
        .map(|i| {
            let apps = apps.clone();
            async move { apps.create(&big_app(i)).await.unwrap() }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;

    // The client's list.
    let start = Instant::now();
    let list = apps.list(&ListParams::default()).await.unwrap();
    let listed = start.elapsed();
    assert_eq!(list.items.len(), count);
    assert!(list.items.iter().all(|app| blob_len(app) == Some(16_000)));
    let bytes = serde_json::to_vec(&list.items).unwrap().len();
    assert!(bytes > 16_000_000, "only {bytes} bytes");
    println!("krake-client listed {count} applications ({bytes} bytes) in {listed:?}");

    // Shared reflectors, as the controllers start them: all, and one
    // label-selected.
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let start = Instant::now();
    let mut all = reflectors.subscribe::<Application>(Some("big"), None);
    let even = reflectors.subscribe::<Application>(Some("big"), Some("half=even"));
    tokio::time::timeout(GUARD, all.store.wait_ready())
        .await
        .expect("ready within the guard")
        .expect("the reflector is alive");
    tokio::time::timeout(GUARD, even.store.wait_ready())
        .await
        .expect("ready within the guard")
        .expect("the reflector is alive");
    println!("reflectors ready in {:?}", start.elapsed());
    assert_eq!(all.store.len(), count);
    assert_eq!(even.store.len(), count / 2);
    let last = all
        .store
        .get(Some("big"), &format!("app-{:05}", count - 1))
        .unwrap();
    assert_eq!(blob_len(&last), Some(16_000));
    assert!(
        even.store
            .list()
            .iter()
            .all(|app| app.metadata.labels.get("half").map(String::as_str) == Some("even"))
    );

    // The watch goes on from the list's revision: a new object arrives.
    apps.create(&big_app(count)).await.unwrap();
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let change = tokio::time::timeout_at(deadline, all.changes.recv())
            .await
            .expect("a change within the guard")
            .expect("no lag, not closed");
        if let Change::Applied(app) = change {
            if app.metadata.name == format!("app-{count:05}") {
                break;
            }
        }
    }
    assert_eq!(all.store.len(), count + 1);
    shutdown.cancel();
}
