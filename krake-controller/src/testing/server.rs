//! Serving an axum router on a free loopback port for the in-process fakes,
//! stopped when the handle is dropped.

use std::net::SocketAddr;

use axum::Router;
use tokio_util::sync::CancellationToken;

/// A running server; dropping it stops it.
#[derive(Debug)]
pub(crate) struct Server {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Serves `router` on `127.0.0.1:<free port>`.
    pub(crate) async fn start(
        router: Router,
        shutdown: CancellationToken,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
        });
        Ok(Server {
            address,
            shutdown,
            task,
        })
    }

    /// The address it listens on.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Hanging requests would keep a graceful shutdown waiting.
        self.task.abort();
    }
}
