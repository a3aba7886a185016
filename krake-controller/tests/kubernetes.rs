//! The Kubernetes application and cluster controllers end to end: krake-rs's
//! real API (in-process, embedded store), the real scheduler and garbage
//! collector, and fake
//! Kubernetes clusters (`krake_testkit::kube`) that the unmodified `kube`
//! client talks to over HTTPS.
//!
//! Deployment, healing of deleted and edited objects, removal of fields
//! dropped from the manifest, migration, deletion, custom resources, cluster
//! states from node conditions and reachability, and bad input (a manifest
//! the cluster refuses, an unknown kind, a missing namespace, an unreachable
//! cluster, a cluster answering garbage, a wrong CA).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams, WriteGuard};
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::kubernetes::{
    ApplicationController, ApplicationControllerConfig, ClientTimeouts, ClusterController,
    ClusterControllerConfig,
};
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use krake_data::kinds::core::{GlobalMetric, GlobalMetricsProvider};
use krake_data::kinds::kubernetes::{Application, ApplicationState, Cluster, ClusterState};
use krake_data::{ReasonCode, Resource};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "testing";
const WITHIN: Duration = Duration::from_secs(15);

struct Env {
    _server: TestServer,
    client: Client,
    shutdown: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Env {
    /// The API, the scheduler and both Kubernetes controllers.
    async fn start() -> Env {
        Self::start_guarded(None).await
    }

    /// [`Env::start`], the application controller's writes checked by
    /// `guard` (as a leader elector's fencing does).
    async fn start_guarded(guard: Option<Arc<dyn WriteGuard>>) -> Env {
        let server = TestServer::embedded().await;
        let client = Client::new(&server.url()).unwrap();
        let shutdown = CancellationToken::new();
        let reflectors = Reflectors::new(client.clone(), shutdown.clone());
        let scheduler = SchedulerConfig {
            reschedule_after: Duration::from_millis(500),
            ..SchedulerConfig::default()
        };
        let timeouts = ClientTimeouts {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
        };
        let applications = ApplicationControllerConfig {
            timeouts,
            list_timeout: Duration::from_secs(3),
            ..ApplicationControllerConfig::default()
        };
        let clusters = ClusterControllerConfig {
            timeouts,
            ..ClusterControllerConfig::default()
        };
        tokio::spawn(Scheduler::new(&reflectors, scheduler).run(shutdown.clone()));
        tokio::spawn(GarbageCollector::new(&reflectors, GcConfig::default()).run(shutdown.clone()));
        let fenced = match guard {
            Some(guard) => reflectors.with_client(client.with_write_guard(guard)),
            None => reflectors.clone(),
        };
        tokio::spawn(ApplicationController::new(&fenced, applications).run(shutdown.clone()));
        tokio::spawn(ClusterController::new(&reflectors, clusters).run(shutdown.clone()));
        Env {
            _server: server,
            client,
            shutdown,
        }
    }

    fn api<K: Resource>(&self) -> Api<K> {
        match K::INFO.scope {
            krake_data::registry::Scope::Namespaced => Api::namespaced(self.client.clone(), NS),
            _ => Api::all(self.client.clone()),
        }
    }

    async fn create<K: Resource>(&self, object: Value) -> K {
        let object: K = serde_json::from_value(object).unwrap();
        self.api::<K>().create(&object).await.unwrap()
    }

    /// A Cluster registered from `kubeconfig`, with a weight on `metric`.
    async fn register(&self, name: &str, kubeconfig: Value, extra: Value) -> Cluster {
        let mut spec = json!({"kubeconfig": kubeconfig, "constraints": {"cloud": {}}});
        merge(&mut spec, extra);
        self.create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
            .await
    }

    async fn app(&self, name: &str) -> Application {
        self.api::<Application>().get(name).await.unwrap()
    }

    /// Polls the object `name` of kind `K` until `check` holds.
    async fn until_object<K: Resource + std::fmt::Debug>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&K) -> bool,
    ) -> K {
        let api = self.api::<K>();
        eventually(
            what,
            || {
                let api = api.clone();
                async move { api.get(name).await.ok() }
            },
            check,
        )
        .await
    }

    /// Polls the application until `check` holds.
    async fn app_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Application) -> bool,
    ) -> Application {
        self.until_object(name, what, check).await
    }

    /// Polls the cluster until `check` holds.
    async fn cluster_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Cluster) -> bool,
    ) -> Cluster {
        self.until_object(name, what, check).await
    }

    async fn online(&self, name: &str) -> Cluster {
        self.cluster_until(name, "ONLINE", |c| c.status.state == ClusterState::Online)
            .await
    }

    async fn running(&self, name: &str) -> Application {
        self.app_until(name, "RUNNING", |a| {
            a.status.state == ApplicationState::Running && a.status.running_on.is_some()
        })
        .await
    }

    /// Updates the application's spec with `change`.
    async fn update_spec(&self, name: &str, change: impl Fn(&mut Value)) {
        let api = self.api::<Application>();
        let mut app = api.get(name).await.unwrap();
        app.metadata.resource_version = None;
        let mut spec = serde_json::to_value(&app.spec).unwrap();
        change(&mut spec);
        app.spec = serde_json::from_value(spec).unwrap();
        api.update(&app).await.unwrap();
    }
}

/// Polls `probe` until its value satisfies `check` (within [`WITHIN`]).
async fn eventually<T: std::fmt::Debug, F, Fut>(
    what: &str,
    probe: F,
    check: impl Fn(&T) -> bool,
) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut last = None;
    loop {
        if let Some(value) = probe().await {
            if check(&value) {
                return value;
            }
            last = Some(value);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last seen: {last:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls until `probe` is true.
async fn until<F, Fut>(what: &str, probe: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, || async { Some(probe().await) }, |ok| *ok).await;
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (k, v) in extra {
            target.insert(k, v);
        }
    }
}

/// A static global provider with these values and a global metric each.
async fn static_metrics(env: &Env, values: &[(&str, f64)]) {
    let metrics: serde_json::Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let _: GlobalMetricsProvider = env
        .create(json!({
            "metadata": {"name": "static"},
            "spec": {"type": "static", "static": {"metrics": metrics}},
        }))
        .await;
    for (name, _) in values {
        let _: GlobalMetric = env
            .create(json!({
                "metadata": {"name": name},
                "spec": {"min": 0, "max": 100, "allowed_values": [], "provider": {"name": "static", "metric": name}},
            }))
            .await;
    }
}

async fn set_static(env: &Env, values: &[(&str, f64)]) {
    let api = env.api::<GlobalMetricsProvider>();
    let mut provider = api.get("static").await.unwrap();
    provider.metadata.resource_version = None;
    let metrics: serde_json::Map<String, Value> = values
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    provider.spec =
        serde_json::from_value(json!({"type": "static", "static": {"metrics": metrics}})).unwrap();
    api.update(&provider).await.unwrap();
}

fn deployment(name: &str, replicas: i64, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "env": env,
                }]},
            },
        },
    })
}

fn node_port_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 80}],
        },
    })
}

async fn create_app(env: &Env, name: &str, manifest: Value, extra: Value) -> Application {
    let mut spec = json!({"manifest": manifest, "constraints": {"cluster": {}}});
    merge(&mut spec, extra);
    env.create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
        .await
}

fn on(app: &Application) -> String {
    app.status
        .running_on
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_deployed_healed_migrated_and_removed() {
    let env = Env::start().await;
    let a = FakeCluster::start().await.unwrap();
    let b = FakeCluster::start().await.unwrap();
    static_metrics(&env, &[("load-a", 80.0), ("load-b", 20.0)]).await;
    env.register(
        "a",
        a.kubeconfig(),
        json!({"metrics": [{"name": "load-a", "weight": 1.0}]}),
    )
    .await;
    env.register(
        "b",
        b.kubeconfig(),
        json!({"metrics": [{"name": "load-b", "weight": 1.0}]}),
    )
    .await;
    env.online("a").await;
    env.online("b").await;

    let env_vars = json!([{"name": "MODE", "value": "fast"}, {"name": "DEBUG", "value": "1"}]);
    create_app(
        &env,
        "web",
        json!([deployment("web", 2, env_vars), node_port_service("web")]),
        json!({}),
    )
    .await;
    let app = env
        .app_until("web", "RUNNING with its service", |a| {
            a.status.state == ApplicationState::Running && a.status.services.contains_key("web")
        })
        .await;
    assert_eq!(on(&app), "a");
    let deployed = a
        .get("apps/v1", "Deployment", Some("default"), "web")
        .expect("the Deployment is on cluster a");
    assert_eq!(deployed["spec"]["replicas"], 2);
    let service = a
        .get("v1", "Service", Some("default"), "web")
        .expect("the Service is on cluster a");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(app.status.services["web"], format!("127.0.0.1:{node_port}"));
    assert!(
        b.get("apps/v1", "Deployment", Some("default"), "web")
            .is_none()
    );
    assert_eq!(app.status.container_health.desired_pods, 2);
    assert!(
        app.metadata
            .finalizers
            .iter()
            .any(|f| f == "kubernetes_resources_deletion"),
        "{:?}",
        app.metadata.finalizers
    );

    // Deleted on the cluster: back (a new object, with a new uid).
    let uid = deployed["metadata"]["uid"].clone();
    assert!(a.delete("apps/v1", "Deployment", Some("default"), "web"));
    until("the deleted Deployment to come back", || async {
        a.get("apps/v1", "Deployment", Some("default"), "web")
            .is_some_and(|d| d["metadata"]["uid"] != uid)
    })
    .await;

    // An observed field edited on the cluster: reverted.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    until("replicas back to 2", || async {
        a.get("apps/v1", "Deployment", Some("default"), "web")
            .is_some_and(|d| d["spec"]["replicas"] == 2)
    })
    .await;

    // A field nobody observes (a label someone else added) is left alone.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"metadata": {"labels": {"team": "ops"}}}),
    )
    .unwrap();

    // A field removed from the manifest disappears from the cluster object.
    env.update_spec("web", |spec| {
        spec["manifest"][0]["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "MODE", "value": "fast"}]);
    })
    .await;
    until("DEBUG removed from the container's env", || async {
        a.get("apps/v1", "Deployment", Some("default"), "web")
            .is_some_and(|d| {
                let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
                env.as_array()
                    .is_some_and(|e| e.len() == 1 && e[0]["name"] == "MODE")
            })
    })
    .await;
    let kept = a
        .get("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(kept["metadata"]["labels"]["team"], "ops", "{kept:#}");

    // Metrics change so that b wins: the application migrates.
    set_static(&env, &[("load-a", 10.0), ("load-b", 90.0)]).await;
    let app = env
        .app_until("web", "running on b", |a| {
            on(a) == "b" && a.status.state == ApplicationState::Running
        })
        .await;
    assert!(
        b.get("apps/v1", "Deployment", Some("default"), "web")
            .is_some()
    );
    assert!(b.get("v1", "Service", Some("default"), "web").is_some());
    until("the resources gone from a", || async {
        a.get("apps/v1", "Deployment", Some("default"), "web")
            .is_none()
            && a.get("v1", "Service", Some("default"), "web").is_none()
    })
    .await;
    assert!(app.status.services["web"].starts_with("127.0.0.1:"));

    // Deleted: the resources are gone and the object is removed.
    env.api::<Application>()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    until("the application removed", || async {
        env.api::<Application>().get("web").await.is_err()
    })
    .await;
    assert!(
        b.get("apps/v1", "Deployment", Some("default"), "web")
            .is_none()
    );
    assert!(b.get("v1", "Service", Some("default"), "web").is_none());
}

fn crontab_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    })
}

fn crontab(name: &str, schedule: &str) -> Value {
    json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": name},
        "spec": {"cronSpec": schedule, "image": "backup:1"},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_is_deployed_healed_and_removed() {
    let env = Env::start().await;
    let fake = FakeCluster::start().await.unwrap();
    fake.create(crontab_crd()).unwrap();
    env.register(
        "crd",
        fake.kubeconfig(),
        json!({"custom_resources": ["crontabs.stable.example.com"]}),
    )
    .await;
    env.online("crd").await;
    create_app(
        &env,
        "backup",
        json!([crontab("nightly", "0 3 * * *")]),
        json!({"constraints": {"cluster": {"custom_resources": ["crontabs.stable.example.com"]}}}),
    )
    .await;
    env.running("backup").await;
    let object = fake
        .get(
            "stable.example.com/v1",
            "CronTab",
            Some("default"),
            "nightly",
        )
        .expect("the CronTab is on the cluster");
    assert_eq!(object["spec"]["cronSpec"], "0 3 * * *");

    // Edited on the cluster: reverted. Deleted: back.
    fake.merge_patch(
        "stable.example.com/v1",
        "CronTab",
        Some("default"),
        "nightly",
        json!({"spec": {"cronSpec": "* * * * *"}}),
    )
    .unwrap();
    until("cronSpec reverted", || async {
        fake.get(
            "stable.example.com/v1",
            "CronTab",
            Some("default"),
            "nightly",
        )
        .is_some_and(|c| c["spec"]["cronSpec"] == "0 3 * * *")
    })
    .await;
    assert!(fake.delete(
        "stable.example.com/v1",
        "CronTab",
        Some("default"),
        "nightly"
    ));
    until("the CronTab back", || async {
        fake.get(
            "stable.example.com/v1",
            "CronTab",
            Some("default"),
            "nightly",
        )
        .is_some()
    })
    .await;

    env.api::<Application>()
        .delete("backup", &DeleteParams::default())
        .await
        .unwrap();
    until("the application removed", || async {
        env.api::<Application>().get("backup").await.is_err()
    })
    .await;
    assert!(
        fake.get(
            "stable.example.com/v1",
            "CronTab",
            Some("default"),
            "nightly"
        )
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_states_follow_nodes_and_reachability_and_applications_heal() {
    let env = Env::start().await;
    let fake = FakeCluster::start().await.unwrap();
    env.register("c", fake.kubeconfig(), json!({})).await;
    let cluster = env.online("c").await;
    let node = &cluster.status.nodes[0];
    assert_eq!(node.metadata.name, "node-1");
    let conditions = &node.status.as_ref().unwrap().conditions;
    assert!(
        conditions
            .iter()
            .any(|c| c.condition_type == "Ready" && c.status == "True"),
        "{conditions:?}"
    );

    fake.set_node_condition(
        "node-1",
        "MemoryPressure",
        "True",
        Some("LowMemory"),
        Some("low"),
    );
    env.cluster_until("c", "UNHEALTHY", |c| {
        c.status.state == ClusterState::Unhealthy
    })
    .await;
    fake.set_node_condition("node-1", "MemoryPressure", "False", None, None);
    fake.set_node_condition(
        "node-1",
        "Ready",
        "False",
        Some("KubeletNotReady"),
        Some("down"),
    );
    env.cluster_until("c", "NOTREADY", |c| {
        c.status.state == ClusterState::NotReady
    })
    .await;
    // Conditions without reason or message (Krake's API refuses Krake's own
    // status then): the state still follows.
    fake.set_node_condition("node-1", "Ready", "True", None, None);
    let cluster = env.online("c").await;
    let ready = cluster.status.nodes[0]
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.condition_type == "Ready")
        .cloned()
        .unwrap();
    assert_eq!((ready.reason.as_str(), ready.message.as_str()), ("", ""));

    // An application on it.
    create_app(
        &env,
        "app",
        json!([deployment("app", 1, json!([]))]),
        json!({}),
    )
    .await;
    env.running("app").await;

    // The cluster goes away: OFFLINE with the reason; the application's
    // Deployment is deleted meanwhile (by someone with access).
    fake.faults().refuse_connections(true);
    let offline = env
        .cluster_until("c", "OFFLINE", |c| c.status.state == ClusterState::Offline)
        .await;
    assert_eq!(
        offline.status.reason.as_ref().map(|r| r.code),
        Some(ReasonCode::ClusterNotReachable)
    );
    assert!(fake.delete("apps/v1", "Deployment", Some("default"), "app"));

    // It comes back: ONLINE, and the Deployment is back.
    fake.faults().refuse_connections(false);
    env.online("c").await;
    until("the Deployment healed after the outage", || async {
        fake.get("apps/v1", "Deployment", Some("default"), "app")
            .is_some()
    })
    .await;
    env.running("app").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_in_a_clear_state_and_reason() {
    let env = Env::start().await;
    let fake = FakeCluster::start().await.unwrap();
    env.register("c", fake.kubeconfig(), json!({})).await;
    env.online("c").await;

    // A manifest the cluster refuses (no selector): FAILED with its message.
    let mut invalid = deployment("invalid", 1, json!([]));
    invalid["spec"].as_object_mut().unwrap().remove("selector");
    create_app(&env, "refused", json!([invalid]), json!({})).await;
    let failed = env
        .app_until("refused", "FAILED", |a| {
            a.status.state == ApplicationState::Failed
        })
        .await;
    let reason = failed.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::KubernetesError);
    assert!(
        reason.message.contains("spec.selector"),
        "{}",
        reason.message
    );

    // Fixed by the user: taken again and RUNNING.
    env.update_spec("refused", |spec| {
        spec["manifest"][0]["spec"]["selector"] = json!({"matchLabels": {"app": "invalid"}});
    })
    .await;
    env.running("refused").await;
    assert!(
        fake.get("apps/v1", "Deployment", Some("default"), "invalid")
            .is_some()
    );

    // A kind the cluster does not serve.
    create_app(
        &env,
        "gizmo",
        json!([{"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g"}}]),
        json!({}),
    )
    .await;
    let failed = env
        .app_until("gizmo", "FAILED", |a| {
            a.status.state == ApplicationState::Failed
        })
        .await;
    assert_eq!(
        failed.status.reason.unwrap().code,
        ReasonCode::UnsupportedResource
    );

    // A namespace the cluster does not have.
    let mut elsewhere = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "nope"}});
    elsewhere["data"] = json!({"k": "v"});
    create_app(&env, "lost", json!([elsewhere]), json!({})).await;
    let failed = env
        .app_until("lost", "FAILED", |a| {
            a.status.state == ApplicationState::Failed
        })
        .await;
    let reason = failed.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::KubernetesError);
    assert!(reason.message.contains("nope"), "{}", reason.message);

    // The cluster answers 503 while the user changes the application:
    // DEGRADED with the reason, retried, RUNNING once it answers again.
    fake.faults().fail_requests(Some(503));
    env.update_spec("refused", |spec| {
        spec["manifest"][0]["spec"]["replicas"] = json!(2);
    })
    .await;
    let degraded = env
        .app_until("refused", "DEGRADED", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    assert_eq!(
        degraded.status.reason.unwrap().code,
        ReasonCode::ClusterNotReachable
    );
    fake.faults().fail_requests(None);
    env.app_until("refused", "RUNNING again", |a| {
        a.status.state == ApplicationState::Running
    })
    .await;
    until("replicas 2 applied", || async {
        fake.get("apps/v1", "Deployment", Some("default"), "invalid")
            .is_some_and(|d| d["spec"]["replicas"] == 2)
    })
    .await;

    // The cluster answers garbage (200 with a body that is not JSON): the
    // same, with the decoding error as the reason; nothing panics.
    fake.faults().answer_garbage(true);
    env.update_spec("refused", |spec| {
        spec["manifest"][0]["spec"]["replicas"] = json!(3);
    })
    .await;
    let degraded = env
        .app_until("refused", "DEGRADED on garbage", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    let reason = degraded.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::ClusterNotReachable);
    assert!(!reason.message.is_empty());
    fake.faults().answer_garbage(false);
    until("replicas 3 applied after the garbage", || async {
        fake.get("apps/v1", "Deployment", Some("default"), "invalid")
            .is_some_and(|d| d["spec"]["replicas"] == 3)
    })
    .await;
    env.app_until("refused", "RUNNING after the garbage", |a| {
        a.status.state == ApplicationState::Running
    })
    .await;

    // A kubeconfig with a CA that did not sign the server's certificate:
    // OFFLINE with the TLS error, never scheduled to.
    env.register("wrong-ca", fake.kubeconfig_with_wrong_ca(), json!({}))
        .await;
    let offline = env
        .cluster_until("wrong-ca", "OFFLINE", |c| {
            c.status.state == ClusterState::Offline
        })
        .await;
    let reason = offline.status.reason.unwrap();
    assert_eq!(reason.code, ReasonCode::ClusterNotReachable);
    assert!(
        reason.message.to_lowercase().contains("certificate"),
        "{}",
        reason.message
    );
    assert_eq!(on(&env.app("refused").await), "c");
}

/// An application deleted while its first apply is still on the way (the
/// resources land on the cluster, but `running_on` is never written: the
/// deletion changed the object, so that status write is refused) leaves
/// nothing behind: the deletion cleans `scheduled_to` too. Found by the
/// soak (`scripts/soak`), where deletes follow creates within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_deleted_during_its_first_apply_leaves_nothing() {
    let env = Env::start().await;
    let fake = FakeCluster::start().await.unwrap();
    env.register("slow", fake.kubeconfig(), json!({})).await;
    env.online("slow").await;

    // Every answer of the cluster now takes 1.5 s: the apply is in flight
    // long enough to delete the application meanwhile.
    fake.faults().slow(Some(Duration::from_millis(1_500)));
    create_app(
        &env,
        "brief",
        json!([deployment("brief", 1, json!([]))]),
        json!({}),
    )
    .await;
    env.app_until("brief", "CREATING", |a| {
        a.status.state == ApplicationState::Creating
    })
    .await;
    env.api::<Application>()
        .delete("brief", &DeleteParams::default())
        .await
        .unwrap();
    // The apply lands after the deletion.
    until("the Deployment applied", || async {
        fake.get("apps/v1", "Deployment", Some("default"), "brief")
            .is_some()
    })
    .await;
    fake.faults().slow(None);

    until("the application removed", || async {
        env.api::<Application>().get("brief").await.is_err()
    })
    .await;
    until("the Deployment deleted from the cluster", || async {
        fake.get("apps/v1", "Deployment", Some("default"), "brief")
            .is_none()
    })
    .await;
}

/// A write guard that lets a given number of writes out, then refuses
/// (a leader whose lease runs out between two writes of one reconcile);
/// unlimited while the budget is negative.
#[derive(Debug)]
struct Budget {
    left: AtomicI64,
}

impl WriteGuard for Budget {
    fn check(&self) -> Result<(), String> {
        let allowed = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left != 0).then(|| if left > 0 { left - 1 } else { left })
            })
            .is_ok();
        if allowed {
            Ok(())
        } else {
            Err("this replica lost its lease".into())
        }
    }
}

/// A controller whose lease runs out in the middle of a reconcile (after
/// its status write announcing RECONCILING, before the apply) changes
/// nothing on the cluster: every write to a cluster asks the same guard as
/// the writes to the Krake API. Once writes are allowed again, the update
/// is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_application_controller_does_not_touch_the_cluster() {
    let budget = Arc::new(Budget {
        left: AtomicI64::new(-1),
    });
    let env = Env::start_guarded(Some(budget.clone())).await;
    let fake = FakeCluster::start().await.unwrap();
    env.register("only", fake.kubeconfig(), json!({})).await;
    env.online("only").await;
    create_app(
        &env,
        "fenced",
        json!([deployment("fenced", 1, json!([]))]),
        json!({}),
    )
    .await;
    env.running("fenced").await;
    let replicas = || {
        fake.get("apps/v1", "Deployment", Some("default"), "fenced")
            .and_then(|d| d["spec"]["replicas"].as_i64())
    };
    assert_eq!(replicas(), Some(1));

    // One more write (the RECONCILING status), then the lease is gone.
    budget.left.store(1, Ordering::SeqCst);
    env.update_spec("fenced", |spec| {
        spec["manifest"][0]["spec"]["replicas"] = json!(3);
    })
    .await;
    env.app_until("fenced", "RECONCILING", |a| {
        a.status.state == ApplicationState::Reconciling
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replicas(),
        Some(1),
        "a controller without its lease applied to the cluster"
    );

    budget.left.store(-1, Ordering::SeqCst);
    until("the update applied once writes are allowed", || async {
        replicas() == Some(3)
    })
    .await;
}

/// The shutdown hook's request to the workload is a write to the cluster's
/// world: a controller without its lease does not send it (and writes
/// nothing); once writes are allowed again, the workload is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_application_controller_does_not_ask_for_a_shutdown() {
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // The workload: a listener on a port a NodePort may have, counting the
    // requests it gets.
    let start = 30000 + u16::try_from(std::process::id() % 2768).unwrap();
    let mut listener = None;
    for k in 0..2768u16 {
        let port = 30000 + (start - 30000 + k) % 2768;
        if let Ok(bound) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            listener = Some(bound);
            break;
        }
    }
    let listener = listener.expect("a free port in 30000-32767");
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });

    let budget = Arc::new(Budget {
        left: AtomicI64::new(-1),
    });
    let env = Env::start_guarded(Some(budget.clone())).await;
    let fake = FakeCluster::start().await.unwrap();
    env.register("only", fake.kubeconfig(), json!({})).await;
    env.online("only").await;
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "shutdown"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "fenced"},
            "ports": [{"port": 8080, "targetPort": 8080, "nodePort": port}],
        },
    });
    create_app(
        &env,
        "fenced",
        json!([deployment("fenced", 1, json!([])), service]),
        json!({"hooks": ["shutdown"], "shutdown_grace_time": 60}),
    )
    .await;
    let endpoint = format!("127.0.0.1:{port}");
    env.app_until("fenced", "RUNNING with its shutdown service", |a| {
        a.status.state == ApplicationState::Running
            && a.status.services.get("shutdown") == Some(&endpoint)
    })
    .await;

    // One more check of the guard, then the lease is gone: the request is
    // not sent, the application is not deleted.
    budget.left.store(1, Ordering::SeqCst);
    env.api::<Application>()
        .delete("fenced", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        0,
        "a controller without its lease asked the workload"
    );
    assert!(
        fake.get("apps/v1", "Deployment", Some("default"), "fenced")
            .is_some()
    );

    budget.left.store(-1, Ordering::SeqCst);
    until("the workload asked once writes are allowed", || async {
        asked.load(Ordering::SeqCst) == 1
    })
    .await;
    let app = env.app("fenced").await;
    assert_eq!(app.status.state, ApplicationState::WaitingForCleaning);
    assert!(app.status.shutdown_grace_period.is_some());
}
