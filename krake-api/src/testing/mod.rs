//! Test helpers (feature `testing`): a real API server on a free loopback
//! port, over the embedded store or any other store (the workspace's
//! `krake-testkit` starts one over a real etcd process).
//!
//! ```no_run
//! # async fn example() {
//! let server = krake_api::testing::TestServer::embedded().await;
//! let body = reqwest::get(format!("{}/", server.url())).await.unwrap().text().await.unwrap();
//! assert!(body.contains("1.0.1"));
//! # }
//! ```

pub mod pki;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;

use krake_store::Store;
use krake_store::embedded::EmbeddedStore;
use tokio::task::JoinHandle;

use crate::slow_clients::CutSlowClients;
use crate::tls::{PeerInfo, TlsListener};
use crate::{ApiConfig, ApiState, router};

/// What keeps a test server's store alive.
#[derive(Debug)]
pub enum Backing {
    /// The embedded store's temporary folder.
    Embedded(tempfile::TempDir),
    /// Whatever else keeps the store alive (an etcd process, say), dropped
    /// with the server.
    Other(Box<dyn std::any::Any + Send + Sync>),
}

/// A fresh embedded store in a temporary folder.
///
/// # Panics
///
/// If the folder or the store cannot be made.
pub fn embedded_store() -> (Arc<dyn Store>, Backing) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store =
        EmbeddedStore::open(dir.path().join("krake.redb")).expect("open the embedded store");
    (Arc::new(store), Backing::Embedded(dir))
}

/// A fresh embedded store that keeps only 5 past changes, and settings
/// whose watch replay buffer holds 2: a watch resumed from an older
/// revision answers 410 Gone, as after a compaction.
///
/// # Panics
///
/// If the folder or the store cannot be made.
pub fn short_history_store() -> (Arc<dyn Store>, Backing, ApiConfig) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let options = krake_store::embedded::EmbeddedOptions {
        retained_events: 5,
        ..krake_store::embedded::EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(dir.path().join("krake.redb"), options)
        .expect("open the embedded store");
    let config = ApiConfig {
        watch_replay_buffer: 2,
        ..ApiConfig::default()
    };
    (Arc::new(store), Backing::Embedded(dir), config)
}

/// An API server serving on `127.0.0.1:<free port>` until dropped.
#[derive(Debug)]
pub struct TestServer {
    address: SocketAddr,
    tls: bool,
    state: ApiState,
    task: Option<JoinHandle<()>>,
    backing: Backing,
}

impl TestServer {
    /// A server over a fresh embedded store with the default configuration.
    pub async fn embedded() -> Self {
        Self::embedded_with(ApiConfig::default()).await
    }

    /// A server over a fresh embedded store.
    pub async fn embedded_with(config: ApiConfig) -> Self {
        let (store, backing) = embedded_store();
        Self::start(store, config, backing).await
    }

    /// A server over any store.
    pub async fn start(store: Arc<dyn Store>, config: ApiConfig, backing: Backing) -> Self {
        Self::start_with(store, config, backing, None).await
    }

    /// A server over any store, serving HTTPS with `tls` if given (client
    /// certificates become users, as in `krake-server`). With RBAC it
    /// returns once the roles are loaded. Connections whose client stops
    /// reading are cut after the configuration's `write_timeout`
    /// ([`CutSlowClients`]).
    pub async fn start_with(
        store: Arc<dyn Store>,
        config: ApiConfig,
        backing: Backing,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let state = ApiState::new(store, config);
        if let Some(rbac) = state.rbac() {
            rbac.wait_loaded(std::time::Duration::from_secs(10)).await;
        }
        let listener = crate::slow_clients::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            state.config().send_buffer_bytes,
        )
        .expect("bind a loopback port");
        let address = listener.local_addr().expect("a local address");
        let app = router(state.clone()).into_make_service_with_connect_info::<PeerInfo>();
        let shutdown = state.shutdown_token().clone();
        let is_tls = tls.is_some();
        let served = state.clone();
        let task = tokio::spawn(async move {
            let stop = async move { shutdown.cancelled().await };
            let _ = match tls {
                Some(config) => {
                    let listener = TlsListener::new(listener, config);
                    axum::serve(CutSlowClients::from_state(listener, &served), app)
                        .with_graceful_shutdown(stop)
                        .await
                }
                None => {
                    axum::serve(CutSlowClients::from_state(listener, &served), app)
                        .with_graceful_shutdown(stop)
                        .await
                }
            };
        });
        TestServer {
            address,
            tls: is_tls,
            state,
            task: Some(task),
            backing,
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (`https://localhost:...`
    /// with TLS, the name the test certificates carry).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.address.port())
        } else {
            format!("http://{}", self.address)
        }
    }

    /// The server's state (store, hub, metrics).
    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// What keeps the store alive, if it is a `T` (the etcd process of a
    /// server over etcd, to stop and start it).
    pub fn backing_mut<T: std::any::Any>(&mut self) -> Option<&mut T> {
        match &mut self.backing {
            Backing::Other(other) => other.downcast_mut::<T>(),
            Backing::Embedded(_) => None,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.state.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.shutdown();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
