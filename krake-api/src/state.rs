//! The state shared by every handler.

use std::sync::Arc;

use krake_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::{AllowInternal, AlwaysAllow, AlwaysDeny, Authorizer};
use crate::authentication::Authenticator;
use crate::config::ApiConfig;
use crate::config::AuthorizationMode;
use crate::metrics::Metrics;
use crate::rbac::RbacAuthorizer;
use crate::watch_hub::{HubConfig, WatchHub};

/// The API's shared state: the store, the watch hub, settings and metrics.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    hub: WatchHub,
    config: ApiConfig,
    authorizer: Arc<dyn Authorizer>,
    rbac: Option<Arc<RbacAuthorizer>>,
    authenticator: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl ApiState {
    /// State over `store` with `config`; the authorizer follows
    /// `config.authorization` (RBAC starts following the store's Roles and
    /// RoleBindings at once, so this must run inside a tokio runtime).
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        Self::build(store, config, None)
    }

    /// State with a custom authorizer (an embedding service's own policy).
    pub fn with_authorizer(
        store: Arc<dyn Store>,
        config: ApiConfig,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        Self::build(store, config, Some(authorizer))
    }

    fn build(
        store: Arc<dyn Store>,
        config: ApiConfig,
        authorizer: Option<Arc<dyn Authorizer>>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new());
        let store = crate::metrics::MeteredStore::wrap(store, metrics.clone());
        let shutdown = CancellationToken::new();
        let hub = WatchHub::new(
            store.clone(),
            HubConfig {
                replay_buffer: config.watch_replay_buffer,
                replay_buffer_bytes: config.watch_replay_buffer_bytes,
                channel_capacity: config.watch_channel_capacity,
            },
            shutdown.clone(),
        );
        let mut rbac = None;
        let authorizer = authorizer.unwrap_or_else(|| match config.authorization {
            AuthorizationMode::AlwaysAllow => Arc::new(AlwaysAllow),
            AuthorizationMode::AlwaysDeny => Arc::new(AlwaysDeny),
            AuthorizationMode::Rbac => {
                let authorizer =
                    RbacAuthorizer::spawn(store.clone(), hub.clone(), shutdown.clone());
                rbac = Some(authorizer.clone());
                authorizer
            }
        });
        let authorizer: Arc<dyn Authorizer> = match &config.authentication.internal_user {
            Some(internal) => Arc::new(AllowInternal {
                user: Arc::from(internal.user()),
                inner: authorizer,
            }),
            None => authorizer,
        };
        let authenticator = Arc::new(Authenticator::from_config(&config.authentication));
        ApiState {
            inner: Arc::new(Inner {
                store,
                hub,
                config,
                authorizer,
                rbac,
                authenticator,
                metrics,
                shutdown,
            }),
        }
    }

    /// The store (wrapped to record latency metrics).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The shared watches.
    pub fn hub(&self) -> &WatchHub {
        &self.inner.hub
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    /// The authorizer.
    pub fn authorizer(&self) -> &dyn Authorizer {
        self.inner.authorizer.as_ref()
    }

    /// The RBAC authorizer, when `authorization` is RBAC.
    pub fn rbac(&self) -> Option<&Arc<RbacAuthorizer>> {
        self.inner.rbac.as_ref()
    }

    /// The authentication chain.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.inner.authenticator
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Cancelled when the server shuts down: watch streams end.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Ends every watch stream and stops the hub's store watches.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }
}
