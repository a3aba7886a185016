//! The generic handlers: one set for every kind of the registry.

pub mod crud;
pub mod meta;
pub mod subresource;
pub mod transaction;
pub mod watch;

use std::collections::HashMap;

use axum::http::StatusCode;
use krake_data::KindInfo;
use krake_data::kinds::core::Verb;
use serde_json::Value;

use crate::auth::{Access, AccessRequest, Scope, User};
use crate::problem::ApiError;
use crate::state::ApiState;

/// The kind a route serves (a route extension).
#[derive(Debug, Clone, Copy)]
pub struct KindRef(pub &'static KindInfo);

/// The kind, namespace and name a request is about.
#[derive(Debug, Clone)]
pub struct Target {
    /// The kind.
    pub kind: &'static KindInfo,
    /// The namespace from the URL (namespaced kinds, not across all namespaces).
    pub namespace: Option<String>,
    /// The name from the URL, for object routes.
    pub name: Option<String>,
}

impl Target {
    /// The target of a request from its path parameters.
    pub fn new(kind: &'static KindInfo, params: &HashMap<String, String>) -> Self {
        Target {
            kind,
            namespace: params.get("namespace").cloned(),
            name: params.get("name").cloned(),
        }
    }

    /// The namespace as `Option<&str>`.
    pub fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The name (object routes always have one).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// 404 for this object.
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(self.kind.kind, self.ns(), self.name())
    }

    /// The store key of this object; 404 if the name cannot be a key.
    pub fn key(&self) -> Result<String, ApiError> {
        self.kind
            .key(self.ns(), self.name())
            .map_err(|_| self.not_found())
    }

    /// Where the request acts: a namespace, a global kind, or all namespaces.
    pub fn scope(&self) -> Scope<'_> {
        match (&self.namespace, self.kind.is_namespaced()) {
            (Some(namespace), _) => Scope::Namespace(namespace),
            (None, true) => Scope::AllNamespaces,
            (None, false) => Scope::Global,
        }
    }

    /// Checks that `user` may do `verb` on `resource` (the plural, or
    /// `<plural>/<sub>`) here; returns what it may see.
    pub fn authorize(
        &self,
        state: &ApiState,
        user: &User,
        resource: &str,
        verb: Verb,
    ) -> Result<Access, ApiError> {
        state.authorizer().authorize(
            user,
            &AccessRequest {
                api: self.kind.api,
                resource,
                verb,
                scope: self.scope(),
            },
        )
    }
}

/// Reads a request body as JSON: 415 if it is not (as aiohttp's `json()` fails).
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::http(StatusCode::UNSUPPORTED_MEDIA_TYPE))
}

/// True if a query flag like `?watch` is present (with any value, as in Krake).
pub fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    query.contains_key(name)
}

/// An integer query parameter; 400 naming the parameter if it is not one.
pub fn int_param<T: std::str::FromStr>(
    query: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ApiError::http_detail(
                StatusCode::BAD_REQUEST,
                format!("Invalid value for query parameter '{name}': {text:?}"),
            )
        }),
    }
}
