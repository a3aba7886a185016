//! The garbage collector against the real API router (the fake API over an
//! embedded store, and once over etcd): cascades, other controllers'
//! finalizers, cycles, restarts, transient failures and leader gating.
//! Real time; every wait polls with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use krake_client::{Api, Client, DeleteParams};
use krake_controller::gc::{Cycles, GarbageCollector, GcConfig};
use krake_controller::metrics::Metrics;
use krake_controller::shared::Reflectors;
use krake_controller::testing::{FakeApi, Write};
use krake_data::Resource;
use krake_data::kinds::core::{Lease, LeaseSpec, Role};
use krake_data::kinds::infrastructure::Cloud;
use krake_data::kinds::kubernetes::{Application, ApplicationSpec, Cluster, ClusterSpec};
use krake_data::metadata::{Metadata, ResourceRef};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NS: &str = "testing";
/// How long any awaited outcome may take before the test fails.
const GUARD: Duration = Duration::from_secs(20);
const OTHER: &str = "kubernetes_resources_deletion";

// --- Objects ---

fn reference<K: Resource>(namespace: Option<&str>, name: &str) -> ResourceRef {
    ResourceRef::new(
        K::INFO.api,
        K::INFO.kind,
        namespace.map(str::to_owned),
        name,
    )
}

fn metadata(name: &str, owners: Vec<ResourceRef>, finalizers: &[&str]) -> Metadata {
    let mut metadata = Metadata::namespaced(NS, name);
    metadata.owners = owners;
    metadata.finalizers = finalizers.iter().map(|f| (*f).to_owned()).collect();
    metadata
}

fn cloud(name: &str) -> Cloud {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "openstack", "openstack": {
            "url": "http://127.0.0.1:5000/v3",
            "auth": {"type": "password", "password": {
                "user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
            "infrastructure_provider": {"name": "im"},
        }},
    }))
    .unwrap()
}

fn cluster(name: &str, owners: Vec<ResourceRef>) -> Cluster {
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    });
    let serde_json::Value::Object(kubeconfig) = kubeconfig else {
        unreachable!()
    };
    Cluster::new(
        metadata(name, owners, &[]),
        ClusterSpec::from_kubeconfig(kubeconfig),
    )
}

fn application(name: &str, owners: Vec<ResourceRef>, finalizers: &[&str]) -> Application {
    let manifest = serde_json::from_value(json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    ]))
    .unwrap();
    Application::new(
        metadata(name, owners, finalizers),
        ApplicationSpec::from_manifest(manifest),
    )
}

fn role(name: &str, owners: Vec<ResourceRef>, finalizers: &[&str]) -> Role {
    let mut metadata = metadata(name, owners, finalizers);
    metadata.namespace = None;
    Role::new(metadata, vec![])
}

fn role_ref(name: &str) -> ResourceRef {
    reference::<Role>(None, name)
}

/// The handles of one API.
struct Apis {
    clouds: Api<Cloud>,
    clusters: Api<Cluster>,
    apps: Api<Application>,
    roles: Api<Role>,
    leases: Api<Lease>,
}

impl Apis {
    fn new(client: &Client) -> Self {
        Apis {
            clouds: Api::namespaced(client.clone(), NS),
            clusters: Api::namespaced(client.clone(), NS),
            apps: Api::namespaced(client.clone(), NS),
            roles: Api::all(client.clone()),
            leases: Api::namespaced(client.clone(), NS),
        }
    }

    /// A cloud `cloud`, a cluster `cluster` owned by it and an application
    /// `app` owned by the cluster (with `app_finalizers`) and by a cluster
    /// `ghost` that does not exist (which must block nothing).
    async fn cascade(&self, app_finalizers: &[&str]) {
        self.clouds.create(&cloud("cloud")).await.unwrap();
        self.clusters
            .create(&cluster(
                "cluster",
                vec![reference::<Cloud>(Some(NS), "cloud")],
            ))
            .await
            .unwrap();
        self.apps
            .create(&application(
                "app",
                vec![
                    reference::<Cluster>(Some(NS), "cluster"),
                    reference::<Cluster>(Some(NS), "ghost"),
                ],
                app_finalizers,
            ))
            .await
            .unwrap();
    }
}

// --- Waiting ---

/// Polls `api.get(name)` until it answers 404.
async fn wait_gone<K: Resource>(api: &Api<K>, name: &str) {
    let deadline = Instant::now() + GUARD;
    loop {
        match api.get(name).await {
            Err(err) if err.is_not_found() => return,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "{} {name} still exists",
            K::INFO.kind
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `api.get(name)` until `check` holds for it.
async fn wait_for<K: Resource>(api: &Api<K>, name: &str, check: impl Fn(&K) -> bool) -> K {
    let deadline = Instant::now() + GUARD;
    loop {
        if let Ok(object) = api.get(name).await {
            if check(&object) {
                return object;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} {name} never got there",
            K::INFO.kind
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the collector works (every store listed, every watch open):
/// a role deleted now is collected.
async fn wait_collecting(apis: &Apis) {
    apis.roles
        .create(&role("warm-up", vec![], &[]))
        .await
        .unwrap();
    apis.roles
        .delete("warm-up", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&apis.roles, "warm-up").await;
}

/// The finalizers of an object (which must exist).
async fn finalizers<K: Resource>(api: &Api<K>, name: &str) -> Vec<String> {
    api.get(name).await.unwrap().metadata().finalizers.clone()
}

/// Removes `finalizer` from the object, as its controller would.
async fn pop_finalizer<K: Resource>(api: &Api<K>, name: &str, finalizer: &str) {
    let mut object = api.get(name).await.unwrap();
    object.metadata_mut().finalizers.retain(|f| f != finalizer);
    api.update(&object).await.unwrap();
}

/// The index in `writes` of the write on `K`'s `name` that counts: the
/// first successful `DELETE` (the mark), the last successful `PUT` (the
/// removal).
fn write_at<K: Resource>(writes: &[Write], method: &str, name: &str) -> usize {
    let path = K::INFO.object_path(Some(NS), name);
    let matches = |w: &Write| w.method.as_str() == method && w.path == path && w.status == 200;
    let found = if method == "DELETE" {
        writes.iter().position(matches)
    } else {
        writes.iter().rposition(matches)
    };
    found.unwrap_or_else(|| panic!("no {method} {path} in {writes:#?}"))
}

/// The write log, in order of arrival, once it shows a successful `PUT` of
/// each of `paths` (the log is written just after the API answers, so it
/// may lag a read that already finds the object gone).
async fn writes_once_put(api: &FakeApi, paths: &[String]) -> Vec<Write> {
    let deadline = Instant::now() + GUARD;
    loop {
        let mut writes = api.writes();
        let put = |path: &String| {
            writes
                .iter()
                .any(|w| w.method == "PUT" && &w.path == path && w.status == 200)
        };
        if paths.iter().all(put) {
            writes.sort_by_key(|w| w.at);
            return writes;
        }
        assert!(
            Instant::now() < deadline,
            "no PUT of {paths:?} in {writes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`writes_once_put`] for the cloud of [`Apis::cascade`].
async fn cascade_writes(api: &FakeApi) -> Vec<Write> {
    writes_once_put(api, &[Cloud::INFO.object_path(Some(NS), "cloud")]).await
}

// --- The collector ---

/// A garbage collector on reflectors of its own.
struct Gc {
    shutdown: CancellationToken,
    reflectors: Reflectors,
    task: JoinHandle<()>,
    cycles: Cycles,
}

impl Gc {
    fn start(client: &Client, metrics: Metrics, leader: Option<watch::Receiver<bool>>) -> Self {
        let shutdown = CancellationToken::new();
        let reflectors = Reflectors::new(client.clone(), shutdown.clone());
        let mut gc = GarbageCollector::new(&reflectors, GcConfig::default()).metrics(metrics);
        if let Some(leader) = leader {
            gc = gc.leader(leader);
        }
        let cycles = gc.cycles();
        let task = tokio::spawn(gc.run(shutdown.clone()));
        Gc {
            shutdown,
            reflectors,
            task,
            cycles,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("the collector stops")
            .unwrap();
        tokio::time::timeout(GUARD, self.reflectors.stopped())
            .await
            .expect("the reflectors stop");
    }
}

/// The value of a metric line starting with `prefix`, 0 if absent.
fn metric(metrics: &Metrics, prefix: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Asserts the cascade of [`Apis::cascade`] went in order: the collector
/// deleted the cluster before the application, and the application was
/// removed before the cluster lost its finalizer, the cluster before the
/// cloud.
fn assert_cascade_order(writes: &[Write]) {
    let cluster_marked = write_at::<Cluster>(writes, "DELETE", "cluster");
    let app_marked = write_at::<Application>(writes, "DELETE", "app");
    let app_removed = write_at::<Application>(writes, "PUT", "app");
    let cluster_removed = write_at::<Cluster>(writes, "PUT", "cluster");
    let cloud_removed = write_at::<Cloud>(writes, "PUT", "cloud");
    assert!(cluster_marked < app_marked, "{writes:#?}");
    assert!(app_marked < app_removed, "{writes:#?}");
    assert!(app_removed < cluster_removed, "{writes:#?}");
    assert!(cluster_removed < cloud_removed, "{writes:#?}");
    for removal in [app_removed, cluster_removed, cloud_removed] {
        let body = writes[removal].body.as_ref().unwrap();
        assert_eq!(body["metadata"]["finalizers"], json!([]), "{body}");
        assert!(
            body["metadata"]["resource_version"].is_string(),
            "conditional: {body}"
        );
    }
}

// --- Tests ---

#[tokio::test]
async fn deleting_a_cloud_cascades_to_its_cluster_and_application_in_order() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[]).await;
    let gc = Gc::start(&client, Metrics::new(), None);

    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&apis.apps, "app").await;
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    assert_cascade_order(&cascade_writes(&api).await);
    assert!(gc.cycles.is_empty());
    gc.stop().await;
}

#[tokio::test]
async fn another_controllers_finalizer_at_the_tail_makes_the_cascade_wait() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[OTHER]).await;
    // A role with the collector's finalizer below another one: after the
    // DELETE the stack is [cascade_deletion, other, cascade_deletion].
    apis.roles
        .create(&role("r", vec![], &["cascade_deletion", "other"]))
        .await
        .unwrap();
    let gc = Gc::start(&client, Metrics::new(), None);

    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    apis.roles
        .delete("r", &DeleteParams::default())
        .await
        .unwrap();
    // The collector pops its own finalizer from the app, then the other
    // controller's is at the tail: nothing more happens.
    wait_for(&apis.apps, "app", |app| {
        app.metadata.finalizers == [OTHER] && app.metadata.is_deleted()
    })
    .await;
    wait_for(&apis.roles, "r", |r| {
        r.metadata.finalizers == ["cascade_deletion", "other"]
    })
    .await;
    // (The log is written just after the answers: let it catch up.)
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = api.writes().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.writes().len(), before, "{:#?}", &api.writes()[before..]);
    assert_eq!(finalizers(&apis.apps, "app").await, [OTHER]);
    assert_eq!(
        finalizers(&apis.clusters, "cluster").await,
        ["cascade_deletion"]
    );
    assert_eq!(
        finalizers(&apis.clouds, "cloud").await,
        ["cascade_deletion"]
    );
    assert_eq!(
        finalizers(&apis.roles, "r").await,
        ["cascade_deletion", "other"]
    );

    // The other controller is done: the object goes, and the cascade on.
    pop_finalizer(&apis.apps, "app", OTHER).await;
    pop_finalizer(&apis.roles, "r", "other").await;
    wait_gone(&apis.apps, "app").await;
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    wait_gone(&apis.roles, "r").await;
    gc.stop().await;
}

#[tokio::test]
async fn a_cycle_of_two_goes_after_what_it_owns_and_is_reported() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    // a owns b, b owns a; b also owns d (outside the cycle).
    apis.roles
        .create(&role("a", vec![role_ref("b")], &[]))
        .await
        .unwrap();
    apis.roles
        .create(&role("b", vec![role_ref("a")], &[]))
        .await
        .unwrap();
    apis.roles
        .create(&role("d", vec![role_ref("b")], &[]))
        .await
        .unwrap();
    let metrics = Metrics::new();
    let gc = Gc::start(&client, metrics.clone(), None);
    let start = api.writes().len();

    apis.roles
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    for name in ["a", "b", "d"] {
        wait_gone(&apis.roles, name).await;
    }
    let paths: Vec<String> = ["a", "b", "d"]
        .iter()
        .map(|name| Role::INFO.object_path(None, name))
        .collect();
    let writes = writes_once_put(&api, &paths).await;
    let removed = |name: &str| {
        let path = Role::INFO.object_path(None, name);
        writes
            .iter()
            .rposition(|w| w.method == "PUT" && w.path == path && w.status == 200)
            .unwrap()
    };
    assert!(removed("d") < removed("a"), "{writes:#?}");
    assert!(removed("d") < removed("b"), "{writes:#?}");
    // Bounded: the DELETE of the test, at most one DELETE and one pop per
    // object, and a few repeats from stores that lag a write behind.
    let count = writes.len() - start;
    assert!(count <= 10, "{count} writes: {:#?}", &writes[start..]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.writes().len(), writes.len(), "no more writes");

    assert_eq!(gc.cycles.detected(), [vec![role_ref("a"), role_ref("b")]]);
    let prefix = "krake_controller_ownership_cycles_total{controller=\"garbage_collector\"}";
    assert_eq!(metric(&metrics, prefix), 1.0);
    gc.stop().await;
}

#[tokio::test]
async fn a_cycle_of_three_across_kinds_is_deleted_and_reported() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    // The lease z owns x, x owns y, y owns z (owner refs may name objects
    // that do not exist yet). y's reference to the global role x carries a
    // namespace, which must be ignored for the cycle to close.
    let lease_ref = reference::<Lease>(Some(NS), "z");
    let mut x_ref_namespaced = role_ref("x");
    x_ref_namespaced.namespace = Some(NS.to_owned());
    apis.roles
        .create(&role("x", vec![lease_ref.clone()], &[]))
        .await
        .unwrap();
    apis.roles
        .create(&role("y", vec![x_ref_namespaced], &[]))
        .await
        .unwrap();
    let lease = Lease::new(
        metadata("z", vec![role_ref("y")], &[]),
        LeaseSpec::free(1000),
    );
    apis.leases.create(&lease).await.unwrap();
    let gc = Gc::start(&client, Metrics::new(), None);
    let start = api.writes().len();

    apis.leases
        .delete("z", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&apis.leases, "z").await;
    wait_gone(&apis.roles, "x").await;
    wait_gone(&apis.roles, "y").await;
    let paths = [
        Lease::INFO.object_path(Some(NS), "z"),
        Role::INFO.object_path(None, "x"),
        Role::INFO.object_path(None, "y"),
    ];
    let writes = writes_once_put(&api, &paths).await;
    let count = writes.len() - start;
    assert!(count <= 12, "{count} writes: {:#?}", &writes[start..]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.writes().len(), writes.len(), "no more writes");
    let mut expected = vec![lease_ref, role_ref("x"), role_ref("y")];
    expected.sort();
    assert_eq!(gc.cycles.detected(), [expected]);
    gc.stop().await;
}

#[tokio::test]
async fn a_new_collector_finishes_a_cascade_its_predecessor_started() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[OTHER]).await;
    let first = Gc::start(&client, Metrics::new(), None);
    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    // The first level is done: the app is marked and the collector's
    // finalizer popped from it; the rest waits for the app.
    wait_for(&apis.apps, "app", |app| {
        app.metadata.finalizers == [OTHER] && app.metadata.is_deleted()
    })
    .await;
    first.stop().await;

    // Meanwhile, with no collector running, the app's controller finishes.
    pop_finalizer(&apis.apps, "app", OTHER).await;
    wait_gone(&apis.apps, "app").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        finalizers(&apis.clusters, "cluster").await,
        ["cascade_deletion"]
    );

    let second = Gc::start(&client, Metrics::new(), None);
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    assert_cascade_order(&cascade_writes(&api).await);
    second.stop().await;
}

#[tokio::test]
async fn transient_api_failures_are_retried() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[]).await;
    let metrics = Metrics::new();
    let gc = Gc::start(&client, metrics.clone(), None);
    wait_collecting(&apis).await;

    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    // The next requests are the collector's: they fail. The test makes
    // none until the cloud's removal shows in the write log.
    api.faults().fail_next(3, 503);
    let cloud = Cloud::INFO.object_path(Some(NS), "cloud");
    let deadline = Instant::now() + GUARD;
    while !api
        .writes()
        .iter()
        .any(|w| w.method == "PUT" && w.path == cloud && w.status == 200)
    {
        assert!(Instant::now() < deadline, "the cloud is never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_gone(&apis.apps, "app").await;
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    assert_cascade_order(&cascade_writes(&api).await);
    let retries = metric(
        &metrics,
        "krake_controller_retries_total{controller=\"garbage_collector\"}",
    );
    assert!(retries >= 1.0, "{}", metrics.encode());
    gc.stop().await;
}

#[tokio::test]
async fn nothing_is_written_until_the_collector_leads() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[]).await;
    let (leader, leading) = watch::channel(false);
    let metrics = Metrics::new();
    let gc = Gc::start(&client, metrics.clone(), Some(leading));

    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    let before = api.writes().len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(api.writes().len(), before, "{:#?}", &api.writes()[before..]);
    assert!(
        !apis
            .clusters
            .get("cluster")
            .await
            .unwrap()
            .metadata
            .is_deleted()
    );
    let prefix = "krake_controller_leader{controller=\"garbage_collector\"}";
    assert_eq!(metric(&metrics, prefix), 0.0);

    leader.send(true).unwrap();
    wait_gone(&apis.apps, "app").await;
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    assert_cascade_order(&cascade_writes(&api).await);
    assert_eq!(metric(&metrics, prefix), 1.0);
    gc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cascade_works_against_an_etcd_backed_api() {
    let server = krake_testkit::server::etcd_server().await;
    let client = Client::new(&server.url()).unwrap();
    let apis = Apis::new(&client);
    apis.cascade(&[]).await;
    let gc = Gc::start(&client, Metrics::new(), None);

    apis.clouds
        .delete("cloud", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&apis.apps, "app").await;
    wait_gone(&apis.clusters, "cluster").await;
    wait_gone(&apis.clouds, "cloud").await;
    gc.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_concurrent_change_is_never_overwritten() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    apis.roles
        .create(&role("r", vec![], &["other"]))
        .await
        .unwrap();
    let gc = Gc::start(&client, Metrics::new(), None);
    wait_collecting(&apis).await;

    // Every request is held back for a second before it is handled.
    api.faults().delay(Duration::from_secs(1));
    apis.roles
        .delete("r", &DeleteParams::default())
        .await
        .unwrap();
    // The collector's pop is on its way (held back): someone else changes
    // the object meanwhile, straight in the store.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let store = api.state().store();
    let key = Role::INFO.key(None, "r").unwrap();
    let stored = store.get(&key).await.unwrap().unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    value["metadata"]["labels"]["changed"] = json!("meanwhile");
    store
        .update(
            &key,
            serde_json::to_vec(&value).unwrap().into(),
            stored.mod_revision,
        )
        .await
        .expect("the collector's pop has not been handled yet");

    let r = wait_for(&apis.roles, "r", |r| r.metadata.finalizers == ["other"]).await;
    api.faults().clear();
    assert_eq!(
        r.metadata.labels.get("changed").map(String::as_str),
        Some("meanwhile"),
        "the change survived the pop"
    );
    let path = Role::INFO.object_path(None, "r");
    let writes = writes_once_put(&api, std::slice::from_ref(&path)).await;
    let statuses: Vec<u16> = writes
        .iter()
        .filter(|w| w.method == "PUT" && w.path == path)
        .map(|w| w.status)
        .collect();
    assert_eq!(statuses.first(), Some(&409), "{writes:#?}");
    assert_eq!(statuses.last(), Some(&200), "{writes:#?}");
    gc.stop().await;
}

#[tokio::test]
async fn a_cycle_member_that_is_not_ours_does_not_hold_the_others() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let apis = Apis::new(&client);
    // a and m own each other, m owns e; m and e carry other finalizers.
    apis.roles
        .create(&role("a", vec![role_ref("m")], &[]))
        .await
        .unwrap();
    apis.roles
        .create(&role("m", vec![role_ref("a")], &["keep"]))
        .await
        .unwrap();
    apis.roles
        .create(&role("e", vec![role_ref("m")], &["other"]))
        .await
        .unwrap();
    let gc = Gc::start(&client, Metrics::new(), None);

    apis.roles
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    // The cycle waits for e, whose other finalizer stays for now.
    wait_for(&apis.roles, "e", |e| {
        e.metadata.is_deleted() && e.metadata.finalizers == ["other"]
    })
    .await;
    wait_for(&apis.roles, "m", |m| {
        m.metadata.finalizers == ["keep", "cascade_deletion"]
    })
    .await;
    // Someone takes the collector's finalizer off m: m is not the
    // collector's any more, but still on the cycle.
    pop_finalizer(&apis.roles, "m", "cascade_deletion").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finalizers(&apis.roles, "a").await, ["cascade_deletion"]);

    // e goes: a, which waited for it through m, goes too.
    pop_finalizer(&apis.roles, "e", "other").await;
    wait_gone(&apis.roles, "e").await;
    wait_gone(&apis.roles, "a").await;
    assert_eq!(finalizers(&apis.roles, "m").await, ["keep"]);
    pop_finalizer(&apis.roles, "m", "keep").await;
    wait_gone(&apis.roles, "m").await;
    gc.stop().await;
}
