//! Prometheus metrics of the API: requests by route, method and status,
//! request latency, open watch streams, slow clients cut off, and store
//! latency by operation.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Instant;

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use krake_store::{EventStream, KeyValue, ListOptions, ListPage, Revision, Store, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CutLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabels {
    operation: &'static str,
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to about 13 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// The API's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    open_watches: Gauge<i64, AtomicI64>,
    slow_clients_cut: Family<CutLabels, Counter>,
    store_latency: Family<StoreLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, registered under the `krake_api_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("krake_api");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let open_watches = Gauge::<i64, AtomicI64>::default();
        let slow_clients_cut = Family::<CutLabels, Counter>::default();
        let store_latency =
            Family::<StoreLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route (until the response head; watch streams excluded)",
            latency.clone(),
        );
        registry.register(
            "open_watches",
            "Watch streams open now",
            open_watches.clone(),
        );
        registry.register(
            "slow_clients_cut",
            "Connections and watch streams cut off because their client did not keep up, by \
             reason (write_timeout: it read nothing for the write timeout; watch_lagged: its \
             watch fell too many events behind)",
            slow_clients_cut.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Store operation latency by operation and outcome",
            store_latency.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            open_watches,
            slow_clients_cut,
            store_latency,
        }
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("could not encode the metrics");
        }
        text
    }

    /// Counts an open watch stream until the guard is dropped.
    pub fn watch_opened(&self) -> WatchGuard {
        self.open_watches.inc();
        WatchGuard(self.open_watches.clone())
    }

    /// The number of open watch streams.
    pub fn open_watches(&self) -> i64 {
        self.open_watches.get()
    }

    /// Counts a client cut off for `reason` (`write_timeout`, `watch_lagged`).
    pub fn slow_client_cut(&self, reason: &'static str) {
        self.slow_clients_cut
            .get_or_create(&CutLabels { reason })
            .inc();
    }

    /// How many clients were cut off for `reason` so far.
    pub fn slow_clients_cut(&self, reason: &'static str) -> u64 {
        self.slow_clients_cut
            .get_or_create(&CutLabels { reason })
            .get()
    }

    fn record_request(&self, route: &str, method: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    fn record_store(&self, operation: &'static str, ok: bool, seconds: f64) {
        self.store_latency
            .get_or_create(&StoreLabels {
                operation,
                outcome: if ok { "ok" } else { "error" },
            })
            .observe(seconds);
    }
}

/// Keeps the open-watches gauge up while a watch stream lives.
#[derive(Debug)]
pub struct WatchGuard(Gauge<i64, AtomicI64>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    metrics.record_request(
        &route,
        &method,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// A store that records the latency of every operation.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        Arc::new(MeteredStore { inner, metrics })
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = future.await;
        let ok = match &result {
            Ok(_) => true,
            // Expected outcomes of a healthy store are not errors of the store.
            Err(
                StoreError::AlreadyExists { .. }
                | StoreError::NotFound { .. }
                | StoreError::Conflict { .. },
            ) => true,
            Err(_) => false,
        };
        self.metrics
            .record_store(operation, ok, start.elapsed().as_secs_f64());
        result
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn list(&self, prefix: &str, options: &ListOptions) -> Result<ListPage, StoreError> {
        self.timed("list", self.inner.list(prefix, options)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.timed("create", self.inner.create(key, value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.timed("update", self.inner.update(key, value, expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.timed("delete", self.inner.delete(key, expected)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        self.timed("watch", self.inner.watch(prefix, after)).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.timed("revision", self.inner.revision()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_metrics() {
        let metrics = Metrics::new();
        metrics.record_request("/kubernetes/applications", "GET", 200, 0.01);
        let guard = metrics.watch_opened();
        assert_eq!(metrics.open_watches(), 1);
        let text = metrics.encode();
        assert!(text.contains("krake_api_http_requests_total{route=\"/kubernetes/applications\",method=\"GET\",code=\"200\"} 1"), "{text}");
        assert!(text.contains("krake_api_open_watches 1"), "{text}");
        drop(guard);
        assert_eq!(metrics.open_watches(), 0);
    }
}
