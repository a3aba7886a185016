//! The `krake-server` binary: serving, graceful shutdown on SIGTERM, data
//! kept across restarts, and one-line errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(data_dir: &std::path::Path) -> Server {
    start_with(data_dir, &[]).await
}

/// Starts krake-server on the embedded store in `data_dir`, with `extra`
/// arguments.
async fn start_with(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(extra)
        .env("KRAKE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = reqwest::get(format!("{url}/readyz")).await {
            if response.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "krake-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, url }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stops_gracefully_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let http = reqwest::Client::new();
    let body = json!({"metadata": {"name": "kept"}, "rules": []});
    let created = http
        .post(format!("{}/core/roles", server.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let watch = http
        .get(format!("{}/core/roles?watch&heartbeat=1", server.url))
        .send()
        .await
        .unwrap();
    let mut watch_body = watch.bytes_stream();

    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "krake-server did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    // The open watch was ended cleanly by the server.
    use futures::StreamExt;
    let mut ended = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(2), watch_body.next()).await {
            Ok(None) | Ok(Some(Err(_))) => {
                ended = true;
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Err(_) => break,
        }
    }
    assert!(ended, "the watch stream was not ended");

    let server = start(dir.path()).await;
    let kept: Value = reqwest::get(format!("{}/core/roles/kept", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kept["metadata"]["name"], "kept");
}

#[test]
fn bad_configuration_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.yaml");
    std::fs::write(&file, "authorization: sometimes\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("krake-server: unsupported configuration: authorization"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(["--port", "http"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "clap usage error");
}

/// The README's TLS + RBAC set-up, end to end: certificates, `bootstrap`
/// of the base roles (idempotent, and a bad file writes nothing), then the
/// server with TLS, client certificates and RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_rbac_set_up_end_to_end() {
    use krake_api::testing::pki::TestCa;

    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("krake CA");
    let files = ca.server_files(dir.path());
    let port = free_port();
    let config = dir.path().join("api.yaml");
    std::fs::write(
        &config,
        format!(
            "port: {port}\nstore: {{data_dir: {data}}}\ntls:\n  enabled: true\n  cert: {cert}\n  key: {key}\n  client_ca: {ca}\n\
             authentication:\n  allow_anonymous: false\nauthorization: RBAC\n",
            data = dir.path().join("data").display(),
            cert = files.cert.display(),
            key = files.key.display(),
            ca = files.client_ca.as_ref().unwrap().display(),
        ),
    )
    .unwrap();
    let krake_server = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_krake-server"));
        command
            .args(["--config", config.to_str().unwrap()])
            .env("KRAKE_LOG_LEVEL", "warn");
        command
    };
    let base_roles = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/base_roles.yaml");

    let output = krake_server()
        .args(["bootstrap", base_roles])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("Role role:system: created"), "{stdout}");
    let again = krake_server()
        .args(["bootstrap", base_roles])
        .output()
        .unwrap();
    let again = String::from_utf8(again.stdout).unwrap();
    assert!(
        !again.contains("created"),
        "bootstrap is idempotent: {again}"
    );
    assert!(again.contains("Role role:system: exists"), "{again}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "api: core\nkind: Role\nmetadata: {name: fine}\nrules: []\n---\napi: core\nkind: Role\nmetadata: {name: 'not fine!'}\nrules: []\n",
    )
    .unwrap();
    let output = krake_server()
        .args(["bootstrap", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("document 2"), "{stderr}");

    let child = krake_server()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        url: format!("https://localhost:{port}"),
    };
    let client = |user: Option<&str>| ca.http_client(user.map(|user| ca.client(user)).as_ref());
    let admin = client(Some("system:admin"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin
        .get(format!("{}/readyz", server.url))
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "krake-server did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let me: Value = admin
        .get(format!("{}/me", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"user": "system:admin", "roles": ["role:system"]})
    );
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(
        status(client(None).get(format!("{}/core/roles", server.url))).await,
        401
    );
    assert_eq!(
        status(client(Some("system:scheduler")).get(format!("{}/core/roles", server.url))).await,
        403
    );
    assert_eq!(
        status(admin.get(format!("{}/core/roles/fine", server.url))).await,
        404,
        "the bad file wrote nothing"
    );
    let app = json!({"metadata": {"name": "web"}, "spec": {"manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}}], "constraints": {"cluster": {}}}});
    assert_eq!(
        status(
            admin
                .post(format!(
                    "{}/kubernetes/namespaces/prod/applications",
                    server.url
                ))
                .json(&app)
        )
        .await,
        200
    );
    assert_eq!(
        status(client(Some("system:scheduler")).get(format!(
            "{}/kubernetes/namespaces/prod/applications/web",
            server.url
        )))
        .await,
        200
    );
}

/// A watcher that never reads is cut once the server's writes to it stay
/// blocked for `connections.write_timeout`, and counted in `/metrics`; a
/// watcher that reads keeps every event and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("api.yaml");
    std::fs::write(
        &config,
        "connections:\n  write_timeout: 1\n  send_buffer_kib: 16\n",
    )
    .unwrap();
    let server = start_with(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--no-gc",
            "--no-scheduler",
        ],
    )
    .await;
    let address = server.url.trim_start_matches("http://").to_owned();

    // A raw watch whose client never reads: small receive buffer too.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket.connect(address.parse().unwrap()).await.unwrap();
    stuck
        .write_all(format!("GET /core/roles?watch HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // A watcher that reads everything.
    let http = reqwest::Client::new();
    let reading = http
        .get(format!("{}/core/roles?watch", server.url))
        .send()
        .await
        .unwrap();
    let mut reading = reading.bytes_stream();
    let counted = tokio::spawn(async move {
        use futures::StreamExt;
        let mut lines = 0usize;
        let mut bytes = 0usize;
        while let Some(Ok(chunk)) = reading.next().await {
            bytes += chunk.len();
            lines += chunk.iter().filter(|b| **b == b'\n').count();
            if lines >= 200 {
                break;
            }
        }
        (lines, bytes)
    });

    // 200 roles of about 8 kB each: 1.6 MB the stuck client never takes.
    let filler = "x".repeat(8_000);
    for i in 0..200 {
        let body = json!({
            "metadata": {"name": format!("r{i:03}"), "labels": {}, "annotations": {"fill": filler}},
            "rules": [],
        });
        let response = http
            .post(format!("{}/core/roles", server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let (lines, bytes) = tokio::time::timeout(Duration::from_secs(30), counted)
        .await
        .expect("the reading watcher gets every event")
        .unwrap();
    assert!(
        lines >= 200,
        "the reading watcher got {lines} lines ({bytes} bytes)"
    );

    let started = Instant::now();
    loop {
        let metrics = http
            .get(format!("{}/metrics", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let cut: f64 = metrics
            .lines()
            .filter(|l| {
                l.starts_with("krake_api_slow_clients_cut_total{") && l.contains("write_timeout")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if cut >= 1.0 {
            eprintln!(
                "stuck watcher cut {:?} after the last create",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stuck watcher was not cut; metrics:\n{}",
            metrics
                .lines()
                .filter(|l| l.contains("slow_clients"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stuck client's connection is closed: reading it to the end finishes.
    let mut drained = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut drained)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the server closed the stuck connection"
    );
    assert!(
        drained.len() < 1_600_000,
        "the stuck client got only part of the stream ({} bytes)",
        drained.len()
    );
    // And the server still answers.
    let list = http
        .get(format!("{}/core/roles", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
}
