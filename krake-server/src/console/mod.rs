//! The web console at `/console/` (on by default, `--no-console` turns it
//! off): a shell page, plain ES modules and a style sheet, embedded in the
//! binary, that work only through the public REST API on the same origin as
//! the signed-in user (the browser sends the user's token; RBAC applies as
//! for krakectl). No build step: the files under `krake-server/console/`
//! are served as they are.
//!
//! Every answer carries a `Content-Security-Policy` without `unsafe-inline`
//! or `unsafe-eval` (`default-src 'self'`; `connect-src 'self'` plus the
//! OIDC issuer's origin for the token exchange; `frame-ancestors 'none'`),
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`.
//! The files are revalidated on every use (`Cache-Control: no-cache` with a
//! strong `ETag`; a matching `If-None-Match` gets 304), so an upgraded server
//! never serves a stale mix of modules. `/console/config.json` tells the
//! console how users sign in (the OIDC issuer and client id, when the server
//! uses the `oidc` strategy).

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Serialize;

/// One embedded file.
struct Asset {
    /// Its name under `/console/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/api.js"),
    },
    Asset {
        name: "yaml.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/yaml.js"),
    },
    Asset {
        name: "auth.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/auth.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/favicon.svg"),
    },
];

const INDEX: &str = include_str!("../../console/index.html");

/// How users sign in to the console: what `/console/config.json` says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsoleConfig {
    /// The `oidc` strategy's issuer and the console's client id; `None`:
    /// users paste a token (static, Keystone, Keycloak).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<ConsoleOidc>,
}

/// The OIDC provider the console signs users in with (authorization code
/// flow with PKCE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleOidc {
    /// The issuer URL (its discovery document names the endpoints).
    pub issuer: String,
    /// The console's (public) client id at the issuer.
    pub client_id: String,
}

impl ConsoleConfig {
    /// The `Content-Security-Policy` of every console answer.
    pub fn content_security_policy(&self) -> String {
        let mut connect = "'self'".to_owned();
        if let Some(origin) = self.oidc.as_ref().and_then(|o| origin_of(&o.issuer)) {
            connect.push(' ');
            connect.push_str(&origin);
        }
        format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect}; object-src 'none'; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'"
        )
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL; `None` for anything
/// else (or a URL with characters a CSP source cannot hold).
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty()
        || !authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
    {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

/// A strong validator of a body (FNV-1a, 64 bits; the files are fixed at
/// build time, so it changes exactly when a file does).
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

/// The answer for one file: 304 when the client's copy is current.
fn file(
    request: &HeaderMap,
    csp: &str,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
) -> Response {
    let body = body.into();
    let tag = etag(&body);
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(&tag) {
        headers.insert(header::ETAG, value);
    }
    security_headers(&mut headers, csp);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if current {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (headers, body).into_response()
}

fn security_headers(headers: &mut HeaderMap, csp: &str) {
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn not_found(csp: &str) -> Response {
    let mut headers = HeaderMap::new();
    security_headers(&mut headers, csp);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::NOT_FOUND, headers, "404: Not Found").into_response()
}

/// The console's routes: `/console` (redirect), `/console/` (the shell),
/// `/console/config.json` and the files. To be merged into the API's router:
/// none of the API's paths starts with `/console`.
pub fn router(config: ConsoleConfig) -> Router {
    let csp = config.content_security_policy();
    let json = serde_json::to_vec(&config).unwrap_or_else(|_| b"{}".to_vec());
    let index_csp = csp.clone();
    let config_csp = csp.clone();
    let asset_csp = csp;
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(move |headers: HeaderMap| {
                let csp = index_csp.clone();
                async move { file(&headers, &csp, "text/html; charset=utf-8", INDEX) }
            }),
        )
        .route(
            "/console/config.json",
            get(move |headers: HeaderMap| {
                let (csp, json) = (config_csp.clone(), json.clone());
                async move { file(&headers, &csp, "application/json", json) }
            }),
        )
        .route(
            "/console/{*file}",
            get(
                move |axum::extract::Path(name): axum::extract::Path<String>,
                      headers: HeaderMap| {
                    let csp = asset_csp.clone();
                    async move {
                        match ASSETS.iter().find(|asset| asset.name == name) {
                            Some(asset) => file(&headers, &csp, asset.content_type, asset.body),
                            None => not_found(&csp),
                        }
                    }
                },
            ),
        )
}

#[cfg(test)]
mod tests;
