//! A running `krake-server` with its in-process controllers, for the
//! end-to-end tests of the Kubernetes controllers: started on a free port
//! with the embedded store in a temporary folder and a configuration file
//! of the test's choosing, and a `krake_client` of its API, with polling
//! helpers that fail with the server's log.
#![allow(dead_code)]

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

/// The namespace the helpers create namespaced objects in.
pub const NS: &str = "testing";
/// How long any one step may take before the test fails.
pub const WITHIN: Duration = Duration::from_secs(20);
/// How long an object deleted on a cluster may stay away: the controllers
/// watch the clusters and heal within a second; the slack is for a loaded
/// two-core machine running several tests at once.
pub const HEAL_WITHIN: Duration = Duration::from_secs(3);

/// The server's configuration file: the scheduler looks at scheduled
/// applications again after half a second (default 60 s) and reuses
/// metrics for a fifth of a second (default 5 s), so that a migration
/// follows a change of metrics quickly; short timeouts towards clusters.
pub const CONFIG: &str = "\
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

fn spawn_server(args: &[String], log: File) -> Child {
    Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(args)
        .env("KRAKE_LOG_LEVEL", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `krake-server` (log in a temporary folder, printed when a
/// step times out) and a client of its API.
pub struct Krake {
    child: Mutex<Child>,
    log: PathBuf,
    /// The arguments it was started with (for [`Krake::restart`]).
    args: Vec<String>,
    url: String,
    /// A client of the server's API.
    pub client: Client,
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
    /// temporary folder and every in-process controller, ready, configured
    /// with [`CONFIG`].
    pub async fn start() -> Krake {
        Krake::start_with(CONFIG, &[]).await
    }

    /// As [`Krake::start`], with this configuration file and these extra
    /// flags.
    pub async fn start_with(config_text: &str, args: &[&str]) -> Krake {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("api.yaml");
        std::fs::write(&config, config_text).unwrap();
        let log = dir.path().join("krake-server.log");
        let port = free_port();
        let mut all_args: Vec<String> = vec![
            "--config".into(),
            config.to_str().unwrap().into(),
            "--data-dir".into(),
            dir.path().join("data").to_str().unwrap().into(),
            "--port".into(),
            port.to_string(),
        ];
        all_args.extend(args.iter().map(|arg| arg.to_string()));
        let child = spawn_server(&all_args, File::create(&log).unwrap());
        let url = format!("http://127.0.0.1:{port}");
        let krake = Krake {
            child: Mutex::new(child),
            log,
            args: all_args,
            client: Client::new(&url).unwrap(),
            url,
            _dir: dir,
        };
        krake.wait_ready().await;
        krake
    }

    /// Kills the server (SIGKILL) and starts it again on the same port,
    /// data folder and configuration; returns once it is ready. Its log
    /// goes on in the same file.
    pub async fn restart(&self) {
        {
            let mut child = self.child.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            let log = File::options().append(true).open(&self.log).unwrap();
            *child = spawn_server(&self.args, log);
        }
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let (krake, url) = (self, &self.url);
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
    }

    /// The server's URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's log so far (its last 60 lines).
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn api<K: Resource>(&self) -> Api<K> {
        match K::INFO.scope {
            krake_data::registry::Scope::Namespaced => Api::namespaced(self.client.clone(), NS),
            _ => Api::all(self.client.clone()),
        }
    }

    pub async fn create<K: Resource>(&self, object: Value) -> K {
        let object: K = serde_json::from_value(object).unwrap();
        self.api::<K>().create(&object).await.unwrap()
    }

    /// Polls `probe` until its value satisfies `check` (within [`WITHIN`]);
    /// on timeout, fails with the last value seen and the server's log.
    pub async fn eventually<T: std::fmt::Debug, F, Fut>(
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
    pub fn child_exit(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Polls until `probe` is true.
    pub async fn until<F, Fut>(&self, what: &str, probe: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.eventually(what, || async { Some(probe().await) }, |ok| *ok)
            .await;
    }

    /// Polls the application until `check` holds.
    pub async fn app_until(
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

    pub async fn running(&self, name: &str) -> Application {
        self.app_until(name, "RUNNING", |a| {
            a.status.state == ApplicationState::Running && a.status.running_on.is_some()
        })
        .await
    }

    /// Polls until the application is gone (404, not just any error).
    pub async fn app_gone(&self, name: &str) {
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
    pub async fn register_online(&self, name: &str, kubeconfig: Value, extra: Value) -> Cluster {
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
    pub async fn create_app(&self, name: &str, manifest: Value, extra: Value) -> Application {
        let mut spec = json!({"manifest": manifest, "constraints": {"cluster": {}}});
        merge(&mut spec, extra);
        self.create(json!({"metadata": {"name": name, "namespace": NS}, "spec": spec}))
            .await
    }

    /// Updates the application's spec with `change`.
    pub async fn update_spec(&self, name: &str, change: impl Fn(&mut Value)) {
        let api = self.api::<Application>();
        let mut app = api.get(name).await.unwrap();
        app.metadata.resource_version = None;
        let mut spec = serde_json::to_value(&app.spec).unwrap();
        change(&mut spec);
        app.spec = serde_json::from_value(spec).unwrap();
        api.update(&app).await.unwrap();
    }

    pub async fn delete_app(&self, name: &str) {
        self.api::<Application>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// A static global metrics provider with these values, and a global
    /// metric for each.
    pub async fn static_metrics(&self, values: &[(&str, f64)]) {
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

    pub async fn set_static(&self, values: &[(&str, f64)]) {
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
    pub async fn heal_time(
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

pub fn metrics(values: &[(&str, f64)]) -> serde_json::Map<String, Value> {
    values
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

pub fn merge(target: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (target.as_object_mut(), extra) {
        for (k, v) in extra {
            target.insert(k, v);
        }
    }
}
