//! The Kubernetes controllers of the real `krake-server` binary end to end:
//! the server runs with its in-process controllers (scheduler, garbage
//! collector, Kubernetes application and cluster controllers, all on by
//! default) on the embedded store, and manages fake Kubernetes clusters
//! (`krake_testkit::kube`) that it reaches over HTTPS with the kubeconfigs
//! the test registers. The test talks to Krake only through `krake_client`,
//! as a user would, and looks at the clusters through the fakes.
//!
//! Registration of two clusters (ONLINE), scheduling by metrics, deployment
//! of a Deployment and a NodePort Service (RUNNING, `status.services`),
//! healing of a Deployment deleted on the cluster (timed) and of an edited
//! field, removal of a field dropped from the manifest while a label added
//! by someone else stays, migration when the metrics change, deletion; the
//! same life for a custom resource.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;

use krake_data::kinds::kubernetes::{Application, ApplicationState};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use support::krake::Krake;

fn deployment(name: &str, replicas: i64, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "web",
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}],
                    "env": env,
                }]},
            },
        },
    })
}

fn node_port_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": "NodePort",
            "selector": {"app": name},
            "ports": [{"port": 80, "targetPort": 80}],
        },
    })
}

fn on(app: &Application) -> String {
    app.status
        .running_on
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

fn deployment_on(fake: &FakeCluster, name: &str) -> Option<Value> {
    fake.get("apps/v1", "Deployment", Some("default"), name)
}

fn service_on(fake: &FakeCluster, name: &str) -> Option<Value> {
    fake.get("v1", "Service", Some("default"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_deployed_healed_migrated_and_removed() {
    let started = Instant::now();
    let krake = Krake::start().await;
    let a = FakeCluster::start().await.unwrap();
    let b = FakeCluster::start().await.unwrap();

    // Two clusters; the metrics make a the better one.
    krake
        .static_metrics(&[("load-a", 80.0), ("load-b", 20.0)])
        .await;
    krake
        .register_online(
            "a",
            a.kubeconfig(),
            json!({"metrics": [{"name": "load-a", "weight": 1.0}]}),
        )
        .await;
    krake
        .register_online(
            "b",
            b.kubeconfig(),
            json!({"metrics": [{"name": "load-b", "weight": 1.0}]}),
        )
        .await;

    // Scheduled to a, applied, RUNNING with its service's address.
    let env_vars = json!([{"name": "MODE", "value": "fast"}, {"name": "DEBUG", "value": "1"}]);
    krake
        .create_app(
            "web",
            json!([deployment("web", 2, env_vars), node_port_service("web")]),
            json!({}),
        )
        .await;
    let app = krake
        .app_until("web", "RUNNING with its service", |a| {
            a.status.state == ApplicationState::Running && a.status.services.contains_key("web")
        })
        .await;
    assert_eq!(on(&app), "a");
    let deployed = deployment_on(&a, "web").expect("the Deployment is on cluster a");
    assert_eq!(deployed["spec"]["replicas"], 2);
    let env = &deployed["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(env.as_array().map(Vec::len), Some(2), "{deployed:#}");
    let service = service_on(&a, "web").expect("the Service is on cluster a");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(app.status.services["web"], format!("127.0.0.1:{node_port}"));
    assert!(deployment_on(&b, "web").is_none());
    assert!(service_on(&b, "web").is_none());

    // Deleted on the cluster: back (a new object) within a second or so.
    let healed = krake.heal_time(&a, ("apps/v1", "Deployment", "web")).await;
    println!("heal time (Deployment): {healed:?}");

    // An observed field edited on the cluster: reverted.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"spec": {"replicas": 5}}),
    )
    .unwrap();
    let edited = Instant::now();
    krake
        .eventually(
            "replicas back to 2",
            || async { deployment_on(&a, "web") },
            |d| d["spec"]["replicas"] == 2,
        )
        .await;
    println!("edited replicas reverted after {:?}", edited.elapsed());

    // A label someone else adds, then a field removed from the manifest:
    // the field disappears from the cluster object, the label stays.
    a.merge_patch(
        "apps/v1",
        "Deployment",
        Some("default"),
        "web",
        json!({"metadata": {"labels": {"team": "ops"}}}),
    )
    .unwrap();
    krake
        .update_spec("web", |spec| {
            spec["manifest"][0]["spec"]["template"]["spec"]["containers"][0]["env"] =
                json!([{"name": "MODE", "value": "fast"}]);
        })
        .await;
    let kept = krake
        .eventually(
            "DEBUG removed from the container's env",
            || async { deployment_on(&a, "web") },
            |d| {
                let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
                env.as_array()
                    .is_some_and(|e| e.len() == 1 && e[0]["name"] == "MODE")
            },
        )
        .await;
    assert_eq!(kept["metadata"]["labels"]["team"], "ops", "{kept:#}");
    assert_eq!(kept["spec"]["replicas"], 2, "{kept:#}");

    // The metrics change so that b wins: the application migrates, its
    // resources are on b and gone from a.
    krake
        .set_static(&[("load-a", 10.0), ("load-b", 90.0)])
        .await;
    let changed = Instant::now();
    let app = krake
        .app_until("web", "running on b", |a| {
            on(a) == "b"
                && a.status.state == ApplicationState::Running
                && a.status.services.contains_key("web")
        })
        .await;
    println!("migrated to b after {:?}", changed.elapsed());
    let moved = deployment_on(&b, "web").expect("the Deployment is on cluster b");
    let env = &moved["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "MODE", "value": "fast"}]),
        "{moved:#}"
    );
    let service = service_on(&b, "web").expect("the Service is on cluster b");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert_eq!(app.status.services["web"], format!("127.0.0.1:{node_port}"));
    krake
        .until("the resources gone from a", || async {
            deployment_on(&a, "web").is_none() && service_on(&a, "web").is_none()
        })
        .await;

    // Deleted: the resources are gone from b and the object is removed.
    krake.delete_app("web").await;
    krake.app_gone("web").await;
    assert!(deployment_on(&b, "web").is_none());
    assert!(service_on(&b, "web").is_none());
    assert!(deployment_on(&a, "web").is_none());
    println!("whole scenario: {:?}", started.elapsed());
}

fn crontab_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {
            "group": "stable.example.com",
            "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    })
}

fn crontab(name: &str, schedule: &str) -> Value {
    json!({
        "apiVersion": "stable.example.com/v1",
        "kind": "CronTab",
        "metadata": {"name": name},
        "spec": {"cronSpec": schedule, "image": "backup:1"},
    })
}

const CRONTAB: &str = "stable.example.com/v1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_resource_is_deployed_healed_and_removed() {
    let krake = Krake::start().await;
    let fake = FakeCluster::start().await.unwrap();
    fake.create(crontab_crd()).unwrap();
    krake
        .register_online(
            "crd",
            fake.kubeconfig(),
            json!({"custom_resources": ["crontabs.stable.example.com"]}),
        )
        .await;

    krake
        .create_app(
            "backup",
            json!([crontab("nightly", "0 3 * * *")]),
            json!({"constraints": {"cluster": {"custom_resources": ["crontabs.stable.example.com"]}}}),
        )
        .await;
    let app = krake.running("backup").await;
    assert_eq!(on(&app), "crd");
    let object = fake
        .get(CRONTAB, "CronTab", Some("default"), "nightly")
        .expect("the CronTab is on the cluster");
    assert_eq!(object["spec"]["cronSpec"], "0 3 * * *");

    // Edited on the cluster: reverted. Deleted: back.
    fake.merge_patch(
        CRONTAB,
        "CronTab",
        Some("default"),
        "nightly",
        json!({"spec": {"cronSpec": "* * * * *"}}),
    )
    .unwrap();
    krake
        .eventually(
            "cronSpec reverted",
            || async { fake.get(CRONTAB, "CronTab", Some("default"), "nightly") },
            |c| c["spec"]["cronSpec"] == "0 3 * * *",
        )
        .await;
    let healed = krake
        .heal_time(&fake, (CRONTAB, "CronTab", "nightly"))
        .await;
    println!("heal time (CronTab): {healed:?}");

    // Deleted with the application.
    krake.delete_app("backup").await;
    krake.app_gone("backup").await;
    assert!(
        fake.get(CRONTAB, "CronTab", Some("default"), "nightly")
            .is_none()
    );
}
