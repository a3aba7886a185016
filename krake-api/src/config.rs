//! Settings of the API library (the server binary reads them from its
//! configuration file, environment and flags).

use std::time::Duration;

use crate::authentication::InternalUser;

/// How requests are authenticated: Krake's `authentication` section.
///
/// The chain, in order: the [`strategy`](Self::strategy) (at most one, as
/// in Krake); then the subject common name of a verified TLS client
/// certificate (when the server runs TLS with a client CA); then
/// `system:anonymous` if [`allow_anonymous`](Self::allow_anonymous), else 401.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationConfig {
    /// Requests nobody authenticated run as `system:anonymous`; otherwise 401.
    pub allow_anonymous: bool,
    /// The one strategy that reads the request (or none).
    pub strategy: AuthenticationStrategy,
    /// How long a token that Keystone or Keycloak accepted is trusted
    /// without asking again (`0` asks every time).
    pub token_cache_ttl: Duration,
    /// The timeout of one request to Keystone, Keycloak or the OIDC issuer.
    pub provider_timeout: Duration,
    /// Beyond Krake: the in-process user of the embedding process's own
    /// clients, checked before the chain and allowed everything.
    pub internal_user: Option<InternalUser>,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        AuthenticationConfig {
            allow_anonymous: true,
            strategy: AuthenticationStrategy::None,
            token_cache_ttl: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(10),
            internal_user: None,
        }
    }
}

/// Krake's `authentication.strategy`: at most one is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthenticationStrategy {
    /// No strategy: certificates and anonymous only.
    #[default]
    None,
    /// Every request is this user (Krake's `static`; nothing after it is
    /// consulted).
    Static {
        /// The user name (Krake's default: `system`).
        name: String,
    },
    /// The raw `Authorization` header is a Keystone token, validated at
    /// `GET {endpoint}/auth/tokens`; the user is `token.user.name`.
    Keystone {
        /// Keystone's v3 URL, e.g. `http://localhost:5000/v3`.
        endpoint: String,
    },
    /// The `Authorization` header is a Keycloak access token, validated at
    /// the realm's `userinfo` endpoint; the user is `preferred_username`.
    Keycloak {
        /// Keycloak's base URL, e.g. `http://localhost:9080`.
        endpoint: String,
        /// The realm.
        realm: String,
    },
    /// Beyond Krake: a bearer JWT verified locally against the issuer's keys.
    Oidc(OidcConfig),
}

/// Beyond Krake: OpenID Connect tokens verified without a round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer (`iss` must equal it); its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The audience (`aud` must contain it), usually the client id.
    pub audience: String,
    /// The JWKS URL; `None` reads `jwks_uri` from the discovery document.
    pub jwks_url: Option<String>,
    /// The claim holding the user name.
    pub username_claim: String,
    /// How long fetched keys are used before fetching them again (an
    /// unknown key id also triggers a fetch, at most every 10 s).
    pub jwks_ttl: Duration,
}

impl OidcConfig {
    /// Settings for an issuer and audience, with the defaults for the rest.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            username_claim: "preferred_username".into(),
            jwks_ttl: Duration::from_secs(600),
        }
    }
}

/// Krake's `authorization` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Everything is allowed.
    #[default]
    AlwaysAllow,
    /// Everything is refused with 403.
    AlwaysDeny,
    /// Krake's RBAC on Roles and RoleBindings ([`crate::rbac`]).
    Rbac,
}

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Authentication.
    pub authentication: AuthenticationConfig,
    /// Authorization.
    pub authorization: AuthorizationMode,
    /// Heartbeat interval of watch streams when the request gives none
    /// (Krake: 10 s).
    pub default_heartbeat: Duration,
    /// How long `?blocking` waits for the requested state (Krake: about 60 s).
    pub blocking_timeout: Duration,
    /// How many recent changes per kind are kept in memory to resume watches
    /// without asking the store.
    pub watch_replay_buffer: usize,
    /// The most memory, in bytes, those recent changes may take per kind
    /// (their encoded lines); the oldest are dropped first, and a watch
    /// resuming from before them is served by the store instead.
    pub watch_replay_buffer_bytes: usize,
    /// How many events a slow watcher may fall behind before its stream is
    /// cut off.
    pub watch_channel_capacity: usize,
    /// How often a read-modify-write is retried on a concurrent write before
    /// answering 409 TRANSACTION_ERROR.
    pub transaction_retries: u32,
    /// The largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// The `Access-Control-Allow-Origin` for browsers (Krake: `*`).
    pub cors_origin: String,
    /// Beyond Krake: how long a connection's write may stay blocked (its
    /// client reading nothing) before the connection is closed, when the
    /// listener is wrapped in [`CutSlowClients`](crate::slow_clients::CutSlowClients).
    /// Progress restarts the clock: a client that reads is never cut, and
    /// idle watches are not writes. Zero turns the cut off.
    pub write_timeout: Duration,
    /// Beyond Krake: the kernel send buffer of accepted connections in
    /// bytes (`SO_SNDBUF`), for listeners bound with
    /// [`slow_clients::bind`](crate::slow_clients::bind); `None` leaves it
    /// to the kernel's autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB
    /// by default). It bounds what a client that stopped reading holds in
    /// the kernel before its writes block and the write timeout counts.
    pub send_buffer_bytes: Option<usize>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            authentication: AuthenticationConfig::default(),
            authorization: AuthorizationMode::default(),
            default_heartbeat: Duration::from_secs(10),
            blocking_timeout: Duration::from_secs(60),
            watch_replay_buffer: 4096,
            watch_replay_buffer_bytes: 4 * 1024 * 1024,
            watch_channel_capacity: 4096,
            transaction_retries: 8,
            max_body_bytes: 16 * 1024 * 1024,
            cors_origin: "*".to_owned(),
            write_timeout: Duration::from_secs(30),
            send_buffer_bytes: None,
        }
    }
}
