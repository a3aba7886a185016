//! Who is asking, and may they: the [`User`] of a request and the
//! [`Authorizer`] deciding on each (api, resource, verb, namespace).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use krake_data::kinds::core::Verb;

use crate::config::{AuthenticationConfig, AuthorizationMode};
use crate::problem::ApiError;

/// The user name of unauthenticated requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// The authenticated user of a request (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User(pub Arc<str>);

impl User {
    /// The user's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// One access decision to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The API group.
    pub api: &'a str,
    /// The plural, or `<plural>/<sub-operation>`.
    pub resource: &'a str,
    /// The verb (`list` for list and watch).
    pub verb: Verb,
    /// The namespace, `None` for global kinds and across all namespaces.
    pub namespace: Option<&'a str>,
}

/// Decides whether a user may do something.
pub trait Authorizer: Send + Sync + std::fmt::Debug + 'static {
    /// `Ok` to allow; 401 or 403 to refuse.
    fn authorize(&self, user: &User, request: &AccessRequest<'_>) -> Result<(), ApiError>;
}

impl Authorizer for AuthorizationMode {
    fn authorize(&self, _user: &User, _request: &AccessRequest<'_>) -> Result<(), ApiError> {
        match self {
            AuthorizationMode::AlwaysAllow => Ok(()),
            AuthorizationMode::AlwaysDeny => Err(ApiError::http(StatusCode::FORBIDDEN)),
        }
    }
}

/// Middleware: attaches the [`User`] of the request, or answers 401.
pub async fn authenticate(
    State(config): State<Arc<AuthenticationConfig>>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match (&config.static_user, config.allow_anonymous) {
        (Some(name), _) => name.as_str(),
        (None, true) => ANONYMOUS,
        (None, false) if request.method() == axum::http::Method::OPTIONS => ANONYMOUS,
        (None, false) => {
            return ApiError::http_detail(
                StatusCode::UNAUTHORIZED,
                "No user has been authenticated.",
            )
            .into_response();
        }
    };
    request.extensions_mut().insert(User(Arc::from(user)));
    next.run(request).await
}
