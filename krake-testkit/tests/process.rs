//! The real-process harnesses against the installed programs: etcd (the
//! Debian package `etcd-server`, which `scripts/test` installs) and
//! Prometheus (the Debian package `prometheus`; its test passes without
//! doing anything when it is not installed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use krake_testkit::etcd::EtcdProcess;
use krake_testkit::etcd::etcd_client::GetOptions;
use krake_testkit::process::ProcessError;
use krake_testkit::prometheus::{Exporter, PrometheusProcess, PrometheusProcessError};

#[tokio::test]
async fn etcd_starts_and_answers() {
    let started = Instant::now();
    let mut etcd = EtcdProcess::start().await.expect("etcd starts");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(etcd.is_running());
    assert!(etcd.pid().is_some());
    assert_eq!(etcd.endpoint(), format!("http://{}", etcd.address()));

    let mut client = etcd.client().await.unwrap();
    let put = client.put("/k", "v", None).await.unwrap();
    let revision = put.header().unwrap().revision();
    assert_eq!(etcd.revision().await.unwrap(), revision);
    assert!(etcd.log_file().is_file());
}

#[tokio::test]
async fn etcd_stops_and_starts_again_on_the_same_port_with_its_data() {
    let mut etcd = EtcdProcess::start().await.expect("etcd starts");
    let endpoint = etcd.endpoint();
    etcd.client()
        .await
        .unwrap()
        .put("/k", "v", None)
        .await
        .unwrap();

    etcd.stop();
    assert!(!etcd.is_running());
    assert_eq!(etcd.pid(), None);

    etcd.start_again().await.expect("etcd starts again");
    assert!(etcd.is_running());
    assert_eq!(etcd.endpoint(), endpoint);
    let response = etcd.client().await.unwrap().get("/k", None).await.unwrap();
    assert_eq!(response.kvs()[0].value(), b"v");

    // Starting a running etcd does nothing; a restart keeps the data too.
    let pid = etcd.pid();
    etcd.start_again().await.unwrap();
    assert_eq!(etcd.pid(), pid);
    etcd.restart().await.expect("etcd restarts");
    assert_ne!(etcd.pid(), pid);
    let response = etcd.client().await.unwrap().get("/k", None).await.unwrap();
    assert_eq!(response.kvs()[0].value(), b"v");
}

#[tokio::test]
async fn etcd_compacts() {
    let etcd = EtcdProcess::start().await.expect("etcd starts");
    let mut client = etcd.client().await.unwrap();
    client.put("/k", "1", None).await.unwrap();
    let old = etcd.revision().await.unwrap();
    client.put("/k", "2", None).await.unwrap();
    etcd.compact(etcd.revision().await.unwrap()).await.unwrap();
    let stale = client
        .get("/k", Some(GetOptions::new().with_revision(old)))
        .await;
    assert!(stale.is_err(), "{stale:?}");
}

#[tokio::test]
async fn etcds_run_side_by_side_on_different_ports() {
    let (first, second) = tokio::join!(EtcdProcess::start(), EtcdProcess::start());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_ne!(first.address().port(), second.address().port());
    assert_ne!(first.data_dir(), second.data_dir());
    first
        .client()
        .await
        .unwrap()
        .put("/only-first", "x", None)
        .await
        .unwrap();
    let response = second
        .client()
        .await
        .unwrap()
        .get("/only-first", None)
        .await
        .unwrap();
    assert!(response.kvs().is_empty());
}

#[tokio::test]
async fn etcd_is_killed_and_its_folder_removed_on_drop() {
    let etcd = EtcdProcess::start().await.expect("etcd starts");
    let pid = etcd.pid().unwrap();
    let data = etcd.data_dir();
    assert!(data.is_dir());
    drop(etcd);
    assert!(!data.exists());
    // Reaped, not left a zombie: the process id is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test]
async fn prometheus_scrapes_the_exporter_if_installed() {
    let exporter = Exporter::start().await.unwrap();
    exporter.set("krake_test_gauge", 0.25);
    let prometheus = match PrometheusProcess::start(&[exporter.address()]).await {
        Ok(prometheus) => prometheus,
        Err(PrometheusProcessError::Process(error @ ProcessError::NotInstalled { .. })) => {
            eprintln!("skipped: {error}");
            return;
        }
        Err(error) => panic!("{error}"),
    };
    assert!(prometheus.pid().is_some());
    prometheus
        .wait_for_value("krake_test_gauge", 0.25)
        .await
        .unwrap();
    assert!(exporter.request_count() >= 1);
    exporter.set("krake_test_gauge", 2.0);
    prometheus
        .wait_for_value("krake_test_gauge", 2.0)
        .await
        .unwrap();
}
