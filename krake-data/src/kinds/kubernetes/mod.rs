//! The `kubernetes` API group: applications, the clusters they run on, and
//! the request bodies of their sub-operations.

mod kubeconfig;
mod observer_schema;
mod tosca;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::core::{MetricRef, validate_object};
use super::{declare_body, declare_kind, status_subresource};
use crate::constraints::{LabelConstraint, MetricConstraint};
use crate::metadata::{Metadata, ResourceRef};
use crate::reason::Reason;
use crate::registry::{BodyInfo, Subresource, SubresourceBody, SubresourceInfo};
use crate::timestamp::Timestamp;
use crate::validation::{Validate, Validator};

pub use kubeconfig::validate_kubeconfig;
pub use observer_schema::validate_observer_schema;
pub use tosca::template_problem as tosca_template_problem;

/// A Kubernetes resource as written in a manifest: an opaque JSON object.
pub type ManifestResource = Map<String, Value>;

/// The finalizer of the Kubernetes application controller.
pub const KUBERNETES_RESOURCES_DELETION_FINALIZER: &str = "kubernetes_resources_deletion";

/// The label, custom-resource and metric constraints an application puts on
/// the cluster it runs on. All of them must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterConstraints {
    /// Label constraints on the cluster (and its inherited cloud labels).
    #[serde(default)]
    pub labels: Option<Vec<LabelConstraint>>,
    /// Custom resources (`<plural>.<group>`) the cluster must support.
    #[serde(default)]
    pub custom_resources: Vec<String>,
    /// Metric constraints on the cluster's metrics.
    #[serde(default)]
    pub metrics: Option<Vec<MetricConstraint>>,
}

/// Scheduling constraints of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Constraints {
    /// Constraints on the cluster.
    pub cluster: ClusterConstraints,
    /// Whether the scheduler may move the application to a better cluster.
    #[serde(default = "default_true")]
    pub migration: bool,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            cluster: ClusterConstraints::default(),
            migration: true,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_one() -> i64 {
    1
}

fn default_minus_one() -> i64 {
    -1
}

fn default_storage_migration() -> String {
    "none".to_owned()
}

/// A TOSCA template: inline, or the URL of a `.yaml`/`.yml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Tosca {
    /// An inline template (`{}` when unused).
    Template(Map<String, Value>),
    /// The URL of a template.
    Url(String),
}

impl Default for Tosca {
    fn default() -> Self {
        Tosca::Template(Map::new())
    }
}

impl Tosca {
    /// True for `{}` and `""`, Krake's "not set".
    pub fn is_empty(&self) -> bool {
        match self {
            Tosca::Template(map) => map.is_empty(),
            Tosca::Url(url) => url.is_empty(),
        }
    }
}

/// The hooks an application can enable.
pub const HOOKS: &[&str] = &["complete", "shutdown"];

/// What the controller does when the shutdown hook fails.
pub const SHUTDOWN_FAILURE_STRATEGIES: &[&str] = &["give_up", "delete"];

/// The desired state of an [`Application`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationSpec {
    /// The Kubernetes resources to run (may be empty when `tosca` or `csar` is set).
    pub manifest: Vec<ManifestResource>,
    /// A TOSCA template to translate into the manifest.
    #[serde(default)]
    pub tosca: Tosca,
    /// The URL of a CSAR archive (`.csar` or `.zip`).
    #[serde(default)]
    pub csar: Option<String>,
    /// The fields of the manifest's resources to observe (all by default).
    #[serde(default)]
    pub observer_schema: Vec<ManifestResource>,
    /// Where the application may run.
    pub constraints: Constraints,
    /// Enabled hooks: `complete`, `shutdown`.
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Seconds the shutdown hook waits (default: the controller's configuration).
    #[serde(default)]
    pub shutdown_grace_time: Option<i64>,
    /// `give_up` or `delete` when the shutdown hook fails.
    #[serde(default)]
    pub shutdown_failure_strategy: Option<String>,
    /// How often a failed shutdown hook is retried.
    #[serde(default)]
    pub shutdown_retry_count: Option<i64>,
    /// Multiplier of the retry delay after a failure.
    #[serde(default = "default_one")]
    pub backoff: i64,
    /// Seconds before a retry.
    #[serde(default = "default_one")]
    pub backoff_delay: i64,
    /// How many retries before FAILED; -1 retries forever.
    #[serde(default = "default_minus_one")]
    pub backoff_limit: i64,
    /// Unused by Krake; kept for compatibility.
    #[serde(default = "default_storage_migration")]
    pub storage_migration: String,
    /// Whether the scheduler may create a cluster on a cloud for the application.
    #[serde(default)]
    pub auto_cluster_create: bool,
}

impl ApplicationSpec {
    /// A spec running `manifest` with no constraints.
    pub fn from_manifest(manifest: Vec<ManifestResource>) -> Self {
        ApplicationSpec {
            manifest,
            tosca: Tosca::default(),
            csar: None,
            observer_schema: Vec::new(),
            constraints: Constraints::default(),
            hooks: Vec::new(),
            shutdown_grace_time: None,
            shutdown_failure_strategy: None,
            shutdown_retry_count: None,
            backoff: 1,
            backoff_delay: 1,
            backoff_limit: -1,
            storage_migration: default_storage_migration(),
            auto_cluster_create: false,
        }
    }
}

/// Checks that every manifest resource has `apiVersion`, `kind`, `metadata`
/// and `metadata.name`, with Krake's messages (a flat list for the manifest).
pub fn validate_manifest(manifest: &[ManifestResource], v: &mut Validator) {
    for (index, resource) in manifest.iter().enumerate() {
        let name = resource
            .get("metadata")
            .and_then(Value::as_object)
            .and_then(|metadata| metadata.get("name"))
            .filter(|name| !matches!(name, Value::Null | Value::Bool(false)))
            .filter(|name| name.as_str() != Some(""));
        let suffix = match name {
            Some(Value::String(name)) => {
                format!(
                    " (metadata.name: {})",
                    crate::validation::python_str_repr(name)
                )
            }
            Some(other) => format!(" (metadata.name: {other})"),
            None => {
                v.error(format!(
                    "Field 'metadata.name' not found in resource at index {index}"
                ));
                String::new()
            }
        };
        for attribute in ["apiVersion", "kind", "metadata"] {
            if !resource.contains_key(attribute) {
                v.error(format!(
                    "Field '{attribute}' not found in resource at index {index}{suffix}"
                ));
            }
        }
    }
}

/// Reports every custom resource name that is not `<plural>.<group>`.
fn validate_custom_resources(names: &[String], v: &mut Validator) {
    for (index, name) in names.iter().enumerate() {
        if let Err(message) = crate::constraints::validate_custom_resource(name) {
            v.item(index, |v| v.error(message));
        }
    }
}

impl ClusterConstraints {
    /// True if a cluster with these labels, metrics and custom resources
    /// satisfies every constraint (null or empty lists match everything; a
    /// missing label or metric never matches).
    pub fn matches(
        &self,
        labels: &crate::metadata::Labels,
        metrics: impl Fn(&str) -> Option<f64>,
        custom_resources: &[String],
    ) -> bool {
        let labels_match = self
            .labels
            .iter()
            .flatten()
            .all(|constraint| constraint.matches(labels));
        let metrics_match = self
            .metrics
            .iter()
            .flatten()
            .all(|constraint| constraint.matches_with(&metrics));
        labels_match
            && metrics_match
            && crate::constraints::custom_resources_match(&self.custom_resources, custom_resources)
    }
}

impl Validate for ApplicationSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("manifest", |v| validate_manifest(&self.manifest, v));
        v.field("constraints", |v| {
            v.field("cluster", |v| {
                v.field("custom_resources", |v| {
                    validate_custom_resources(&self.constraints.cluster.custom_resources, v)
                })
            })
        });
        v.field("tosca", |v| {
            tosca::validate_application_tosca(&self.tosca, v)
        });
        if let Some(csar) = &self.csar {
            v.field("csar", |v| {
                if !(csar.ends_with(".csar") || csar.ends_with(".zip")) {
                    v.error("Invalid CSAR archive URL.");
                }
            });
        }
        v.field("hooks", |v| {
            for hook in &self.hooks {
                if !HOOKS.contains(&hook.as_str()) {
                    v.error(format!(
                        "Unknown hook {}. Must be one of: complete, shutdown.",
                        crate::validation::python_str_repr(hook)
                    ));
                }
            }
        });
        if let Some(strategy) = &self.shutdown_failure_strategy {
            v.field("shutdown_failure_strategy", |v| {
                if !SHUTDOWN_FAILURE_STRATEGIES.contains(&strategy.as_str()) {
                    v.error("Must be one of: give_up, delete.");
                }
            });
        }
        let csar_set = self.csar.as_deref().is_some_and(|c| !c.is_empty());
        if self.manifest.is_empty() && self.tosca.is_empty() && !csar_set {
            v.schema_error(
                "The application should be defined by a manifest file, a TOSCA template or a \
                 CSAR file.",
            );
        }
        if !self.manifest.is_empty() {
            v.field("observer_schema", |v| {
                validate_observer_schema(&self.observer_schema, &self.manifest, v)
            });
        }
    }
}

/// The lifecycle state of an [`Application`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ApplicationState {
    #[default]
    Pending,
    Creating,
    Running,
    Reconciling,
    Translating,
    Retrying,
    Restarting,
    WaitingForCleaning,
    ReadyForAction,
    Migrating,
    WaitingForClusterCreation,
    Deleting,
    Deleted,
    Degraded,
    Failed,
    Completed,
}

impl ApplicationState {
    /// Every state, in Krake's order.
    pub const ALL: [ApplicationState; 16] = [
        ApplicationState::Pending,
        ApplicationState::Creating,
        ApplicationState::Running,
        ApplicationState::Reconciling,
        ApplicationState::Translating,
        ApplicationState::Retrying,
        ApplicationState::Restarting,
        ApplicationState::WaitingForCleaning,
        ApplicationState::ReadyForAction,
        ApplicationState::Migrating,
        ApplicationState::WaitingForClusterCreation,
        ApplicationState::Deleting,
        ApplicationState::Deleted,
        ApplicationState::Degraded,
        ApplicationState::Failed,
        ApplicationState::Completed,
    ];
}

/// Pod counts of a running application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ContainerHealth {
    /// Pods the workloads want.
    pub desired_pods: i64,
    /// Pods running.
    pub running_pods: i64,
    /// Pods that completed.
    pub completed_pods: i64,
    /// Pods that failed.
    pub failed_pods: i64,
}

/// The observed state of an [`Application`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ApplicationStatus {
    /// Why the application failed or degraded.
    pub reason: Option<Reason>,
    /// The lifecycle state.
    pub state: ApplicationState,
    /// Pod counts.
    pub container_health: ContainerHealth,
    /// When the scheduler last handed this version to the Kubernetes controller.
    pub kube_controller_triggered: Option<Timestamp>,
    /// When the application was last bound to a (different) cluster.
    pub scheduled: Option<Timestamp>,
    /// The cluster the application should run on.
    pub scheduled_to: Option<ResourceRef>,
    /// The cluster the application runs on.
    pub running_on: Option<ResourceRef>,
    /// Retries left before FAILED.
    pub retries: Option<i64>,
    /// When a DEGRADED application is retried.
    pub scheduled_retry: Option<Timestamp>,
    /// Service name to `host:port`.
    pub services: IndexMap<String, String>,
    /// The observer schema in use, generated from the spec's.
    pub mangled_observer_schema: Vec<ManifestResource>,
    /// The observed fields of the resources, as last read from the cluster.
    pub last_observed_manifest: Vec<ManifestResource>,
    /// The resources as last applied to the cluster.
    pub last_applied_manifest: Vec<ManifestResource>,
    /// Token of the complete hook.
    pub complete_token: Option<String>,
    /// Certificate of the complete hook.
    pub complete_cert: Option<String>,
    /// Key of the complete hook's certificate.
    pub complete_key: Option<String>,
    /// Token of the shutdown hook.
    pub shutdown_token: Option<String>,
    /// Certificate of the shutdown hook.
    pub shutdown_cert: Option<String>,
    /// Key of the shutdown hook's certificate.
    pub shutdown_key: Option<String>,
    /// When the shutdown hook's grace period ends.
    pub shutdown_grace_period: Option<Timestamp>,
    /// The name of the cluster being created for the application.
    pub auto_cluster_create_started: Option<String>,
    /// Failed migration attempts.
    pub migration_retries: i64,
    /// Unix time (seconds) before which no migration is tried again.
    pub migration_timeout: i64,
}

/// A set of Kubernetes resources that Krake places on a matching cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Application {
    /// Always `kubernetes`.
    #[serde(default = "Application::default_api")]
    pub api: String,
    /// Always `Application`.
    #[serde(default = "Application::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Desired state.
    pub spec: ApplicationSpec,
    /// Observed state (changed through `/status`).
    #[serde(default)]
    pub status: ApplicationStatus,
}

declare_kind!(
    Application,
    APPLICATION {
        api: "kubernetes",
        kind: "Application",
        list_kind: "ApplicationList",
        plural: "applications",
        scope: Namespaced,
        key: "/kubernetes/applications/{namespace}/{name}",
        immutable: [],
        subresources: [
            status_subresource!("applications/status"),
            SubresourceInfo {
                operation: Subresource::Binding,
                body: SubresourceBody::Body(&CLUSTER_BINDING),
                rbac_resource: "applications/binding",
            },
            SubresourceInfo {
                operation: Subresource::Complete,
                body: SubresourceBody::Body(&COMPLETE),
                rbac_resource: "applications/complete",
            },
            SubresourceInfo {
                operation: Subresource::Shutdown,
                body: SubresourceBody::Body(&SHUTDOWN),
                rbac_resource: "applications/shutdown",
            },
            SubresourceInfo {
                operation: Subresource::Retry,
                body: SubresourceBody::Empty,
                rbac_resource: "applications/status",
            },
        ],
        status: (ApplicationStatus),
    }
);

impl Application {
    /// A new application (status at its defaults).
    pub fn new(metadata: Metadata, spec: ApplicationSpec) -> Self {
        Application {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            spec,
            status: ApplicationStatus::default(),
        }
    }
}

impl Validate for Application {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
    }
}

/// Label and metric constraints a cluster puts on the cloud it is created on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudConstraints {
    /// Label constraints on the cloud.
    #[serde(default)]
    pub labels: Option<Vec<LabelConstraint>>,
    /// Metric constraints on the cloud's metrics.
    #[serde(default)]
    pub metrics: Option<Vec<MetricConstraint>>,
}

/// Scheduling constraints of a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterCloudConstraints {
    /// Constraints on the cloud.
    pub cloud: CloudConstraints,
}

/// The desired state of a [`Cluster`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterSpec {
    /// A kubeconfig with exactly one context, user and cluster (`{}` for
    /// clusters created from `tosca`).
    #[serde(default)]
    pub kubeconfig: Map<String, Value>,
    /// A TOSCA template from which the infrastructure controller creates the cluster.
    #[serde(default)]
    pub tosca: Map<String, Value>,
    /// Custom resources (`<plural>.<group>`) the cluster supports.
    #[serde(default)]
    pub custom_resources: Vec<String>,
    /// Where the cluster may be created.
    pub constraints: ClusterCloudConstraints,
    /// The metrics scoring the cluster.
    #[serde(default)]
    pub metrics: Vec<MetricRef>,
    /// Whether the cluster inherits the metrics of the cloud it is bound to.
    #[serde(default)]
    pub inherit_metrics: bool,
    /// Multiplier of the retry delay after a failure.
    #[serde(default = "default_one")]
    pub backoff: i64,
    /// Seconds before a retry.
    #[serde(default = "default_one")]
    pub backoff_delay: i64,
    /// How many retries before FAILED; -1 retries forever.
    #[serde(default = "default_minus_one")]
    pub backoff_limit: i64,
    /// Set on clusters the scheduler created for applications.
    #[serde(default)]
    pub auto_generated: bool,
}

impl ClusterSpec {
    /// A spec for a registered cluster reached through `kubeconfig`.
    pub fn from_kubeconfig(kubeconfig: Map<String, Value>) -> Self {
        ClusterSpec {
            kubeconfig,
            tosca: Map::new(),
            custom_resources: Vec::new(),
            constraints: ClusterCloudConstraints::default(),
            metrics: Vec::new(),
            inherit_metrics: false,
            backoff: 1,
            backoff_delay: 1,
            backoff_limit: -1,
            auto_generated: false,
        }
    }
}

impl Validate for ClusterSpec {
    fn validate(&self, v: &mut Validator) {
        if !self.kubeconfig.is_empty() {
            v.field("kubeconfig", |v| validate_kubeconfig(&self.kubeconfig, v));
        }
        if !self.tosca.is_empty() {
            v.field("tosca", |v| tosca::validate_cluster_tosca(&self.tosca, v));
        }
        v.field("custom_resources", |v| {
            validate_custom_resources(&self.custom_resources, v)
        });
        v.nested("metrics", &self.metrics);
        if self.kubeconfig.is_empty() && self.tosca.is_empty() {
            v.schema_error(
                "The cluster should be defined by a kubeconfig file or a TOSCA template.",
            );
        }
    }
}

/// The lifecycle state of a [`Cluster`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ClusterState {
    #[default]
    Pending,
    Online,
    Connecting,
    Offline,
    Unhealthy,
    #[serde(rename = "NOTREADY")]
    NotReady,
    FailingMetrics,
    Creating,
    Reconciling,
    Deleting,
    FailingReconciliation,
    Failed,
    Degraded,
}

impl ClusterState {
    /// Every state, in Krake's order.
    pub const ALL: [ClusterState; 13] = [
        ClusterState::Pending,
        ClusterState::Online,
        ClusterState::Connecting,
        ClusterState::Offline,
        ClusterState::Unhealthy,
        ClusterState::NotReady,
        ClusterState::FailingMetrics,
        ClusterState::Creating,
        ClusterState::Reconciling,
        ClusterState::Deleting,
        ClusterState::FailingReconciliation,
        ClusterState::Failed,
        ClusterState::Degraded,
    ];
}

/// One condition of a node, as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodeCondition {
    /// Details of the last transition.
    pub message: String,
    /// Brief reason of the last transition.
    pub reason: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The condition type, e.g. `Ready`, `MemoryPressure`.
    #[serde(rename = "type")]
    pub condition_type: String,
}

/// The status of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodeStatus {
    /// The node's conditions.
    pub conditions: Vec<ClusterNodeCondition>,
}

/// The metadata of a node: only its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNodeMetadata {
    /// The node's name.
    pub name: String,
}

/// A node of a cluster, as observed by the cluster controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterNode {
    /// Always `kubernetes`.
    #[serde(default = "Application::default_api")]
    pub api: String,
    /// Always `ClusterNode`.
    #[serde(default = "ClusterNode::default_kind")]
    pub kind: String,
    /// The node's name.
    pub metadata: ClusterNodeMetadata,
    /// The node's conditions.
    #[serde(default)]
    pub status: Option<ClusterNodeStatus>,
}

impl ClusterNode {
    #[doc(hidden)]
    pub fn default_kind() -> String {
        "ClusterNode".to_owned()
    }
}

/// The observed state of a [`Cluster`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ClusterStatus {
    /// Why the cluster failed.
    pub reason: Option<Reason>,
    /// When the cluster controller was last triggered.
    pub kube_controller_triggered: Option<Timestamp>,
    /// The lifecycle state.
    pub state: ClusterState,
    /// Metric name to the reason fetching it failed.
    pub metrics_reasons: IndexMap<String, Reason>,
    /// The TOSCA template last applied by the infrastructure controller.
    pub last_applied_tosca: Map<String, Value>,
    /// The nodes.
    pub nodes: Vec<ClusterNode>,
    /// The infrastructure's id of a created cluster.
    pub cluster_id: Option<String>,
    /// When the cluster was bound to a cloud.
    pub scheduled: Option<Timestamp>,
    /// The cloud the cluster should be created on.
    pub scheduled_to: Option<ResourceRef>,
    /// The cloud the cluster was created on.
    pub running_on: Option<ResourceRef>,
    /// Retries so far.
    pub retries: i64,
}

/// A Kubernetes cluster applications can be placed on: registered with a
/// kubeconfig, or created on a cloud from a TOSCA template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Cluster {
    /// Always `kubernetes`.
    #[serde(default = "Cluster::default_api")]
    pub api: String,
    /// Always `Cluster`.
    #[serde(default = "Cluster::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Desired state.
    pub spec: ClusterSpec,
    /// Observed state (changed through `/status`).
    #[serde(default)]
    pub status: ClusterStatus,
}

declare_kind!(
    Cluster,
    CLUSTER {
        api: "kubernetes",
        kind: "Cluster",
        list_kind: "ClusterList",
        plural: "clusters",
        scope: Namespaced,
        key: "/kubernetes/clusters/{namespace}/{name}",
        immutable: [],
        subresources: [
            status_subresource!("clusters/status"),
            SubresourceInfo {
                operation: Subresource::Binding,
                body: SubresourceBody::Body(&crate::kinds::infrastructure::CLOUD_BINDING),
                rbac_resource: "clusters/binding",
            },
        ],
        status: (ClusterStatus),
    }
);

impl Cluster {
    /// A new cluster (status at its defaults).
    pub fn new(metadata: Metadata, spec: ClusterSpec) -> Self {
        Cluster {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            spec,
            status: ClusterStatus::default(),
        }
    }
}

impl Validate for Cluster {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
    }
}

/// The body of `PUT .../applications/{name}/binding`: the chosen cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterBinding {
    /// Always `kubernetes`.
    #[serde(default = "ClusterBinding::default_api")]
    pub api: String,
    /// Always `ClusterBinding`.
    #[serde(default = "ClusterBinding::default_kind")]
    pub kind: String,
    /// The cluster.
    pub cluster: ResourceRef,
}

declare_body!(
    ClusterBinding,
    CLUSTER_BINDING {
        api: "kubernetes",
        kind: "ClusterBinding"
    }
);

impl ClusterBinding {
    /// A binding to `cluster`.
    pub fn new(cluster: ResourceRef) -> Self {
        ClusterBinding {
            api: Self::default_api(),
            kind: Self::default_kind(),
            cluster,
        }
    }
}

impl Validate for ClusterBinding {
    fn validate(&self, v: &mut Validator) {
        crate::registry::validate_type_meta(
            &self.api,
            &self.kind,
            "kubernetes",
            "ClusterBinding",
            v,
        );
    }
}

macro_rules! token_body {
    ($(#[$doc:meta])* $ty:ident, $info:ident, $kind:literal, $default_api:literal, $default_kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub struct $ty {
            /// Always `kubernetes`.
            #[serde(default = $default_api)]
            pub api: String,
            #[doc = concat!("Always `", $kind, "`.")]
            #[serde(default = $default_kind)]
            pub kind: String,
            /// The token from the application's status.
            #[serde(default)]
            pub token: Option<String>,
        }

        declare_body!($ty, $info { api: "kubernetes", kind: $kind });

        impl $ty {
            /// A body carrying `token`.
            pub fn new(token: impl Into<String>) -> Self {
                $ty { api: Self::default_api(), kind: Self::default_kind(), token: Some(token.into()) }
            }
        }

        impl Validate for $ty {
            fn validate(&self, v: &mut Validator) {
                crate::registry::validate_type_meta(&self.api, &self.kind, "kubernetes", $kind, v);
            }
        }
    };
}

token_body!(
    /// The body of `PUT .../applications/{name}/complete`, sent by a finished job.
    Complete, COMPLETE, "Complete", "Complete::default_api", "Complete::default_kind"
);
token_body!(
    /// The body of `PUT .../applications/{name}/shutdown`, sent by an application
    /// that finished its graceful shutdown.
    Shutdown, SHUTDOWN, "Shutdown", "Shutdown::default_api", "Shutdown::default_kind"
);

#[allow(dead_code)]
fn _assert_body_info(_: &BodyInfo) {}
