//! The controller end to end against the fake API: level-based start,
//! change triggers, no concurrent reconcile of a key, requeue, backoff with
//! the retry count, owns, resync, predicates, leadership and graceful
//! shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use krake_client::Api;
use krake_controller::Action;
use krake_controller::controller::{Controller, ControllerConfig};
use krake_controller::shared::Reflectors;
use krake_controller::testing::FakeApi;
use krake_controller::work_queue::{Attempt, BackoffPolicy};
use krake_data::ResourceRef;
use krake_data::kinds::core::{Role, RoleBinding};
use krake_data::metadata::Metadata;
use tokio_util::sync::CancellationToken;

/// What the reconciles saw.
#[derive(Default)]
struct Record {
    /// Reconciles per name.
    count: Mutex<HashMap<String, usize>>,
    /// Reconciles running now, per name, and the most ever at once.
    running: Mutex<HashMap<String, usize>>,
    max_parallel_per_key: AtomicUsize,
    /// Retry counts the error policy saw.
    retries: Mutex<Vec<(u32, bool)>>,
}

impl Record {
    fn count(&self, name: &str) -> usize {
        self.count.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("refused")]
struct Refused;

/// Reconciles roles: counts, holds each run for a moment (so overlaps would
/// show), fails for roles labelled `fail`, requeues those labelled `requeue`.
async fn reconcile(role: Arc<Role>, record: Arc<Record>) -> Result<Action, Refused> {
    let name = role.metadata.name.clone();
    {
        let mut running = record.running.lock().unwrap();
        let now = running.entry(name.clone()).or_default();
        *now += 1;
        record
            .max_parallel_per_key
            .fetch_max(*now, Ordering::SeqCst);
    }
    *record
        .count
        .lock()
        .unwrap()
        .entry(name.clone())
        .or_default() += 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    *record.running.lock().unwrap().get_mut(&name).unwrap() -= 1;
    match role.metadata.labels.get("mode").map(String::as_str) {
        Some("fail") => Err(Refused),
        Some("requeue") => Ok(Action::requeue(Duration::from_millis(30))),
        _ => Ok(Action::await_change()),
    }
}

fn error_policy(_: Arc<Role>, _: &Refused, attempt: Attempt, record: Arc<Record>) -> Action {
    record
        .retries
        .lock()
        .unwrap()
        .push((attempt.retries, attempt.first_failure.is_some()));
    Action::await_change()
}

fn role(name: &str, mode: Option<&str>) -> Role {
    let mut metadata = Metadata::named(name);
    if let Some(mode) = mode {
        metadata.labels.insert("mode".into(), mode.into());
    }
    Role::new(metadata, vec![])
}

fn config() -> ControllerConfig {
    let mut config = ControllerConfig::new("roles");
    config.queue.backoff = BackoffPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(80),
        factor: 2.0,
        jitter: false,
    };
    config.drain_deadline = Duration::from_secs(2);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_at_start_on_change_and_never_twice_at_once() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let roles: Api<Role> = Api::all(client.clone());
    roles.create(&role("before", None)).await.unwrap();

    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client, shutdown.clone());
    let record = Arc::new(Record::default());
    let controller = Controller::<Role>::new(&reflectors, None).config(config());
    let run =
        tokio::spawn(controller.run(reconcile, error_policy, record.clone(), shutdown.clone()));

    eventually("the existing role", || record.count("before") >= 1).await;
    // Many quick changes of one object: reconciled, never concurrently.
    let mut current = roles.get("before").await.unwrap();
    for i in 0..10 {
        current.metadata.labels.insert("i".into(), i.to_string());
        current = roles.update(&current).await.unwrap();
    }
    roles.create(&role("after", None)).await.unwrap();
    eventually("the new role", || record.count("after") >= 1).await;
    eventually("the last change", || record.count("before") >= 2).await;
    assert_eq!(record.max_parallel_per_key.load(Ordering::SeqCst), 1);

    // Requeue: reconciled again and again without changes.
    roles.create(&role("again", Some("requeue"))).await.unwrap();
    eventually("requeues", || record.count("again") >= 4).await;

    // Failures: the error policy sees growing retry counts and a first failure.
    roles.create(&role("broken", Some("fail"))).await.unwrap();
    eventually("retries", || record.retries.lock().unwrap().len() >= 3).await;
    let retries = record.retries.lock().unwrap().clone();
    assert_eq!(&retries[..3], &[(0, false), (1, true), (2, true)]);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the controller stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_objects_resync_and_predicates_trigger_as_configured() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let roles: Api<Role> = Api::all(client.clone());
    let bindings: Api<RoleBinding> = Api::all(client.clone());
    roles.create(&role("owner", None)).await.unwrap();

    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client, shutdown.clone());
    let record = Arc::new(Record::default());
    // The predicate ignores everything but the `mode` label: other label
    // changes do not trigger.
    let controller = Controller::<Role>::new(&reflectors, None)
        .config(config())
        .owns::<RoleBinding>(None)
        .predicate(|role: &Role| {
            Some(
                role.metadata
                    .labels
                    .get("mode")
                    .map_or(0, |m| m.len() as u64 + 1),
            )
        });
    let run =
        tokio::spawn(controller.run(reconcile, error_policy, record.clone(), shutdown.clone()));
    eventually("the owner", || record.count("owner") == 1).await;

    let mut owner = roles.get("owner").await.unwrap();
    owner.metadata.labels.insert("noise".into(), "1".into());
    roles.update(&owner).await.unwrap();
    // A dependent naming the owner triggers it.
    let mut metadata = Metadata::named("dependent");
    metadata
        .owners
        .push(ResourceRef::new("core", "Role", None, "owner".to_owned()));
    bindings
        .create(&RoleBinding::new(
            metadata,
            vec!["u".into()],
            vec!["owner".into()],
        ))
        .await
        .unwrap();
    eventually("the owner, through its dependent", || {
        record.count("owner") == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(record.count("owner"), 2, "the label noise was filtered out");
    shutdown.cancel();
    run.await.unwrap();

    // Resync: reconciled again without any change.
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(api.client().unwrap(), shutdown.clone());
    let record = Arc::new(Record::default());
    let mut resyncing = config();
    resyncing.resync = Some(Duration::from_millis(50));
    let controller = Controller::<Role>::new(&reflectors, None).config(resyncing);
    let run =
        tokio::spawn(controller.run(reconcile, error_policy, record.clone(), shutdown.clone()));
    eventually("resyncs", || record.count("owner") >= 3).await;
    shutdown.cancel();
    run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_only_while_leading_and_survives_cut_watches() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let roles: Api<Role> = Api::all(client.clone());
    roles.create(&role("r", None)).await.unwrap();

    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client, shutdown.clone());
    let record = Arc::new(Record::default());
    let (leads, leader) = tokio::sync::watch::channel(false);
    let controller = Controller::<Role>::new(&reflectors, None)
        .config(config())
        .leader(leader);
    let run =
        tokio::spawn(controller.run(reconcile, error_policy, record.clone(), shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(record.count("r"), 0, "a standby does not reconcile");

    leads.send_replace(true);
    eventually("the leader's first pass", || record.count("r") == 1).await;
    // The watch is cut; the change made meanwhile still arrives.
    api.faults().drop_watches();
    let mut r = roles.get("r").await.unwrap();
    r.metadata.labels.insert("x".into(), "1".into());
    roles.update(&r).await.unwrap();
    eventually("the change after the cut", || record.count("r") >= 2).await;

    leads.send_replace(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = record.count("r");
    let mut r = roles.get("r").await.unwrap();
    r.metadata.labels.insert("x".into(), "2".into());
    roles.update(&r).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(record.count("r"), seen, "no reconcile after stepping down");

    leads.send_replace(true);
    eventually("everything again on a new term", || {
        record.count("r") > seen
    })
    .await;
    shutdown.cancel();
    run.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_reconciles_finish() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let roles: Api<Role> = Api::all(client.clone());
    roles.create(&role("slow", None)).await.unwrap();
    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client, shutdown.clone());
    let started = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicUsize::new(0));
    let context = (started.clone(), finished.clone());
    let controller = Controller::<Role>::new(&reflectors, None).config(config());
    let run = tokio::spawn(controller.run(
        |_: Arc<Role>, context: Arc<(Arc<tokio::sync::Notify>, Arc<AtomicUsize>)>| async move {
            context.0.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            context.1.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Refused>(Action::await_change())
        },
        |_, _, _, _| Action::await_change(),
        Arc::new(context),
        shutdown.clone(),
    ));
    started.notified().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stops within the drain deadline")
        .unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the running reconcile finished"
    );
}
