//! Load and bad input against a real server (in process, embedded store).
//!
//! - Bad input: a 100 MB body, deeply nested JSON, invalid UTF-8 (body,
//!   path and query), huge label selectors, page sizes and heartbeats each
//!   get a 4xx answer with Krake's problem body, and the server keeps
//!   answering.
//! - Slow watchers: many watch streams, a share of them on clients that
//!   never read; those are cut (write timeout, counted in `/metrics`),
//!   the others keep receiving every event with a bounded latency and are
//!   never cut, idle ones keep their heartbeats; over TLS as over plain
//!   HTTP. 1,000 watchers (the benchmark `slow_watchers` runs 5,000) need
//!   about 2,300 open files in this process: the test raises the soft
//!   limit to the hard one if it is lower.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use krake_api::ApiConfig;
use krake_api::testing::TestServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const APPS: &str = "/kubernetes/namespaces/testing/applications";

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    /// Asserts a 4xx answer with Krake's problem body of the same status.
    #[track_caller]
    fn assert_problem(&self, what: &str) -> Value {
        assert!(
            (400..500).contains(&self.status),
            "{what}: status {} ({})",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "{what}: content type {:?}, body {}",
            self.content_type,
            String::from_utf8_lossy(&self.body)
        );
        let problem: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("{what}: the body is not JSON ({err})"));
        assert_eq!(problem["status"], self.status, "{what}: {problem}");
        assert!(problem["type"].is_string(), "{what}: {problem}");
        assert!(problem["detail"].is_string(), "{what}: {problem}");
        problem
    }
}

/// Sends `head` (the request line and headers, without the blank line)
/// and `body` on a fresh connection, reading the answer while the body is
/// written (a server may answer before it read it all), and returns the
/// answer.
async fn raw(address: &str, head: &str, body: Vec<u8>) -> Answer {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let request = format!("{head}\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let write = async move {
        writer.write_all(request.as_bytes()).await?;
        for chunk in body.chunks(1 << 20) {
            writer.write_all(chunk).await?;
        }
        writer.flush().await?;
        // Keep the write half open until the answer is read.
        Ok::<_, std::io::Error>(writer)
    };
    let read = async move {
        let mut received = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(err) => {
                    if received.is_empty() {
                        panic!("no answer: {err}");
                    }
                    break;
                }
            }
            if complete(&received) {
                break;
            }
        }
        received
    };
    let exchange = async { tokio::join!(write, read) };
    let (_written, received) = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within 30 s to {head}"));
    parse_answer(&received)
}

/// True once `received` holds a whole answer with a `Content-Length`.
fn complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    if head.contains("content-type: application/x-ndjson") {
        // A watch stream: its head is the answer.
        return true;
    }
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|length| received.len() >= end + 4 + length)
}

fn parse_answer(received: &[u8]) -> Answer {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer head in {:?}", String::from_utf8_lossy(received)));
    let head = String::from_utf8_lossy(&received[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let header = |name: &str| {
        head.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let content_type = header("content-type");
    let mut body = received[end + 4..].to_vec();
    if header("transfer-encoding").eq_ignore_ascii_case("chunked") {
        body = dechunk(&body);
    }
    Answer {
        status,
        content_type,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..end]).unwrap().trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

fn address(server: &TestServer) -> String {
    server.url().trim_start_matches("http://").to_owned()
}

fn application(name: &str) -> Value {
    json!({
        "api": "kubernetes",
        "kind": "Application",
        "metadata": {"name": name, "namespace": "testing", "labels": {"app": name}},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}],
            "constraints": {"cluster": {}},
        },
    })
}

/// The server still lists and creates.
async fn assert_responsive(server: &TestServer, name: &str) {
    let address = address(server);
    let started = Instant::now();
    let body = serde_json::to_vec(&application(name)).unwrap();
    let answer = raw(
        &address,
        &format!(
            "POST {APPS} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            body.len()
        ),
        body,
    )
    .await;
    assert_eq!(
        answer.status,
        200,
        "create {name}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let answer = raw(&address, &format!("GET {APPS}/{name} HTTP/1.1"), Vec::new()).await;
    assert_eq!(answer.status, 200);
    println!(
        "  responsive after it: create and read of {name} in {:?}",
        started.elapsed()
    );
}

fn post_head(path: &str, length: usize) -> String {
    format!("POST {path} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {length}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_gets_413_and_the_server_stays_up() {
    let server = TestServer::embedded().await;
    let address = address(&server);
    // 100 MB of a JSON string, with its length announced.
    let mut body = Vec::with_capacity(100 << 20);
    body.extend_from_slice(b"{\"metadata\": {\"name\": \"big\"}, \"x\": \"");
    body.resize((100 << 20) - 2, b'a');
    body.extend_from_slice(b"\"}");
    let started = Instant::now();
    let answer = raw(&address, &post_head(APPS, body.len()), body).await;
    println!("100 MB body: {} in {:?}", answer.status, started.elapsed());
    assert_eq!(answer.status, 413);
    answer.assert_problem("100 MB body");
    // Chunked, without a length: cut at the limit just the same.
    let mut chunked = Vec::new();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 1 << 20).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 1 << 20));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(
        &address,
        &format!(
            "POST {APPS} HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
        ),
        chunked,
    )
    .await;
    assert_eq!(answer.status, 413);
    answer.assert_problem("20 MB chunked body");
    assert_responsive(&server, "after-big-body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_gets_a_problem() {
    let server = TestServer::embedded().await;
    let address = address(&server);
    // Nested arrays as the whole body, and nested objects inside a free-form
    // field (the manifest), 100,000 levels deep and just past serde_json's
    // limit of 128.
    for depth in [100_000usize, 200, 129] {
        let whole = format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes();
        let answer = raw(&address, &post_head(APPS, whole.len()), whole).await;
        answer.assert_problem(&format!("{depth} nested arrays"));
        let mut nested = String::new();
        for _ in 0..depth {
            nested.push_str("{\"a\":");
        }
        nested.push('1');
        nested.push_str(&"}".repeat(depth));
        let body = format!(
            r#"{{"api":"kubernetes","kind":"Application","metadata":{{"name":"deep"}},"spec":{{"manifest":[{nested}]}}}}"#
        )
        .into_bytes();
        let answer = raw(&address, &post_head(APPS, body.len()), body.clone()).await;
        answer.assert_problem(&format!("manifest {depth} levels deep"));
        let answer = raw(
            &address,
            &format!(
                "PUT {APPS}/deep HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
                body.len()
            ),
            body,
        )
        .await;
        answer.assert_problem(&format!("update {depth} levels deep"));
    }
    assert_responsive(&server, "after-deep-json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_gets_a_problem() {
    let server = TestServer::embedded().await;
    let address = address(&server);
    let mut body = br#"{"api":"kubernetes","kind":"Application","metadata":{"name":"bad"#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(br#""},"spec":{"manifest":[]}}"#);
    let answer = raw(&address, &post_head(APPS, body.len()), body).await;
    answer.assert_problem("invalid UTF-8 in the body");
    for path in [
        format!("{APPS}/%FF%FE"),
        "/kubernetes/namespaces/%C3%28/applications".to_owned(),
        format!("{APPS}?label_selector=%FF%FE"),
        format!("{APPS}?watch&heartbeat=%FF"),
        format!("{APPS}?limit=%C3%28"),
        format!("{APPS}?continue=%FF"),
        format!("{APPS}?resource_version=%FF&watch"),
    ] {
        let answer = raw(&address, &format!("GET {path} HTTP/1.1"), Vec::new()).await;
        answer.assert_problem(&format!("GET {path}"));
    }
    // Stray percent signs are read leniently (as literal text): any answer
    // but a 5xx.
    for path in [
        format!("{APPS}/%"),
        format!("{APPS}?%=%"),
        format!("{APPS}?limit=%"),
    ] {
        let answer = raw(&address, &format!("GET {path} HTTP/1.1"), Vec::new()).await;
        assert!(answer.status < 500, "GET {path}: {answer:?}");
        if answer.status >= 400 {
            answer.assert_problem(&format!("GET {path}"));
        }
    }
    // Raw bytes that are not UTF-8 in the request line.
    let answer = raw(
        &address,
        &String::from_utf8_lossy(b"GET /kubernetes/namespaces/testing/applications/\xff HTTP/1.1"),
        Vec::new(),
    )
    .await;
    assert!((400..500).contains(&answer.status), "{answer:?}");
    assert_responsive(&server, "after-bad-utf8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_parameters_get_a_problem() {
    let server = TestServer::embedded().await;
    let address = address(&server);
    assert_responsive(&server, "before-huge").await;
    let many = (0..4_000)
        .map(|i| format!("k{i}%3Dv{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let long_value = format!("app%3D{}", "v".repeat(60_000));
    let cases = [
        (
            "4,000 label constraints",
            format!("{APPS}?label_selector={many}"),
        ),
        (
            "a 60 kB label value",
            format!("{APPS}?label_selector={long_value}"),
        ),
        (
            "a watch with 4,000 label constraints",
            format!("{APPS}?watch&label_selector={many}"),
        ),
        (
            "a page size past u64",
            format!("{APPS}?limit=99999999999999999999999"),
        ),
        ("a negative page size", format!("{APPS}?limit=-1")),
        ("a negative heartbeat", format!("{APPS}?watch&heartbeat=-1")),
        (
            "a resource version past i64",
            format!("{APPS}?watch&resource_version=99999999999999999999"),
        ),
        (
            "a negative resource version",
            format!("{APPS}?watch&resource_version=-5"),
        ),
        (
            "a garbage continue token",
            format!("{APPS}?limit=1&continue=AAAA"),
        ),
        (
            "a continue token from the future",
            format!("{APPS}?limit=1&continue={}", continue_token(i64::MAX, "/x")),
        ),
        (
            "a continue token at a negative revision",
            format!("{APPS}?limit=1&continue={}", continue_token(-1, "/x")),
        ),
        ("a 10 kB name", format!("{APPS}/{}", "n".repeat(10_000))),
    ];
    for (what, path) in &cases {
        let started = Instant::now();
        let answer = raw(&address, &format!("GET {path} HTTP/1.1"), Vec::new()).await;
        println!("{what}: {} in {:?}", answer.status, started.elapsed());
        answer.assert_problem(what);
    }
    // A huge heartbeat is no heartbeat (not an overflow of the clock).
    for heartbeat in ["9223372036854775807", "1000000000000"] {
        let path = format!("{APPS}?watch&heartbeat={heartbeat}");
        let answer = raw(&address, &format!("GET {path} HTTP/1.1"), Vec::new()).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(answer.content_type, "application/x-ndjson");
    }
    // A huge page size is a page size like any other.
    let answer = raw(
        &address,
        &format!("GET {APPS}?limit=1000000000000 HTTP/1.1"),
        Vec::new(),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let list: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_responsive(&server, "after-huge").await;
}

fn continue_token(revision: i64, key: &str) -> String {
    krake_api::pagination::ContinueToken {
        revision,
        last_key: key.to_owned(),
    }
    .encode()
}

// --- slow watchers ---

/// Watchers that never read, of [`WATCHERS`].
const SLOW: usize = 200;
/// The kernel send buffer of the test server's connections.
const SEND_BUFFER: usize = 32 * 1024;
/// Watchers that read and get no events (only heartbeats, every second).
const IDLE: usize = 100;
/// Every watcher (the rest read every event of the probes).
const WATCHERS: usize = 1_000;
/// The write timeout of the test server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The resident memory of this process (server and clients), in MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Raises the soft limit of open files to the hard limit (both ends of every
/// connection are in this process: about 2 per watcher).
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            println!(
                "raised the open-files soft limit from {:?} to {:?}",
                limit.current, limit.maximum
            );
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    assert!(
        now.is_none_or(|n| n >= 2 * WATCHERS as u64 + 256),
        "{WATCHERS} watchers need about {} open files; the limit is {now:?}",
        2 * WATCHERS + 256
    );
}

/// Opens a watch over a bare connection; a small receive buffer for
/// clients that will never read (so that the server's writes block soon).
async fn open_watch(
    address: std::net::SocketAddr,
    path: &str,
    small_buffer: bool,
) -> (tokio::net::TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if small_buffer {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let mut stream = socket.connect(address).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the watch closed before its head");
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                head.starts_with(b"HTTP/1.1 200"),
                "{}",
                String::from_utf8_lossy(&head)
            );
            return (stream, head.split_off(end + 4));
        }
    }
}

/// What a reading watcher saw: the arrival of every probe (by index),
/// heartbeats, and whether the server closed the stream.
#[derive(Debug, Default)]
struct Seen {
    probes: Vec<Option<Instant>>,
    heartbeats: usize,
    closed: bool,
}

/// Reads a watch until `stop`, noting probes (`"name":"probe-N"`) and
/// heartbeats (empty lines).
async fn read_watch(
    mut stream: tokio::net::TcpStream,
    rest: Vec<u8>,
    probes: usize,
    stop: tokio_util::sync::CancellationToken,
) -> Seen {
    let mut seen = Seen {
        probes: vec![None; probes],
        ..Seen::default()
    };
    let mut buffer = rest;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Lines of the chunked body: the chunk-size lines fall between them
        // and carry no name; a heartbeat chunk is "1\r\n\n\r\n".
        let mut start = 0;
        while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &buffer[start..start + end];
            start += end + 1;
            if line.is_empty() {
                seen.heartbeats += 1;
                continue;
            }
            let marker = b"\"name\":\"probe-";
            if let Some(at) = line.windows(marker.len()).position(|w| w == marker) {
                let digits: Vec<u8> = line[at + marker.len()..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .copied()
                    .collect();
                if let Ok(index) = std::str::from_utf8(&digits).unwrap().parse::<usize>() {
                    if index < probes && seen.probes[index].is_none() {
                        seen.probes[index] = Some(Instant::now());
                    }
                }
            }
        }
        buffer.drain(..start);
        let read = tokio::select! {
            _ = stop.cancelled() => return seen,
            read = stream.read(&mut chunk) => read,
        };
        match read {
            Ok(0) | Err(_) => {
                seen.closed = true;
                return seen;
            }
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// An application of about 8 kB (a ConfigMap in its manifest), `probe`
/// labelled or not.
fn sized_application(name: &str, probe: bool, bytes: usize) -> Value {
    let mut app = application(name);
    app["metadata"]["labels"] = json!({"probe": if probe { "yes" } else { "no" }});
    app["spec"]["manifest"] = json!([{
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
        "data": {"filler": "f".repeat(bytes)},
    }]);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watchers_are_cut_and_the_others_keep_up() {
    raise_open_files_limit();
    let config = ApiConfig {
        write_timeout: WRITE_TIMEOUT,
        send_buffer_bytes: Some(SEND_BUFFER),
        ..ApiConfig::default()
    };
    let server = TestServer::embedded_with(config).await;
    let address: std::net::SocketAddr = address(&server).parse().unwrap();
    let metrics = server.state().metrics().clone();
    let http = reqwest::Client::new();
    let url = format!("{}{APPS}", server.url());
    let rss_start = rss_mib();

    // Probes: 3 phases of 15, 100 ms apart; fillers (8 kB, seen only by the
    // watchers that never read) between the probes of the second phase.
    const PHASE: usize = 15;
    const PROBES: usize = 3 * PHASE;
    const FILLERS_PER_PROBE: usize = 4;
    let started = Instant::now();
    let opened: Vec<_> = futures::future::join_all((0..WATCHERS).map(|i| {
        let kind = if i < SLOW {
            0
        } else if i < SLOW + IDLE {
            1
        } else {
            2
        };
        async move {
            let watch_path = match kind {
                0 => format!("{APPS}?watch&heartbeat=0"),
                1 => format!("{APPS}?watch&heartbeat=1&label_selector=never%3Dmatches"),
                _ => format!("{APPS}?watch&heartbeat=0&label_selector=probe%3Dyes"),
            };
            (kind, open_watch(address, &watch_path, kind == 0).await)
        }
    }))
    .await;
    println!(
        "{WATCHERS} watches open in {:?} ({SLOW} never read, {IDLE} idle with 1 s heartbeats, {} read the probes); open watches {}",
        started.elapsed(),
        WATCHERS - SLOW - IDLE,
        metrics.open_watches()
    );
    assert_eq!(metrics.open_watches(), WATCHERS as i64);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut slow = Vec::new();
    let mut readers = Vec::new();
    let mut idle = Vec::new();
    for (kind, (stream, rest)) in opened {
        match kind {
            0 => slow.push(stream),
            1 => idle.push(tokio::spawn(read_watch(stream, rest, 0, stop.clone()))),
            _ => readers.push(tokio::spawn(read_watch(stream, rest, PROBES, stop.clone()))),
        }
    }
    let rss_open = rss_mib();

    let mut sent = Vec::with_capacity(PROBES);
    let mut fillers = 0;
    let mut rss_peak = rss_open;
    for index in 0..PROBES {
        if (PHASE..2 * PHASE).contains(&index) {
            for _ in 0..FILLERS_PER_PROBE {
                let response = http
                    .post(&url)
                    .json(&sized_application(
                        &format!("filler-{fillers}"),
                        false,
                        8_000,
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                fillers += 1;
            }
        }
        let at = Instant::now();
        let response = http
            .post(&url)
            .json(&sized_application(&format!("probe-{index}"), true, 100))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        sent.push(at);
        rss_peak = rss_peak.max(rss_mib());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every never-reading watcher is cut within the write timeout (and a
    // generous margin for a busy machine), and no other.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.slow_clients_cut("write_timeout") < SLOW as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_after = started.elapsed();
    // The idle watchers read heartbeats for a few seconds more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_cut = rss_mib();
    println!(
        "cut for the write timeout ({WRITE_TIMEOUT:?}): {} of {SLOW} never-reading watchers ({:?} after the watches opened); open watches now {}",
        metrics.slow_clients_cut("write_timeout"),
        cut_after,
        metrics.open_watches()
    );
    assert_eq!(metrics.slow_clients_cut("write_timeout"), SLOW as u64);
    assert_eq!(metrics.slow_clients_cut("watch_lagged"), 0);
    assert_eq!(metrics.open_watches(), (WATCHERS - SLOW) as i64);
    let exposition = metrics.encode();
    assert!(
        exposition.contains(&format!(
            "krake_api_slow_clients_cut_total{{reason=\"write_timeout\"}} {SLOW}"
        )),
        "{exposition}"
    );

    // The never-reading clients find their stream closed once they read
    // what the kernel buffered.
    let mut closed = 0;
    for mut stream in slow {
        let mut chunk = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if ended.is_ok() {
            closed += 1;
        }
    }
    assert_eq!(closed, SLOW, "every never-reading watch was closed");

    stop.cancel();
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    let mut healthy_closed = 0;
    let healthy = readers.len();
    for reader in readers {
        let seen = reader.await.unwrap();
        healthy_closed += usize::from(seen.closed);
        for (index, arrival) in seen.probes.iter().enumerate() {
            let arrival = arrival.unwrap_or_else(|| panic!("probe {index} missed"));
            latencies[index / PHASE].push(arrival.duration_since(sent[index]));
        }
    }
    let mut idle_heartbeats = Vec::new();
    let mut idle_closed = 0;
    for watcher in idle {
        let seen = watcher.await.unwrap();
        idle_closed += usize::from(seen.closed);
        idle_heartbeats.push(seen.heartbeats);
    }
    idle_heartbeats.sort_unstable();
    for (phase, name) in [
        "before the fillers",
        "while the slow watchers fill up and are cut",
        "after the cut",
    ]
    .iter()
    .enumerate()
    {
        let sorted = &mut latencies[phase];
        sorted.sort_unstable();
        println!(
            "probe latency of {healthy} reading watchers, {name}: p50 {:?}, p99 {:?}, max {:?} ({} samples)",
            percentile(sorted, 0.5),
            percentile(sorted, 0.99),
            sorted.last().copied().unwrap_or_default(),
            sorted.len()
        );
        // Generous: the whole suite shares 2 cores.
        assert!(
            percentile(sorted, 0.99) < Duration::from_secs(10),
            "{name}: p99 {:?}",
            percentile(sorted, 0.99)
        );
    }
    println!(
        "idle watchers: heartbeats min {} median {} over {:?}; RSS of the test process (server and clients) {rss_start:.1} MiB at start, {rss_open:.1} MiB with {WATCHERS} watches open, {rss_peak:.1} MiB peak during the load ({fillers} fillers of 8 kB), {rss_cut:.1} MiB after the cut",
        idle_heartbeats[0],
        idle_heartbeats[idle_heartbeats.len() / 2],
        started.elapsed(),
    );
    assert_eq!(healthy_closed, 0, "a reading watcher was closed");
    assert_eq!(idle_closed, 0, "an idle watcher was closed");
    assert!(
        idle_heartbeats[0] >= 3,
        "idle watchers got {idle_heartbeats:?} heartbeats"
    );
    assert!(
        rss_peak - rss_start < 512.0,
        "memory grew by {} MiB",
        rss_peak - rss_start
    );
}

/// Over TLS too: a client that never reads is cut (the write timeout wraps
/// the TLS listener's connections), one that reads is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_tls_watcher_is_cut() {
    use krake_api::testing::pki::TestCa;
    use rustls::pki_types::pem::PemObject;

    let ca = TestCa::new("robustness");
    let config = ApiConfig {
        write_timeout: Duration::from_secs(1),
        send_buffer_bytes: Some(16 * 1024),
        ..ApiConfig::default()
    };
    let (store, backing) = krake_api::testing::embedded_store();
    let server =
        TestServer::start_with(store, config, backing, Some(ca.server_config().unwrap())).await;
    let metrics = server.state().metrics().clone();
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // A TLS client that reads the answer's head and nothing more.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client_config));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stuck = connector.connect(name, tcp).await.unwrap();
    stuck
        .write_all(
            format!("GET {APPS}?watch&heartbeat=0 HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stuck.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    // A reading watcher through the ordinary client (of the probes only,
    // so that nothing it is sent could ever block, however busy the
    // machine).
    let http = ca.http_client(None);
    let url = format!("{}{APPS}", server.url());
    let mut reading = http
        .get(format!(
            "{url}?watch&heartbeat=1&label_selector=probe%3Dyes"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(reading.status(), 200);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(chunk)) = reading.chunk().await {
            seen.extend_from_slice(&chunk);
            if String::from_utf8_lossy(&seen).contains("tls-probe") {
                return true;
            }
        }
        false
    });

    let started = Instant::now();
    let mut fillers = 0;
    while metrics.slow_clients_cut("write_timeout") == 0
        && started.elapsed() < Duration::from_secs(40)
    {
        let response = http
            .post(&url)
            .json(&sized_application(
                &format!("tls-filler-{fillers}"),
                false,
                8_000,
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        fillers += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "TLS: the never-reading watcher was cut after {fillers} fillers of 8 kB, {:?}",
        started.elapsed()
    );
    assert_eq!(metrics.slow_clients_cut("write_timeout"), 1);
    // The reading watcher is still open; the stuck one is closed.
    assert_eq!(metrics.open_watches(), 1);
    let mut rest = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stuck.read(&mut rest).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stuck TLS watch was closed");
    let response = http
        .post(&url)
        .json(&sized_application("tls-probe", true, 100))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the reading watcher gets the probe")
        .unwrap();
    assert!(got, "the reading watcher's stream ended before the probe");
}
