//! A typed client for Krake's REST API, for krake-rs and Krake 1.0.1 servers.
//!
//! - [`Client`]: one connection pool to one API, with TLS ([`TlsOptions`]:
//!   CA, client certificate and key; rustls), a token, and timeouts; or to
//!   several replicas of the API, failing over between them
//!   ([`ClientBuilder::endpoints`] has the semantics).
//! - [`Api<K>`]: a typed handle on one kind `K` of the
//!   [kind registry](krake_data::registry), in a namespace or across all of
//!   them: create, get, list (label selectors, pages as a stream), update
//!   (conditional on `resource_version`), delete (with force), and the
//!   sub-operations the kind serves (status, binding, complete, shutdown,
//!   retry). [`DynamicApi`] is the same over JSON for a kind chosen at run time.
//! - [`Api::watch`]: a [`Stream`](futures::Stream) of [`WatchEvent`]s that
//!   reconnects with backoff, resumes from the last `resource_version`, and
//!   relists on 410 or against servers without resume ([`watch`] has the
//!   contract).
//! - [`WriteGuard`]: a check run just before every write request goes out
//!   (fencing for leader election); a refused write is never sent.
//! - [`Error`]: typed errors; API errors carry the [`Problem`] body.
//!
//! # Example
//!
//! ```
//! use krake_client::{Api, Client, ListParams, WatchConfig};
//! use krake_data::kinds::kubernetes::Application;
//!
//! let client = Client::builder("http://localhost:8080")
//!     .request_timeout(std::time::Duration::from_secs(30))
//!     .build()?;
//! let apps: Api<Application> = Api::namespaced(client, "testing");
//! let selected = ListParams::default().labels("tier=web").limit(50);
//! assert_eq!(selected.limit, Some(50));
//! // In an async context:
//! // let page = apps.list(&selected).await?;
//! // let events = apps.watch(WatchConfig::default());
//! let _watch = apps.watch(WatchConfig::default().labels("tier=web"));
//! assert_eq!(apps.dynamic().kind().plural, "applications");
//! # Ok::<(), krake_client::Error>(())
//! ```

mod backoff;
mod client;
mod endpoints;
mod error;
mod guard;
mod handle;
mod tls;
pub mod watch;

pub use client::{Client, ClientBuilder, Me};
pub use error::{Error, Problem, Result};
pub use guard::WriteGuard;
pub use handle::{Api, Bindable, DeleteParams, DynamicApi, ListParams};
pub use tls::TlsOptions;
pub use watch::{Backoff, WatchConfig, WatchEvent};

/// The version of this crate (`CARGO_PKG_VERSION`), the same for every crate
/// of the krake-rs workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
