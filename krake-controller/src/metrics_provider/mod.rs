//! Metrics providers: where the values of Krake's metrics come from
//! (feature `metrics-providers`, part of `scheduler`).
//!
//! A (Global)MetricsProvider names a backend ([`MetricsProviderSpec`]):
//!
//! - `prometheus` ([`prometheus`]): `GET {url}/api/v1/query?query=<metric>`,
//!   the first result whose `metric.__name__` is the metric's name;
//! - `kafka` ([`kafka`]): a KSQL server, `POST {url}/query` with `SELECT
//!   <value_column> FROM <table> WHERE <comparison_column> = '<metric>';`,
//!   the first column of the first row;
//! - `influx` ([`influx`]): InfluxDB 2, a Flux query over `POST
//!   {url}/api/v2/query?org=<org>`, the `_value` of the last record of the
//!   metric's measurement in the last hour;
//! - `static`: fixed values in the provider's spec.
//!
//! A provider's `url` may end with a slash or carry a path prefix
//! (`http://host/prometheus/`): the API path is appended to it.
//!
//! # Errors
//!
//! Every failure is a [`ProviderError`], whose [`code`](ProviderError::code)
//! goes into the object's `status.metrics_reasons`:
//!
//! | what happened | error | code |
//! |---|---|---|
//! | connection refused or reset, DNS failure, bad URL | [`ProviderError::Unreachable`] | 92 `UNREACHABLE_METRICS_PROVIDER` |
//! | no answer within [`ProvidersConfig::timeout`] | [`ProviderError::Unreachable`] | 92 |
//! | an answer with status 5xx | [`ProviderError::Unreachable`] | 92 |
//! | an answer with status 4xx (bad query, unknown table, bad token) | [`ProviderError::InvalidMetric`] | 91 `INVALID_METRIC` |
//! | a body that does not parse, no such series / row / record | [`ProviderError::InvalidMetric`] | 91 |
//! | a value that is not a number, or not finite (`NaN`, `+Inf`) | [`ProviderError::InvalidMetric`] | 91 |
//! | a KSQL table or column that is not a plain identifier | [`ProviderError::InvalidMetric`] | 91 (nothing is sent) |
//! | a metric missing from a static provider | [`ProviderError::InvalidMetric`] | 91 |
//!
//! # Caching
//!
//! [`MetricsProviders`] keeps every answer of a network backend, value or
//! failure, for [`ProvidersConfig::cache_ttl`] (default 5 s), keyed by the
//! provider's name, a hash of its spec (so an edited provider is asked
//! again at once) and the metric. Concurrent identical queries share one
//! backend request (single flight), so scheduling 1,000 applications over
//! the same clusters asks each backend once per metric, not 1,000 times.
//! Expired answers are evicted, so memory stays bounded by the number of
//! distinct queries within about two TTLs. A TTL of zero turns caching off.
//! Static providers are answered from their spec and never cached. See
//! [`cache`].
//!
//! Each backend request is bounded by [`ProvidersConfig::timeout`] (default
//! 20 s, Krake's), connecting and reading the body included.
//!
//! ```
//! # async fn example() {
//! use krake_controller::metrics_provider::{MetricsProviders, ProvidersConfig};
//! use krake_data::kinds::core::{MetricsProviderSpec, PrometheusSpec};
//!
//! let providers = MetricsProviders::new(ProvidersConfig::default());
//! let spec = MetricsProviderSpec::Prometheus(PrometheusSpec {
//!     url: "http://127.0.0.1:9090".to_owned(),
//! });
//! match providers.query("prometheus", &spec, "heat_demand_zone_1").await {
//!     Ok(value) => println!("{value}"),
//!     Err(error) => println!("{error} ({:?})", error.code()),
//! }
//! # }
//! ```

pub mod cache;
mod http;
pub mod influx;
pub mod kafka;
pub mod prometheus;

use std::sync::Arc;
use std::time::Duration;

use krake_data::kinds::core::{MetricsProviderSpec, StaticSpec};
use krake_data::reason::ReasonCode;

use cache::{AnswerCache, CacheKey};

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
    client: reqwest::Client,
    cache: Arc<AnswerCache>,
}

impl MetricsProviders {
    /// Providers with these settings.
    pub fn new(config: ProvidersConfig) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("krake-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            // Building fails only if the TLS backend cannot be set up;
            // the default client is the best there is then.
            .unwrap_or_else(|_| reqwest::Client::new());
        MetricsProviders {
            cache: Arc::new(AnswerCache::new(config.cache_ttl)),
            config,
            client,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ProvidersConfig {
        &self.config
    }

    /// The answer cache (to look at its size).
    pub fn cache(&self) -> &AnswerCache {
        &self.cache
    }

    /// The current value of `metric` at the provider named `provider`
    /// (`<namespace>/<name>` or `<name>` for a global one, used in errors and
    /// as the cache key together with `spec`).
    ///
    /// Network backends are asked at most once per
    /// [`ProvidersConfig::cache_ttl`] for the same provider, spec and
    /// metric, and for at most [`ProvidersConfig::timeout`]; static
    /// providers are answered from `spec`. See the [module](self) for the
    /// errors.
    pub async fn query(
        &self,
        provider: &str,
        spec: &MetricsProviderSpec,
        metric: &str,
    ) -> Result<f64, ProviderError> {
        if let MetricsProviderSpec::Static(spec) = spec {
            return static_value(provider, spec, metric);
        }
        let key = CacheKey::new(provider, spec, metric);
        self.cache
            .get_or_fetch(key, self.fetch(provider, spec, metric))
            .await
    }

    /// Asks the backend of `spec`, within the timeout.
    async fn fetch(
        &self,
        provider: &str,
        spec: &MetricsProviderSpec,
        metric: &str,
    ) -> Result<f64, ProviderError> {
        let client = &self.client;
        let request = async {
            match spec {
                MetricsProviderSpec::Prometheus(spec) => {
                    prometheus::query(client, &spec.url, provider, metric).await
                }
                MetricsProviderSpec::Kafka(spec) => {
                    kafka::query(client, spec, provider, metric).await
                }
                MetricsProviderSpec::Influx(spec) => {
                    influx::query(client, spec, provider, metric).await
                }
                MetricsProviderSpec::Static(spec) => static_value(provider, spec, metric),
            }
        };
        tokio::time::timeout(self.config.timeout, request)
            .await
            .unwrap_or_else(|_| Err(timed_out(provider, self.config.timeout)))
    }
}

/// The value of `metric` in a static provider.
fn static_value(provider: &str, spec: &StaticSpec, metric: &str) -> Result<f64, ProviderError> {
    spec.metrics
        .get(metric)
        .copied()
        .ok_or_else(|| ProviderError::InvalidMetric {
            provider: provider.to_owned(),
            metric: metric.to_owned(),
            message: "no such metric in the static provider".to_owned(),
        })
}

/// The error of a query that took longer than `timeout`.
fn timed_out(provider: &str, timeout: Duration) -> ProviderError {
    ProviderError::Unreachable {
        provider: provider.to_owned(),
        message: format!("timed out after {timeout:?}"),
    }
}
