//! Loading objects from YAML manifests: Roles and RoleBindings to start
//! RBAC with, or any other kind.
//!
//! Krake's `krake_bootstrap_db` writes straight into etcd; here every
//! document goes through the API's own handlers (the same parsing,
//! validation, defaults and metadata as a `POST`), served in-process by a
//! router over the same store with `always-allow` authorization. All
//! documents are checked before anything is written, so a bad file writes
//! nothing. Loading is idempotent: an object that exists is left alone
//! ([`Outcome::Exists`]) unless `force` asks to update it ([`Outcome::Updated`],
//! or [`Outcome::Unchanged`] when it already matches).
//!
//! ```
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! use std::sync::Arc;
//! use krake_api::bootstrap::{Outcome, load};
//! use krake_api::store::embedded::EmbeddedStore;
//!
//! let store = Arc::new(EmbeddedStore::open(dir.path().join("krake.redb"))?);
//! let yaml = "api: core\nkind: Role\nmetadata: {name: reader}\nrules:\n- {api: '', resources: [''], namespaces: [''], verbs: [get, list]}\n";
//! let loaded = load(store.clone(), yaml, false).await?;
//! assert_eq!(loaded[0].outcome, Outcome::Created);
//! let again = load(store, yaml, false).await?;
//! assert_eq!(again[0].outcome, Outcome::Exists);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use krake_data::KindInfo;
use krake_data::registry::{self, ParseMode};
use krake_store::Store;
use serde_json::Value;
use tower::ServiceExt;

use crate::config::{ApiConfig, AuthenticationConfig, AuthenticationStrategy, AuthorizationMode};
use crate::problem::Problem;
use crate::{ApiState, router};

/// What happened to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed and was left as it is (no `force`).
    Exists,
    /// It existed, `force` was given, and it was updated.
    Updated,
    /// It existed, `force` was given, and it already matched.
    Unchanged,
}

/// One loaded document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// `Kind namespace/name` or `Kind name`.
    pub object: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Why loading failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The text is not YAML.
    #[error("not valid YAML: {0}")]
    Yaml(String),
    /// A document is not an object of a known kind, or fails validation.
    #[error("document {index}: {message}")]
    Invalid {
        /// The document's position, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// The API refused a document (the store is down, ...).
    #[error("{object}: {status} {detail}")]
    Refused {
        /// The object.
        object: String,
        /// The HTTP status.
        status: u16,
        /// The problem's detail.
        detail: String,
    },
}

/// One checked document.
#[derive(Debug)]
struct Document {
    kind: &'static KindInfo,
    namespace: Option<String>,
    name: String,
    body: Value,
}

impl Document {
    fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.kind, self.name),
            None => format!("{} {}", self.kind.kind, self.name),
        }
    }
}

fn check(index: usize, body: Value) -> Result<Document, BootstrapError> {
    let invalid = |message: String| BootstrapError::Invalid { index, message };
    let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or_default();
    let (api, kind_name) = (text("api"), text("kind"));
    let kind = registry::by_kind(api, kind_name)
        .ok_or_else(|| invalid(format!("unknown kind {kind_name:?} of api {api:?}")))?;
    let parsed = kind
        .parse(body.clone(), ParseMode::Create)
        .map_err(|errors| invalid(format!("{}: {}", kind.kind, errors.to_python_repr())))?;
    let metadata = &parsed["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default().to_owned();
    let namespace = metadata["namespace"].as_str().map(str::to_owned);
    if kind.is_namespaced() && namespace.is_none() {
        return Err(invalid(format!(
            "{} {name}: a namespaced kind needs metadata.namespace",
            kind.kind
        )));
    }
    Ok(Document {
        kind,
        namespace: namespace.filter(|_| kind.is_namespaced()),
        name,
        body,
    })
}

/// Parses multi-document YAML into checked documents (empty documents are
/// skipped).
fn documents(text: &str) -> Result<Vec<Document>, BootstrapError> {
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|err| BootstrapError::Yaml(err.to_string()))?;
    values
        .into_iter()
        .filter(|value| !value.is_null())
        .enumerate()
        .map(|(i, value)| check(i + 1, value))
        .collect()
}

/// Loads every document of `text` into `store`; see the module docs.
pub async fn load(
    store: Arc<dyn Store>,
    text: &str,
    force: bool,
) -> Result<Vec<Loaded>, BootstrapError> {
    let documents = documents(text)?;
    let config = ApiConfig {
        authentication: AuthenticationConfig {
            allow_anonymous: false,
            strategy: AuthenticationStrategy::Static {
                name: "system:bootstrap".into(),
            },
            ..AuthenticationConfig::default()
        },
        authorization: AuthorizationMode::AlwaysAllow,
        ..ApiConfig::default()
    };
    let state = ApiState::new(store, config);
    let app = router(state.clone());
    let mut loaded = Vec::with_capacity(documents.len());
    for document in &documents {
        let object = document.describe();
        let collection = document.kind.collection_path(document.namespace.as_deref());
        let (status, problem) = send(&app, Method::POST, &collection, &document.body).await;
        let outcome = match status {
            StatusCode::OK => Outcome::Created,
            StatusCode::CONFLICT if !force => Outcome::Exists,
            StatusCode::CONFLICT => {
                let path = format!("{collection}/{}", document.name);
                match send(&app, Method::PUT, &path, &document.body).await {
                    (StatusCode::OK, _) => Outcome::Updated,
                    (StatusCode::BAD_REQUEST, Some(problem))
                        if problem.title.as_deref() == Some("UPDATE_ERROR") =>
                    {
                        Outcome::Unchanged
                    }
                    (status, problem) => {
                        state.shutdown();
                        return Err(refused(object, status, problem));
                    }
                }
            }
            status => {
                state.shutdown();
                return Err(refused(object, status, problem));
            }
        };
        loaded.push(Loaded { object, outcome });
    }
    state.shutdown();
    Ok(loaded)
}

fn refused(object: String, status: StatusCode, problem: Option<Problem>) -> BootstrapError {
    BootstrapError::Refused {
        object,
        status: status.as_u16(),
        detail: problem.and_then(|p| p.detail).unwrap_or_default(),
    }
}

async fn send(
    app: &axum::Router,
    method: Method,
    path: &str,
    body: &Value,
) -> (StatusCode, Option<Problem>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()));
    let Ok(request) = request else {
        return (StatusCode::BAD_REQUEST, None);
    };
    let Ok(response) = app.clone().oneshot(request).await;
    let status = response.status();
    if status.is_success() {
        return (status, None);
    }
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, serde_json::from_slice(&bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked_before_anything_is_written() {
        let text = "api: core\nkind: Role\nmetadata: {name: ok}\nrules: []\n---\n---\napi: core\nkind: Nope\nmetadata: {name: x}\n";
        let err = documents(text).unwrap_err();
        assert!(
            err.to_string()
                .contains("document 2: unknown kind \"Nope\" of api \"core\""),
            "{err}"
        );
        let err = documents("api: core\nkind: Role\nmetadata: {name: 'BAD NAME'}\nrules: []\n")
            .unwrap_err();
        assert!(err.to_string().starts_with("document 1: Role: "), "{err}");
        let err = documents(
            "api: kubernetes\nkind: Cluster\nmetadata: {name: c}\nspec: {kubeconfig: {}}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("document 1"), "{err}");
        assert!(matches!(documents("a: [b"), Err(BootstrapError::Yaml(_))));
    }
}
