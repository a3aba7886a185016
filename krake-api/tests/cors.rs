//! Cross-origin requests from browsers (`cors_origin`).
//!
//! With `*` (the default, as Krake's) any page may read answers, but never
//! with credentials: no `Access-Control-Allow-Credentials`, and the allowed
//! origin is the literal `*`, which browsers do not accept for credentialed
//! requests. Krake instead mirrors the caller's origin with credentials
//! allowed, so any web page a user visits could act with the user's client
//! certificate. A configured origin is allowed, with credentials, and no other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use krake_api::ApiConfig;
use krake_api::testing::TestServer;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

const APPS: &str = "/kubernetes/namespaces/testing/applications";
const ALLOW_ORIGIN: &str = "access-control-allow-origin";
const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";

async fn server(origin: &str) -> TestServer {
    let config = ApiConfig {
        cors_origin: origin.to_owned(),
        ..ApiConfig::default()
    };
    TestServer::embedded_with(config).await
}

/// A browser's preflight before a credentialed PUT from `origin`.
async fn preflight(server: &TestServer, origin: &str) -> (StatusCode, HeaderMap) {
    let response = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}{APPS}/web", server.url()))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

/// A simple cross-origin GET from `origin`.
async fn get_from(server: &TestServer, origin: &str) -> (StatusCode, HeaderMap) {
    let response = reqwest::Client::new()
        .get(format!("{}{APPS}", server.url()))
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn any_origin_never_gets_credentials() {
    let server = server("*").await;
    for origin in ["https://evil.example", "http://localhost:3000"] {
        let (status, headers) = preflight(&server, origin).await;
        assert!(status.is_success(), "preflight from {origin}: {status}");
        assert_eq!(header(&headers, ALLOW_ORIGIN), Some("*"), "{headers:?}");
        assert_eq!(header(&headers, ALLOW_CREDENTIALS), None, "{headers:?}");
        let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.contains("authorization"),
            "a bearer token may still be sent explicitly: {headers:?}"
        );

        let (status, headers) = get_from(&server, origin).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, ALLOW_ORIGIN), Some("*"), "{headers:?}");
        assert_eq!(header(&headers, ALLOW_CREDENTIALS), None, "{headers:?}");
    }
}

#[tokio::test]
async fn a_configured_origin_is_the_only_one_and_may_use_credentials() {
    let console = "https://console.example:8443";
    let server = server(console).await;

    let (status, headers) = preflight(&server, console).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(header(&headers, ALLOW_ORIGIN), Some(console), "{headers:?}");
    assert_eq!(header(&headers, ALLOW_CREDENTIALS), Some("true"));
    let (status, headers) = get_from(&server, console).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, ALLOW_ORIGIN), Some(console), "{headers:?}");
    assert_eq!(header(&headers, ALLOW_CREDENTIALS), Some("true"));

    // Any other origin gets no permission a browser would accept.
    for other in ["https://evil.example", "https://console.example"] {
        let (_, headers) = preflight(&server, other).await;
        assert_ne!(header(&headers, ALLOW_ORIGIN), Some(other), "{headers:?}");
        assert_ne!(header(&headers, ALLOW_ORIGIN), Some("*"), "{headers:?}");
        let (_, headers) = get_from(&server, other).await;
        assert_ne!(header(&headers, ALLOW_ORIGIN), Some(other), "{headers:?}");
        assert_ne!(header(&headers, ALLOW_ORIGIN), Some("*"), "{headers:?}");
    }
}
