//! End to end: Krake's application hooks with a running `krake-server`
//! (in-process controllers) and a fake Kubernetes cluster.
//!
//! - The complete hook: the token Secret and the environment variables land
//!   on the cluster where the workload runs (the kubeconfig context's
//!   namespace for items without one); the test acts as the workload: it
//!   reads the token and URL from the Secret and calls them; the application
//!   goes away with its resources. A wrong token changes nothing.
//! - Removing the hook from the spec removes its Secret and variables.
//! - With TLS and RBAC: the certificate in the mounted Secret is signed by
//!   the intermediate and authenticates as `system:complete-hook`, which may
//!   complete its application and nothing else.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use krake_data::kinds::kubernetes::{Application, ApplicationState};
use krake_testkit::kube::FakeCluster;
use krake_testkit::process::{ChildProcess, free_ports};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use support::krake::{Krake, NS, WITHIN};

/// The namespace of the fake cluster's kubeconfig context.
const CONTEXT_NS: &str = "work";

fn decode(secret: &Value, key: &str) -> String {
    let data = secret["data"][key].as_str().unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// A fake cluster whose kubeconfig context names [`CONTEXT_NS`] (which
/// exists), and its kubeconfig.
async fn cluster() -> (FakeCluster, Value) {
    let fake = FakeCluster::start().await.unwrap();
    fake.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": CONTEXT_NS}}))
        .unwrap();
    let mut kubeconfig = fake.kubeconfig();
    kubeconfig["contexts"][0]["context"]["namespace"] = json!(CONTEXT_NS);
    (fake, kubeconfig)
}

fn job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "work", "image": "busybox", "env": [{"name": "MODE", "value": "batch"}]},
        ]}}},
    })
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "web", "image": "nginx"},
            ]}}},
    })
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_through_its_hook_and_is_removed() {
    let krake = Krake::start().await;
    let (fake, kubeconfig) = cluster().await;
    krake.register_online("c", kubeconfig, json!({})).await;
    krake
        .create_app(
            "batch",
            json!([job("batch")]),
            json!({"hooks": ["complete"]}),
        )
        .await;
    let secret_name = "batch-krake-complete-secret-token";
    // The Secret is applied before the Job that reads it.
    krake
        .until("the Job on the cluster", || async {
            fake.get("batch/v1", "Job", Some(CONTEXT_NS), "batch")
                .is_some()
        })
        .await;
    let secret = fake
        .get("v1", "Secret", Some(CONTEXT_NS), secret_name)
        .expect("the token Secret");
    let app = krake
        .app_until("batch", "applied", |a| a.status.running_on.is_some())
        .await;

    // The Job went where its Secret is: the context's namespace.
    let deployed = fake
        .get("batch/v1", "Job", Some(CONTEXT_NS), "batch")
        .expect("the Job in the context's namespace");
    assert!(
        fake.get("v1", "Secret", Some("default"), secret_name)
            .is_none()
    );
    let container = &deployed["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_names(container),
        ["MODE", "KRAKE_COMPLETE_TOKEN", "KRAKE_COMPLETE_URL"]
    );
    assert_eq!(
        container["env"][1]["valueFrom"]["secretKeyRef"],
        json!({"name": secret_name, "key": "krake_complete_token"})
    );
    assert!(
        container.get("volumeMounts").is_none(),
        "no TLS, no certificates"
    );

    // The workload's view: the token and URL from the Secret.
    let token = decode(&secret, "krake_complete_token");
    let url = decode(&secret, "krake_complete_url");
    assert_eq!(Some(&token), app.status.complete_token.as_ref());
    assert!(token.len() >= 43, "{token}");
    assert!(
        url.starts_with("http://127.0.0.1:")
            && url.ends_with(&format!(
                "/kubernetes/namespaces/{NS}/applications/batch/complete"
            )),
        "{url}"
    );

    // The Secret is healed like the rest of the manifest.
    assert!(fake.delete("v1", "Secret", Some(CONTEXT_NS), secret_name));
    krake
        .until("the token Secret back", || async {
            fake.get("v1", "Secret", Some(CONTEXT_NS), secret_name)
                .is_some()
        })
        .await;

    // A wrong token is refused and changes nothing.
    let http = reqwest::Client::new();
    let before = krake.api::<Application>().get("batch").await.unwrap();
    for body in [json!({"token": "wrong"}), json!({})] {
        let response = http.put(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "{body}");
    }
    let after = krake.api::<Application>().get("batch").await.unwrap();
    assert!(after.metadata.deleted.is_none());
    assert_eq!(after.status.state, before.status.state);
    assert!(
        fake.get("batch/v1", "Job", Some(CONTEXT_NS), "batch")
            .is_some()
    );

    // The right one: the application goes, with the Job and the Secret.
    let response = http
        .put(&url)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    krake.app_gone("batch").await;
    assert!(
        fake.get("batch/v1", "Job", Some(CONTEXT_NS), "batch")
            .is_none()
    );
    assert!(
        fake.get("v1", "Secret", Some(CONTEXT_NS), secret_name)
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_hook_removes_its_secret_and_variables() {
    let krake = Krake::start().await;
    let (fake, kubeconfig) = cluster().await;
    krake.register_online("c", kubeconfig, json!({})).await;
    krake
        .create_app(
            "web",
            json!([deployment("web")]),
            json!({"hooks": ["complete", "shutdown"]}),
        )
        .await;
    let containers = || {
        fake.get("apps/v1", "Deployment", Some(CONTEXT_NS), "web")
            .map(|d| d["spec"]["template"]["spec"]["containers"][0].clone())
    };
    krake
        .eventually(
            "the hooks' variables in the Deployment",
            || async { containers() },
            |c| env_names(c).len() == 4,
        )
        .await;
    for hook in ["complete", "shutdown"] {
        let name = format!("web-krake-{hook}-secret-token");
        krake
            .until("the hook's Secret", || async {
                fake.get("v1", "Secret", Some(CONTEXT_NS), &name).is_some()
            })
            .await;
    }
    krake
        .update_spec("web", |spec| spec["hooks"] = json!(["shutdown"]))
        .await;
    krake
        .eventually(
            "the complete hook's variables gone",
            || async { containers().map(|c| env_names(&c)) },
            |env| env == &["KRAKE_SHUTDOWN_TOKEN", "KRAKE_SHUTDOWN_URL"],
        )
        .await;
    krake
        .until("the complete hook's Secret gone", || async {
            fake.get(
                "v1",
                "Secret",
                Some(CONTEXT_NS),
                "web-krake-complete-secret-token",
            )
            .is_none()
        })
        .await;
    assert!(
        fake.get(
            "v1",
            "Secret",
            Some(CONTEXT_NS),
            "web-krake-shutdown-secret-token"
        )
        .is_some()
    );
    // No hooks left: no variables, no Secrets.
    krake
        .update_spec("web", |spec| spec["hooks"] = json!([]))
        .await;
    krake
        .eventually(
            "no hooks' variables left",
            || async { containers().map(|c| env_names(&c)) },
            Vec::is_empty,
        )
        .await;
    krake
        .until("the shutdown hook's Secret gone", || async {
            fake.get(
                "v1",
                "Secret",
                Some(CONTEXT_NS),
                "web-krake-shutdown-secret-token",
            )
            .is_none()
        })
        .await;
    let app = krake.api::<Application>().get("web").await.unwrap();
    assert_ne!(
        app.status.state,
        ApplicationState::Failed,
        "{:?}",
        app.status.reason
    );
}

/// A CA of the test's own.
fn root_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate (PEM) and key (PEM) signed by `ca`.
fn issue(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    params_of: impl FnOnce(&mut CertificateParams),
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params_of(&mut params);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn eventually<T>(
    what: &str,
    server: &ChildProcess,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; krake-server's log:\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_certificates_authenticate_as_the_hook_user() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_ca("krake CA");
    let (server_cert, server_key) = issue(
        &root,
        "system:api-server",
        &["localhost", "127.0.0.1"],
        |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        },
    );
    let (admin_cert, admin_key) = issue(&root, "system:admin", &[], |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    });
    let (intermediate, intermediate_key) = issue(&root, "complete signing", &[], |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    });
    let [port] = free_ports().unwrap();
    let config = format!(
        "port: {port}\nstore: {{data_dir: {data}}}\n\
         tls: {{enabled: true, cert: {cert}, key: {key}, client_ca: {ca}}}\n\
         authentication: {{allow_anonymous: false}}\nauthorization: RBAC\n\
         controllers:\n  kubernetes_application:\n    connect_timeout: 2\n    request_timeout: 5\n    list_timeout: 3\n    \
         hooks:\n      complete: {{intermediate_src: {intermediate}, intermediate_key_src: {intermediate_key}}}\n",
        data = dir.path().join("data").display(),
        cert = write(dir.path(), "server.pem", &server_cert),
        key = write(dir.path(), "server-key.pem", &server_key),
        ca = write(dir.path(), "ca.pem", &root.pem()),
        intermediate = write(dir.path(), "intermediate.pem", &intermediate),
        intermediate_key = write(dir.path(), "intermediate-key.pem", &intermediate_key),
    );
    let config_file = write(dir.path(), "api.yaml", &config);
    let base_roles = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/base_roles.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_krake-server"))
        .args(["--config", &config_file, "bootstrap", base_roles])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_krake-server"));
    command
        .args(["--config", &config_file])
        .env("KRAKE_LOG_LEVEL", "info")
        .env_remove("RUST_LOG");
    let mut server =
        ChildProcess::spawn("krake-server", command, dir.path().join("server.log")).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let trust = reqwest::Certificate::from_pem(root.pem().as_bytes()).unwrap();
    let admin = reqwest::Client::builder()
        .tls_certs_only([trust])
        .identity(
            reqwest::Identity::from_pem(format!("{admin_cert}{admin_key}").as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    server
        .wait_ready(WITHIN, || {
            let request = admin.get(format!("{url}/readyz")).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await
        .unwrap();

    let (fake, kubeconfig) = cluster().await;
    let clusters = format!("{url}/kubernetes/namespaces/{NS}/clusters");
    let response = admin
        .post(&clusters)
        .json(&json!({"api": "kubernetes", "kind": "Cluster",
            "metadata": {"name": "c", "namespace": NS},
            "spec": {"kubeconfig": kubeconfig, "constraints": {"cloud": {}}}}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    let response = admin
        .post(format!("{url}/kubernetes/namespaces/{NS}/applications"))
        .json(&json!({"api": "kubernetes", "kind": "Application",
            "metadata": {"name": "batch", "namespace": NS},
            "spec": {"manifest": [job("batch")], "constraints": {"cluster": {}},
                     "hooks": ["complete"]}}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );

    // The Secrets are applied before the Job that reads them.
    let job = eventually("the Job on the cluster", &server, async || {
        fake.get("batch/v1", "Job", Some(CONTEXT_NS), "batch")
    })
    .await;
    let certs = fake
        .get(
            "v1",
            "Secret",
            Some(CONTEXT_NS),
            "batch-krake-complete-secret-certs",
        )
        .expect("the certificates Secret");
    let tokens = fake
        .get(
            "v1",
            "Secret",
            Some(CONTEXT_NS),
            "batch-krake-complete-secret-token",
        )
        .expect("the token Secret");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "batch-krake-complete-volume",
                "secret": {"secretName": "batch-krake-complete-secret-certs"}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "batch-krake-complete-volume", "mountPath": "/etc/krake_complete_certs/"}])
    );

    // The workload: the mounted files, the token and the URL.
    let cert_pem = decode(&certs, "cert.pem");
    let key_pem = decode(&certs, "key.pem");
    let bundle = decode(&certs, "ca-bundle.pem");
    assert!(bundle.contains(root.pem().trim()), "the Krake CA");
    assert!(bundle.contains(intermediate.trim()), "the intermediate");
    assert!(cert_pem.contains(intermediate.trim()), "the chain");
    let token = decode(&tokens, "krake_complete_token");
    let complete_url = decode(&tokens, "krake_complete_url");
    assert_eq!(
        complete_url,
        format!("{url}/kubernetes/namespaces/{NS}/applications/batch/complete")
    );
    let roots = reqwest::Certificate::from_pem_bundle(bundle.as_bytes()).unwrap();
    let hook = reqwest::Client::builder()
        .tls_certs_only(roots)
        .identity(reqwest::Identity::from_pem(format!("{cert_pem}{key_pem}").as_bytes()).unwrap())
        .build()
        .unwrap();
    // Authenticated as system:complete-hook: anything else is forbidden.
    let response = hook.get(&clusters).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = hook
        .put(format!(
            "{url}/kubernetes/namespaces/{NS}/applications/batch/status"
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // Without a certificate: not authenticated.
    let anonymous = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(bundle.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = anonymous
        .put(&complete_url)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Its own hook, with its token.
    let response = hook
        .put(&complete_url)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let app_url = format!("{url}/kubernetes/namespaces/{NS}/applications/batch");
    eventually("the application removed", &server, async || {
        let response = admin.get(&app_url).send().await.ok()?;
        (response.status() == 404).then_some(())
    })
    .await;
    for (api_version, kind, name) in [
        ("batch/v1", "Job", "batch"),
        ("v1", "Secret", "batch-krake-complete-secret-certs"),
        ("v1", "Secret", "batch-krake-complete-secret-token"),
    ] {
        assert!(
            fake.get(api_version, kind, Some(CONTEXT_NS), name)
                .is_none(),
            "{kind} {name} left; log:\n{}",
            server.log_tail()
        );
    }
    server.kill();
}
