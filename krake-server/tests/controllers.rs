//! The controllers of `krake-server`: in-process by default (through the
//! loopback listener and the internal token), switched off, and alone with
//! `krake-server controller` against a remote API with TLS, client
//! certificates and RBAC; leader election; one-line errors; cascading
//! deletion end to end; the Kubernetes controllers started from Krake's
//! files (their work on real clusters is tested elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use krake_api::testing::pki::TestCa;
use serde_json::{Value, json};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Switches off every in-process controller: an API alone.
const NO_CONTROLLERS: [&str; 6] = [
    "--no-gc",
    "--no-scheduler",
    "--no-kubernetes-application",
    "--no-kubernetes-cluster",
    "--no-magnum",
    "--no-infrastructure",
];

/// Switches off the in-process Kubernetes controllers, for tests of the
/// garbage collector and the scheduler with clusters nobody can reach
/// (the cluster controller would mark them OFFLINE).
const NO_KUBERNETES: [&str; 2] = ["--no-kubernetes-application", "--no-kubernetes-cluster"];

/// The in-process controllers, as they name themselves in logs and metrics.
const ALL_CONTROLLERS: [&str; 6] = [
    "gc",
    "scheduler",
    "kubernetes-application",
    "kubernetes-cluster",
    "magnum",
    "infrastructure",
];

fn krake_server() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_krake-server"));
    command
        .env("KRAKE_LOG_LEVEL", "info")
        .env_remove("RUST_LOG");
    command
}

/// A running `krake-server` whose log (stderr) goes to a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut command: Command, log: PathBuf) -> Proc {
        let file = File::create(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing every one of `parts`.
    async fn wait_log(&mut self, parts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if let Some(line) = log
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line.to_owned();
            }
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!("exited ({exit:?}) before logging {parts:?}:\n{log}");
            }
            assert!(Instant::now() < deadline, "no {parts:?} in the log:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (at most 15 s later).
    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "did not stop within 15 s of SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, waiting at most `within`.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "still running:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain-HTTP `krake-server` with `args`, ready.
async fn plain_server(dir: &Path, name: &str, args: &[&str]) -> (Proc, String) {
    let port = free_port();
    let mut command = krake_server();
    command.args([
        "--data-dir",
        dir.join(format!("data-{name}")).to_str().unwrap(),
        "--port",
        &port.to_string(),
    ]);
    command.args(args);
    let server = Proc::spawn(command, dir.join(format!("{name}.log")));
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("krake-server to be ready", Duration::from_secs(20), || {
        let request = http.get(format!("{url}/readyz")).send();
        async move { request.await.ok().filter(|r| r.status().is_success()) }
    })
    .await;
    (server, url)
}

async fn controller_metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics/controllers"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_controllers_by_default_and_they_can_be_switched_off() {
    let dir = tempfile::tempdir().unwrap();

    let (mut server, url) = plain_server(dir.path(), "default", &[]).await;
    for name in ALL_CONTROLLERS {
        server
            .wait_log(
                &["controller started", &format!("controller=\"{name}\"")],
                Duration::from_secs(10),
            )
            .await;
    }
    let metrics = controller_metrics(&url).await;
    for name in ALL_CONTROLLERS {
        let line = format!("krake_controller_leader{{controller=\"{name}\"}} 1");
        assert!(metrics.contains(&line), "{line:?} missing in\n{metrics}");
    }
    assert!(server.terminate().success());
    let log = server.log();
    let stopping = log.find("stopping the controllers").unwrap();
    let stopped = log.find("krake-server stopped").unwrap();
    assert!(
        stopping < stopped,
        "controllers stop before the API:\n{log}"
    );

    let (mut server, url) = plain_server(dir.path(), "off", &NO_CONTROLLERS).await;
    let metrics = controller_metrics(&url).await;
    assert!(!metrics.contains("controller=\""), "{metrics}");
    assert!(server.terminate().success());
    assert!(
        !server.log().contains("controller started"),
        "{}",
        server.log()
    );
    // One flag for all of them: the API alone.
    let (mut server, url) = plain_server(dir.path(), "api-only", &["--no-controllers"]).await;
    let metrics = controller_metrics(&url).await;
    assert!(!metrics.contains("controller=\""), "{metrics}");
    assert!(server.terminate().success());
    assert!(
        !server.log().contains("controller started"),
        "{}",
        server.log()
    );

    // The Kubernetes controllers alone are switched off.
    let (mut server, url) = plain_server(dir.path(), "no-kubernetes", &NO_KUBERNETES).await;
    server
        .wait_log(
            &["controller started", "controller=\"scheduler\""],
            Duration::from_secs(10),
        )
        .await;
    let metrics = controller_metrics(&url).await;
    assert!(metrics.contains("controller=\"gc\""), "{metrics}");
    assert!(!metrics.contains("controller=\"kubernetes-"), "{metrics}");
    assert!(server.terminate().success());
    assert!(
        !server.log().contains("controller=\"kubernetes-"),
        "{}",
        server.log()
    );
    for (flag, off, on) in [
        (
            "--no-kubernetes-application",
            "kubernetes-application",
            "kubernetes-cluster",
        ),
        (
            "--no-kubernetes-cluster",
            "kubernetes-cluster",
            "kubernetes-application",
        ),
    ] {
        let (mut server, url) = plain_server(dir.path(), off, &[flag]).await;
        server
            .wait_log(
                &["controller started", &format!("controller=\"{on}\"")],
                Duration::from_secs(10),
            )
            .await;
        let metrics = controller_metrics(&url).await;
        assert!(
            !metrics.contains(&format!("controller=\"{off}\"")),
            "{flag}: {metrics}"
        );
        assert!(server.terminate().success());
    }

    // The file switches one off; the environment wins over the file.
    let config = dir.path().join("api.yaml");
    std::fs::write(
        &config,
        "controllers:\n  gc: {enabled: false, worker_count: 2}\n  scheduler: {enabled: true, worker_count: 3, reschedule_after: 30}\n",
    )
    .unwrap();
    let (mut server, url) =
        plain_server(dir.path(), "file", &["--config", config.to_str().unwrap()]).await;
    server
        .wait_log(
            &[
                "controller started",
                "controller=\"scheduler\"",
                "workers=3",
            ],
            Duration::from_secs(10),
        )
        .await;
    let metrics = controller_metrics(&url).await;
    assert!(!metrics.contains("controller=\"gc\""), "{metrics}");
    drop(server);
    let port = free_port();
    let mut command = krake_server();
    command
        .args(["--config", config.to_str().unwrap()])
        .args(["--data-dir", dir.path().join("data-env").to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .env("KRAKE_GC_ENABLED", "true")
        .env("KRAKE_SCHEDULER_ENABLED", "false");
    let mut server = Proc::spawn(command, dir.path().join("env.log"));
    server
        .wait_log(
            &["controller started", "controller=\"gc\""],
            Duration::from_secs(20),
        )
        .await;
    assert!(server.terminate().success());
    assert!(!server.log().contains("controller=\"scheduler\""));
}

/// Certificates, a TLS + client certificates + RBAC server configuration
/// and Krake's base roles, as the README sets them up.
struct Secure {
    dir: tempfile::TempDir,
    ca: TestCa,
    port: u16,
    config: PathBuf,
}

impl Secure {
    fn new(bootstrap_roles: bool) -> Secure {
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
        if bootstrap_roles {
            let base_roles = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/base_roles.yaml");
            let output = krake_server()
                .args([
                    "--config",
                    config.to_str().unwrap(),
                    "bootstrap",
                    base_roles,
                ])
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
        }
        Secure {
            dir,
            ca,
            port,
            config,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// Writes a client certificate for `user` (signed by `ca`) and returns
    /// the certificate and key files.
    fn client_files(&self, ca: &TestCa, user: &str, tag: &str) -> (String, String) {
        let issued = ca.client(user);
        let cert = self.dir.path().join(format!("{tag}.pem"));
        let key = self.dir.path().join(format!("{tag}-key.pem"));
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    fn admin(&self) -> reqwest::Client {
        self.ca.http_client(Some(&self.ca.client("system:admin")))
    }

    async fn serve(&self, args: &[&str]) -> Proc {
        let mut command = krake_server();
        command.args(["--config", self.config.to_str().unwrap()]);
        command.args(args);
        let server = Proc::spawn(command, self.dir.path().join("server.log"));
        let admin = self.admin();
        let url = self.url();
        eventually(
            "the TLS server to be ready",
            Duration::from_secs(20),
            || {
                let request = admin.get(format!("{url}/readyz")).send();
                async move { request.await.ok() }
            },
        )
        .await;
        server
    }

    /// `krake-server controller <name>` against this server, with a client
    /// certificate for `system:<name>`, once it says it is connected.
    async fn connected_controller(&self, name: &str) -> Proc {
        let user = format!("system:{name}");
        let (cert, key) = self.client_files(&self.ca, &user, &user);
        let url = self.url();
        let ca = self.ca_file();
        let mut controller = self.controller(
            name,
            &[
                name,
                "--api",
                &url,
                "--tls-client-ca",
                &ca,
                "--tls-client-cert",
                &cert,
                "--tls-client-key",
                &key,
            ],
        );
        controller
            .wait_log(&["connected to the API"], Duration::from_secs(20))
            .await;
        controller
    }

    fn controller(&self, name: &str, args: &[&str]) -> Proc {
        let mut command = krake_server();
        command.arg("controller").args(args);
        Proc::spawn(command, self.dir.path().join(format!("{name}.log")))
    }
}

/// In-process controllers reach an API that lets nobody in without a
/// certificate and grants nothing (no roles loaded): the loopback listener
/// and the internal token. Without the token, the loopback listener is the
/// public API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_controllers_reach_a_locked_down_api() {
    let secure = Secure::new(false);
    let mut server = secure.serve(&["--leader-elect"]).await;
    let line = server
        .wait_log(
            &["controllers reach the API on a loopback listener"],
            Duration::from_secs(10),
        )
        .await;
    let loopback = line.rsplit("address=").next().unwrap().trim().to_owned();
    // The elector wrote its lease through the loopback listener: it is
    // allowed although RBAC has no roles.
    for name in ALL_CONTROLLERS {
        server
            .wait_log(
                &[
                    "leading: this replica works",
                    &format!("controller=\"{name}\""),
                ],
                Duration::from_secs(20),
            )
            .await;
    }
    let http = reqwest::Client::new();
    for token in [None, Some("Bearer not-the-token")] {
        let mut request = http.get(format!(
            "http://{loopback}/core/namespaces/system/leases/krake-gc"
        ));
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{token:?}");
    }
    // Nobody may present the internal user's name.
    let impostor = secure
        .ca
        .http_client(Some(&secure.ca.client("system:krake-server")));
    let status = impostor
        .get(format!("{}/core/namespaces/system/leases", secure.url()))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    // The admin has no role either (none were loaded): 403, not the lease.
    let status = secure
        .admin()
        .get(format!(
            "{}/core/namespaces/system/leases/krake-gc",
            secure.url()
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);
    assert!(server.terminate().success(), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_gc_connects_with_a_client_certificate_and_stops_on_sigterm() {
    let secure = Secure::new(true);
    let _server = secure.serve(&NO_CONTROLLERS).await;
    let (cert, key) = secure.client_files(&secure.ca, "system:gc", "system:gc");
    let metrics_port = free_port();
    let metrics_address = format!("127.0.0.1:{metrics_port}");
    let mut gc = secure.controller(
        "gc",
        &[
            "gc",
            "--api",
            &format!("http://localhost:{}", secure.port),
            "--tls-client-ca",
            &secure.ca_file(),
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key,
            "--worker-count",
            "2",
            "--metrics-address",
            &metrics_address,
            "--leader-elect",
        ],
    );
    // http:// becomes https:// with TLS, as in Krake.
    gc.wait_log(
        &[
            "connected to the API",
            "user=system:gc",
            "https://localhost",
        ],
        Duration::from_secs(20),
    )
    .await;
    gc.wait_log(
        &["controller started", "workers=2"],
        Duration::from_secs(10),
    )
    .await;
    // Krake's role:gc (config/base_roles.yaml) lets it hold its lease.
    gc.wait_log(&["leading: this replica works"], Duration::from_secs(20))
        .await;
    let metrics = reqwest::get(format!("http://{metrics_address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("krake_controller_leader{controller=\"gc\"} 1"),
        "{metrics}"
    );
    let exit = gc.terminate();
    assert!(exit.success(), "{exit:?}\n{}", gc.log());
    assert!(gc.log().contains("controller stopped"), "{}", gc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_controller_reports_missing_or_wrong_certificates() {
    let secure = Secure::new(true);
    let _server = secure.serve(&NO_CONTROLLERS).await;

    // No client certificate: the API refuses (401); the controller says so
    // in one line and exits.
    let mut gc = secure.controller(
        "no-cert",
        &[
            "gc",
            "--api",
            &secure.url(),
            "--tls-client-ca",
            &secure.ca_file(),
        ],
    );
    let exit = gc.wait_exit(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(1), "{}", gc.log());
    let log = gc.log();
    let last = log.lines().last().unwrap();
    assert!(
        last.starts_with("krake-server: the API at https://localhost")
            && last.contains("refused the controller's credentials (401"),
        "{log}"
    );

    // A certificate of another CA: the TLS handshake fails; the controller
    // reports it on one line and keeps trying until stopped.
    let other = TestCa::new("another CA");
    let (cert, key) = secure.client_files(&other, "system:gc", "other");
    let mut gc = secure.controller(
        "wrong-cert",
        &[
            "gc",
            "--api",
            &secure.url(),
            "--tls-client-ca",
            &secure.ca_file(),
            "--tls-client-cert",
            &cert,
            "--tls-client-key",
            &key,
        ],
    );
    gc.wait_log(
        &["cannot reach the API at https://localhost", "retrying in"],
        Duration::from_secs(20),
    )
    .await;
    assert!(gc.child.try_wait().unwrap().is_none(), "still trying");
    assert!(gc.terminate().success(), "{}", gc.log());

    // A certificate file that does not exist: one line naming it.
    let output = krake_server()
        .args(["controller", "gc", "--api", &secure.url()])
        .args(["--tls-client-cert", "/nonexistent/gc.pem"])
        .args(["--tls-client-key", "/nonexistent/gc-key.pem"])
        .env("KRAKE_LOG_LEVEL", "error")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/gc.pem"), "{stderr}");
}

#[test]
fn bad_controller_configuration_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = krake_server().args(args).output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("krake-server: "), "{stderr}");
        stderr
    };
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };

    let gc = file(
        "garbage_collector.yaml",
        "api_endpoint: http://localhost:1\nworker_count: zero\n",
    );
    let err = run(&["controller", "gc", "-c", &gc]);
    assert!(
        err.contains("garbage_collector.yaml") && err.contains("worker_count"),
        "{err}"
    );

    let gc = file("gc2.yaml", "worker_count: 0\n");
    let err = run(&["controller", "gc", "-c", &gc]);
    assert!(err.contains("worker_count must be at least 1"), "{err}");

    let missing = dir
        .path()
        .join("missing-cluster.yaml")
        .display()
        .to_string();
    let scheduler = file(
        "scheduler.yaml",
        &format!(
            "reschedule_after: 60\nstickiness: 0.1\nautomatic_cluster_creation:\n  tosca_file: {missing}\n  deletion_retention: 600\n"
        ),
    );
    let err = run(&["controller", "scheduler", "-c", &scheduler]);
    assert!(err.contains("missing-cluster.yaml"), "{err}");

    let tosca = file("cluster.yaml", "tosca: [not closed\n");
    let err = run(&["controller", "scheduler", "--tosca-file", &tosca]);
    assert!(err.contains("cluster.yaml"), "{err}");

    let err = run(&["controller", "gc", "--stickiness", "0.5"]);
    assert!(
        err.contains("stickiness is a setting of the scheduler"),
        "{err}"
    );

    let err = run(&[
        "controller",
        "gc",
        "--leader-elect",
        "--lease-namespace",
        "Not Valid",
    ]);
    assert!(err.contains("leader election"), "{err}");

    let api = file("api.yaml", "controllers:\n  gc: {reschedule_after: 5}\n");
    let err = run(&["--config", &api]);
    assert!(err.contains("controllers.gc: reschedule_after"), "{err}");

    // The Kubernetes controllers' files: a key of another controller, a
    // bad hook, a wrong type; each one line naming the file.
    let cluster = file(
        "kubernetes_cluster.yaml",
        "api_endpoint: http://localhost:1\npoll_interval: 2\nstickiness: 0.1\n",
    );
    let err = run(&["controller", "kubernetes-cluster", "-c", &cluster]);
    assert!(
        err.contains("kubernetes_cluster.yaml: stickiness is a setting of the scheduler, not of the Kubernetes cluster controller"),
        "{err}"
    );
    let cluster = file("kubernetes_cluster2.yaml", "worker_count: many\n");
    let err = run(&["controller", "kubernetes-cluster", "-c", &cluster]);
    assert!(
        err.contains("kubernetes_cluster2.yaml") && err.contains("worker_count"),
        "{err}"
    );
    let application = file(
        "kubernetes_application.yaml",
        "hooks:\n  shutdown:\n    intermediate_src: a.pem\n    intermediate_key_src: a-key.pem\n    failure_strategy: retry\n",
    );
    let err = run(&["controller", "kubernetes-application", "-c", &application]);
    assert!(
        err.contains("kubernetes_application.yaml: hooks.shutdown.failure_strategy: \"retry\" (delete or give_up)"),
        "{err}"
    );
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/kubernetes_application.yaml"
    );
    // (Its hooks are commented out: they need intermediate CAs.)
    let err = run(&["controller", "kubernetes-cluster", "-c", shipped]);
    assert!(
        err.contains("migration is a setting of the Kubernetes application controller, not of the Kubernetes cluster controller"),
        "{err}"
    );
    let err = run(&[
        "controller",
        "kubernetes-application",
        "--list-timeout",
        "0",
    ]);
    assert!(err.contains("list_timeout: 0"), "{err}");

    let api = file(
        "api-kubernetes.yaml",
        "controllers:\n  kubernetes_cluster: {hooks: {}}\n",
    );
    let err = run(&["--config", &api]);
    assert!(
        err.contains("controllers.kubernetes_cluster: hooks is a setting of the Kubernetes application controller"),
        "{err}"
    );

    let output = krake_server().args(["controller", "dns"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "clap usage error");
}

/// Krake's `kubernetes_cluster.yaml` of a version that polls
/// (`poll_interval`, accepted and ignored), Python's logging keys and all.
const KRAKE_KUBERNETES_CLUSTER: &str = r#"## Configuration file for the Krake Kubernetes Cluster Controller
api_endpoint: http://localhost:8080
worker_count: 5
debounce: 1.0
poll_interval: 2

tls:
  enabled: false
  client_ca: tmp/pki/ca.pem
  client_cert: tmp/pki/system:kubernetes-cluster.pem
  client_key: tmp/pki/system:kubernetes-cluster-key.pem

log:
  version: 1
  level: INFO
  disable_existing_loggers: false
  handlers:
    console:
      class: logging.StreamHandler
      stream: ext://sys.stdout
  root:
    handlers: [console]
  loggers:
    krake:
      handlers: [console]
      propagate: no
"#;

/// `krake-server controller kubernetes-application|kubernetes-cluster`
/// with the shipped files and Krake's own: each connects to a running API,
/// starts, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_kubernetes_controllers_start_from_their_files_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = plain_server(dir.path(), "api", &NO_CONTROLLERS).await;
    let krakes = dir.path().join("kubernetes_cluster.yaml");
    std::fs::write(&krakes, KRAKE_KUBERNETES_CLUSTER).unwrap();
    let shipped = |file: &str| format!("{}/../config/{file}", env!("CARGO_MANIFEST_DIR"));
    for (tag, kind, file, workers) in [
        (
            "application",
            "kubernetes-application",
            shipped("kubernetes_application.yaml"),
            "5",
        ),
        (
            "cluster",
            "kubernetes-cluster",
            shipped("kubernetes_cluster.yaml"),
            "5",
        ),
        (
            "krakes-cluster",
            "kubernetes-cluster",
            krakes.display().to_string(),
            "3",
        ),
    ] {
        let mut command = krake_server();
        command.args(["controller", kind, "-c", &file, "--api", &url]);
        if tag == "krakes-cluster" {
            command.args(["--worker-count", workers]);
        }
        let mut controller = Proc::spawn(command, dir.path().join(format!("{tag}.log")));
        controller
            .wait_log(
                &["connected to the API", &format!("controller=\"{kind}\"")],
                Duration::from_secs(20),
            )
            .await;
        controller
            .wait_log(
                &[
                    "controller started",
                    &format!("controller=\"{kind}\""),
                    &format!("workers={workers}"),
                ],
                Duration::from_secs(10),
            )
            .await;
        let exit = controller.terminate();
        assert!(exit.success(), "{tag}: {exit:?}\n{}", controller.log());
        let log = controller.log();
        assert!(log.contains("controller stopped"), "{tag}: {log}");
        assert!(!log.contains("ERROR"), "{tag}: {log}");
    }
}

/// Both Kubernetes controllers alone, behind TLS and RBAC, under Krake's
/// roles (config/base_roles.yaml): they hold their leases, the cluster
/// controller writes the status of a cluster nobody answers for (OFFLINE),
/// and nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_kubernetes_controllers_work_under_their_roles() {
    let secure = Secure::new(true);
    let _server = secure.serve(&NO_CONTROLLERS).await;
    let mut controllers = Vec::new();
    for name in ["kubernetes-application", "kubernetes-cluster"] {
        let user = format!("system:{name}");
        let (cert, key) = secure.client_files(&secure.ca, &user, &user);
        let mut controller = secure.controller(
            name,
            &[
                name,
                "--api",
                &secure.url(),
                "--tls-client-ca",
                &secure.ca_file(),
                "--tls-client-cert",
                &cert,
                "--tls-client-key",
                &key,
                "--leader-elect",
            ],
        );
        controller
            .wait_log(
                &["connected to the API", &format!("user={user}")],
                Duration::from_secs(20),
            )
            .await;
        controller
            .wait_log(
                &[
                    "leading: this replica works",
                    &format!("controller=\"{name}\""),
                ],
                Duration::from_secs(20),
            )
            .await;
        controllers.push(controller);
    }

    let admin = secure.admin();
    let clusters = format!("{}/kubernetes/namespaces/testing/clusters", secure.url());
    let nobody = format!("https://127.0.0.1:{}", free_port());
    let cluster = json!({
        "metadata": {"name": "gone"},
        "spec": {"kubeconfig": kubeconfig_of(&nobody), "constraints": {"cloud": {}}},
    });
    let response = admin.post(&clusters).json(&cluster).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let offline: Value = eventually("the cluster to be OFFLINE", Duration::from_secs(30), || {
        let request = admin.get(format!("{clusters}/gone")).send();
        async move {
            let cluster: Value = request.await.ok()?.json().await.ok()?;
            (cluster["status"]["state"] == "OFFLINE").then_some(cluster)
        }
    })
    .await;
    assert!(
        !offline["status"]["kube_controller_triggered"].is_null(),
        "{offline}"
    );

    for mut controller in controllers {
        let log = controller.log();
        assert!(!refused(&log), "{log}");
        let exit = controller.terminate();
        assert!(exit.success(), "{exit:?}\n{}", controller.log());
        assert!(
            controller.log().contains("controller stopped"),
            "{}",
            controller.log()
        );
    }
}

/// Two replicas of `krake-server controller gc --leader-elect`: one holds
/// the lease; when it stops it releases the lease and the other takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_between_two_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = plain_server(dir.path(), "api", &NO_CONTROLLERS).await;
    let replica = |name: &str| {
        let mut command = krake_server();
        command.args([
            "controller",
            "gc",
            "--api",
            &url,
            "--leader-elect",
            "--lease-duration",
            "3",
        ]);
        Proc::spawn(command, dir.path().join(format!("{name}.log")))
    };
    let mut replicas = [replica("a"), replica("b")];
    let mut identities = Vec::new();
    for replica in &mut replicas {
        let line = replica
            .wait_log(
                &["campaigning for the lease", "lease=system/krake-gc"],
                Duration::from_secs(20),
            )
            .await;
        let identity = line
            .split("identity=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        assert!(identity.starts_with("gc-"), "{line}");
        identities.push(identity);
    }
    let lease_url = format!("{url}/core/namespaces/system/leases/krake-gc");
    let holder = || {
        let lease_url = lease_url.clone();
        async move {
            let response = reqwest::get(&lease_url).await.ok()?;
            let lease: Value = response.json().await.ok()?;
            lease["spec"]["holder"].as_str().map(str::to_owned)
        }
    };
    let first = eventually("a lease holder", Duration::from_secs(20), &holder).await;
    let leader = identities.iter().position(|id| *id == first).unwrap();
    let standby = 1 - leader;
    replicas[leader]
        .wait_log(&["leading: this replica works"], Duration::from_secs(10))
        .await;
    // The other stands by the whole time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder().await.as_deref(), Some(first.as_str()));
    assert!(
        !replicas[standby]
            .log()
            .contains("leading: this replica works")
    );

    assert!(replicas[leader].terminate().success());
    let next = eventually("the standby to take over", Duration::from_secs(15), || {
        let holder = holder();
        let expected = identities[standby].clone();
        async move { holder.await.filter(|id| *id == expected) }
    })
    .await;
    assert_eq!(next, identities[standby]);
    replicas[standby]
        .wait_log(&["leading: this replica works"], Duration::from_secs(10))
        .await;
    assert!(replicas[standby].terminate().success());
}

fn kubeconfig() -> Value {
    kubeconfig_of("https://127.0.0.1:6443")
}

fn kubeconfig_of(server: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    })
}

/// Creates a Cloud and a Cluster it owns, deletes the Cloud, and waits for
/// both to be gone (the garbage collector's cascading deletion).
async fn cascade(http: &reqwest::Client, url: &str) {
    let clouds = format!("{url}/infrastructure/namespaces/testing/clouds");
    let clusters = format!("{url}/kubernetes/namespaces/testing/clusters");
    let cloud = json!({
        "metadata": {"name": "os"},
        "spec": {"type": "openstack", "openstack": {
            "url": "http://127.0.0.1:5000/v3",
            "auth": {"type": "password", "password": {"user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
            "infrastructure_provider": {"name": "im"},
        }},
    });
    let response = http.post(&clouds).json(&cloud).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let cluster = json!({
        "metadata": {"name": "c1", "owners": [
            {"api": "infrastructure", "kind": "Cloud", "namespace": "testing", "name": "os"}
        ]},
        "spec": {"kubeconfig": kubeconfig(), "constraints": {"cloud": {}}},
    });
    let response = http.post(&clusters).json(&cluster).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let response = http.delete(format!("{clouds}/os")).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    for object in [format!("{clusters}/c1"), format!("{clouds}/os")] {
        eventually(
            &format!("{object} to be deleted"),
            Duration::from_secs(30),
            || {
                let request = http.get(&object).send();
                async move { (request.await.ok()?.status() == 404).then_some(()) }
            },
        )
        .await;
    }
}

/// The in-process garbage collector of a default `krake-server`, behind
/// TLS and RBAC with no roles for it: deleting a Cloud deletes the Cluster
/// it owns, then the Cloud.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cloud_deletes_its_cluster_in_process() {
    let secure = Secure::new(true);
    let server = secure.serve(&NO_KUBERNETES).await;
    cascade(&secure.admin(), &secure.url()).await;
    drop(server);
}

/// The same through `krake-server controller gc` against a server without
/// controllers, authenticated by its certificate under Krake's role:gc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cloud_deletes_its_cluster_split() {
    let secure = Secure::new(true);
    let _server = secure.serve(&NO_CONTROLLERS).await;
    let mut gc = secure.connected_controller("gc").await;
    cascade(&secure.admin(), &secure.url()).await;
    assert!(gc.terminate().success(), "{}", gc.log());
}

/// Creates an ONLINE cluster and an application matching it, and waits for
/// the application to be bound (the scheduler).
async fn placement(http: &reqwest::Client, url: &str) {
    let clusters = format!("{url}/kubernetes/namespaces/testing/clusters");
    let apps = format!("{url}/kubernetes/namespaces/testing/applications");
    let cluster = json!({
        "metadata": {"name": "de", "labels": {"location": "DE"}},
        "spec": {"kubeconfig": kubeconfig(), "constraints": {"cloud": {}}},
    });
    let response = http.post(&clusters).json(&cluster).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let mut online: Value = response.json().await.unwrap();
    online["status"]["state"] = json!("ONLINE");
    let response = http
        .put(format!("{clusters}/de/status"))
        .json(&online)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let app = json!({
        "metadata": {"name": "echo"},
        "spec": {
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}],
            "constraints": {"cluster": {"labels": ["location is DE"]}},
        },
    });
    let response = http.post(&apps).json(&app).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let bound: Value = eventually(
        "the application to be bound",
        Duration::from_secs(30),
        || {
            let request = http.get(format!("{apps}/echo")).send();
            async move {
                let app: Value = request.await.ok()?.json().await.ok()?;
                (!app["status"]["scheduled_to"].is_null()).then_some(app)
            }
        },
    )
    .await;
    assert_eq!(bound["status"]["scheduled_to"]["name"], "de");
    assert!(!bound["status"]["kube_controller_triggered"].is_null());
}

/// The in-process scheduler of a default `krake-server`, behind TLS and
/// RBAC, places an application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_placed_in_process() {
    let secure = Secure::new(true);
    let server = secure.serve(&NO_KUBERNETES).await;
    placement(&secure.admin(), &secure.url()).await;
    drop(server);
}

/// The same through `krake-server controller scheduler`, authenticated by
/// its certificate under Krake's role:scheduler (least privilege).
/// Whether a controller's log shows a request the API refused with 403
/// (a port such as 44903 in the log is not one).
fn refused(log: &str) -> bool {
    log.contains("answered 403") || log.contains("Forbidden")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_placed_split() {
    let secure = Secure::new(true);
    let _server = secure.serve(&NO_CONTROLLERS).await;
    let mut scheduler = secure.connected_controller("scheduler").await;
    placement(&secure.admin(), &secure.url()).await;
    assert!(!refused(&scheduler.log()), "{}", scheduler.log());
    assert!(scheduler.terminate().success(), "{}", scheduler.log());
}
