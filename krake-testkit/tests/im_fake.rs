//! The fake Infrastructure Manager (`krake_testkit::im`) over real HTTP
//! with reqwest: the whole lifecycle of an infrastructure, IM's auth data
//! and its literal `\n` separator, content types and error bodies, faults
//! and request counting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use krake_testkit::im::{
    Durations, ImConfig, ImFake, LINE_SEPARATOR, OpenStackCredentials, RequestKind, states,
};
use krake_testkit::kube::FakeCluster;
use reqwest::StatusCode;
use serde_json::Value;

/// A TOSCA template like Krake's IM cluster templates: a front node and
/// `wn_num` workers, a `kubeconfig` output.
fn tosca(workers: u64) -> String {
    format!(
        r#"tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - indigo_custom_types: https://raw.githubusercontent.com/grycap/tosca/main/custom_types.yaml
topology_template:
  inputs:
    wn_num:
      type: integer
      default: {workers}
  node_templates:
    lrms_front_end:
      type: tosca.nodes.indigo.LRMS.FrontEnd.Kubernetes
      requirements:
        - host: front
    front:
      type: tosca.nodes.indigo.Compute
      capabilities:
        scalable:
          properties:
            count: 1
    wn:
      type: tosca.nodes.indigo.Compute
      capabilities:
        scalable:
          properties:
            count: {{ get_input: wn_num }}
  outputs:
    kubeconfig:
      value: {{ get_attribute: [ front, ansible_output, lrms_front_end_front_conf_front, tasks, kube_conf, output ] }}
"#
    )
}

fn fast() -> Durations {
    Durations {
        pending: Duration::from_millis(300),
        configuring: Duration::from_millis(300),
        deleting: Duration::from_millis(300),
    }
}

async fn start(durations: Durations) -> ImFake {
    ImFake::start(ImConfig {
        durations,
        ..ImConfig::default()
    })
    .await
    .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn create(fake: &ImFake, auth: &str, body: &str) -> reqwest::Response {
    http()
        .post(format!("{}/infrastructures?async=true", fake.url()))
        .header("Authorization", auth)
        .header("Content-Type", "text/yaml")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Creates asynchronously and returns the id (the text after
/// `infrastructures/`, as Krake reads it).
async fn create_id(fake: &ImFake, body: &str) -> String {
    let response = create(fake, &fake.authorization(), body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    text.rsplit_once("infrastructures/").unwrap().1.to_string()
}

async fn get(fake: &ImFake, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", fake.url()))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap()
}

async fn state(fake: &ImFake, id: &str) -> (String, BTreeMap<String, String>) {
    let response = get(fake, &format!("/infrastructures/{id}/state")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.unwrap();
    let state = body["state"]["state"].as_str().unwrap().to_string();
    let vms = serde_json::from_value(body["state"]["vm_states"].clone()).unwrap();
    (state, vms)
}

/// Polls the state until it is `want`; the states seen on the way.
async fn wait_state(fake: &ImFake, id: &str, want: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let (s, _) = state(fake, id).await;
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == want {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {want}: saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outputs(fake: &ImFake, id: &str) -> Value {
    let response = get(fake, &format!("/infrastructures/{id}/outputs")).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["outputs"].clone()
}

#[tokio::test]
async fn lifecycle_create_states_outputs_update_reconfigure_delete() {
    let cluster = FakeCluster::start().await.unwrap();
    let kubeconfig = serde_saphyr::to_string(&cluster.kubeconfig()).unwrap();
    // Phases long enough that a loaded machine still sees each state.
    let fake = start(Durations {
        pending: Duration::from_secs(1),
        configuring: Duration::from_secs(1),
        deleting: Duration::from_secs(1),
    })
    .await;
    fake.set_kubeconfig(&kubeconfig);

    // Create, asynchronously: the URI at once, the id in `InfID`.
    let response = create(&fake, &fake.authorization(), &tosca(2)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/uri-list"
    );
    let inf_id = response.headers()["InfID"].to_str().unwrap().to_string();
    let uri = response.text().await.unwrap();
    assert_eq!(uri, format!("{}/infrastructures/{inf_id}", fake.url()));

    // pending, one VM per instance (front + 2 workers), then running and
    // configured.
    let (s, vms) = state(&fake, &inf_id).await;
    assert_eq!(s, states::PENDING);
    assert_eq!(vms.len(), 3);
    assert!(vms.values().all(|v| v == states::PENDING));
    assert_eq!(
        outputs(&fake, &inf_id).await,
        serde_json::json!({"kubeconfig": null}),
        "no kubeconfig before contextualization"
    );
    let seen = wait_state(&fake, &inf_id, states::CONFIGURED).await;
    assert_eq!(seen, ["pending", "running", "configured"]);

    // Outputs: the kubeconfig the test configured, a YAML string that
    // points at the fake cluster.
    let out = outputs(&fake, &inf_id).await;
    assert_eq!(out["kubeconfig"].as_str().unwrap(), kubeconfig);
    let parsed: Value = serde_saphyr::from_str(out["kubeconfig"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["clusters"][0]["cluster"]["server"], cluster.url());

    // The list has it, in text and JSON.
    let list = get(&fake, "/infrastructures").await.text().await.unwrap();
    assert_eq!(list, uri);
    let json_list: Value = http()
        .get(format!("{}/infrastructures", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json_list, serde_json::json!({"uri-list": [{"uri": uri}]}));

    // Update (scale to 4 workers): the new VMs' URIs, back through running
    // (new VMs pending first) to configured, the new template recorded.
    let response = http()
        .post(format!(
            "{}/infrastructures/{inf_id}?async=true",
            fake.url()
        ))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .body(tosca(4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let added = response.text().await.unwrap();
    assert_eq!(
        added.lines().collect::<Vec<_>>(),
        [
            format!("{uri}/vms/3").as_str(),
            format!("{uri}/vms/4").as_str()
        ]
    );
    let (s, vms) = state(&fake, &inf_id).await;
    assert_eq!(s, states::PENDING, "new VMs are pending first");
    assert_eq!(vms["0"], states::RUNNING);
    assert_eq!(vms["4"], states::PENDING);
    let seen = wait_state(&fake, &inf_id, states::CONFIGURED).await;
    assert_eq!(seen.last().unwrap(), "configured");
    assert!(seen.contains(&"running".to_string()), "{seen:?}");
    let infra = fake.infrastructure(&inf_id).unwrap();
    assert_eq!(infra.count("wn"), Some(4));
    assert_eq!(infra.count("front"), Some(1));
    assert_eq!(infra.templates, 2);
    assert_eq!(infra.vm_states.len(), 5);
    assert!(infra.template.text.contains("default: 4"));

    // Reconfigure: empty text answer, contextualization again.
    let response = http()
        .put(format!(
            "{}/infrastructures/{inf_id}/reconfigure",
            fake.url()
        ))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["InfID"].to_str().unwrap(), inf_id);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(state(&fake, &inf_id).await.0, states::RUNNING);
    wait_state(&fake, &inf_id, states::CONFIGURED).await;
    assert_eq!(fake.infrastructure(&inf_id).unwrap().reconfigures, 1);

    // Delete, asynchronously: deleting, then 404 "Deleted infrastructure.".
    let response = http()
        .delete(format!(
            "{}/infrastructures/{inf_id}?async=true",
            fake.url()
        ))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "");
    assert_eq!(state(&fake, &inf_id).await.0, states::DELETING);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let response = loop {
        let response = get(&fake, &format!("/infrastructures/{inf_id}/state")).await;
        if response.status() != StatusCode::OK {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "never gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.text().await.unwrap(),
        "Error Getting Inf. prop: Deleted infrastructure."
    );
    assert_eq!(
        get(&fake, "/infrastructures").await.text().await.unwrap(),
        ""
    );
    assert!(fake.live_infrastructures().is_empty());
    assert!(fake.infrastructure(&inf_id).unwrap().deleted);
}

#[tokio::test]
async fn synchronous_create_and_delete_wait() {
    let fake = start(Durations {
        configuring: Duration::from_secs(5),
        ..fast()
    })
    .await;
    let started = std::time::Instant::now();
    let response = http()
        .post(format!("{}/infrastructures", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let id = response.headers()["InfID"].to_str().unwrap().to_string();
    // The VMs exist: past pending.
    assert_eq!(state(&fake, &id).await.0, states::RUNNING);

    let started = std::time::Instant::now();
    let response = http()
        .delete(format!("{}/infrastructures/{id}", fake.url()))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let response = get(&fake, &format!("/infrastructures/{id}/state")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn auth_is_refused_with_401_and_imss_bodies() {
    let fake = start(fast()).await;
    let url = format!("{}/infrastructures", fake.url());

    // No header.
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/plain"
    );
    assert_eq!(
        response.text().await.unwrap(),
        "No authentication data provided"
    );

    // A header that is not auth data.
    let response = http()
        .get(&url)
        .header("Authorization", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.text().await.unwrap(),
        "No authentication data provided"
    );

    // A wrong password, JSON error body.
    let wrong = "id = im; type = InfrastructureManager; username = krake; password = nope";
    let response = http()
        .post(&url)
        .header("Authorization", wrong)
        .header("Accept", "application/json")
        .header("Content-Type", "text/yaml")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert_eq!(
        body["message"],
        "Error Creating Inf.: Invalid InfrastructureManager credentials"
    );

    // Only an OpenStack line: no IM credentials.
    let response = http()
        .get(&url)
        .header(
            "Authorization",
            "id = os; type = OpenStack; host = https://k:5000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Nothing was created by the refused requests, and all were recorded.
    assert!(fake.infrastructures().is_empty());
    assert_eq!(fake.request_count(), 4);
    assert!(fake.requests().iter().all(|r| r.status == 401));

    // The right credentials pass.
    let response = get(&fake, "/infrastructures").await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_owner_and_user_owner_are_apart() {
    let fake = ImFake::start(ImConfig {
        token: Some("tok-1".into()),
        durations: fast(),
        ..ImConfig::default()
    })
    .await
    .unwrap();
    let id = create_id(&fake, &tosca(1)).await;
    let bearer = http()
        .get(format!("{}/infrastructures/{id}/state", fake.url()))
        .header("Authorization", "Bearer tok-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        bearer.text().await.unwrap(),
        "Error Getting Inf. prop: Access to this infrastructure not granted."
    );
    let token_line = "type = InfrastructureManager; token = tok-1";
    let list = http()
        .get(format!("{}/infrastructures", fake.url()))
        .header("Authorization", token_line)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(list.text().await.unwrap(), "");
    let wrong = http()
        .get(format!("{}/infrastructures", fake.url()))
        .header("Authorization", "Bearer tok-2")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn auth_lines_are_split_at_the_literal_backslash_n_and_recorded() {
    let cloud = OpenStackCredentials {
        host: "https://keystone.example:5000/v3".into(),
        username: "os-user".into(),
        password: "os-pass".into(),
        tenant: "project-1".into(),
        domain: "domain-7".into(),
    };
    let fake = ImFake::start(ImConfig {
        openstack: Some(cloud.clone()),
        durations: fast(),
        ..ImConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(LINE_SEPARATOR, "\\n");
    // As Krake writes it: no spaces after `;`, the two characters `\n`.
    let im = "id = im-provider;username = krake;password = krake-im-password;type = InfrastructureManager";
    let os = format!(
        "id = os-cloud;host = {};auth_version = 3.x_password;username = os-user;password = os-pass;tenant = project-1;domain = domain-7;type = OpenStack",
        cloud.host
    );
    let header = format!("{im}\\n{os}");
    let response = create(&fake, &header, &tosca(1)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["InfID"].to_str().unwrap().to_string();

    let request = &fake.requests()[0];
    assert_eq!(request.kind, RequestKind::Create);
    assert_eq!(request.authorization.as_deref(), Some(header.as_str()));
    let auth = request.auth.as_ref().unwrap();
    assert_eq!(auth.lines.len(), 2);
    let openstack = auth.openstack().unwrap();
    assert_eq!(openstack["domain"], "domain-7");
    assert_eq!(openstack["auth_version"], "3.x_password");
    assert_eq!(openstack["tenant"], "project-1");
    assert_eq!(auth.im().unwrap()["id"], "im-provider");
    assert_eq!(
        fake.infrastructure(&id).unwrap().auth.openstack().unwrap()["host"],
        cloud.host
    );
    assert_eq!(
        wait_state(&fake, &id, states::CONFIGURED)
            .await
            .last()
            .unwrap(),
        "configured"
    );

    // Joined with a space instead, the last pair of the IM line and the
    // first of the OpenStack line run together (`type =
    // InfrastructureManager id = os-cloud`), which ends IM's parsing of the
    // line: no `type`, no IM credentials, 401.
    let header = format!("{im} {os}");
    let response = create(&fake, &header, &tosca(1)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let creates: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Create)
        .collect();
    assert_eq!(creates.len(), 2);
    let auth = creates[1].auth.clone().unwrap();
    assert_eq!(auth.lines.len(), 1);
    assert!(auth.im().is_none());
    assert!(auth.openstack().is_none());

    // The wrong domain: the cloud refuses too.
    let header = format!("{im}\\n{}", os.replace("domain-7", "Default"));
    let id = create(&fake, &header, &tosca(1)).await.headers()["InfID"]
        .to_str()
        .unwrap()
        .to_string();
    wait_state(&fake, &id, states::FAILED).await;
}

#[tokio::test]
async fn content_types_accept_and_bad_templates() {
    let fake = start(fast()).await;
    let post = |content_type: &'static str, body: String| {
        http()
            .post(format!("{}/infrastructures?async=1", fake.url()))
            .header("Authorization", fake.authorization())
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    // RADL is not emulated; an unknown type is 415.
    let response = post("text/plain", "network public".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = post("text/html", "<p/>".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.text().await.unwrap(),
        "Unsupported Media Type ['text/html']"
    );
    // Not YAML, not TOSCA.
    let response = post("text/yaml", "a: [".into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("Error Creating Inf.: Error parsing YAML")
    );
    let response = post("application/yaml", "topology_template: {}".into())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A bad async value.
    let response = http()
        .post(format!("{}/infrastructures?async=maybe", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.text().await.unwrap(),
        "Incorrect value in async parameter"
    );
    assert!(fake.infrastructures().is_empty());

    // Accept: application/json gives {"uri": ...}.
    let response = http()
        .post(format!("{}/infrastructures?async=yes", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .header("Accept", "application/json")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let uri = body["uri"].as_str().unwrap();
    let id = uri.rsplit_once('/').unwrap().1;

    // State refuses an Accept without JSON, with HTML if asked.
    let response = http()
        .get(format!("{}/infrastructures/{id}/state", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/html"
    );
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<h1>Code: 415.</h1>")
    );

    // Unknown ids: IM's 404 body, plain or JSON.
    let response = get(&fake, "/infrastructures/no-such-id/state").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.text().await.unwrap(),
        "Error Getting Inf. prop: Invalid infrastructure ID or access not granted."
    );
    let response = http()
        .delete(format!("{}/infrastructures/no-such-id", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": "Error Destroying Inf: Invalid infrastructure ID or access not granted.", "code": 404})
    );
    // The last template is readable as the `tosca` property.
    let response = get(&fake, &format!("/infrastructures/{id}/tosca")).await;
    assert_eq!(response.text().await.unwrap(), tosca(1));
    let response = get(&fake, &format!("/infrastructures/{id}/nonsense")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn injected_failures_refusals_and_slowness() {
    let fake = start(fast()).await;
    fake.faults().fail_next(2, 503);
    for _ in 0..2 {
        let response = create(&fake, &fake.authorization(), &tosca(1)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(fake.infrastructures().is_empty());
    let id = create_id(&fake, &tosca(1)).await;

    fake.faults().fail_requests(Some(500));
    for _ in 0..3 {
        assert_eq!(
            get(&fake, &format!("/infrastructures/{id}/state"))
                .await
                .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    fake.faults().fail_requests(None);
    assert_eq!(
        get(&fake, &format!("/infrastructures/{id}/state"))
            .await
            .status(),
        StatusCode::OK
    );

    fake.faults()
        .refuse_templates(Some("Error launching the VMs: quota exceeded"));
    let response = create(&fake, &fake.authorization(), &tosca(1)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.text().await.unwrap(),
        "Error Creating Inf.: Error launching the VMs: quota exceeded"
    );
    let response = http()
        .post(format!("{}/infrastructures/{id}", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .body(tosca(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.text().await.unwrap(),
        "Error Adding resources: Error launching the VMs: quota exceeded"
    );
    assert_eq!(fake.infrastructure(&id).unwrap().templates, 1);
    fake.faults().refuse_templates(None);

    fake.faults().slow(Some(Duration::from_secs(1)));
    let started = std::time::Instant::now();
    get(&fake, "/infrastructures").await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    fake.faults().clear();
    let started = std::time::Instant::now();
    get(&fake, "/infrastructures").await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn forced_states_and_vanishing() {
    let fake = start(Durations {
        pending: Duration::from_millis(50),
        configuring: Duration::from_millis(50),
        deleting: Duration::from_millis(50),
    })
    .await;
    let id = create_id(&fake, &tosca(2)).await;
    wait_state(&fake, &id, states::CONFIGURED).await;

    // One unconfigured VM makes the whole infrastructure unconfigured; a
    // reconfigure ends it.
    assert!(fake.force_vm_state(&id, "1", Some(states::UNCONFIGURED)));
    let (s, vms) = state(&fake, &id).await;
    assert_eq!(s, states::UNCONFIGURED);
    assert_eq!(vms["0"], states::CONFIGURED);
    assert_eq!(vms["1"], states::UNCONFIGURED);
    let response = http()
        .put(format!("{}/infrastructures/{id}/reconfigure", fake.url()))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    wait_state(&fake, &id, states::CONFIGURED).await;

    // The whole infrastructure unconfigured, then a failed VM, which
    // decides the aggregate and survives a reconfigure.
    fake.force_state(&id, Some(states::UNCONFIGURED));
    assert_eq!(state(&fake, &id).await.0, states::UNCONFIGURED);
    fake.force_state(&id, None);
    fake.force_vm_state(&id, "2", Some(states::FAILED));
    assert_eq!(state(&fake, &id).await.0, states::FAILED);
    http()
        .put(format!("{}/infrastructures/{id}/reconfigure", fake.url()))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(state(&fake, &id).await.0, states::FAILED);

    // Vanished: IM's 404 for an unknown id.
    assert!(fake.vanish(&id));
    let response = get(&fake, &format!("/infrastructures/{id}/state")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.text().await.unwrap(),
        "Error Getting Inf. prop: Invalid infrastructure ID or access not granted."
    );
    assert!(!fake.vanish(&id));
    assert!(!fake.force_state(&id, Some(states::FAILED)));
}

#[tokio::test]
async fn requests_are_counted_per_kind() {
    let fake = start(fast()).await;
    let a = create_id(&fake, &tosca(1)).await;
    let b = create_id(&fake, &tosca(1)).await;
    for id in [&a, &b] {
        state(&fake, id).await;
        state(&fake, id).await;
        outputs(&fake, id).await;
    }
    get(&fake, "/infrastructures").await;
    get(&fake, &format!("/infrastructures/{a}")).await;
    http()
        .delete(format!("{}/infrastructures/{b}?async=true", fake.url()))
        .header("Authorization", fake.authorization())
        .send()
        .await
        .unwrap();
    get(&fake, "/nowhere").await;

    assert_eq!(
        fake.count(RequestKind::Create),
        2,
        "exactly one create per cluster"
    );
    assert_eq!(fake.count(RequestKind::State), 4);
    assert_eq!(fake.count(RequestKind::Outputs), 2);
    assert_eq!(fake.count(RequestKind::List), 1);
    assert_eq!(fake.count(RequestKind::Info), 1);
    assert_eq!(fake.count(RequestKind::Delete), 1);
    assert_eq!(fake.count(RequestKind::Update), 0);
    assert_eq!(fake.count(RequestKind::Other), 1);
    assert_eq!(fake.request_count(), 12);
    assert_eq!(fake.counts().values().sum::<usize>(), 12);
    let requests = fake.requests();
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, "/infrastructures");
    assert_eq!(requests[0].query, "async=true");
    assert_eq!(requests[0].content_type.as_deref(), Some("text/yaml"));
    assert_eq!(requests.last().unwrap().status, 404);
    let info = &requests[requests.len() - 3];
    assert_eq!(info.kind, RequestKind::Info);
    assert_eq!(info.infrastructure.as_deref(), Some(a.as_str()));
    fake.reset_requests();
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn states_follow_paused_time() {
    let fake = start(Durations {
        pending: Duration::from_secs(60),
        configuring: Duration::from_secs(600),
        deleting: Duration::from_secs(30),
    })
    .await;
    fake.set_output("kubeconfig", Value::String("apiVersion: v1\n".into()));
    let id = create_id(&fake, &tosca(1)).await;
    tokio::time::pause();
    assert_eq!(fake.infrastructure(&id).unwrap().state, states::PENDING);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(fake.infrastructure(&id).unwrap().state, states::RUNNING);
    assert!(fake.infrastructure(&id).unwrap().outputs["kubeconfig"].is_null());
    tokio::time::advance(Duration::from_secs(600)).await;
    let infra = fake.infrastructure(&id).unwrap();
    assert_eq!(infra.state, states::CONFIGURED);
    assert_eq!(infra.outputs["kubeconfig"], "apiVersion: v1\n");
    tokio::time::resume();
}

#[tokio::test]
async fn vm_list_and_synchronous_create_refused_by_the_cloud() {
    let fake = ImFake::start(ImConfig {
        openstack: Some(OpenStackCredentials {
            host: "https://keystone.example:5000".into(),
            username: "u".into(),
            password: "p".into(),
            tenant: "t".into(),
            domain: "Default".into(),
        }),
        durations: Durations {
            pending: Duration::from_millis(50),
            configuring: Duration::from_millis(50),
            deleting: Duration::from_millis(50),
        },
        ..ImConfig::default()
    })
    .await
    .unwrap();
    // `domain` absent: IM's default, `Default`, matches.
    let header = fake.authorization().replace("; domain = Default", "");
    assert!(!header.contains("domain"));
    let id = create(&fake, &header, &tosca(2)).await.headers()["InfID"]
        .to_str()
        .unwrap()
        .to_string();
    let vms: Value = http()
        .get(format!("{}/infrastructures/{id}", fake.url()))
        .header("Authorization", fake.authorization())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uris: Vec<&str> = vms["uri-list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["uri"].as_str().unwrap())
        .collect();
    assert_eq!(
        uris,
        (0..3)
            .map(|vm| format!("{}/infrastructures/{id}/vms/{vm}", fake.url()))
            .collect::<Vec<_>>()
    );
    wait_state(&fake, &id, states::CONFIGURED).await;

    // A bad context flag on update.
    let response = http()
        .post(format!(
            "{}/infrastructures/{id}?context=perhaps",
            fake.url()
        ))
        .header("Authorization", fake.authorization())
        .header("Content-Type", "text/yaml")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.text().await.unwrap(),
        "Incorrect value in context parameter"
    );

    // Without the OpenStack line, a synchronous create fails once the VMs
    // fail to launch.
    let im_only = fake
        .authorization()
        .split(LINE_SEPARATOR)
        .next()
        .unwrap()
        .to_string();
    let response = http()
        .post(format!("{}/infrastructures", fake.url()))
        .header("Authorization", im_only)
        .header("Content-Type", "text/yaml")
        .body(tosca(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .starts_with("Error Creating Inf.: Error launching the VMs")
    );
}
