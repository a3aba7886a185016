//! The Kubernetes controllers of the real `krake-server` binary end to end:
//! the server runs with its in-process controllers (scheduler, garbage
//! collector, Kubernetes application and cluster controllers, all on by
//! default) on the embedded store, and manages fake Kubernetes clusters
//! (`krake_testkit::kube`) that it reaches over HTTPS with the kubeconfigs
//! the test registers. The test talks to Krake only through `krake_client`,
//! as a user would, and looks at the clusters through the fakes.
//!
//! Registration of two clusters (ONLINE), scheduling by metrics, deployment
//! of a Deployment and a NodePort Service (RUNNING, `status.services`),
//! healing of a Deployment deleted on the cluster (timed) and of an edited
//! field, removal of a field dropped from the manifest while a label added
//! by someone else stays, migration when the metrics change, deletion; the
//! same life for a custom resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use krake_client::{Api, Client, DeleteParams};
use krake_data::Resource;
use krake_data::kinds::core::{GlobalMetric, GlobalMetricsProvider};
use krake_data::kinds::kubernetes::{Application, ApplicationState, Cluster, ClusterState};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};

const NS: &str = "testing";
/// How long any one step may take before the test fails.
const WITHIN: Duration = Duration::from_secs(20);
/// How long an object deleted on a cluster may stay away: the controllers
/// watch the clusters and heal within a second; the slack is for a loaded
/// two-core machine running several tests at once.
const HEAL_WITHIN: Duration = Duration::from_secs(3);

/// The server's configuration file: the scheduler looks at scheduled
/// applications again after half a second (default 60 s) and reuses
/// metrics for a fifth of a second (default 5 s), so that a migration
/// follows a change of metrics quickly; short timeouts towards clusters.
const CONFIG: &str = "\
controllers:
  scheduler:
    reschedule_after: 0.5
    metrics_providers: {cache_ttl: 0.2, timeout: 5}
  kubernetes_application:
    connect_timeout: 2
    request_timeout: 5
    list_timeout: 3
  kubernetes_cluster:
    connect_timeout: 2
    request_timeout: 5
";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `krake-server` (log in a temporary folder, printed when a
/// step times out) and a client of its API.
struct Krake {
    child: Mutex<Child>,
    log: PathBuf,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Drop for Krake {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Krake {
    /// `krake-server` on a free port with the embedded store in a
    /// temporary folder and every in-process controller, ready.
    async fn start() -> Krake {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("api.yaml");
        std::fs::write(&config, CONFIG).unwrap();
        let log = dir.path().join("krake-server.log");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_krake-server"))
            .args(["--config", config.to_str().unwrap()])
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .env("KRAKE_LOG_LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let krake = Krake {
            child: Mutex::new(child),
            log,
            client: Client::new(&url).unwrap(),
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WITHIN;
        loop {
            if let Ok(response) = http.get(format!("{url}/readyz")).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            if let Some(exit) = krake.child_exit() {
                panic!("krake-server exited ({exit}):\n{}", krake.log());
            }
            assert!(
                Instant::now() < deadline,
                "krake-server not ready:\n{}",
                krake.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        krake
    }

    /// The server's log so far (its last 60 lines).
    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
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

    /// Polls `probe` until its value satisfies `check` (within [`WITHIN`]);
    /// on timeout, fails with the last value seen and the server's log.
    async fn eventually<T: std::fmt::Debug, F, Fut>(
        &self,
        what: &str,
        probe: F,
        check: impl Fn(&T) -> bool,
    ) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WITHIN;
        let mut last = None;
        loop {
            if let Some(value) = probe().await {
                if check(&value) {
                    return value;
                }
                last = Some(value);
            }
            if let Some(exit) = self.child_exit() {
                panic!(
                    "krake-server exited ({exit}) while waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {last:#?}\nkrake-server's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// How the server exited, if it did.
    fn child_exit(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Polls until `probe` is true.
    async fn until<F, Fut>(&self, what: &str, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.eventually(what, || async { Some(probe().await) }, |ok| *ok)
            .await;
    }

    /// Polls the application until `check` holds.
    async fn app_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Application) -> bool,
    ) -> Application {
        let api = self.api::<Application>();
        self.eventually(
            what,
            || {
                let api = api.clone();
                async move { api.get(name).await.ok() }
            },
            check,
        )
        .await
    }

    async fn running(&self, name: &str) -> Application {
        self.app_until(name, "RUNNING", |a| {
            a.status.state == ApplicationState::Running && a.status.running_on.is_some()
        })
        .await
    }

    /// Polls until the application is gone (404, not just any error).
    async fn app_gone(&self, name: &str) {
        let api = self.api::<Application>();
        self.eventually(
            "the application removed",
            || {
                let api = api.clone();
                async move {
                    match api.get(name).await {
                        Ok(app) => Some(format!(
                            "still there: {:?}, finalizers {:?}, deleted {:?}",
                            app.status.state, app.metadata.finalizers, app.metadata.deleted
                        )),
                        Err(e) if e.is_not_found() => Some("gone".to_owned()),
                        Err(e) => Some(format!("error: {e}")),
                    }
                }
            },
            |seen| seen == "gone",
        )
        .await;
    }

    /// A Cluster registered from `kubeconfig`, ONLINE.
    async fn register_online(&self, name: &str, kubeconfig: Value, extra: Value) -> Cluster {
        let mut spec = json!({"kubeconfig": kubeconfig, "constraints": {"cloud": {}}});
        merge(&mut spec, extra);
        let _: Cluster = self
            .create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
            .await;
        let api = self.api::<Cluster>();
        self.eventually(
            &format!("cluster {name} ONLINE"),
            || {
                let api = api.clone();
                async move { api.get(name).await.ok() }
            },
            |c| c.status.state == ClusterState::Online,
        )
        .await
    }

    /// An application with `manifest`; `extra` is merged into its spec.
    async fn create_app(&self, name: &str, manifest: Value, extra: Value) -> Application {
        let mut spec = json!({"manifest": manifest, "constraints": {"cluster": {}}});
        merge(&mut spec, extra);
        self.create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
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

    async fn delete_app(&self, name: &str) {
        self.api::<Application>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// A static global metrics provider with these values, and a global
    /// metric for each.
    async fn static_metrics(&self, values: &[(&str, f64)]) {
        let _: GlobalMetricsProvider = self
            .create(json!({
                "metadata": {"name": "static"},
                "spec": {"type": "static", "static": {"metrics": metrics(values)}},
            }))
            .await;
        for (name, _) in values {
            let _: GlobalMetric = self
                .create(json!({
                    "metadata": {"name": name},
                    "spec": {"min": 0, "max": 100, "allowed_values": [], "provider": {"name": "static", "metric": name}},
                }))
                .await;
        }
    }

    async fn set_static(&self, values: &[(&str, f64)]) {
        let api = self.api::<GlobalMetricsProvider>();
        let mut provider = api.get("static").await.unwrap();
        provider.metadata.resource_version = None;
        provider.spec = serde_json::from_value(
            json!({"type": "static", "static": {"metrics": metrics(values)}}),
        )
        .unwrap();
        api.update(&provider).await.unwrap();
    }

    /// Deletes an object on `fake` and measures how long it takes to be
    /// back (a new object: a new uid); fails beyond [`HEAL_WITHIN`].
    async fn heal_time(
        &self,
        fake: &FakeCluster,
        (api_version, kind, name): (&str, &str, &str),
    ) -> Duration {
        let uid = fake
            .get(api_version, kind, Some("default"), name)
            .expect("the object is on the cluster")["metadata"]["uid"]
            .clone();
        assert!(fake.delete(api_version, kind, Some("default"), name));
        let deleted = Instant::now();
        loop {
            if fake
                .get(api_version, kind, Some("default"), name)
                .is_some_and(|o| o["metadata"]["uid"] != uid)
            {
                let took = deleted.elapsed();
                println!("{kind} {name} deleted on the cluster: back after {took:?}");
                return took;
            }
            assert!(
                deleted.elapsed() < HEAL_WITHIN,
                "the {kind} {name} deleted on the cluster is not back after {HEAL_WITHIN:?}\n\
                 krake-server's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn metrics(values: &[(&str, f64)]) -> serde_json::Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (k, v) in extra {
            target.insert(k, v);
        }
    }
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

fn on(app: &Application) -> String {
    app.status
        .running_on
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn deployment_on(fake: &FakeCluster, name: &str) -> Option<Value> {
    fake.get("apps/v1", "Deployment", Some("default"), name)
}

fn service_on(fake: &FakeCluster, name: &str) -> Option<Value> {
    fake.get("v1", "Service", Some("default"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_deployed_healed_migrated_and_removed() {
    let started = Instant::now();
    let krake = Krake::start().await;
    let a = FakeCluster::start().await.unwrap();
    let b = FakeCluster::start().await.unwrap();

    // Two clusters; the metrics make a the better one.
    krake
        .static_metrics(&[("load-a", 80.0), ("load-b", 20.0)])
        .await;
    krake
        .register_online(
            "a",
            a.kubeconfig(),
            json!({"metrics": [{"name": "load-a", "weight": 1.0}]}),
        )
        .await;
    krake
        .register_online(
            "b",
            b.kubeconfig(),
            json!({"metrics": [{"name": "load-b", "weight": 1.0}]}),
        )
        .await;

    // Scheduled to a, applied, RUNNING with its service's address.
    let env_vars = json!([{"name": "MODE", "value": "fast"}, {"name": "DEBUG", "value": "1"}]);
    krake
        .create_app(
            "web",
            json!([deployment("web", 2, env_vars), node_port_service("web")]),
            json!({}),
        )
        .await;
    let app = krake
        .app_until("web", "RUNNING with its service", |a| {
            a.status.state == ApplicationState::Running && a.status.services.contains_key("web")
        })
        .await;
    assert_eq!(on(&app), "a");
    let deployed = deployment_on(&a, "web").expect("the Deployment is on cluster a");
    assert_eq!(deployed["spec"]["replicas"], 2);
    let env = &deployed["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env.as_array().map(Vec::len), Some(2), "{deployed:#}");
    let service = service_on(&a, "web").expect("the Service is on cluster a");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(app.status.services["web"], format!("127.0.0.1:{node_port}"));
    assert!(deployment_on(&b, "web").is_none());
    assert!(service_on(&b, "web").is_none());

    // Deleted on the cluster: back (a new object) within a second or so.
    let healed = krake.heal_time(&a, ("apps/v1", "Deployment", "web")).await;
    println!("heal time (Deployment): {healed:?}");

    // An observed field edited on the cluster: reverted.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    let edited = Instant::now();
    krake
        .eventually(
            "replicas back to 2",
            || async { deployment_on(&a, "web") },
            |d| d["spec"]["replicas"] == 2,
        )
        .await;
    println!("edited replicas reverted after {:?}", edited.elapsed());

    // A label someone else adds, then a field removed from the manifest:
    // the field disappears from the cluster object, the label stays.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"metadata": {"labels": {"team": "ops"}}}),
    )
    .unwrap();
    krake
        .update_spec("web", |spec| {
            spec["manifest"][0]["spec"]["template"]["spec"]["containers"][0]["env"] =
                json!([{"name": "MODE", "value": "fast"}]);
        })
        .await;
    let kept = krake
        .eventually(
            "DEBUG removed from the container's env",
            || async { deployment_on(&a, "web") },
            |d| {
                let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
                env.as_array()
                    .is_some_and(|e| e.len() == 1 && e[0]["name"] == "MODE")
            },
        )
        .await;
    assert_eq!(kept["metadata"]["labels"]["team"], "ops", "{kept:#}");
    assert_eq!(kept["spec"]["replicas"], 2, "{kept:#}");

    // The metrics change so that b wins: the application migrates, its
    // resources are on b and gone from a.
    krake
        .set_static(&[("load-a", 10.0), ("load-b", 90.0)])
        .await;
    let changed = Instant::now();
    let app = krake
        .app_until("web", "running on b", |a| {
            on(a) == "b"
                && a.status.state == ApplicationState::Running
                && a.status.services.contains_key("web")
        })
        .await;
    println!("migrated to b after {:?}", changed.elapsed());
    let moved = deployment_on(&b, "web").expect("the Deployment is on cluster b");
    let env = &moved["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "MODE", "value": "fast"}]),
        "{moved:#}"
    );
    let service = service_on(&b, "web").expect("the Service is on cluster b");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(app.status.services["web"], format!("127.0.0.1:{node_port}"));
    krake
        .until("the resources gone from a", || async {
            deployment_on(&a, "web").is_none() && service_on(&a, "web").is_none()
        })
        .await;

    // Deleted: the resources are gone from b and the object is removed.
    krake.delete_app("web").await;
    krake.app_gone("web").await;
    assert!(deployment_on(&b, "web").is_none());
    assert!(service_on(&b, "web").is_none());
    assert!(deployment_on(&a, "web").is_none());
    println!("whole scenario: {:?}", started.elapsed());
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

const CRONTAB: &str = "stable.example.com/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_is_deployed_healed_and_removed() {
    let krake = Krake::start().await;
    let fake = FakeCluster::start().await.unwrap();
    fake.create(crontab_crd()).unwrap();
    krake
        .register_online(
            "crd",
            fake.kubeconfig(),
            json!({"custom_resources": ["crontabs.stable.example.com"]}),
        )
        .await;

    krake
        .create_app(
            "backup",
            json!([crontab("nightly", "0 3 * * *")]),
            json!({"constraints": {"cluster": {"custom_resources": ["crontabs.stable.example.com"]}}}),
        )
        .await;
    let app = krake.running("backup").await;
    assert_eq!(on(&app), "crd");
    let object = fake
        .get(CRONTAB, "CronTab", Some("default"), "nightly")
        .expect("the CronTab is on the cluster");
    assert_eq!(object["spec"]["cronSpec"], "0 3 * * *");

    // Edited on the cluster: reverted. Deleted: back.
    fake.merge_patch(
        CRONTAB,
        "CronTab",
        Some("default"),
        "nightly",
        json!({"spec": {"cronSpec": "* * * * *"}}),
    )
    .unwrap();
    krake
        .eventually(
            "cronSpec reverted",
            || async { fake.get(CRONTAB, "CronTab", Some("default"), "nightly") },
            |c| c["spec"]["cronSpec"] == "0 3 * * *",
        )
        .await;
    let healed = krake
        .heal_time(&fake, (CRONTAB, "CronTab", "nightly"))
        .await;
    println!("heal time (CronTab): {healed:?}");

    // Deleted with the application.
    krake.delete_app("backup").await;
    krake.app_gone("backup").await;
    assert!(
        fake.get(CRONTAB, "CronTab", Some("default"), "nightly")
            .is_none()
    );
}
