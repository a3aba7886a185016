//! The scheduler's decisions (`cargo bench -p krake-benches --bench scheduler`).
//!
//! - **Decisions**: 10,000 applications over 1,000 ONLINE clusters of their
//!   namespace, each application with two label constraints and one metric
//!   constraint, each cluster with two metrics from a static provider
//!   (fetched through `MetricsProviders` and normalized by their
//!   `GlobalMetric`s, as the scheduler's snapshot does). Measured: the
//!   decision of [`decide`] (filter, score, ties) per application, in
//!   decisions per second, against a baseline that only evaluates the same
//!   label constraints of every application on every cluster (the least any
//!   scheduler must do). The target is over 10,000 decisions per
//!   second. The time to build the 1,000 candidates (metric queries
//!   included) is printed too.
//! - **End to end**: the real [`Scheduler`] against krake-rs's API
//!   (in-process, embedded store) placing pending applications, from start
//!   to the last binding, in bindings per second, against the same number
//!   of `/binding` requests sent straight through the client with the same
//!   concurrency: what scheduling adds to the API's write cost.
//! - **At rest**: the API (embedded store) and the real [`Scheduler`] in
//!   this process, with 1,000 applications that no cluster can take
//!   (DEGRADED, NO_SUITABLE_RESOURCE, Krake's default backoff), then nothing
//!   changing: the process's CPU over 20 s (from `/proc/self/stat`), as a
//!   share of one core, against an idle API and scheduler (no objects) over
//!   the same time in the same run, and the API's writes in that time (from
//!   its `/metrics`). The goal is under 2% of a core; the old
//!   scheduler rewrote every status about once a second (~900 writes/s,
//!   135% of a core). Then a matching cluster goes ONLINE: the time until
//!   every application is placed (goal under 5 s; two API writes each).
//!
//! In [`Mode::Smoke`] everything runs at a small size and every placement is
//! checked against the constraints.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use krake_api::testing::TestServer;
use krake_client::{Api, Client};
use krake_controller::metrics_provider::{MetricsProviders, ProvidersConfig};
use krake_controller::scheduler::application::{Decision, decide};
use krake_controller::scheduler::placement::{Candidate, CandidateKind, CandidateSet, MetricValue};
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use krake_data::kinds::core::{MetricSpec, MetricsProviderSpec};
use krake_data::kinds::kubernetes::{Application, Cluster, ClusterBinding, ClusterState};
use krake_data::metadata::Labels;
use krake_data::{ResourceRef, Timestamp};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Mode, Throughput, report};

const LOCATIONS: [&str; 5] = ["DE", "FR", "IT", "NL", "PL"];
const TIERS: [&str; 4] = ["gold", "silver", "bronze", "edge"];

#[derive(Debug, Clone, Copy)]
struct Plan {
    mode: Mode,
    apps: usize,
    clusters: usize,
    e2e_apps: usize,
    e2e_clusters: usize,
    rest_apps: usize,
    rest_window: Duration,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bench => Plan {
                mode,
                apps: 10_000,
                clusters: 1_000,
                e2e_apps: 2_000,
                e2e_clusters: 100,
                rest_apps: 1_000,
                rest_window: Duration::from_secs(20),
            },
            Mode::Smoke | Mode::List => Plan {
                mode,
                apps: 200,
                clusters: 50,
                e2e_apps: 30,
                e2e_clusters: 5,
                rest_apps: 20,
                rest_window: Duration::from_millis(500),
            },
        }
    }
}

/// Runs the suite in `mode` and prints the results.
pub fn run(mode: Mode) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run_async(Plan::new(mode)));
}

fn cluster_labels(i: usize) -> Labels {
    let mut labels = Labels::new();
    labels.insert("location".into(), LOCATIONS[i % LOCATIONS.len()].into());
    labels.insert("tier".into(), TIERS[(i / 5) % TIERS.len()].into());
    labels
}

fn app_constraints(i: usize) -> Value {
    let a = LOCATIONS[i % LOCATIONS.len()];
    let b = LOCATIONS[(i + 1) % LOCATIONS.len()];
    json!({
        "labels": [format!("location in ({a}, {b})"), "tier != edge"],
        "metrics": [format!("load < {}", 40 + (i % 50))],
    })
}

fn application(i: usize, namespace: &str) -> Application {
    serde_json::from_value(json!({
        "metadata": {"name": format!("app-{i:05}"), "namespace": namespace},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}],
            "constraints": {"cluster": app_constraints(i)},
        },
    }))
    .expect("a valid application")
}

/// The static provider's values: `load-<i>` and `free-<i>` per cluster.
fn static_provider(clusters: usize) -> MetricsProviderSpec {
    let mut metrics = serde_json::Map::new();
    for i in 0..clusters {
        metrics.insert(format!("load-{i}"), json!(((i * 37) % 100) as f64));
        metrics.insert(format!("free-{i}"), json!(((i * 53) % 100) as f64));
    }
    serde_json::from_value(json!({"type": "static", "static": {"metrics": metrics}}))
        .expect("a valid provider spec")
}

fn metric_spec(metric: &str) -> MetricSpec {
    serde_json::from_value(json!({
        "min": 0, "max": 100, "allowed_values": [],
        "provider": {"name": "static", "metric": metric},
    }))
    .expect("a valid metric spec")
}

/// The candidates as the scheduler's snapshot builds them: metrics queried
/// through the providers and normalized.
async fn candidates(clusters: usize, providers: &MetricsProviders) -> Vec<Candidate> {
    let provider = static_provider(clusters);
    let mut out = Vec::with_capacity(clusters);
    for i in 0..clusters {
        let mut metrics = Vec::new();
        for (name, weight) in [("load", 1.0), ("free", 2.0)] {
            let metric = format!("{name}-{i}");
            let spec = metric_spec(&metric);
            let value = providers
                .query("static", &provider, &metric)
                .await
                .expect("a static value");
            let normalized = spec.normalize(value).expect("in range");
            metrics.push(MetricValue {
                name: name.into(),
                weight,
                value,
                normalized,
            });
        }
        out.push(
            Candidate::new(
                ResourceRef::new(
                    "kubernetes",
                    "Cluster",
                    Some("bench".into()),
                    format!("c-{i:04}"),
                ),
                CandidateKind::Cluster,
                cluster_labels(i),
                Vec::new(),
            )
            .with_metrics(metrics),
        );
    }
    out
}

async fn run_async(plan: Plan) {
    println!(
        "krake-controller scheduler benchmarks ({:?} mode, {} applications x {} clusters)",
        plan.mode, plan.apps, plan.clusters
    );
    let providers = MetricsProviders::new(ProvidersConfig::default());
    let start = Instant::now();
    let clusters = CandidateSet::new(candidates(plan.clusters, &providers).await);
    let no_clouds = CandidateSet::default();
    println!(
        "candidates: {} clusters x 2 metrics built and indexed in {:.2} ms",
        plan.clusters,
        start.elapsed().as_secs_f64() * 1e3
    );
    let apps: Vec<Application> = (0..plan.apps).map(|i| application(i, "bench")).collect();
    let now = Timestamp::now();

    // Every decision must respect the constraints.
    let mut placed = 0;
    for (i, app) in apps.iter().enumerate() {
        if let Some(Decision::Bind(target)) = decide(
            app,
            &clusters,
            &no_clouds,
            0.1,
            Duration::from_secs(60),
            now,
        ) {
            let index: usize = target.name[2..].parse().expect("a cluster index");
            let labels = cluster_labels(index);
            let location = labels["location"].as_str();
            assert!(
                location == LOCATIONS[i % 5] || location == LOCATIONS[(i + 1) % 5],
                "{} placed on {location}",
                app.metadata.name
            );
            assert_ne!(labels["tier"], "edge");
            assert!(
                ((index * 37) % 100) < 40 + (i % 50),
                "metric constraint broken"
            );
            placed += 1;
        }
    }
    assert!(placed > apps.len() / 2, "only {placed} applications placed");

    let decisions = measure_over(plan.mode, &apps, |app| {
        decide(
            app,
            &clusters,
            &no_clouds,
            0.1,
            Duration::from_secs(60),
            now,
        )
        .is_some()
    });
    let baseline = measure_over(plan.mode, &apps, |app| {
        let labels = app
            .spec
            .constraints
            .cluster
            .labels
            .as_deref()
            .unwrap_or_default();
        clusters
            .items()
            .iter()
            .filter(|c| labels.iter().all(|l| l.matches(&c.labels)))
            .count()
            > 0
    });
    report(
        &format!(
            "decide, {} applications x {} clusters (2 label + 1 metric constraints, 2 metrics)",
            plan.apps, plan.clusters
        ),
        decisions,
        "label constraints only",
        baseline,
    );
    println!(
        "decisions: {:.0} per second | target > 10000 decisions/s: {}",
        decisions.per_second(),
        if decisions.per_second() > 10_000.0 {
            "MET"
        } else {
            "MISSED"
        }
    );

    end_to_end(plan).await;
    at_rest(plan).await;
}

/// Runs `decide_one` over every application, for the mode's budget.
fn measure_over(
    mode: Mode,
    apps: &[Application],
    decide_one: impl Fn(&Application) -> bool,
) -> Throughput {
    let budget = mode.budget();
    let start = Instant::now();
    let mut operations = 0u64;
    while start.elapsed() < budget || operations == 0 {
        for app in apps {
            std::hint::black_box(decide_one(app));
        }
        operations += apps.len() as u64;
    }
    Throughput {
        operations,
        elapsed: start.elapsed(),
    }
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

/// Creates the clusters (ONLINE, with metrics from a static provider) and
/// the pending applications of `namespace`.
async fn populate(client: &Client, namespace: &str, plan: Plan) {
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
    for i in 0..plan.e2e_clusters {
        let name = format!("c-{i:04}");
        let cluster: Cluster = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": cluster_labels(i)},
            "spec": {"kubeconfig": kubeconfig(&name), "constraints": {"cloud": {}}},
        }))
        .expect("a valid cluster");
        let mut created = clusters.create(&cluster).await.expect("cluster created");
        created.status.state = ClusterState::Online;
        clusters.status(&created).await.expect("cluster online");
    }
    let apps: Api<Application> = Api::namespaced(client.clone(), namespace);
    stream::iter(0..plan.e2e_apps)
        .for_each_concurrent(16, |i| {
            let apps = apps.clone();
            async move {
                let mut app = application(i, namespace);
                app.spec.constraints.cluster.metrics = None;
                apps.create(&app).await.expect("application created");
            }
        })
        .await;
}

/// Waits until `count` applications are bound, following them through a
/// watch (one stream; polling lists would load the server the scheduler
/// measures against).
async fn wait_bound(client: &Client, count: usize) {
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let apps = reflectors
        .subscribe::<Application>(Some("bench"), None)
        .store;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let bound = apps.filter(|a| a.status.scheduled_to.is_some()).len();
        if bound == count {
            shutdown.cancel();
            return;
        }
        assert!(Instant::now() < deadline, "only {bound} of {count} bound");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn end_to_end(plan: Plan) {
    // The scheduler places every application.
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).expect("a client");
    populate(&client, "bench", plan).await;
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let start = Instant::now();
    let task =
        tokio::spawn(Scheduler::new(&reflectors, SchedulerConfig::default()).run(shutdown.clone()));
    wait_bound(&client, plan.e2e_apps).await;
    let scheduled = Throughput {
        operations: plan.e2e_apps as u64,
        elapsed: start.elapsed(),
    };
    shutdown.cancel();
    let _ = task.await;

    // The same bindings sent straight to another server.
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).expect("a client");
    populate(&client, "bench", plan).await;
    let apps: Api<Application> = Api::namespaced(client.clone(), "bench");
    let start = Instant::now();
    let clusters = Arc::new(plan.e2e_clusters);
    stream::iter(0..plan.e2e_apps)
        .for_each_concurrent(SchedulerConfig::default().workers, |i| {
            let apps = apps.clone();
            let clusters = clusters.clone();
            async move {
                let target = ResourceRef::new(
                    "kubernetes",
                    "Cluster",
                    Some("bench".into()),
                    format!("c-{:04}", i % *clusters),
                );
                apps.binding(&format!("app-{i:05}"), &ClusterBinding::new(target))
                    .await
                    .expect("bound");
            }
        })
        .await;
    let direct = Throughput {
        operations: plan.e2e_apps as u64,
        elapsed: start.elapsed(),
    };
    report(
        &format!(
            "scheduler end to end, {} applications x {} clusters (embedded store)",
            plan.e2e_apps, plan.e2e_clusters
        ),
        scheduled,
        "direct /binding requests, 5 at once",
        direct,
    );
}

/// The API's writes (POST, PUT, PATCH, DELETE) so far, from its request
/// counter.
async fn api_writes(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("the API's metrics")
        .text()
        .await
        .expect("the API's metrics");
    let total: f64 = text
        .lines()
        .filter(|line| line.starts_with("krake_api_http_requests_total{"))
        .filter(|line| {
            ["POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|m| line.contains(&format!("method=\"{m}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    total as u64
}

/// This process's CPU over `window`, in percent of one core.
async fn cpu_over(window: Duration) -> f64 {
    let before = crate::process_stats::sample(None).expect("/proc/self/stat");
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = crate::process_stats::sample(None).expect("/proc/self/stat");
    (after.cpu.saturating_sub(before.cpu)).as_secs_f64() * 100.0 / start.elapsed().as_secs_f64()
}

/// The API and the scheduler at rest: idle, then with applications that no
/// cluster can take (see the module docs).
async fn at_rest(plan: Plan) {
    let server = TestServer::embedded().await;
    let url = server.url();
    let client = Client::new(&url).expect("a client");
    let http = reqwest::Client::new();
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let store = reflectors
        .subscribe::<Application>(Some("pending"), None)
        .store;
    let task =
        tokio::spawn(Scheduler::new(&reflectors, SchedulerConfig::default()).run(shutdown.clone()));
    store.wait_ready().await.expect("the reflector lists");
    tokio::time::sleep(plan.rest_window / 4).await;
    let idle = cpu_over(plan.rest_window).await;

    let apps: Api<Application> = Api::namespaced(client.clone(), "pending");
    stream::iter(0..plan.rest_apps)
        .for_each_concurrent(16, |i| {
            let apps = apps.clone();
            async move {
                let app: Application = serde_json::from_value(json!({
                    "metadata": {"name": format!("app-{i:05}"), "namespace": "pending"},
                    "spec": {
                        "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}],
                        "constraints": {"cluster": {"labels": ["location is DE"]}},
                    },
                }))
                .expect("a valid application");
                apps.create(&app).await.expect("application created");
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let degraded = store
            .filter(|a| a.status.state == krake_data::kinds::kubernetes::ApplicationState::Degraded)
            .len();
        if degraded == plan.rest_apps {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {degraded} of {} applications DEGRADED",
            plan.rest_apps
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes = api_writes(&http, &url).await;
    let pending = cpu_over(plan.rest_window).await;
    let writes = api_writes(&http, &url).await - writes;

    // Then a matching cluster: how long until every application is placed.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), "pending");
    let cluster: Cluster = serde_json::from_value(json!({
        "metadata": {"name": "all", "namespace": "pending", "labels": {"location": "DE", "tier": "gold"}},
        "spec": {"kubeconfig": kubeconfig("all"), "constraints": {"cloud": {}}},
    }))
    .expect("a valid cluster");
    let mut online = clusters.create(&cluster).await.expect("cluster created");
    online.status.state = ClusterState::Online;
    clusters.status(&online).await.expect("cluster online");
    let started = Instant::now();
    loop {
        let placed = store
            .filter(|a| a.status.scheduled_to.is_some() && a.status.reason.is_none())
            .len();
        if placed == plan.rest_apps {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {placed} of {} applications placed",
            plan.rest_apps
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let placed = started.elapsed();
    shutdown.cancel();
    let _ = task.await;
    println!(
        "at rest, {} unschedulable applications: {pending:.2}% of a core, {writes} API writes in {:.0} s | \
         baseline idle API and scheduler: {idle:.2}% of a core | ratio {:.2} | goal < 2% of a core: {}",
        plan.rest_apps,
        plan.rest_window.as_secs_f64(),
        pending / idle.max(0.01),
        if pending < 2.0 { "MET" } else { "MISSED" },
    );
    println!(
        "then a matching cluster: all {} applications placed {:.2} s after it went ONLINE | goal < 5 s: {}",
        plan.rest_apps,
        placed.as_secs_f64(),
        if placed < Duration::from_secs(5) {
            "MET"
        } else {
            "MISSED"
        },
    );
}
