//! The `shutdown` hook of the real `krake-server` binary end to end: an
//! application with the hook is asked to shut down before it is deleted or
//! migrated. The test plays the workload: a small HTTP listener on
//! loopback receives the controller's `PUT /shutdown`; the application's
//! manifest has a NodePort Service named `shutdown` whose `nodePort` is the
//! listener's port, so `status.services["shutdown"]` (`<the fake cluster's
//! API host, 127.0.0.1>:<nodePort>`) points at it. The acknowledgement is
//! the workload's `PUT …/shutdown {token}` to Krake's API, with the token of
//! the application's status.
//!
//! Cases: a deletion acknowledged; a deletion never acknowledged (the
//! strategy `delete` removes it after every attempt); a deletion given up
//! (DEGRADED), retried and acknowledged; a migration that waits for the
//! acknowledgement, and a second migration that asks again; a restart of
//! the server within the grace period; the controller's own settings
//! (`hooks.shutdown.timeout`, `failure_strategy`, `failure_retry_count`)
//! for an application whose spec has none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krake_data::kinds::kubernetes::{Application, ApplicationState, Shutdown};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use support::krake::{CONFIG, Krake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The workload's side of the hook: a listener on a port a NodePort may
/// have (30000-32767), recording the request lines it gets.
struct Workload {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Workload {
    async fn start() -> Workload {
        let start = 30000 + u16::try_from(std::process::id() % 2768).unwrap();
        let mut listener = None;
        for k in 0..2768u16 {
            let port = 30000 + (start - 30000 + k) % 2768;
            if let Ok(bound) = TcpListener::bind(("127.0.0.1", port)).await {
                listener = Some(bound);
                break;
            }
        }
        let listener = listener.expect("a free port in 30000-32767");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let line = text.lines().next().unwrap_or_default().to_owned();
                    seen.lock().unwrap().push(line);
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Workload { port, requests }
    }

    /// The request lines so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The application's manifest: a Deployment and the `shutdown` NodePort
    /// Service on this listener's port.
    fn manifest(&self, name: &str) -> Value {
        json!([
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "shutdown"},
                "spec": {
                    "type": "NodePort",
                    "selector": {"app": name},
                    "ports": [{"port": 8080, "targetPort": 8080, "nodePort": self.port}],
                },
            },
        ])
    }
}

fn deployment_on(fake: &FakeCluster, name: &str) -> Option<Value> {
    fake.get("apps/v1", "Deployment", Some("default"), name)
}

fn on(app: &Application) -> String {
    app.status
        .running_on
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

/// Krake with one ONLINE cluster `a`.
async fn one_cluster() -> (Krake, FakeCluster) {
    let krake = Krake::start().await;
    let a = FakeCluster::start().await.unwrap();
    krake.register_online("a", a.kubeconfig(), json!({})).await;
    (krake, a)
}

/// The application `name` with the hook (`hook` merged into its spec),
/// RUNNING with its `shutdown` service pointing at `workload`.
async fn deployed(krake: &Krake, workload: &Workload, name: &str, hook: Value) -> Application {
    let mut spec = json!({"hooks": ["shutdown"]});
    support::krake::merge(&mut spec, hook);
    krake.create_app(name, workload.manifest(name), spec).await;
    let endpoint = format!("127.0.0.1:{}", workload.port);
    krake
        .app_until(name, "RUNNING with its shutdown service", |a| {
            a.status.state == ApplicationState::Running
                && a.status.services.get("shutdown") == Some(&endpoint)
                && a.status.shutdown_token.is_some()
        })
        .await
}

/// The workload's acknowledgement, with the token of the status.
async fn acknowledge(krake: &Krake, app: &Application) {
    let token = app.status.shutdown_token.clone().expect("a shutdown token");
    krake
        .api::<Application>()
        .shutdown(&app.metadata.name, &Shutdown::new(&token))
        .await
        .unwrap();
}

async fn asked(krake: &Krake, workload: &Workload, times: usize) {
    krake
        .eventually(
            &format!("{times} shutdown request(s) at the workload"),
            || async { Some(workload.requests()) },
            |seen| seen.len() >= times,
        )
        .await;
    for line in workload.requests() {
        assert!(line.starts_with("PUT /shutdown "), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_waits_for_the_acknowledgement() {
    let (krake, a) = one_cluster().await;
    let workload = Workload::start().await;
    deployed(
        &krake,
        &workload,
        "web",
        json!({"shutdown_grace_time": 120}),
    )
    .await;
    assert_eq!(workload.count(), 0, "not asked before the deletion");

    let deleted = Instant::now();
    krake.delete_app("web").await;
    let app = krake
        .app_until("web", "WAITING_FOR_CLEANING", |a| {
            a.status.state == ApplicationState::WaitingForCleaning
                && a.status.shutdown_grace_period.is_some()
        })
        .await;
    let grace = app.status.shutdown_grace_period.unwrap() - krake_data::Timestamp::now();
    assert!(
        grace.num_seconds() > 100,
        "the spec's grace time: {grace:?}"
    );
    asked(&krake, &workload, 1).await;
    // Nothing is removed while the workload shuts down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(deployment_on(&a, "web").is_some());
    assert_eq!(
        krake
            .api::<Application>()
            .get("web")
            .await
            .unwrap()
            .status
            .state,
        ApplicationState::WaitingForCleaning
    );

    acknowledge(&krake, &app).await;
    krake.app_gone("web").await;
    assert!(deployment_on(&a, "web").is_none());
    assert!(
        a.get("v1", "Service", Some("default"), "shutdown")
            .is_none()
    );
    assert_eq!(workload.count(), 1, "asked once");
    assert!(
        deleted.elapsed() < Duration::from_secs(60),
        "removed on the acknowledgement, not after the grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_deletion_is_retried_then_forced() {
    let (krake, a) = one_cluster().await;
    let workload = Workload::start().await;
    deployed(
        &krake,
        &workload,
        "web",
        json!({"shutdown_grace_time": 1, "shutdown_retry_count": 1}),
    )
    .await;

    let deleted = Instant::now();
    krake.delete_app("web").await;
    krake.app_gone("web").await;
    let took = deleted.elapsed();
    println!("removed after {took:?} without an acknowledgement");
    assert!(deployment_on(&a, "web").is_none());
    // One attempt and one retry, each with its grace period of 1 s.
    assert_eq!(workload.count(), 2, "{:?}", workload.requests());
    assert!(
        took >= Duration::from_secs(2),
        "two grace periods: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_up_deletion_is_retried_and_acknowledged() {
    let (krake, a) = one_cluster().await;
    let workload = Workload::start().await;
    deployed(
        &krake,
        &workload,
        "web",
        json!({"shutdown_grace_time": 1, "shutdown_failure_strategy": "give_up"}),
    )
    .await;

    krake.delete_app("web").await;
    let app = krake
        .app_until("web", "DEGRADED after the failed shutdown", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    let reason = app.status.reason.clone().expect("a reason");
    assert!(
        reason.message.contains("shutdown"),
        "the reason names the failed shutdown: {reason:?}"
    );
    assert_eq!(workload.count(), 1);
    // Given up: nothing removed, nobody asked again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(deployment_on(&a, "web").is_some());
    assert_eq!(workload.count(), 1);
    assert_eq!(
        krake
            .api::<Application>()
            .get("web")
            .await
            .unwrap()
            .status
            .state,
        ApplicationState::Degraded
    );

    // The user retries: asked again; the workload acknowledges.
    krake.api::<Application>().retry("web").await.unwrap();
    asked(&krake, &workload, 2).await;
    acknowledge(&krake, &app).await;
    krake.app_gone("web").await;
    assert!(deployment_on(&a, "web").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_waits_for_the_acknowledgement() {
    let krake = Krake::start().await;
    let a = FakeCluster::start().await.unwrap();
    let b = FakeCluster::start().await.unwrap();
    krake
        .static_metrics(&[("load-a", 80.0), ("load-b", 20.0)])
        .await;
    for (name, fake, metric) in [("a", &a, "load-a"), ("b", &b, "load-b")] {
        krake
            .register_online(
                name,
                fake.kubeconfig(),
                json!({"metrics": [{"name": metric, "weight": 1.0}]}),
            )
            .await;
    }
    let workload = Workload::start().await;
    let app = deployed(
        &krake,
        &workload,
        "web",
        json!({"shutdown_grace_time": 120}),
    )
    .await;
    assert_eq!(on(&app), "a");

    // b wins: the application is asked first and stays on a meanwhile.
    krake
        .set_static(&[("load-a", 10.0), ("load-b", 90.0)])
        .await;
    let app = krake
        .app_until("web", "WAITING_FOR_CLEANING before the migration", |a| {
            a.status.state == ApplicationState::WaitingForCleaning
                && a.status
                    .scheduled_to
                    .as_ref()
                    .is_some_and(|c| c.name == "b")
        })
        .await;
    asked(&krake, &workload, 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let waiting = krake.api::<Application>().get("web").await.unwrap();
    assert_eq!(waiting.status.state, ApplicationState::WaitingForCleaning);
    assert_eq!(on(&waiting), "a");
    assert!(deployment_on(&a, "web").is_some());
    assert!(deployment_on(&b, "web").is_none());

    // Acknowledged: it moves, RUNNING on b, the hook's grace period cleared.
    acknowledge(&krake, &app).await;
    let moved = krake
        .app_until("web", "RUNNING on b", |a| {
            on(a) == "b" && a.status.state == ApplicationState::Running
        })
        .await;
    assert!(moved.status.shutdown_grace_period.is_none());
    assert!(deployment_on(&b, "web").is_some());
    krake
        .until("the Deployment gone from a", || async {
            deployment_on(&a, "web").is_none()
        })
        .await;
    assert_eq!(workload.count(), 1);

    // A later migration asks again.
    krake
        .set_static(&[("load-a", 90.0), ("load-b", 10.0)])
        .await;
    let app = krake
        .app_until(
            "web",
            "WAITING_FOR_CLEANING before the second migration",
            |a| {
                a.status.state == ApplicationState::WaitingForCleaning
                    && a.status
                        .scheduled_to
                        .as_ref()
                        .is_some_and(|c| c.name == "a")
            },
        )
        .await;
    asked(&krake, &workload, 2).await;
    assert_eq!(on(&app), "b");
    acknowledge(&krake, &app).await;
    krake
        .app_until("web", "RUNNING on a again", |a| {
            on(a) == "a" && a.status.state == ApplicationState::Running
        })
        .await;
    krake
        .until("the Deployment gone from b", || async {
            deployment_on(&b, "web").is_none()
        })
        .await;

    krake.delete_app("web").await;
    asked(&krake, &workload, 3).await;
    let app = krake.api::<Application>().get("web").await.unwrap();
    acknowledge(&krake, &app).await;
    krake.app_gone("web").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_the_grace_period() {
    let (krake, a) = one_cluster().await;
    let workload = Workload::start().await;
    deployed(&krake, &workload, "web", json!({"shutdown_grace_time": 6})).await;

    krake.delete_app("web").await;
    let app = krake
        .app_until("web", "WAITING_FOR_CLEANING", |a| {
            a.status.state == ApplicationState::WaitingForCleaning
                && a.status.shutdown_grace_period.is_some()
        })
        .await;
    let grace_period = app.status.shutdown_grace_period.unwrap();
    asked(&krake, &workload, 1).await;

    // The server (and its controller) dies and comes back within the grace
    // period: the state is in the status, so it waits for the rest of it,
    // without asking again, then goes on (strategy delete, no retries).
    krake.restart().await;
    let restarted = krake_data::Timestamp::now();
    assert!(
        restarted < grace_period,
        "restarted within the grace period"
    );
    krake.app_gone("web").await;
    let gone = krake_data::Timestamp::now();
    assert!(
        gone >= grace_period,
        "removed at {gone}, before the grace period ended at {grace_period}"
    );
    assert!(deployment_on(&a, "web").is_none());
    assert_eq!(workload.count(), 1, "{:?}", workload.requests());
}

/// An intermediate CA (a self-signed one will do) for the hooks' settings,
/// which Krake's file requires; its certificate and key written into `dir`.
fn intermediate_ca(dir: &std::path::Path) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "shutdown signing");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("intermediate.pem");
    let key_path = dir.join("intermediate-key.pem");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_settings_apply_without_the_spec_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = intermediate_ca(dir.path());
    let config = CONFIG.replace(
        "  kubernetes_application:\n",
        &format!(
            "  kubernetes_application:\n    hooks:\n      shutdown: {{intermediate_src: {cert}, \
             intermediate_key_src: {key}, timeout: 1, failure_strategy: give_up, \
             failure_retry_count: 1}}\n"
        ),
    );
    assert_ne!(config, CONFIG);
    let krake = Krake::start_with(&config, &[]).await;
    let a = FakeCluster::start().await.unwrap();
    krake.register_online("a", a.kubeconfig(), json!({})).await;
    let workload = Workload::start().await;
    deployed(&krake, &workload, "web", json!({})).await;

    let deleted = Instant::now();
    krake.delete_app("web").await;
    let app = krake
        .app_until("web", "DEGRADED after the failed shutdown", |a| {
            a.status.state == ApplicationState::Degraded
        })
        .await;
    let took = deleted.elapsed();
    let reason = app.status.reason.clone().expect("a reason");
    assert!(reason.message.contains("shutdown"), "{reason:?}");
    // One attempt and one retry of 1 s each, then give_up.
    assert_eq!(workload.count(), 2, "{:?}", workload.requests());
    assert!(
        took >= Duration::from_secs(2),
        "two grace periods: {took:?}"
    );
    assert!(
        took < Duration::from_secs(25),
        "not the default 30 s: {took:?}"
    );
    assert!(deployment_on(&a, "web").is_some());
}
