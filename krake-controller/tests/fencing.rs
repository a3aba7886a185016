//! Fencing against a real API server (embedded store): a leader whose
//! campaign is frozen past its deadline still believes it leads, but the
//! write guard of its elector refuses its writes, and the API never sees
//! them.
//!
//! The freeze is in-process: the frozen replica's elector runs on its own
//! single-threaded runtime, and a task that blocks that runtime's only
//! thread stands for `SIGSTOP` (`krake-server/tests/leader_failover.rs`
//! does it to real processes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use krake_api::testing::TestServer;
use krake_client::{Api, Client, Error};
use krake_controller::leader::{LeaderElector, LeaseConfig};
use krake_data::Metadata;
use krake_data::kinds::core::{Lease, Role};
use tokio_util::sync::CancellationToken;

/// How long any awaited transition may take before the test fails.
const GUARD: Duration = Duration::from_secs(15);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        // Long enough that a busy machine does not make a miss renewals
        // before the freeze.
        lease_duration: Duration::from_millis(1_500),
        renew_every: Duration::from_millis(300),
        retry_every: Duration::from_millis(100),
        max_clock_skew: Duration::from_millis(200),
        ..LeaseConfig::new("system", "fenced", identity)
    }
}

fn role(name: &str) -> Role {
    Role::new(Metadata::named(name), vec![])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_believes_it_leads_but_cannot_write() {
    let server = TestServer::embedded().await;
    let url = server.url();
    let roles: Api<Role> = Api::all(Client::new(&url).unwrap());

    // Replica a: its elector on its own runtime and thread.
    let a = LeaderElector::new(Client::new(&url).unwrap(), config("a")).unwrap();
    let mut a_leading = a.is_leader();
    let a_guard = a.lease_guard();
    // The work's client: its own connections (none on the frozen runtime),
    // fenced by a's elector.
    let a_work: Api<Role> = Api::all(Client::new(&url).unwrap().with_write_guard(a.write_guard()));
    let a_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a_handle = a_runtime.handle().clone();
    let a_stop = CancellationToken::new();
    let a_thread = std::thread::spawn({
        let a_stop = a_stop.clone();
        move || a_runtime.block_on(a.run(a_stop))
    });
    tokio::time::timeout(GUARD, a_leading.wait_for(|leads| *leads))
        .await
        .expect("a never led")
        .unwrap();
    a_work.create(&role("before")).await.unwrap();

    // Freeze a: block its runtime's only thread.
    let (frozen_tx, frozen_rx) = mpsc::channel::<()>();
    let (thaw_tx, thaw_rx) = mpsc::channel::<()>();
    a_handle.spawn(async move {
        frozen_tx.send(()).unwrap();
        // Bounded, so a failing test still ends.
        let _ = thaw_rx.recv_timeout(GUARD * 2);
    });
    tokio::task::spawn_blocking(move || frozen_rx.recv_timeout(GUARD))
        .await
        .unwrap()
        .expect("a's runtime never froze");
    let frozen = Instant::now();

    // Replica b takes over once a's lease has expired.
    let b = LeaderElector::new(Client::new(&url).unwrap(), config("b")).unwrap();
    let mut b_leading = b.is_leader();
    let b_stop = CancellationToken::new();
    let b_task = tokio::spawn(b.run(b_stop.clone()));
    tokio::time::timeout(GUARD, b_leading.wait_for(|leads| *leads))
        .await
        .expect("b never took over")
        .unwrap();
    let took_over = frozen.elapsed();

    // a's campaign has not run since the freeze: it still says it leads.
    assert!(*a_leading.borrow(), "a's campaign ran while frozen");
    // Its fence knows better: the lease ran out on a's monotonic clock.
    assert!(!a_guard.allows());
    let refused = a_work.create(&role("after")).await.unwrap_err();
    let Error::WriteRefused { reason } = &refused else {
        panic!("not refused by the guard: {refused:?}");
    };
    assert!(
        reason.contains("the lease system/fenced (a) ran out"),
        "{reason}"
    );
    // Reads are not fenced; the refused write never reached the API.
    assert!(a_work.get("before").await.is_ok());
    let err = roles.get("after").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    println!(
        "b took over {} ms after a froze; a's write refused: {reason}",
        took_over.as_millis()
    );

    // Thawed, a notices its deadline passed and stands by; b keeps leading.
    thaw_tx.send(()).unwrap();
    tokio::time::timeout(GUARD, a_leading.wait_for(|leads| !*leads))
        .await
        .expect("a never stepped down")
        .unwrap();
    assert!(*b_leading.borrow());
    let leases: Api<Lease> = Api::namespaced(Client::new(&url).unwrap(), "system");
    let lease = leases.get("fenced").await.unwrap();
    assert_eq!(lease.spec.holder.as_deref(), Some("b"));
    assert!(!a_guard.allows());
    let err = a_work.create(&role("later")).await.unwrap_err();
    assert!(matches!(err, Error::WriteRefused { .. }), "{err:?}");

    a_stop.cancel();
    tokio::task::spawn_blocking(move || a_thread.join().unwrap())
        .await
        .unwrap();
    b_stop.cancel();
    b_task.await.unwrap();
    let lease = leases.get("fenced").await.unwrap();
    assert_eq!(lease.spec.holder, None, "b released the lease");
}
