//! The etcd backend against a real etcd: Krake's layout, watches,
//! unavailability and recovery, compaction.
#![cfg(all(feature = "etcd", feature = "testing"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use krake_store::etcd::{EtcdOptions, EtcdStore};
use krake_store::{EventKind, EventStream, ListOptions, Store, StoreError, StoreEvent};
use krake_testkit::etcd::{EtcdProcess, etcd_client};

/// A fresh etcd and a store on it.
async fn etcd_and_store(options: EtcdOptions) -> (EtcdProcess, EtcdStore) {
    let etcd = EtcdProcess::start().await.expect("etcd starts");
    let store = EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .expect("a store");
    (etcd, store)
}

/// Options with a short request timeout, for the unavailability tests.
fn short_timeout() -> EtcdOptions {
    EtcdOptions {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    }
}

/// The next item of a watch, failing the test after 10 s.
async fn next(stream: &mut EventStream) -> Option<Result<StoreEvent, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a watch item within 10 s")
}

fn json(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

fn is_unavailable<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Unavailable { .. }))
}

#[tokio::test]
async fn crud_with_etcd_revisions() {
    let (etcd, store) = etcd_and_store(EtcdOptions::default()).await;
    let key = "/core/roles/admin";

    let created = store.create(key, json("{}")).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), created);
    assert_eq!(
        store.create(key, json("{}")).await,
        Err(StoreError::AlreadyExists { key: key.into() })
    );
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(
        (
            kv.key.as_str(),
            &kv.value[..],
            kv.create_revision,
            kv.mod_revision
        ),
        (key, &b"{}"[..], created, created)
    );

    let updated = store.update(key, json("{\"a\":1}"), created).await.unwrap();
    assert!(updated > created);
    assert_eq!(
        store.update(key, json("{}"), created).await,
        Err(StoreError::Conflict {
            key: key.into(),
            expected: created,
            actual: updated
        })
    );
    assert_eq!(
        store.delete(key, Some(created)).await,
        Err(StoreError::Conflict {
            key: key.into(),
            expected: created,
            actual: updated
        })
    );
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (created, updated));

    let deleted = store.delete(key, Some(updated)).await.unwrap();
    assert!(deleted > updated);
    assert_eq!(store.revision().await.unwrap(), deleted);
    assert_eq!(store.get(key).await.unwrap(), None);
    let gone = Err(StoreError::NotFound { key: key.into() });
    assert_eq!(store.update(key, json("{}"), updated).await, gone);
    assert_eq!(store.delete(key, Some(updated)).await, gone);
    assert_eq!(store.delete(key, None).await, gone);
    // Expected revision 0 of a missing key must not create it.
    assert_eq!(store.update(key, json("{}"), 0).await, gone);
    assert_eq!(store.delete(key, Some(0)).await, gone);
    assert_eq!(store.get(key).await.unwrap(), None);

    let again = store.create(key, json("{}")).await.unwrap();
    assert_eq!(store.delete(key, None).await.unwrap(), again + 1);
    drop(etcd);
}

#[tokio::test]
async fn list_pages_ranges_and_snapshots() {
    let (_etcd, store) = etcd_and_store(EtcdOptions::default()).await;
    for key in ["/a/1", "/a/2", "/a/3", "/a0", "/b/1", "/a"] {
        store.create(key, json("{}")).await.unwrap();
    }
    let keys = |page: &krake_store::ListPage| -> Vec<String> {
        page.items.iter().map(|kv| kv.key.clone()).collect()
    };

    let all = store.list("/a/", &ListOptions::default()).await.unwrap();
    assert_eq!(keys(&all), ["/a/1", "/a/2", "/a/3"]);
    assert!(!all.more);
    assert_eq!(all.revision, store.revision().await.unwrap());

    let first = store
        .list(
            "/a/",
            &ListOptions {
                limit: Some(2),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&first), ["/a/1", "/a/2"]);
    assert!(first.more);
    // A write between pages does not show in a page read at the first
    // page's revision.
    store.create("/a/25", json("{}")).await.unwrap();
    let second = store
        .list(
            "/a/",
            &ListOptions {
                start_after: Some("/a/2".into()),
                limit: Some(2),
                revision: Some(first.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&second), ["/a/3"]);
    assert!(!second.more);
    assert_eq!(second.revision, first.revision);

    // Exactly `limit` items left: no more.
    let exact = store
        .list(
            "/a/",
            &ListOptions {
                limit: Some(4),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&exact), ["/a/1", "/a/2", "/a/25", "/a/3"]);
    assert!(!exact.more);

    // A start before the prefix starts at the prefix; one after it is empty.
    let before = ListOptions {
        start_after: Some("/".into()),
        ..ListOptions::default()
    };
    assert_eq!(keys(&store.list("/a/", &before).await.unwrap()).len(), 4);
    let after = ListOptions {
        start_after: Some("/z".into()),
        ..ListOptions::default()
    };
    let empty = store.list("/a/", &after).await.unwrap();
    assert!(empty.items.is_empty() && !empty.more);

    // The empty prefix lists everything.
    let everything = store.list("", &ListOptions::default()).await.unwrap();
    assert_eq!(
        keys(&everything),
        ["/a", "/a/1", "/a/2", "/a/25", "/a/3", "/a0", "/b/1"]
    );
    let rest = store
        .list(
            "",
            &ListOptions {
                start_after: Some("/a0".into()),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(keys(&rest), ["/b/1"]);

    // A revision etcd does not have yet.
    let future = ListOptions {
        revision: Some(everything.revision + 100),
        ..ListOptions::default()
    };
    assert!(matches!(
        store.list("/a/", &future).await,
        Err(StoreError::Internal { .. })
    ));
}

#[tokio::test]
async fn krake_layout_interoperates() {
    let (etcd, store) = etcd_and_store(EtcdOptions::default()).await;
    let mut client = etcd.client().await.unwrap();
    let key = "/kubernetes/applications/ns/x";
    let body =
        r#"{"api":"kubernetes","kind":"Application","metadata":{"name":"x","namespace":"ns"}}"#;

    // Written by Krake (raw etcd), read by the store.
    let put = client.put(key, body, None).await.unwrap();
    let revision = put.header().unwrap().revision();
    let kv = store.get(key).await.unwrap().unwrap();
    assert_eq!(&kv.value[..], body.as_bytes());
    assert_eq!((kv.create_revision, kv.mod_revision), (revision, revision));
    let page = store
        .list("/kubernetes/applications/ns/", &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(page.items, vec![kv.clone()]);

    // Written by the store, read by Krake.
    let new_body = r#"{"api":"kubernetes","kind":"Application","metadata":{"name":"x","namespace":"ns","labels":{"a":"b"}}}"#;
    let updated = store
        .update(key, Bytes::from(new_body), kv.mod_revision)
        .await
        .unwrap();
    let created = store
        .create("/kubernetes/applications/ns/y", json("{}"))
        .await
        .unwrap();
    let response = client
        .get(
            "/kubernetes/applications/ns/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let raw: Vec<(&[u8], &[u8], i64)> = response
        .kvs()
        .iter()
        .map(|kv| (kv.key(), kv.value(), kv.mod_revision()))
        .collect();
    assert_eq!(
        raw,
        [
            (key.as_bytes(), new_body.as_bytes(), updated),
            (&b"/kubernetes/applications/ns/y"[..], &b"{}"[..], created),
        ]
    );
}

#[tokio::test]
async fn watch_maps_puts_and_deletes() {
    let (etcd, store) = etcd_and_store(EtcdOptions::default()).await;
    let start = store.revision().await.unwrap();
    let mut live = store.watch("/w/", None).await.unwrap();

    let created = store.create("/w/a", json("1")).await.unwrap();
    store.create("/other", json("x")).await.unwrap();
    let updated = store.update("/w/a", json("2"), created).await.unwrap();
    let deleted = store.delete("/w/a", None).await.unwrap();
    // Written by someone else straight into etcd.
    let mut client = etcd.client().await.unwrap();
    let raw = client.put("/w/b", "3", None).await.unwrap();
    let raw = raw.header().unwrap().revision();

    let expected = [
        (EventKind::Put, "/w/a", "1", created, created),
        (EventKind::Put, "/w/a", "2", created, updated),
        // The deleted value and its create revision, at the delete's revision.
        (EventKind::Delete, "/w/a", "2", created, deleted),
        (EventKind::Put, "/w/b", "3", raw, raw),
    ];
    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        seen.push(next(&mut live).await.unwrap().unwrap());
    }
    let summary: Vec<_> = seen
        .iter()
        .map(|event| {
            (
                event.kind,
                event.kv.key.as_str(),
                std::str::from_utf8(&event.kv.value).unwrap(),
                event.kv.create_revision,
                event.revision(),
            )
        })
        .collect();
    assert_eq!(summary, expected);
    assert!(seen[0].is_create() && !seen[1].is_create() && !seen[2].is_create());

    // Resuming replays exactly what came after.
    let mut replay = store.watch("/w/", Some(start)).await.unwrap();
    for event in &seen {
        assert_eq!(&next(&mut replay).await.unwrap().unwrap(), event);
    }
    let mut resumed = store.watch("/w/", Some(updated)).await.unwrap();
    assert_eq!(next(&mut resumed).await.unwrap().unwrap(), seen[2]);

    // The empty prefix watches every key.
    let mut all = store.watch("", Some(start)).await.unwrap();
    let first = next(&mut all).await.unwrap().unwrap();
    assert_eq!(first, seen[0]);
    assert_eq!(next(&mut all).await.unwrap().unwrap().kv.key, "/other");
}

#[tokio::test]
async fn unavailable_within_the_timeout_then_recovers() {
    let options = short_timeout();
    let bound = options.request_timeout + Duration::from_secs(1);
    let (mut etcd, store) = etcd_and_store(options).await;
    let created = store.create("/u/a", json("1")).await.unwrap();
    let mut watch = store.watch("/u/", Some(created - 1)).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap().unwrap().revision(), created);

    etcd.stop();

    // The open watch reports the loss and ends.
    let started = Instant::now();
    let item = next(&mut watch).await;
    assert!(
        matches!(item, Some(Err(StoreError::Unavailable { .. }))),
        "{item:?}"
    );
    assert!(next(&mut watch).await.is_none());
    eprintln!("the watch failed after {:?}", started.elapsed());

    // Every operation fails within the timeout.
    for round in 0..2 {
        let timed = |name: &'static str, started: Instant, unavailable: bool| {
            let elapsed = started.elapsed();
            eprintln!("round {round}: {name} failed after {elapsed:?}");
            assert!(unavailable, "{name} did not give Unavailable");
            assert!(elapsed < bound, "{name} took {elapsed:?}");
        };
        let t = Instant::now();
        let result = store.get("/u/a").await;
        eprintln!("{result:?}");
        timed("get", t, is_unavailable(&result));
        let t = Instant::now();
        timed(
            "list",
            t,
            is_unavailable(&store.list("/u/", &ListOptions::default()).await),
        );
        let t = Instant::now();
        timed(
            "create",
            t,
            is_unavailable(&store.create("/u/b", json("1")).await),
        );
        let t = Instant::now();
        timed(
            "update",
            t,
            is_unavailable(&store.update("/u/a", json("2"), created).await),
        );
        let t = Instant::now();
        timed(
            "delete",
            t,
            is_unavailable(&store.delete("/u/a", None).await),
        );
        let t = Instant::now();
        timed(
            "watch",
            t,
            is_unavailable(&store.watch("/u/", None).await.map(|_| ())),
        );
        let t = Instant::now();
        timed("revision", t, is_unavailable(&store.revision().await));
    }

    // etcd comes back: the same store works again.
    etcd.start_again().await.expect("etcd starts again");
    let started = Instant::now();
    let revision = loop {
        match store.revision().await {
            Ok(revision) => break revision,
            Err(error) => {
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "no recovery: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    eprintln!("recovered {:?} after etcd was back", started.elapsed());
    assert_eq!(revision, created);
    assert_eq!(
        store.get("/u/a").await.unwrap().unwrap().mod_revision,
        created
    );
    let mut resumed = store.watch("/u/", Some(created)).await.unwrap();
    let updated = store.update("/u/a", json("2"), created).await.unwrap();
    assert_eq!(
        next(&mut resumed).await.unwrap().unwrap().revision(),
        updated
    );
}

#[tokio::test]
async fn a_frozen_etcd_times_out() {
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(1),
        // etcd refuses pings more frequent than every 5 s.
        keep_alive_interval: Duration::from_secs(5),
        keep_alive_timeout: Duration::from_secs(1),
        ..EtcdOptions::default()
    };
    let bound = options.request_timeout + Duration::from_secs(1);
    let (etcd, store) = etcd_and_store(options).await;
    let created = store.create("/f/a", json("1")).await.unwrap();
    let mut watch = store.watch("/f/", None).await.unwrap();
    let pid = etcd.pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };

    signal("-STOP");
    let started = Instant::now();
    let result = store.get("/f/a").await;
    assert!(is_unavailable(&result), "{result:?}");
    assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    // Keep-alive pings notice the frozen peer and end the watch.
    let item = tokio::time::timeout(Duration::from_secs(20), watch.next())
        .await
        .expect("the watch ends within 20 s");
    eprintln!("the watch failed after {:?}: {item:?}", started.elapsed());
    assert!(matches!(item, Some(Err(StoreError::Unavailable { .. }))));

    signal("-CONT");
    let started = Instant::now();
    loop {
        match store.get("/f/a").await {
            Ok(kv) => {
                assert_eq!(kv.unwrap().mod_revision, created);
                break;
            }
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(15), "{error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("recovered {:?} after etcd continued", started.elapsed());
}

#[tokio::test]
async fn connects_while_etcd_is_down() {
    let mut etcd = EtcdProcess::start().await.expect("etcd starts");
    etcd.stop();
    let options = short_timeout();
    let bound = options.request_timeout + Duration::from_secs(1);
    let store = EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .expect("connecting does not need etcd");
    let started = Instant::now();
    assert!(is_unavailable(&store.revision().await));
    assert!(started.elapsed() < bound);

    etcd.start_again().await.expect("etcd starts again");
    let started = Instant::now();
    while store.revision().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(15), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("first answer {:?} after etcd was up", started.elapsed());
    store.create("/k", json("1")).await.unwrap();
}

#[tokio::test]
async fn a_silent_endpoint_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(1),
        ..short_timeout()
    };
    let bound = options.request_timeout + Duration::from_secs(1);
    let store = EtcdStore::connect(&[format!("http://{address}")], options)
        .await
        .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        assert!(is_unavailable(&store.get("/k").await));
        assert!(is_unavailable(&store.watch("/", None).await.map(|_| ())));
        assert!(started.elapsed() < bound * 2, "{:?}", started.elapsed());
    }
    accepting.abort();
}

#[tokio::test]
async fn invalid_endpoints_are_refused() {
    let error = EtcdStore::connect(&[], EtcdOptions::default()).await;
    assert!(matches!(error, Err(StoreError::Internal { .. })));
    let error = EtcdStore::connect(&["http://[bad".to_owned()], EtcdOptions::default()).await;
    assert!(
        matches!(error, Err(StoreError::Internal { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn compacted_revisions() {
    let (etcd, store) = etcd_and_store(EtcdOptions::default()).await;
    let first = store.create("/c/a", json("1")).await.unwrap();
    let mut revision = first;
    for value in ["2", "3", "4"] {
        revision = store.update("/c/a", json(value), revision).await.unwrap();
    }
    let compacted_at = revision - 1;
    etcd.compact(compacted_at).await.unwrap();

    // Lists: the compaction revision itself is still readable.
    let at = |revision| ListOptions {
        revision: Some(revision),
        ..ListOptions::default()
    };
    assert_eq!(
        store.list("/c/", &at(first)).await,
        Err(StoreError::Compacted {
            requested: first,
            oldest: compacted_at
        })
    );
    let page = store.list("/c/", &at(compacted_at)).await.unwrap();
    assert_eq!(page.revision, compacted_at);
    assert_eq!(&page.items[0].value[..], b"3");

    // Watches: from before the compaction, as the call's error or the
    // first item of the stream.
    let result = match store.watch("/c/", Some(first)).await {
        Err(error) => Err(error),
        Ok(mut stream) => {
            let item = next(&mut stream).await.unwrap();
            assert!(next(&mut stream).await.is_none());
            item
        }
    };
    assert_eq!(
        result,
        Err(StoreError::Compacted {
            requested: first,
            oldest: compacted_at
        })
    );
    // After the compaction revision: fine.
    let mut stream = store.watch("/c/", Some(compacted_at)).await.unwrap();
    let event = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(
        (event.revision(), &event.kv.value[..]),
        (revision, &b"4"[..])
    );
}

/// The shared conformance suite, each test with its own etcd (it starts in
/// tens of milliseconds).
mod conformance {
    use krake_store::etcd::{EtcdOptions, EtcdStore};
    use krake_store::testing::conformance;
    use krake_testkit::etcd::EtcdProcess;

    async fn etcd_store() -> (EtcdStore, EtcdProcess) {
        let etcd = EtcdProcess::start().await.expect("etcd starts");
        let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
            .await
            .expect("a store");
        (store, etcd)
    }

    krake_store::store_conformance_tests!(etcd_store());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_is_reported() {
        let (store, etcd) = etcd_store().await;
        conformance::compaction_is_reported(&store, |revision| {
            let etcd = &etcd;
            async move { etcd.compact(revision).await.expect("etcd compacts") }
        })
        .await;
    }
}
