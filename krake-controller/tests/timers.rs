//! Per-object timers follow a shared reflector: they start with the object,
//! see its newest version, and stop when it is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use krake_client::{Api, DeleteParams};
use krake_controller::shared::Reflectors;
use krake_controller::testing::FakeApi;
use krake_controller::timers::Timers;
use krake_data::kinds::core::Role;
use krake_data::metadata::Metadata;
use tokio_util::sync::CancellationToken;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_start_and_stop_with_their_objects() {
    let api = FakeApi::start().await;
    let client = api.client().unwrap();
    let roles: Api<Role> = Api::all(client.clone());
    roles
        .create(&Role::new(Metadata::named("observed"), vec![]))
        .await
        .unwrap();

    let shutdown = CancellationToken::new();
    let reflectors = Reflectors::new(client, shutdown.clone());
    let ticks = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let log = ticks.clone();
    let timers = Arc::new(Timers::new(
        Duration::from_millis(20),
        move |role: Arc<Role>, _| {
            let log = log.clone();
            async move {
                let version = role.metadata.labels.get("v").cloned().unwrap_or_default();
                log.lock()
                    .unwrap()
                    .push((role.metadata.name.clone(), version));
            }
        },
    ));
    let follower = {
        let timers = timers.clone();
        let subscription = reflectors.subscribe::<Role>(None, None);
        let stop = shutdown.clone();
        tokio::spawn(async move { timers.follow(subscription, stop).await })
    };
    let count = |name: &str| {
        ticks
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    };
    eventually("ticks of the existing role", || count("observed") >= 2).await;

    // A new version is what the next ticks see.
    let mut role = roles.get("observed").await.unwrap();
    role.metadata.labels.insert("v".into(), "2".into());
    roles.update(&role).await.unwrap();
    eventually("a tick of the new version", || {
        ticks
            .lock()
            .unwrap()
            .iter()
            .any(|(n, v)| n == "observed" && v == "2")
    })
    .await;
    // A second object gets its own timer.
    roles
        .create(&Role::new(Metadata::named("second"), vec![]))
        .await
        .unwrap();
    eventually("ticks of the second role", || count("second") >= 1).await;
    assert_eq!(timers.len(), 2);

    // Gone (deleted, then the last finalizer removed): its timer stops.
    roles
        .delete("observed", &DeleteParams::default())
        .await
        .unwrap();
    let mut deleted = roles.get("observed").await.unwrap();
    deleted.metadata.finalizers.clear();
    roles.update(&deleted).await.unwrap();
    eventually("the timer to stop", || timers.len() == 1).await;
    let after = count("observed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count("observed"), after, "no tick after the object is gone");
    assert!(count("second") >= 2, "the other timer goes on");

    shutdown.cancel();
    follower.await.unwrap();
    assert!(timers.is_empty(), "every timer stops on shutdown");
}
