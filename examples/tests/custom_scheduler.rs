//! `examples/custom_scheduler.rs` against a real API server: it binds a
//! pending application to the ONLINE cluster that matches its constraints,
//! leaves one without a match pending, and binds it once a match appears.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../custom_scheduler.rs"]
mod custom_scheduler;

use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client};
use krake_data::kinds::kubernetes::{
    Application, ApplicationSpec, Cluster, ClusterSpec, ClusterState,
};
use krake_data::{LabelConstraint, Metadata, ResourceRef};

fn kubeconfig(name: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [{"name": name, "user": {"token": "t"}}],
    }))
    .unwrap()
}

async fn cluster(api: &Api<Cluster>, name: &str, location: &str, state: ClusterState) {
    let mut metadata = Metadata::named(name);
    metadata.labels.insert("location".into(), location.into());
    let created = api
        .create(&Cluster::new(
            metadata,
            ClusterSpec::from_kubeconfig(kubeconfig(name)),
        ))
        .await
        .unwrap();
    let mut with_state = created;
    with_state.status.state = state;
    api.status(&with_state).await.unwrap();
}

async fn app(api: &Api<Application>, name: &str, constraint: &str) {
    let manifest = serde_json::from_value(serde_json::json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    ]))
    .unwrap();
    let mut spec = ApplicationSpec::from_manifest(manifest);
    spec.constraints.cluster.labels = Some(vec![constraint.parse::<LabelConstraint>().unwrap()]);
    api.create(&Application::new(Metadata::named(name), spec))
        .await
        .unwrap();
}

async fn bound_to(api: &Api<Application>, name: &str) -> Option<ResourceRef> {
    for _ in 0..100 {
        if let Some(target) = api.get(name).await.unwrap().status.scheduled_to {
            return Some(target);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pending_applications_on_the_embedded_store() {
    binds_pending_applications_to_matching_online_clusters(TestServer::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binds_pending_applications_on_etcd() {
    binds_pending_applications_to_matching_online_clusters(
        krake_testkit::server::etcd_server().await,
    )
    .await;
}

async fn binds_pending_applications_to_matching_online_clusters(server: TestServer) {
    let client = Client::new(&server.url()).unwrap();
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "testing");
    let apps: Api<Application> = Api::namespaced(client.clone(), "testing");
    cluster(&clusters, "de-offline", "DE", ClusterState::Offline).await;
    cluster(&clusters, "fr-online", "FR", ClusterState::Online).await;
    cluster(&clusters, "de-online", "DE", ClusterState::Online).await;
    // Same labels, other namespace: never chosen for `testing`.
    let elsewhere: Api<Cluster> = Api::namespaced(client.clone(), "elsewhere");
    cluster(&elsewhere, "at-online", "AT", ClusterState::Online).await;
    app(&apps, "web", "location=DE").await;
    app(&apps, "vienna", "location=AT").await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn(custom_scheduler::run(client.clone(), async {
        let _ = stopped.await;
    }));

    let target = bound_to(&apps, "web").await.expect("web was bound");
    assert_eq!(
        target,
        ResourceRef::new("kubernetes", "Cluster", Some("testing".into()), "de-online")
    );
    let web = apps.get("web").await.unwrap();
    assert!(web.metadata.owners.contains(&target));
    assert!(web.status.scheduled.is_some());
    assert_eq!(apps.get("vienna").await.unwrap().status.scheduled_to, None);

    // A matching cluster appears: the waiting application is bound to it.
    cluster(&clusters, "at-new", "AT", ClusterState::Online).await;
    let target = bound_to(&apps, "vienna").await.expect("vienna was bound");
    assert_eq!(target.name, "at-new");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), scheduler)
        .await
        .unwrap()
        .unwrap();
}
