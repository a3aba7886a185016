//! TOSCA and CSAR applications end to end, against the real `krake-server`
//! binary with its in-process controllers and a fake Kubernetes cluster:
//!
//! - an inline template, a template by URL and a CSAR archive by URL
//!   (served by the test on loopback) deploy exactly the objects that the
//!   equivalent plain manifest deploys, through TRANSLATING (the manifest
//!   written into `spec.manifest`) to RUNNING;
//! - every kind of bad input (a document that does not parse, an
//!   unsupported node type, an unknown or valueless input, a node without
//!   `spec`, a CSAR without `TOSCA.meta` or naming a missing file, a URL
//!   that refuses connections, answers 404, stalls or is too large) ends
//!   FAILED with INVALID_TOSCA_MANIFEST and a message naming the problem;
//!   FAILED stays FAILED until the user changes the application, which then
//!   deploys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use krake_client::{WatchConfig, WatchEvent};
use krake_data::ReasonCode;
use krake_data::kinds::kubernetes::{Application, ApplicationState};
use krake_testkit::kube::FakeCluster;
use serde_json::{Value, json};
use support::krake::{CONFIG, Krake, NS};

/// The plain manifest every variant must deploy.
fn plain_manifest() -> Value {
    json!([
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"tier": "front"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]},
        },
    ])
}

/// The same as TOSCA, with Krake's forms: the Deployment as YAML text
/// joined with `concat` from `get_input` (defaults) and `get_property`, the
/// Service as YAML text as it is.
const TEMPLATE: &str = r#"tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - ec3_custom_types: https://raw.githubusercontent.com/grycap/ec3/tosca/tosca/custom_types.yaml
description: nginx and its service
topology_template:
  inputs:
    replicas:
      type: integer
      default: 2
    image:
      type: string
      default: nginx:1.27
  node_templates:
    web:
      type: tosca.nodes.indigo.KubernetesObject
      properties:
        tier: front
        spec:
          concat:
            - "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels:\n    tier: "
            - get_property: [SELF, tier]
            - "\nspec:\n  replicas: "
            - get_input: replicas
            - "\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: "
            - get_input: image
            - "\n        ports:\n        - containerPort: 80\n"
    web-service:
      type: tosca.nodes.indigo.KubernetesObject
      properties:
        spec: |
          apiVersion: v1
          kind: Service
          metadata:
            name: web
          spec:
            type: NodePort
            selector:
              app: web
            ports:
            - port: 80
              targetPort: 80
"#;

fn inline_template() -> Value {
    serde_saphyr::from_str(TEMPLATE).unwrap()
}

/// A CSAR archive: `TOSCA.meta` (unless `meta` is `None`) and `files`.
fn csar(meta: Option<&str>, files: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    if let Some(meta) = meta {
        zip.start_file("TOSCA-Metadata/TOSCA.meta", options)
            .unwrap();
        zip.write_all(meta.as_bytes()).unwrap();
    }
    for (name, content) in files {
        zip.start_file(*name, options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const META: &str = "TOSCA-Meta-File-Version: 1.0\nCSAR-Version: 1.1\nCreated-By: krake-rs tests\nEntry-Definitions: definitions/app.yaml\n";

/// Templates and archives on loopback, good and bad.
async fn serve_files() -> SocketAddr {
    let good = csar(Some(META), &[("definitions/app.yaml", TEMPLATE)]);
    let no_meta = csar(None, &[("definitions/app.yaml", TEMPLATE)]);
    let no_entry = csar(Some(META), &[("definitions/other.yaml", TEMPLATE)]);
    let app = Router::new()
        .route("/app.yaml", get(|| async { TEMPLATE }))
        .route(
            "/broken.yaml",
            get(|| async { "topology_template: [unclosed\n" }),
        )
        .route("/app.csar", get(move || async move { good }))
        .route("/no-meta.csar", get(move || async move { no_meta }))
        .route("/no-entry.zip", get(move || async move { no_entry }))
        .route(
            "/slow.yaml",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                TEMPLATE
            }),
        )
        .route("/huge.yaml", get(|| async { vec![b'#'; 17 << 20] }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no such file") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The server with a short timeout for TOSCA URLs.
async fn start() -> Krake {
    let config = CONFIG.replace(
        "    list_timeout: 3\n",
        "    list_timeout: 3\n    tosca_timeout: 1\n",
    );
    assert_ne!(config, CONFIG, "the test configuration changed");
    Krake::start_with(&config, &[]).await
}

/// An application from `spec` (no manifest unless `spec` has one).
async fn create(krake: &Krake, name: &str, spec: Value) -> Application {
    let mut full = json!({"manifest": [], "constraints": {"cluster": {}}});
    support::krake::merge(&mut full, spec);
    krake
        .create(json!({"metadata": {"name": name, "namespace": NS}, "spec": full}))
        .await
}

/// What the application put on the cluster: the Deployment and Service
/// `web`, without what the cluster adds (uid, versions, node ports,
/// status).
fn objects_on(fake: &FakeCluster) -> Vec<Value> {
    [("apps/v1", "Deployment"), ("v1", "Service")]
        .into_iter()
        .map(|(api_version, kind)| {
            let mut object = fake
                .get(api_version, kind, Some("default"), "web")
                .unwrap_or_else(|| panic!("no {kind} web on the cluster"));
            let metadata = &object["metadata"];
            let kept = json!({
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "labels": metadata["labels"],
            });
            object["metadata"] = kept;
            if let Some(object) = object.as_object_mut() {
                object.remove("status");
            }
            if let Some(ports) = object["spec"]["ports"].as_array_mut() {
                for port in ports {
                    if let Some(port) = port.as_object_mut() {
                        port.remove("nodePort");
                    }
                }
            }
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
            object
        })
        .collect()
}

/// Records the states the application `name` goes through.
fn record_states(krake: &Krake, name: &str) -> Arc<Mutex<Vec<ApplicationState>>> {
    let states: Arc<Mutex<Vec<ApplicationState>>> = Arc::default();
    let mut events = Box::pin(krake.api::<Application>().watch(WatchConfig::default()));
    let (seen, name) = (states.clone(), name.to_owned());
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let app = match event {
                Ok(WatchEvent::Added(app) | WatchEvent::Modified(app)) => app,
                _ => continue,
            };
            if app.metadata.name == name {
                let mut seen = seen.lock().unwrap();
                if seen.last() != Some(&app.status.state) {
                    seen.push(app.status.state);
                }
            }
        }
    });
    states
}

/// Deploys `spec` as application `name`, checks that it deployed what
/// the plain manifest deploys and went through TRANSLATING (unless plain),
/// then deletes it.
async fn deploy_and_compare(
    krake: &Krake,
    fake: &FakeCluster,
    name: &str,
    spec: Value,
    expected: Option<&[Value]>,
) -> Vec<Value> {
    let states = record_states(krake, name);
    // The watch is open before the application exists.
    tokio::time::sleep(Duration::from_millis(200)).await;
    create(krake, name, spec).await;
    let app = krake.running(name).await;
    assert_eq!(
        serde_json::to_value(&app.spec.manifest).unwrap(),
        plain_manifest(),
        "{name}: the translated manifest"
    );
    let objects = objects_on(fake);
    if let Some(expected) = expected {
        assert_eq!(objects, expected, "{name}: the objects on the cluster");
        let states = states.lock().unwrap().clone();
        let translating = states
            .iter()
            .position(|s| *s == ApplicationState::Translating);
        let creating = states.iter().position(|s| *s == ApplicationState::Creating);
        assert!(
            translating.is_some() && translating < creating,
            "{name}: TRANSLATING before CREATING: {states:?}"
        );
    }
    krake.delete_app(name).await;
    krake.app_gone(name).await;
    assert!(
        fake.get("apps/v1", "Deployment", Some("default"), "web")
            .is_none()
    );
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tosca_inline_by_url_and_csar_deploy_what_the_plain_manifest_deploys() {
    let files = serve_files().await;
    let krake = start().await;
    let fake = FakeCluster::start().await.unwrap();
    krake
        .register_online("fake", fake.kubeconfig(), json!({}))
        .await;

    let plain = deploy_and_compare(
        &krake,
        &fake,
        "plain",
        json!({"manifest": plain_manifest()}),
        None,
    )
    .await;
    assert_eq!(plain[0]["spec"]["replicas"], 2);
    assert_eq!(plain[0]["metadata"]["labels"]["tier"], "front");
    for (name, spec) in [
        ("inline", json!({"tosca": inline_template()})),
        (
            "by-url",
            json!({"tosca": format!("http://{files}/app.yaml")}),
        ),
        ("csar", json!({"csar": format!("http://{files}/app.csar")})),
    ] {
        deploy_and_compare(&krake, &fake, name, spec, Some(&plain)).await;
    }
}

/// A template with these node templates and inputs.
fn template_with(nodes: Value, inputs: Value) -> Value {
    json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "topology_template": {"inputs": inputs, "node_templates": nodes},
    })
}

fn kubernetes_object(spec: Value) -> Value {
    json!({"type": "tosca.nodes.indigo.KubernetesObject", "properties": {"spec": spec}})
}

/// Waits for FAILED and returns the reason's message.
async fn failed_with(krake: &Krake, name: &str) -> String {
    let app = krake
        .app_until(name, "FAILED", |a| {
            a.status.state == ApplicationState::Failed
        })
        .await;
    let reason = app
        .status
        .reason
        .expect("a FAILED application has a reason");
    assert_eq!(reason.code, ReasonCode::InvalidToscaManifest, "{name}");
    assert!(app.spec.manifest.is_empty(), "{name}");
    reason.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_and_urls_end_failed_with_their_reason() {
    let files = serve_files().await;
    let closed = closed_port();
    let krake = start().await;
    let fake = FakeCluster::start().await.unwrap();
    krake
        .register_online("fake", fake.kubeconfig(), json!({}))
        .await;

    let config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n";
    let with_input = json!({"concat": ["apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ", {"get_input": "name"}, "}\n"]});
    let cases: Vec<(&str, Value, String)> = vec![
        (
            "unparsable",
            json!({"tosca": format!("http://{files}/broken.yaml")}),
            format!(
                "http://{files}/broken.yaml: not a valid YAML document: line 1 column 20: unclosed bracket '['"
            ),
        ),
        (
            "compute",
            json!({"tosca": template_with(
                json!({"cm": kubernetes_object(json!(config_map)), "vm": {"type": "tosca.nodes.Compute"}}),
                json!({}),
            )}),
            "spec.tosca.topology_template.node_templates.vm.type: unsupported node type \
             \"tosca.nodes.Compute\"; only tosca.nodes.indigo.KubernetesObject is supported"
                .to_owned(),
        ),
        (
            "unknown-input",
            json!({"tosca": template_with(json!({"cm": kubernetes_object(with_input.clone())}), json!({}))}),
            "spec.tosca.topology_template.node_templates.cm.properties.spec.concat[1].get_input: \
             unknown input \"name\" (not in topology_template.inputs)"
                .to_owned(),
        ),
        (
            "valueless-input",
            json!({"tosca": template_with(
                json!({"cm": kubernetes_object(with_input)}),
                json!({"name": {"type": "string"}}),
            )}),
            "spec.tosca.topology_template.node_templates.cm.properties.spec.concat[1].get_input: \
             input \"name\" has no value and no default"
                .to_owned(),
        ),
        (
            "no-spec",
            json!({"tosca": template_with(
                json!({"cm": {"type": "tosca.nodes.indigo.KubernetesObject", "properties": {"name": "cm"}}}),
                json!({}),
            )}),
            "spec.tosca.topology_template.node_templates.cm.properties.spec: missing".to_owned(),
        ),
        (
            "no-meta",
            json!({"csar": format!("http://{files}/no-meta.csar")}),
            format!(
                "http://{files}/no-meta.csar: TOSCA-Metadata/TOSCA.meta: missing from the CSAR archive"
            ),
        ),
        (
            "no-entry",
            json!({"csar": format!("http://{files}/no-entry.zip")}),
            format!(
                "http://{files}/no-entry.zip: TOSCA-Metadata/TOSCA.meta: Entry-Definitions names \
                 \"definitions/app.yaml\", which is not in the CSAR archive"
            ),
        ),
        (
            "refused",
            json!({"tosca": format!("http://127.0.0.1:{closed}/app.yaml")}),
            format!("http://127.0.0.1:{closed}/app.yaml: cannot be read: "),
        ),
        (
            "not-found",
            json!({"csar": format!("http://{files}/missing.csar")}),
            format!(
                "http://{files}/missing.csar: cannot be read: the server answered 404 Not Found"
            ),
        ),
        (
            "stalled",
            json!({"tosca": format!("http://{files}/slow.yaml")}),
            format!("http://{files}/slow.yaml: cannot be read: no complete answer within 1s"),
        ),
        (
            "huge",
            json!({"tosca": format!("http://{files}/huge.yaml")}),
            format!("http://{files}/huge.yaml: cannot be read: larger than 16777216 bytes"),
        ),
    ];
    for (name, spec, _) in &cases {
        create(&krake, name, spec.clone()).await;
    }
    for (name, _, expected) in &cases {
        let message = failed_with(&krake, name).await;
        println!("{name}: {message}");
        assert!(
            message.starts_with(expected.as_str()),
            "{name}: the reason {message:?} does not start with {expected:?}"
        );
    }
    let refused = failed_with(&krake, "refused").await.to_lowercase();
    assert!(refused.contains("connect"), "{refused}");

    // FAILED stays FAILED (nothing retried, nothing deployed)...
    let before = krake.api::<Application>().get("compute").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = krake.api::<Application>().get("compute").await.unwrap();
    assert_eq!(after.status.state, ApplicationState::Failed);
    assert_eq!(after.status.reason, before.status.reason);
    assert_eq!(after.metadata.modified, before.metadata.modified);
    assert!(fake.get("v1", "ConfigMap", Some("default"), "cm").is_none());

    // ...until the user changes the application: then it deploys.
    krake
        .update_spec("compute", |spec| {
            spec["tosca"] = template_with(
                json!({"cm": kubernetes_object(json!(config_map))}),
                json!({}),
            );
        })
        .await;
    let app = krake.running("compute").await;
    assert_eq!(app.status.reason, None);
    assert_eq!(app.spec.manifest.len(), 1);
    let cm = fake
        .get("v1", "ConfigMap", Some("default"), "cm")
        .expect("the ConfigMap is on the cluster");
    assert_eq!(cm["metadata"]["name"], "cm");
}
