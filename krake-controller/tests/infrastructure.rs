//! The infrastructure controller against krake-rs's real API (in-process,
//! on the embedded store) and a fake Infrastructure Manager
//! (`krake_testkit::im`): clusters created, polled, connected, scaled,
//! reconfigured, recreated, failed and deleted through IM's REST API, with
//! the Kubernetes cluster controller taking them to ONLINE on a fake
//! Kubernetes cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams};
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::infrastructure::{InfrastructureController, InfrastructureControllerConfig};
use krake_controller::kubernetes::{ClusterController, ClusterControllerConfig};
use krake_controller::shared::Reflectors;
use krake_controller::work_queue::BackoffPolicy;
use krake_data::kinds::infrastructure::{
    Cloud, CloudBinding, GlobalInfrastructureProvider, InfrastructureProvider,
};
use krake_data::kinds::kubernetes::{Cluster, ClusterState};
use krake_data::metadata::ResourceRef;
use krake_data::{ReasonCode, Resource};
use krake_testkit::im::{Durations, ImConfig, ImFake, OpenStackCredentials, RequestKind, states};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "testing";

struct Env {
    _server: TestServer,
    client: Client,
    im: ImFake,
    kube: FakeCluster,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn im_config(phase: Duration) -> ImConfig {
    ImConfig {
        openstack: Some(OpenStackCredentials {
            host: "https://keystone.example:5000/v3".into(),
            username: "alice".into(),
            password: "openstack-secret".into(),
            tenant: "krake-project".into(),
            domain: "Users".into(),
        }),
        durations: Durations {
            pending: phase,
            configuring: phase,
            deleting: phase,
        },
        ..ImConfig::default()
    }
}

fn config() -> InfrastructureControllerConfig {
    InfrastructureControllerConfig {
        poll_interval: Duration::from_millis(100),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            factor: 2.0,
            jitter: true,
        },
        ..InfrastructureControllerConfig::default()
    }
}

impl Env {
    async fn start(phase: Duration) -> Env {
        Env::with(im_config(phase), config()).await
    }

    async fn with(im: ImConfig, config: InfrastructureControllerConfig) -> Env {
        let server = TestServer::embedded().await;
        let client = Client::new(&server.url()).unwrap();
        let im = ImFake::start(im).await.unwrap();
        let kube = FakeCluster::start().await.unwrap();
        im.set_kubeconfig(&serde_saphyr::to_string(&kube.kubeconfig()).unwrap());
        let mut env = Env {
            _server: server,
            client,
            im,
            kube,
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        };
        env.run(config);
        env.provider("im", true).await;
        env.cloud("os", "im", false).await;
        env
    }

    fn run(&mut self, config: InfrastructureControllerConfig) {
        let shutdown = CancellationToken::new();
        self.shutdown = shutdown.clone();
        let reflectors = Reflectors::new(self.client.clone(), shutdown.clone());
        self.tasks.push(tokio::spawn(
            InfrastructureController::new(&reflectors, config).run(shutdown.clone()),
        ));
        self.tasks.push(tokio::spawn(
            ClusterController::new(&reflectors, ClusterControllerConfig::default())
                .run(shutdown.clone()),
        ));
        // Deletions go through the garbage collector's finalizer first.
        self.tasks.push(tokio::spawn(
            GarbageCollector::new(&reflectors, GcConfig { workers: 2 }).run(shutdown),
        ));
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the controllers stop")
                .unwrap();
        }
    }

    fn api<K: Resource>(&self) -> Api<K> {
        match K::INFO.scope {
            krake_data::registry::Scope::Namespaced => Api::namespaced(self.client.clone(), NS),
            _ => Api::all(self.client.clone()),
        }
    }

    fn provider_spec(&self, right: bool) -> Value {
        let c = self.im.config();
        json!({
            "type": "im",
            "im": {
                "url": self.im.url(),
                "username": c.username,
                "password": if right { c.password.clone() } else { "wrong".to_owned() },
            }
        })
    }

    /// A GlobalInfrastructureProvider; `right`: with the credentials the
    /// fake accepts.
    async fn provider(&self, name: &str, right: bool) {
        let provider: GlobalInfrastructureProvider = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": self.provider_spec(right),
        }))
        .unwrap();
        self.api::<GlobalInfrastructureProvider>()
            .create(&provider)
            .await
            .unwrap();
    }

    async fn namespaced_provider(&self, name: &str, right: bool) {
        let provider: InfrastructureProvider = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": self.provider_spec(right),
        }))
        .unwrap();
        self.api::<InfrastructureProvider>()
            .create(&provider)
            .await
            .unwrap();
    }

    async fn cloud(&self, name: &str, provider: &str, namespaced: bool) {
        let cloud: Cloud = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "openstack", "openstack": {
                "url": "https://keystone.example:5000/v3",
                "auth": {"type": "password", "password": {
                    "version": "3",
                    "user": {"username": "alice", "password": "openstack-secret", "domain_name": "Users"},
                    "project": {"name": "krake-project", "domain_id": "dom-42"},
                }},
                "infrastructure_provider": {"name": provider, "namespaced": namespaced},
            }},
        }))
        .unwrap();
        self.api::<Cloud>().create(&cloud).await.unwrap();
    }

    /// A cluster from `tosca(workers)`, bound to `cloud` as the scheduler
    /// binds it.
    async fn cluster(&self, name: &str, cloud: &str, workers: u64) {
        let cluster: Cluster = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {"tosca": tosca(workers), "constraints": {"cloud": {}}},
        }))
        .unwrap();
        let clusters = self.api::<Cluster>();
        clusters.create(&cluster).await.unwrap();
        clusters
            .binding(
                name,
                &CloudBinding::new(ResourceRef::new(
                    "infrastructure",
                    "Cloud",
                    Some(NS.to_owned()),
                    cloud,
                )),
            )
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> Cluster {
        self.api::<Cluster>().get(name).await.unwrap()
    }

    async fn state(&self, name: &str, state: ClusterState) -> Cluster {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let cluster = self.get(name).await;
            if cluster.status.state == state {
                return cluster;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never {state:?}: {:?}",
                cluster.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the cluster is ONLINE with `workers` workers applied.
    async fn online_with(&self, name: &str, workers: u64) -> Cluster {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let cluster = self.get(name).await;
            if cluster.status.state == ClusterState::Online
                && Value::Object(cluster.status.last_applied_tosca.clone()) == tosca(workers)
            {
                return cluster;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never ONLINE with {workers} workers: {:?}",
                cluster.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn id(&self, name: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = self.get(name).await.status.cluster_id {
                return id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} got no cluster_id"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn tosca(workers: u64) -> Value {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "imports": [{"ec3_custom_types": "https://example.org/ec3_custom_types.yaml"}],
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

/// Polls `check` every 50 ms for up to `limit`; whether it became true.
async fn wait<F, Fut>(_what: &str, limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bound_cluster_is_created_polled_and_connected_once() {
    let env = Env::start(Duration::from_millis(300)).await;
    env.cluster("c1", "os", 2).await;
    let cluster = env.state("c1", ClusterState::Online).await;
    assert_eq!(
        cluster.spec.kubeconfig,
        *env.kube.kubeconfig().as_object().unwrap()
    );
    assert!(
        cluster
            .metadata
            .finalizers
            .contains(&"infrastructure_resources_deletion".to_owned())
    );
    let id = cluster.status.cluster_id.clone().unwrap();
    assert_eq!(cluster.status.running_on, cluster.status.scheduled_to);
    assert_eq!(
        Value::Object(cluster.status.last_applied_tosca.clone()),
        tosca(2)
    );
    let infra = env.im.infrastructure(&id).unwrap();
    assert_eq!(infra.count("wn"), Some(2));
    // One create, one outputs: each call once per state change.
    assert_eq!(env.im.count(RequestKind::Create), 1);
    assert_eq!(env.im.count(RequestKind::Outputs), 1);
    assert!(env.im.count(RequestKind::State) >= 2);
    // The cloud's domains reached IM; the credentials reached nothing else.
    let request = env.im.requests().pop().unwrap();
    let auth = request.auth.unwrap();
    let openstack = auth.openstack().unwrap();
    assert_eq!(openstack["domain"], "Users");
    assert_eq!(openstack["tenant_domain_id"], "dom-42");
    assert_eq!(openstack["tenant"], "krake-project");
    assert_eq!(auth.im().unwrap()["username"], "krake");
    let status = serde_json::to_string(&cluster.status).unwrap();
    assert!(!status.contains("openstack-secret") && !status.contains("krake-im-password"));
    // Nothing more happens to a running cluster.
    let requests = env.im.request_count();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(env.im.request_count(), requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edited_template_is_an_update_and_deletion_goes_through_im() {
    let env = Env::start(Duration::from_millis(200)).await;
    env.cluster("c1", "os", 1).await;
    let mut cluster = env.state("c1", ClusterState::Online).await;
    let id = cluster.status.cluster_id.clone().unwrap();
    cluster.spec.tosca = serde_json::from_value(tosca(3)).unwrap();
    env.api::<Cluster>().update(&cluster).await.unwrap();
    let found = wait("three workers", Duration::from_secs(20), || async {
        env.im.infrastructure(&id).unwrap().count("wn") == Some(3)
    })
    .await;
    assert!(found);
    env.online_with("c1", 3).await;
    assert_eq!(env.im.count(RequestKind::Update), 1);
    assert_eq!(env.im.count(RequestKind::Create), 1);
    assert_eq!(env.im.infrastructure(&id).unwrap().templates, 2);
    // Down again.
    let mut cluster = env.get("c1").await;
    cluster.spec.tosca = serde_json::from_value(tosca(1)).unwrap();
    env.api::<Cluster>().update(&cluster).await.unwrap();
    let found = wait("one worker", Duration::from_secs(20), || async {
        env.im.infrastructure(&id).unwrap().count("wn") == Some(1)
    })
    .await;
    assert!(found);
    env.online_with("c1", 1).await;
    assert_eq!(env.im.count(RequestKind::Update), 2);

    env.api::<Cluster>()
        .delete("c1", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait("the cluster gone", Duration::from_secs(20), || async {
        env.api::<Cluster>().get("c1").await.is_err()
    })
    .await;
    assert!(gone, "{:?}", env.get("c1").await.status);
    assert!(env.im.live_infrastructures().is_empty());
    assert_eq!(env.im.count(RequestKind::Delete), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unconfigured_is_reconfigured_and_failed_stays_failed() {
    let env = Env::start(Duration::from_millis(800)).await;
    env.cluster("c1", "os", 1).await;
    let id = env.id("c1").await;
    env.im.force_vm_state(&id, "1", Some(states::UNCONFIGURED));
    let cluster = env.state("c1", ClusterState::Online).await;
    assert_eq!(env.im.infrastructure(&id).unwrap().reconfigures, 1);
    assert_eq!(cluster.status.retries, 0, "reset once configured");
    assert_eq!(env.im.count(RequestKind::Reconfigure), 1);

    env.cluster("c2", "os", 1).await;
    let id = env.id("c2").await;
    env.im.force_state(&id, Some(states::FAILED));
    let cluster = env.state("c2", ClusterState::Failed).await;
    let reason = cluster.status.reason.unwrap();
    assert!(reason.message.contains("failed"), "{}", reason.message);
    let requests = env.im.request_count();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.im.request_count(), requests, "FAILED stays FAILED");
    assert_eq!(env.get("c2").await.status.state, ClusterState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vanished_infrastructure_is_created_again() {
    let env = Env::start(Duration::from_millis(800)).await;
    env.cluster("c1", "os", 1).await;
    let first = env.id("c1").await;
    assert!(env.im.vanish(&first));
    env.state("c1", ClusterState::Online).await;
    let cluster = env.get("c1").await;
    assert_ne!(cluster.status.cluster_id.as_deref(), Some(first.as_str()));
    assert_eq!(env.im.count(RequestKind::Create), 2);
    assert_eq!(env.im.live_infrastructures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_template_fails_once_until_it_changes() {
    let env = Env::start(Duration::from_millis(100)).await;
    env.im
        .faults()
        .refuse_templates(Some("Error parsing the TOSCA template: bad"));
    env.cluster("c1", "os", 1).await;
    let cluster = env.state("c1", ClusterState::Failed).await;
    let reason = cluster.status.reason.clone().unwrap();
    assert_eq!(reason.code, ReasonCode::CreateFailed);
    assert!(
        reason
            .message
            .contains("Error parsing the TOSCA template: bad"),
        "{}",
        reason.message
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        env.im.count(RequestKind::Create),
        1,
        "never sent again as it was"
    );
    env.im.faults().clear();
    let mut cluster = env.get("c1").await;
    cluster.spec.tosca = serde_json::from_value(tosca(2)).unwrap();
    env.api::<Cluster>().update(&cluster).await.unwrap();
    env.state("c1", ClusterState::Online).await;
    assert_eq!(env.im.count(RequestKind::Create), 2);
    assert_eq!(env.im.live_infrastructures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_im_is_degraded_then_retried() {
    let env = Env::start(Duration::from_millis(100)).await;
    env.im.faults().fail_requests(Some(503));
    env.cluster("c1", "os", 1).await;
    let cluster = env.state("c1", ClusterState::Degraded).await;
    let reason = cluster.status.reason.unwrap();
    assert!(reason.message.contains("503"), "{}", reason.message);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.im.faults().clear();
    env.state("c1", ClusterState::Online).await;
    assert_eq!(env.im.live_infrastructures().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kubeconfig_that_does_not_parse_fails() {
    let env = Env::start(Duration::from_millis(100)).await;
    env.im.set_kubeconfig("clusters: [unclosed");
    env.cluster("c1", "os", 1).await;
    let cluster = env.state("c1", ClusterState::Failed).await;
    let reason = cluster.status.reason.unwrap();
    assert!(
        reason.message.contains("kubeconfig output"),
        "{}",
        reason.message
    );
    assert!(cluster.spec.kubeconfig.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cloud_decides_between_namespaced_and_global_providers() {
    let env = Env::start(Duration::from_millis(100)).await;
    // Same name: the global one with credentials IM refuses, the
    // namespaced one with the right ones.
    env.provider("both", false).await;
    env.namespaced_provider("both", true).await;
    env.cloud("namespaced", "both", true).await;
    env.cloud("global", "both", false).await;
    env.cluster("in-namespace", "namespaced", 1).await;
    env.cluster("global", "global", 1).await;
    env.state("in-namespace", ClusterState::Online).await;
    let cluster = env.state("global", ClusterState::Failed).await;
    let reason = cluster.status.reason.unwrap();
    assert!(reason.message.contains("401"), "{}", reason.message);
    assert!(!reason.message.contains("wrong"), "{}", reason.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_mid_creation_resumes_polling() {
    let mut env = Env::start(Duration::from_millis(1_000)).await;
    env.cluster("c1", "os", 1).await;
    env.id("c1").await;
    env.stop().await;
    env.run(config());
    env.state("c1", ClusterState::Online).await;
    assert_eq!(env.im.count(RequestKind::Create), 1);
    assert_eq!(env.im.count(RequestKind::Outputs), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clusters_in_flight_do_not_starve_each_other() {
    let mut config = config();
    config.workers = 2;
    config.poll_interval = Duration::from_millis(300);
    let env = Env::with(im_config(Duration::from_millis(1_000)), config).await;
    let clusters: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    for name in &clusters {
        env.cluster(name, "os", 1).await;
    }
    for name in &clusters {
        env.state(name, ClusterState::Online).await;
    }
    assert_eq!(env.im.count(RequestKind::Create), clusters.len());
    assert_eq!(env.im.count(RequestKind::Outputs), clusters.len());
}
