//! Settings of the API library (the server binary reads them from its
//! configuration file, environment and flags).

use std::time::Duration;

/// How requests are authenticated (Krake's `authentication` section; the
/// Keystone, Keycloak, OIDC and certificate strategies arrive with the
/// authentication work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticationConfig {
    /// Requests nobody authenticated run as `system:anonymous`; otherwise 401.
    pub allow_anonymous: bool,
    /// Krake's `static` strategy: every request is this user.
    pub static_user: Option<String>,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        AuthenticationConfig {
            allow_anonymous: true,
            static_user: None,
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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            authentication: AuthenticationConfig::default(),
            authorization: AuthorizationMode::default(),
            default_heartbeat: Duration::from_secs(10),
            blocking_timeout: Duration::from_secs(60),
            watch_replay_buffer: 4096,
            watch_channel_capacity: 4096,
            transaction_retries: 8,
            max_body_bytes: 16 * 1024 * 1024,
            cors_origin: "*".to_owned(),
        }
    }
}
