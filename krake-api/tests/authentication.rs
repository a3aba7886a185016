//! The authentication chain end to end: real TLS handshakes with client
//! certificates, and the Keystone, Keycloak and OIDC strategies against
//! small in-process servers that speak those providers' endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use krake_api::testing::pki::TestCa;
use krake_api::testing::{TestServer, embedded_store};
use krake_api::{ApiConfig, AuthenticationConfig, AuthenticationStrategy, OidcConfig};
use serde_json::{Value, json};

// --- helpers ---

/// Serves `app` on a free loopback port until the test ends.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// A URL nothing listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

fn config(strategy: AuthenticationStrategy) -> ApiConfig {
    ApiConfig {
        authentication: AuthenticationConfig {
            allow_anonymous: false,
            strategy,
            ..AuthenticationConfig::default()
        },
        ..ApiConfig::default()
    }
}

/// `GET /me` with an `Authorization` header: the status and the body.
async fn me(server: &TestServer, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(format!("{}/me", server.url()));
    if let Some(token) = token {
        request = request.header("Authorization", token);
    }
    let response = request.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

// --- TLS client certificates ---

async fn tls_server(allow_anonymous: bool, ca: &TestCa) -> TestServer {
    let (store, backing) = embedded_store();
    let config = ApiConfig {
        authentication: AuthenticationConfig {
            allow_anonymous,
            ..AuthenticationConfig::default()
        },
        ..ApiConfig::default()
    };
    TestServer::start_with(store, config, backing, Some(ca.server_config().unwrap())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_of_the_ca_is_its_common_name() {
    let ca = TestCa::new("krake CA");
    let server = tls_server(false, &ca).await;
    let client = ca.http_client(Some(&ca.client("system:scheduler")));
    let me: Value = client
        .get(format!("{}/me", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "system:scheduler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_certificate_the_client_is_anonymous_or_refused() {
    let ca = TestCa::new("krake CA");
    let open = tls_server(true, &ca).await;
    let client = ca.http_client(None);
    let me: Value = client
        .get(format!("{}/me", open.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "system:anonymous");

    let closed = tls_server(false, &ca).await;
    let response = client
        .get(format!("{}/me", closed.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNAUTHORIZED);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "401: No user has been authenticated.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("krake CA");
    let other = TestCa::new("someone else");
    let server = tls_server(true, &ca).await;
    let client = ca.http_client(Some(&other.client("system:admin")));
    let result = client.get(format!("{}/me", server.url())).send().await;
    assert!(result.is_err(), "the handshake must fail: {result:?}");
    // The server keeps serving others.
    let good = ca.http_client(Some(&ca.client("alice")));
    let me: Value = good
        .get(format!("{}/me", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_server_cannot_connect() {
    let ca = TestCa::new("krake CA");
    let other = TestCa::new("someone else");
    let server = tls_server(true, &ca).await;
    let client = other.http_client(None);
    assert!(
        client
            .get(format!("{}/me", server.url()))
            .send()
            .await
            .is_err()
    );
}

// --- Keystone ---

#[derive(Default)]
struct Calls(AtomicUsize, std::sync::Mutex<Option<String>>);

impl Calls {
    /// The same expiry time for every call: `valid` after the first one.
    fn expiry(&self, valid: std::time::Duration) -> String {
        let mut expiry = self.1.lock().unwrap();
        expiry
            .get_or_insert_with(|| {
                let at = krake_data::Timestamp::now() + chrono::TimeDelta::from_std(valid).unwrap();
                at.to_string()
            })
            .clone()
    }
}

async fn keystone_tokens(
    State(calls): State<Arc<Calls>>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    calls.0.fetch_add(1, Ordering::SeqCst);
    let auth = headers.get("X-Auth-Token").and_then(|v| v.to_str().ok());
    let subject = headers.get("X-Subject-Token").and_then(|v| v.to_str().ok());
    match (auth, subject) {
        (Some("good-token"), Some("good-token")) => (
            StatusCode::OK,
            axum::Json(
                json!({"token": {"user": {"name": "keystone-user", "id": "1"}, "expires_at": "2999-01-01T00:00:00Z"}}),
            ),
        ),
        (Some("broken"), _) => (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({}))),
        (Some("short-lived"), Some("short-lived")) => {
            // Valid for one more second from the first call.
            let expires = calls.expiry(std::time::Duration::from_secs(1));
            (
                StatusCode::OK,
                axum::Json(
                    json!({"token": {"user": {"name": "brief", "id": "2"}, "expires_at": expires}}),
                ),
            )
        }
        (Some("expired"), Some("expired")) => (
            StatusCode::OK,
            axum::Json(
                json!({"token": {"user": {"name": "late", "id": "3"}, "expires_at": "2001-01-01T00:00:00.000000Z"}}),
            ),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"code": 404}})),
        ),
    }
}

/// The Keystone fake (counting its calls) and an API using it.
async fn keystone_server() -> (Arc<Calls>, TestServer) {
    let calls = Arc::new(Calls::default());
    let keystone = serve(
        Router::new()
            .route("/v3/auth/tokens", get(keystone_tokens))
            .with_state(calls.clone()),
    )
    .await;
    let server = TestServer::embedded_with(config(AuthenticationStrategy::Keystone {
        endpoint: format!("{keystone}/v3"),
    }))
    .await;
    (calls, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_tokens_are_validated_and_cached() {
    let (calls, server) = keystone_server().await;

    let (status, body) = me(&server, Some("good-token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "keystone-user");
    let (status, _) = me(&server, Some("Bearer good-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        calls.0.load(Ordering::SeqCst),
        1,
        "the second request is cached"
    );

    let (status, problem) = me(&server, Some("bad-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["title"], "INVALID_KEYSTONE_TOKEN");
    // No header: the chain goes on, and anonymous access is off.
    let (status, problem) = me(&server, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["detail"], "401: No user has been authenticated.");
    // Keystone failing is 503, not 500 and not a refusal.
    let (status, _) = me(&server, Some("broken")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_tokens_are_not_trusted_past_their_expiry() {
    // The cache would keep a token for 30 s; this one expires after 1 s.
    let (calls, server) = keystone_server().await;
    let (status, body) = me(&server, Some("short-lived")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "brief");
    let (status, _) = me(&server, Some("short-lived")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls.0.load(Ordering::SeqCst), 1, "cached while valid");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // Past its expiry: asked again, and Keystone's answer says it expired.
    let (status, problem) = me(&server, Some("short-lived")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(problem["title"], "INVALID_KEYSTONE_TOKEN");
    assert_eq!(calls.0.load(Ordering::SeqCst), 2);

    let (status, problem) = me(&server, Some("expired")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("expired"),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_down_is_503() {
    let server = TestServer::embedded_with(config(AuthenticationStrategy::Keystone {
        endpoint: format!("{}/v3", dead_url().await),
    }))
    .await;
    let (status, problem) = me(&server, Some("good-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        problem["detail"].as_str().unwrap().contains("Keystone"),
        "{problem}"
    );
}

// --- Keycloak ---

async fn keycloak_userinfo(headers: HeaderMap, body: String) -> (StatusCode, axum::Json<Value>) {
    let form = headers.get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(form, Some("application/x-www-form-urlencoded"));
    let token = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .unwrap_or_default();
    match token {
        "kc-token" => (
            StatusCode::OK,
            axum::Json(json!({"sub": "x", "preferred_username": "keycloak-user"})),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_token"})),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycloak_tokens_are_validated_at_userinfo() {
    let keycloak = serve(Router::new().route(
        "/auth/realms/krake/protocol/openid-connect/userinfo",
        post(keycloak_userinfo),
    ))
    .await;
    let server = TestServer::embedded_with(config(AuthenticationStrategy::Keycloak {
        endpoint: keycloak,
        realm: "krake".into(),
    }))
    .await;
    let (status, body) = me(&server, Some("kc-token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "keycloak-user");
    let (status, problem) = me(&server, Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["title"], "INVALID_KEYCLOAK_TOKEN");

    let down = TestServer::embedded_with(config(AuthenticationStrategy::Keycloak {
        endpoint: dead_url().await,
        realm: "krake".into(),
    }))
    .await;
    let (status, _) = me(&down, Some("kc-token")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

// --- OIDC ---

const AUDIENCE: &str = "krake";

struct Signer {
    key: EncodingKey,
    kid: String,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        Signer {
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    fn token(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An issuer with a discovery document and a JWKS; counts JWKS fetches.
async fn issuer(keys: JwkSet, fetches: Arc<Calls>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/keys")});
    let keys = serde_json::to_value(keys).unwrap();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/keys",
            get(move || async move {
                fetches.0.fetch_add(1, Ordering::SeqCst);
                axum::Json(keys)
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_verified_locally() {
    let signer = Signer::new("key-1");
    let fetches = Arc::new(Calls::default());
    let base = issuer(
        JwkSet {
            keys: vec![signer.jwk()],
        },
        fetches.clone(),
    )
    .await;
    let server = TestServer::embedded_with(config(AuthenticationStrategy::Oidc(OidcConfig::new(
        base.clone(),
        AUDIENCE,
    ))))
    .await;
    let claims = |overrides: Value| {
        let mut claims = json!({
            "iss": base, "aud": AUDIENCE, "exp": now() + 300, "iat": now(),
            "sub": "1234", "preferred_username": "oidc-user",
        });
        for (key, value) in overrides.as_object().unwrap() {
            claims[key] = value.clone();
        }
        claims
    };

    let good = signer.token(&claims(json!({})));
    let (status, body) = me(&server, Some(&format!("Bearer {good}"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], "oidc-user");
    let (status, _) = me(&server, Some(&good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetches.0.load(Ordering::SeqCst), 1, "keys are fetched once");

    let refused = |token: String, why: &'static str| {
        let server = &server;
        async move {
            let (status, problem) = me(server, Some(&token)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {problem}");
            assert_eq!(problem["title"], "INVALID_OIDC_TOKEN", "{why}");
        }
    };
    refused(
        signer.token(&claims(json!({"exp": now() - 3600}))),
        "expired",
    )
    .await;
    refused(
        signer.token(&claims(json!({"aud": "someone-else"}))),
        "wrong audience",
    )
    .await;
    refused(
        signer.token(&claims(json!({"iss": "https://evil.example"}))),
        "wrong issuer",
    )
    .await;
    refused(
        signer.token(&claims(json!({"preferred_username": null}))),
        "no user claim",
    )
    .await;
    // Signed by another key that claims the same key id.
    let forger = Signer::new("key-1");
    refused(forger.token(&claims(json!({}))), "badly signed").await;
    // A shared-secret token is never accepted.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    refused(hs, "HS256").await;
    refused("not-a-jwt".to_owned(), "malformed").await;
    // A token with a tampered payload.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = base64_url(&claims(json!({"preferred_username": "system:admin"})));
    refused(parts.join("."), "tampered").await;
}

fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_issuer_down_is_503() {
    let server = TestServer::embedded_with(config(AuthenticationStrategy::Oidc(OidcConfig::new(
        dead_url().await,
        AUDIENCE,
    ))))
    .await;
    let signer = Signer::new("k");
    let token = signer.token(&json!({"exp": now() + 60}));
    let (status, _) = me(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
