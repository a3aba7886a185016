//! Errors as RFC 7807 problem bodies, spelled as Krake spells them.
//!
//! Krake answers errors with `application/problem+json`. Its own problems
//! carry a `title` (the enum name, e.g. `NOT_FOUND_ERROR`) and a `type` URL
//! under its documentation; plain HTTP errors carry only `type:
//! "about:blank"`, the status and aiohttp's text (`"415: Unsupported Media
//! Type"`). [`ApiError`] is the one error type of every handler and becomes
//! such a response in one place ([`IntoResponse`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use krake_data::validation::ValidationErrors;
use krake_store::StoreError;
use serde::Serialize;

/// The base of Krake's problem `type` URLs.
pub const PROBLEM_BASE_URL: &str =
    "https://rak-n-rok.readthedocs.io/projects/krake/en/latest/user/problem.html";

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json; charset=utf-8";

/// Krake's titled problems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemTitle {
    /// The object does not exist.
    NotFoundError,
    /// Creating an object that exists.
    ResourceAlreadyExists,
    /// An update that is not allowed.
    UpdateError,
    /// Concurrent writes (or a stale `resource_version`).
    TransactionError,
    /// A Keystone token was refused.
    InvalidKeystoneToken,
    /// A Keycloak token was refused.
    InvalidKeycloakToken,
    /// Beyond Krake: an OpenID Connect token (JWT) was refused.
    InvalidOidcToken,
}

impl ProblemTitle {
    /// The title as written in the body.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemTitle::NotFoundError => "NOT_FOUND_ERROR",
            ProblemTitle::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ProblemTitle::UpdateError => "UPDATE_ERROR",
            ProblemTitle::TransactionError => "TRANSACTION_ERROR",
            ProblemTitle::InvalidKeystoneToken => "INVALID_KEYSTONE_TOKEN",
            ProblemTitle::InvalidKeycloakToken => "INVALID_KEYCLOAK_TOKEN",
            ProblemTitle::InvalidOidcToken => "INVALID_OIDC_TOKEN",
        }
    }

    /// The anchor of the title in Krake's documentation.
    fn slug(self) -> String {
        self.as_str().to_ascii_lowercase().replace('_', "-")
    }
}

/// An RFC 7807 problem body.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// `about:blank` or Krake's documentation URL of the title.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Krake's title, for titled problems.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// Beyond Krake: for 422, every validation error with its field path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub errors: Option<serde_json::Value>,
}

/// Every error a handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A titled Krake problem.
    #[error("{status} {}: {detail}", title.as_str())]
    Titled {
        /// The HTTP status.
        status: StatusCode,
        /// Krake's title.
        title: ProblemTitle,
        /// The detail text.
        detail: String,
    },
    /// A plain HTTP error (`type: about:blank`); the detail is aiohttp's
    /// `"<code>: <reason>"` unless a more specific text is given.
    #[error("{status}: {}", detail.as_deref().unwrap_or(""))]
    Http {
        /// The HTTP status.
        status: StatusCode,
        /// A specific detail, or `None` for the status text.
        detail: Option<String>,
    },
    /// The body failed validation (422).
    #[error("invalid body: {0}")]
    Invalid(ValidationErrors),
    /// The store could not be reached (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The `resource_version` to resume from is compacted (410).
    #[error("resource version {requested} is too old; the oldest available is {oldest}")]
    Gone {
        /// The version asked for.
        requested: i64,
        /// The oldest version the store keeps.
        oldest: i64,
    },
    /// A bug or corrupted data (500). Logged; the client sees a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 404 NOT_FOUND_ERROR with Krake's text. For a global kind Krake
    /// formats the missing namespace as Python's `None` (`krake/api/helpers.py`,
    /// `load`: `f"... does not exist in namespace {namespace!r}"`), so that is
    /// what its clients print.
    pub fn not_found(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        let detail = match namespace {
            Some(ns) => format!("'{kind}' '{name}' does not exist in namespace '{ns}'"),
            None => format!("'{kind}' '{name}' does not exist in namespace None"),
        };
        ApiError::Titled {
            status: StatusCode::NOT_FOUND,
            title: ProblemTitle::NotFoundError,
            detail,
        }
    }

    /// 409 RESOURCE_ALREADY_EXISTS with Krake's text.
    pub fn already_exists(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        let detail = match namespace {
            Some(ns) => format!("{kind} '{name}' already exists in namespace '{ns}'"),
            None => format!("{kind} '{name}' already exists"),
        };
        ApiError::Titled {
            status: StatusCode::CONFLICT,
            title: ProblemTitle::ResourceAlreadyExists,
            detail,
        }
    }

    /// A titled UPDATE_ERROR.
    pub fn update_error(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError::Titled {
            status,
            title: ProblemTitle::UpdateError,
            detail: detail.into(),
        }
    }

    /// 409 TRANSACTION_ERROR.
    pub fn transaction(detail: impl Into<String>) -> Self {
        ApiError::Titled {
            status: StatusCode::CONFLICT,
            title: ProblemTitle::TransactionError,
            detail: detail.into(),
        }
    }

    /// 401 with a titled problem (a token the identity provider refused).
    pub fn unauthorized(title: ProblemTitle, detail: impl Into<String>) -> Self {
        ApiError::Titled {
            status: StatusCode::UNAUTHORIZED,
            title,
            detail: detail.into(),
        }
    }

    /// A plain HTTP error with aiohttp's text.
    pub fn http(status: StatusCode) -> Self {
        ApiError::Http {
            status,
            detail: None,
        }
    }

    /// A plain HTTP error with a specific text.
    pub fn http_detail(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError::Http {
            status,
            detail: Some(detail.into()),
        }
    }

    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Titled { status, .. } | ApiError::Http { status, .. } => *status,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem body of the error.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let plain = |detail: String| Problem {
            problem_type: "about:blank".to_owned(),
            title: None,
            status: status.as_u16(),
            detail: Some(detail),
            errors: None,
        };
        let status_text = || {
            format!(
                "{}: {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            )
        };
        match self {
            ApiError::Titled { title, detail, .. } => Problem {
                problem_type: format!("{PROBLEM_BASE_URL}#{}", title.slug()),
                title: Some(title.as_str().to_owned()),
                status: status.as_u16(),
                detail: Some(detail.clone()),
                errors: None,
            },
            ApiError::Http { detail, .. } => plain(match detail {
                Some(detail) => format!("{}: {detail}", status.as_u16()),
                None => status_text(),
            }),
            ApiError::Invalid(errors) => Problem {
                errors: serde_json::to_value(errors).ok(),
                ..plain(errors.to_python_repr())
            },
            ApiError::Unavailable(message) => plain(format!("{}: {message}", status_text())),
            ApiError::Gone { .. } => plain(format!("{}: {self}", status_text())),
            ApiError::Internal(_) => plain(status_text()),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        ApiError::Invalid(errors)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { message } => ApiError::Unavailable(message),
            StoreError::Compacted { requested, oldest } => ApiError::Gone { requested, oldest },
            StoreError::Conflict { .. } => ApiError::transaction("Concurrent writes to database"),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(message) = &self {
            tracing::error!(error = %message, "internal error");
        }
        let status = self.status();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// The longest plain-text error body [`problem_bodies`] keeps as the detail.
const MAX_REJECTION_TEXT: usize = 1024;

/// Middleware (`axum::middleware::map_response`): an error answer that is
/// not a problem yet (axum's extractor rejections, such as 413 for a body
/// over the limit or 400 for a path that is not UTF-8, are plain text)
/// becomes Krake's problem body with the same status, its text as detail.
pub async fn problem_bodies(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/problem+json") {
        return response;
    }
    let plain_text = content_type.starts_with("text/plain");
    let (parts, body) = response.into_parts();
    let text = if plain_text {
        axum::body::to_bytes(body, MAX_REJECTION_TEXT)
            .await
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            .filter(|text| !text.is_empty())
    } else {
        None
    };
    let error = match text {
        Some(text) => ApiError::http_detail(parts.status, text),
        None => ApiError::http(parts.status),
    };
    let mut answer = error.into_response();
    // Keep what else the answer said (e.g. `Allow` of a 405).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_krakes() {
        let body = serde_json::to_string(
            &ApiError::not_found("Application", Some("testing"), "nope").problem(),
        )
        .unwrap();
        assert_eq!(
            body,
            r#"{"type":"https://rak-n-rok.readthedocs.io/projects/krake/en/latest/user/problem.html#not-found-error","title":"NOT_FOUND_ERROR","status":404,"detail":"'Application' 'nope' does not exist in namespace 'testing'"}"#
        );
        let body =
            serde_json::to_value(ApiError::http(StatusCode::UNSUPPORTED_MEDIA_TYPE).problem())
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "about:blank", "status": 415, "detail": "415: Unsupported Media Type"})
        );
        let exists =
            ApiError::already_exists("Application", Some("testing"), "echo-demo").problem();
        assert_eq!(
            exists.detail.as_deref(),
            Some("Application 'echo-demo' already exists in namespace 'testing'")
        );
        assert!(exists.problem_type.ends_with("#resource-already-exists"));
    }
}
