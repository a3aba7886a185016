//! Two replicas of one controller with leader election, against the fake
//! API: one reconciles, the standby does not; the leader is killed and the
//! standby takes over; a graceful stop hands over at once. The fake API's
//! write log proves they were never active at the same time: every write
//! of a replica's reconcile falls inside its own turn, and the turns never
//! interleave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use krake_client::Api;
use krake_controller::Action;
use krake_controller::controller::{Controller, ControllerConfig};
use krake_controller::leader::{LeaderElector, LeaseConfig};
use krake_controller::shared::Reflectors;
use krake_controller::testing::FakeApi;
use krake_data::kinds::core::Role;
use krake_data::metadata::Metadata;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Replica {
    controller: JoinHandle<()>,
    elector: JoinHandle<()>,
    stop_controller: CancellationToken,
    stop_elector: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
#[error("write failed: {0}")]
struct WriteFailed(#[from] krake_client::Error);

/// A replica whose reconcile stamps the role with its name, every 20 ms.
fn replica(api: &FakeApi, identity: &'static str) -> Replica {
    let client = api.client().unwrap();
    let mut lease = LeaseConfig::new("system", "role-stamper", identity);
    lease.lease_duration = Duration::from_millis(400);
    lease.renew_every = Duration::from_millis(100);
    lease.retry_every = Duration::from_millis(50);
    lease.max_clock_skew = Duration::from_millis(100);
    let elector = LeaderElector::new(client.clone(), lease).unwrap();
    let leads = elector.is_leader();
    let stop_elector = CancellationToken::new();
    let elector = tokio::spawn(elector.run(stop_elector.clone()));

    let stop_controller = CancellationToken::new();
    let reflectors = Reflectors::new(client.clone(), stop_controller.clone());
    let roles: Api<Role> = Api::all(client);
    let mut config = ControllerConfig::new("stamper");
    config.drain_deadline = Duration::from_secs(2);
    let controller = Controller::<Role>::new(&reflectors, None)
        .config(config)
        .leader(leads);
    let controller = tokio::spawn(controller.run(
        move |role: Arc<Role>, roles: Arc<Api<Role>>| async move {
            let mut stamped = Role::clone(&role);
            stamped
                .metadata
                .labels
                .insert("stamped-by".into(), identity.into());
            // A stale version is refused (409): the next event retries.
            roles.update(&stamped).await?;
            Ok::<_, WriteFailed>(Action::requeue(Duration::from_millis(20)))
        },
        |_, _, _, _| Action::requeue(Duration::from_millis(20)),
        Arc::new(roles),
        stop_controller.clone(),
    ));
    Replica {
        controller,
        elector,
        stop_controller,
        stop_elector,
    }
}

/// The stamps of the role's successful writes, in order.
fn stamps(api: &FakeApi) -> Vec<String> {
    api.writes()
        .into_iter()
        .filter(|w| w.method == "PUT" && w.path == "/core/roles/r" && w.status == 200)
        .filter_map(|w| {
            w.body?["metadata"]["labels"]["stamped-by"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// The runs of equal stamps: `[a, a, b, b, b]` is `[a, b]`.
fn turns(stamps: &[String]) -> Vec<String> {
    let mut turns: Vec<String> = Vec::new();
    for stamp in stamps {
        if turns.last() != Some(stamp) {
            turns.push(stamp.clone());
        }
    }
    turns
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_and_they_are_never_both_active() {
    let api = FakeApi::start().await;
    let roles: Api<Role> = Api::all(api.client().unwrap());
    roles
        .create(&Role::new(Metadata::named("r"), vec![]))
        .await
        .unwrap();

    let a = replica(&api, "a");
    eventually("a to lead and stamp", || {
        stamps(&api).iter().any(|s| s == "a")
    })
    .await;
    let b = replica(&api, "b");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        turns(&stamps(&api)),
        ["a"],
        "the standby does not reconcile"
    );

    // Kill a (no release, no drain): b takes over once the lease expires.
    a.controller.abort();
    a.elector.abort();
    let killed_at = stamps(&api).len();
    eventually("b to take over", || stamps(&api).iter().any(|s| s == "b")).await;
    let after_kill = stamps(&api);
    assert_eq!(turns(&after_kill), ["a", "b"], "{after_kill:?}");
    assert!(after_kill[..killed_at].iter().all(|s| s == "a"));

    // A third replica stands by; b stops gracefully: drain, then release.
    let c = replica(&api, "c");
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.stop_controller.cancel();
    b.controller.await.unwrap();
    b.stop_elector.cancel();
    b.elector.await.unwrap();
    eventually("c to take over", || stamps(&api).iter().any(|s| s == "c")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = stamps(&api);
    assert_eq!(
        turns(&all),
        ["a", "b", "c"],
        "turns never interleave: {all:?}"
    );

    c.stop_controller.cancel();
    c.controller.await.unwrap();
    c.stop_elector.cancel();
    c.elector.await.unwrap();
}
