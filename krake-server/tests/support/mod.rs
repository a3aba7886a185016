//! What the process-level tests of `krake-server` share: starting the
//! binary as an API replica on a free port.

#![allow(dead_code)]

pub mod krake;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use krake_testkit::process::{ChildProcess, free_ports};

/// The flags that leave the controllers out: an API replica.
pub const API_ONLY: [&str; 1] = ["--no-controllers"];

/// Starts `krake-server` with `args` (its store: `--data-dir` or `--etcd`)
/// and [`API_ONLY`] on a free loopback port, logging to `log`, and waits
/// until `/readyz` answers; tries other ports if the one picked was taken
/// meanwhile. The child and its URL.
///
/// # Panics
///
/// If it does not become ready within 20 s.
pub async fn start_api(args: &[&str], log: &Path) -> (ChildProcess, String) {
    let mut last = String::new();
    for _ in 0..5 {
        let [port] = free_ports().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_krake-server"));
        command
            .args(args)
            .args(["--port", &port.to_string()])
            .args(API_ONLY)
            .env("KRAKE_LOG_LEVEL", "warn");
        let mut child = ChildProcess::spawn("krake-server", command, log).unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let ready = child
            .wait_ready(Duration::from_secs(20), || {
                let request = http.get(format!("{url}/readyz")).send();
                async move { request.await.is_ok_and(|r| r.status().is_success()) }
            })
            .await;
        match ready {
            Ok(()) => return (child, url),
            Err(err) if err.is_port_taken() => last = err.to_string(),
            Err(err) => panic!("krake-server did not start: {err}"),
        }
    }
    panic!("no free port for krake-server: {last}");
}
