//! Shared test helpers: objects, and an API server that can be stopped and
//! started again on the same port over the same store.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::Method;
use krake_api::store::Store;
use krake_api::{ApiConfig, ApiState, router};
use krake_data::Metadata;
use krake_data::kinds::kubernetes::{Application, ApplicationSpec};
use tokio::task::JoinHandle;

/// An application with a ConfigMap manifest and `labels`.
pub fn app(name: &str, labels: &[(&str, &str)]) -> Application {
    let manifest = serde_json::from_value(serde_json::json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    ]))
    .unwrap();
    let mut metadata = Metadata::named(name);
    for (key, value) in labels {
        metadata.labels.insert((*key).into(), (*value).into());
    }
    Application::new(metadata, ApplicationSpec::from_manifest(manifest))
}

/// An API server over a shared store, on a fixed port once started.
pub struct RestartableServer {
    pub store: Arc<dyn Store>,
    pub config: ApiConfig,
    pub address: SocketAddr,
    running: Option<(ApiState, JoinHandle<()>)>,
}

impl RestartableServer {
    /// Starts a server on a free port.
    pub async fn start(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut server = RestartableServer {
            store,
            config,
            address,
            running: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = ApiState::new(self.store.clone(), self.config.clone());
        let app = router(state.clone());
        let shutdown = state.shutdown_token().clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        self.running = Some((state, task));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops serving: open watch streams end, the port is closed.
    pub async fn stop(&mut self) {
        if let Some((state, task)) = self.running.take() {
            state.shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Serves again on the same port, with a fresh API state over the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut last = None;
        for _ in 0..50 {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => {
                    self.serve(listener);
                    return;
                }
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot bind {} again: {last:?}", self.address);
    }
}

impl Drop for RestartableServer {
    fn drop(&mut self) {
        if let Some((state, task)) = self.running.take() {
            state.shutdown();
            task.abort();
        }
    }
}

/// What [`counting_server`] was asked, by kind of request.
#[derive(Default)]
pub struct Counts {
    /// GET requests.
    pub reads: AtomicUsize,
    /// Every other method.
    pub writes: AtomicUsize,
}

/// A server that answers the same small JSON (an object named `r`, an empty
/// list) to everything and counts the requests by method.
pub async fn counting_server() -> (SocketAddr, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    let app = Router::new().fallback(move |method: Method| {
        let seen = seen.clone();
        async move {
            if method == Method::GET {
                seen.reads.fetch_add(1, Ordering::SeqCst);
            } else {
                seen.writes.fetch_add(1, Ordering::SeqCst);
            }
            axum::Json(serde_json::json!({"metadata": {"name": "r"}, "items": []}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, counts)
}
