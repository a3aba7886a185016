//! Reflectors against a real API server, over the embedded store and over
//! etcd: the store follows the server, a forced 410 relists to exactly the
//! server's view, and shared reflectors open one watch per (kind, namespace,
//! selector).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use krake_api::ApiConfig;
use krake_api::testing::TestServer;
use krake_api::testing::proxy::Proxy;
use krake_client::{Api, Backoff, Client, DeleteParams, ListParams, WatchConfig};
use krake_controller::reflector::reflector;
use krake_controller::shared::{Change, Reflectors, SharedConfig, Subscription};
use krake_controller::store::{Store, Writer};
use krake_data::kinds::kubernetes::{Application, ApplicationSpec};
use krake_data::{LabelConstraint, Metadata};
use tokio_util::sync::CancellationToken;

/// The failure guard of every wait (never a timing assertion).
const GUARD: Duration = Duration::from_secs(30);

fn app(name: &str, labels: &[(&str, &str)]) -> Application {
    let manifest = serde_json::from_value(serde_json::json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    ]))
    .unwrap();
    let mut metadata = Metadata::named(name);
    for (key, value) in labels {
        metadata.labels.insert((*key).into(), (*value).into());
    }
    Application::new(metadata, ApplicationSpec::from_manifest(manifest))
}

fn watch_config() -> WatchConfig {
    WatchConfig::default()
        .heartbeat(Some(Duration::from_secs(1)))
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            ..Backoff::default()
        })
}

fn apps_of(url: &str) -> Api<Application> {
    Api::namespaced(Client::new(url).unwrap(), "testing")
}

type View = BTreeMap<String, Option<String>>;

/// Name to resource_version.
fn store_view(store: &Store<Application>) -> View {
    store
        .list()
        .iter()
        .map(|a| (a.metadata.name.clone(), a.metadata.resource_version.clone()))
        .collect()
}

async fn server_view(apps: &Api<Application>, params: &ListParams) -> View {
    apps.list(params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| (a.metadata.name, a.metadata.resource_version))
        .collect()
}

/// Waits until `store` equals the server's list (with `params`).
async fn converge(store: &Store<Application>, apps: &Api<Application>, params: &ListParams) {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let expected = server_view(apps, params).await;
        let seen = store_view(store);
        if seen == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store never matched the server:\n store  {seen:?}\n server {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready(store: &Store<Application>) {
    tokio::time::timeout(GUARD, store.wait_ready())
        .await
        .expect("ready within the guard")
        .expect("the writer is alive");
}

async fn next_change(subscription: &mut Subscription<Application>) -> String {
    let change = tokio::time::timeout(GUARD, subscription.changes.recv())
        .await
        .expect("a change within the guard")
        .expect("no lag, not closed");
    match change {
        Change::Applied(app) => format!("APPLIED {}", app.metadata.name),
        Change::Deleted(app) => format!("DELETED {}", app.metadata.name),
        Change::Restarted => "RESTARTED".to_owned(),
    }
}

async fn changes(subscription: &mut Subscription<Application>, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..count {
        seen.push(next_change(subscription).await);
    }
    seen
}

fn open_watches(server: &TestServer) -> i64 {
    server.state().metrics().open_watches()
}

// ---------------------------------------------------------------------------
// The store follows creates, updates and deletes.

async fn store_follows_the_server(server: TestServer) {
    let apps = apps_of(&server.url());
    apps.create(&app("before", &[("tier", "web")]))
        .await
        .unwrap();
    apps.create(&app("doomed", &[("tier", "db")]))
        .await
        .unwrap();

    let writer = Writer::new().with_index("tier", |app: &Application| {
        app.metadata
            .labels
            .get("tier")
            .cloned()
            .into_iter()
            .collect()
    });
    let store = writer.reader();
    let web_writer = Writer::new();
    let web_store = web_writer.reader();
    let web = ListParams::default().labels("tier=web");
    let all = tokio::spawn(reflector(writer, apps.watch(watch_config())).for_each(|_| async {}));
    let selected = tokio::spawn(
        reflector(web_writer, apps.watch(watch_config().labels("tier=web"))).for_each(|_| async {}),
    );
    ready(&store).await;
    ready(&web_store).await;
    assert_eq!(store.len(), 2);
    assert_eq!(web_store.len(), 1);

    for i in 0..5 {
        let tier = if i % 2 == 0 { "web" } else { "db" };
        apps.create(&app(&format!("app{i}"), &[("tier", tier)]))
            .await
            .unwrap();
    }
    let mut changed = apps.get("app1").await.unwrap();
    changed.metadata.labels.insert("tier".into(), "web".into());
    apps.update(&changed).await.unwrap();
    let mut changed = apps.get("before").await.unwrap();
    changed.metadata.labels.insert("zone".into(), "x".into());
    apps.update(&changed).await.unwrap();
    apps.delete("doomed", &DeleteParams::force()).await.unwrap();
    apps.delete("app4", &DeleteParams::default()).await.unwrap();

    converge(&store, &apps, &ListParams::default()).await;
    // The label-selected reflector sees the web objects (an object that
    // stops matching is dropped only at the next relist; none does here).
    converge(&web_store, &apps, &web).await;
    assert!(store.get(Some("testing"), "doomed").is_none());
    let mut web_names: Vec<String> = store
        .index("tier", "web")
        .iter()
        .map(|a| a.metadata.name.clone())
        .collect();
    web_names.sort();
    let expected: Vec<String> = server_view(&apps, &web).await.into_keys().collect();
    assert_eq!(web_names, expected);
    let selector = [LabelConstraint::parse("tier = web").unwrap()];
    let by_labels: Vec<String> = store
        .by_labels(&selector)
        .iter()
        .map(|a| a.metadata.name.clone())
        .collect();
    assert_eq!(by_labels, expected);
    assert!(
        store
            .get(Some("testing"), "before")
            .unwrap()
            .metadata
            .labels
            .contains_key("zone")
    );
    all.abort();
    selected.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_follows_creates_updates_and_deletes_on_embedded() {
    store_follows_the_server(TestServer::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_follows_creates_updates_and_deletes_on_etcd() {
    store_follows_the_server(krake_testkit::server::etcd_server().await).await;
}

// ---------------------------------------------------------------------------
// A forced 410 relists, and the store ends equal to the server.

async fn relists_on_410(mut server: TestServer, compact_etcd: bool) {
    let direct = apps_of(&server.url());
    direct.create(&app("keep", &[])).await.unwrap();
    direct.create(&app("gone", &[])).await.unwrap();
    let upstream = server.url().trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;

    let shutdown = CancellationToken::new();
    let config = SharedConfig {
        watch: watch_config(),
        ..SharedConfig::default()
    };
    let reflectors =
        Reflectors::with_config(Client::new(&proxy.url()).unwrap(), shutdown.clone(), config);
    let mut subscription = reflectors.subscribe::<Application>(Some("testing"), None);
    ready(&subscription.store).await;
    assert_eq!(changes(&mut subscription, 1).await, ["RESTARTED"]);
    converge(&subscription.store, &direct, &ListParams::default()).await;

    // The watch goes down; history moves on past what can be resumed.
    proxy.down();
    eventually("the server sees the watch closed", || {
        open_watches(&server) == 0
    })
    .await;
    for i in 0..12 {
        direct.create(&app(&format!("n{i:02}"), &[])).await.unwrap();
    }
    direct.delete("gone", &DeleteParams::force()).await.unwrap();
    let mut keep = direct.get("keep").await.unwrap();
    keep.metadata.labels.insert("changed".into(), "yes".into());
    direct.update(&keep).await.unwrap();
    if compact_etcd {
        let etcd = krake_testkit::server::etcd_of(&mut server).expect("an etcd server");
        let revision = etcd.revision().await.unwrap();
        etcd.compact(revision).await.unwrap();
    }
    proxy.up();

    // A resume would replay the changes one by one; a relist reports the
    // vanished object and one restart.
    assert_eq!(
        changes(&mut subscription, 2).await,
        ["DELETED gone", "RESTARTED"]
    );
    let store = &subscription.store.clone();
    assert_eq!(store.len(), 13);
    assert!(store.get(Some("testing"), "gone").is_none());
    let keep = store.get(Some("testing"), "keep").unwrap();
    assert_eq!(
        keep.metadata.labels.get("changed").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        store_view(store),
        server_view(&direct, &ListParams::default()).await
    );

    // And it goes on watching from the relist.
    direct.create(&app("after", &[])).await.unwrap();
    assert_eq!(changes(&mut subscription, 1).await, ["APPLIED after"]);
    assert_eq!(
        store_view(store),
        server_view(&direct, &ListParams::default()).await
    );
    shutdown.cancel();
    tokio::time::timeout(GUARD, reflectors.stopped())
        .await
        .expect("stopped within the guard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_410_relists_to_the_servers_view_on_embedded() {
    let (store, backing, config) = krake_api::testing::short_history_store();
    let server = TestServer::start(store, config, backing).await;
    relists_on_410(server, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_410_relists_to_the_servers_view_on_etcd() {
    let config = ApiConfig {
        watch_replay_buffer: 2,
        ..ApiConfig::default()
    };
    relists_on_410(krake_testkit::server::etcd_server_with(config).await, true).await;
}

// ---------------------------------------------------------------------------
// Shared reflectors: one watch per (kind, namespace, selector).

async fn subscribers_share_watches(server: TestServer) {
    let direct = apps_of(&server.url());
    let shutdown = CancellationToken::new();
    let config = SharedConfig {
        watch: watch_config(),
        ..SharedConfig::default()
    };
    let reflectors = Reflectors::with_config(
        Client::new(&server.url()).unwrap(),
        shutdown.clone(),
        config,
    );

    let mut first = reflectors.subscribe::<Application>(Some("testing"), None);
    let mut second = reflectors
        .clone()
        .subscribe::<Application>(Some("testing"), None);
    ready(&first.store).await;
    ready(&second.store).await;
    assert_eq!(reflectors.count(), 1);
    eventually("one open watch", || open_watches(&server) == 1).await;

    let mut web = reflectors.subscribe::<Application>(Some("testing"), Some("tier=web"));
    let same_web = reflectors.subscribe::<Application>(Some("testing"), Some(" tier=web "));
    let everywhere = reflectors.subscribe::<Application>(None, None);
    ready(&web.store).await;
    ready(&same_web.store).await;
    ready(&everywhere.store).await;
    assert_eq!(reflectors.count(), 3);
    eventually("three open watches", || open_watches(&server) == 3).await;
    // Subscribers from before the first list see it.
    assert_eq!(changes(&mut first, 1).await, ["RESTARTED"]);
    assert_eq!(changes(&mut second, 1).await, ["RESTARTED"]);
    assert_eq!(changes(&mut web, 1).await, ["RESTARTED"]);

    direct.create(&app("w1", &[("tier", "web")])).await.unwrap();
    direct.create(&app("d1", &[("tier", "db")])).await.unwrap();
    assert_eq!(changes(&mut first, 2).await, ["APPLIED w1", "APPLIED d1"]);
    assert_eq!(changes(&mut second, 2).await, ["APPLIED w1", "APPLIED d1"]);
    assert_eq!(changes(&mut web, 1).await, ["APPLIED w1"]);
    // A change reaches a subscriber after it is in the store.
    assert_eq!(first.store.len(), 2);
    assert_eq!(store_view(&first.store), store_view(&second.store));
    assert_eq!(same_web.store.len(), 1);
    converge(&everywhere.store, &direct, &ListParams::default()).await;

    // A later subscriber's index is built at once over the shared store.
    let indexed =
        reflectors.subscribe_with_index(Some("testing"), None, "tier", |app: &Application| {
            app.metadata
                .labels
                .get("tier")
                .cloned()
                .into_iter()
                .collect()
        });
    assert_eq!(reflectors.count(), 3);
    let web_names: Vec<String> = first
        .store
        .index("tier", "web")
        .iter()
        .map(|a| a.metadata.name.clone())
        .collect();
    assert_eq!(web_names, ["w1"]);
    assert_eq!(indexed.store.index("tier", "db").len(), 1);

    direct.delete("w1", &DeleteParams::force()).await.unwrap();
    assert_eq!(changes(&mut first, 1).await, ["DELETED w1"]);
    assert!(first.store.index("tier", "web").is_empty());
    assert_eq!(open_watches(&server), 3);

    // Shutdown closes every watch.
    shutdown.cancel();
    tokio::time::timeout(GUARD, reflectors.stopped())
        .await
        .expect("stopped within the guard");
    eventually("no open watch", || open_watches(&server) == 0).await;
    // A store that never got its list tells so instead of waiting forever.
    let late = reflectors.subscribe::<Application>(Some("other"), None);
    let waited = tokio::time::timeout(GUARD, late.store.wait_ready())
        .await
        .expect("an answer within the guard");
    assert!(waited.is_err(), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_share_one_watch_per_kind_namespace_and_selector_on_embedded() {
    subscribers_share_watches(TestServer::embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_share_one_watch_per_kind_namespace_and_selector_on_etcd() {
    subscribers_share_watches(krake_testkit::server::etcd_server().await).await;
}

// ---------------------------------------------------------------------------
// A watch the server refuses leaves its own store unready, and only it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_watch_leaves_only_its_store_unready() {
    let server = TestServer::embedded().await;
    let direct = apps_of(&server.url());
    direct.create(&app("w1", &[("tier", "web")])).await.unwrap();
    let shutdown = CancellationToken::new();
    let config = SharedConfig {
        watch: watch_config(),
        ..SharedConfig::default()
    };
    let reflectors = Reflectors::with_config(
        Client::new(&server.url()).unwrap(),
        shutdown.clone(),
        config,
    );
    // The server answers 400 to this selector, again and again.
    let refused = reflectors.subscribe::<Application>(Some("testing"), Some("zone in ("));
    let fine = reflectors.subscribe::<Application>(Some("testing"), Some("tier=web"));
    ready(&fine.store).await;
    assert_eq!(fine.store.len(), 1);
    assert!(!refused.store.is_ready());
    assert!(refused.store.is_empty());
    shutdown.cancel();
    tokio::time::timeout(GUARD, reflectors.stopped())
        .await
        .expect("stopped within the guard");
    let waited = tokio::time::timeout(GUARD, refused.store.wait_ready())
        .await
        .expect("an answer within the guard");
    assert!(waited.is_err(), "{waited:?}");
}
