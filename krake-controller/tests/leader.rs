//! Leader election against a real API server (embedded store and etcd), on
//! real time with a lease of a few hundred milliseconds.
//!
//! Every replica's leadership is recorded as intervals (from its
//! `is_leader` receiver), and every write of the lease as the watch of the
//! Lease kind delivers it; [`check_history`] asserts that no two intervals
//! overlap and that every write came from the holder of the moment. The
//! only durations asserted are failure guards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use krake_api::testing::TestServer;
use krake_client::{Api, Client, ListParams, WatchConfig, WatchEvent};
use krake_controller::leader::{LeaderElector, LeaseConfig, unique_identity};
use krake_data::Metadata;
use krake_data::kinds::core::{Lease, LeaseSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "system";
const LEASE: &str = "scheduler";
/// How long any awaited transition may take before the test fails.
const GUARD: Duration = Duration::from_secs(10);

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_millis(400),
        renew_every: Duration::from_millis(100),
        retry_every: Duration::from_millis(50),
        max_clock_skew: Duration::from_millis(100),
        ..LeaseConfig::new(NAMESPACE, LEASE, identity)
    }
}

fn leases(url: &str) -> Api<Lease> {
    Api::namespaced(Client::new(url).unwrap(), NAMESPACE)
}

/// One change of a replica's leadership, as its receiver saw it.
#[derive(Debug, Clone)]
struct Transition {
    identity: String,
    leading: bool,
    at: Instant,
}

/// One version of the lease, as the watch delivered it.
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    holder: Option<String>,
    transitions: u32,
    version: Option<String>,
}

/// Everything the replicas and the lease did.
#[derive(Debug, Default, Clone)]
struct History {
    transitions: Arc<Mutex<Vec<Transition>>>,
    writes: Arc<Mutex<Vec<Write>>>,
}

impl History {
    /// Records every write of the lease until the returned task is aborted.
    /// Returns once the watch delivered its first (empty) list.
    async fn watch_lease(&self, url: &str) -> JoinHandle<()> {
        let writes = self.writes.clone();
        let (listed, ready) = tokio::sync::oneshot::channel();
        let api = leases(url);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(api.watch(WatchConfig::default()));
            let mut listed = Some(listed);
            while let Some(event) = events.next().await {
                let record = |lease: Lease| {
                    if lease.metadata.name == LEASE {
                        writes.lock().unwrap().push(Write {
                            at: Instant::now(),
                            holder: lease.spec.holder,
                            transitions: lease.spec.transitions,
                            version: lease.metadata.resource_version,
                        });
                    }
                };
                match event.unwrap() {
                    WatchEvent::Restarted(all) => {
                        let first = listed
                            .take()
                            .expect("the watch relisted: writes were missed");
                        assert!(all.is_empty(), "the lease exists before the test: {all:?}");
                        let _ = first.send(());
                    }
                    WatchEvent::Added(lease) | WatchEvent::Modified(lease) => record(lease),
                    WatchEvent::Deleted(lease) => panic!("the lease was deleted: {lease:?}"),
                }
            }
        });
        tokio::time::timeout(GUARD, ready)
            .await
            .expect("the watch did not start")
            .unwrap();
        task
    }

    /// Waits until the watch delivered the lease's current version, then
    /// stops it.
    async fn settle(&self, url: &str, watch: JoinHandle<()>) {
        let current = leases(url)
            .get(LEASE)
            .await
            .unwrap()
            .metadata
            .resource_version;
        let started = Instant::now();
        while self.writes.lock().unwrap().last().map(|w| &w.version) != Some(&current) {
            assert!(
                started.elapsed() < GUARD,
                "the watch never delivered {current:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        watch.abort();
    }
}

/// One replica: an elector campaigning in its own task, and a recorder of
/// its leadership.
struct Replica {
    identity: String,
    leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Replica {
    fn start(url: &str, history: &History) -> Self {
        Self::start_with(url, history, config(&unique_identity("replica")))
    }

    fn start_with(url: &str, history: &History, config: LeaseConfig) -> Self {
        let identity = config.identity.clone();
        let elector = LeaderElector::new(Client::new(url).unwrap(), config).unwrap();
        let leading = elector.is_leader();
        let mut recorder = elector.is_leader();
        let transitions = history.transitions.clone();
        let id = identity.clone();
        tokio::spawn(async move {
            let mut last = false;
            loop {
                let now = *recorder.borrow_and_update();
                if now != last {
                    transitions.lock().unwrap().push(Transition {
                        identity: id.clone(),
                        leading: now,
                        at: Instant::now(),
                    });
                    last = now;
                }
                if recorder.changed().await.is_err() {
                    // The elector is gone: it is not leading any more.
                    if last {
                        transitions.lock().unwrap().push(Transition {
                            identity: id.clone(),
                            leading: false,
                            at: Instant::now(),
                        });
                    }
                    return;
                }
            }
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(elector.run(shutdown.clone()));
        Replica {
            identity,
            leading,
            shutdown,
            task,
        }
    }

    fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    async fn wait_leading(&mut self, leading: bool) {
        tokio::time::timeout(GUARD, self.leading.wait_for(|now| *now == leading))
            .await
            .unwrap_or_else(|_| panic!("{} never became leading={leading}", self.identity))
            .ok();
    }

    /// Kills the replica: its task is aborted, the lease is not released.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the replica gracefully; returns once the lease is released.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(GUARD, self.task)
            .await
            .expect("the elector did not stop")
            .unwrap();
    }
}

/// Waits until exactly one of `replicas` leads; returns its index.
async fn leader_of(replicas: &[Replica]) -> usize {
    let started = Instant::now();
    loop {
        let leading: Vec<usize> = (0..replicas.len())
            .filter(|&i| replicas[i].is_leading())
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let [one] = leading[..] {
            return one;
        }
        assert!(started.elapsed() < GUARD, "no leader among the replicas");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that leadership intervals never overlap, that every write came
/// from the holder of the moment, and that the transition count grows by one
/// per change of holder. Returns the holders in the order of the writes
/// (consecutive duplicates removed).
fn check_history(history: &History) -> Vec<Option<String>> {
    let end_of_test = Instant::now();
    let transitions = history.transitions.lock().unwrap().clone();
    let writes = history.writes.lock().unwrap().clone();

    // Leadership intervals, per identity.
    let mut intervals: Vec<(String, Instant, Instant)> = Vec::new();
    let mut open: Vec<(String, Instant)> = Vec::new();
    for t in &transitions {
        if t.leading {
            assert!(
                open.iter().all(|(id, _)| id != &t.identity),
                "{} started leading twice",
                t.identity
            );
            open.push((t.identity.clone(), t.at));
        } else {
            let index = open
                .iter()
                .position(|(id, _)| id == &t.identity)
                .unwrap_or_else(|| panic!("{} stopped leading without starting", t.identity));
            let (id, start) = open.remove(index);
            intervals.push((id, start, t.at));
        }
    }
    intervals.extend(open.into_iter().map(|(id, start)| (id, start, end_of_test)));
    assert!(!intervals.is_empty(), "nobody ever led");

    for (i, (a, a_start, a_end)) in intervals.iter().enumerate() {
        for (b, b_start, b_end) in &intervals[i + 1..] {
            assert!(
                !(a_start < b_end && b_start < a_end),
                "{a} and {b} led at the same time"
            );
        }
    }

    let leading_at = |at: Instant| -> Vec<&str> {
        intervals
            .iter()
            .filter(|(_, start, end)| *start <= at && at <= *end)
            .map(|(id, _, _)| id.as_str())
            .collect()
    };
    let mut previous: Option<&Write> = None;
    let mut holders: Vec<Option<String>> = Vec::new();
    for write in &writes {
        match &write.holder {
            // A creation, acquisition or renewal: nobody else leads.
            Some(holder) => {
                let others: Vec<&str> = leading_at(write.at)
                    .into_iter()
                    .filter(|id| id != holder)
                    .collect();
                assert!(
                    others.is_empty(),
                    "{holder} wrote the lease while {others:?} led"
                );
            }
            // A release, by the previous holder once it stopped leading.
            None => {
                let releaser = previous
                    .and_then(|p| p.holder.as_deref())
                    .expect("a release of a lease nobody held");
                assert!(
                    !leading_at(write.at).contains(&releaser),
                    "{releaser} released the lease while leading"
                );
            }
        }
        match previous {
            None => assert_eq!(write.transitions, 0, "a new lease has no transitions"),
            Some(p) => {
                let changed = write.holder.is_some() && write.holder != p.holder;
                let expected = p.transitions + u32::from(changed);
                assert_eq!(write.transitions, expected, "{p:?} then {write:?}");
            }
        }
        if holders.last() != Some(&write.holder) {
            holders.push(write.holder.clone());
        }
        previous = Some(write);
    }
    // Everyone who led wrote the lease.
    for (id, _, _) in &intervals {
        assert!(
            holders.iter().any(|h| h.as_deref() == Some(id)),
            "{id} led without a write naming it"
        );
    }
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_leases_with_conditional_updates() {
    let server = TestServer::embedded().await;
    let api = leases(&server.url());
    let lease = Lease::new(
        Metadata::namespaced(NAMESPACE, LEASE),
        LeaseSpec {
            holder: Some("a".into()),
            ..LeaseSpec::free(400)
        },
    );
    let created = api.create(&lease).await.unwrap();
    assert_eq!(created.spec, lease.spec);
    assert!(created.metadata.resource_version.is_some());
    assert!(api.create(&lease).await.unwrap_err().is_conflict());
    assert_eq!(api.get(LEASE).await.unwrap(), created);
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.as_slice(), std::slice::from_ref(&created));

    let mut taken = created.clone();
    taken.spec.holder = Some("b".into());
    taken.spec.transitions = 1;
    let updated = api.update(&taken).await.unwrap();
    assert_eq!(updated.spec.holder.as_deref(), Some("b"));
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    // A replica still holding the first version cannot write it.
    let mut stale = created.clone();
    stale.spec.holder = Some("c".into());
    let err = api.update(&stale).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(api.get(LEASE).await.unwrap(), updated);

    // The duration is validated.
    let zero = Lease::new(Metadata::namespaced(NAMESPACE, "zero"), LeaseSpec::free(0));
    let err = api.create(&zero).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err:?}");
    assert!(api.get("zero").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_other_stands_by() {
    let server = TestServer::embedded().await;
    let history = History::default();
    let watch = history.watch_lease(&server.url()).await;
    let mut first = Replica::start(&server.url(), &history);
    first.wait_leading(true).await;
    let second = Replica::start(&server.url(), &history);

    // Several lease durations pass: the leader keeps the lease (so it
    // renewed it), the standby never leads.
    let api = leases(&server.url());
    let before = api.get(LEASE).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(first.is_leading());
    assert!(!second.is_leading());
    let lease = api.get(LEASE).await.unwrap();
    assert_eq!(lease.spec.holder.as_deref(), Some(first.identity.as_str()));
    assert!(lease.spec.renew_time > before.spec.renew_time);
    assert_eq!(lease.spec.acquire_time, before.spec.acquire_time);
    assert_eq!(lease.spec.transitions, 0);
    assert_eq!(lease.spec.lease_duration_ms, 400);

    let first_identity = first.identity.clone();
    second.stop().await;
    first.stop().await;
    history.settle(&server.url(), watch).await;
    let holders = check_history(&history);
    assert_eq!(holders, [Some(first_identity), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_is_killed() {
    let server = TestServer::embedded().await;
    let history = History::default();
    let watch = history.watch_lease(&server.url()).await;
    let mut first = Replica::start(&server.url(), &history);
    first.wait_leading(true).await;
    let mut second = Replica::start(&server.url(), &history);
    let (first_identity, second_identity) = (first.identity.clone(), second.identity.clone());

    // A receiver held elsewhere sees the killed replica stop leading.
    let first_leading = first.leading.clone();
    assert!(*first_leading.borrow());
    first.kill().await;
    assert!(!*first_leading.borrow());
    second.wait_leading(true).await;
    let lease = leases(&server.url()).get(LEASE).await.unwrap();
    assert_eq!(lease.spec.holder.as_deref(), Some(second_identity.as_str()));
    assert_eq!(lease.spec.transitions, 1);

    second.stop().await;
    history.settle(&server.url(), watch).await;
    // Taken over after expiry: no release between the two holders.
    let holders = check_history(&history);
    assert_eq!(holders, [Some(first_identity), Some(second_identity), None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_releases_the_lease_at_once() {
    let server = TestServer::embedded().await;
    let history = History::default();
    let watch = history.watch_lease(&server.url()).await;
    let mut first = Replica::start(&server.url(), &history);
    first.wait_leading(true).await;
    let first_identity = first.identity.clone();
    // This one's lease lasts a minute: once it leads, a standby can only
    // take over within the guard through a release.
    let slow = LeaseConfig {
        lease_duration: Duration::from_secs(60),
        ..config(&unique_identity("slow"))
    };
    let mut slow_leader = Replica::start_with(&server.url(), &history, slow);
    let slow_identity = slow_leader.identity.clone();
    first.stop().await;
    // Released by the time the shutdown returns.
    let lease = leases(&server.url()).get(LEASE).await.unwrap();
    assert_ne!(lease.spec.holder.as_deref(), Some(first_identity.as_str()));
    slow_leader.wait_leading(true).await;

    let mut standby = Replica::start(&server.url(), &history);
    let standby_identity = standby.identity.clone();
    slow_leader.stop().await;
    standby.wait_leading(true).await;
    standby.stop().await;
    history.settle(&server.url(), watch).await;
    let holders = check_history(&history);
    assert_eq!(
        holders,
        [
            Some(first_identity),
            None,
            Some(slow_identity),
            None,
            Some(standby_identity),
            None
        ]
    );
}

/// Kills and stops leaders in turn among three replicas, replacing each, and
/// checks the whole history.
async fn never_two_leaders(server: &TestServer) {
    let url = server.url();
    let history = History::default();
    let watch = history.watch_lease(&url).await;
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::start(&url, &history)).collect();
    for round in 0..4 {
        let leader = replicas.remove(leader_of(&replicas).await);
        if round % 2 == 0 {
            leader.kill().await;
        } else {
            leader.stop().await;
        }
        replicas.push(Replica::start(&url, &history));
        leader_of(&replicas).await;
    }
    for replica in replicas {
        replica.stop().await;
    }
    history.settle(&url, watch).await;
    let holders = check_history(&history);
    // Four leaders replaced, and the fifth released at the end.
    let leaders = holders.iter().filter(|h| h.is_some()).count();
    assert!(leaders >= 5, "{holders:?}");
    assert_eq!(holders.last(), Some(&None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_leaders_on_the_embedded_store() {
    let server = TestServer::embedded().await;
    never_two_leaders(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_two_leaders_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    never_two_leaders(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_steps_down_at_once() {
    let server = TestServer::embedded().await;
    let history = History::default();
    let mut replica = Replica::start(&server.url(), &history);
    replica.wait_leading(true).await;

    // Someone overwrites the lease (unconditionally, as no replica would).
    let api = leases(&server.url());
    let mut taken = api.get(LEASE).await.unwrap();
    taken.spec.holder = Some("intruder".into());
    taken.spec.renew_time = Some(krake_data::Timestamp::now());
    taken.metadata.resource_version = None;
    api.update(&taken).await.unwrap();

    replica.wait_leading(false).await;
    // The intruder never renews: the replica takes the lease back once it
    // expires.
    replica.wait_leading(true).await;
    let lease = api.get(LEASE).await.unwrap();
    assert_eq!(
        lease.spec.holder.as_deref(),
        Some(replica.identity.as_str())
    );
    assert_eq!(lease.spec.transitions, 1);
    replica.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_when_the_api_is_gone() {
    let server = TestServer::embedded().await;
    let history = History::default();
    let mut replica = Replica::start(&server.url(), &history);
    replica.wait_leading(true).await;
    server.stop().await;
    // Renewals fail; the replica steps down by its deadline and keeps trying.
    replica.wait_leading(false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!replica.is_leading());
    // A shutdown without an API still ends.
    replica.stop().await;
}
