//! Fetching the metrics of a cluster, cloud or project: from its
//! `MetricRef`s to the (Global)Metric, its (Global)MetricsProvider and the
//! provider's value, normalized.
//!
//! Metrics and providers are read from the scheduler's reflectors, not
//! from the API on every fetch; values come through
//! [`MetricsProviders`](crate::metrics_provider::MetricsProviders) and its
//! cache. A namespaced `Metric` takes its value from the `MetricsProvider`
//! of the same name in its namespace, a `GlobalMetric` from the
//! `GlobalMetricsProvider`. Every failure becomes a [`Reason`] with Krake's
//! codes: 91 INVALID_METRIC (value out of range, not allowed, or a
//! namespaced metric on a global resource), 92 UNREACHABLE_METRICS_PROVIDER,
//! 93 UNKNOWN_METRIC, 94 UNKNOWN_METRICS_PROVIDER.

use futures::future::join_all;
use indexmap::IndexMap;
use krake_data::kinds::core::Metric;
use krake_data::kinds::core::{
    GlobalMetric, GlobalMetricsProvider, MetricRef, MetricSpec, MetricsProvider,
    MetricsProviderSpec,
};
use krake_data::{Reason, ReasonCode};

use crate::metrics_provider::MetricsProviders;
use crate::scheduler::placement::MetricValue;
use crate::store::Store;

/// The metrics of one resource: the values fetched and the failures, by
/// metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Fetched {
    pub values: Vec<MetricValue>,
    pub failures: IndexMap<String, Reason>,
}

impl Fetched {
    /// Adds another resource's fetch (inherited metrics).
    pub fn extend(&mut self, other: Fetched) {
        for value in other.values {
            if !self.values.iter().any(|v| v.name == value.name) {
                self.values.push(value);
            }
        }
        for (name, reason) in other.failures {
            self.failures.entry(name).or_insert(reason);
        }
    }
}

/// Resolves metric references and fetches their values.
#[derive(Debug, Clone)]
pub(crate) struct MetricFetcher {
    pub metrics: Store<Metric>,
    pub global_metrics: Store<GlobalMetric>,
    pub providers: Store<MetricsProvider>,
    pub global_providers: Store<GlobalMetricsProvider>,
    pub backends: MetricsProviders,
}

impl MetricFetcher {
    /// Fetches `refs` of a resource in `namespace` (`None`: a global one).
    pub async fn fetch(&self, refs: &[MetricRef], namespace: Option<&str>) -> Fetched {
        let results = join_all(refs.iter().map(|r| self.fetch_one(r, namespace))).await;
        let mut fetched = Fetched::default();
        for (metric, result) in refs.iter().zip(results) {
            match result {
                Ok((value, normalized)) => fetched.values.push(MetricValue {
                    name: metric.name.clone(),
                    weight: metric.weight,
                    value,
                    normalized,
                }),
                Err(reason) => {
                    fetched.failures.insert(metric.name.clone(), reason);
                }
            }
        }
        fetched
    }

    async fn fetch_one(
        &self,
        metric: &MetricRef,
        namespace: Option<&str>,
    ) -> Result<(f64, f64), Reason> {
        let (spec, provider_name, provider) = self.resolve(metric, namespace)?;
        let value = self
            .backends
            .query(&provider_name, &provider, &spec.provider.metric)
            .await
            .map_err(|err| Reason::new(err.code(), err.to_string()))?;
        let normalized = spec.normalize(value).ok_or_else(|| {
            let allowed = if spec.allowed_values.is_empty() {
                String::new()
            } else {
                format!(" or not one of {:?}", spec.allowed_values)
            };
            Reason::new(
                ReasonCode::InvalidMetric,
                format!(
                    "Value {value} of metric {} is outside [{}, {}]{allowed}",
                    metric.name, spec.min, spec.max
                ),
            )
        })?;
        Ok((value, normalized))
    }

    /// The metric's spec, its provider's name (for messages and the cache)
    /// and the provider's spec.
    fn resolve(
        &self,
        metric: &MetricRef,
        namespace: Option<&str>,
    ) -> Result<(MetricSpec, String, MetricsProviderSpec), Reason> {
        if metric.namespaced {
            let Some(namespace) = namespace else {
                return Err(Reason::new(
                    ReasonCode::InvalidMetric,
                    format!(
                        "Namespaced metric {} cannot be used by a global resource",
                        metric.name
                    ),
                ));
            };
            let spec = self
                .metrics
                .get(Some(namespace), &metric.name)
                .map(|m| m.spec.clone())
                .ok_or_else(|| {
                    Reason::new(
                        ReasonCode::UnknownMetric,
                        format!("Metric {namespace}/{} not found", metric.name),
                    )
                })?;
            let provider = self
                .providers
                .get(Some(namespace), &spec.provider.name)
                .map(|p| p.spec.clone())
                .ok_or_else(|| {
                    Reason::new(
                        ReasonCode::UnknownMetricsProvider,
                        format!(
                            "MetricsProvider {namespace}/{} not found",
                            spec.provider.name
                        ),
                    )
                })?;
            let name = format!("{namespace}/{}", spec.provider.name);
            Ok((spec, name, provider))
        } else {
            let spec = self
                .global_metrics
                .get(None, &metric.name)
                .map(|m| m.spec.clone())
                .ok_or_else(|| {
                    Reason::new(
                        ReasonCode::UnknownMetric,
                        format!("GlobalMetric {} not found", metric.name),
                    )
                })?;
            let provider = self
                .global_providers
                .get(None, &spec.provider.name)
                .map(|p| p.spec.clone())
                .ok_or_else(|| {
                    Reason::new(
                        ReasonCode::UnknownMetricsProvider,
                        format!("GlobalMetricsProvider {} not found", spec.provider.name),
                    )
                })?;
            let name = spec.provider.name.clone();
            Ok((spec, name, provider))
        }
    }
}
