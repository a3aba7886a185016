//! A test kit for controller authors (feature `testing`): a fake Krake API
//! to point a [`krake_client::Client`] at, with fault injection and a log of
//! every write.
//!
//! The fake is krake-rs's own API (the `krake-api` router, with every kind,
//! sub-operation, watch resume and 410) over an embedded store in a
//! temporary folder, served on a free loopback port, behind a layer that can
//! fail requests, delay them and cut watch streams. So a controller is
//! tested against the real protocol, in-process, in milliseconds, without
//! etcd or a separate server.
//!
//! ```
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use krake_controller::testing::FakeApi;
//!
//! let api = FakeApi::start().await;
//! let client = api.client()?;
//! api.faults().fail_next(1, 503);
//! assert!(client.version().await.is_err());
//! assert!(client.version().await.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! For metrics providers ([`crate::metrics_provider`]): [`ksql`] and
//! [`influx`] are in-process fakes of KSQL and InfluxDB 2 that
//! record what they are asked and can fail or hang ([`Behaviour`]).
//!
//! The fake serves over real loopback sockets, so use it in tests on real
//! time (short durations); tokio's paused time (`start_paused = true`) is
//! for tests of the pure stages ([`crate::work_queue`], backoff, timers).

mod fake_backend;
pub mod influx;
pub mod ksql;
mod server;

pub use fake_backend::{Behaviour, RecordedRequest};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use krake_api::store::embedded::EmbeddedStore;
use krake_api::{ApiConfig, ApiState};
use tokio_util::sync::CancellationToken;

/// One write the fake API answered (`POST`, `PUT` or `DELETE`).
#[derive(Debug, Clone)]
pub struct Write {
    /// When the request arrived.
    pub at: Instant,
    /// The method.
    pub method: Method,
    /// The path and query.
    pub path: String,
    /// The request body (JSON), if it had one that parses.
    pub body: Option<serde_json::Value>,
    /// The answer's status.
    pub status: u16,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Statuses to answer the next requests with, whatever they are.
    fail_next: VecDeque<u16>,
    /// Added to every request.
    delay: Duration,
}

/// Faults to inject into the fake API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    watches: Arc<Mutex<CancellationToken>>,
    log: Arc<Mutex<Vec<Write>>>,
}

impl Faults {
    fn new() -> Self {
        Faults {
            state: Arc::default(),
            watches: Arc::new(Mutex::new(CancellationToken::new())),
            log: Arc::default(),
        }
    }

    /// Answers the next `count` requests with `status` (and a problem body),
    /// without handling them.
    pub fn fail_next(&self, count: usize, status: u16) {
        if let Ok(mut state) = self.state.lock() {
            state.fail_next.extend(std::iter::repeat_n(status, count));
        }
    }

    /// Delays every request by `delay` (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        if let Ok(mut state) = self.state.lock() {
            state.delay = delay;
        }
    }

    /// Ends every open watch stream now (as a dropped connection would);
    /// watches opened later are not affected.
    pub fn drop_watches(&self) {
        if let Ok(mut token) = self.watches.lock() {
            token.cancel();
            *token = CancellationToken::new();
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = FaultState::default();
        }
    }

    fn take(&self) -> (Option<u16>, Duration) {
        match self.state.lock() {
            Ok(mut state) => (state.fail_next.pop_front(), state.delay),
            Err(_) => (None, Duration::ZERO),
        }
    }

    fn watch_token(&self) -> CancellationToken {
        self.watches
            .lock()
            .map(|token| token.clone())
            .unwrap_or_default()
    }
}

async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let (fail, delay) = faults.take();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let at = Instant::now();
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if let Some(status) = fail {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let body = serde_json::json!({
            "type": "about:blank",
            "status": status.as_u16(),
            "detail": format!("{}: injected fault", status.as_u16()),
        });
        let mut response = (status, body.to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        return response;
    }
    let is_write = matches!(method, Method::POST | Method::PUT | Method::DELETE);
    let is_watch = request.uri().query().is_some_and(|q| {
        q.split('&')
            .any(|p| p == "watch" || p.starts_with("watch="))
    });
    let (request, body) = if is_write {
        let (parts, body) = request.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let json = serde_json::from_slice(&bytes).ok();
        (Request::from_parts(parts, Body::from(bytes)), json)
    } else {
        (request, None)
    };
    let response = next.run(request).await;
    if is_write {
        if let Ok(mut log) = faults.log.lock() {
            log.push(Write {
                at,
                method,
                path,
                body,
                status: response.status().as_u16(),
            });
        }
    }
    if is_watch && response.status().is_success() {
        let token = faults.watch_token();
        let (parts, body) = response.into_parts();
        let stream = body
            .into_data_stream()
            .take_until(async move { token.cancelled().await });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    response
}

/// A fake Krake API on a free loopback port; stops when dropped.
#[derive(Debug)]
pub struct FakeApi {
    address: SocketAddr,
    state: ApiState,
    faults: Faults,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl FakeApi {
    /// A fake with the default settings.
    ///
    /// # Panics
    ///
    /// If no temporary folder or loopback port can be had (the test
    /// environment is broken).
    pub async fn start() -> Self {
        Self::start_with(ApiConfig::default()).await
    }

    /// A fake with `config` (for instance a small `watch_replay_buffer`, so
    /// resuming old watches answers 410).
    ///
    /// # Panics
    ///
    /// As [`FakeApi::start`].
    pub async fn start_with(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store =
            EmbeddedStore::open(dir.path().join("krake.redb")).expect("open the embedded store");
        let state = ApiState::new(Arc::new(store), config);
        let faults = Faults::new();
        let app = krake_api::router(state.clone())
            .layer(axum::middleware::from_fn_with_state(faults.clone(), inject));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("a local address");
        let shutdown = state.shutdown_token().clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
        });
        FakeApi {
            address,
            state,
            faults,
            task: Some(task),
            _dir: dir,
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client of this fake.
    pub fn client(&self) -> krake_client::Result<krake_client::Client> {
        krake_client::Client::new(&self.url())
    }

    /// The faults to inject.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Every write so far, in arrival order.
    pub fn writes(&self) -> Vec<Write> {
        self.faults
            .log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// The API's state (its store, for assertions on what is stored).
    pub fn state(&self) -> &ApiState {
        &self.state
    }

    /// Stops serving and waits for the server to end.
    pub async fn stop(mut self) {
        self.state.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.state.shutdown();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use krake_client::{Api, DeleteParams, ListParams, WatchConfig, WatchEvent};
    use krake_data::kinds::core::Role;
    use krake_data::metadata::Metadata;

    use super::*;

    #[tokio::test]
    async fn faults_fail_delay_and_cut_watches() {
        let api = FakeApi::start().await;
        let client = api.client().unwrap();
        let roles: Api<Role> = Api::all(client.clone());

        api.faults().fail_next(2, 503);
        let err = roles.list(&ListParams::default()).await.unwrap_err();
        assert_eq!(err.status(), Some(503));
        assert!(roles.list(&ListParams::default()).await.is_err());
        assert!(roles.list(&ListParams::default()).await.is_ok());

        let created = roles
            .create(&Role::new(Metadata::named("r"), vec![]))
            .await
            .unwrap();
        assert_eq!(created.metadata.name, "r");
        // Roles have no forced delete: this marks it deleted (cascade_deletion).
        roles.delete("r", &DeleteParams::default()).await.unwrap();
        let writes = api.writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[0].method, Method::POST);
        assert_eq!(writes[0].body.as_ref().unwrap()["metadata"]["name"], "r");
        assert_eq!(writes[1].method, Method::DELETE);

        // A cut watch resumes: the client's stream goes on.
        let mut events = Box::pin(roles.watch(WatchConfig::default()));
        let first = events.next().await.unwrap().unwrap();
        assert!(
            matches!(first, WatchEvent::Restarted(ref all) if all.len() == 1 && all[0].metadata.is_deleted()),
            "{first:?}"
        );
        api.faults().drop_watches();
        roles
            .create(&Role::new(Metadata::named("after-cut"), vec![]))
            .await
            .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let names: Vec<String> = match events.next().await {
                    Some(Ok(WatchEvent::Added(role))) => vec![role.metadata.name],
                    Some(Ok(WatchEvent::Restarted(all))) => {
                        all.into_iter().map(|r| r.metadata.name).collect()
                    }
                    Some(_) => continue,
                    None => panic!("the watch ended"),
                };
                if let Some(name) = names.into_iter().find(|n| n == "after-cut") {
                    break name;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(next, "after-cut");
    }
}
