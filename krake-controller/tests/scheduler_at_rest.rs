//! A namespace of applications that no cluster can take costs (almost) no
//! writes at rest, and a matching cluster places them all at once: the
//! scheduler against krake-rs's real API (in-process, embedded store),
//! writes counted from the API's own `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use krake_api::ApiConfig;
use krake_api::store::embedded::EmbeddedStore;
use krake_api::testing::{Backing, TestServer};
use krake_client::{Api, Client, ListParams};
use krake_controller::scheduler::{Scheduler, SchedulerConfig};
use krake_controller::shared::Reflectors;
use krake_controller::store::Store;
use krake_data::ReasonCode;
use krake_data::kinds::kubernetes::{Application, ApplicationState, Cluster, ClusterState};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NS: &str = "pending";
const APPS: usize = 1_000;

/// How long placing them all may take once the matching cluster is ONLINE:
/// 5 s (the bound) in an optimized build. A debug build spends
/// several milliseconds of CPU in the API on each of the two writes a
/// placement takes (`/binding`, then `/status`), so on a busy 2-core
/// machine the API alone needs more than 5 s for the 2,000 writes; there
/// the bound only catches a scheduler that misses the wake-up and waits
/// for its periodic attempts (which would take over 30 s after 20 s of
/// backoff).
const PLACED_WITHIN: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(30)
} else {
    Duration::from_secs(5)
};

/// The writes (POST, PUT, PATCH, DELETE) the API answered so far, from its
/// request counter `krake_api_http_requests_total`.
async fn writes(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("krake_api_http_requests_total{"))
        .filter(|line| {
            ["POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|m| line.contains(&format!("method=\"{m}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Polls until `check` holds for every application; the time it took.
/// Reads the scheduler's own reflector store (the same process): listing
/// 1,000 applications through the API every few hundred milliseconds
/// would compete with what is measured.
/// CPU seconds used by this process so far (user + system), on Linux.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

async fn until_all(
    apps: &Store<Application>,
    what: &str,
    within: Duration,
    check: impl Fn(&Application) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let done = apps.filter(&check).len();
        if done == APPS {
            return started.elapsed();
        }
        if started.elapsed() >= within {
            let others: Vec<String> = apps
                .filter(|a| !check(a))
                .iter()
                .take(5)
                .map(|a| {
                    format!(
                        "{} (version {:?}): {:?} {:?}",
                        a.metadata.name,
                        a.metadata.resource_version,
                        a.status.state,
                        a.status.reason
                    )
                })
                .collect();
            panic!(
                "{done} of {APPS} applications {what} after {within:?}; the reflector holds {} \
                 applications; not {what}: {others:?}",
                apps.filter(|_| true).len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The same through the API: every application.
async fn all_through_the_api(apps: &Api<Application>, check: impl Fn(&Application) -> bool) {
    let list = apps.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), APPS);
    assert!(list.items.iter().all(check));
}

/// krake-rs's API over the embedded store, as `TestServer::embedded`, but
/// with the store's file on a RAM disk (`/dev/shm`) where there is one:
/// every write is synced to disk, and a shared CI disk gives a few hundred
/// syncs a second at best (under 100 when other jobs write), which alone
/// would take the 2,000 writes of the placements past any bound. This
/// measures the scheduler, not the disk.
async fn server_in_memory() -> TestServer {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return TestServer::embedded().await;
    }
    let dir = tempfile::tempdir_in(shm).unwrap();
    let store = EmbeddedStore::open(dir.path().join("krake.redb")).unwrap();
    TestServer::start(
        Arc::new(store),
        ApiConfig::default(),
        Backing::Embedded(dir),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_applications_cost_no_writes_at_rest_and_a_new_cluster_places_them() {
    let server = server_in_memory().await;
    let url = server.url();
    let client = Client::new(&url).unwrap();
    let http = reqwest::Client::new();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let store = reflectors.subscribe::<Application>(None, None).store;
    let config = SchedulerConfig {
        reschedule_after: Duration::from_secs(60),
        ..SchedulerConfig::default()
    };
    tokio::spawn(Scheduler::new(&reflectors, config).run(shutdown.clone()));

    // Krake's defaults: backoff 1, backoff_delay 1, backoff_limit -1 (the
    // old scheduler rewrote each status every second).
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    let cpu_created = cpu_seconds();
    futures::stream::iter(0..APPS)
        .map(|i| {
            let apps = apps.clone();
            async move {
                let app: Application = serde_json::from_value(json!({
                    "metadata": {"name": format!("app-{i}"), "namespace": NS},
                    "spec": {
                        "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
                        "constraints": {"cluster": {"labels": ["location is DE"]}},
                    },
                }))
                .unwrap();
                apps.create(&app).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<()>()
        .await;
    let is_degraded = |a: &Application| {
        a.status.state == ApplicationState::Degraded
            && a.status.reason.as_ref().map(|r| r.code) == Some(ReasonCode::NoSuitableResource)
    };
    // The set-up, not what is measured: generous on a busy machine.
    let degraded = until_all(&store, "DEGRADED", Duration::from_secs(120), is_degraded).await;
    all_through_the_api(&apps, is_degraded).await;

    // 20 s of quiet: the periodic attempts back off and write nothing.
    let cpu_quiet = cpu_seconds();
    let before = writes(&http, &url).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let quiet = writes(&http, &url).await - before;
    eprintln!(
        "all DEGRADED after {degraded:?} ({:.1} CPU s with the creation); {quiet} writes in 20 s of quiet",
        cpu_quiet - cpu_created
    );
    assert!(quiet < 100, "{quiet} writes in 20 s of quiet");

    // A matching cluster (created, then ONLINE) places them all.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster: Cluster = serde_json::from_value(json!({
        "metadata": {"name": "de", "namespace": NS, "labels": {"location": "DE"}},
        "spec": {"kubeconfig": {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "de", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "contexts": [{"name": "de", "context": {"cluster": "de", "user": "de"}}],
            "current-context": "de",
            "users": [{"name": "de", "user": {"token": "t"}}],
        }, "constraints": {"cloud": {}}},
    }))
    .unwrap();
    let cpu = cpu_seconds();
    let mut online = clusters.create(&cluster).await.unwrap();
    let bound_before = store.filter(|a| a.status.scheduled_to.is_some()).len();
    assert_eq!(bound_before, 0);
    online.status.state = ClusterState::Online;
    clusters.status(&online).await.unwrap();
    let is_placed = |a: &Application| {
        a.status.scheduled_to.as_ref().map(|c| c.name.as_str()) == Some("de")
            && a.status.state != ApplicationState::Degraded
            && a.status.reason.is_none()
    };
    let placed = until_all(&store, "placed", PLACED_WITHIN, is_placed).await;
    all_through_the_api(&apps, is_placed).await;
    eprintln!(
        "all {APPS} placed {placed:?} after the cluster went ONLINE ({:.1} CPU s)",
        cpu_seconds() - cpu
    );
}

/// The wake-up itself, apart from the periodic attempts: applications whose
/// next periodic attempt is an hour away are placed at once by a new
/// matching cluster, by a label added to an ONLINE cluster, and by their
/// own spec update; a cluster that is not ONLINE wakes no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_wake_waiting_applications_long_before_their_backoff() {
    let server = TestServer::embedded().await;
    let client = Client::new(&server.url()).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let reflectors = Reflectors::new(client.clone(), shutdown.clone());
    let store = reflectors.subscribe::<Application>(None, None).store;
    let config = SchedulerConfig {
        reschedule_after: Duration::from_secs(3600),
        ..SchedulerConfig::default()
    };
    tokio::spawn(Scheduler::new(&reflectors, config).run(shutdown.clone()));
    let apps: Api<Application> = Api::namespaced(client.clone(), NS);
    for (name, label) in [("a", "DE"), ("b", "DE"), ("c", "FR"), ("d", "IT")] {
        let app: Application = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}],
                "constraints": {"cluster": {"labels": [format!("location is {label}")]}},
                "backoff_delay": 3600,
            },
        }))
        .unwrap();
        apps.create(&app).await.unwrap();
    }
    let wait = |check: Box<dyn Fn(&Application) -> bool>, what: &'static str| {
        let store = store.clone();
        async move {
            let started = Instant::now();
            while store.filter(|a| check(a)).len() != 4 {
                assert!(started.elapsed() < Duration::from_secs(10), "not {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait(
        Box::new(|a| a.status.state == ApplicationState::Degraded),
        "all DEGRADED",
    )
    .await;
    let placed = |name: &'static str| {
        let store = store.clone();
        async move {
            let started = Instant::now();
            loop {
                let app = store.get(Some(NS), name).unwrap();
                if app.status.scheduled_to.is_some() && app.status.reason.is_none() {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "{name} not placed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // A new cluster, not ONLINE yet: nothing to place. Then ONLINE.
    let clusters: Api<Cluster> = Api::namespaced(client.clone(), NS);
    let cluster = |name: &str, location: &str| -> Cluster {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": NS, "labels": {"location": location}},
            "spec": {"kubeconfig": {
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": name, "cluster": {"server": "https://127.0.0.1:6443"}}],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                "current-context": name,
                "users": [{"name": name, "user": {"token": "t"}}],
            }, "constraints": {"cloud": {}}},
        }))
        .unwrap()
    };
    let mut de = clusters.create(&cluster("de", "DE")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        store
            .get(Some(NS), "a")
            .unwrap()
            .status
            .scheduled_to
            .is_none()
    );
    de.status.state = ClusterState::Online;
    let de = clusters.status(&de).await.unwrap();
    placed("a").await;
    placed("b").await;

    // A label added to an ONLINE cluster.
    let mut relabelled = de.clone();
    relabelled.metadata.resource_version = None;
    relabelled
        .metadata
        .labels
        .insert("location".into(), "FR".into());
    clusters.update(&relabelled).await.unwrap();
    placed("c").await;

    // The application's own spec.
    let mut d = apps.get("d").await.unwrap();
    d.metadata.resource_version = None;
    d.spec.constraints.cluster.labels = None;
    apps.update(&d).await.unwrap();
    placed("d").await;
}
