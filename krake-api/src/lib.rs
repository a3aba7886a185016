//! The Krake REST API as a library.
//!
//! [`router`] serves Krake 1.0.1's REST API over any [`Store`](krake_store::Store):
//! every route of every kind in the [kind registry](krake_data::registry),
//! generated from it (one generic handler set), with Krake's status codes,
//! problem bodies and watch streams, so an unchanged Krake client cannot tell
//! it from Krake's own server. Beyond Krake, and ignored by Krake clients:
//! `metadata.resource_version` with conditional updates, watch resume,
//! label selectors, pagination, `/openapi.json`, `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! The store is reached only through the [`Store`](krake_store::Store)
//! trait ([`krake_store`] is re-exported as [`store`]); watches share one
//! store watch per kind through the [`watch_hub`].
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "embedded")]
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use krake_api::{ApiConfig, ApiState, router};
//! use krake_api::store::embedded::EmbeddedStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Arc::new(EmbeddedStore::open(dir.path().join("krake.redb"))?);
//! let state = ApiState::new(store, ApiConfig::default());
//! let app = router(state.clone());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let _ = (app, listener);
//! // axum::serve(listener, app).with_graceful_shutdown(...).await?;
//! state.shutdown(); // ends watch streams
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod authentication;
pub mod bootstrap;
pub mod config;
pub mod handlers;
pub mod metrics;
pub mod object;
pub mod openapi;
pub mod pagination;
pub mod problem;
pub mod rbac;
pub mod routes;
pub mod selector;
pub mod slow_clients;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod watch_hub;

pub use krake_store as store;

pub use config::{
    ApiConfig, AuthenticationConfig, AuthenticationStrategy, AuthorizationMode, OidcConfig,
};
pub use problem::{ApiError, Problem};
pub use routes::router;
pub use state::ApiState;
