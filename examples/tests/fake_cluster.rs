//! `examples/fake_cluster.rs`: the kubeconfig it writes loads with the real
//! `kube` client, which then reaches the fake, and the objects it reports
//! follow what is created and deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fake_cluster.rs"]
mod fake_cluster;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_written_kubeconfig_reaches_the_fake() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig.yaml");
    let fake = fake_cluster::start(&path).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", fake.url()));
    let client = kube::Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(client);
    let names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["node-1"]);

    assert!(fake_cluster::objects(&fake).is_empty());
    fake.create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}))
        .unwrap();
    assert!(fake_cluster::objects(&fake).contains("ConfigMap default/cm"));
    assert!(fake.delete("v1", "ConfigMap", Some("default"), "cm"));
    assert!(fake_cluster::objects(&fake).is_empty());
}
