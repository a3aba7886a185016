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
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args([
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
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
