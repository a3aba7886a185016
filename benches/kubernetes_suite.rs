//! The Kubernetes controllers at scale
//! (`cargo bench -p krake-benches --bench kubernetes`).
//!
//! 1,000 applications (a Deployment and a NodePort Service each) across 10
//! fake Kubernetes clusters (`krake_testkit::kube::FakeCluster`, real HTTPS,
//! the unmodified `kube` client). krake-rs's API (embedded store), the
//! scheduler and the garbage collector run in the benchmark's process; the Kubernetes application and
//! cluster controllers run in a child process (this binary started again
//! with [`CONTROLLERS_VARIABLE`] set), so their CPU time and memory are
//! theirs alone. Reported:
//!
//! - **Deploy**: from the first create until every application is RUNNING
//!   with its objects on its cluster, in applications per second, against
//!   a baseline of the same objects applied straight to the same fakes with
//!   server-side apply (`ClusterClient::apply`, as many applications at once
//!   as the controller has workers): what the controller adds to the
//!   cluster's own cost. The controllers' CPU time and memory are printed
//!   with it.
//! - **Steady state**: requests per second the fakes answer while nothing
//!   changes, over 75 s so that the controller's 60 s safety resync of
//!   every application falls inside the window (the goal is close to zero beyond the open watches; Krake's
//!   observer GETs every resource of every application every 2 s), with the
//!   open watches, the controllers' CPU use and their memory sampled every
//!   second (first, highest, last: flat means no leak).
//! - **Heal**: a Deployment deleted on its cluster until it is back, p50
//!   and p99 over many deletions.
//! - **Delete**: every application deleted until every object is gone from
//!   the fakes and every application from the API.
//!
//! In [`Mode::Smoke`] (the test suite) it runs with 20 applications on 2
//! fakes, with the controllers in the same process, and checks every
//! outcome.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use krake_api::testing::TestServer;
use krake_client::{Api, Client, DeleteParams};
use krake_controller::gc::{GarbageCollector, GcConfig};
use krake_controller::kubernetes::{
    ApplicationController, ApplicationControllerConfig, ClientTimeouts, ClusterClient,
    ClusterController, ClusterControllerConfig,
};
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use krake_controller::store::Store;
use krake_data::kinds::kubernetes::{Application, ApplicationState, Cluster, ClusterState};
use krake_testkit::kube::FakeCluster;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::process_stats::{self, ProcessSample, mib, quantile};
use crate::{Mode, Throughput, report};

/// Set (to the API's URL) in the child that runs the controllers.
pub const CONTROLLERS_VARIABLE: &str = "KRAKE_BENCH_KUBERNETES_CONTROLLERS";

/// The namespace of the benchmark's Krake objects.
const NS: &str = "bench";
/// Where the objects land on each cluster.
const CLUSTER_NS: &str = "default";

#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    clusters: usize,
    apps: usize,
    heals: usize,
    steady: Duration,
    child: bool,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bench => Plan {
                mode,
                clusters: 10,
                apps: 1_000,
                heals: 200,
                steady: Duration::from_secs(75),
                child: true,
            },
            Mode::Smoke | Mode::List => Plan {
                mode,
                clusters: 2,
                apps: 20,
                heals: 4,
                steady: Duration::from_secs(2),
                child: false,
            },
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_secs(match self.mode {
            Mode::Bench => 900,
            Mode::Smoke | Mode::List => 120,
        })
    }
}

/// Runs the suite.
pub fn run(mode: Mode) {
    log_from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(suite(Plan::new(mode)));
}

/// The child: both Kubernetes controllers against the API at `url`, until
/// its standard input closes (the benchmark holds it open).
pub fn run_controllers(url: &str) {
    log_from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let client = Client::new(url).expect("the API's URL");
        let shutdown = CancellationToken::new();
        let tasks = start_controllers(client, shutdown.clone());
        let _ = tokio::task::spawn_blocking(|| {
            let mut byte = [0u8; 1];
            let _ = std::io::stdin().read(&mut byte);
        })
        .await;
        shutdown.cancel();
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// Logs to standard error when `RUST_LOG` asks for it.
fn log_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn start_controllers(
    client: Client,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let reflectors = Reflectors::new(client, shutdown.clone());
    vec![
        tokio::spawn(
            ApplicationController::new(&reflectors, ApplicationControllerConfig::default())
                .run(shutdown.clone()),
        ),
        tokio::spawn(
            ClusterController::new(&reflectors, ClusterControllerConfig::default())
                .run(shutdown.clone()),
        ),
    ]
}

/// The controllers: a child process (killed when dropped) or tasks here.
enum Controllers {
    Child(Child),
    InProcess(CancellationToken),
}

impl Controllers {
    fn start(plan: Plan, client: &Client, url: &str) -> Controllers {
        if plan.child {
            let exe = std::env::current_exe().expect("the benchmark's own path");
            let child = Command::new(exe)
                .env(CONTROLLERS_VARIABLE, url)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the controllers' process");
            Controllers::Child(child)
        } else {
            let shutdown = CancellationToken::new();
            start_controllers(client.clone(), shutdown.clone());
            Controllers::InProcess(shutdown)
        }
    }

    /// Their CPU time and memory (this whole process when in-process).
    fn sample(&self) -> Option<ProcessSample> {
        match self {
            Controllers::Child(child) => process_stats::sample(Some(child.id())),
            Controllers::InProcess(_) => process_stats::sample(None),
        }
    }

    fn whose(&self) -> &'static str {
        match self {
            Controllers::Child(_) => "the controllers' process",
            Controllers::InProcess(_) => "the whole benchmark process (controllers in-process)",
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        match self {
            Controllers::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Controllers::InProcess(shutdown) => shutdown.cancel(),
        }
    }
}

fn name(i: usize) -> String {
    format!("app-{i:04}")
}

/// The objects of application `i`: a Deployment and a NodePort Service.
fn manifest(i: usize) -> Vec<Value> {
    let name = name(i);
    vec![
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{
                        "name": "web", "image": "nginx:1.27",
                        "ports": [{"containerPort": 80}],
                    }]},
                },
            },
        }),
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": name},
                     "ports": [{"port": 80, "targetPort": 80}]},
        }),
    ]
}

fn application(i: usize, clusters: usize) -> Application {
    serde_json::from_value(json!({
        "metadata": {"name": name(i), "namespace": NS},
        "spec": {
            "manifest": manifest(i),
            "constraints": {"cluster": {"labels": [format!("slot = {}", i % clusters)]}},
        },
    }))
    .expect("a valid application")
}

/// Polls `check` on the reflector's store until it holds.
async fn until<K>(
    store: &Store<K>,
    what: &str,
    deadline: Duration,
    check: impl Fn(&Store<K>) -> bool,
) where
    K: krake_data::Resource,
{
    let end = Instant::now() + deadline;
    while !check(store) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sum_stats(fakes: &[FakeCluster]) -> (u64, u64, i64) {
    let mut total = 0;
    let mut watches = 0;
    let mut open = 0;
    for fake in fakes {
        total += fake.stats().total();
        watches += fake.stats().watch();
        open += fake.stats().open_watches();
    }
    (total, watches, open)
}

async fn suite(plan: Plan) {
    let fakes: Vec<FakeCluster> =
        futures::future::join_all((0..plan.clusters).map(|_| FakeCluster::start()))
            .await
            .into_iter()
            .map(|fake| fake.expect("a fake cluster"))
            .collect();
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).expect("a client");
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    tokio::spawn(Scheduler::new(&reflectors, SchedulerConfig::default()).run(shutdown.clone()));
    tokio::spawn(GarbageCollector::new(&reflectors, GcConfig::default()).run(shutdown.clone()));
    let controllers = Controllers::start(plan, &client, &server.url());
    let apps_store = reflectors.subscribe::<Application>(Some(NS), None).store;
    let clusters_store = reflectors.subscribe::<Cluster>(Some(NS), None).store;

    // The clusters, registered from their kubeconfigs.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    for (i, fake) in fakes.iter().enumerate() {
        let cluster: Cluster = serde_json::from_value(json!({
            "metadata": {"name": format!("c-{i}"), "namespace": NS, "labels": {"slot": i.to_string()}},
            "spec": {"kubeconfig": fake.kubeconfig(), "constraints": {"cloud": {}}},
        }))
        .expect("a valid cluster");
        clusters.create(&cluster).await.expect("cluster created");
    }
    until(
        &clusters_store,
        "every cluster ONLINE",
        plan.deadline(),
        |store| {
            store
                .filter(|c| c.status.state == ClusterState::Online)
                .len()
                == plan.clusters
        },
    )
    .await;

    // Deploy.
    let before = controllers.sample();
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    let start = Instant::now();
    stream::iter(0..plan.apps)
        .for_each_concurrent(16, |i| {
            let apps = apps.clone();
            async move {
                apps.create(&application(i, plan.clusters))
                    .await
                    .expect("application created");
            }
        })
        .await;
    until(
        &apps_store,
        "every application RUNNING",
        plan.deadline(),
        |store| {
            store
                .filter(|a| {
                    a.status.state == ApplicationState::Running && !a.status.services.is_empty()
                })
                .len()
                == plan.apps
        },
    )
    .await;
    let deployed = Throughput {
        operations: plan.apps as u64,
        elapsed: start.elapsed(),
    };
    let after = controllers.sample();
    for i in 0..plan.apps {
        let fake = &fakes[i % plan.clusters];
        assert!(
            fake.get("apps/v1", "Deployment", Some(CLUSTER_NS), &name(i))
                .is_some(),
            "{} is on its cluster",
            name(i)
        );
        assert!(
            fake.get("v1", "Service", Some(CLUSTER_NS), &name(i))
                .is_some()
        );
    }

    // The baseline: the same objects applied straight to the same fakes.
    let baseline = direct_apply(&fakes, plan).await;
    report(
        &format!(
            "kubernetes deploy, {} applications (Deployment + NodePort Service) on {} fake clusters, until all RUNNING",
            plan.apps, plan.clusters
        ),
        deployed,
        "server-side apply of the same objects straight to the fakes",
        baseline,
    );
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "  deploy: {:.1} s; CPU of {}: {:.2} s ({:.0}% of one core); RSS {:.1} MiB",
            deployed.elapsed.as_secs_f64(),
            controllers.whose(),
            (after.cpu - before.cpu).as_secs_f64(),
            100.0 * (after.cpu - before.cpu).as_secs_f64() / deployed.elapsed.as_secs_f64(),
            mib(after.rss)
        );
    }

    // Steady state: nothing changes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for fake in &fakes {
        fake.stats().reset();
    }
    let first = controllers.sample();
    let mut rss = Vec::new();
    let steady_start = Instant::now();
    while steady_start.elapsed() < plan.steady {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(sample) = controllers.sample() {
            rss.push(sample.rss);
        }
    }
    let elapsed = steady_start.elapsed().as_secs_f64();
    let last = controllers.sample();
    let (requests, watches_opened, open_watches) = sum_stats(&fakes);
    println!(
        "kubernetes steady state, {:.0} s: {:.2} requests/s to all {} fakes together ({} requests, {} of them watches (re)opened), {} watches open; Krake's observer would send {:.0} GETs/s (2 objects x {} applications every 2 s)",
        elapsed,
        requests as f64 / elapsed,
        plan.clusters,
        requests,
        watches_opened,
        open_watches,
        (2 * plan.apps) as f64 / 2.0,
        plan.apps,
    );
    if let (Some(first), Some(last)) = (first, last) {
        let highest = rss.iter().copied().max().unwrap_or(last.rss);
        println!(
            "  CPU of {}: {:.1}% of one core; RSS first {:.1} MiB, highest {:.1} MiB, last {:.1} MiB",
            controllers.whose(),
            100.0 * (last.cpu - first.cpu).as_secs_f64() / elapsed,
            mib(first.rss),
            mib(highest),
            mib(last.rss)
        );
    }
    if plan.mode == Mode::Smoke {
        assert!(open_watches > 0, "the controllers watch the clusters");
    }

    // Heal: a Deployment deleted on its cluster comes back.
    let mut latencies = Vec::with_capacity(plan.heals);
    for k in 0..plan.heals {
        let i = (k * 7) % plan.apps;
        let fake = &fakes[i % plan.clusters];
        let start = Instant::now();
        assert!(fake.delete("apps/v1", "Deployment", Some(CLUSTER_NS), &name(i)));
        let end = start + Duration::from_secs(30);
        while fake
            .get("apps/v1", "Deployment", Some(CLUSTER_NS), &name(i))
            .is_none()
        {
            assert!(Instant::now() < end, "{} was not healed", name(i));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(start.elapsed());
    }
    println!(
        "kubernetes heal, {} Deployments deleted on their cluster: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        plan.heals,
        quantile(&mut latencies, 0.5).as_secs_f64() * 1e3,
        quantile(&mut latencies, 0.99).as_secs_f64() * 1e3,
        quantile(&mut latencies, 1.0).as_secs_f64() * 1e3,
    );

    // Delete everything.
    let start = Instant::now();
    stream::iter(0..plan.apps)
        .for_each_concurrent(16, |i| {
            let apps = apps.clone();
            async move {
                apps.delete(&name(i), &DeleteParams::default())
                    .await
                    .expect("application deleted");
            }
        })
        .await;
    until(
        &apps_store,
        "every application gone",
        plan.deadline(),
        |store| store.is_empty(),
    )
    .await;
    let removed = start.elapsed();
    let left: usize = fakes
        .iter()
        .map(|fake| {
            fake.list("apps/v1", "Deployment", Some(CLUSTER_NS)).len()
                + fake
                    .list("v1", "Service", Some(CLUSTER_NS))
                    .iter()
                    .filter(|s| {
                        s.pointer("/metadata/name").and_then(Value::as_str) != Some("kubernetes")
                    })
                    .count()
        })
        .sum();
    println!(
        "kubernetes delete, {} applications: {:.1} s until every object is gone from the fakes and the API ({:.0} applications/s)",
        plan.apps,
        removed.as_secs_f64(),
        plan.apps as f64 / removed.as_secs_f64()
    );
    assert_eq!(left, 0, "objects left on the fakes after deletion");
    drop(controllers);
    shutdown.cancel();
}

/// Applies every application's objects straight to its fake with
/// server-side apply, `workers` applications at once, each application's
/// objects one after the other (as the controller does).
async fn direct_apply(fakes: &[FakeCluster], plan: Plan) -> Throughput {
    let mut clients = Vec::new();
    for fake in fakes {
        fake.create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "baseline"}}),
        )
        .expect("the baseline namespace");
        let Value::Object(kubeconfig) = fake.kubeconfig() else {
            panic!("a kubeconfig is an object");
        };
        let client = ClusterClient::from_kubeconfig(&kubeconfig, ClientTimeouts::default())
            .await
            .expect("a cluster client");
        clients.push(client);
    }
    let clients = Arc::new(clients);
    let mut kinds = BTreeMap::new();
    for (api_version, kind) in [("apps/v1", "Deployment"), ("v1", "Service")] {
        let resolved = clients[0]
            .resolve(api_version, kind, &[])
            .await
            .expect("a served kind");
        kinds.insert(kind.to_owned(), resolved);
    }
    let kinds = Arc::new(kinds);
    let start = Instant::now();
    stream::iter(0..plan.apps)
        .for_each_concurrent(ApplicationControllerConfig::default().workers, |i| {
            let clients = clients.clone();
            let kinds = kinds.clone();
            async move {
                let client = &clients[i % plan.clusters];
                for object in manifest(i) {
                    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
                    let Value::Object(object) = object else {
                        continue;
                    };
                    let object: Map<String, Value> = object;
                    client
                        .apply(&kinds[&kind], "baseline", &object)
                        .await
                        .expect("applied");
                }
            }
        })
        .await;
    Throughput {
        operations: plan.apps as u64,
        elapsed: start.elapsed(),
    }
}
