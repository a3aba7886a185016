//! The Magnum controller against krake-rs's real API (in-process, embedded
//! store), the garbage collector, the fake Keystone + Magnum
//! (`krake_testkit::openstack`) and a fake Kubernetes API whose CA is the
//! Magnum clusters' CA: creation to RUNNING with a Krake Cluster whose
//! kubeconfig works, resize, deletion, a template that is not Kubernetes,
//! outages, wrong credentials and failed creations.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams};
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::magnum::{MagnumController, MagnumControllerConfig};
use krake_controller::shared::Reflectors;
use krake_data::kinds::kubernetes::Cluster;
use krake_data::kinds::openstack::{
    MAGNUM_CLUSTER_DELETION_FINALIZER, MagnumCluster, MagnumClusterBinding, MagnumClusterState,
    Project,
};
use krake_data::{ReasonCode, Resource, ResourceRef};
use krake_testkit::kube::FakeCluster;
use krake_testkit::openstack::FakeOpenStack;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "testing";
const WITHIN: Duration = Duration::from_secs(15);

struct Env {
    _server: TestServer,
    client: Client,
    openstack: FakeOpenStack,
    kube: FakeCluster,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Env {
    async fn start() -> Env {
        let server = TestServer::embedded().await;
        let client = Client::new(&server.url()).unwrap();
        let shutdown = CancellationToken::new();
        let reflectors = Reflectors::new(client.clone(), shutdown.clone());
        let config = MagnumControllerConfig {
            poll_interval: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            ..MagnumControllerConfig::default()
        };
        tokio::spawn(MagnumController::new(&reflectors, config).run(shutdown.clone()));
        tokio::spawn(GarbageCollector::new(&reflectors, GcConfig::default()).run(shutdown.clone()));
        let kube = FakeCluster::start().await.unwrap();
        let openstack = FakeOpenStack::start().await.unwrap();
        openstack.serve_kube(&kube);
        openstack.set_operation_time(Duration::from_millis(300));
        Env {
            _server: server,
            client,
            openstack,
            kube,
            shutdown,
        }
    }

    fn api<K: Resource>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn project(&self, name: &str, auth: Value) -> Project {
        let project: Project = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"url": self.openstack.auth_url(), "auth": auth,
                     "template": FakeOpenStack::KUBERNETES_TEMPLATE},
        }))
        .unwrap();
        self.api::<Project>().create(&project).await.unwrap()
    }

    /// A MagnumCluster bound to `project` with `template` (as the
    /// scheduler binds).
    async fn magnum_cluster(&self, name: &str, project: &Project, template: &str) {
        let cluster: MagnumCluster = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"site": "a"}},
            "spec": {"master_count": 1, "node_count": 2,
                     "metrics": [{"name": "heat", "weight": 1.0}]},
        }))
        .unwrap();
        self.api::<MagnumCluster>().create(&cluster).await.unwrap();
        self.api::<MagnumCluster>()
            .binding(
                name,
                &MagnumClusterBinding::new(ResourceRef::of(project), template),
            )
            .await
            .unwrap();
    }

    async fn until_state(&self, name: &str, state: MagnumClusterState) -> MagnumCluster {
        let api = self.api::<MagnumCluster>();
        eventually(&format!("{name} {state:?}"), || async {
            let cluster = api.get(name).await.ok()?;
            (cluster.status.state == state).then_some(cluster)
        })
        .await
    }
}

async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lists the nodes of the cluster through `kubeconfig`.
async fn nodes_through(kubeconfig: &serde_json::Map<String, Value>) -> usize {
    let config = kube::Config::from_custom_kubeconfig(
        serde_json::from_value(Value::Object(kubeconfig.clone())).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    nodes.list(&Default::default()).await.unwrap().items.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnum_cluster_is_created_resized_and_deleted() {
    let env = Env::start().await;
    let project = env.project("os", FakeOpenStack::password_auth()).await;
    env.magnum_cluster("mc", &project, FakeOpenStack::KUBERNETES_TEMPLATE)
        .await;

    let running = env.until_state("mc", MagnumClusterState::Running).await;
    assert!(
        running
            .metadata
            .finalizers
            .contains(&MAGNUM_CLUSTER_DELETION_FINALIZER.to_owned())
    );
    let id = running.status.cluster_id.clone().unwrap();
    let magnum = env.openstack.cluster(&id).unwrap();
    assert_eq!(magnum["status"], "CREATE_COMPLETE");
    assert_eq!(magnum["node_count"], 2);
    assert!(magnum["name"].as_str().unwrap().starts_with("testing-mc-"));
    assert_eq!(running.status.node_count, Some(2));
    assert_eq!(
        running.status.api_address.as_deref(),
        Some(env.kube.url().as_str())
    );
    assert_eq!(running.status.node_addresses.as_ref().unwrap().len(), 2);
    let reference = running.status.cluster.clone().unwrap();
    assert!(reference.name.starts_with("mc-") && reference.name.len() == "mc-".len() + 7);
    assert_eq!(reference.kind, "Cluster");

    // The Krake Cluster: owner, labels, metrics and a kubeconfig whose
    // client certificate Magnum signed.
    let cluster: Cluster = eventually("the krake cluster", || async {
        env.api::<Cluster>().get(&reference.name).await.ok()
    })
    .await;
    assert_eq!(cluster.metadata.owners, vec![ResourceRef::of(&running)]);
    assert_eq!(cluster.metadata.labels["site"], "a");
    assert_eq!(cluster.spec.metrics.len(), 1);
    assert_eq!(cluster.spec.metrics[0].name, "heat");
    assert_eq!(
        env.openstack.requests_to("POST", "/v1/certificates").len(),
        1
    );
    assert_eq!(nodes_through(&cluster.spec.kubeconfig).await, 1);
    // Every Magnum request was authenticated; no secret was recorded.
    let requests = env.openstack.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.path.starts_with("/v1"))
            .all(|r| r.authenticated)
    );
    let tokens = &env.openstack.requests_to("POST", "/v3/auth/tokens")[0];
    assert_eq!(tokens.body["auth"]["identity"]["methods"][0], "password");
    assert_eq!(
        tokens.body["auth"]["scope"]["project"]["id"],
        FakeOpenStack::PROJECT_ID
    );

    // Resize.
    let mut changed = env.api::<MagnumCluster>().get("mc").await.unwrap();
    changed.spec.node_count = Some(3);
    env.api::<MagnumCluster>().update(&changed).await.unwrap();
    let resized = eventually("the resize", || async {
        let cluster = env.api::<MagnumCluster>().get("mc").await.ok()?;
        (cluster.status.state == MagnumClusterState::Running
            && cluster.status.node_count == Some(3))
        .then_some(cluster)
    })
    .await;
    let resizes = env
        .openstack
        .requests_to("POST", &format!("/v1/clusters/{id}/actions/resize"));
    assert_eq!(resizes.len(), 1);
    assert_eq!(resizes[0].body["node_count"], 3);
    assert_eq!(env.openstack.cluster(&id).unwrap()["node_count"], 3);
    assert_eq!(resized.status.node_addresses.as_ref().unwrap().len(), 3);
    // The kubeconfig is still current: no new certificate.
    assert_eq!(
        env.openstack.requests_to("POST", "/v1/certificates").len(),
        1
    );

    // Deletion: Magnum deletes, the finalizer goes, the Krake Cluster goes
    // with its owner.
    env.api::<MagnumCluster>()
        .delete("mc", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the magnum cluster removed", || async {
        match env.api::<MagnumCluster>().get("mc").await {
            Err(err) if err.is_not_found() => Some(()),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        env.openstack
            .requests_to("DELETE", &format!("/v1/clusters/{id}"))
            .len(),
        1
    );
    assert!(env.openstack.cluster(&id).is_none());
    eventually("the krake cluster removed", || async {
        match env.api::<Cluster>().get(&reference.name).await {
            Err(err) if err.is_not_found() => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_is_not_kubernetes_fails_the_cluster() {
    let env = Env::start().await;
    let project = env
        .project("os", FakeOpenStack::application_credential_auth())
        .await;
    env.magnum_cluster("swarm", &project, FakeOpenStack::SWARM_TEMPLATE)
        .await;
    let failed = env.until_state("swarm", MagnumClusterState::Failed).await;
    let reason = failed.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::InvalidClusterTemplate);
    assert!(reason.message.contains("swarm"), "{}", reason.message);
    assert!(env.openstack.requests_to("POST", "/v1/clusters").is_empty());
    assert_eq!(
        env.openstack.requests_to("POST", "/v3/auth/tokens")[0].body["auth"]["identity"]["methods"]
            [0],
        "application_credential"
    );
    // A FAILED cluster can still be deleted (nothing in Magnum).
    env.api::<MagnumCluster>()
        .delete("swarm", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the failed cluster removed", || async {
        match env.api::<MagnumCluster>().get("swarm").await {
            Err(err) if err.is_not_found() => Some(()),
            _ => None,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_waited_out_and_lasting_errors_fail_with_their_reason() {
    let env = Env::start().await;
    // Keystone and Magnum answer 503 for a while: retried, never FAILED.
    env.openstack.fail_requests(Some(503));
    let project = env.project("os", FakeOpenStack::password_auth()).await;
    env.magnum_cluster("flaky", &project, FakeOpenStack::KUBERNETES_TEMPLATE)
        .await;
    eventually("some failed requests", || async {
        (env.openstack.requests().len() >= 2).then_some(())
    })
    .await;
    let api = env.api::<MagnumCluster>();
    assert_ne!(
        api.get("flaky").await.unwrap().status.state,
        MagnumClusterState::Failed
    );
    env.openstack.fail_requests(None);
    env.until_state("flaky", MagnumClusterState::Running).await;

    // Wrong credentials: FAILED with OPENSTACK_ERROR, no secret shown.
    let wrong = env
        .project(
            "wrong",
            json!({"type": "password", "password": {
                "user": {"id": FakeOpenStack::USER_ID, "password": "hunter2-wrong"},
                "project": {"id": FakeOpenStack::PROJECT_ID}}}),
        )
        .await;
    env.magnum_cluster("denied", &wrong, FakeOpenStack::KUBERNETES_TEMPLATE)
        .await;
    let failed = env.until_state("denied", MagnumClusterState::Failed).await;
    let reason = failed.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::OpenstackError);
    assert!(reason.message.contains("HTTP 401"), "{}", reason.message);
    assert!(!reason.message.contains("hunter2"), "{}", reason.message);

    // Magnum fails the creation: FAILED with CREATE_FAILED and Magnum's
    // reason.
    env.openstack
        .fail_creations(Some("Quota exceeded for instances"));
    env.magnum_cluster("quota", &project, FakeOpenStack::KUBERNETES_TEMPLATE)
        .await;
    let failed = env.until_state("quota", MagnumClusterState::Failed).await;
    let reason = failed.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::CreateFailed);
    assert_eq!(reason.message, "Quota exceeded for instances");
}
