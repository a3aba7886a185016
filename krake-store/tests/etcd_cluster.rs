//! The etcd backend on a real 3-member etcd cluster: failover when the
//! leader or a follower dies, nothing acknowledged lost, watches that
//! resume by revision miss nothing; TLS with client certificates.
//!
//! Each test starts its own cluster (etcd's default timing: heartbeat
//! 100 ms, election timeout 1 s) and takes 5 to 15 s.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use krake_store::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use krake_store::{ListOptions, Revision, Store, StoreError};
use krake_testkit::etcd_cluster::EtcdCluster;

/// The prefix every test writes under.
const PREFIX: &str = "/ha/";

/// One finished write: when it was sent and answered, and how.
#[derive(Debug, Clone)]
struct Write {
    key: String,
    sent: Instant,
    done: Instant,
    result: Result<Revision, StoreError>,
}

/// `writers` tasks creating keys one after the other until `stop`.
fn spawn_writers(
    store: &EtcdStore,
    writers: usize,
    stop: Instant,
) -> Vec<tokio::task::JoinHandle<Vec<Write>>> {
    (0..writers)
        .map(|writer| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut log = Vec::new();
                let mut n = 0;
                while Instant::now() < stop {
                    let key = format!("{PREFIX}w{writer}-{n:05}");
                    n += 1;
                    let sent = Instant::now();
                    let result = store.create(&key, Bytes::from_static(b"{}")).await;
                    let done = Instant::now();
                    if result.is_err() {
                        // Like a client backing off after an error.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    log.push(Write {
                        key,
                        sent,
                        done,
                        result,
                    });
                }
                log
            })
        })
        .collect()
}

/// A watch of [`PREFIX`] after `from` that resumes by revision whenever its
/// stream ends (as the API's watch hub does): every revision it saw, in
/// the order seen.
fn spawn_watcher(
    store: &EtcdStore,
    from: Revision,
    seen: Arc<Mutex<Vec<Revision>>>,
    ended: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        let mut last = from;
        loop {
            let mut stream = match store.watch(PREFIX, Some(last)).await {
                Ok(stream) => stream,
                Err(StoreError::Unavailable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => panic!("the watch cannot resume: {error}"),
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) => {
                        last = event.revision();
                        seen.lock().unwrap().push(last);
                    }
                    Err(StoreError::Unavailable { message }) => {
                        eprintln!("the watch ended after revision {last}: {message}");
                        ended.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    Err(error) => panic!("the watch failed: {error}"),
                }
            }
        }
    })
}

/// Waits (at most 15 s) until the watcher has seen `revision`.
async fn wait_seen(seen: &Mutex<Vec<Revision>>, revision: Revision) {
    let started = Instant::now();
    while seen.lock().unwrap().last().copied().unwrap_or(0) < revision {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the watch did not reach revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The longest time between two acknowledged writes in `writes`.
fn longest_gap(writes: &[Write]) -> (Duration, Instant) {
    let mut acks: Vec<Instant> = writes
        .iter()
        .filter(|write| write.result.is_ok())
        .map(|write| write.done)
        .collect();
    acks.sort();
    acks.windows(2)
        .map(|pair| (pair[1] - pair[0], pair[0]))
        .max_by_key(|(gap, _)| *gap)
        .expect("at least two acknowledged writes")
}

/// The writes in `writes` that failed.
fn failed(writes: &[Write]) -> Vec<&Write> {
    writes
        .iter()
        .filter(|write| write.result.is_err())
        .collect()
}

/// When the first write sent after `fault` was acknowledged.
fn resumed_after(writes: &[Write], fault: Instant) -> Instant {
    writes
        .iter()
        .filter(|write| write.result.is_ok() && write.sent > fault)
        .map(|write| write.done)
        .min()
        .expect("writes resumed after the fault")
}

/// Checks that every acknowledged create is in etcd at its revision, and
/// that the watch saw exactly the history of [`PREFIX`] (every key once, at
/// its create revision, in order).
async fn check_nothing_lost(store: &EtcdStore, writes: &[Write], seen: &Mutex<Vec<Revision>>) {
    let list = store.list(PREFIX, &ListOptions::default()).await.unwrap();
    let stored: std::collections::HashMap<&str, Revision> = list
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.create_revision))
        .collect();
    let mut acknowledged = 0;
    for write in writes {
        if let Ok(revision) = &write.result {
            acknowledged += 1;
            assert_eq!(
                stored.get(write.key.as_str()),
                Some(revision),
                "acknowledged create of {} at {revision} is not in etcd",
                write.key
            );
        }
    }
    let history: Vec<Revision> = {
        let set: BTreeSet<Revision> = stored.values().copied().collect();
        set.into_iter().collect()
    };
    let last = history.last().copied().unwrap_or(0);
    wait_seen(seen, last).await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "the watch saw a revision twice or out of order"
    );
    assert_eq!(seen, history, "the watch did not see exactly the history");
    eprintln!(
        "{acknowledged} acknowledged creates all stored; {} keys in etcd ({} from writes whose \
         answer was lost); the watch saw all {} revisions once, in order",
        stored.len(),
        stored.len() - acknowledged,
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_writes() {
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("a 3-member etcd cluster");
    let store = EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let start = store.revision().await.unwrap();
    // Let the probes find the leader, so that the watch runs on it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(AtomicUsize::new(0));
    let watcher = spawn_watcher(&store, start, seen.clone(), ended.clone());

    let begin = Instant::now();
    let writers = spawn_writers(&store, 4, begin + Duration::from_secs(8));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let leader = cluster.wait_leader().await.unwrap();
    cluster.kill(leader);
    // After the process was reaped: no answer from it after this.
    let killed = Instant::now();
    eprintln!(
        "killed leader {leader} ({}) at {:?}",
        cluster.endpoint(leader),
        killed - begin
    );
    let new_leader = cluster.wait_leader().await.unwrap();
    eprintln!(
        "member {new_leader} leads {:?} after the kill (seen by polling)",
        killed.elapsed()
    );

    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await.unwrap());
    }
    let (pause, pause_start) = longest_gap(&writes);
    let resumed = resumed_after(&writes, killed);
    let failures = failed(&writes);
    let acknowledged = writes.len() - failures.len();
    eprintln!(
        "WRITE PAUSE {pause:?} (from {:?} after the start; the kill was at {:?}); \
         first write acknowledged {:?} after the kill; {acknowledged} writes acknowledged, \
         {} failed",
        pause_start - begin,
        killed - begin,
        resumed - killed,
        failures.len()
    );
    for failure in &failures {
        eprintln!(
            "  failed {:?} after the kill, after {:?}: {:?}",
            failure.sent.saturating_duration_since(killed),
            failure.done - failure.sent,
            failure.result
        );
        // Only Unavailable (never AlreadyExists from a repeated create),
        // and only for writes sent before service resumed.
        assert!(
            matches!(failure.result, Err(StoreError::Unavailable { .. })),
            "{failure:?}"
        );
        assert!(
            failure.sent < resumed,
            "a write sent after writes resumed failed: {failure:?}"
        );
    }
    assert!(pause < Duration::from_secs(10), "writes paused {pause:?}");
    assert!(acknowledged > 100, "only {acknowledged} writes");

    check_nothing_lost(&store, &writes, &seen).await;
    assert!(
        ended.load(Ordering::SeqCst) >= 1,
        "the watch on the leader did not end when it died"
    );
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_routed_around() {
    let cluster = EtcdCluster::start(3)
        .await
        .expect("a 3-member etcd cluster");
    let store = EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let start = store.revision().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(AtomicUsize::new(0));
    let watcher = spawn_watcher(&store, start, seen.clone(), ended);

    // Open-loop load, as from many independent clients: a create every
    // 10 ms whatever became of the earlier ones.
    let begin = Instant::now();
    let load = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut creates = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for n in 0..700 {
                tick.tick().await;
                let store = store.clone();
                creates.push(tokio::spawn(async move {
                    let key = format!("{PREFIX}open-{n:05}");
                    let sent = Instant::now();
                    let result = store.create(&key, Bytes::from_static(b"{}")).await;
                    Write {
                        key,
                        sent,
                        done: Instant::now(),
                        result,
                    }
                }));
            }
            creates
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.wait_leader().await.unwrap();
    cluster.pause(leader);
    // After the signal was sent: no answer from the leader after this.
    let frozen = Instant::now();
    eprintln!("froze leader {leader} at {:?}", frozen - begin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.resume(leader);
    eprintln!("resumed it at {:?}", begin.elapsed());

    let mut writes = Vec::new();
    for create in load.await.unwrap() {
        writes.push(create.await.unwrap());
    }
    let (pause, _) = longest_gap(&writes);
    let resumed = resumed_after(&writes, frozen);
    let failures = failed(&writes);
    eprintln!(
        "WRITE PAUSE {pause:?}; first write sent after the freeze acknowledged {:?} after it; \
         {} writes, {} failed",
        resumed - frozen,
        writes.len(),
        failures.len()
    );
    for failure in &failures {
        assert!(
            matches!(failure.result, Err(StoreError::Unavailable { .. })),
            "{failure:?}"
        );
        assert!(
            failure.sent < resumed,
            "a write sent after writes resumed failed: {failure:?}"
        );
    }
    if let Some(failure) = failures.first() {
        eprintln!(
            "  for example, after {:?}: {:?}",
            failure.done - failure.sent,
            failure.result
        );
    }
    assert!(pause < Duration::from_secs(10), "writes paused {pause:?}");
    check_nothing_lost(&store, &writes, &seen).await;
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_and_restarted_costs_nothing() {
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("a 3-member etcd cluster");
    let store = EtcdStore::connect(&cluster.endpoints(), EtcdOptions::default())
        .await
        .unwrap();
    let start = store.revision().await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ended = Arc::new(AtomicUsize::new(0));
    let watcher = spawn_watcher(&store, start, seen.clone(), ended);
    // Let the probes find the leader first.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let begin = Instant::now();
    let writers = spawn_writers(&store, 2, begin + Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = cluster.wait_leader().await.unwrap();
    let follower = (leader + 1) % cluster.len();
    cluster.kill(follower);
    eprintln!("killed follower {follower} at {:?}", begin.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart(follower).await.unwrap();
    eprintln!("restarted follower {follower} at {:?}", begin.elapsed());

    let mut writes = Vec::new();
    for writer in writers {
        writes.extend(writer.await.unwrap());
    }
    let (pause, _) = longest_gap(&writes);
    let failures = failed(&writes);
    eprintln!(
        "longest gap between writes {pause:?}; {} writes, {} failed",
        writes.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:?}");
    check_nothing_lost(&store, &writes, &seen).await;
    watcher.abort();

    // The restarted member caught up: read through it alone.
    let alone = EtcdStore::connect(&[cluster.endpoint(follower)], EtcdOptions::default())
        .await
        .unwrap();
    let page = alone.list(PREFIX, &ListOptions::default()).await.unwrap();
    assert_eq!(page.items.len(), writes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_down_fails_at_once_then_recovers() {
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("a 3-member etcd cluster");
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(&cluster.endpoints(), options)
        .await
        .unwrap();
    let created = store
        .create("/down/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    // One clean stop (SIGTERM), two crashes.
    cluster.stop(0).await;
    for index in 1..cluster.len() {
        cluster.kill(index);
    }
    let started = Instant::now();
    let result = store.get("/down/a").await;
    eprintln!(
        "with every member down: {:?} after {:?}",
        result,
        started.elapsed()
    );
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Two members back: a quorum, a leader, service.
    let restarted = Instant::now();
    cluster.restart_many(&[0, 1]).await.unwrap();
    let back = Instant::now();
    loop {
        match store.get("/down/a").await {
            Ok(Some(kv)) => {
                assert_eq!(kv.mod_revision, created);
                break;
            }
            Ok(None) => panic!("the key is gone"),
            Err(error) => {
                assert!(
                    back.elapsed() < Duration::from_secs(10),
                    "no recovery: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!(
        "served again {:?} after a quorum was healthy ({:?} after the restart began)",
        back.elapsed(),
        restarted.elapsed()
    );
}

#[tokio::test]
async fn tls_needs_the_client_certificate() {
    let cluster = EtcdCluster::start_tls(1).await.expect("etcd with TLS");
    let tls = cluster.tls().unwrap().clone();
    let endpoints = cluster.endpoints();
    assert!(endpoints[0].starts_with("https://"), "{endpoints:?}");
    let short = EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };

    // With the CA and the client certificate: everything works.
    let from_files = EtcdTls::from_files(
        &tls.ca_file,
        Some(&tls.client_cert_file),
        Some(&tls.client_key_file),
    )
    .unwrap();
    let store = EtcdStore::connect(
        &endpoints,
        EtcdOptions {
            tls: Some(from_files),
            ..short.clone()
        },
    )
    .await
    .unwrap();
    let created = store
        .create("/tls/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let mut watch = store.watch("/tls/", Some(created - 1)).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.revision(), created);

    // Without the client certificate: refused.
    let store = EtcdStore::connect(
        &endpoints,
        EtcdOptions {
            tls: Some(EtcdTls::new(tls.ca_pem.clone())),
            ..short.clone()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let result = store.get("/tls/a").await;
    eprintln!(
        "without a client certificate: {result:?} after {:?}",
        started.elapsed()
    );
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );

    // Trusting another CA: refused.
    let other = EtcdCluster::start_tls(1).await.expect("etcd with TLS");
    let other_ca = other.tls().unwrap().ca_pem.clone();
    let store = EtcdStore::connect(
        &endpoints,
        EtcdOptions {
            tls: Some(
                EtcdTls::new(other_ca)
                    .with_client_certificate(tls.client_cert_pem, tls.client_key_pem),
            ),
            ..short.clone()
        },
    )
    .await
    .unwrap();
    let result = store.get("/tls/a").await;
    eprintln!("trusting another CA: {result:?}");
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );

    // Plain http:// with TLS settings, https:// without: refused at once.
    let http = endpoints[0].replace("https://", "http://");
    let result = EtcdStore::connect(
        &[http],
        EtcdOptions {
            tls: Some(EtcdTls::new(tls.ca_pem.clone())),
            ..short.clone()
        },
    )
    .await;
    assert!(
        matches!(result, Err(StoreError::Internal { .. })),
        "{result:?}"
    );
    let result = EtcdStore::connect(&endpoints, short).await;
    assert!(
        matches!(result, Err(StoreError::Internal { .. })),
        "{result:?}"
    );
}
