//! The infrastructure controller end to end in `krake-server`'s process: a
//! Cloud and a GlobalInfrastructureProvider pointing at the fake
//! Infrastructure Manager (`krake_testkit::im`), whose `kubeconfig` output
//! points at a fake Kubernetes cluster (`krake_testkit::kube`). The
//! scheduler creates a Cluster for an `auto_cluster_create` application and
//! binds it to the Cloud, the infrastructure controller has IM create it,
//! the cluster controller sees it ONLINE, the application runs on it; a
//! template edit is an IM update; deleting the Cloud removes everything;
//! IM's states each show on the Cluster; a restart mid-creation resumes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use krake_client::{DeleteParams, ListParams};
use krake_data::kinds::infrastructure::{Cloud, GlobalInfrastructureProvider};
use krake_data::kinds::kubernetes::{Application, Cluster, ClusterState};
use krake_testkit::im::{Durations, ImConfig, ImFake, OpenStackCredentials, RequestKind, states};
use krake_testkit::kube::FakeCluster;
use serde_json::{Map, Value, json};
use support::krake::{Krake, NS};

fn tosca(workers: u64) -> Value {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "topology_template": {
            "node_templates": {
                "front": {"type": "tosca.nodes.indigo.Compute"},
                "wn": {
                    "type": "tosca.nodes.indigo.Compute",
                    "capabilities": {"scalable": {"properties": {"count": workers}}},
                },
            },
            "outputs": {"kubeconfig": {"value": {"get_attribute": ["front", "kubeconfig"]}}},
        },
    })
}

/// The fake IM (phases of `phase`) serving `kube`'s kubeconfig, accepting
/// the cloud's credentials only with its domain.
async fn im(kube: &FakeCluster, phase: Duration) -> ImFake {
    let im = ImFake::start(ImConfig {
        openstack: Some(OpenStackCredentials {
            host: "https://keystone.example:5000/v3".into(),
            username: "alice".into(),
            password: "openstack-secret".into(),
            tenant: "krake".into(),
            domain: "Users".into(),
        }),
        durations: Durations {
            pending: phase,
            configuring: phase,
            deleting: phase,
        },
        ..ImConfig::default()
    })
    .await
    .unwrap();
    im.set_kubeconfig(&serde_saphyr::to_string(&kube.kubeconfig()).unwrap());
    im
}

/// A configuration with the template of automatically created clusters in
/// `dir`, polling IM every tenth of a second. The scheduler keeps its
/// default `reschedule_after` (60 s): a shorter one would move the
/// application off the cluster while it is RECONCILING (and create a new
/// cluster for it).
fn config(dir: &std::path::Path) -> String {
    let tosca_file = dir.join("cluster.yaml");
    std::fs::write(&tosca_file, serde_saphyr::to_string(&tosca(1)).unwrap()).unwrap();
    format!(
        "controllers:
  scheduler:
    automatic_cluster_creation: {{tosca_file: {}, deletion_retention: 600}}
  infrastructure:
    poll_interval: 0.1
  kubernetes_application:
    connect_timeout: 2
    request_timeout: 5
  kubernetes_cluster:
    connect_timeout: 2
    request_timeout: 5
",
        tosca_file.display()
    )
}

/// The GlobalInfrastructureProvider `im` and the Cloud `os` using it.
async fn provider_and_cloud(krake: &Krake, im: &ImFake) {
    let c = im.config();
    let _: GlobalInfrastructureProvider = krake
        .create(json!({
            "metadata": {"name": "im"},
            "spec": {"type": "im", "im": {
                "url": im.url(), "username": c.username, "password": c.password,
            }},
        }))
        .await;
    let _: Cloud = krake
        .create(json!({
            "metadata": {"name": "os", "namespace": NS, "labels": {"location": "DE"}},
            "spec": {"type": "openstack", "openstack": {
                "url": "https://keystone.example:5000/v3",
                "auth": {"type": "password", "password": {
                    "user": {"username": "alice", "password": "openstack-secret", "domain_name": "Users"},
                    "project": {"name": "krake"},
                }},
                "infrastructure_provider": {"name": "im"},
            }},
        }))
        .await;
}

async fn cluster_until(
    krake: &Krake,
    name: &str,
    what: &str,
    check: impl Fn(&Cluster) -> bool,
) -> Cluster {
    krake
        .eventually(
            &format!("cluster {name} {what}"),
            || async { krake.api::<Cluster>().get(name).await.ok() },
            check,
        )
        .await
}

/// A cluster from `tosca(1)` the scheduler binds to the cloud.
async fn cluster(krake: &Krake, name: &str) {
    let _: Cluster = krake
        .create(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"tosca": tosca(1), "constraints": {"cloud": {}}},
        }))
        .await;
}

async fn id_of(krake: &Krake, name: &str) -> String {
    cluster_until(krake, name, "created in IM", |c| {
        c.status.cluster_id.is_some()
    })
    .await
    .status
    .cluster_id
    .unwrap()
}

fn config_map(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "data": {"greeting": "hello"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_runs_on_a_cluster_created_through_im_until_the_cloud_goes() {
    let kube = FakeCluster::start().await.unwrap();
    let im = im(&kube, Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let krake = Krake::start_with(&config(dir.path()), &[]).await;
    provider_and_cloud(&krake, &im).await;
    krake
        .create_app(
            "web",
            json!([config_map("web")]),
            json!({"auto_cluster_create": true,
                   "constraints": {"cluster": {"labels": ["location is DE"]}}}),
        )
        .await;

    let app = krake.running("web").await;
    let name = app.status.running_on.unwrap().name;
    let cluster = krake.api::<Cluster>().get(&name).await.unwrap();
    assert!(cluster.spec.auto_generated);
    assert_eq!(cluster.status.state, ClusterState::Online);
    assert_eq!(cluster.status.running_on.as_ref().unwrap().name, "os");
    assert_eq!(
        cluster.spec.kubeconfig,
        *kube.kubeconfig().as_object().unwrap()
    );
    assert!(
        kube.get("v1", "ConfigMap", Some("default"), "web")
            .is_some()
    );
    let id = cluster.status.cluster_id.clone().unwrap();
    assert_eq!(im.count(RequestKind::Create), 1);
    assert_eq!(im.count(RequestKind::Outputs), 1);
    let auth = im.requests().pop().unwrap().auth.unwrap();
    assert_eq!(auth.openstack().unwrap()["domain"], "Users");
    assert_eq!(auth.openstack().unwrap()["tenant_domain_id"], "default");
    assert!(!krake.log().contains("openstack-secret"));
    assert!(!krake.log().contains(&im.config().password));

    // More workers: an IM update, the cluster back ONLINE.
    let clusters = krake.api::<Cluster>();
    let mut edited = clusters.get(&name).await.unwrap();
    edited.spec.tosca = serde_json::from_value(tosca(3)).unwrap();
    clusters.update(&edited).await.unwrap();
    cluster_until(&krake, &name, "ONLINE with three workers", |c| {
        c.status.state == ClusterState::Online
            && Value::Object(c.status.last_applied_tosca.clone()) == tosca(3)
    })
    .await;
    assert_eq!(im.infrastructure(&id).unwrap().count("wn"), Some(3));
    assert_eq!(im.count(RequestKind::Update), 1, "{}", krake.log());
    assert_eq!(im.count(RequestKind::Create), 1);

    // The cloud deleted: the application, the cluster (IM delete) and the
    // cloud go, nothing is left in IM or on the Kubernetes cluster.
    krake
        .api::<Cloud>()
        .delete("os", &DeleteParams::default())
        .await
        .unwrap();
    krake.app_gone("web").await;
    krake
        .until("the cluster removed", || async {
            matches!(clusters.get(&name).await, Err(err) if err.is_not_found())
        })
        .await;
    krake
        .until("the cloud removed", || async {
            matches!(krake.api::<Cloud>().get("os").await, Err(err) if err.is_not_found())
        })
        .await;
    assert_eq!(im.count(RequestKind::Delete), 1);
    assert!(im.live_infrastructures().is_empty());
    assert!(
        kube.get("v1", "ConfigMap", Some("default"), "web")
            .is_none()
    );
    assert!(
        krake
            .api::<Application>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_im_state_shows_on_the_cluster() {
    let kube = FakeCluster::start().await.unwrap();
    let im = im(&kube, Duration::from_millis(1_500)).await;
    let dir = tempfile::tempdir().unwrap();
    let krake = Krake::start_with(&config(dir.path()), &[]).await;
    provider_and_cloud(&krake, &im).await;

    // pending -> running -> configured: CREATING, then ONLINE.
    cluster(&krake, "fine").await;
    let seen = {
        let mut seen = BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let c = krake.api::<Cluster>().get("fine").await.unwrap();
            seen.insert(format!("{:?}", c.status.state));
            if c.status.state == ClusterState::Online {
                break seen;
            }
            assert!(std::time::Instant::now() < deadline, "{seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(seen.contains("Creating"), "{seen:?}");

    // unconfigured: FAILING_RECONCILIATION, a reconfigure, ONLINE.
    cluster(&krake, "unconfigured").await;
    let id = id_of(&krake, "unconfigured").await;
    im.force_vm_state(&id, "1", Some(states::UNCONFIGURED));
    cluster_until(&krake, "unconfigured", "ONLINE", |c| {
        c.status.state == ClusterState::Online
    })
    .await;
    assert_eq!(im.infrastructure(&id).unwrap().reconfigures, 1);

    // failed: FAILED, and left alone.
    cluster(&krake, "failed").await;
    let id = id_of(&krake, "failed").await;
    im.force_state(&id, Some(states::FAILED));
    let failed = cluster_until(&krake, "failed", "FAILED", |c| {
        c.status.state == ClusterState::Failed
    })
    .await;
    assert!(
        failed
            .status
            .reason
            .unwrap()
            .message
            .contains("reports failed")
    );
    let state_polls = im
        .requests()
        .iter()
        .filter(|r| r.infrastructure.as_deref() == Some(id.as_str()))
        .count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = im
        .requests()
        .iter()
        .filter(|r| r.infrastructure.as_deref() == Some(id.as_str()))
        .count();
    assert_eq!(later, state_polls, "FAILED stays FAILED");

    // 404: created again.
    cluster(&krake, "vanished").await;
    let first = id_of(&krake, "vanished").await;
    im.vanish(&first);
    let recreated = cluster_until(&krake, "vanished", "ONLINE again", |c| {
        c.status.state == ClusterState::Online
    })
    .await;
    assert_ne!(recreated.status.cluster_id.unwrap(), first);
    // fine, unconfigured, failed, vanished twice.
    assert_eq!(im.count(RequestKind::Create), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_creation_resumes_without_a_second_infrastructure() {
    let kube = FakeCluster::start().await.unwrap();
    let im = im(&kube, Duration::from_millis(2_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let krake = Krake::start_with(&config(dir.path()), &[]).await;
    provider_and_cloud(&krake, &im).await;
    cluster(&krake, "c").await;
    let id = id_of(&krake, "c").await;
    assert_eq!(im.infrastructure(&id).unwrap().state, states::PENDING);
    krake.restart().await;
    let online = cluster_until(&krake, "c", "ONLINE", |c| {
        c.status.state == ClusterState::Online
    })
    .await;
    assert_eq!(online.status.cluster_id.unwrap(), id);
    assert_eq!(im.count(RequestKind::Create), 1);
    assert_eq!(im.count(RequestKind::Outputs), 1);
    assert_eq!(im.live_infrastructures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_infrastructure_leaves_bound_clusters_alone() {
    let kube = FakeCluster::start().await.unwrap();
    let im = im(&kube, Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let krake = Krake::start_with(&config(dir.path()), &["--no-infrastructure"]).await;
    provider_and_cloud(&krake, &im).await;
    cluster(&krake, "c").await;
    cluster_until(&krake, "c", "bound", |c| c.status.scheduled_to.is_some()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(im.requests().is_empty());
    let c = krake.api::<Cluster>().get("c").await.unwrap();
    assert_eq!(c.status.state, ClusterState::Pending);
    assert_eq!(c.spec.kubeconfig, Map::new());
}
