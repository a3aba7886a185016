//! Resilient watches against real servers: a restart mid-stream loses and
//! duplicates nothing, a forced 410 relists, and a server without resume
//! (Krake's own) is relisted on every reconnect.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use krake_api::ApiConfig;
use krake_api::store::Store;
use krake_api::testing::proxy::Proxy;
use krake_client::{Api, Backoff, Client, DeleteParams, ListParams, WatchConfig, WatchEvent};
use krake_data::kinds::kubernetes::Application;
use krake_store::embedded::EmbeddedStore;
use krake_store::etcd::{EtcdOptions, EtcdStore};
use krake_testkit::etcd::EtcdProcess;
use support::{RestartableServer, app};

type Events = Pin<Box<dyn Stream<Item = krake_client::Result<WatchEvent<Application>>> + Send>>;

fn config() -> WatchConfig {
    WatchConfig::default()
        .heartbeat(Some(Duration::from_secs(1)))
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            ..Backoff::default()
        })
}

/// A compact description of an event: `ADDED a1`, `RESTARTED [a, b]`.
fn describe(event: &WatchEvent<Application>) -> String {
    match event {
        WatchEvent::Restarted(all) => {
            let names: Vec<&str> = all.iter().map(|a| a.metadata.name.as_str()).collect();
            format!("RESTARTED {names:?}")
        }
        WatchEvent::Added(a) | WatchEvent::Modified(a) | WatchEvent::Deleted(a) => {
            format!("{} {}", event.type_name(), a.metadata.name)
        }
    }
}

async fn next(events: &mut Events) -> WatchEvent<Application> {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("no error")
}

async fn expect(events: &mut Events, expected: &[&str]) {
    let mut seen = Vec::new();
    for wanted in expected {
        let event = next(events).await;
        assert_eq!(&describe(&event), wanted, "after {seen:?}");
        seen.push(describe(&event));
    }
}

async fn expect_silence(events: &mut Events) {
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(700), events.next()).await {
        panic!("unexpected event {:?}", event.map(|e| describe(&e)));
    }
}

/// A cache fed by the events: name to resource_version.
#[derive(Default)]
struct Cache(BTreeMap<String, Option<String>>);

impl Cache {
    fn apply(&mut self, event: &WatchEvent<Application>) {
        match event {
            WatchEvent::Restarted(all) => {
                self.0 = all
                    .iter()
                    .map(|a| (a.metadata.name.clone(), a.metadata.resource_version.clone()))
                    .collect();
            }
            WatchEvent::Added(a) | WatchEvent::Modified(a) => {
                self.0
                    .insert(a.metadata.name.clone(), a.metadata.resource_version.clone());
            }
            WatchEvent::Deleted(a) => {
                self.0.remove(&a.metadata.name);
            }
        }
    }
}

async fn server_view(apps: &Api<Application>) -> BTreeMap<String, Option<String>> {
    apps.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| (a.metadata.name, a.metadata.resource_version))
        .collect()
}

fn apps_of(url: &str) -> Api<Application> {
    Api::namespaced(Client::new(url).unwrap(), "testing")
}

async fn survives_restart(store: Arc<dyn Store>) {
    let mut server = RestartableServer::start(store.clone(), ApiConfig::default()).await;
    let apps = apps_of(&server.url());
    apps.create(&app("before", &[])).await.unwrap();
    let mut events: Events = Box::pin(apps.watch(config()));
    expect(&mut events, &["RESTARTED [\"before\"]"]).await;

    apps.create(&app("a1", &[])).await.unwrap();
    let mut a1 = apps.get("a1").await.unwrap();
    a1.metadata.labels.insert("v".into(), "2".into());
    apps.update(&a1).await.unwrap();
    expect(&mut events, &["ADDED a1", "MODIFIED a1"]).await;

    // The server goes away mid-stream; meanwhile another API instance over
    // the same store makes changes the watcher must not miss.
    server.stop().await;
    {
        let side = RestartableServer::start(store.clone(), ApiConfig::default()).await;
        let side_apps = apps_of(&side.url());
        side_apps.create(&app("during", &[])).await.unwrap();
        side_apps
            .delete("a1", &DeleteParams::force())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart().await;
    apps.create(&app("after", &[])).await.unwrap();
    expect(&mut events, &["ADDED during", "DELETED a1", "ADDED after"]).await;
    expect_silence(&mut events).await;

    // A second restart while idle: still nothing twice.
    server.restart().await;
    apps.delete("before", &DeleteParams::force()).await.unwrap();
    expect(&mut events, &["DELETED before"]).await;
    expect_silence(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_loses_and_duplicates_nothing_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("krake.redb")).unwrap();
    survives_restart(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_loses_and_duplicates_nothing_on_etcd() {
    let etcd = EtcdProcess::start().await.unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap();
    survives_restart(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_and_silent_connections_are_replaced_and_resumed() {
    let server = krake_api::testing::TestServer::embedded().await;
    let upstream = server.url().trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let direct = apps_of(&server.url());
    // The watcher's client goes through the proxy (a fresh client, so its
    // connections are the proxy's only ones).
    let apps = apps_of(&proxy.url());
    let mut events: Events = Box::pin(apps.watch(config()));
    expect(&mut events, &["RESTARTED []"]).await;
    direct.create(&app("a1", &[])).await.unwrap();
    expect(&mut events, &["ADDED a1"]).await;

    // A silent peer: nothing arrives, not even heartbeats (every 1 s); after
    // three missed ones the watcher replaces the connection and resumes.
    proxy.freeze();
    direct.create(&app("a2", &[])).await.unwrap();
    expect(&mut events, &["ADDED a2"]).await;

    // A cut connection: resumed after the last version, nothing twice.
    proxy.cut();
    direct.create(&app("a3", &[])).await.unwrap();
    direct.delete("a1", &DeleteParams::force()).await.unwrap();
    expect(&mut events, &["ADDED a3", "DELETED a1"]).await;
    expect_silence(&mut events).await;
}

/// Stops the server, lets history move on past what can be resumed
/// (`compact` makes the old versions unavailable), restarts, and checks
/// that the watcher relisted to exactly the server's view.
async fn relists_on_410<F, Fut>(store: Arc<dyn Store>, config_api: ApiConfig, compact: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut server = RestartableServer::start(store.clone(), config_api.clone()).await;
    let apps = apps_of(&server.url());
    apps.create(&app("keep", &[])).await.unwrap();
    apps.create(&app("gone", &[])).await.unwrap();
    let mut events: Events = Box::pin(apps.watch(config()));
    let mut cache = Cache::default();
    let first = next(&mut events).await;
    assert_eq!(describe(&first), "RESTARTED [\"gone\", \"keep\"]");
    cache.apply(&first);

    server.stop().await;
    {
        let side = RestartableServer::start(store.clone(), config_api.clone()).await;
        let side_apps = apps_of(&side.url());
        for i in 0..12 {
            side_apps
                .create(&app(&format!("n{i:02}"), &[]))
                .await
                .unwrap();
        }
        side_apps
            .delete("gone", &DeleteParams::force())
            .await
            .unwrap();
        let mut keep = side_apps.get("keep").await.unwrap();
        keep.metadata.labels.insert("changed".into(), "yes".into());
        side_apps.update(&keep).await.unwrap();
    }
    compact().await;
    server.restart().await;

    let restarted = next(&mut events).await;
    let WatchEvent::Restarted(all) = &restarted else {
        panic!("expected a relist, got {}", describe(&restarted));
    };
    assert_eq!(all.len(), 13);
    assert!(all.iter().all(|a| a.metadata.name != "gone"));
    cache.apply(&restarted);
    assert_eq!(cache.0, server_view(&apps).await);

    apps.create(&app("after", &[])).await.unwrap();
    let added = next(&mut events).await;
    assert_eq!(describe(&added), "ADDED after");
    cache.apply(&added);
    assert_eq!(cache.0, server_view(&apps).await);
    expect_silence(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_410_relists_on_embedded() {
    let (store, _backing, config) = krake_api::testing::short_history_store();
    relists_on_410(store, config, || async {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_410_relists_on_etcd() {
    let etcd = EtcdProcess::start().await.unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .unwrap();
    let config = ApiConfig {
        watch_replay_buffer: 2,
        ..ApiConfig::default()
    };
    let etcd_ref = &etcd;
    relists_on_410(Arc::new(store), config, || async move {
        let revision = etcd_ref.revision().await.unwrap();
        etcd_ref.compact(revision).await.unwrap();
    })
    .await;
}

/// A stand-in for Krake's own server: lists and watches without any
/// `resource_version`, and can cut every open watch.
mod krake_like {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::body::Body;
    use axum::extract::{Query, State};
    use axum::http::HeaderMap;
    use axum::response::Response;
    use axum::routing::get;
    use serde_json::{Value, json};
    use tokio::sync::{broadcast, watch};

    /// Each request's sorted query keys and `Authorization` header.
    pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

    #[derive(Clone)]
    pub struct Fake {
        pub items: Arc<Mutex<Vec<Value>>>,
        pub events: broadcast::Sender<String>,
        pub cut: Arc<watch::Sender<u64>>,
        pub requests: RequestLog,
    }

    pub fn object(name: &str) -> Value {
        json!({
            "api": "kubernetes", "kind": "Application",
            "metadata": {"name": name, "namespace": "testing", "uid": name,
                         "created": "2026-11-23T00:01:54.676795+00:00",
                         "modified": "2026-11-23T00:01:54.676795+00:00"},
            "spec": {"manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}],
                     "constraints": {"cluster": {}}},
            "status": {"state": "PENDING"},
        })
    }

    impl Fake {
        pub fn set(&self, names: &[&str]) {
            *self.items.lock().unwrap() = names.iter().map(|n| object(n)).collect();
        }

        pub fn emit(&self, event_type: &str, name: &str) {
            let line = json!({"type": event_type, "object": object(name)}).to_string() + "\n";
            let _ = self.events.send(line);
        }

        pub fn cut_watches(&self) {
            self.cut.send_modify(|generation| *generation += 1);
        }
    }

    async fn collection(
        State(fake): State<Fake>,
        Query(query): Query<HashMap<String, String>>,
        headers: HeaderMap,
    ) -> Response {
        let mut keys: Vec<&String> = query.keys().collect();
        keys.sort();
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        fake.requests
            .lock()
            .unwrap()
            .push((format!("{keys:?}"), authorization));
        if query.contains_key("resource_version") {
            panic!("a Krake server is never asked to resume");
        }
        if !query.contains_key("watch") {
            let items = fake.items.lock().unwrap().clone();
            let body = json!({"api": "kubernetes", "kind": "ApplicationList", "metadata": {}, "items": items});
            return Response::new(Body::from(body.to_string()));
        }
        let events = fake.events.subscribe();
        let mut cut = fake.cut.subscribe();
        cut.mark_unchanged();
        let stream = futures::stream::unfold((events, cut), |(mut events, mut cut)| async move {
            tokio::select! {
                line = events.recv() => match line {
                    Ok(line) => Some((Ok::<_, std::io::Error>(line), (events, cut))),
                    Err(_) => None,
                },
                _ = cut.changed() => None,
            }
        });
        Response::new(Body::from_stream(stream))
    }

    pub async fn start() -> (Fake, String) {
        let (events, _) = broadcast::channel(64);
        let (cut, _) = watch::channel(0);
        let fake = Fake {
            items: Arc::default(),
            events,
            cut: Arc::new(cut),
            requests: Arc::default(),
        };
        let app = axum::Router::new()
            .route(
                "/kubernetes/namespaces/testing/applications",
                get(collection),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (fake, url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resume_support_every_reconnect_relists() {
    let (fake, url) = krake_like::start().await;
    fake.set(&["a"]);
    let client = Client::builder(&url)
        .token("raw-keystone-token")
        .build()
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client, "testing");
    let mut events: Events = Box::pin(apps.watch(config()));
    expect(&mut events, &["RESTARTED [\"a\"]"]).await;

    fake.set(&["a", "b"]);
    fake.emit("ADDED", "b");
    expect(&mut events, &["ADDED b"]).await;

    // Cut the stream and change things while nobody watches: the watcher
    // cannot resume, so it must relist and see `a` gone and `c` new.
    fake.set(&["b", "c"]);
    fake.cut_watches();
    expect(&mut events, &["RESTARTED [\"b\", \"c\"]"]).await;
    fake.emit("MODIFIED", "c");
    expect(&mut events, &["MODIFIED c"]).await;

    let requests = fake.requests.lock().unwrap().clone();
    let watches = requests
        .iter()
        .filter(|(keys, _)| keys.contains("watch"))
        .count();
    let lists = requests.len() - watches;
    assert_eq!((watches, lists), (2, 2), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|(_, auth)| auth.as_deref() == Some("raw-keystone-token")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selected_watches_see_only_matching_objects() {
    let server = krake_testkit::server::etcd_server().await;
    let apps = apps_of(&server.url());
    apps.create(&app("web1", &[("tier", "web")])).await.unwrap();
    apps.create(&app("db1", &[("tier", "db")])).await.unwrap();
    let mut events: Events = Box::pin(apps.watch(config().labels("tier=web")));
    expect(&mut events, &["RESTARTED [\"web1\"]"]).await;
    apps.create(&app("db2", &[("tier", "db")])).await.unwrap();
    apps.create(&app("web2", &[("tier", "web")])).await.unwrap();
    expect(&mut events, &["ADDED web2"]).await;
    expect_silence(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_yielded_and_the_watch_keeps_trying() {
    // A label selector the server refuses: 400, yielded as an error, retried.
    let server = krake_api::testing::TestServer::embedded().await;
    let apps = apps_of(&server.url());
    let mut events: Events = Box::pin(apps.watch(config().labels("zone in (")));
    for _ in 0..2 {
        let item = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        let err = item.unwrap_err();
        assert_eq!(err.status(), Some(400), "{err:?}");
    }
}
