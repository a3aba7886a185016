//! No lost updates: 100 concurrent writers each read a Role, add one to a
//! counter in its labels and write it back with the `resource_version` it
//! read (a stale one answers 409, and the writer reads again). When all are
//! done, the counter equals the number of acknowledged writes, against the
//! embedded store and against a real etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use krake_api::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const WRITERS: usize = 100;
/// Acknowledged increments each writer makes.
const INCREMENTS: usize = 1;
const ROLE: &str = "/core/roles/counter";

#[derive(Default)]
struct Tally {
    acknowledged: AtomicUsize,
    conflicts: AtomicUsize,
    requests: AtomicUsize,
}

fn counter_of(role: &Value) -> u64 {
    role["metadata"]["labels"]["counter"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// One writer: `INCREMENTS` read-modify-writes, each retried on 409.
async fn writer(http: reqwest::Client, url: String, tally: Arc<Tally>) {
    for _ in 0..INCREMENTS {
        let mut conflicts = 0_u32;
        loop {
            tally.requests.fetch_add(2, Ordering::Relaxed);
            let response = http.get(format!("{url}{ROLE}")).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let mut role: Value = response.json().await.unwrap();
            assert!(role["metadata"]["resource_version"].is_string(), "{role}");
            let next = counter_of(&role) + 1;
            role["metadata"]["labels"]["counter"] = json!(next.to_string());
            let answer = http
                .put(format!("{url}{ROLE}"))
                .json(&role)
                .send()
                .await
                .unwrap();
            match answer.status() {
                StatusCode::OK => {
                    tally.acknowledged.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                StatusCode::CONFLICT => {
                    tally.conflicts.fetch_add(1, Ordering::Relaxed);
                    // Back off at random, longer after each conflict, so the
                    // writers do not stampede in step.
                    conflicts += 1;
                    let pause = fastrand_millis((5_u64 << conflicts.min(6)).min(200));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
            }
        }
    }
}

/// A pseudo-random number of milliseconds in `0..=max` (no extra crate).
fn fastrand_millis(max: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now()) % (max + 1)
}

async fn no_lost_updates(server: &TestServer, store: &str) {
    let http = reqwest::Client::new();
    let url = server.url();
    let created = http
        .post(format!("{url}/core/roles"))
        .json(&json!({
            "api": "core", "kind": "Role",
            "metadata": {"name": "counter", "labels": {"counter": "0"}},
            "rules": [],
        }))
        .send()
        .await
        .unwrap();
    let status = created.status();
    let mut stale: Value = created.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{stale}");

    // A stale resource_version is refused: the precondition is enforced.
    let mut touched = stale.clone();
    touched["metadata"]["labels"]["touched"] = json!("yes");
    let fresh = http
        .put(format!("{url}{ROLE}"))
        .json(&touched)
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::OK);
    stale["metadata"]["labels"]["counter"] = json!("1000");
    let refused = http
        .put(format!("{url}{ROLE}"))
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| tokio::spawn(writer(http.clone(), url.clone(), tally.clone())))
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let elapsed = started.elapsed();
    let role: Value = http
        .get(format!("{url}{ROLE}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acknowledged = tally.acknowledged.load(Ordering::SeqCst);
    println!(
        "{store}: {WRITERS} writers, {acknowledged} acknowledged increments, {} conflicts (409), \
         {} requests in {elapsed:?}; final counter {}",
        tally.conflicts.load(Ordering::SeqCst),
        tally.requests.load(Ordering::SeqCst),
        counter_of(&role),
    );
    assert_eq!(acknowledged, WRITERS * INCREMENTS);
    assert_eq!(counter_of(&role), acknowledged as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_updates_on_the_embedded_store() {
    let server = TestServer::embedded().await;
    no_lost_updates(&server, "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lost_updates_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    no_lost_updates(&server, "etcd").await;
}
