//! Prometheus metrics of controllers: reconciles (total and failed), their
//! duration, queue depth, retries, active workers and leadership, by
//! controller name; and an axum router serving them.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    controller: String,
    outcome: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

type GaugeFamily = Family<ControllerLabels, Gauge<i64, AtomicI64>>;

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reconciles: Family<OutcomeLabels, Counter>,
    duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    queue_depth: GaugeFamily,
    retries: Family<ControllerLabels, Counter>,
    active: GaugeFamily,
    leader: GaugeFamily,
    cycles: Family<ControllerLabels, Counter>,
}

/// The metrics of every controller of a process (one registry, labelled by
/// controller name). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics under the `krake_controller_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("krake_controller");
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        let duration =
            Family::<ControllerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let queue_depth = GaugeFamily::default();
        let retries = Family::<ControllerLabels, Counter>::default();
        let active = GaugeFamily::default();
        let leader = GaugeFamily::default();
        let cycles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome (ok, failed)",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles took",
            duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Keys waiting in the work queue",
            queue_depth.clone(),
        );
        registry.register(
            "retries",
            "Reconciles scheduled again after a failure",
            retries.clone(),
        );
        registry.register("active_workers", "Reconciles running now", active.clone());
        registry.register(
            "leader",
            "1 while this replica leads (or runs without leader election)",
            leader.clone(),
        );
        registry.register(
            "ownership_cycles",
            "Distinct ownership cycles the garbage collector detected",
            cycles.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                duration,
                queue_depth,
                retries,
                active,
                leader,
                cycles,
            }),
        }
    }

    fn labels(controller: &str) -> ControllerLabels {
        ControllerLabels {
            controller: controller.to_owned(),
        }
    }

    /// A reconcile of `controller` started.
    pub fn reconcile_started(&self, controller: &str) {
        self.inner
            .active
            .get_or_create(&Self::labels(controller))
            .inc();
    }

    /// A reconcile of `controller` ended after `elapsed`; `ok` unless it
    /// failed.
    pub fn reconcile_finished(&self, controller: &str, ok: bool, elapsed: Duration) {
        let labels = Self::labels(controller);
        self.inner.active.get_or_create(&labels).dec();
        self.inner
            .duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let outcome = OutcomeLabels {
            controller: controller.to_owned(),
            outcome: if ok { "ok" } else { "failed" },
        };
        self.inner.reconciles.get_or_create(&outcome).inc();
        if !ok {
            self.inner.retries.get_or_create(&labels).inc();
        }
    }

    /// The queue of `controller` holds `depth` keys.
    pub fn set_queue_depth(&self, controller: &str, depth: usize) {
        let depth = i64::try_from(depth).unwrap_or(i64::MAX);
        self.inner
            .queue_depth
            .get_or_create(&Self::labels(controller))
            .set(depth);
    }

    /// Whether `controller` leads now.
    pub fn set_leader(&self, controller: &str, leader: bool) {
        self.inner
            .leader
            .get_or_create(&Self::labels(controller))
            .set(i64::from(leader));
    }

    /// `controller` (the garbage collector) detected an ownership cycle it
    /// had not seen before.
    pub fn cycle_detected(&self, controller: &str) {
        self.inner
            .cycles
            .get_or_create(&Self::labels(controller))
            .inc();
    }

    /// The Prometheus text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.inner.registry).is_err() {
            text.clear();
        }
        text
    }

    /// A router serving `GET /metrics`, to merge into a service's own axum
    /// router or to serve alone.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    let mut response = metrics.encode().into_response();
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    response
                }
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_controller_and_outcome() {
        let metrics = Metrics::new();
        metrics.reconcile_started("scheduler");
        metrics.reconcile_finished("scheduler", true, Duration::from_millis(3));
        metrics.reconcile_started("scheduler");
        metrics.reconcile_finished("scheduler", false, Duration::from_millis(3));
        metrics.set_queue_depth("scheduler", 7);
        metrics.set_leader("scheduler", true);
        metrics.cycle_detected("garbage_collector");
        let text = metrics.encode();
        for line in [
            "krake_controller_reconciles_total{controller=\"scheduler\",outcome=\"ok\"} 1",
            "krake_controller_reconciles_total{controller=\"scheduler\",outcome=\"failed\"} 1",
            "krake_controller_retries_total{controller=\"scheduler\"} 1",
            "krake_controller_queue_depth{controller=\"scheduler\"} 7",
            "krake_controller_active_workers{controller=\"scheduler\"} 0",
            "krake_controller_leader{controller=\"scheduler\"} 1",
            "krake_controller_ownership_cycles_total{controller=\"garbage_collector\"} 1",
            "krake_controller_reconcile_duration_seconds_count{controller=\"scheduler\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
