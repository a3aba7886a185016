//! The `core` API group: RBAC roles and bindings, metrics and metrics
//! providers, and (beyond Krake) leases for leader election.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{declare_kind, spec_kind};
use crate::metadata::Metadata;
use crate::registry::{Resource, validate_type_meta};
use crate::tagged_container;
use crate::timestamp::Timestamp;
use crate::validation::{Validate, Validator};

/// Validates what every persistent object has: `api`, `kind` and metadata.
pub(crate) fn validate_object<K: Resource>(
    api: &str,
    kind: &str,
    metadata: &Metadata,
    v: &mut Validator,
) {
    validate_type_meta(api, kind, K::INFO.api, K::INFO.kind, v);
    v.nested("metadata", metadata);
}

/// An action that an RBAC rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// `POST` a new object.
    Create,
    /// List or watch objects (in a namespace, or across all with a wildcard namespace).
    List,
    /// Krake declares it but never checks it; kept for compatibility.
    ListAll,
    /// Read one object.
    Get,
    /// `PUT` an object or one of its sub-operations.
    Update,
    /// Delete an object.
    Delete,
}

impl Verb {
    /// The verb as written in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::List => "list",
            Verb::ListAll => "list_all",
            Verb::Get => "get",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

/// One permission: verbs on resources of an API group in namespaces.
/// The empty string is a wildcard in `api`, `resources` and `namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoleRule {
    /// The API group, or `""` for all.
    pub api: String,
    /// Plurals, or `<plural>/<sub-operation>`; `""` for all.
    pub resources: Vec<String>,
    /// Namespaces; `""` for all (and for global kinds).
    pub namespaces: Vec<String>,
    /// The allowed verbs.
    pub verbs: Vec<Verb>,
}

/// A set of permissions, granted to users by [`RoleBinding`]s. Global.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Role {
    /// Always `core`.
    #[serde(default = "Role::default_api")]
    pub api: String,
    /// Always `Role`.
    #[serde(default = "Role::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// The permissions; roles only grant, never deny.
    pub rules: Vec<RoleRule>,
}

declare_kind!(
    Role,
    ROLE {
        api: "core",
        kind: "Role",
        list_kind: "RoleList",
        plural: "roles",
        scope: Global,
        key: "/core/roles/{name}",
        immutable: [],
        subresources: [],
        status: none,
    }
);

impl Role {
    /// A role with these rules.
    pub fn new(metadata: Metadata, rules: Vec<RoleRule>) -> Self {
        Role {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            rules,
        }
    }
}

impl Validate for Role {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
    }
}

/// Grants roles to users. Global.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RoleBinding {
    /// Always `core`.
    #[serde(default = "RoleBinding::default_api")]
    pub api: String,
    /// Always `RoleBinding`.
    #[serde(default = "RoleBinding::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// User names (a certificate's common name, a Keystone or Keycloak user).
    pub users: Vec<String>,
    /// Names of [`Role`]s.
    pub roles: Vec<String>,
}

declare_kind!(
    RoleBinding,
    ROLE_BINDING {
        api: "core",
        kind: "RoleBinding",
        list_kind: "RoleBindingList",
        plural: "rolebindings",
        scope: Global,
        key: "/core/rolebindings/{name}",
        immutable: [],
        subresources: [],
        status: none,
    }
);

impl RoleBinding {
    /// A binding of `roles` to `users`.
    pub fn new(metadata: Metadata, users: Vec<String>, roles: Vec<String>) -> Self {
        RoleBinding {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            users,
            roles,
        }
    }
}

impl Validate for RoleBinding {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
    }
}

/// Where a metric's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSpecProvider {
    /// The name of the (Global)MetricsProvider.
    pub name: String,
    /// The metric's name at the provider.
    pub metric: String,
}

/// A metric: its range (for normalization), allowed values and provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricSpec {
    /// If not empty, the only values the metric may take. Optional (`[]`):
    /// Krake 1.0.1 as published on PyPI has no such field, so its client
    /// and its krakectl never send it.
    #[serde(default)]
    pub allowed_values: Vec<i64>,
    /// The lowest value; normalization maps it to 0.
    pub min: f64,
    /// The highest value; normalization maps it to 1.
    pub max: f64,
    /// Where the value comes from.
    pub provider: MetricSpecProvider,
}

impl MetricSpec {
    /// The value scaled into `[0, 1]` by `min` and `max`, or `None` if it is
    /// outside the range or not one of the allowed values.
    pub fn normalize(&self, value: f64) -> Option<f64> {
        if !value.is_finite() || value < self.min || value > self.max {
            return None;
        }
        if !self.allowed_values.is_empty()
            && !self.allowed_values.iter().any(|&a| a as f64 == value)
        {
            return None;
        }
        Some((value - self.min) / (self.max - self.min))
    }
}

impl Validate for MetricSpec {
    fn validate(&self, v: &mut Validator) {
        for (field, value) in [("min", self.min), ("max", self.max)] {
            if !value.is_finite() {
                v.field(field, |v| v.error("Not a valid number."));
            }
        }
        if self.min.is_finite() && self.max.is_finite() && self.max <= self.min {
            v.schema_error("max must be greater than min.");
        }
    }
}

spec_kind! {
    /// A metric usable by resources in every namespace.
    GlobalMetric, GLOBAL_METRIC {
        api: "core",
        kind: "GlobalMetric",
        list_kind: "GlobalMetricList",
        plural: "globalmetrics",
        scope: Global,
        key: "/core/globalmetrics/{name}",
        spec: MetricSpec,
        serde_defaults: ("GlobalMetric::default_api", "GlobalMetric::default_kind"),
    }
}
spec_kind! {
    /// A metric usable by resources of its namespace.
    Metric, METRIC {
        api: "core",
        kind: "Metric",
        list_kind: "MetricList",
        plural: "metrics",
        scope: Namespaced,
        key: "/core/metrics/{namespace}/{name}",
        spec: MetricSpec,
        serde_defaults: ("Metric::default_api", "Metric::default_kind"),
    }
}

/// A Prometheus server, queried at `{url}/api/v1/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrometheusSpec {
    /// The server's base URL.
    pub url: String,
}

/// An InfluxDB 2 server, queried with Flux.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InfluxSpec {
    /// The server's base URL.
    pub url: String,
    /// The API token.
    pub token: String,
    /// The organization.
    pub org: String,
    /// The bucket holding the metrics.
    pub bucket: String,
}

/// A KSQL server; a metric is one row of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KafkaSpec {
    /// The column compared with the metric's name to select its row.
    pub comparison_column: String,
    /// The column holding the value.
    pub value_column: String,
    /// The KSQL table.
    pub table: String,
    /// The KSQL server's base URL.
    pub url: String,
}

/// Fixed metric values, for tests and simple set-ups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StaticSpec {
    /// Metric name to value.
    pub metrics: IndexMap<String, f64>,
}

tagged_container! {
    /// A metrics provider's backend: `{"type": "prometheus", "prometheus": {...}}`.
    pub enum MetricsProviderSpec {
        /// Prometheus.
        Prometheus(PrometheusSpec) = "prometheus",
        /// InfluxDB.
        Influx(InfluxSpec) = "influx",
        /// Kafka through KSQL.
        Kafka(KafkaSpec) = "kafka",
        /// Static values.
        Static(StaticSpec) = "static",
    }
}

impl Validate for MetricsProviderSpec {
    fn validate(&self, v: &mut Validator) {
        let url = match self {
            MetricsProviderSpec::Prometheus(spec) => Some(&spec.url),
            MetricsProviderSpec::Influx(spec) => Some(&spec.url),
            MetricsProviderSpec::Kafka(spec) => Some(&spec.url),
            MetricsProviderSpec::Static(_) => None,
        };
        if let Some(url) = url {
            v.field(self.type_name(), |v| {
                v.field("url", |v| validate_url(url, v))
            });
        }
    }
}

/// Reports an error unless `url` is an absolute `http` or `https` URL with a host.
pub(crate) fn validate_url(url: &str, v: &mut Validator) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
        _ => v.error("Not a valid URL."),
    }
}

spec_kind! {
    /// A metrics provider usable by global metrics and every namespace.
    GlobalMetricsProvider, GLOBAL_METRICS_PROVIDER {
        api: "core",
        kind: "GlobalMetricsProvider",
        list_kind: "GlobalMetricsProviderList",
        plural: "globalmetricsproviders",
        scope: Global,
        key: "/core/globalmetricsproviders/{name}",
        spec: MetricsProviderSpec,
        serde_defaults: ("GlobalMetricsProvider::default_api", "GlobalMetricsProvider::default_kind"),
    }
}
spec_kind! {
    /// A metrics provider usable by the metrics of its namespace.
    MetricsProvider, METRICS_PROVIDER {
        api: "core",
        kind: "MetricsProvider",
        list_kind: "MetricsProviderList",
        plural: "metricsproviders",
        scope: Namespaced,
        key: "/core/metricsproviders/{namespace}/{name}",
        spec: MetricsProviderSpec,
        serde_defaults: ("MetricsProvider::default_api", "MetricsProvider::default_kind"),
    }
}

/// A reference from a cluster, cloud or project to a metric, with its weight
/// in scheduling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetricRef {
    /// The metric's name.
    pub name: String,
    /// Its weight in the score.
    pub weight: f64,
    /// True: a namespaced [`Metric`] in the referrer's namespace; false: a [`GlobalMetric`].
    #[serde(default)]
    pub namespaced: bool,
}

impl Validate for MetricRef {
    fn validate(&self, v: &mut Validator) {
        if !self.weight.is_finite() {
            v.field("weight", |v| v.error("Not a valid number."));
        }
    }
}

/// Who holds a [`Lease`], since when, and for how long.
///
/// A lease is held by `holder` until `renew_time + lease_duration_ms` and is
/// free when `holder` is `None`. Replicas change it only with conditional
/// updates (`metadata.resource_version`), so of two replicas writing the same
/// version of a lease at most one succeeds. The times are the writer's wall
/// clock; readers must allow for clock skew (see `krake_controller::leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseSpec {
    /// The identity of the replica holding the lease; `None` when it is free.
    #[serde(default)]
    pub holder: Option<String>,
    /// When the current holder acquired the lease.
    #[serde(default)]
    pub acquire_time: Option<Timestamp>,
    /// When the current holder last renewed the lease.
    #[serde(default)]
    pub renew_time: Option<Timestamp>,
    /// How long after `renew_time` the lease stays held without a renewal, in
    /// milliseconds (more than 0). Milliseconds rather than Kubernetes'
    /// seconds, so short leases can be tested against a real server.
    pub lease_duration_ms: u32,
    /// How many times the lease changed hands.
    #[serde(default)]
    pub transitions: u32,
}

impl LeaseSpec {
    /// A free lease (no holder) of this duration.
    pub fn free(lease_duration_ms: u32) -> Self {
        LeaseSpec {
            holder: None,
            acquire_time: None,
            renew_time: None,
            lease_duration_ms,
            transitions: 0,
        }
    }
}

impl Validate for LeaseSpec {
    fn validate(&self, v: &mut Validator) {
        if self.lease_duration_ms == 0 {
            v.field("lease_duration_ms", |v| {
                v.error("Must be greater than or equal to 1.")
            });
        }
        if self.holder.as_deref() == Some("") {
            v.field("holder", |v| v.error("Shorter than minimum length 1."));
        }
    }
}

spec_kind! {
    /// Beyond Krake: a lease held by one replica of a controller at a time,
    /// for leader election among active-passive replicas.
    Lease, LEASE {
        api: "core",
        kind: "Lease",
        list_kind: "LeaseList",
        plural: "leases",
        scope: Namespaced,
        key: "/core/leases/{namespace}/{name}",
        spec: LeaseSpec,
        serde_defaults: ("Lease::default_api", "Lease::default_kind"),
    }
}
