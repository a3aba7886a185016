//! The endpoints outside the kinds: `/`, `/me`, `/release`, health, metrics
//! and the OpenAPI document.

use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krake_data::kinds::core::ROLE_BINDING;
use krake_store::ListOptions;
use serde_json::{Value, json};

use crate::auth::User;
use crate::object;
use crate::problem::ApiError;
use crate::state::ApiState;

/// The Krake API version this server speaks.
pub const KRAKE_API_VERSION: &str = "1.0.1";

/// `GET /`: the version.
pub async fn root() -> Json<Value> {
    Json(json!({"version": KRAKE_API_VERSION, "krake_rs": env!("CARGO_PKG_VERSION")}))
}

/// `GET /me`: the user and the sorted names of the roles bound to it.
pub async fn me(
    State(state): State<ApiState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    if let Some(roles) = state.authorizer().roles_of(&user) {
        return Ok(Json(json!({"user": user.name(), "roles": roles})));
    }
    let page = state
        .store()
        .list(&ROLE_BINDING.prefix(None), &ListOptions::default())
        .await?;
    let mut roles = std::collections::BTreeSet::new();
    for kv in &page.items {
        let binding = object::decode_kv(kv)?;
        let bound = binding["users"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u.as_str() == Some(user.name())));
        if bound {
            for role in binding["roles"].as_array().into_iter().flatten() {
                if let Some(role) = role.as_str() {
                    roles.insert(role.to_owned());
                }
            }
        }
    }
    Ok(Json(json!({"user": user.name(), "roles": roles})))
}

/// `GET /release`: Krake's easter egg.
pub async fn release() -> Response {
    (StatusCode::ACCEPTED, Json(json!("You released the Krake."))).into_response()
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: ready only while the store answers (within 2 s).
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), state.store().revision()).await {
        Ok(Ok(revision)) => Ok(Json(json!({"status": "ready", "revision": revision}))),
        Ok(Err(err)) => Err(ApiError::Unavailable(err.to_string())),
        Err(_) => Err(ApiError::Unavailable(
            "the store did not answer in time".into(),
        )),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    let mut response = state.metrics().encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

/// `GET /openapi.json`: the OpenAPI 3 document of every route.
pub async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}
