//! Lists of any size: over etcd (whose client refused answers over 4 MiB)
//! and over the embedded store, lists larger than 16 MB come back whole,
//! byte for byte what a list gathered at once gives, with label selectors
//! and `?limit`/`?continue` pages, and the server's memory follows the page
//! size, not the list size.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use krake_api::testing::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

const APPS: &str = "/kubernetes/namespaces/big/applications";

/// About 17 KB of JSON per application: a ConfigMap with 16 KB of data and
/// a few labels and annotations.
fn big_app(i: usize) -> Value {
    let blob: String = std::iter::repeat_n("0123456789abcdef", 1_000).collect();
    json!({
        "metadata": {
            "name": format!("app-{i:05}"),
            "labels": {"half": if i % 2 == 0 { "even" } else { "odd" }, "index": i.to_string()},
            "annotations": {"note": "x".repeat(256)},
        },
        "spec": {
            "manifest": [{
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}")},
                "data": {"blob": blob},
            }],
            "constraints": {"cluster": {}},
        },
    })
}

/// Creates `count` applications, 16 at a time.
async fn create_apps(http: &reqwest::Client, url: &str, count: usize) {
    futures::stream::iter(0..count)
        .map(|i| {
            let request = http.post(format!("{url}{APPS}")).json(&big_app(i)).send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), StatusCode::OK, "create {i}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

async fn get_bytes(http: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.bytes().await.unwrap().to_vec()
}

/// The names of a list's items, in order.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The list as the single-object answers give it: the head, then each
/// object's `GET` answer (the stored bytes with their revision), comma
/// separated.
async fn expected_list(http: &reqwest::Client, url: &str, list: &Value) -> Vec<u8> {
    let revision = list["metadata"]["resource_version"].as_str().unwrap();
    let mut expected = format!(
        r#"{{"api":"kubernetes","kind":"ApplicationList","metadata":{{"resource_version":"{revision}"}},"items":["#
    )
    .into_bytes();
    for (i, name) in names(list).iter().enumerate() {
        if i > 0 {
            expected.push(b',');
        }
        expected.extend(get_bytes(http, &format!("{url}{APPS}/{name}")).await);
    }
    expected.extend_from_slice(b"]}");
    expected
}

/// The resident set size and its peak of this process (the server runs
/// in it; etcd does not), in bytes.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Everything about one store, with `count` applications.
/// Reads the list at `url` as a stream, dropping it as it comes: its size
/// and the growth of the process's peak RSS meanwhile (`None` where
/// `/proc` does not tell).
async fn streamed_size_and_peak_growth(http: &reqwest::Client, url: &str) -> (usize, Option<u64>) {
    let before = rss();
    // Resets the peak (VmHWM) to the current RSS (Linux >= 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let size: usize = response
        .bytes_stream()
        .map_ok(|chunk| chunk.len())
        .try_fold(0, |total, len| async move { Ok(total + len) })
        .await
        .unwrap();
    let growth = match (reset, before, rss()) {
        (true, Some((before, _)), Some((_, peak))) => Some(peak.saturating_sub(before)),
        _ => None,
    };
    (size, growth)
}

async fn large_lists(mut server: TestServer, count: usize, store: &str, max_growth_percent: u64) {
    let http = reqwest::Client::new();
    let url = server.url();
    let start = Instant::now();
    create_apps(&http, &url, count).await;
    let created = start.elapsed();

    // The whole list, read as a stream and dropped as it comes, while
    // the peak RSS of the process (client and server) is watched; then
    // the same list gathered at once (one `?limit` page as large as the
    // list, as every list was answered before).
    let start = Instant::now();
    let (streamed, growth) = streamed_size_and_peak_growth(&http, &format!("{url}{APPS}")).await;
    let listed = start.elapsed();
    let start = Instant::now();
    let (gathered, gathered_growth) =
        streamed_size_and_peak_growth(&http, &format!("{url}{APPS}?limit={}", count + 1)).await;
    let gathered_in = start.elapsed();
    assert_eq!(gathered, streamed);
    if let (Some(growth), Some(gathered_growth)) = (growth, gathered_growth) {
        println!(
            "{store}: {count} applications, a list of {streamed} bytes: streamed in {listed:?} \
             with the peak RSS +{} KB; gathered at once in {gathered_in:?} with +{} KB \
             (created in {created:?})",
            growth >> 10,
            gathered_growth >> 10,
        );
        // A list gathered at once holds the whole answer (and, before
        // pages, every stored object too); a streamed one holds a page of
        // each (about a megabyte). The embedded store's own page cache
        // grows with what it reads.
        assert!(
            growth < streamed as u64 * max_growth_percent / 100,
            "the peak RSS grew by {growth} bytes for a list of {streamed} bytes"
        );
    }
    assert!(streamed > 16_000_000, "only {streamed} bytes");

    // The same list, read whole: every object, in order, byte for byte
    // the single-object answers.
    let body = get_bytes(&http, &format!("{url}{APPS}")).await;
    assert_eq!(body.len(), streamed);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let expected_names: Vec<String> = (0..count).map(|i| format!("app-{i:05}")).collect();
    assert_eq!(names(&list), expected_names);
    assert_eq!(list["api"], "kubernetes");
    assert_eq!(list["kind"], "ApplicationList");
    assert!(list["metadata"].get("continue").is_none());
    let blob = &list["items"][count - 1]["spec"]["manifest"][0]["data"]["blob"];
    assert_eq!(blob.as_str().map(str::len), Some(16_000));
    assert!(
        body == expected_list(&http, &url, &list).await,
        "the streamed list differs from the objects' own answers"
    );

    // A list gathered at once (one page as large as the list) is the same
    // bytes as the streamed one.
    let gathered = get_bytes(&http, &format!("{url}{APPS}?limit={}", count + 1)).await;
    assert!(body == gathered, "the gathered list differs");

    // Label selectors over several store pages.
    let even = get_bytes(&http, &format!("{url}{APPS}?label_selector=half%3Deven")).await;
    let even: Value = serde_json::from_slice(&even).unwrap();
    let expected_even: Vec<String> = (0..count)
        .step_by(2)
        .map(|i| format!("app-{i:05}"))
        .collect();
    assert_eq!(names(&even), expected_even);
    let one = get_bytes(
        &http,
        &format!("{url}{APPS}?label_selector=index%3D{}", count - 1),
    )
    .await;
    let one: Value = serde_json::from_slice(&one).unwrap();
    assert_eq!(names(&one), [format!("app-{:05}", count - 1)]);

    // `?limit` pages larger than a store page, then the rest of the list
    // from a continue token without a limit (streamed): together the list.
    let first = get_bytes(&http, &format!("{url}{APPS}?limit=700")).await;
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(names(&first).len(), 700);
    let token = first["metadata"]["continue"].as_str().unwrap();
    let rest = get_bytes(&http, &format!("{url}{APPS}?continue={token}")).await;
    let rest: Value = serde_json::from_slice(&rest).unwrap();
    assert!(rest["metadata"].get("continue").is_none());
    let mut paged = names(&first);
    paged.extend(names(&rest));
    assert_eq!(paged, expected_names);
    assert_eq!(
        first["metadata"]["resource_version"],
        list["metadata"]["resource_version"]
    );
    // And pages of 300 reach the end with the same items.
    let mut items = Vec::new();
    let mut next = format!("{url}{APPS}?limit=300");
    loop {
        let page: Value = serde_json::from_slice(&get_bytes(&http, &next).await).unwrap();
        assert!(names(&page).len() <= 300);
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = format!("{url}{APPS}?limit=300&continue={token}"),
            None => break,
        }
    }
    assert!(
        Value::Array(items) == list["items"],
        "the pages differ from the list"
    );

    // A list across all namespaces is as large, and whole.
    let all = get_bytes(&http, &format!("{url}/kubernetes/applications")).await;
    let all: Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(names(&all), expected_names);

    // etcd gone in the middle of a streamed list: the answer breaks off
    // (the client sees an error, never a shorter list).
    if let Some(etcd) = krake_testkit::server::etcd_of(&mut server) {
        let response = http.get(format!("{url}{APPS}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(first.len() < streamed);
        etcd.stop();
        let mut read = first.to_vec();
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => read.extend_from_slice(&chunk),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the broken list ended without an error");
        assert!(read.len() < streamed);
        assert!(serde_json::from_slice::<Value>(&read).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_over_16_mb_on_etcd() {
    let server = krake_testkit::server::etcd_server().await;
    large_lists(server, 1_000, "etcd", 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_over_16_mb_on_the_embedded_store() {
    let server = TestServer::embedded().await;
    // Looser than on etcd: the embedded store's reads go through redb's
    // page cache and the allocator's slack, which vary with the load of
    // the machine (14 MB alone, 29 MB with the whole suite running); a
    // list gathered at once still needs more than twice its size.
    large_lists(server, 1_000, "embedded", 200).await;
}

/// A short list is answered at once (with its length), as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_list_has_a_content_length() {
    let server = krake_testkit::server::etcd_server().await;
    let http = reqwest::Client::new();
    let url = server.url();
    create_apps(&http, &url, 3).await;
    let response = http.get(format!("{url}{APPS}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let length = response.content_length();
    let body = response.bytes().await.unwrap();
    assert_eq!(length, Some(body.len() as u64));
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&list), ["app-00000", "app-00001", "app-00002"]);
    assert!(body == expected_list(&http, &url, &list).await);
}

/// etcd with a client that decodes answers of at most 64 KiB, and
/// applications of about 17 KB: every page the API asks for is over the
/// limit, and the store reads it again in smaller pages, never failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_over_the_etcd_answer_limit_are_read_smaller() {
    use krake_store::etcd::{EtcdOptions, EtcdStore};
    use krake_store::{ListOptions, Store};

    let etcd = krake_testkit::etcd::EtcdProcess::start().await.unwrap();
    let options = EtcdOptions {
        request_timeout: std::time::Duration::from_secs(5),
        max_answer_bytes: 64 * 1024,
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .unwrap();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
    let server = TestServer::start(
        store.clone(),
        krake_api::ApiConfig::default(),
        krake_api::testing::Backing::Other(Box::new(etcd)),
    )
    .await;
    let http = reqwest::Client::new();
    let url = server.url();
    let count = 60;
    create_apps(&http, &url, count).await;
    let prefix = "/kubernetes/applications/big/";

    // A page of 20 (340 KB) comes back smaller, with more to read.
    let options = ListOptions {
        limit: Some(20),
        ..ListOptions::default()
    };
    let page = store.list(prefix, &options).await.unwrap();
    assert!(!page.items.is_empty() && page.items.len() < 20);
    assert!(page.more);
    // Without a limit, every key, in order, at one revision.
    let all = store.list(prefix, &ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), count);
    assert!(!all.more);
    assert!(all.items.windows(2).all(|w| w[0].key < w[1].key));
    assert!(all.items.iter().all(|kv| kv.mod_revision <= all.revision));

    // Through the API: the whole list, a selector and `?limit` pages.
    let body = get_bytes(&http, &format!("{url}{APPS}")).await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    let expected: Vec<String> = (0..count).map(|i| format!("app-{i:05}")).collect();
    assert_eq!(names(&list), expected);
    assert!(body == expected_list(&http, &url, &list).await);
    let page = get_bytes(&http, &format!("{url}{APPS}?limit=30")).await;
    let page: Value = serde_json::from_slice(&page).unwrap();
    assert_eq!(names(&page), expected[..30]);
    assert!(page["metadata"]["continue"].is_string());

    // One object larger than the limit is still read.
    let mut huge = big_app(count);
    huge["spec"]["manifest"][0]["data"]["more"] = json!("y".repeat(100_000));
    let response = http
        .post(format!("{url}{APPS}"))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = get_bytes(&http, &format!("{url}{APPS}")).await;
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(names(&list).len(), count + 1);
    let page = store
        .list(
            prefix,
            &ListOptions {
                start_after: Some(format!("{prefix}app-{:05}", count - 1)),
                limit: Some(5),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.items[0].value.len() > 100_000);
}

/// A short list has Krake's format, field for field and in Krake's order:
/// the application of Krake's captured traffic, created again, lists as
/// Krake listed it (but for its uid, times and our `resource_version`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_has_the_format_of_krakes_captured_list() {
    let transcript = krake_testkit::wire::exchange("transcript1").unwrap();
    let captured = transcript
        .split("### GET /kubernetes/namespaces/testing/applications\n")
        .nth(1)
        .and_then(|rest| rest.lines().find(|line| line.starts_with('{')))
        .unwrap();
    let captured: Value = serde_json::from_str(captured).unwrap();
    assert_eq!(captured["kind"], "ApplicationList");
    let item = &captured["items"][0];
    for server in [
        krake_testkit::server::etcd_server().await,
        TestServer::embedded().await,
    ] {
        let http = reqwest::Client::new();
        let url = server.url();
        let body = json!({"metadata": {"name": item["metadata"]["name"]}, "spec": item["spec"]});
        let response = http
            .post(format!("{url}/kubernetes/namespaces/testing/applications"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let listed = get_bytes(
            &http,
            &format!("{url}/kubernetes/namespaces/testing/applications"),
        )
        .await;
        let mut listed: Value = serde_json::from_slice(&listed).unwrap();
        // What differs by nature: our list's revision, the object's own
        // revision, uid and times.
        let metadata = listed["metadata"].as_object_mut().unwrap();
        assert!(metadata.remove("resource_version").is_some());
        let ours = listed["items"][0]["metadata"].as_object_mut().unwrap();
        assert!(ours.remove("resource_version").is_some());
        for field in ["uid", "created", "modified"] {
            ours.insert(field.to_owned(), item["metadata"][field].clone());
        }
        // Serialized, so that the order of the fields counts.
        assert_eq!(
            serde_json::to_string(&listed).unwrap(),
            serde_json::to_string(&captured).unwrap()
        );
    }
}

/// A watch of etcd from the start of 17 MB of history (what a watcher
/// resuming from an old revision replays): etcd sends up to 1,000
/// revisions per answer, once 17 MB in one answer, over the client's
/// former 4 MiB limit. With fragments, answers of 2 MiB are enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_watch_replays_17_mb_of_history() {
    use krake_store::Store;
    use krake_store::etcd::{EtcdOptions, EtcdStore};

    let etcd = krake_testkit::etcd::EtcdProcess::start().await.unwrap();
    let options = EtcdOptions {
        max_answer_bytes: 2 * 1024 * 1024,
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .unwrap();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(store);
    let server = TestServer::start(
        store.clone(),
        krake_api::ApiConfig::default(),
        krake_api::testing::Backing::Other(Box::new(etcd)),
    )
    .await;
    let http = reqwest::Client::new();
    let count = 1_000;
    create_apps(&http, &server.url(), count).await;
    let prefix = "/kubernetes/applications/big/";
    let mut watch = store.watch(prefix, Some(0)).await.unwrap();
    let mut seen = 0;
    while seen < count {
        let event = tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
            .await
            .expect("an event within 30 s")
            .expect("the watch goes on")
            .expect("no error");
        assert!(event.is_create());
        seen += 1;
    }
}
