//! A complete small scheduler built on krake-client alone.
//!
//! It watches Applications and Clusters in every namespace, keeps both in
//! memory, and binds each PENDING application that is not bound yet to an
//! ONLINE cluster of its namespace whose labels and custom resources satisfy
//! the application's cluster constraints (`ClusterConstraints::matches` from
//! krake-data). Among matching clusters it prefers the one satisfying the
//! most label constraints' keys, then the first by name. Clusters' metrics
//! are not fetched here, so applications with metric constraints wait.
//!
//! Run it against a server: `cargo run -p krake-examples --example
//! custom_scheduler -- http://localhost:8080`.

use std::collections::BTreeMap;
use std::future::Future;

use futures::StreamExt;
use krake_client::{Api, Client, WatchConfig, WatchEvent};
use krake_data::kinds::kubernetes::{
    Application, ApplicationState, Cluster, ClusterBinding, ClusterState,
};
use krake_data::{Resource, ResourceRef};

/// `namespace/name` of an object.
fn key<K: Resource>(object: &K) -> String {
    let metadata = object.metadata();
    format!(
        "{}/{}",
        metadata.namespace.as_deref().unwrap_or_default(),
        metadata.name
    )
}

/// A cache of one kind, fed by watch events.
struct Cache<K>(BTreeMap<String, K>);

impl<K: Resource> Cache<K> {
    fn apply(&mut self, event: WatchEvent<K>) {
        match event {
            WatchEvent::Restarted(all) => self.0 = all.into_iter().map(|o| (key(&o), o)).collect(),
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                self.0.insert(key(&o), o);
            }
            WatchEvent::Deleted(o) => {
                self.0.remove(&key(&o));
            }
        }
    }
}

/// Whether `app` waits for a cluster.
fn needs_cluster(app: &Application) -> bool {
    app.status.state == ApplicationState::Pending
        && app.status.scheduled_to.is_none()
        && !app.metadata.is_deleted()
}

/// The cluster `app` should run on, if any matches.
fn choose<'a>(
    app: &Application,
    clusters: impl Iterator<Item = &'a Cluster>,
) -> Option<&'a Cluster> {
    let constraints = &app.spec.constraints.cluster;
    let mut candidates: Vec<&Cluster> = clusters
        .filter(|c| c.metadata.namespace == app.metadata.namespace)
        .filter(|c| c.status.state == ClusterState::Online && !c.metadata.is_deleted())
        .filter(|c| constraints.matches(&c.metadata.labels, |_| None, &c.spec.custom_resources))
        .collect();
    // More labels in common with the constraints first, then by name.
    let wanted: Vec<String> = constraints
        .labels
        .iter()
        .flatten()
        .map(|c| c.as_str().to_owned())
        .collect();
    let score = |c: &Cluster| {
        wanted
            .iter()
            .filter(|w| c.metadata.labels.keys().any(|k| w.contains(k.as_str())))
            .count()
    };
    candidates.sort_by(|a, b| {
        score(b)
            .cmp(&score(a))
            .then(a.metadata.name.cmp(&b.metadata.name))
    });
    candidates.into_iter().next()
}

/// Binds every waiting application that has a matching cluster; answers how many.
async fn schedule_pending(
    client: &Client,
    apps: &Cache<Application>,
    clusters: &Cache<Cluster>,
) -> usize {
    let mut bound = 0;
    for app in apps.0.values().filter(|a| needs_cluster(a)) {
        let Some(cluster) = choose(app, clusters.0.values()) else {
            continue;
        };
        let namespace = app.metadata.namespace.clone().unwrap_or_default();
        let target = ResourceRef::new(
            Cluster::INFO.api,
            Cluster::INFO.kind,
            cluster.metadata.namespace.clone(),
            cluster.metadata.name.clone(),
        );
        let handle: Api<Application> = Api::namespaced(client.clone(), &namespace);
        match handle
            .binding(&app.metadata.name, &ClusterBinding::new(target))
            .await
        {
            Ok(_) => {
                println!("bound {} to {}", key(app), key(cluster));
                bound += 1;
            }
            Err(err) => eprintln!("cannot bind {}: {err}", key(app)),
        }
    }
    bound
}

/// Runs the scheduler until `shutdown` completes.
pub async fn run(client: Client, shutdown: impl Future<Output = ()>) {
    let mut app_events =
        std::pin::pin!(Api::<Application>::all(client.clone()).watch(WatchConfig::default()));
    let mut cluster_events =
        std::pin::pin!(Api::<Cluster>::all(client.clone()).watch(WatchConfig::default()));
    let mut apps = Cache(BTreeMap::new());
    let mut clusters = Cache(BTreeMap::new());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(event) = app_events.next() => match event {
                Ok(event) => apps.apply(event),
                Err(err) => { eprintln!("applications: {err}"); continue; }
            },
            Some(event) = cluster_events.next() => match event {
                Ok(event) => clusters.apply(event),
                Err(err) => { eprintln!("clusters: {err}"); continue; }
            },
        }
        // A binding changes the application, whose event then finds it bound.
        schedule_pending(&client, &apps, &clusters).await;
    }
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:8080".to_owned());
    let client = match Client::new(&url) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("custom_scheduler: {err}");
            std::process::exit(2);
        }
    };
    println!("scheduling applications of {url}; Ctrl-C stops");
    run(client, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
}
