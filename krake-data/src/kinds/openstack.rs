//! The `openstack` API group: OpenStack projects and Magnum clusters
//! (deprecated in Krake, kept for compatibility).

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::core::{MetricRef, validate_object, validate_url};
use super::{declare_body, declare_kind, status_subresource};
use crate::constraints::LabelConstraint;
use crate::metadata::{Metadata, ResourceRef};
use crate::reason::Reason;
use crate::registry::{Subresource, SubresourceBody, SubresourceInfo};
use crate::tagged_container;
use crate::validation::{Validate, Validator};

/// The finalizer of the Magnum controller.
pub const MAGNUM_CLUSTER_DELETION_FINALIZER: &str = "magnum_cluster_deletion";

/// The Keystone user of password authentication, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserReference {
    /// User id.
    pub id: String,
    /// Password.
    pub password: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The Keystone project of password authentication, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectReference {
    /// Project id.
    pub id: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Keystone password authentication for a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectPasswordAuth {
    /// The user.
    pub user: UserReference,
    /// The project.
    pub project: ProjectReference,
}

/// A Keystone application credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApplicationCredential {
    /// Credential id.
    pub id: String,
    /// Credential secret.
    pub secret: String,
}

tagged_container! {
    /// How to authenticate to a project: `{"type": "password", "password": {...}}`
    /// or `{"type": "application_credential", "application_credential": {...}}`.
    pub enum AuthMethod {
        /// User id, password and project id.
        Password(ProjectPasswordAuth) = "password",
        /// An application credential.
        ApplicationCredential(ApplicationCredential) = "application_credential",
    }
}

/// The desired state of a [`Project`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectSpec {
    /// The Keystone URL.
    pub url: String,
    /// How to authenticate.
    pub auth: AuthMethod,
    /// The UUID of the Magnum cluster template.
    pub template: String,
    /// The metrics scoring the project.
    #[serde(default)]
    pub metrics: Vec<MetricRef>,
}

impl Validate for ProjectSpec {
    fn validate(&self, v: &mut Validator) {
        v.field("url", |v| validate_url(&self.url, v));
        v.nested("metrics", &self.metrics);
    }
}

/// The state of a project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProjectState {
    /// Usable.
    #[default]
    Online,
    /// A metric could not be fetched.
    FailingMetrics,
}

/// The observed state of a [`Project`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ProjectStatus {
    /// The state.
    pub state: ProjectState,
    /// Metric name to the reason fetching it failed.
    pub metrics_reasons: IndexMap<String, Reason>,
}

/// An OpenStack project Magnum clusters can be created in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Project {
    /// Always `openstack`.
    #[serde(default = "Project::default_api")]
    pub api: String,
    /// Always `Project`.
    #[serde(default = "Project::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Desired state.
    pub spec: ProjectSpec,
    /// Observed state (changed through `/status`).
    #[serde(default)]
    pub status: ProjectStatus,
}

declare_kind!(
    Project,
    PROJECT {
        api: "openstack",
        kind: "Project",
        list_kind: "ProjectList",
        plural: "projects",
        scope: Namespaced,
        key: "/openstack/projects/{namespace}/{name}",
        immutable: [],
        subresources: [status_subresource!("projects/status")],
        status: (ProjectStatus),
    }
);

impl Project {
    /// A new project (status at its defaults).
    pub fn new(metadata: Metadata, spec: ProjectSpec) -> Self {
        Project {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            spec,
            status: ProjectStatus::default(),
        }
    }
}

impl Validate for Project {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
    }
}

/// Label constraints a Magnum cluster puts on its project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectConstraints {
    /// Label constraints on the project.
    #[serde(default)]
    pub labels: Option<Vec<LabelConstraint>>,
}

/// Scheduling constraints of a Magnum cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MagnumClusterConstraints {
    /// Constraints on the project.
    #[serde(default)]
    pub project: Option<ProjectConstraints>,
}

/// The desired state of a [`MagnumCluster`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MagnumClusterSpec {
    /// Number of master nodes (cannot change).
    #[serde(default)]
    pub master_count: Option<i64>,
    /// Number of worker nodes.
    #[serde(default)]
    pub node_count: Option<i64>,
    /// The metrics scoring the cluster.
    #[serde(default)]
    pub metrics: Vec<MetricRef>,
    /// Where the cluster may be created.
    #[serde(default)]
    pub constraints: Option<MagnumClusterConstraints>,
}

impl Validate for MagnumClusterSpec {
    fn validate(&self, v: &mut Validator) {
        for (field, count) in [
            ("master_count", self.master_count),
            ("node_count", self.node_count),
        ] {
            if count.is_some_and(|n| n < 1) {
                v.field(field, |v| v.error("Must be greater than or equal to 1."));
            }
        }
        v.nested("metrics", &self.metrics);
    }
}

/// The lifecycle state of a [`MagnumCluster`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum MagnumClusterState {
    #[default]
    Pending,
    Creating,
    Running,
    Reconciling,
    Deleting,
    Failed,
}

/// The observed state of a [`MagnumCluster`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct MagnumClusterStatus {
    /// Why the cluster failed.
    pub reason: Option<Reason>,
    /// The lifecycle state.
    pub state: MagnumClusterState,
    /// The project the cluster is bound to.
    pub project: Option<ResourceRef>,
    /// The Magnum template used (cannot change once set).
    pub template: Option<String>,
    /// Magnum's id of the cluster.
    pub cluster_id: Option<String>,
    /// Worker nodes running.
    pub node_count: Option<i64>,
    /// The Kubernetes API address.
    pub api_address: Option<String>,
    /// Addresses of the masters.
    pub master_addresses: Option<Vec<String>>,
    /// Addresses of the workers.
    pub node_addresses: Option<Vec<String>>,
    /// The Krake Cluster created for it.
    pub cluster: Option<ResourceRef>,
}

/// A Kubernetes cluster created through OpenStack Magnum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MagnumCluster {
    /// Always `openstack`.
    #[serde(default = "MagnumCluster::default_api")]
    pub api: String,
    /// Always `MagnumCluster`.
    #[serde(default = "MagnumCluster::default_kind")]
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// Desired state.
    pub spec: MagnumClusterSpec,
    /// Observed state (changed through `/status`).
    #[serde(default)]
    pub status: MagnumClusterStatus,
}

declare_kind!(
    MagnumCluster,
    MAGNUM_CLUSTER {
        api: "openstack",
        kind: "MagnumCluster",
        list_kind: "MagnumClusterList",
        plural: "magnumclusters",
        scope: Namespaced,
        key: "/openstack/magnumclusters/{namespace}/{name}",
        immutable: ["spec.master_count", "status.template"],
        subresources: [
            status_subresource!("magnumclusters/status"),
            SubresourceInfo {
                operation: Subresource::Binding,
                body: SubresourceBody::Body(&MAGNUM_CLUSTER_BINDING),
                rbac_resource: "magnumclusters/binding",
            },
        ],
        status: (MagnumClusterStatus),
    }
);

impl MagnumCluster {
    /// A new Magnum cluster (status at its defaults).
    pub fn new(metadata: Metadata, spec: MagnumClusterSpec) -> Self {
        MagnumCluster {
            api: Self::default_api(),
            kind: Self::default_kind(),
            metadata,
            spec,
            status: MagnumClusterStatus::default(),
        }
    }
}

impl Validate for MagnumCluster {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
    }
}

/// The body of `PUT .../magnumclusters/{name}/binding`: the project and template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MagnumClusterBinding {
    /// Always `openstack`.
    #[serde(default = "MagnumClusterBinding::default_api")]
    pub api: String,
    /// Always `MagnumClusterBinding`.
    #[serde(default = "MagnumClusterBinding::default_kind")]
    pub kind: String,
    /// The project.
    pub project: ResourceRef,
    /// The Magnum template.
    pub template: String,
}

declare_body!(
    MagnumClusterBinding,
    MAGNUM_CLUSTER_BINDING {
        api: "openstack",
        kind: "MagnumClusterBinding",
    }
);

impl MagnumClusterBinding {
    /// A binding to `project` with `template`.
    pub fn new(project: ResourceRef, template: impl Into<String>) -> Self {
        MagnumClusterBinding {
            api: Self::default_api(),
            kind: Self::default_kind(),
            project,
            template: template.into(),
        }
    }
}

impl Validate for MagnumClusterBinding {
    fn validate(&self, v: &mut Validator) {
        crate::registry::validate_type_meta(
            &self.api,
            &self.kind,
            "openstack",
            "MagnumClusterBinding",
            v,
        );
    }
}
