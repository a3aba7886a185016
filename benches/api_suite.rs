//! The REST API under load, against in-process baselines
//! (`cargo bench -p krake-benches --bench api`).
//!
//! - **Creates against raw etcd puts.** One etcd process serves both: raw
//!   `etcd-client` puts of a value as large as a stored Application, and
//!   `POST /kubernetes/namespaces/bench/applications` through a krake API
//!   server over that etcd, with 1 and 32 concurrent clients (tokio tasks in
//!   a loop, sharing one keep-alive `reqwest` client or one etcd client).
//!   Target: creates at >= 70% of the raw puts' throughput. Three more rows
//!   show where the difference goes: the raw etcd transaction the store's
//!   create sends (put if the key is absent), `Store::create` on the
//!   server's etcd store in-process (no HTTP, no API handling), and the same
//!   `POST` through the API's router in-process (API handling, no HTTP).
//! - **GET and list on the embedded store.** 10,000 Applications in one
//!   namespace (the first created through the API, the rest written with
//!   `Store::create` from its stored JSON, which is much faster than 10,000
//!   `POST`s: the embedded store fsyncs every write either way, but the API
//!   adds HTTP and parsing). `GET` of one application (1 and 32 clients,
//!   each client walking the 10,000 keys from its own place) against the
//!   store's `get` of the same keys in-process; the list of all of them over
//!   HTTP (until the last byte arrived; the client does not parse it)
//!   against `Store::list` in-process. Target: a list of 10,000 applications
//!   in under 100 ms.
//! - **Watch fan-out.** 1,000 HTTP watch streams (`?watch&heartbeat=0`) on the
//!   namespace's applications while 50 updates (`PUT`, 20 ms apart) change a
//!   label naming the update; every watcher measures, for every event, the
//!   time from just before the `PUT` was sent to the arrival of the event's
//!   line (one untimed update first, which the watchers skip). The `PUT`s'
//!   own round trips are reported too. Baseline: the same with one watcher.
//!   Target: p99 under 50 ms, every watcher receiving every event.
//!
//! - **Watch fan-out of creates, server in a child process** (`fanout`).
//!   The API server over the embedded store runs in a child process (this
//!   binary again, with `KRAKE_BENCH_API_SERVER` set); this process opens
//!   1,000 watch streams on the namespace's applications over bare TCP
//!   connections and creates 500 applications, one every 20 ms (50 per
//!   second). Every watcher measures, for every create, the time from just
//!   before the `POST` was sent to the arrival of its line; the report adds
//!   the `POST`s' round trips (the store's commit) and the fan-out alone
//!   (each delivery after the first delivery of the same event), and both
//!   processes' CPU. Target: p99 under 50 ms, every watcher receiving every
//!   event.
//! - **Memory with 10,000 applications** (`memory`). For each store
//!   (embedded, etcd), the server in a child process: its RSS idle, holding
//!   10,000 applications created with `POST` (one watch of them open, as a
//!   controller would hold), and after one list of them. Target: under
//!   60 MiB. `KRAKE_BENCH_API_SERVER_WRAPPER=heaptrack` starts the child
//!   under a heap profiler.
//!
//! - **Slow watchers, server in a child process** (`slow_watchers`). 5,000
//!   watch streams over bare TCP connections, 1,000 of which never read a
//!   byte after the answer's head, while applications are created at 50 per
//!   second for 20 s: every other create a probe (small, labelled
//!   `probe=yes`, which the 4,000 reading watchers select) and in between a
//!   filler of about 8 kB (which only the never-reading watchers see, so
//!   their connections fill up). The server runs with a write timeout of
//!   10 s and a 64 KiB socket send buffer (`ApiConfig::write_timeout`,
//!   `send_buffer_bytes`). Reported: the server's RSS idle, with the
//!   watches open, at its peak during the load and after the cut; how many
//!   never-reading streams were cut (`krake_api_slow_clients_cut_total`)
//!   and when, from the first filler; and the probes' p50/p99 latency at
//!   the reading watchers against a baseline run with the 4,000 reading
//!   watchers only (the ratio).
//!
//! The other parts run in this process on one tokio runtime (the default worker
//! count, one per core): the load generators compete for the CPU with the
//! server, as they would with a server on a small machine, and etcd is a
//! separate process on the same machine. 1,000 watchers need about 2,000
//! open files (both ends of every connection are in this process); raise
//! `ulimit -n` if the soft limit is lower.
//!
//! In [`Mode::Smoke`] every measurement runs on a few objects, clients and
//! watchers for a few milliseconds, and every request must succeed.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use futures::StreamExt;
use krake_api::ApiConfig;
use krake_api::testing::{Backing, TestServer};
use krake_data::kinds::kubernetes::Application;
use krake_data::registry::Resource;
use krake_store::ListOptions;
use krake_store::etcd::{EtcdOptions, EtcdStore};
use krake_testkit::etcd::EtcdProcess;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::{Mode, Throughput, report};

/// Set in the child process that serves the API: `embedded` or the etcd
/// endpoint to use.
pub const SERVER_VARIABLE: &str = "KRAKE_BENCH_API_SERVER";
/// A command (with its arguments, split on spaces) to start the server's
/// child process under, e.g. `heaptrack` for a heap profile.
pub const WRAPPER_VARIABLE: &str = "KRAKE_BENCH_API_SERVER_WRAPPER";

/// The namespace every benchmark writes to.
const NAMESPACE: &str = "bench";
/// Its applications' collection.
const APPS: &str = "/kubernetes/namespaces/bench/applications";
/// The label whose value names an update of the watch benchmark.
const EVENT_LABEL: &str = "bench-event";
/// Untimed operations per client before a measurement.
const WARM_UP: u64 = 3;
/// How many errors of a measurement are kept for the report.
const KEPT_ERRORS: usize = 3;

/// The sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    /// How long each throughput measurement runs.
    budget: Duration,
    /// The numbers of concurrent clients.
    clients: [usize; 2],
    /// Applications in the GET and list benchmark.
    objects: usize,
    /// At least this many lists per measurement (for the percentiles).
    min_lists: u64,
    /// Creates the fan-out benchmark with the server in a child process
    /// makes (each watcher must see every one).
    creates: usize,
    /// Time between two of its creates (20 ms: 50 per second).
    create_gap: Duration,
    /// Watch streams of the fan-out benchmark.
    watchers: usize,
    /// Updates each watcher must see.
    events: usize,
    /// Time between two updates.
    event_gap: Duration,
    /// How long a watcher waits for the last event after the last update.
    event_timeout: Duration,
    /// The slow-watchers part.
    slow: SlowPlan,
}

/// The sizes of the slow-watchers part.
#[derive(Debug, Clone)]
struct SlowPlan {
    /// Watch streams in all.
    watchers: usize,
    /// Of which never read.
    never_reading: usize,
    /// Probes (as many fillers go between them).
    probes: usize,
    /// Time between two creates.
    create_gap: Duration,
    /// The server's write timeout.
    write_timeout: Duration,
    /// The server's socket send buffer.
    send_buffer: usize,
}

impl Plan {
    fn new(mode: Mode) -> Self {
        match mode {
            Mode::Bench => Plan {
                mode,
                budget: mode.budget(),
                clients: [1, 32],
                objects: 10_000,
                creates: 500,
                create_gap: Duration::from_millis(20),
                min_lists: 50,
                watchers: 1_000,
                events: 50,
                event_gap: Duration::from_millis(20),
                event_timeout: Duration::from_secs(10),
                slow: SlowPlan {
                    watchers: 5_000,
                    never_reading: 1_000,
                    probes: 500,
                    create_gap: Duration::from_millis(20),
                    write_timeout: Duration::from_secs(10),
                    send_buffer: 64 * 1024,
                },
            },
            Mode::Smoke | Mode::List => Plan {
                mode,
                budget: mode.budget(),
                clients: [1, 4],
                objects: 200,
                creates: 5,
                create_gap: Duration::from_millis(20),
                min_lists: 3,
                watchers: 20,
                events: 3,
                event_gap: Duration::from_millis(5),
                event_timeout: Duration::from_secs(10),
                slow: SlowPlan {
                    watchers: 24,
                    never_reading: 4,
                    probes: 80,
                    create_gap: Duration::from_millis(10),
                    write_timeout: Duration::from_secs(1),
                    send_buffer: 16 * 1024,
                },
            },
        }
    }

    fn is_bench(&self) -> bool {
        self.mode == Mode::Bench
    }
}

/// Runs every measurement of the suite in `mode` (on its own tokio runtime)
/// and prints the results.
pub fn run(mode: Mode) {
    if let Ok(store) = std::env::var(SERVER_VARIABLE) {
        run_server(&store);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run_async(Plan::new(mode)));
}

async fn run_async(plan: Plan) {
    println!("krake-api REST API benchmarks ({:?} mode)", plan.mode);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client");
    // `cargo bench --bench api -- creates` (or `get`, `watch`) runs one part.
    let parts: Vec<String> = std::env::args()
        .filter(|a| {
            [
                "creates",
                "get",
                "watch",
                "fanout",
                "memory",
                "slow_watchers",
            ]
            .contains(&a.as_str())
        })
        .collect();
    let wanted = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wanted("creates") {
        creates_against_etcd_puts(&plan, &http).await;
    }
    if wanted("get") {
        get_and_list(&plan, &http).await;
    }
    if wanted("watch") {
        watch_fan_out(&plan, &http).await;
    }
    if wanted("fanout") {
        create_fan_out(&plan, &http).await;
    }
    if wanted("memory") {
        memory_with_applications(&plan, &http).await;
    }
    if wanted("slow_watchers") {
        slow_watchers(&plan, &http).await;
    }
}

// --- the measurements ---

/// POST creates through the API against raw etcd puts of as many bytes, on
/// the same etcd.
async fn creates_against_etcd_puts(plan: &Plan, http: &reqwest::Client) {
    let etcd = EtcdProcess::start()
        .await
        .expect("start etcd (Debian package etcd-server)");
    let raw = etcd.client().await.expect("an etcd client").kv_client();
    let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
        .await
        .expect("connect to etcd");
    let server = TestServer::start(
        Arc::new(store),
        ApiConfig::default(),
        Backing::Other(Box::new(etcd)),
    )
    .await;
    let url = Arc::new(format!("{}{APPS}", server.url()));

    post_ok(http, &url, &application_body("template")).await;
    let stored = stored_value(&server, "template").await;
    println!(
        "[creates vs etcd puts] a stored Application is {} bytes; raw puts write those bytes",
        stored.len()
    );
    let value = Arc::new(stored);
    // The body with a placeholder name, so that each request only formats a string.
    let body = Arc::new(
        serde_json::to_string(&application_body("NAME_PLACEHOLDER")).expect("JSON serializes"),
    );

    for clients in plan.clients {
        let kv = raw.clone();
        let put_value = value.clone();
        let puts = load(clients, plan.budget, 0, move |client, seq| {
            let mut kv = kv.clone();
            let key = format!("/bench/raw/{clients}/{client}/{seq}");
            let value = put_value.as_ref().clone();
            async move {
                kv.put(key, value, None)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await;

        let client_http = http.clone();
        let url = url.clone();
        let post_body = body.clone();
        let creates = load(clients, plan.budget, 0, move |client, seq| {
            let request = client_http
                .post(url.as_str())
                .header(CONTENT_TYPE, "application/json")
                .body(post_body.replace("NAME_PLACEHOLDER", &format!("c{clients}-{client}-{seq}")));
            async move { expect_ok(request.send().await).await.map(drop) }
        })
        .await;

        // Where the difference goes: the transaction the store's create
        // sends (put if absent), raw, then through the store, without HTTP
        // and the API's handling.
        let kv = raw.clone();
        let txn_value = value.clone();
        let txns = load(clients, plan.budget, 0, move |client, seq| {
            let mut kv = kv.clone();
            let key = format!("/bench/txn/{clients}/{client}/{seq}");
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), txn_value.as_ref().clone(), None)]);
            async move {
                match kv.txn(txn).await {
                    Ok(response) if response.succeeded() => Ok(()),
                    Ok(_) => Err(format!("{key} exists")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        let store = server.state().store().clone();
        let create_value = value.clone();
        let store_creates = load(clients, plan.budget, 0, move |client, seq| {
            let store = store.clone();
            let key = format!("/bench/store/{clients}/{client}/{seq}");
            let value = create_value.as_ref().clone();
            async move {
                store
                    .create(&key, value.into())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
        .await;

        // The API's handling without HTTP: the same POST through the router
        // in-process (parsing, validation, the store's create, the answer).
        let app = krake_api::router(server.state().clone());
        let router_body = body.clone();
        let routed = load(clients, plan.budget, 0, move |client, seq| {
            let request = axum::http::Request::post(APPS)
                .header(CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(router_body.replace(
                    "NAME_PLACEHOLDER",
                    &format!("r{clients}-{client}-{seq}"),
                )));
            let app = app.clone();
            async move {
                let request = request.map_err(|e| e.to_string())?;
                let response = tower::ServiceExt::oneshot(app, request)
                    .await
                    .map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    200 => Ok(()),
                    status => Err(format!("status {status}")),
                }
            }
        })
        .await;

        let name = format!("POST application ({clients} clients)");
        let baseline = format!("etcd put ({clients} clients)");
        let routed_name = format!("POST through the router, no HTTP ({clients} clients)");
        let txn_name = format!("etcd txn put-if-absent ({clients} clients)");
        let store_name = format!("Store::create in-process ({clients} clients)");
        creates.check(plan, &name);
        puts.check(plan, &baseline);
        txns.check(plan, &txn_name);
        store_creates.check(plan, &store_name);
        routed.check(plan, &routed_name);
        report(&name, creates.throughput, &baseline, puts.throughput);
        report(&routed_name, routed.throughput, &baseline, puts.throughput);
        report(&txn_name, txns.throughput, &baseline, puts.throughput);
        report(
            &store_name,
            store_creates.throughput,
            &baseline,
            puts.throughput,
        );
        print_latencies(&name, &creates.latencies, &baseline, &puts.latencies);
        println!("  latency {routed_name}: {}", routed.latencies.summary());
        println!("  latency {txn_name}: {}", txns.latencies.summary());
        println!(
            "  latency {store_name}: {}",
            store_creates.latencies.summary()
        );
        if plan.is_bench() {
            let ratio = creates.throughput.per_second() / puts.throughput.per_second();
            println!(
                "  target: creates >= 70% of raw etcd puts ({clients} clients): {:.1}% -> {}",
                ratio * 100.0,
                verdict(ratio >= 0.7)
            );
        }
    }
    server.stop().await;
}

/// GET of one application and the list of all of them, through HTTP and in
/// process, on the embedded store.
async fn get_and_list(plan: &Plan, http: &reqwest::Client) {
    let server = TestServer::embedded().await;
    let store = server.state().store().clone();
    let base = format!("{}{APPS}", server.url());
    let names: Vec<String> = (0..plan.objects).map(|i| format!("app-{i:05}")).collect();

    let started = Instant::now();
    post_ok(http, &base, &application_body(&names[0])).await;
    let template: Value =
        serde_json::from_slice(&stored_value(&server, &names[0]).await).expect("stored JSON");
    let writes = futures::stream::iter(names.iter().enumerate().skip(1))
        .map(|(index, name)| {
            let mut object = template.clone();
            object["metadata"]["name"] = Value::from(name.as_str());
            object["metadata"]["uid"] =
                Value::from(format!("00000000-0000-4000-8000-{index:012x}"));
            let bytes = serde_json::to_vec(&object).expect("JSON serializes");
            let store = store.clone();
            let key = application_key(name);
            async move { store.create(&key, bytes.into()).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for write in writes {
        write.expect("the embedded store creates an application");
    }
    let populate = started.elapsed();
    println!(
        "[GET and list, embedded store] {} applications written in {:.2} s (1 POST, then Store::create with fsync per write: {:.0}/s)",
        plan.objects,
        populate.as_secs_f64(),
        plan.objects as f64 / populate.as_secs_f64()
    );

    let urls = Arc::new(
        names
            .iter()
            .map(|name| format!("{base}/{name}"))
            .collect::<Vec<_>>(),
    );
    let keys = Arc::new(
        names
            .iter()
            .map(|name| application_key(name))
            .collect::<Vec<_>>(),
    );
    // Every client walks the objects from its own place.
    let pick = |client: usize, seq: u64, len: usize| {
        (client.wrapping_mul(7919) + usize::try_from(seq).unwrap_or(usize::MAX)) % len
    };
    for clients in plan.clients {
        let client_http = http.clone();
        let urls = urls.clone();
        let gets = load(clients, plan.budget, 0, move |client, seq| {
            let request = client_http.get(urls[pick(client, seq, urls.len())].as_str());
            async move { expect_ok(request.send().await).await.map(drop) }
        })
        .await;
        let store_gets = {
            let keys = keys.clone();
            let store = store.clone();
            load(clients, plan.budget, 0, move |client, seq| {
                let store = store.clone();
                let keys = keys.clone();
                async move {
                    let key = &keys[pick(client, seq, keys.len())];
                    match store.get(key).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(format!("{key} is missing")),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await
        };
        let name = format!("GET application ({clients} clients)");
        let baseline = format!("Store::get in-process ({clients} clients)");
        gets.check(plan, &name);
        store_gets.check(plan, &baseline);
        report(&name, gets.throughput, &baseline, store_gets.throughput);
        print_latencies(&name, &gets.latencies, &baseline, &store_gets.latencies);
    }

    // One list, checked in full; the timed ones only check status and size.
    let full = expect_ok(http.get(&base).send().await)
        .await
        .expect("the list succeeds");
    let list: Value = serde_json::from_slice(&full).expect("the list is JSON");
    let items = list["items"].as_array().map_or(0, Vec::len);
    assert_eq!(items, plan.objects, "the list holds every application");
    let expected_len = full.len();
    println!(
        "[GET and list, embedded store] the list of {} applications is {:.2} MB of JSON",
        plan.objects,
        expected_len as f64 / 1e6
    );
    let lists = {
        let client_http = http.clone();
        let base = Arc::new(base.clone());
        load(1, plan.budget, plan.min_lists, move |_, _| {
            let request = client_http.get(base.as_str());
            async move {
                let body = expect_ok(request.send().await).await?;
                // Only the resource version may differ (by a digit or so).
                if body.len().abs_diff(expected_len) > 32 {
                    return Err(format!(
                        "the list is {} bytes, expected {expected_len}",
                        body.len()
                    ));
                }
                Ok(())
            }
        })
        .await
    };
    let store_lists = {
        let store = store.clone();
        let prefix = Arc::new(Application::INFO.prefix(Some(NAMESPACE)));
        let objects = plan.objects;
        load(1, plan.budget, plan.min_lists, move |_, _| {
            let store = store.clone();
            let prefix = prefix.clone();
            async move {
                let page = store
                    .list(&prefix, &ListOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                if page.items.len() == objects {
                    Ok(())
                } else {
                    Err(format!("{} items, expected {objects}", page.items.len()))
                }
            }
        })
        .await
    };
    let name = format!("list {} applications over HTTP", plan.objects);
    let baseline = "Store::list in-process";
    lists.check(plan, &name);
    store_lists.check(plan, baseline);
    report(&name, lists.throughput, baseline, store_lists.throughput);
    print_latencies(&name, &lists.latencies, baseline, &store_lists.latencies);
    if plan.is_bench() {
        let p50 = lists.latencies.percentile(0.50);
        let p99 = lists.latencies.percentile(0.99);
        println!(
            "  target: list of {} applications in < 100 ms: p50 {} -> {}, p99 {} -> {}",
            plan.objects,
            millis(p50),
            verdict(p50 < Duration::from_millis(100)),
            millis(p99),
            verdict(p99 < Duration::from_millis(100)),
        );
    }
    server.stop().await;
}

/// Event latency of many watch streams against one.
async fn watch_fan_out(plan: &Plan, http: &reqwest::Client) {
    let server = TestServer::embedded().await;
    let base = format!("{}{APPS}", server.url());
    let created = post_ok(http, &base, &application_body("watched")).await;
    let mut object: Value = serde_json::from_slice(&created).expect("JSON");
    let object_url = format!("{base}/watched");

    let single = watch_round(plan, http, &base, &object_url, &mut object, 1, 0).await;
    let many = watch_round(
        plan,
        http,
        &base,
        &object_url,
        &mut object,
        plan.watchers,
        1,
    )
    .await;
    for round in [&single, &many] {
        let name = format!(
            "watch fan-out ({} watchers x {} events)",
            round.watchers, plan.events
        );
        println!(
            "{name}: event latency {} | {}/{} watchers got all events, {} of {} (watcher, event) pairs delivered",
            round.latencies.summary(),
            round.complete,
            round.watchers,
            round.latencies.len(),
            round.watchers * plan.events,
        );
        println!(
            "  latency of the updates (PUT round trip): {}",
            round.writes.summary()
        );
        if !plan.is_bench() {
            assert_eq!(round.complete, round.watchers, "{name}: lost events");
        }
    }
    let ratio = |p: f64| {
        many.latencies.percentile(p).as_secs_f64()
            / single.latencies.percentile(p).as_secs_f64().max(1e-9)
    };
    println!(
        "  latency ratio {} watchers / 1 watcher: p50 {:.2}, p99 {:.2}; {} deliveries in {:.2} s from the first update ({:.0}/s, paced by the updates)",
        plan.watchers,
        ratio(0.50),
        ratio(0.99),
        many.latencies.len(),
        many.duration.as_secs_f64(),
        many.latencies.len() as f64 / many.duration.as_secs_f64().max(1e-9),
    );
    if plan.is_bench() {
        let p99 = many.latencies.percentile(0.99);
        println!(
            "  target: {} watchers with p99 event latency < 50 ms: p99 {}, {}/{} watchers complete -> {}",
            plan.watchers,
            millis(p99),
            many.complete,
            many.watchers,
            verdict(p99 < Duration::from_millis(50) && many.complete == many.watchers),
        );
    }
    server.stop().await;
}

/// The outcome of one watch round.
#[derive(Debug)]
struct WatchRound {
    watchers: usize,
    /// Watchers that saw every event.
    complete: usize,
    /// One per (watcher, event) delivered.
    latencies: Latencies,
    /// The round trip of every update (`PUT`).
    writes: Latencies,
    /// From the first update to the last delivery.
    duration: Duration,
}

/// Opens `watchers` watch streams, sends the plan's updates to `object`
/// (labelled `r<round>-e<index>`) and collects every watcher's latencies.
async fn watch_round(
    plan: &Plan,
    http: &reqwest::Client,
    collection: &str,
    object_url: &str,
    object: &mut Value,
    watchers: usize,
    round: usize,
) -> WatchRound {
    let watch_url = format!("{collection}?watch&heartbeat=0");
    let responses: Vec<_> = futures::stream::iter(0..watchers)
        .map(|_| http.get(&watch_url).send())
        .buffer_unordered(64)
        .collect()
        .await;
    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..plan.events).map(|_| OnceLock::new()).collect());
    let marker = format!("\"{EVENT_LABEL}\":\"r{round}-e").into_bytes();
    let events = plan.events;
    let mut readers = Vec::with_capacity(watchers);
    for response in responses {
        let response = response.expect("a watch opens");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "a watch opens");
        // The server subscribed before it answered: no event can be missed.
        let sent = sent.clone();
        let marker = marker.clone();
        readers.push(tokio::spawn(async move {
            read_events(response, &marker, &sent, events).await
        }));
    }

    // One untimed update first (watchers skip it: its label has no index),
    // so that first-write effects do not count as fan-out latency.
    put_label(http, object_url, object, format!("r{round}-warm-up"), None).await;
    tokio::time::sleep(plan.event_gap).await;
    let first_update = Instant::now();
    let mut writes = Vec::with_capacity(plan.events);
    for (index, send_time) in sent.iter().enumerate() {
        let label = format!("r{round}-e{index}");
        writes.push(put_label(http, object_url, object, label, Some(send_time)).await);
        tokio::time::sleep(plan.event_gap).await;
    }

    let deadline = tokio::time::Instant::now() + plan.event_timeout;
    let mut latencies = Vec::with_capacity(watchers * events);
    let mut complete = 0;
    let mut last_delivery = first_update;
    for reader in readers {
        let received = match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(received)) => received,
            // Timed out or panicked: counts as incomplete with nothing received.
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
        if received.len() == events {
            complete += 1;
        }
        for (_, arrival, latency) in received {
            last_delivery = last_delivery.max(arrival);
            latencies.push(latency);
        }
    }
    WatchRound {
        watchers,
        complete,
        latencies: Latencies::new(latencies),
        writes: Latencies::new(writes),
        duration: last_delivery.duration_since(first_update),
    }
}

/// Sets the event label of `object` to `label` with a `PUT` (without a
/// resource version: no precondition) and replaces `object` with the answer.
/// `sent` gets the time just before the request is sent. Returns the round
/// trip.
async fn put_label(
    http: &reqwest::Client,
    object_url: &str,
    object: &mut Value,
    label: String,
    sent: Option<&OnceLock<Instant>>,
) -> Duration {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resource_version");
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        labels[EVENT_LABEL] = Value::from(label);
    }
    let request = http.put(object_url).json(&*object);
    let sent_at = Instant::now();
    if let Some(sent) = sent {
        let _ = sent.set(sent_at);
    }
    let answer = expect_ok(request.send().await)
        .await
        .expect("the update succeeds");
    let round_trip = sent_at.elapsed();
    *object = serde_json::from_slice(&answer).expect("the answer is JSON");
    round_trip
}

/// Reads one watch stream until it saw `events` distinct updates (or the
/// stream ends): (update index, arrival, latency) per update.
async fn read_events(
    response: reqwest::Response,
    marker: &[u8],
    sent: &[OnceLock<Instant>],
    events: usize,
) -> Vec<(usize, Instant, Duration)> {
    let mut scanner = LineScanner::new(marker, events);
    let mut body = response.bytes_stream();
    while scanner.received.len() < events {
        let Some(Ok(chunk)) = body.next().await else {
            break;
        };
        scanner.feed(&chunk, Instant::now(), sent);
    }
    scanner.received
}

/// Opens a watch on `path` of the server at `address` over a bare TCP
/// connection (an HTTP/1.1 request written by hand): a lean load
/// generator, one task and one read per event, instead of a full HTTP
/// client per stream. Returns the stream after the answer's head and what
/// was read past it.
async fn open_raw_watch(
    address: &str,
    path: &str,
) -> std::io::Result<(tokio::net::TcpStream, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/x-ndjson\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::other("the server closed the watch"));
        }
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other(format!(
                    "the watch answered {}",
                    String::from_utf8_lossy(&head[..end])
                )));
            }
            let rest = head.split_off(end + 4);
            return Ok((stream, rest));
        }
    }
}

/// Reads a watch opened by [`open_raw_watch`] until it saw `events`
/// distinct updates (or the stream ends), like [`read_events`]. The chunked
/// transfer encoding's size lines fall between event lines and match no
/// marker.
async fn read_raw_events(
    mut stream: tokio::net::TcpStream,
    rest: Vec<u8>,
    marker: &[u8],
    sent: &[OnceLock<Instant>],
    events: usize,
) -> Vec<(usize, Instant, Duration)> {
    use tokio::io::AsyncReadExt;
    let mut scanner = LineScanner::new(marker, events);
    scanner.feed(&rest, Instant::now(), sent);
    let mut chunk = vec![0u8; 64 * 1024];
    while scanner.received.len() < events {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => scanner.feed(&chunk[..read], Instant::now(), sent),
        }
    }
    scanner.received
}

/// Splits a watch stream into lines and notes the first arrival of every
/// update.
struct LineScanner<'a> {
    marker: &'a [u8],
    seen: Vec<bool>,
    buffer: Vec<u8>,
    /// (update index, arrival, latency) per update.
    received: Vec<(usize, Instant, Duration)>,
}

impl<'a> LineScanner<'a> {
    fn new(marker: &'a [u8], events: usize) -> Self {
        LineScanner {
            marker,
            seen: vec![false; events],
            buffer: Vec::new(),
            received: Vec::with_capacity(events),
        }
    }

    fn feed(&mut self, chunk: &[u8], arrival: Instant, sent: &[OnceLock<Instant>]) {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buffer[start..start + end];
            start += end + 1;
            let Some(index) = event_index(line, self.marker).filter(|&i| i < self.seen.len())
            else {
                continue;
            };
            if self.seen[index] {
                continue;
            }
            self.seen[index] = true;
            if let Some(send_time) = sent[index].get() {
                self.received
                    .push((index, arrival, arrival.duration_since(*send_time)));
            }
        }
        self.buffer.drain(..start);
    }
}

/// The update index in a watch line: the digits after `marker`.
fn event_index(line: &[u8], marker: &[u8]) -> Option<usize> {
    let start = line
        .windows(marker.len())
        .position(|window| window == marker)?
        + marker.len();
    let digits: &[u8] = &line[start..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

// --- the server in a child process ---

/// The API server in a child process (this benchmark binary started again
/// with [`SERVER_VARIABLE`] set), so that the load generator's CPU and
/// memory are not the server's; killed when dropped.
struct ChildServer {
    /// The server's process (in [`Mode::Bench`]).
    child: Option<std::process::Child>,
    /// The server in this process (in [`Mode::Smoke`]: under a test
    /// harness this binary cannot be started again as the benchmark).
    local: Option<TestServer>,
    url: String,
}

impl ChildServer {
    /// Starts a server over `store` (`embedded`, or an etcd endpoint) and
    /// waits until it serves.
    async fn start(store: &str, mode: Mode) -> ChildServer {
        Self::start_with(store, mode, ServerSettings::default()).await
    }

    /// [`ChildServer::start`] with settings beyond the defaults.
    async fn start_with(store: &str, mode: Mode, settings: ServerSettings) -> ChildServer {
        if mode != Mode::Bench {
            let (store, backing) = server_store(store).await;
            let server = TestServer::start(store, settings.config(), backing).await;
            return ChildServer {
                child: None,
                url: server.url(),
                local: Some(server),
            };
        }
        let exe = std::env::current_exe().expect("the benchmark's own path");
        let wrapper = std::env::var(WRAPPER_VARIABLE).unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = std::process::Command::new(program);
                command.args(words).arg(&exe);
                command
            }
            None => std::process::Command::new(&exe),
        };
        let mut child = command
            .arg("--bench")
            .env(SERVER_VARIABLE, store)
            .envs(settings.variables())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start the server's process");
        let stdout = child.stdout.take().expect("the child's standard output");
        let url = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            lines
                .find_map(|line| line.ok()?.strip_prefix("URL ").map(str::to_owned))
                .expect("the server's process prints its URL")
        })
        .await
        .expect("read the server's URL");
        ChildServer {
            child: Some(child),
            local: None,
            url,
        }
    }

    /// The process to sample: the server's (under a wrapper, its child).
    fn pid(&self) -> u32 {
        let Some(child) = &self.child else {
            return std::process::id();
        };
        let pid = child.id();
        if std::env::var(WRAPPER_VARIABLE).is_ok_and(|w| !w.trim().is_empty()) {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            if let Some(inner) = children
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .next_back()
            {
                return inner;
            }
        }
        pid
    }

    fn sample(&self) -> crate::process_stats::ProcessSample {
        crate::process_stats::sample(Some(self.pid())).expect("the server's process is running")
    }

    /// Stops the server by closing its standard input and waits for it.
    async fn stop(mut self) {
        if let Some(server) = self.local.take() {
            server.stop().await;
        }
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        }
    }
}

/// Settings of a benchmark server beyond the defaults, passed to the child
/// process in environment variables.
#[derive(Debug, Clone, Copy, Default)]
struct ServerSettings {
    /// `ApiConfig::write_timeout`.
    write_timeout: Option<Duration>,
    /// `ApiConfig::send_buffer_bytes`.
    send_buffer: Option<usize>,
}

/// The write timeout of the child server, in milliseconds.
const WRITE_TIMEOUT_VARIABLE: &str = "KRAKE_BENCH_API_WRITE_TIMEOUT_MS";
/// The socket send buffer of the child server, in bytes.
const SEND_BUFFER_VARIABLE: &str = "KRAKE_BENCH_API_SEND_BUFFER";

impl ServerSettings {
    fn config(self) -> ApiConfig {
        let defaults = ApiConfig::default();
        ApiConfig {
            write_timeout: self.write_timeout.unwrap_or(defaults.write_timeout),
            send_buffer_bytes: self.send_buffer.or(defaults.send_buffer_bytes),
            ..defaults
        }
    }

    fn variables(self) -> Vec<(&'static str, String)> {
        let mut variables = Vec::new();
        if let Some(timeout) = self.write_timeout {
            variables.push((WRITE_TIMEOUT_VARIABLE, timeout.as_millis().to_string()));
        }
        if let Some(bytes) = self.send_buffer {
            variables.push((SEND_BUFFER_VARIABLE, bytes.to_string()));
        }
        variables
    }

    fn from_env() -> Self {
        let number = |name: &str| std::env::var(name).ok()?.parse::<u64>().ok();
        ServerSettings {
            write_timeout: number(WRITE_TIMEOUT_VARIABLE).map(Duration::from_millis),
            send_buffer: number(SEND_BUFFER_VARIABLE).and_then(|n| usize::try_from(n).ok()),
        }
    }
}

/// The store of a benchmark server: `embedded` (a fresh one in a temporary
/// folder) or an etcd endpoint.
async fn server_store(store: &str) -> (Arc<dyn krake_store::Store>, Backing) {
    if store == "embedded" {
        krake_api::testing::embedded_store()
    } else {
        let etcd = EtcdStore::connect(&[store.to_owned()], EtcdOptions::default())
            .await
            .expect("connect to etcd");
        (Arc::new(etcd), Backing::Other(Box::new(())))
    }
}

/// The child's part: an API server over `store` (`embedded`, or an etcd
/// endpoint) that prints `URL <url>` and serves until its standard input
/// closes.
fn run_server(store: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (store, backing) = server_store(store).await;
        let server = TestServer::start(store, ServerSettings::from_env().config(), backing).await;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "URL {}", server.url());
            let _ = out.flush();
        }
        let _ = tokio::task::spawn_blocking(|| {
            use std::io::Read;
            let mut byte = [0u8; 1];
            let _ = std::io::stdin().read(&mut byte);
        })
        .await;
        server.stop().await;
    });
}

/// Watch fan-out of creates: the plan's watchers on one namespace while
/// creates arrive at a steady pace (50 per second), the server in a child
/// process. Every watcher measures, for every create, the time from just
/// before the `POST` was sent to the arrival of its line.
async fn create_fan_out(plan: &Plan, http: &reqwest::Client) {
    let server = ChildServer::start("embedded", plan.mode).await;
    let base = format!("{}{APPS}", server.url);
    let address = server.url.trim_start_matches("http://").to_owned();
    let watch_path = format!("{APPS}?watch&heartbeat=0");
    let watchers = plan.watchers;
    let events = plan.creates;
    let responses: Vec<_> = futures::stream::iter(0..watchers)
        .map(|_| open_raw_watch(&address, &watch_path))
        .buffer_unordered(64)
        .collect()
        .await;
    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..events).map(|_| OnceLock::new()).collect());
    let marker = b"\"name\":\"fan-e".to_vec();
    let mut readers = Vec::with_capacity(watchers);
    for response in responses {
        let (stream, rest) = response.expect("a watch opens");
        let sent = sent.clone();
        let marker = marker.clone();
        readers.push(tokio::spawn(async move {
            read_raw_events(stream, rest, &marker, &sent, events).await
        }));
    }
    // One untimed create first, which the watchers skip.
    post_ok(http, &base, &application_body("fan-warm-up")).await;
    tokio::time::sleep(plan.create_gap).await;

    let server_before = server.sample();
    let own_before = crate::process_stats::sample(None);
    let body = Arc::new(
        serde_json::to_string(&application_body("NAME_PLACEHOLDER")).expect("JSON serializes"),
    );
    let first_update = Instant::now();
    let start = tokio::time::Instant::now();
    let mut posts = Vec::with_capacity(events);
    for index in 0..events {
        let gap = plan.create_gap * u32::try_from(index).unwrap_or(u32::MAX);
        tokio::time::sleep_until(start + gap).await;
        let request = http
            .post(&base)
            .header(CONTENT_TYPE, "application/json")
            .body(body.replace("NAME_PLACEHOLDER", &format!("fan-e{index}")));
        let sent = sent.clone();
        posts.push(tokio::spawn(async move {
            let sent_at = Instant::now();
            let _ = sent[index].set(sent_at);
            expect_ok(request.send().await)
                .await
                .expect("the create succeeds");
            sent_at.elapsed()
        }));
    }
    let mut writes = Vec::with_capacity(events);
    for post in posts {
        writes.push(post.await.expect("a create task finishes"));
    }
    let pacing = first_update.elapsed();

    let deadline = tokio::time::Instant::now() + plan.event_timeout;
    let mut latencies = Vec::with_capacity(watchers * events);
    let mut arrivals = Vec::with_capacity(watchers * events);
    let mut complete = 0;
    let mut last_delivery = first_update;
    for reader in readers {
        let received = match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(received)) => received,
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
        if received.len() == events {
            complete += 1;
        }
        for (index, arrival, latency) in received {
            last_delivery = last_delivery.max(arrival);
            latencies.push(latency);
            arrivals.push((index, arrival));
        }
    }
    // The fan-out alone: each delivery against the first of the same event
    // (what the store's commit adds to every watcher drops out).
    let mut first = vec![None::<Instant>; events];
    for &(index, arrival) in &arrivals {
        let slot = &mut first[index];
        *slot = Some(slot.map_or(arrival, |f: Instant| f.min(arrival)));
    }
    let spread = Latencies::new(
        arrivals
            .iter()
            .filter_map(|&(index, arrival)| Some(arrival.duration_since(first[index]?)))
            .collect(),
    );
    let server_after = server.sample();
    let own_after = crate::process_stats::sample(None);
    let round = WatchRound {
        watchers,
        complete,
        latencies: Latencies::new(latencies),
        writes: Latencies::new(writes),
        duration: last_delivery.duration_since(first_update),
    };
    let name = format!(
        "watch fan-out of creates, server in a child process ({watchers} watchers x {events} creates at {:.0}/s)",
        events as f64 / pacing.as_secs_f64().max(1e-9)
    );
    println!(
        "{name}: event latency {} | {}/{} watchers got all events, {} of {} (watcher, event) pairs delivered",
        round.latencies.summary(),
        round.complete,
        round.watchers,
        round.latencies.len(),
        round.watchers * events,
    );
    println!(
        "  latency of the creates (POST round trip, the store's commit included): {}",
        round.writes.summary()
    );
    println!(
        "  fan-out alone (each delivery after the first delivery of the same event): {}",
        spread.summary()
    );
    let cpu_share = |before: Duration, after: Duration| {
        (after.saturating_sub(before)).as_secs_f64() / round.duration.as_secs_f64().max(1e-9)
            * 100.0
    };
    println!(
        "  CPU while it ran: server {:.0}% of a core (RSS {:.1} MiB), load generator {:.0}%",
        cpu_share(server_before.cpu, server_after.cpu),
        crate::process_stats::mib(server_after.rss),
        match (own_before, own_after) {
            (Some(before), Some(after)) => cpu_share(before.cpu, after.cpu),
            _ => f64::NAN,
        },
    );
    if plan.is_bench() {
        let p99 = round.latencies.percentile(0.99);
        println!(
            "  target: {watchers} watchers, 50 creates/s, p99 event latency < 50 ms: p99 {}, {}/{} watchers complete -> {}",
            millis(p99),
            round.complete,
            round.watchers,
            verdict(p99 < Duration::from_millis(50) && round.complete == round.watchers),
        );
    } else {
        assert_eq!(round.complete, round.watchers, "{name}: lost events");
    }
    server.stop().await;
}

/// The server's resident memory holding the plan's applications, on the
/// embedded store and on etcd, against its idle memory in the same run (the
/// server in a child process; one watch of the applications open, as a
/// controller would hold).
async fn memory_with_applications(plan: &Plan, http: &reqwest::Client) {
    use crate::process_stats::mib;
    for backing in ["embedded", "etcd"] {
        let etcd = if backing == "etcd" {
            Some(
                EtcdProcess::start()
                    .await
                    .expect("start etcd (Debian package etcd-server)"),
            )
        } else {
            None
        };
        let store = etcd
            .as_ref()
            .map_or("embedded".to_owned(), EtcdProcess::endpoint);
        let server = ChildServer::start(&store, plan.mode).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = server.sample();
        let base = Arc::new(format!("{}{APPS}", server.url));
        let watch = http
            .get(format!("{base}?watch&heartbeat=0"))
            .send()
            .await
            .expect("a watch opens");
        let watched = tokio::spawn(async move {
            let mut body = watch.bytes_stream();
            let mut lines = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                lines += chunk.iter().filter(|&&b| b == b'\n').count();
            }
            lines
        });
        let body = Arc::new(
            serde_json::to_string(&application_body("NAME_PLACEHOLDER")).expect("JSON serializes"),
        );
        let started = Instant::now();
        let results: Vec<Result<Vec<u8>, String>> = futures::stream::iter(0..plan.objects)
            .map(|index| {
                let request = http
                    .post(base.as_str())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.replace("NAME_PLACEHOLDER", &format!("mem-{index:05}")));
                async move { expect_ok(request.send().await).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 0, "every create succeeds");
        let populate = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let holding = server.sample();
        let list = expect_ok(http.get(base.as_str()).send().await)
            .await
            .expect("the list succeeds");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let listed = server.sample();
        server.stop().await;
        let watched = watched.await.unwrap_or_default();
        println!(
            "[memory, {backing} store] server RSS idle {:.1} MiB; holding {} applications ({} POSTs in {:.1} s, one watch open that saw {watched} lines) {:.1} MiB; after one list of them ({:.1} MB) {:.1} MiB",
            mib(idle.rss),
            plan.objects,
            plan.objects,
            populate.as_secs_f64(),
            mib(holding.rss),
            list.len() as f64 / 1e6,
            mib(listed.rss),
        );
        if plan.is_bench() {
            let limit = 60 * 1024 * 1024;
            println!(
                "  target: RSS holding {} applications < 60 MiB ({backing}): {:.1} MiB -> {}; after a list {:.1} MiB -> {}",
                plan.objects,
                mib(holding.rss),
                verdict(holding.rss < limit),
                mib(listed.rss),
                verdict(listed.rss < limit),
            );
        }
        drop(etcd);
    }
}

/// Slow watchers: the plan's slow-watcher streams, some never reading,
/// under a steady create load, against a baseline without the
/// never-reading ones; the server in a child process.
async fn slow_watchers(plan: &Plan, http: &reqwest::Client) {
    let watchers = plan.slow.watchers;
    let never = plan.slow.never_reading;
    let baseline = slow_watchers_round(plan, http, watchers - never, 0).await;
    let loaded = slow_watchers_round(plan, http, watchers - never, never).await;
    let name = format!(
        "slow watchers, server in a child process ({watchers} watchers, {never} never reading; write timeout {:?}, send buffer {} KiB; {} creates at {:.0}/s, half of them 8 kB fillers)",
        plan.slow.write_timeout,
        plan.slow.send_buffer / 1024,
        2 * plan.slow.probes,
        1.0 / plan.slow.create_gap.as_secs_f64(),
    );
    let mib = crate::process_stats::mib;
    println!(
        "{name}: server RSS idle {:.1} MiB, with the watches open {:.1} MiB, peak during the load {:.1} MiB, after the cut {:.1} MiB (baseline without never-reading watchers: {:.1} / {:.1} / {:.1} / {:.1} MiB)",
        mib(loaded.rss_idle),
        mib(loaded.rss_open),
        mib(loaded.rss_peak),
        mib(loaded.rss_after),
        mib(baseline.rss_idle),
        mib(baseline.rss_open),
        mib(baseline.rss_peak),
        mib(baseline.rss_after),
    );
    println!(
        "  cut for the write timeout: {} of {never} never-reading streams (first {}, last {} after the first filler; {} of the reading watchers' streams ended early); open watches right after the cut {} (baseline {}; a reading watcher closes its stream once it has every probe)",
        loaded.cut,
        loaded
            .first_cut
            .map_or("-".to_owned(), |t| format!("{:.1} s", t.as_secs_f64())),
        loaded
            .last_cut
            .map_or("-".to_owned(), |t| format!("{:.1} s", t.as_secs_f64())),
        loaded.readers_incomplete,
        loaded.open_after,
        baseline.open_after,
    );
    print_latencies(
        &format!("of the probes at the {} reading watchers", watchers - never),
        &loaded.latencies,
        "without never-reading watchers",
        &baseline.latencies,
    );
    if plan.is_bench() {
        let ratio = loaded.latencies.percentile(0.99).as_secs_f64()
            / baseline.latencies.percentile(0.99).as_secs_f64().max(1e-9);
        println!(
            "  target: every never-reading stream cut, every reading watcher complete, p99 within 2x of the baseline: {}/{never} cut, {} incomplete, p99 ratio {ratio:.2} -> {}",
            loaded.cut,
            loaded.readers_incomplete,
            verdict(loaded.cut == never as u64 && loaded.readers_incomplete == 0 && ratio <= 2.0),
        );
    } else {
        assert_eq!(
            loaded.cut, never as u64,
            "{name}: every never-reading stream is cut"
        );
        assert_eq!(loaded.readers_incomplete, 0, "{name}: lost events");
        assert_eq!(baseline.readers_incomplete, 0, "{name}: lost events");
    }
}

/// The outcome of one round of [`slow_watchers`].
struct SlowRound {
    latencies: Latencies,
    readers_incomplete: usize,
    cut: u64,
    first_cut: Option<Duration>,
    last_cut: Option<Duration>,
    open_after: u64,
    rss_idle: u64,
    rss_open: u64,
    rss_peak: u64,
    rss_after: u64,
}

/// A counter or gauge of the server's `/metrics` (0 if absent).
async fn metric(http: &reqwest::Client, url: &str, series: &str) -> u64 {
    let text = match http.get(format!("{url}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

async fn slow_watchers_round(
    plan: &Plan,
    http: &reqwest::Client,
    readers: usize,
    never: usize,
) -> SlowRound {
    const CUT: &str = "krake_api_slow_clients_cut_total{reason=\"write_timeout\"}";
    let settings = ServerSettings {
        write_timeout: Some(plan.slow.write_timeout),
        send_buffer: Some(plan.slow.send_buffer),
    };
    let server = ChildServer::start_with("embedded", plan.mode, settings).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = server.sample().rss;
    let base = format!("{}{APPS}", server.url);
    let address = server.url.trim_start_matches("http://").to_owned();
    let probes = plan.slow.probes;
    let reader_path = format!("{APPS}?watch&heartbeat=0&label_selector=probe%3Dyes");
    let never_path = format!("{APPS}?watch&heartbeat=0");
    let opened: Vec<_> = futures::stream::iter(0..readers + never)
        .map(|i| {
            let path = if i < never { &never_path } else { &reader_path };
            open_raw_watch(&address, path)
        })
        .buffered(64)
        .collect()
        .await;
    let sent: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..probes).map(|_| OnceLock::new()).collect());
    let marker = b"\"name\":\"slow-p".to_vec();
    let mut stuck = Vec::with_capacity(never);
    let mut tasks = Vec::with_capacity(readers);
    for (i, opened) in opened.into_iter().enumerate() {
        let (stream, rest) = opened.expect("a watch opens");
        if i < never {
            stuck.push(stream);
            continue;
        }
        let sent = sent.clone();
        let marker = marker.clone();
        tasks.push(tokio::spawn(async move {
            read_raw_events(stream, rest, &marker, &sent, probes).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_open = server.sample().rss;

    let mut probe_body = application_body("NAME_PLACEHOLDER");
    probe_body["metadata"]["labels"] = json!({"probe": "yes"});
    let probe_body = Arc::new(serde_json::to_string(&probe_body).expect("JSON serializes"));
    let mut filler = application_body("NAME_PLACEHOLDER");
    filler["spec"]["manifest"][0]["metadata"]["annotations"] = json!({"filler": "f".repeat(8_000)});
    let filler_body = Arc::new(serde_json::to_string(&filler).expect("JSON serializes"));
    let start = tokio::time::Instant::now();
    let first_filler = Instant::now();
    let mut posts = Vec::with_capacity(2 * probes);
    let mut rss_peak = rss_open;
    let mut first_cut = None;
    let mut last_cut = None;
    let mut cut = 0;
    let mut next_sample = Instant::now();
    for index in 0..2 * probes {
        let gap = plan.slow.create_gap * u32::try_from(index).unwrap_or(u32::MAX);
        tokio::time::sleep_until(start + gap).await;
        let probe = index % 2 == 1;
        let (body, name) = if probe {
            (&probe_body, format!("slow-p{}", index / 2))
        } else {
            (&filler_body, format!("slow-f{}", index / 2))
        };
        let request = http
            .post(&base)
            .header(CONTENT_TYPE, "application/json")
            .body(body.replace("NAME_PLACEHOLDER", &name));
        let sent = sent.clone();
        posts.push(tokio::spawn(async move {
            if probe {
                let _ = sent[index / 2].set(Instant::now());
            }
            expect_ok(request.send().await).await.map(drop)
        }));
        if Instant::now() >= next_sample {
            next_sample = Instant::now() + Duration::from_millis(250);
            rss_peak = rss_peak.max(server.sample().rss);
            let now = metric(http, &server.url, CUT).await;
            if now > cut {
                first_cut.get_or_insert(first_filler.elapsed());
                last_cut = Some(first_filler.elapsed());
                cut = now;
            }
        }
    }
    let mut failed = 0;
    for post in posts {
        if !matches!(post.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "every create succeeds");
    // The cuts still to come, up to the write timeout and a margin.
    let deadline = Instant::now() + plan.slow.write_timeout + Duration::from_secs(10);
    while cut < never as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss_peak = rss_peak.max(server.sample().rss);
        let now = metric(http, &server.url, CUT).await;
        if now > cut {
            first_cut.get_or_insert(first_filler.elapsed());
            last_cut = Some(first_filler.elapsed());
            cut = now;
        }
    }
    let open_after = metric(http, &server.url, "krake_api_open_watches").await;
    let mut latencies = Vec::with_capacity(readers * probes);
    let mut readers_incomplete = 0;
    let reader_deadline = tokio::time::Instant::now() + plan.event_timeout;
    for task in tasks {
        let received = match tokio::time::timeout_at(reader_deadline, task).await {
            Ok(Ok(received)) => received,
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
        if received.len() != probes {
            readers_incomplete += 1;
        }
        latencies.extend(received.into_iter().map(|(_, _, latency)| latency));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = server.sample().rss;
    drop(stuck);
    server.stop().await;
    SlowRound {
        latencies: Latencies::new(latencies),
        readers_incomplete,
        cut,
        first_cut,
        last_cut,
        open_after,
        rss_idle,
        rss_open,
        rss_peak,
        rss_after,
    }
}

// --- load generation ---

/// Latencies of one measurement, sorted.
#[derive(Debug, Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Latencies(samples)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// The nearest-rank percentile (`p` in 0..=1); zero without samples.
    fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    fn max(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!(
            "p50 {}, p99 {}, max {} ({} samples)",
            millis(self.percentile(0.50)),
            millis(self.percentile(0.99)),
            millis(self.max()),
            self.len()
        )
    }
}

/// The outcome of [`load`].
#[derive(Debug)]
struct Load {
    throughput: Throughput,
    latencies: Latencies,
    /// Failed operations (warm-up included).
    failed: u64,
    /// The first few errors.
    errors: Vec<String>,
}

impl Load {
    /// Every operation must succeed in smoke runs; a benchmark run reports
    /// failures instead of stopping.
    fn check(&self, plan: &Plan, name: &str) {
        if self.failed == 0 {
            return;
        }
        let message = format!(
            "{name}: {} of {} operations failed, e.g. {:?}",
            self.failed,
            self.latencies.len(),
            self.errors
        );
        assert!(plan.is_bench(), "{message}");
        println!("  FAILURES {message}");
    }
}

/// Runs `operation(client, sequence)` in a loop on `clients` concurrent tasks
/// for `budget` (and at least `min_operations` times per task), after a short
/// untimed warm-up, and returns the throughput and the latency of every
/// operation.
async fn load<F, Fut>(clients: usize, budget: Duration, min_operations: u64, operation: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let operation = Arc::new(operation);
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let operation = operation.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut failed = 0u64;
            let mut note = |result: Result<(), String>| {
                if let Err(error) = result {
                    failed += 1;
                    if errors.len() < KEPT_ERRORS {
                        errors.push(error);
                    }
                }
            };
            let mut seq = 0u64;
            for _ in 0..WARM_UP {
                note(operation(client, seq).await);
                seq += 1;
            }
            barrier.wait().await;
            let start = Instant::now();
            let mut latencies = Vec::new();
            let mut done = 0u64;
            while start.elapsed() < budget || done < min_operations {
                let sent = Instant::now();
                let result = operation(client, seq).await;
                latencies.push(sent.elapsed());
                note(result);
                seq += 1;
                done += 1;
            }
            (start, Instant::now(), latencies, failed, errors)
        }));
    }
    let mut first_start: Option<Instant> = None;
    let mut last_end: Option<Instant> = None;
    let mut all = Vec::new();
    let mut failed = 0;
    let mut errors = Vec::new();
    for task in tasks {
        let (start, end, latencies, task_failed, task_errors) =
            task.await.expect("a load task finishes");
        first_start = Some(first_start.map_or(start, |s| s.min(start)));
        last_end = Some(last_end.map_or(end, |e| e.max(end)));
        all.extend(latencies);
        failed += task_failed;
        errors.extend(task_errors);
    }
    errors.truncate(KEPT_ERRORS);
    let elapsed = match (first_start, last_end) {
        (Some(start), Some(end)) => end.duration_since(start),
        _ => Duration::ZERO,
    };
    Load {
        throughput: Throughput {
            operations: all.len() as u64,
            elapsed,
        },
        latencies: Latencies::new(all),
        failed,
        errors,
    }
}

// --- helpers ---

/// An Application as a user submits it: a Deployment and a Service, label
/// constraints, no server-set fields.
fn application_body(name: &str) -> Value {
    json!({
        "api": "kubernetes", "kind": "Application",
        "metadata": {"name": name, "labels": {"tier": "web", "env": "prod"}},
        "spec": {
            "manifest": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
                 "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "shop"}},
                    "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": [
                        {"name": "shop", "image": "registry.example/shop:1.2.3",
                         "ports": [{"containerPort": 8080}]}]}}}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"},
                 "spec": {"type": "NodePort", "selector": {"app": "shop"}, "ports": [{"port": 8080}]}},
            ],
            "constraints": {"cluster": {"labels": ["location in (DE, AT, CH)"],
                "custom_resources": [], "metrics": []}, "migration": true},
            "hooks": [],
        },
    })
}

/// The store key of the application `name` in the benchmark namespace.
fn application_key(name: &str) -> String {
    Application::INFO
        .key(Some(NAMESPACE), name)
        .expect("a valid key")
}

/// The stored JSON of the application `name`.
async fn stored_value(server: &TestServer, name: &str) -> Vec<u8> {
    server
        .state()
        .store()
        .get(&application_key(name))
        .await
        .expect("the store answers")
        .expect("the application is stored")
        .value
        .to_vec()
}

/// POSTs `body` to `url`; panics unless the answer is 200. Returns the body.
async fn post_ok(http: &reqwest::Client, url: &str, body: &Value) -> Vec<u8> {
    expect_ok(http.post(url).json(body).send().await)
        .await
        .expect("the create succeeds")
}

/// The body of a 200 answer, or an error describing the answer.
async fn expect_ok(response: Result<reqwest::Response, reqwest::Error>) -> Result<Vec<u8>, String> {
    let response = response.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if status == reqwest::StatusCode::OK {
        Ok(body.to_vec())
    } else {
        Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
    }
}

fn print_latencies(name: &str, measured: &Latencies, baseline_name: &str, baseline: &Latencies) {
    println!(
        "  latency {name}: {} | {baseline_name}: {}",
        measured.summary(),
        baseline.summary()
    );
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(latencies.percentile(0.50), Duration::from_millis(50));
        assert_eq!(latencies.percentile(0.99), Duration::from_millis(99));
        assert_eq!(latencies.max(), Duration::from_millis(100));
        assert_eq!(Latencies::default().percentile(0.99), Duration::ZERO);
    }

    #[test]
    fn event_index_reads_the_label() {
        let marker = b"\"bench-event\":\"r1-e";
        let line =
            br#"{"type":"MODIFIED","object":{"metadata":{"labels":{"bench-event":"r1-e17"}}}}"#;
        assert_eq!(event_index(line, marker), Some(17));
        assert_eq!(event_index(b"{}", marker), None);
    }
}
