//! The Magnum controller end to end in `krake-server`'s process: a Project
//! pointing at the fake Keystone + Magnum (`krake_testkit::openstack`), a
//! MagnumCluster the scheduler binds to it, the Magnum controller creating,
//! resizing and deleting the Magnum cluster, the Krake Cluster it makes
//! (whose kubeconfig the Kubernetes cluster controller uses: ONLINE), and
//! the garbage collector removing that Cluster with its owner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use krake_client::DeleteParams;
use krake_data::kinds::kubernetes::{Cluster, ClusterState};
use krake_data::kinds::openstack::{MagnumCluster, MagnumClusterState};
use krake_testkit::kube::FakeCluster;
use krake_testkit::openstack::FakeOpenStack;
use serde_json::json;
use support::krake::{Krake, NS};

/// The server's configuration: the Magnum controller looks at clusters in
/// progress every fifth of a second (Krake's default is 30 s).
const CONFIG: &str = "\
controllers:
  magnum:
    poll_interval: 0.2
  kubernetes_cluster:
    connect_timeout: 2
    request_timeout: 5
";

async fn magnum_cluster(
    krake: &Krake,
    name: &str,
    until: impl Fn(&MagnumCluster) -> bool,
) -> MagnumCluster {
    krake
        .eventually(
            &format!("the magnum cluster {name}"),
            || async { krake.api::<MagnumCluster>().get(name).await.ok() },
            until,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnum_cluster_is_created_resized_and_deleted_by_the_server() {
    let kube = FakeCluster::start().await.unwrap();
    let openstack = FakeOpenStack::start().await.unwrap();
    openstack.serve_kube(&kube);
    openstack.set_operation_time(Duration::from_millis(300));
    let krake = Krake::start_with(CONFIG, &[]).await;

    let _: krake_data::kinds::openstack::Project = krake
        .create(json!({
            "metadata": {"name": "os", "namespace": NS, "labels": {"region": "north"}},
            "spec": {"url": openstack.auth_url(), "auth": FakeOpenStack::password_auth(),
                     "template": FakeOpenStack::KUBERNETES_TEMPLATE},
        }))
        .await;
    let _: MagnumCluster = krake
        .create(json!({
            "metadata": {"name": "mc", "namespace": NS},
            "spec": {"master_count": 1, "node_count": 1,
                     "constraints": {"project": {"labels": ["region = north"]}}},
        }))
        .await;

    // Bound by the scheduler, created by the Magnum controller.
    let running = magnum_cluster(&krake, "mc", |c| {
        c.status.state == MagnumClusterState::Running
    })
    .await;
    assert_eq!(running.status.project.as_ref().unwrap().name, "os");
    assert_eq!(
        running.status.template.as_deref(),
        Some(FakeOpenStack::KUBERNETES_TEMPLATE)
    );
    let id = running.status.cluster_id.clone().unwrap();
    assert_eq!(openstack.cluster(&id).unwrap()["status"], "CREATE_COMPLETE");
    // The Krake Cluster: its kubeconfig (a certificate signed through
    // Magnum) lets the Kubernetes cluster controller see it ONLINE.
    let name = running.status.cluster.clone().unwrap().name;
    let cluster = krake
        .eventually(
            "the krake cluster online",
            || async { krake.api::<Cluster>().get(&name).await.ok() },
            |c: &Cluster| c.status.state == ClusterState::Online,
        )
        .await;
    assert_eq!(cluster.metadata.owners[0].kind, "MagnumCluster");
    assert_eq!(cluster.metadata.labels["region"], "north");
    assert_eq!(openstack.requests_to("POST", "/v1/certificates").len(), 1);

    // Resize.
    let mut changed = krake.api::<MagnumCluster>().get("mc").await.unwrap();
    changed.spec.node_count = Some(4);
    krake.api::<MagnumCluster>().update(&changed).await.unwrap();
    magnum_cluster(&krake, "mc", |c| {
        c.status.state == MagnumClusterState::Running && c.status.node_count == Some(4)
    })
    .await;
    let resizes = openstack.requests_to("POST", &format!("/v1/clusters/{id}/actions/resize"));
    assert_eq!(resizes.len(), 1);
    assert_eq!(resizes[0].body["node_count"], 4);
    assert_eq!(openstack.cluster(&id).unwrap()["node_count"], 4);

    // Deletion: gone from Magnum, then from Krake with its Cluster.
    krake
        .api::<MagnumCluster>()
        .delete("mc", &DeleteParams::default())
        .await
        .unwrap();
    krake
        .until("the magnum cluster removed", || async {
            matches!(krake.api::<MagnumCluster>().get("mc").await, Err(err) if err.is_not_found())
        })
        .await;
    assert_eq!(
        openstack
            .requests_to("DELETE", &format!("/v1/clusters/{id}"))
            .len(),
        1
    );
    assert!(openstack.cluster(&id).is_none());
    krake
        .until("the krake cluster removed", || async {
            matches!(krake.api::<Cluster>().get(&name).await, Err(err) if err.is_not_found())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_magnum_leaves_magnum_clusters_alone() {
    let openstack = FakeOpenStack::start().await.unwrap();
    let krake = Krake::start_with(CONFIG, &["--no-magnum"]).await;
    let _: krake_data::kinds::openstack::Project = krake
        .create(json!({
            "metadata": {"name": "os", "namespace": NS},
            "spec": {"url": openstack.auth_url(),
                     "auth": FakeOpenStack::application_credential_auth(),
                     "template": FakeOpenStack::KUBERNETES_TEMPLATE},
        }))
        .await;
    let _: MagnumCluster = krake
        .create(json!({"metadata": {"name": "mc", "namespace": NS}, "spec": {}}))
        .await;
    // The scheduler binds it; nothing asks OpenStack.
    magnum_cluster(&krake, "mc", |c| c.status.project.is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(openstack.requests().is_empty());
    let pending = krake.api::<MagnumCluster>().get("mc").await.unwrap();
    assert_eq!(pending.status.state, MagnumClusterState::Pending);
}

/// Kills the child on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krake_server_controller_magnum_runs_alone() {
    let kube = FakeCluster::start().await.unwrap();
    let openstack = FakeOpenStack::start().await.unwrap();
    openstack.serve_kube(&kube);
    openstack.set_operation_time(Duration::from_millis(200));
    let krake = Krake::start_with(CONFIG, &["--no-magnum"]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("magnum.yaml");
    std::fs::write(&file, "worker_count: 2\npoll_interval: 30\n").unwrap();
    let api = krake.client.base_url().to_string();
    let _controller = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_krake-server"))
            .args(["controller", "magnum", "-c", file.to_str().unwrap()])
            .args(["--api", api.trim_end_matches('/'), "--poll-interval", "0.2"])
            .env("KRAKE_LOG_LEVEL", "warning")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let _: krake_data::kinds::openstack::Project = krake
        .create(json!({
            "metadata": {"name": "os", "namespace": NS},
            "spec": {"url": openstack.auth_url(),
                     "auth": FakeOpenStack::application_credential_auth(),
                     "template": FakeOpenStack::KUBERNETES_TEMPLATE},
        }))
        .await;
    let _: MagnumCluster = krake
        .create(json!({"metadata": {"name": "alone", "namespace": NS}, "spec": {"node_count": 2}}))
        .await;
    // --poll-interval 0.2 overrides the file's 30 s: RUNNING within the
    // harness's 20 s.
    let running = magnum_cluster(&krake, "alone", |c| {
        c.status.state == MagnumClusterState::Running
    })
    .await;
    assert_eq!(running.status.node_count, Some(2));
    let name = running.status.cluster.unwrap().name;
    krake
        .eventually(
            "the krake cluster online",
            || async { krake.api::<Cluster>().get(&name).await.ok() },
            |c: &Cluster| c.status.state == ClusterState::Online,
        )
        .await;
}
