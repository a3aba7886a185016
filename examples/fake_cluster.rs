//! A fake Kubernetes cluster to try krake-rs without one.
//!
//! It starts [`krake_testkit::kube::FakeCluster`], an in-process fake of a
//! Kubernetes API server on `https://127.0.0.1:<free port>` with its own CA
//! and client certificate, writes its kubeconfig (YAML) to the given path,
//! prints one line with the URL and the path, and serves until Ctrl-C. While
//! it serves it prints a line whenever a workload, Service, ConfigMap or
//! Secret appears in or disappears from it, so you can follow what Krake
//! does to the cluster.
//!
//! `cargo run -p krake-examples --example fake_cluster -- kubeconfig.yaml`
//!
//! Register it with `krakectl kube cluster register -k kubeconfig.yaml`: to
//! Krake it looks like a cluster with one Ready Node `node-1` and the
//! namespaces `default`, `kube-system` and `kube-public`.
//!
//! What it is not: no container ever runs and nothing is pulled or
//! reachable. A simulated kubelet only marks workloads ready (Deployments
//! get their Pods, all Running and Ready; Services get a cluster IP and node
//! ports, LoadBalancers an address) within milliseconds of their creation.
//! The node ports are numbers in its store, not open sockets. Everything is
//! kept in memory and lost at exit; a new start has a new port and new
//! certificates, so register the cluster again. See the module docs of
//! `krake_testkit::kube` for what the fake emulates of the Kubernetes API
//! and what it leaves out.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use krake_testkit::kube::FakeCluster;
use serde_json::Value;

/// The kinds whose objects are reported as they appear and disappear.
const WATCHED: [(&str, &str); 9] = [
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("networking.k8s.io/v1", "Ingress"),
];

/// The fake's kubeconfig as YAML.
pub fn kubeconfig_yaml(fake: &FakeCluster) -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&fake.kubeconfig())
}

/// Starts a fake cluster and writes its kubeconfig to `path`. Dropping the
/// fake stops it.
pub async fn start(path: &Path) -> Result<FakeCluster, Box<dyn std::error::Error>> {
    let fake = FakeCluster::start().await?;
    std::fs::write(path, kubeconfig_yaml(&fake)?)?;
    Ok(fake)
}

/// `Kind namespace/name` of every watched object in the fake.
pub fn objects(fake: &FakeCluster) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (api_version, kind) in WATCHED {
        for object in fake.list(api_version, kind, None) {
            let field = |f: &str| {
                object
                    .pointer(&format!("/metadata/{f}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            names.insert(format!("{kind} {}/{}", field("namespace"), field("name")));
        }
    }
    names
}

#[allow(dead_code)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: fake_cluster KUBECONFIG_PATH");
        std::process::exit(2);
    };
    let path = Path::new(&path);
    let fake = match start(path).await {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("fake_cluster: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "fake cluster serving {} (kubeconfig written to {}); Ctrl-C to stop",
        fake.url(),
        path.display()
    );
    let mut seen = objects(&fake);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                let now = objects(&fake);
                for added in now.difference(&seen) {
                    println!("created {added}");
                }
                for removed in seen.difference(&now) {
                    println!("deleted {removed}");
                }
                seen = now;
            }
        }
    }
}
