//! The scheduler end to end against krake-rs's real API (in-process, on the
//! embedded store): constraints, tenant separation, scores and stickiness,
//! rescheduling and migration, FAILING_METRICS and recovery, cloud binding,
//! automatic cluster creation and cleanup, DEGRADED and FAILED, the hand-off
//! to the Kubernetes controller, Magnum clusters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams};
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use krake_data::kinds::core::{GlobalMetric, GlobalMetricsProvider, Metric, MetricsProvider};
use krake_data::kinds::infrastructure::{Cloud, CloudState, GlobalCloud};
use krake_data::kinds::kubernetes::{Application, ApplicationState, Cluster, ClusterState};
use krake_data::kinds::openstack::{MagnumCluster, Project};
use krake_data::{ReasonCode, Resource};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const NS: &str = "testing";

struct Env {
    _server: TestServer,
    client: Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    async fn start(config: SchedulerConfig) -> Env {
        let server = TestServer::embedded().await;
        let client = Client::new(&server.url()).unwrap();
        let mut env = Env {
            _server: server,
            client,
            shutdown: CancellationToken::new(),
            task: None,
        };
        env.run(config);
        env
    }

    /// The API only, the scheduler not started yet.
    async fn api_only() -> Env {
        let server = TestServer::embedded().await;
        let client = Client::new(&server.url()).unwrap();
        Env {
            _server: server,
            client,
            shutdown: CancellationToken::new(),
            task: None,
        }
    }

    fn run(&mut self, config: SchedulerConfig) {
        let shutdown = CancellationToken::new();
        self.shutdown = shutdown.clone();
        let reflectors = Reflectors::new(self.client.clone(), shutdown.clone());
        self.task = Some(tokio::spawn(
            Scheduler::new(&reflectors, config).run(shutdown),
        ));
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("the scheduler stops")
                .unwrap();
        }
    }

    fn api<K: Resource>(&self) -> Api<K> {
        match K::INFO.scope {
            krake_data::registry::Scope::Namespaced => Api::namespaced(self.client.clone(), NS),
            _ => Api::all(self.client.clone()),
        }
    }

    fn api_in<K: Resource>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn create<K: Resource>(&self, object: Value) -> K {
        let object: K = serde_json::from_value(object).unwrap();
        let api = match object.metadata().namespace.as_deref() {
            Some(ns) => self.api_in::<K>(ns),
            None => self.api::<K>(),
        };
        api.create(&object).await.unwrap()
    }

    /// True while the application `waits` of namespace `slow` is not bound.
    async fn app_in_slow_is_unbound(&self) -> bool {
        let app = self
            .api_in::<Application>("slow")
            .get("waits")
            .await
            .unwrap();
        app.status.scheduled_to.is_none()
    }

    async fn app(&self, name: &str) -> Application {
        self.api::<Application>().get(name).await.unwrap()
    }

    async fn cluster(&self, name: &str) -> Cluster {
        self.api::<Cluster>().get(name).await.unwrap()
    }

    /// Polls the object `name` through `api` until `check` holds (10 s at
    /// most).
    async fn until<K: Resource>(
        &self,
        api: Api<K>,
        name: &str,
        what: &str,
        check: impl Fn(&K) -> bool,
    ) -> K {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let object = api.get(name).await.unwrap();
            if check(&object) {
                return object;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {name} to be {what}: {object:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls the application until `check` holds.
    async fn app_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Application) -> bool,
    ) -> Application {
        self.until(self.api(), name, what, check).await
    }

    /// Polls the cluster until `check` holds.
    async fn cluster_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Cluster) -> bool,
    ) -> Cluster {
        self.until(self.api(), name, what, check).await
    }

    async fn bound(&self, app: &str) -> String {
        self.app_until(app, "bound", |a| a.status.scheduled_to.is_some())
            .await
            .status
            .scheduled_to
            .unwrap()
            .name
    }

    async fn set_cluster_state(&self, name: &str, state: ClusterState) {
        let mut cluster = self.cluster(name).await;
        cluster.metadata.resource_version = None;
        cluster.status.state = state;
        self.api::<Cluster>().status(&cluster).await.unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn config() -> SchedulerConfig {
    let mut config = SchedulerConfig {
        reschedule_after: Duration::from_secs(60),
        ..SchedulerConfig::default()
    };
    config.providers.cache_ttl = Duration::from_millis(100);
    config.providers.timeout = Duration::from_secs(2);
    config
}

fn kubeconfig(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "users": [{"name": name, "user": {"token": "t"}}],
    })
}

fn tosca() -> Value {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "topology_template": {"node_templates": {}, "outputs": {"kubeconfig": {"value": "x"}}},
    })
}

/// An ONLINE cluster in `namespace` with labels, custom resources and
/// metrics (`[(global metric name, weight)]`).
async fn online_cluster(
    env: &Env,
    namespace: &str,
    name: &str,
    labels: Value,
    custom_resources: &[&str],
    metrics: &[(&str, f64)],
) {
    let metrics: Vec<Value> = metrics
        .iter()
        .map(|(m, w)| json!({"name": m, "weight": w}))
        .collect();
    let created: Cluster = env
        .create(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "kubeconfig": kubeconfig(name),
                "custom_resources": custom_resources,
                "metrics": metrics,
                "constraints": {"cloud": {}},
            },
        }))
        .await;
    let mut online = created;
    online.status.state = ClusterState::Online;
    env.api_in::<Cluster>(namespace)
        .status(&online)
        .await
        .unwrap();
}

async fn app(env: &Env, name: &str, cluster_constraints: Value) -> Application {
    app_with(env, name, cluster_constraints, json!({})).await
}

async fn app_with(env: &Env, name: &str, cluster_constraints: Value, extra: Value) -> Application {
    let mut spec = json!({
        "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}],
        "constraints": {"cluster": cluster_constraints},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    env.create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
        .await
}

/// A static global provider `static` with these values, and a global
/// metric per value (range 0..100) named like the provider's metric.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_custom_resource_and_metric_constraints_each_filter() {
    let env = Env::start(config()).await;
    static_metrics(&env, &[("load-a", 20.0), ("load-b", 70.0)]).await;
    online_cluster(&env, NS, "de", json!({"location": "DE"}), &[], &[]).await;
    online_cluster(&env, NS, "fr", json!({"location": "FR"}), &[], &[]).await;
    online_cluster(
        &env,
        NS,
        "crd",
        json!({}),
        &["crontabs.stable.example.com"],
        &[],
    )
    .await;
    online_cluster(
        &env,
        NS,
        "low",
        json!({"tier": "m"}),
        &[],
        &[("load-a", 1.0)],
    )
    .await;
    online_cluster(
        &env,
        NS,
        "high",
        json!({"tier": "m"}),
        &[],
        &[("load-b", 1.0)],
    )
    .await;
    // Offline and deleted clusters never match.
    online_cluster(
        &env,
        NS,
        "de-offline",
        json!({"location": "DE", "only": "x"}),
        &[],
        &[],
    )
    .await;
    env.set_cluster_state("de-offline", ClusterState::Offline)
        .await;

    app(&env, "by-label", json!({"labels": ["location is DE"]})).await;
    app(
        &env,
        "by-negation",
        json!({"labels": ["location != DE", "location in (FR, IT)"]}),
    )
    .await;
    app(
        &env,
        "by-crd",
        json!({"custom_resources": ["crontabs.stable.example.com"]}),
    )
    .await;
    // The metric's value (20 and 70), not Krake's weight x normalized.
    app(
        &env,
        "by-metric",
        json!({"labels": ["tier = m"], "metrics": ["load-b > 50"]}),
    )
    .await;
    app(
        &env,
        "by-metric-low",
        json!({"labels": ["tier = m"], "metrics": ["load-a < 30"]}),
    )
    .await;
    app(&env, "offline-only", json!({"labels": ["only = x"]})).await;

    assert_eq!(env.bound("by-label").await, "de");
    assert_eq!(env.bound("by-negation").await, "fr");
    assert_eq!(env.bound("by-crd").await, "crd");
    assert_eq!(env.bound("by-metric").await, "high");
    assert_eq!(env.bound("by-metric-low").await, "low");
    let stuck = env
        .app_until("offline-only", "degraded", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    assert_eq!(
        stuck.status.reason.unwrap().code,
        ReasonCode::NoSuitableResource
    );
    assert!(stuck.status.scheduled_to.is_none());
    // Binding hands the application to the Kubernetes controller.
    let bound = env.app("by-label").await;
    assert!(bound.status.kube_controller_triggered >= bound.metadata.modified);
    assert!(
        bound
            .metadata
            .owners
            .iter()
            .any(|o| o.kind == "Cluster" && o.name == "de")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_only_see_clusters_of_their_namespace() {
    let env = Env::start(config()).await;
    online_cluster(
        &env,
        "other-tenant",
        "theirs",
        json!({"location": "DE"}),
        &[],
        &[],
    )
    .await;
    app(&env, "mine", json!({"labels": ["location is DE"]})).await;
    let app = env
        .app_until("mine", "degraded", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    assert!(app.status.scheduled_to.is_none());
    online_cluster(&env, NS, "ours", json!({"location": "DE"}), &[], &[]).await;
    assert_eq!(env.bound("mine").await, "ours");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_best_score_wins_and_stickiness_keeps_a_close_second() {
    let env = Env::start(config()).await;
    // Normalized: a 0.30 x 1 + 0.90 x 1 -> 0.60; b 0.50 x 2 + 0.50 x 1 -> 0.50;
    // c 0.62 x 1 -> 0.62.
    static_metrics(
        &env,
        &[("m30", 30.0), ("m90", 90.0), ("m50", 50.0), ("m62", 62.0)],
    )
    .await;
    online_cluster(&env, NS, "a", json!({}), &[], &[("m30", 1.0), ("m90", 1.0)]).await;
    online_cluster(&env, NS, "b", json!({}), &[], &[("m50", 2.0), ("m50", 1.0)]).await;
    online_cluster(&env, NS, "c", json!({}), &[], &[("m62", 1.0)]).await;
    // A cluster without metrics loses to clusters with metrics.
    online_cluster(&env, NS, "plain", json!({}), &[], &[]).await;
    for i in 0..5 {
        app(&env, &format!("app-{i}"), json!({})).await;
    }
    for i in 0..5 {
        assert_eq!(env.bound(&format!("app-{i}")).await, "c");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescheduling_migrates_when_allowed_and_stays_when_not() {
    let mut cfg = config();
    cfg.reschedule_after = Duration::from_millis(400);
    cfg.stickiness = 0.1;
    let env = Env::start(cfg).await;
    static_metrics(&env, &[("load-a", 80.0), ("load-b", 20.0)]).await;
    online_cluster(&env, NS, "a", json!({}), &[], &[("load-a", 1.0)]).await;
    online_cluster(&env, NS, "b", json!({}), &[], &[("load-b", 1.0)]).await;
    app(&env, "moves", json!({})).await;
    app_with(
        &env,
        "stays",
        json!({}),
        json!({"constraints": {"cluster": {}, "migration": false}}),
    )
    .await;
    assert_eq!(env.bound("moves").await, "a");
    assert_eq!(env.bound("stays").await, "a");

    // A small change: stickiness (0.8 + 0.1) / 1.1 = 0.82 > 0.81 keeps it.
    set_static(&env, &[("load-a", 80.0), ("load-b", 81.0)]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        env.app("moves").await.status.scheduled_to.unwrap().name,
        "a"
    );

    // A clear change moves the migratable one only.
    set_static(&env, &[("load-a", 10.0), ("load-b", 90.0)]).await;
    env.app_until("moves", "moved to b", |a| {
        a.status
            .scheduled_to
            .as_ref()
            .is_some_and(|c| c.name == "b")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        env.app("stays").await.status.scheduled_to.unwrap().name,
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_marks_failing_metrics_until_it_answers() {
    let env = Env::start(config()).await;
    // A Prometheus on a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let _: MetricsProvider = env
        .create(json!({
            "metadata": {"name": "prom", "namespace": NS},
            "spec": {"type": "prometheus", "prometheus": {"url": url}},
        }))
        .await;
    let _: Metric = env
        .create(json!({
            "metadata": {"name": "load", "namespace": NS},
            "spec": {"min": 0, "max": 1, "allowed_values": [], "provider": {"name": "prom", "metric": "load"}},
        }))
        .await;
    let created: Cluster = env
        .create(json!({
            "metadata": {"name": "c1", "namespace": NS},
            "spec": {"kubeconfig": kubeconfig("c1"), "constraints": {"cloud": {}},
                     "metrics": [{"name": "load", "weight": 1.0, "namespaced": true},
                                 {"name": "missing", "weight": 1.0}]},
        }))
        .await;
    let mut online = created;
    online.status.state = ClusterState::Online;
    env.api::<Cluster>().status(&online).await.unwrap();
    // The app is placed anyway (ranked without metrics), and the cluster is
    // marked.
    app(&env, "app", json!({})).await;
    assert_eq!(env.bound("app").await, "c1");
    let failing = env
        .cluster_until("c1", "FAILING_METRICS", |c| {
            c.status.state == ClusterState::FailingMetrics
        })
        .await;
    let reasons = &failing.status.metrics_reasons;
    assert_eq!(reasons["load"].code, ReasonCode::UnreachableMetricsProvider);
    assert_eq!(reasons["missing"].code, ReasonCode::UnknownMetric);

    // The provider answers (now a static one) and the unknown metric is gone:
    // back to ONLINE with no reasons.
    let providers = env.api::<MetricsProvider>();
    let mut provider = providers.get("prom").await.unwrap();
    provider.metadata.resource_version = None;
    provider.spec =
        serde_json::from_value(json!({"type": "static", "static": {"metrics": {"load": 0.5}}}))
            .unwrap();
    providers.update(&provider).await.unwrap();
    let mut cluster = env.cluster("c1").await;
    cluster.metadata.resource_version = None;
    cluster.spec.metrics.retain(|m| m.name == "load");
    env.api::<Cluster>().update(&cluster).await.unwrap();
    // Anything that makes the scheduler look again: a new application.
    app(&env, "app2", json!({})).await;
    let healed = env
        .cluster_until("c1", "ONLINE", |c| c.status.state == ClusterState::Online)
        .await;
    assert!(healed.status.metrics_reasons.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_to_be_created_are_bound_to_a_matching_cloud() {
    let env = Env::start(config()).await;
    let cloud = |name: &str, namespace: Option<&str>, labels: Value| {
        json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"type": "openstack", "openstack": {
                "url": "http://127.0.0.1:5000/v3",
                "auth": {"type": "password", "password": {"user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
                "infrastructure_provider": {"name": "im"},
            }},
        })
    };
    let _: Cloud = env
        .create(cloud("fr-cloud", Some(NS), json!({"location": "FR"})))
        .await;
    let _: GlobalCloud = env
        .create(cloud("de-global", None, json!({"location": "DE"})))
        .await;
    let _: Cloud = env
        .create(cloud(
            "de-other-tenant",
            Some("other"),
            json!({"location": "DE"}),
        ))
        .await;
    for (name, constraint) in [
        ("to-de", "location is DE"),
        ("to-fr", "location is FR"),
        ("nowhere", "location is US"),
    ] {
        let _: Cluster = env
            .create(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"tosca": tosca(), "constraints": {"cloud": {"labels": [constraint]}},
                         "backoff_limit": 1},
            }))
            .await;
    }
    let bound = |c: &Cluster| c.status.scheduled_to.is_some();
    let de = env.cluster_until("to-de", "bound", bound).await;
    let de = de.status.scheduled_to.unwrap();
    assert_eq!(
        (de.kind.as_str(), de.name.as_str()),
        ("GlobalCloud", "de-global")
    );
    let fr = env.cluster_until("to-fr", "bound", bound).await;
    let fr = fr.status.scheduled_to.unwrap();
    assert_eq!(
        (fr.kind.as_str(), fr.name.as_str(), fr.namespace.as_deref()),
        ("Cloud", "fr-cloud", Some(NS))
    );
    assert!(env.cluster("to-fr").await.metadata.owners.contains(&fr));
    let failed = env
        .cluster_until("nowhere", "FAILED", |c| {
            c.status.state == ClusterState::Failed
        })
        .await;
    assert_eq!(
        failed.status.reason.unwrap().code,
        ReasonCode::NoSuitableResource
    );
    // Registered clusters (with a kubeconfig) are left alone.
    online_cluster(&env, NS, "registered", json!({}), &[], &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.cluster("registered")
            .await
            .status
            .scheduled_to
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_created_on_a_cloud_for_applications_and_removed_when_unused() {
    let mut cfg = config();
    cfg.cluster_tosca = Some(serde_json::from_value(tosca()).unwrap());
    cfg.deletion_retention = Duration::from_millis(500);
    let env = Env::start(cfg).await;
    let _: Cloud = env
        .create(json!({
            "metadata": {"name": "cloud", "namespace": NS, "labels": {"location": "DE"}},
            "spec": {"type": "openstack", "openstack": {
                "url": "http://127.0.0.1:5000/v3",
                "auth": {"type": "password", "password": {"user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
                "infrastructure_provider": {"name": "im"},
            }},
        }))
        .await;
    app_with(
        &env,
        "auto",
        json!({"labels": ["location is DE"]}),
        json!({"auto_cluster_create": true}),
    )
    .await;
    let waiting = env
        .app_until("auto", "waiting", |a| {
            a.status.state == ApplicationState::WaitingForClusterCreation
        })
        .await;
    let name = waiting.status.auto_cluster_create_started.unwrap();
    let cluster = env.cluster(&name).await;
    assert!(cluster.spec.auto_generated && cluster.spec.inherit_metrics);
    assert!(cluster.metadata.inherit_labels);
    assert_eq!(
        cluster.spec.tosca,
        serde_json::from_value::<serde_json::Map<String, Value>>(tosca()).unwrap()
    );
    assert_eq!(cluster.status.scheduled_to.as_ref().unwrap().name, "cloud");
    let labels = cluster.spec.constraints.cloud.labels.unwrap();
    assert_eq!(labels[0].as_str(), "location is DE");

    // The infrastructure controller would bring it up.
    env.set_cluster_state(&name, ClusterState::Online).await;
    assert_eq!(env.bound("auto").await, name);
    let app = env.app("auto").await;
    assert_ne!(
        app.status.state,
        ApplicationState::WaitingForClusterCreation
    );
    assert!(app.status.auto_cluster_create_started.is_none());

    // While the application uses it, the cluster stays.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(env.api::<Cluster>().get(&name).await.is_ok());
    // Once it is gone, the cluster goes after the retention time.
    env.api::<Application>()
        .delete("auto", &DeleteParams::force())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match env.api::<Cluster>().get(&name).await {
            Ok(c) if c.metadata.is_deleted() => break,
            Err(err) if err.is_not_found() => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unused cluster stays"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_match_degrades_with_backoff_then_fails() {
    let env = Env::start(config()).await;
    app_with(
        &env,
        "lost",
        json!({"labels": ["location is Mars"]}),
        json!({"backoff": 1, "backoff_delay": 1, "backoff_limit": 2}),
    )
    .await;
    let degraded = env
        .app_until("lost", "degraded", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    assert_eq!(
        degraded.status.reason.as_ref().unwrap().code,
        ReasonCode::NoSuitableResource
    );
    assert_eq!(degraded.status.retries, Some(1));
    let retry = degraded.status.scheduled_retry.unwrap();
    let delay = (retry - degraded.metadata.modified.unwrap()).num_milliseconds();
    assert!((500..=3000).contains(&delay), "retry in {delay} ms");
    let failed = env
        .app_until("lost", "failed", |a| {
            a.status.state == ApplicationState::Failed
        })
        .await;
    assert_eq!(failed.status.retries, Some(0));
    assert_eq!(
        failed.status.reason.unwrap().message,
        "No matching Kubernetes cluster found"
    );
    // FAILED is final for the scheduler: a matching cluster does not revive it.
    online_cluster(&env, NS, "mars", json!({"location": "Mars"}), &[], &[]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.app("lost").await.status.state, ApplicationState::Failed);

    // A degraded application recovers when a cluster appears in time.
    app_with(
        &env,
        "late",
        json!({"labels": ["location is Venus"]}),
        json!({"backoff_delay": 1, "backoff_limit": -1}),
    )
    .await;
    env.app_until("late", "degraded", |a| {
        a.status.state == ApplicationState::Degraded
    })
    .await;
    online_cluster(&env, NS, "venus", json!({"location": "Venus"}), &[], &[]).await;
    assert_eq!(env.bound("late").await, "venus");
    let late = env
        .app_until("late", "recovered", |a| {
            a.status.state != ApplicationState::Degraded
        })
        .await;
    assert!(late.status.reason.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_update_is_handed_to_the_kubernetes_controller() {
    let env = Env::start(config()).await;
    online_cluster(&env, NS, "only", json!({}), &[], &[]).await;
    app(&env, "app", json!({})).await;
    env.bound("app").await;
    let before = env.app("app").await;
    let mut changed = before.clone();
    changed.metadata.resource_version = None;
    changed.metadata.labels.insert("version".into(), "2".into());
    let updated = env.api::<Application>().update(&changed).await.unwrap();
    assert!(updated.status.kube_controller_triggered < updated.metadata.modified);
    let handed = env
        .app_until("app", "handed off", |a| {
            a.status.kube_controller_triggered >= a.metadata.modified
        })
        .await;
    assert_eq!(handed.status.scheduled_to.unwrap().name, "only");
    assert_eq!(
        handed.status.scheduled, before.status.scheduled,
        "not bound again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_scheduler_keeps_placements() {
    let mut env = Env::api_only().await;
    static_metrics(&env, &[("l1", 40.0), ("l2", 60.0)]).await;
    online_cluster(&env, NS, "c1", json!({}), &[], &[("l1", 1.0)]).await;
    online_cluster(&env, NS, "c2", json!({}), &[], &[("l2", 1.0)]).await;
    for i in 0..10 {
        app(&env, &format!("app-{i}"), json!({})).await;
    }
    env.run(config());
    for i in 0..10 {
        assert_eq!(env.bound(&format!("app-{i}")).await, "c2");
    }
    let before = env.app("app-3").await;
    env.stop().await;
    // c1 gets slightly better, within stickiness: nothing moves.
    set_static(&env, &[("l1", 62.0), ("l2", 60.0)]).await;
    env.run(config());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = env.app("app-3").await;
    assert_eq!(after.status.scheduled_to, before.status.scheduled_to);
    assert_eq!(after.status.scheduled, before.status.scheduled);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnum_clusters_are_bound_to_a_project_of_their_namespace() {
    let env = Env::start(config()).await;
    let project = |name: &str, namespace: &str, labels: Value| {
        json!({
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"url": "http://127.0.0.1:5000/v3", "template": format!("tpl-{name}"),
                     "auth": {"type": "application_credential", "application_credential": {"id": "i", "secret": "s"}}},
        })
    };
    let _: Project = env
        .create(project("p-de", NS, json!({"location": "DE"})))
        .await;
    let _: Project = env
        .create(project("p-fr", NS, json!({"location": "FR"})))
        .await;
    let _: Project = env
        .create(project(
            "p-de-other",
            "other",
            json!({"location": "DE", "x": "y"}),
        ))
        .await;
    let _: MagnumCluster = env
        .create(json!({
            "metadata": {"name": "m1", "namespace": NS},
            "spec": {"constraints": {"project": {"labels": ["location is DE"]}}},
        }))
        .await;
    let _: MagnumCluster = env
        .create(json!({
            "metadata": {"name": "m2", "namespace": NS},
            "spec": {"constraints": {"project": {"labels": ["x is y"]}}},
        }))
        .await;
    let api = env.api::<MagnumCluster>();
    let m1 = env
        .until(api.clone(), "m1", "bound", |m| m.status.project.is_some())
        .await;
    assert_eq!(m1.status.project.unwrap().name, "p-de");
    assert_eq!(m1.status.template.as_deref(), Some("tpl-p-de"));
    assert_eq!(m1.metadata.labels["location"], "DE", "labels copied");
    let m2 = env
        .until(api, "m2", "given a reason", |m| m.status.reason.is_some())
        .await;
    assert_eq!(
        m2.status.reason.unwrap().code,
        ReasonCode::NoSuitableResource
    );
    assert!(
        m2.status.project.is_none(),
        "never another tenant's project"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_metrics_failures_mark_the_cloud() {
    let env = Env::start(config()).await;
    let _: GlobalCloud = env
        .create(json!({
            "metadata": {"name": "g"},
            "spec": {"type": "openstack", "openstack": {
                "url": "http://127.0.0.1:5000/v3",
                "auth": {"type": "password", "password": {"user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
                "infrastructure_provider": {"name": "im"},
                "metrics": [{"name": "nope", "weight": 1.0}],
            }},
        }))
        .await;
    let _: Cluster = env
        .create(json!({
            "metadata": {"name": "to-create", "namespace": NS},
            "spec": {"tosca": tosca(), "constraints": {"cloud": {}}},
        }))
        .await;
    let cloud = env
        .until(env.api::<GlobalCloud>(), "g", "FAILING_METRICS", |c| {
            c.status.state == CloudState::FailingMetrics
        })
        .await;
    assert_eq!(
        cloud.status.metrics_reasons["nope"].code,
        ReasonCode::UnknownMetric
    );
    // Ranked without metrics, it still takes the cluster.
    let cluster = env
        .cluster_until("to-create", "bound", |c| c.status.scheduled_to.is_some())
        .await;
    assert_eq!(cluster.status.scheduled_to.unwrap().name, "g");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_follow_live_metrics_from_a_real_prometheus() {
    use krake_testkit::prometheus::Exporter;
    use krake_testkit::prometheus::PrometheusProcess;

    let exporter = Exporter::start().await.unwrap();
    exporter.set("green_energy_a", 10.0);
    exporter.set("green_energy_b", 90.0);
    let prometheus = PrometheusProcess::start(&[exporter.address()])
        .await
        .unwrap();
    prometheus
        .wait_for_value("green_energy_b", 90.0)
        .await
        .unwrap();

    let mut cfg = config();
    cfg.reschedule_after = Duration::from_millis(500);
    let env = Env::start(cfg).await;
    let _: GlobalMetricsProvider = env
        .create(json!({
            "metadata": {"name": "prometheus"},
            "spec": {"type": "prometheus", "prometheus": {"url": prometheus.url()}},
        }))
        .await;
    for name in ["green_energy_a", "green_energy_b"] {
        let _: GlobalMetric = env
            .create(json!({
                "metadata": {"name": name},
                "spec": {"min": 0, "max": 100, "allowed_values": [], "provider": {"name": "prometheus", "metric": name}},
            }))
            .await;
    }
    online_cluster(&env, NS, "a", json!({}), &[], &[("green_energy_a", 1.0)]).await;
    online_cluster(&env, NS, "b", json!({}), &[], &[("green_energy_b", 1.0)]).await;
    app(&env, "green", json!({})).await;
    assert_eq!(env.bound("green").await, "b");

    // The values turn around at the source; the application follows.
    exporter.set("green_energy_a", 95.0);
    exporter.set("green_energy_b", 5.0);
    prometheus
        .wait_for_value("green_energy_b", 5.0)
        .await
        .unwrap();
    env.app_until("green", "moved to a", |a| {
        a.status
            .scheduled_to
            .as_ref()
            .is_some_and(|c| c.name == "a")
    })
    .await;

    // Prometheus goes away: both clusters are marked, with code 92.
    drop(prometheus);
    for name in ["a", "b"] {
        let cluster = env
            .cluster_until(name, "FAILING_METRICS", |c| {
                c.status.state == ClusterState::FailingMetrics
            })
            .await;
        let reason = cluster.status.metrics_reasons.values().next().unwrap();
        assert_eq!(reason.code, ReasonCode::UnreachableMetricsProvider);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_from_ksql_and_influx_decide_the_placement() {
    use krake_controller::testing::influx::FakeInflux;
    use krake_controller::testing::ksql::FakeKsql;

    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("energy", "zone_a", 30.0);
    let influx = FakeInflux::start().await.unwrap();
    influx.set("zone_b", 70.0);
    let mut cfg = config();
    cfg.reschedule_after = Duration::from_millis(400);
    let env = Env::start(cfg).await;
    let _: MetricsProvider = env
        .create(json!({
            "metadata": {"name": "kafka", "namespace": NS},
            "spec": {"type": "kafka", "kafka": {
                "url": ksql.url(), "table": "energy",
                "comparison_column": "zone", "value_column": "green",
            }},
        }))
        .await;
    let _: MetricsProvider = env
        .create(json!({
            "metadata": {"name": "influx", "namespace": NS},
            "spec": {"type": "influx", "influx": {
                "url": influx.url(), "token": influx.token(),
                "org": influx.org(), "bucket": influx.bucket(),
            }},
        }))
        .await;
    for (name, provider, metric) in [
        ("green-a", "kafka", "zone_a"),
        ("green-b", "influx", "zone_b"),
    ] {
        let _: Metric = env
            .create(json!({
                "metadata": {"name": name, "namespace": NS},
                "spec": {"min": 0, "max": 100, "allowed_values": [],
                         "provider": {"name": provider, "metric": metric}},
            }))
            .await;
    }
    for (cluster, metric) in [("a", "green-a"), ("b", "green-b")] {
        let created: Cluster = env
            .create(json!({
                "metadata": {"name": cluster, "namespace": NS},
                "spec": {"kubeconfig": kubeconfig(cluster), "constraints": {"cloud": {}},
                         "metrics": [{"name": metric, "weight": 1.0, "namespaced": true}]},
            }))
            .await;
        let mut online = created;
        online.status.state = ClusterState::Online;
        env.api::<Cluster>().status(&online).await.unwrap();
    }
    app(&env, "green", json!({})).await;
    assert_eq!(env.bound("green").await, "b");
    assert!(ksql.request_count() >= 1 && influx.request_count() >= 1);
    // Krake's KSQL statement, through the cache (not one query per decision).
    assert_eq!(
        ksql.requests()[0].body,
        r#"{"ksql":"SELECT green FROM energy WHERE zone = 'zone_a';","streamsProperties":{}}"#
    );

    ksql.set("energy", "zone_a", 95.0);
    env.app_until("green", "moved to a", |a| {
        a.status
            .scheduled_to
            .as_ref()
            .is_some_and(|c| c.name == "a")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_in_one_namespace_does_not_hold_up_another() {
    use krake_controller::testing::Behaviour;
    use krake_controller::testing::ksql::FakeKsql;

    let ksql = FakeKsql::start().await.unwrap();
    ksql.set_behaviour(Behaviour::Hang);
    let mut cfg = config();
    cfg.providers.timeout = Duration::from_secs(8);
    let env = Env::start(cfg).await;
    let _: MetricsProvider = env
        .create(json!({
            "metadata": {"name": "kafka", "namespace": "slow"},
            "spec": {"type": "kafka", "kafka": {
                "url": ksql.url(), "table": "t", "comparison_column": "k", "value_column": "v",
            }},
        }))
        .await;
    let _: Metric = env
        .create(json!({
            "metadata": {"name": "m", "namespace": "slow"},
            "spec": {"min": 0, "max": 1, "allowed_values": [], "provider": {"name": "kafka", "metric": "m"}},
        }))
        .await;
    let created: Cluster = env
        .create(json!({
            "metadata": {"name": "s1", "namespace": "slow"},
            "spec": {"kubeconfig": kubeconfig("s1"), "constraints": {"cloud": {}},
                     "metrics": [{"name": "m", "weight": 1.0, "namespaced": true}]},
        }))
        .await;
    let mut online = created;
    online.status.state = ClusterState::Online;
    env.api_in::<Cluster>("slow").status(&online).await.unwrap();
    let _: Application = env
        .create(json!({
            "metadata": {"name": "waits", "namespace": "slow"},
            "spec": {"manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}],
                     "constraints": {"cluster": {}}},
        }))
        .await;
    // The slow namespace's snapshot is being built (its provider hangs).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ksql.request_count() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider is never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    online_cluster(&env, NS, "fast", json!({}), &[], &[]).await;
    app(&env, "quick", json!({})).await;
    let started = tokio::time::Instant::now();
    assert_eq!(env.bound("quick").await, "fast");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited {:?} for another namespace's provider",
        started.elapsed()
    );
    assert!(env.app_in_slow_is_unbound().await);
}
