//! The fake Keystone + Magnum over real HTTP: tokens for both auth methods
//! and 401s otherwise, cluster creation, resize (action and JSON patch),
//! deletion, certificates that a fake Kubernetes API accepts, faults and the
//! request record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine as _;
use krake_testkit::kube::FakeCluster;
use krake_testkit::openstack::FakeOpenStack;
use serde_json::{Value, json};

struct Session {
    http: reqwest::Client,
    magnum: String,
    token: String,
}

fn password_request(password: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "id": FakeOpenStack::USER_ID, "password": password}}},
        "scope": {"project": {"id": FakeOpenStack::PROJECT_ID}},
    }})
}

async fn login(fake: &FakeOpenStack, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/auth/tokens", fake.auth_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn session(fake: &FakeOpenStack) -> Session {
    let response = login(fake, password_request(FakeOpenStack::PASSWORD)).await;
    assert_eq!(response.status(), 201);
    let token = response.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let magnum = body["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "container-infra")
        .and_then(|s| {
            s["endpoints"]
                .as_array()?
                .iter()
                .find(|e| e["interface"] == "public")
        })
        .and_then(|e| e["url"].as_str())
        .unwrap()
        .to_owned();
    Session {
        http: reqwest::Client::new(),
        magnum,
        token,
    }
}

impl Session {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.magnum))
            .header("X-Auth-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Polls the cluster until its status is `status`.
    async fn until_status(&self, id: &str, status: &str) -> Value {
        for _ in 0..100 {
            let (code, cluster) = self.get(&format!("/clusters/{id}")).await;
            assert_eq!(code, 200, "{cluster}");
            if cluster["status"] == status {
                return cluster;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cluster {id} never reached {status}");
    }
}

#[tokio::test]
async fn keystone_issues_tokens_for_both_methods_and_401_otherwise() {
    let fake = FakeOpenStack::start().await.unwrap();
    let session = session(&fake).await;
    assert!(session.magnum.ends_with("/v1"), "{}", session.magnum);

    let credential = json!({"auth": {"identity": {
        "methods": ["application_credential"],
        "application_credential": {"id": FakeOpenStack::APP_CREDENTIAL_ID,
                                   "secret": FakeOpenStack::APP_CREDENTIAL_SECRET},
    }}});
    let response = login(&fake, credential).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().contains_key("x-subject-token"));

    for body in [
        password_request("wrong"),
        json!({"auth": {"identity": {"methods": ["application_credential"],
            "application_credential": {"id": FakeOpenStack::APP_CREDENTIAL_ID, "secret": "nope"}}}}),
    ] {
        let response = login(&fake, body).await;
        assert_eq!(response.status(), 401);
        assert!(!response.headers().contains_key("x-subject-token"));
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], 401);
        assert_eq!(error["error"]["title"], "Unauthorized");
    }
    // Magnum without a token, or with a made-up one.
    let bare = reqwest::Client::new()
        .get(format!(
            "{}/clustertemplates/{}",
            fake.magnum_url(),
            FakeOpenStack::KUBERNETES_TEMPLATE
        ))
        .header("X-Auth-Token", "made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let (code, template) = session
        .get(&format!(
            "/clustertemplates/{}",
            FakeOpenStack::KUBERNETES_TEMPLATE
        ))
        .await;
    assert_eq!(code, 200);
    assert_eq!(template["coe"], "kubernetes");
    let (code, error) = session.get("/clustertemplates/missing").await;
    assert_eq!(code, 404);
    assert_eq!(error["errors"][0]["status"], 404);

    // The record has no secrets.
    let recorded = format!("{:?}", fake.requests());
    assert!(!recorded.contains(FakeOpenStack::PASSWORD), "{recorded}");
    assert!(
        !recorded.contains(FakeOpenStack::APP_CREDENTIAL_SECRET),
        "{recorded}"
    );
    assert_eq!(fake.requests_to("POST", "/v3/auth/tokens").len(), 4);
}

#[tokio::test]
async fn clusters_are_created_resized_and_deleted_with_certificates_the_cluster_accepts() {
    let kube = FakeCluster::start().await.unwrap();
    let fake = FakeOpenStack::start().await.unwrap();
    fake.serve_kube(&kube);
    fake.set_operation_time(Duration::from_millis(100));
    let session = session(&fake).await;

    let (code, created) = session
        .post(
            "/clusters",
            json!({"name": "c1", "cluster_template_id": FakeOpenStack::KUBERNETES_TEMPLATE,
                   "node_count": 2, "master_count": 1, "create_timeout": 60}),
        )
        .await;
    assert_eq!(code, 202, "{created}");
    let id = created["uuid"].as_str().unwrap().to_owned();
    let (_, cluster) = session.get(&format!("/clusters/{id}")).await;
    assert_eq!(cluster["status"], "CREATE_IN_PROGRESS");
    let cluster = session.until_status(&id, "CREATE_COMPLETE").await;
    assert_eq!(cluster["node_count"], 2);
    assert_eq!(cluster["api_address"], kube.url());
    assert_eq!(cluster["node_addresses"].as_array().unwrap().len(), 2);

    // Resize through the action, then through a JSON patch.
    let (code, _) = session
        .post(
            &format!("/clusters/{id}/actions/resize"),
            json!({"node_count": 3}),
        )
        .await;
    assert_eq!(code, 202);
    let (code, _) = session
        .post(
            &format!("/clusters/{id}/actions/resize"),
            json!({"node_count": 4}),
        )
        .await;
    assert_eq!(code, 409, "an operation is running");
    assert_eq!(
        session.until_status(&id, "UPDATE_COMPLETE").await["node_count"],
        3
    );
    let (code, _) = session
        .send(
            reqwest::Method::PATCH,
            &format!("/clusters/{id}"),
            Some(json!([{"op": "replace", "path": "/node_count", "value": 1}])),
        )
        .await;
    assert_eq!(code, 202);
    assert_eq!(
        session.until_status(&id, "UPDATE_COMPLETE").await["node_count"],
        1
    );

    // A client certificate signed through Magnum works on the cluster.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let (code, ca) = session.get(&format!("/certificates/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(ca["pem"], kube.ca_pem());
    let (code, signed) = session
        .post("/certificates", json!({"cluster_uuid": id, "csr": csr}))
        .await;
    assert_eq!(code, 201, "{signed}");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": kube.url(),
            "certificate-authority-data": b64(ca["pem"].as_str().unwrap())}}],
        "users": [{"name": "u", "user": {
            "client-certificate-data": b64(signed["pem"].as_str().unwrap()),
            "client-key-data": b64(&key.serialize_pem())}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    let config = kube::Config::from_custom_kubeconfig(
        serde_json::from_value(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    assert!(
        !nodes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let (code, _) = session
        .post(
            "/certificates",
            json!({"cluster_uuid": id, "csr": "not a csr"}),
        )
        .await;
    assert_eq!(code, 400);

    // Deletion.
    let (code, _) = session
        .send(reqwest::Method::DELETE, &format!("/clusters/{id}"), None)
        .await;
    assert_eq!(code, 204);
    session.until_status(&id, "DELETE_IN_PROGRESS").await;
    let mut gone = false;
    for _ in 0..100 {
        if session.get(&format!("/clusters/{id}")).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the cluster stays");
    assert!(fake.clusters().is_empty());
}

#[tokio::test]
async fn faults_and_failed_creations() {
    let fake = FakeOpenStack::start().await.unwrap();
    fake.set_operation_time(Duration::from_millis(50));
    let session = session(&fake).await;
    fake.fail_next(2, 503);
    assert_eq!(session.get("/clusters/x").await.0, 503);
    assert_eq!(
        login(&fake, password_request(FakeOpenStack::PASSWORD))
            .await
            .status(),
        503
    );
    assert_eq!(session.get("/clusters/x").await.0, 404);
    fake.fail_requests(Some(500));
    assert_eq!(session.get("/clusters/x").await.0, 500);
    fake.fail_requests(None);

    fake.fail_creations(Some("Quota exceeded"));
    let (code, created) = session
        .post(
            "/clusters",
            json!({"name": "c2", "cluster_template_id": FakeOpenStack::KUBERNETES_TEMPLATE}),
        )
        .await;
    assert_eq!(code, 202);
    let id = created["uuid"].as_str().unwrap();
    let cluster = session.until_status(id, "CREATE_FAILED").await;
    assert_eq!(cluster["status_reason"], "Quota exceeded");
    assert_eq!(cluster["node_count"], 1);
    let (code, _) = session
        .post(
            "/clusters",
            json!({"name": "c3", "cluster_template_id": "missing"}),
        )
        .await;
    assert_eq!(code, 404);
    assert!(fake.remove_cluster(id));
    assert!(fake.cluster(id).is_none());
}
