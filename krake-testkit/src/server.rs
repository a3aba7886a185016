//! krake-rs API servers for tests over a real etcd process: the etcd
//! counterpart of `krake_api::testing::TestServer::embedded`.
//!
//! ```no_run
//! # async fn example() {
//! let mut server = krake_testkit::server::etcd_server().await;
//! let etcd = krake_testkit::server::etcd_of(&mut server).expect("over etcd");
//! etcd.stop(); // the API now answers 503 until etcd is started again
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use krake_api::ApiConfig;
use krake_api::testing::{Backing, TestServer};
use krake_store::Store;
use krake_store::etcd::{EtcdOptions, EtcdStore};

use crate::etcd::EtcdProcess;

/// A store over a fresh, real etcd process (Debian package `etcd-server`),
/// with a 2 s request timeout; the etcd process lives in the [`Backing`].
///
/// # Panics
///
/// If etcd cannot be started or reached.
pub async fn etcd_store() -> (Arc<dyn Store>, Backing) {
    let etcd = EtcdProcess::start()
        .await
        .expect("start etcd (Debian package etcd-server)");
    let options = EtcdOptions {
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    };
    let store = EtcdStore::connect(&[etcd.endpoint()], options)
        .await
        .expect("connect to etcd");
    (Arc::new(store), Backing::Other(Box::new(etcd)))
}

/// An API server over a fresh, real etcd process with the default
/// configuration.
pub async fn etcd_server() -> TestServer {
    etcd_server_with(ApiConfig::default()).await
}

/// An API server over a fresh, real etcd process.
pub async fn etcd_server_with(config: ApiConfig) -> TestServer {
    let (store, backing) = etcd_store().await;
    TestServer::start(store, config, backing).await
}

/// The etcd process under a server made by [`etcd_server`], to stop and
/// start it.
pub fn etcd_of(server: &mut TestServer) -> Option<&mut EtcdProcess> {
    server.backing_mut::<EtcdProcess>()
}
