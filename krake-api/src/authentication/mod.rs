//! Who is asking: Krake's authentication chain.
//!
//! For every request, in this order (Krake's, `api/middlewares.py`):
//! 1. at most one strategy ([`AuthenticationStrategy`]): `static` makes every
//!    request one user; `keystone`, `keycloak` and (beyond Krake) `oidc`
//!    verify the token in the `Authorization` header (the raw token, as
//!    Krake expects; a `Bearer ` prefix is accepted too) and refuse a bad
//!    one with 401; without the header the chain goes on;
//! 2. the subject common name of the TLS client certificate, when the server
//!    runs TLS with a client CA ([`crate::tls`]);
//! 3. `system:anonymous` if anonymous access is allowed (and always for
//!    `OPTIONS`), else 401 "No user has been authenticated.".
//!
//! A provider that cannot be reached, or answers with a server error, gives
//! 503 with a problem body, never 500. Tokens Keystone or Keycloak accepted
//! are remembered for a short time ([`TokenCache`]), so not every request
//! costs a round trip; OIDC tokens are verified locally against the
//! issuer's keys, fetched once and cached.
//!
//! Beyond Krake, an [`InternalUser`] (a random per-process token for the
//! embedding process's own controllers) is checked before the chain; its
//! user name is reserved: no other way of authenticating may produce it.

mod keycloak;
mod keystone;
mod oidc;
mod token_cache;

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use keycloak::Keycloak;
pub use keystone::Keystone;
pub use oidc::Oidc;
pub use token_cache::TokenCache;

use crate::auth::{ANONYMOUS, User};
use crate::config::{AuthenticationConfig, AuthenticationStrategy};
use crate::problem::ApiError;
use crate::tls::PeerInfo;

/// Verifies a token and names its user: the Keystone, Keycloak and OIDC
/// strategies, or an embedding service's own.
#[async_trait]
pub trait TokenVerifier: Send + Sync + std::fmt::Debug + 'static {
    /// The user of a valid token; 401 for an invalid one, 503 if the
    /// identity provider cannot answer.
    async fn verify(&self, token: &str) -> Result<String, ApiError>;

    /// [`verify`](Self::verify), with the time the token stops being valid
    /// when the provider says (Keystone's `expires_at`): a
    /// [`TokenCache`] never trusts a token past it.
    /// The default knows no expiry.
    async fn verify_until(
        &self,
        token: &str,
    ) -> Result<(String, Option<std::time::SystemTime>), ApiError> {
        Ok((self.verify(token).await?, None))
    }
}

/// A user that exists only inside one process: the process's own clients
/// (for example controllers running next to the API) send its random token
/// (`Authorization: Bearer <token>`), and the API takes them for its user,
/// before any strategy. The token is made at random and never written
/// anywhere; its user name is reserved (a certificate, a strategy or a
/// static user naming it gets 401), and the authorizer allows it everything
/// ([`AllowInternal`](crate::auth::AllowInternal)).
#[derive(Clone, PartialEq, Eq)]
pub struct InternalUser {
    token: Arc<str>,
    user: Arc<str>,
}

impl std::fmt::Debug for InternalUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalUser")
            .field("user", &self.user)
            .field("token", &"<hidden>")
            .finish()
    }
}

impl InternalUser {
    /// The user `user` with a fresh random token (256 bits from the
    /// operating system's generator, through UUID v4).
    pub fn generate(user: impl Into<Arc<str>>) -> Self {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        InternalUser {
            token: Arc::from(token),
            user: user.into(),
        }
    }

    /// The token to send as a bearer token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(token.as_bytes().ct_eq(self.token.as_bytes()))
    }
}

/// The authentication chain of one API server.
#[derive(Debug, Clone)]
pub struct Authenticator {
    static_user: Option<Arc<str>>,
    verifier: Option<Arc<dyn TokenVerifier>>,
    allow_anonymous: bool,
    internal: Option<InternalUser>,
}

impl Authenticator {
    /// The chain `config` describes.
    pub fn from_config(config: &AuthenticationConfig) -> Self {
        let client = || {
            reqwest::Client::builder()
                .timeout(config.provider_timeout)
                .connect_timeout(config.provider_timeout)
                .build()
        };
        let cached = |verifier: Arc<dyn TokenVerifier>| -> Arc<dyn TokenVerifier> {
            if config.token_cache_ttl.is_zero() {
                verifier
            } else {
                Arc::new(TokenCache::new(verifier, config.token_cache_ttl))
            }
        };
        let mut authenticator = Authenticator {
            static_user: None,
            verifier: None,
            allow_anonymous: config.allow_anonymous,
            internal: config.internal_user.clone(),
        };
        let verifier: Result<Arc<dyn TokenVerifier>, reqwest::Error> = match &config.strategy {
            AuthenticationStrategy::None => return authenticator,
            AuthenticationStrategy::Static { name } => {
                authenticator.static_user = Some(Arc::from(name.as_str()));
                return authenticator;
            }
            AuthenticationStrategy::Keystone { endpoint } => {
                client().map(|client| cached(Arc::new(Keystone::new(client, endpoint))))
            }
            AuthenticationStrategy::Keycloak { endpoint, realm } => {
                client().map(|client| cached(Arc::new(Keycloak::new(client, endpoint, realm))))
            }
            AuthenticationStrategy::Oidc(oidc) => client()
                .map(|client| Arc::new(Oidc::new(client, oidc.clone())) as Arc<dyn TokenVerifier>),
        };
        authenticator.verifier = Some(verifier.unwrap_or_else(|err| {
            tracing::error!(error = %err, "cannot create the identity provider's HTTP client");
            Arc::new(Broken(err.to_string()))
        }));
        authenticator
    }

    /// A chain with a custom token verifier (and no static user).
    pub fn with_verifier(verifier: Arc<dyn TokenVerifier>, allow_anonymous: bool) -> Self {
        Authenticator {
            static_user: None,
            verifier: Some(verifier),
            allow_anonymous,
            internal: None,
        }
    }

    /// The user of a request with these headers, over a connection from
    /// `peer` (when served by [`TlsListener`](crate::tls::TlsListener)).
    pub async fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<User, ApiError> {
        let Some(internal) = &self.internal else {
            return self.chain(method, headers, peer).await;
        };
        if token(headers).is_some_and(|token| internal.matches(token)) {
            return Ok(User(internal.user.clone()));
        }
        let user = self.chain(method, headers, peer).await?;
        if user.name() == internal.user() {
            return Err(ApiError::http_detail(
                StatusCode::UNAUTHORIZED,
                "This user name is reserved for the server's own controllers.",
            ));
        }
        Ok(user)
    }

    /// Krake's chain: the strategy, the certificate, anonymous.
    async fn chain(
        &self,
        method: &Method,
        headers: &HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<User, ApiError> {
        if let Some(name) = &self.static_user {
            return Ok(User(name.clone()));
        }
        if let (Some(verifier), Some(token)) = (&self.verifier, token(headers)) {
            return verifier.verify(token).await.map(User::new);
        }
        if let Some(name) = peer.and_then(|peer| peer.common_name.clone()) {
            return Ok(User(name));
        }
        if self.allow_anonymous || method == Method::OPTIONS {
            return Ok(User::new(ANONYMOUS));
        }
        Err(ApiError::http_detail(
            StatusCode::UNAUTHORIZED,
            "No user has been authenticated.",
        ))
    }
}

/// The token of the `Authorization` header: the raw value (Krake's way),
/// or what follows `Bearer `.
fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    };
    (!token.is_empty()).then_some(token)
}

/// A verifier whose HTTP client could not be built: every token gets 503.
#[derive(Debug)]
struct Broken(String);

#[async_trait]
impl TokenVerifier for Broken {
    async fn verify(&self, _token: &str) -> Result<String, ApiError> {
        Err(ApiError::Unavailable(format!(
            "the identity provider's client is unusable: {}",
            self.0
        )))
    }
}

/// Middleware: attaches the [`User`] of the request, or answers 401 (503
/// if the identity provider is down).
pub async fn authenticate(
    State(authenticator): State<Arc<Authenticator>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .map(|info| info.0.clone());
    match authenticator
        .authenticate(request.method(), request.headers(), peer.as_ref())
        .await
    {
        Ok(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// A provider's answer as an error: 503 for server errors (it is down or
/// broken), the provider's 401 otherwise.
fn provider_status_error(
    provider: &str,
    status: reqwest::StatusCode,
    refused: impl FnOnce() -> ApiError,
) -> ApiError {
    if status.is_server_error() {
        ApiError::Unavailable(format!("{provider} answered {status}"))
    } else {
        refused()
    }
}

/// A provider that could not be reached: 503.
fn provider_unreachable(provider: &str, err: &reqwest::Error) -> ApiError {
    ApiError::Unavailable(format!("cannot reach {provider}: {err}"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn tokens_are_raw_or_bearer() {
        assert_eq!(token(&headers("abc")), Some("abc"));
        assert_eq!(token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(token(&headers("bearer  abc ")), Some("abc"));
        assert_eq!(token(&headers("  ")), None);
        assert_eq!(token(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn the_chain_falls_through_to_certificates_then_anonymous() {
        let config = AuthenticationConfig {
            allow_anonymous: false,
            ..AuthenticationConfig::default()
        };
        let chain = Authenticator::from_config(&config);
        let peer = PeerInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            common_name: Some(Arc::from("system:scheduler")),
        };
        let user = chain
            .authenticate(&Method::GET, &HeaderMap::new(), Some(&peer))
            .await
            .unwrap();
        assert_eq!(user.name(), "system:scheduler");
        let err = chain
            .authenticate(&Method::GET, &HeaderMap::new(), None)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            err.problem().detail.as_deref(),
            Some("401: No user has been authenticated.")
        );
        let options = chain
            .authenticate(&Method::OPTIONS, &HeaderMap::new(), None)
            .await
            .unwrap();
        assert!(options.is_anonymous());
    }

    #[tokio::test]
    async fn the_internal_token_comes_first_and_its_name_is_reserved() {
        let internal = InternalUser::generate("system:krake-server");
        assert_eq!(internal.token().len(), 64);
        assert!(!format!("{internal:?}").contains(internal.token()));
        assert_ne!(
            internal.token(),
            InternalUser::generate("system:krake-server").token()
        );
        let config = AuthenticationConfig {
            allow_anonymous: true,
            strategy: AuthenticationStrategy::Static {
                name: "system".into(),
            },
            internal_user: Some(internal.clone()),
            ..AuthenticationConfig::default()
        };
        let chain = Authenticator::from_config(&config);
        let bearer = headers(&format!("Bearer {}", internal.token()));
        let user = chain
            .authenticate(&Method::GET, &bearer, None)
            .await
            .unwrap();
        assert_eq!(user.name(), "system:krake-server");
        // Without the token (or with another), the chain as usual.
        for headers in [HeaderMap::new(), headers("Bearer nope")] {
            let user = chain
                .authenticate(&Method::GET, &headers, None)
                .await
                .unwrap();
            assert_eq!(user.name(), "system");
        }
        // Nobody else may be the internal user.
        let config = AuthenticationConfig {
            allow_anonymous: false,
            internal_user: Some(internal),
            ..AuthenticationConfig::default()
        };
        let chain = Authenticator::from_config(&config);
        let peer = PeerInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            common_name: Some(Arc::from("system:krake-server")),
        };
        let err = chain
            .authenticate(&Method::GET, &HeaderMap::new(), Some(&peer))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn static_wins_over_everything() {
        let config = AuthenticationConfig {
            allow_anonymous: false,
            strategy: AuthenticationStrategy::Static {
                name: "system".into(),
            },
            ..AuthenticationConfig::default()
        };
        let chain = Authenticator::from_config(&config);
        let user = chain
            .authenticate(&Method::GET, &headers("token"), None)
            .await
            .unwrap();
        assert_eq!(user.name(), "system");
    }
}
