//! Test helpers (feature `testing`): a real API server on a free loopback
//! port, over the embedded store or a real etcd process.
//!
//! ```no_run
//! # async fn example() {
//! let server = krake_api::testing::TestServer::embedded().await;
//! let body = reqwest::get(format!("{}/", server.url())).await.unwrap().text().await.unwrap();
//! assert!(body.contains("1.0.1"));
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use krake_store::Store;
use krake_store::embedded::EmbeddedStore;
use krake_store::etcd::{EtcdOptions, EtcdStore};
use krake_store::testing::etcd::EtcdProcess;
use tokio::task::JoinHandle;

use crate::{ApiConfig, ApiState, router};

/// What keeps a test server's store alive.
#[derive(Debug)]
pub enum Backing {
    /// The embedded store's temporary folder.
    Embedded(tempfile::TempDir),
    /// The etcd process.
    Etcd(EtcdProcess),
}

/// An API server serving on `127.0.0.1:<free port>` until dropped.
#[derive(Debug)]
pub struct TestServer {
    address: SocketAddr,
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
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store =
            EmbeddedStore::open(dir.path().join("krake.redb")).expect("open the embedded store");
        Self::start(Arc::new(store), config, Backing::Embedded(dir)).await
    }

    /// A server over a fresh, real etcd process with the default configuration.
    pub async fn etcd() -> Self {
        Self::etcd_with(ApiConfig::default()).await
    }

    /// A server over a fresh, real etcd process.
    pub async fn etcd_with(config: ApiConfig) -> Self {
        let etcd = EtcdProcess::start()
            .await
            .expect("start etcd (Debian package etcd-server)");
        let options = EtcdOptions {
            request_timeout: std::time::Duration::from_secs(2),
            ..EtcdOptions::default()
        };
        let store = EtcdStore::connect(&[etcd.endpoint()], options)
            .await
            .expect("connect to etcd");
        Self::start(Arc::new(store), config, Backing::Etcd(etcd)).await
    }

    /// A server over any store.
    pub async fn start(store: Arc<dyn Store>, config: ApiConfig, backing: Backing) -> Self {
        let state = ApiState::new(store, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("a local address");
        let app = router(state.clone());
        let shutdown = state.shutdown_token().clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        TestServer {
            address,
            state,
            task: Some(task),
            backing,
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server's state (store, hub, metrics).
    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// The etcd process, for servers over etcd.
    pub fn etcd_process(&mut self) -> Option<&mut EtcdProcess> {
        match &mut self.backing {
            Backing::Etcd(etcd) => Some(etcd),
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
