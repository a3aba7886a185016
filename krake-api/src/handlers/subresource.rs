//! The sub-operations: `/status`, `/binding`, `/complete`, `/shutdown`, `/retry`.

use std::collections::HashMap;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use krake_data::Timestamp;
use krake_data::kinds::core::Verb;
use krake_data::registry::{ParseMode, Subresource, SubresourceBody, SubresourceInfo};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::crud::immutable_error;
use super::transaction::{Change, read_modify_write};
use super::{KindRef, Target, parse_json};
use crate::auth::User;
use crate::object;
use crate::problem::ApiError;
use crate::state::ApiState;

/// The sub-operation a route serves (a route extension).
#[derive(Debug, Clone, Copy)]
pub struct SubresourceRef(pub &'static SubresourceInfo);

/// `PUT .../{name}/<operation>` for every kind and operation of the registry.
pub async fn subresource(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(SubresourceRef(info)): Extension<SubresourceRef>,
    Extension(user): Extension<User>,
    Path(params): Path<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    target.authorize(&state, &user, info.rbac_resource, Verb::Update)?;
    let (body, precondition) = match info.body {
        SubresourceBody::Empty => (Value::Null, None),
        SubresourceBody::Object => {
            let raw = parse_json(&body)?;
            let precondition = object::resource_version(&raw)?;
            (kind.parse(raw, ParseMode::Full)?, precondition)
        }
        SubresourceBody::Body(body_kind) => {
            let raw = parse_json(&body)?;
            ((body_kind.parse)(raw)?, None)
        }
    };
    let outcome = read_modify_write(&state, &target, precondition, |current| {
        apply(kind.kind, info.operation, current, &body)
    })
    .await?;
    Ok(Json(outcome.object).into_response())
}

fn status_mut(object: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = Value::Object(serde_json::Map::new());
    }
    match object.get_mut("status") {
        Some(Value::Object(map)) => map,
        _ => unreachable!("status was just made an object"),
    }
}

fn now() -> Value {
    object::timestamp(Timestamp::now())
}

/// Compares a hook token in constant time; a missing token never matches.
fn token_matches(expected: Option<&Value>, given: Option<&Value>) -> bool {
    match (
        expected.and_then(Value::as_str),
        given.and_then(Value::as_str),
    ) {
        (Some(expected), Some(given)) => expected.as_bytes().ct_eq(given.as_bytes()).into(),
        _ => false,
    }
}

fn invalid_token() -> ApiError {
    ApiError::http_detail(
        StatusCode::UNAUTHORIZED,
        "No token has been provided or the provided one is invalid.",
    )
}

/// The new version of `current` after `operation` with `body`.
fn apply(
    kind: &str,
    operation: Subresource,
    mut current: Value,
    body: &Value,
) -> Result<Change, ApiError> {
    match operation {
        Subresource::Status => {
            let new_status = body.get("status").cloned().unwrap_or(Value::Null);
            // Immutable status fields (MagnumCluster's template) may be set once.
            if kind == "MagnumCluster" {
                let old = current.pointer("/status/template").filter(|v| !v.is_null());
                let new = new_status.get("template");
                if old.is_some() && old != new {
                    return Err(immutable_error("status.template"));
                }
            }
            if current.get("status") == Some(&new_status) {
                return Ok(Change::Keep(current));
            }
            current["status"] = new_status;
            Ok(Change::Write(current))
        }
        Subresource::Binding => {
            let (owner, updates): (&str, Vec<(&str, Value)>) = match kind {
                "Application" => (
                    "cluster",
                    vec![
                        ("scheduled", now()),
                        ("kube_controller_triggered", now()),
                        ("scheduled_to", body["cluster"].clone()),
                    ],
                ),
                "Cluster" => (
                    "cloud",
                    vec![
                        ("scheduled", now()),
                        ("scheduled_to", body["cloud"].clone()),
                    ],
                ),
                "MagnumCluster" => (
                    "project",
                    vec![
                        ("project", body["project"].clone()),
                        ("template", body["template"].clone()),
                    ],
                ),
                other => {
                    return Err(ApiError::Internal(format!("no binding for {other}")));
                }
            };
            if kind == "MagnumCluster" {
                let old = current.pointer("/status/template").filter(|v| !v.is_null());
                if old.is_some_and(|old| old != &body["template"]) {
                    return Err(immutable_error("status.template"));
                }
            }
            let status = status_mut(&mut current);
            for (field, value) in updates {
                status.insert(field.to_owned(), value);
            }
            object::add_owner(&mut current, &body[owner]);
            Ok(Change::Write(current))
        }
        Subresource::Complete => {
            if !token_matches(current.pointer("/status/complete_token"), body.get("token")) {
                return Err(invalid_token());
            }
            status_mut(&mut current).insert("state".to_owned(), Value::from("READY_FOR_ACTION"));
            object::metadata_mut(&mut current).insert("deleted".to_owned(), now());
            Ok(Change::Write(current))
        }
        Subresource::Shutdown => {
            if !token_matches(current.pointer("/status/shutdown_token"), body.get("token")) {
                return Err(invalid_token());
            }
            let state = object::state(&current).unwrap_or_default().to_owned();
            if matches!(state.as_str(), "WAITING_FOR_CLEANING" | "DEGRADED") {
                let status = status_mut(&mut current);
                status.insert("state".to_owned(), Value::from("READY_FOR_ACTION"));
                status.insert("shutdown_grace_period".to_owned(), Value::Null);
            }
            Ok(Change::Write(current))
        }
        Subresource::Retry => {
            if object::state(&current) != Some("DEGRADED") {
                return Err(ApiError::update_error(
                    StatusCode::BAD_REQUEST,
                    "No migration or deletion retry needed",
                ));
            }
            let status = status_mut(&mut current);
            status.insert("state".to_owned(), Value::from("WAITING_FOR_CLEANING"));
            status.insert("shutdown_grace_period".to_owned(), Value::Null);
            Ok(Change::Write(current))
        }
    }
}
