//! Crash safety of the embedded store: `krake-server` on one data folder is
//! killed with SIGKILL while writers create objects as fast as they can,
//! 20 times in a row. It must start every time on the same folder, and every
//! write it acknowledged (2xx) before it died must be there; writes in
//! flight at the kill may or may not be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use krake_client::{Client, DynamicApi};
use krake_data::registry;
use serde_json::json;

const KILLS: usize = 20;
/// Concurrent writers.
const WRITERS: usize = 4;

/// A pseudo-random number in `low..=high` (no extra crate).
fn random_between(low: u64, high: u64) -> u64 {
    use std::hash::BuildHasher;
    let hash = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    low + hash % (high - low + 1)
}

/// Creates roles named `{prefix}-{n}` one after the other until a request
/// fails, recording each acknowledged name.
async fn writer(url: String, prefix: String, acknowledged: Arc<Mutex<Vec<String>>>) {
    let http = reqwest::Client::new();
    for n in 0.. {
        let name = format!("{prefix}-{n}");
        let body = json!({"api": "core", "kind": "Role", "metadata": {"name": name}, "rules": []});
        match http
            .post(format!("{url}/core/roles"))
            .json(&body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                acknowledged.lock().unwrap().push(name);
            }
            Ok(response) => panic!("create {name}: {}", response.status()),
            Err(_) => return,
        }
    }
}

/// Every role name the server at `url` has.
async fn stored_names(url: &str) -> BTreeSet<String> {
    let roles = DynamicApi::new(
        Client::new(url).unwrap(),
        registry::by_plural("core", "roles").unwrap(),
        None,
    );
    roles
        .list_stream(&Default::default(), 1000)
        .map_ok(|role| role["metadata"]["name"].as_str().unwrap().to_owned())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log = dir.path().join("krake-server.log");
    let test_started = Instant::now();
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut in_flight_applied = 0;
    let mut startup = Duration::ZERO;
    let mut slowest_startup = Duration::ZERO;
    let mut per_round = Vec::new();
    for round in 0..=KILLS {
        let started = Instant::now();
        let (mut server, url) =
            support::start_api(&["--data-dir", data_dir.to_str().unwrap()], &log).await;
        let took = started.elapsed();
        startup += took;
        slowest_startup = slowest_startup.max(took);

        let stored = stored_names(&url).await;
        let missing: Vec<&String> = acknowledged.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "after {round} kills, {} acknowledged writes are missing: {:?}",
            missing.len(),
            missing.iter().take(10).collect::<Vec<_>>()
        );
        // The rest were in flight when the server died: at most one per writer.
        let extra = stored.len() - acknowledged.len();
        assert!(extra <= WRITERS, "{extra} objects nobody acknowledged");
        in_flight_applied += extra;
        acknowledged = stored;
        if round == KILLS {
            break;
        }

        let written = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer_index| {
                tokio::spawn(writer(
                    url.clone(),
                    format!("r{round}-w{writer_index}"),
                    written.clone(),
                ))
            })
            .collect();
        // Writing has begun once the first write is acknowledged; the kill
        // comes 50-300 ms later.
        let deadline = Instant::now() + Duration::from_secs(10);
        while written.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "round {round}: no write within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(random_between(50, 300))).await;
        server.kill();
        for writer in writers {
            tokio::time::timeout(Duration::from_secs(10), writer)
                .await
                .expect("writers stop once the server is gone")
                .unwrap();
        }
        let written = std::mem::take(&mut *written.lock().unwrap());
        per_round.push(written.len());
        acknowledged.extend(written);
    }
    println!("acknowledged writes per round: {per_round:?}");
    println!(
        "{KILLS} SIGKILLs mid-write: {} writes acknowledged, all present after every restart \
         (and {in_flight_applied} writes in flight at a kill were applied); start-up {:?} on \
         average, {slowest_startup:?} at most; whole test {:?}",
        per_round.iter().sum::<usize>(),
        startup / (KILLS as u32 + 1),
        test_started.elapsed(),
    );
}
