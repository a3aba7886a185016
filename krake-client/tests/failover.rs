//! A client of several API replicas: reads and writes move to the next
//! endpoint when a connection cannot be made, reads and watches also when
//! an endpoint stays silent, a write that may have been sent is not repeated, the write guard is asked again before a failover
//! attempt, and a watch resumes on the next replica without missing or
//! repeating an event.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use futures::StreamExt;
use krake_api::ApiConfig;
use krake_client::{Api, Backoff, Client, DynamicApi, Error, WatchConfig, WatchEvent, WriteGuard};
use krake_data::kinds::kubernetes::Application;
use krake_data::registry;
use serde_json::{Value, json};
use support::{RestartableServer, app, counting_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback address nothing listens on: connections are refused.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that reads each request and closes the connection without
/// answering: the request was sent, its fate is unknown.
async fn hanging_up_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buffer = [0_u8; 4096];
                if socket.read(&mut buffer).await.unwrap_or(0) > 0 {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (address, received)
}

fn roles(client: Client) -> DynamicApi {
    DynamicApi::new(client, registry::by_plural("core", "roles").unwrap(), None)
}

fn role() -> Value {
    json!({"api": "core", "kind": "Role", "metadata": {"name": "r"}, "rules": []})
}

fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(100),
        factor: 1.0,
        jitter: false,
    }
}

#[derive(Debug, Default)]
struct CountingGuard {
    asked: AtomicUsize,
    /// Refuse from this call on (1-based); 0 never refuses.
    refuse_from: usize,
}

impl WriteGuard for CountingGuard {
    fn check(&self) -> Result<(), String> {
        let call = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        if self.refuse_from != 0 && call >= self.refuse_from {
            Err("lease lost".to_owned())
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn reads_and_writes_move_on_when_the_connection_is_refused() {
    let dead = dead_address().await;
    let (live, counts) = counting_server().await;
    let guard = Arc::new(CountingGuard::default());
    let client = Client::builder("http://unused")
        .endpoints([format!("http://{dead}"), format!("http://{live}")])
        .write_guard(guard.clone())
        .build()
        .unwrap();
    assert_eq!(client.current_endpoint().port(), Some(dead.port()));
    let roles = roles(client.clone());

    roles.create(&role()).await.unwrap();
    assert_eq!(counts.writes.load(Ordering::SeqCst), 1);
    assert_eq!(
        guard.asked.load(Ordering::SeqCst),
        2,
        "asked before each attempt"
    );
    assert_eq!(client.current_endpoint().port(), Some(live.port()));

    // The dead endpoint rests: later requests go straight to the live one.
    roles.get("r").await.unwrap();
    roles.update(&role()).await.unwrap();
    assert_eq!(counts.reads.load(Ordering::SeqCst), 1);
    assert_eq!(counts.writes.load(Ordering::SeqCst), 2);
    assert_eq!(guard.asked.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_guard_is_asked_again_before_a_failover_attempt() {
    let dead = dead_address().await;
    let (live, counts) = counting_server().await;
    let guard = Arc::new(CountingGuard {
        refuse_from: 2,
        ..CountingGuard::default()
    });
    let client = Client::builder("http://unused")
        .endpoints([format!("http://{dead}"), format!("http://{live}")])
        .write_guard(guard.clone())
        .build()
        .unwrap();
    let err = roles(client).create(&role()).await.unwrap_err();
    assert!(matches!(err, Error::WriteRefused { .. }), "{err:?}");
    assert_eq!(guard.asked.load(Ordering::SeqCst), 2);
    assert_eq!(counts.writes.load(Ordering::SeqCst), 0, "never sent");
}

#[tokio::test]
async fn a_write_that_may_have_been_sent_is_not_repeated_but_a_read_is() {
    let (hanging, received) = hanging_up_server().await;
    let (live, counts) = counting_server().await;
    let client = Client::builder("http://unused")
        .endpoints([format!("http://{hanging}"), format!("http://{live}")])
        .endpoint_backoff(quick_backoff())
        .build()
        .unwrap();
    let roles = roles(client.clone());

    let err = roles.create(&role()).await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(received.load(Ordering::SeqCst), 1, "the write was sent");
    assert_eq!(counts.writes.load(Ordering::SeqCst), 0, "and not repeated");

    // The endpoint whose connection broke rests: reads go to the other.
    assert_eq!(client.current_endpoint().port(), Some(live.port()));
    roles.get("r").await.unwrap();
    assert_eq!(counts.reads.load(Ordering::SeqCst), 1);

    // A read is repeated on the next endpoint.
    let client = Client::builder("http://unused")
        .endpoints([format!("http://{hanging}"), format!("http://{live}")])
        .build()
        .unwrap();
    self::roles(client).get("r").await.unwrap();
    assert_eq!(received.load(Ordering::SeqCst), 2, "sent to the first");
    assert_eq!(counts.reads.load(Ordering::SeqCst), 2, "and repeated");
}

#[tokio::test]
async fn every_endpoint_down_fails_and_a_revived_one_is_used_again() {
    let first = dead_address().await;
    let second = dead_address().await;
    let client = Client::builder("http://unused")
        .endpoints([format!("http://{first}"), format!("http://{second}")])
        .endpoint_backoff(quick_backoff())
        .build()
        .unwrap();
    let roles = roles(client.clone());
    let err = roles.get("r").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    // The first endpoint comes back on its port.
    let listener = tokio::net::TcpListener::bind(first).await.unwrap();
    let app = Router::new().fallback(|| async { axum::Json(json!({"metadata": {"name": "r"}})) });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(150)).await;
    roles.get("r").await.unwrap();
    assert_eq!(client.current_endpoint().port(), Some(first.port()));
}

/// A watch open on replica A resumes on replica B when A stops: every
/// create after the stop arrives exactly once.
#[tokio::test]
async fn a_watch_resumes_on_the_next_replica() {
    let (store, _backing) = krake_api::testing::embedded_store();
    let mut a = RestartableServer::start(store.clone(), ApiConfig::default()).await;
    let b = RestartableServer::start(store.clone(), ApiConfig::default()).await;
    let client = Client::builder(a.url())
        .endpoints([a.url(), b.url()])
        .build()
        .unwrap();
    let apps: Api<Application> = Api::namespaced(client.clone(), "testing");
    let on_b: Api<Application> = Api::namespaced(Client::new(&b.url()).unwrap(), "testing");
    apps.create(&app("before", &[])).await.unwrap();
    let config = WatchConfig::default()
        .heartbeat(Some(Duration::from_secs(1)))
        .backoff(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            ..Backoff::default()
        });
    let mut events = Box::pin(apps.watch(config));
    let first = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Restarted(ref all) if all.len() == 1));

    a.stop().await;
    let stopped = Instant::now();
    let count = 20;
    for index in 0..count {
        on_b.create(&app(&format!("after-{index}"), &[]))
            .await
            .unwrap();
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.values().sum::<usize>() < count {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        match event {
            WatchEvent::Added(object) => *seen.entry(object.metadata.name).or_default() += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    println!(
        "watch resumed on replica B: {count} events {:?} after A stopped",
        stopped.elapsed()
    );
    assert_eq!(seen.len(), count);
    assert!(seen.values().all(|&times| times == 1), "{seen:?}");
    assert_eq!(
        client.current_endpoint().port(),
        b.url().rsplit(':').next().unwrap().parse().ok()
    );
    // Nothing more: no repeats.
    if let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        panic!("unexpected event {event:?}");
    }
}

/// A server that accepts connections and never answers (a hung replica).
async fn silent_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    address
}

#[tokio::test]
async fn a_silent_endpoint_times_out_reads_and_watches_move_on_writes_do_not() {
    let silent = silent_server().await;
    let (live, counts) = counting_server().await;
    let endpoints = [format!("http://{silent}"), format!("http://{live}")];
    let build = || {
        Client::builder("http://unused")
            .endpoints(endpoints.clone())
            .request_timeout(Duration::from_millis(300))
            .build()
            .unwrap()
    };

    let started = Instant::now();
    roles(build()).get("r").await.unwrap();
    println!(
        "read failed over from a silent endpoint in {:?}",
        started.elapsed()
    );
    assert_eq!(counts.reads.load(Ordering::SeqCst), 1);

    let err = roles(build()).create(&role()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport(e) if e.is_timeout()),
        "{err:?}"
    );
    assert_eq!(counts.writes.load(Ordering::SeqCst), 0, "not repeated");

    // A watch's headers do not come from the silent one: it starts on the
    // live one (the counting server's list answers no items).
    let client = build();
    let mut events = Box::pin(roles(client.clone()).watch(WatchConfig::default()));
    let first = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a first event within 10 s")
        .unwrap()
        .unwrap();
    assert!(matches!(first, WatchEvent::Restarted(ref all) if all.is_empty()));
    assert_eq!(client.current_endpoint().port(), Some(live.port()));
}
