//! `krake-server` replicas on a real etcd cluster: the etcd leader killed
//! under creates through two API replicas, etcd stopped and restarted under
//! a server, TLS to etcd with a client certificate.
//!
//! Each test starts its own etcd cluster (etcd's default timing) and
//! servers, and takes 3 to 15 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use krake_testkit::etcd_cluster::EtcdCluster;
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A krake-server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The end of the server's log.
    fn log_tail(&self) -> String {
        krake_testkit::process::log_tail(&self.log)
    }
}

/// Starts an API replica (no controllers) on `endpoints` with `extra`
/// arguments, logging to a file in `dir`, and waits until it is ready
/// (`/readyz`: it reaches etcd).
async fn start_server(dir: &Path, name: &str, endpoints: &[String], extra: &[&str]) -> Server {
    start_server_until(dir, name, endpoints, extra, "/readyz").await
}

/// [`start_server`], waiting until `path` answers 2xx.
async fn start_server_until(
    dir: &Path,
    name: &str,
    endpoints: &[String],
    extra: &[&str],
    path: &str,
) -> Server {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(["--etcd", &endpoints.join(",")])
        .args(["--port", &port.to_string()])
        .arg("--no-controllers")
        .args(extra)
        .env("KRAKE_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(format!("{}{path}", server.url)).await {
            if response.status().is_success() {
                return server;
            }
        }
        assert!(
            Instant::now() < deadline,
            "krake-server did not become ready:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP request's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    name: String,
    sent: Instant,
    done: Instant,
    status: u16,
    /// The problem body of an error (checked to be Krake's).
    body: Value,
}

/// Creates the role `name` through `url`.
async fn create_role(http: &reqwest::Client, url: &str, name: &str) -> Outcome {
    let sent = Instant::now();
    let response = http
        .post(format!("{url}/core/roles"))
        .json(&json!({"metadata": {"name": name}, "rules": []}))
        .send()
        .await
        .expect("the API replica answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            content_type.starts_with("application/problem+json"),
            "{status} {content_type} {body}"
        );
    }
    Outcome {
        name: name.to_owned(),
        sent,
        done: Instant::now(),
        status,
        body,
    }
}

/// The names of every role, read through `url`.
async fn role_names(http: &reqwest::Client, url: &str) -> HashSet<String> {
    let list: Value = http
        .get(format!("{url}/core/roles"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|role| role["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that `outcome` is a 503 with Krake's problem body.
fn assert_unavailable_problem(outcome: &Outcome) {
    assert_eq!(outcome.status, 503, "{outcome:?}");
    assert_eq!(outcome.body["status"], 503, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_killed_under_two_api_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(3)
        .await
        .expect("a 3-member etcd cluster");
    let endpoints = cluster.endpoints();
    let a = start_server(dir.path(), "a", &endpoints, &[]).await;
    let b = start_server(dir.path(), "b", &endpoints, &[]).await;
    let urls = [a.url.clone(), b.url.clone()];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Four clients, each alternating between the replicas, for 10 s.
    let begin = Instant::now();
    let stop = begin + Duration::from_secs(10);
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut n = 0;
                while Instant::now() < stop {
                    let url = &urls[(client + n) % 2];
                    let outcome = create_role(&http, url, &format!("r{client}-{n:05}")).await;
                    n += 1;
                    if outcome.status >= 400 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    outcomes.push(outcome);
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader = cluster.wait_leader().await.unwrap();
    cluster.kill(leader);
    // After the process was reaped: no answer from it after this.
    let killed = Instant::now();
    eprintln!("killed etcd leader {leader} at {:?}", killed - begin);

    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let mut acks: Vec<Instant> = outcomes
        .iter()
        .filter(|outcome| outcome.status == 200)
        .map(|outcome| outcome.done)
        .collect();
    acks.sort();
    let pause = acks.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
    // Service resumed with the first create sent after the kill and
    // acknowledged (answers just after the kill may be from before it).
    let resumed = outcomes
        .iter()
        .filter(|outcome| outcome.status == 200 && outcome.sent > killed)
        .map(|outcome| outcome.done)
        .min()
        .expect("creates resumed after the kill");
    let failures: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.status != 200)
        .collect();
    eprintln!(
        "WRITE PAUSE {pause:?}; first create acknowledged {:?} after the kill; {} creates \
         acknowledged, {} failed",
        resumed - killed,
        acks.len(),
        failures.len()
    );
    for failure in &failures {
        eprintln!(
            "  {} sent {:?} after the kill, after {:?}: {}",
            failure.status,
            failure.sent.saturating_duration_since(killed),
            failure.done - failure.sent,
            failure.body
        );
        // Only 503 (never 409 from a create applied twice), and only
        // during the election.
        assert_unavailable_problem(failure);
        assert!(
            failure.sent < resumed,
            "a create sent after creates resumed failed: {failure:?}"
        );
    }
    assert!(pause < Duration::from_secs(10), "creates paused {pause:?}");
    assert!(acks.len() > 100, "only {} creates", acks.len());

    // Every acknowledged create is readable, through either replica.
    for url in &urls {
        let names = role_names(&http, url).await;
        for outcome in outcomes.iter().filter(|outcome| outcome.status == 200) {
            assert!(
                names.contains(&outcome.name),
                "{} was acknowledged but is not listed by {url}",
                outcome.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_and_restarted_under_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = EtcdCluster::start(1).await.expect("etcd");
    let server = start_server(dir.path(), "server", &cluster.endpoints(), &[]).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    assert_eq!(create_role(&http, &server.url, "before").await.status, 200);

    cluster.kill(0);
    // 503 with a problem body while etcd is down, for reads and writes.
    for round in 0..3 {
        let outcome = create_role(&http, &server.url, &format!("during-{round}")).await;
        eprintln!(
            "create during the outage: {} after {:?}",
            outcome.status,
            outcome.done - outcome.sent
        );
        assert_unavailable_problem(&outcome);
        assert!(outcome.done - outcome.sent < Duration::from_secs(7));
        let sent = Instant::now();
        let response = http
            .get(format!("{}/core/roles/before", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 503, "{body}");
        eprintln!("read during the outage: 503 after {:?}", sent.elapsed());
    }

    cluster.restart(0).await.unwrap();
    let back = Instant::now();
    loop {
        let outcome = create_role(&http, &server.url, "after").await;
        if outcome.status == 200 {
            break;
        }
        assert_unavailable_problem(&outcome);
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no service 10 s after etcd was back:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "SERVICE BACK {:?} after etcd was healthy again",
        back.elapsed()
    );
    let names = role_names(&http, &server.url).await;
    assert!(
        names.contains("before") && names.contains("after"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_etcd_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = EtcdCluster::start_tls(1).await.expect("etcd with TLS");
    let tls = cluster.tls().unwrap();
    let (ca, cert, key) = (
        tls.ca_file.to_str().unwrap(),
        tls.client_cert_file.to_str().unwrap(),
        tls.client_key_file.to_str().unwrap(),
    );
    let http = reqwest::Client::new();

    let server = start_server(
        dir.path(),
        "with-cert",
        &cluster.endpoints(),
        &["--etcd-ca", ca, "--etcd-cert", cert, "--etcd-key", key],
    )
    .await;
    assert_eq!(
        create_role(&http, &server.url, "over-tls").await.status,
        200
    );
    assert!(role_names(&http, &server.url).await.contains("over-tls"));

    // The same in a configuration file.
    let config = dir.path().join("api.yaml");
    std::fs::write(
        &config,
        format!(
            "etcd:\n  endpoints: [{}]\n  ca_cert: {ca}\n  client_cert: {cert}\n  client_key: {key}\n",
            cluster.endpoint(0)
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.path().join("file.log");
    let child = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(["--config", config.to_str().unwrap()])
        .args(["--port", &port.to_string(), "--no-controllers"])
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let from_file = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    };
    let started = Instant::now();
    let names = loop {
        if let Ok(response) = http
            .get(format!("{}/core/roles", from_file.url))
            .send()
            .await
        {
            if response.status() == 200 {
                break response.json::<Value>().await.unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            from_file.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(names["items"][0]["metadata"]["name"], "over-tls");

    // Without the client certificate etcd refuses the server: 503.
    let without = start_server_until(
        dir.path(),
        "without-cert",
        &cluster.endpoints(),
        &["--etcd-ca", ca],
        "/healthz",
    )
    .await;
    let outcome = create_role(&http, &without.url, "refused").await;
    eprintln!(
        "without a client certificate: {} {}",
        outcome.status, outcome.body
    );
    assert_unavailable_problem(&outcome);

    // A bad setting is one clear line at start.
    let output = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args([
            "--etcd",
            &cluster.endpoint(0),
            "--etcd-ca",
            ca,
            "--etcd-cert",
            cert,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs its key"), "{stderr}");
}
