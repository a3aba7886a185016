//! The `infrastructure` API group: infrastructure providers (the IM) and the
//! clouds clusters are created on.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::core::{MetricRef, validate_object, validate_url};
use super::{declare_body, declare_kind, spec_kind, status_subresource};
use crate::metadata::{Metadata, ResourceRef};
use crate::reason::Reason;
use crate::tagged_container;
use crate::validation::{Validate, Validator};

/// The finalizer of the infrastructure controller.
pub const INFRASTRUCTURE_RESOURCES_DELETION_FINALIZER: &str = "infrastructure_resources_deletion";

/// An Infrastructure Manager endpoint and its credentials: a token, or a
/// username and a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImSpec {
    /// The IM's base URL.
    pub url: String,
    /// User name (with `password`).
    #[serde(default)]
    pub username: Option<String>,
    /// Password (with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// Access token (instead of username and password).
    #[serde(default)]
    pub token: Option<String>,
}

tagged_container! {
    /// An infrastructure provider's backend: `{"type": "im", "im": {...}}`.
    pub enum InfrastructureProviderSpec {
        /// The Infrastructure Manager.
        Im(ImSpec) = "im",
    }
}

impl Validate for InfrastructureProviderSpec {
    fn validate(&self, v: &mut Validator) {
        let InfrastructureProviderSpec::Im(im) = self;
        v.field("im", |v| {
            v.field("url", |v| validate_url(&im.url, v));
            let has_token = im.token.is_some();
            let has_password = im.username.is_some() && im.password.is_some();
            if !has_token && !has_password {
                v.schema_error("Either a token or a username and a password are required.");
            }
        });
    }
}

spec_kind! {
    /// An infrastructure provider usable by every cloud.
    GlobalInfrastructureProvider, GLOBAL_INFRASTRUCTURE_PROVIDER {
        api: "infrastructure",
        kind: "GlobalInfrastructureProvider",
        list_kind: "GlobalInfrastructureProviderList",
        plural: "globalinfrastructureproviders",
        scope: Global,
        key: "/infrastructure/globalinfrastructureproviders/{name}",
        spec: InfrastructureProviderSpec,
        serde_defaults: ("GlobalInfrastructureProvider::default_api", "GlobalInfrastructureProvider::default_kind"),
    }
}
spec_kind! {
    /// An infrastructure provider usable by the clouds of its namespace.
    InfrastructureProvider, INFRASTRUCTURE_PROVIDER {
        api: "infrastructure",
        kind: "InfrastructureProvider",
        list_kind: "InfrastructureProviderList",
        plural: "infrastructureproviders",
        scope: Namespaced,
        key: "/infrastructure/infrastructureproviders/{namespace}/{name}",
        spec: InfrastructureProviderSpec,
        serde_defaults: ("InfrastructureProvider::default_api", "InfrastructureProvider::default_kind"),
    }
}

/// The OpenStack user of password authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenstackUser {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// The user's domain.
    #[serde(default = "default_domain_name")]
    pub domain_name: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

fn default_domain_name() -> String {
    "Default".to_owned()
}

fn default_domain_id() -> String {
    "default".to_owned()
}

fn default_version() -> String {
    "3".to_owned()
}

/// The OpenStack project of password authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenstackProject {
    /// Project name.
    pub name: String,
    /// The project's domain id.
    #[serde(default = "default_domain_id")]
    pub domain_id: String,
    /// Free text.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Keystone password authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PasswordAuth {
    /// Keystone API version.
    #[serde(default = "default_version")]
    pub version: String,
    /// The user.
    pub user: OpenstackUser,
    /// The project.
    pub project: OpenstackProject,
}

tagged_container! {
    /// How to authenticate to an OpenStack cloud: `{"type": "password", "password": {...}}`.
    pub enum OpenstackAuthMethod {
        /// User name and password.
        Password(PasswordAuth) = "password",
    }
}

/// The infrastructure provider a cloud uses to create clusters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InfrastructureProviderRef {
    /// The provider's name.
    pub name: String,
    /// True: an InfrastructureProvider in the cloud's namespace; false: a global one.
    #[serde(default)]
    pub namespaced: bool,
}

/// An OpenStack cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OpenstackSpec {
    /// The Keystone URL.
    pub url: String,
    /// How to authenticate.
    pub auth: OpenstackAuthMethod,
    /// The metrics scoring the cloud.
    #[serde(default)]
    pub metrics: Vec<MetricRef>,
    /// The provider that creates clusters on it.
    pub infrastructure_provider: InfrastructureProviderRef,
}

tagged_container! {
    /// A cloud's backend: `{"type": "openstack", "openstack": {...}}`.
    pub enum CloudSpec {
        /// OpenStack.
        Openstack(OpenstackSpec) = "openstack",
    }
}

impl CloudSpec {
    /// The metrics scoring the cloud.
    pub fn metrics(&self) -> &[MetricRef] {
        let CloudSpec::Openstack(spec) = self;
        &spec.metrics
    }

    /// The provider that creates clusters on the cloud.
    pub fn infrastructure_provider(&self) -> &InfrastructureProviderRef {
        let CloudSpec::Openstack(spec) = self;
        &spec.infrastructure_provider
    }
}

impl Validate for CloudSpec {
    fn validate(&self, v: &mut Validator) {
        let CloudSpec::Openstack(spec) = self;
        v.field("openstack", |v| {
            v.field("url", |v| validate_url(&spec.url, v));
            v.nested("metrics", &spec.metrics);
        });
    }
}

/// The state of a cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CloudState {
    /// Usable.
    #[default]
    Online,
    /// A metric could not be fetched.
    FailingMetrics,
}

/// The observed state of a cloud.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct CloudStatus {
    /// The state.
    pub state: CloudState,
    /// Metric name to the reason fetching it failed.
    pub metrics_reasons: IndexMap<String, Reason>,
}

macro_rules! cloud_kind {
    ($(#[$doc:meta])* $ty:ident, $info:ident, $kind:literal, $list:literal, $plural:literal, $scope:ident, $key:literal, $rbac:literal, $default_api:literal, $default_kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        pub struct $ty {
            /// Always `infrastructure`.
            #[serde(default = $default_api)]
            pub api: String,
            #[doc = concat!("Always `", $kind, "`.")]
            #[serde(default = $default_kind)]
            pub kind: String,
            /// Metadata.
            pub metadata: Metadata,
            /// The cloud.
            pub spec: CloudSpec,
            /// Observed state (changed through `/status`).
            #[serde(default)]
            pub status: CloudStatus,
        }

        declare_kind!($ty, $info {
            api: "infrastructure",
            kind: $kind,
            list_kind: $list,
            plural: $plural,
            scope: $scope,
            key: $key,
            immutable: [],
            subresources: [status_subresource!($rbac)],
            status: (CloudStatus),
        });

        impl $ty {
            /// A new cloud (status at its defaults).
            pub fn new(metadata: Metadata, spec: CloudSpec) -> Self {
                $ty {
                    api: Self::default_api(),
                    kind: Self::default_kind(),
                    metadata,
                    spec,
                    status: CloudStatus::default(),
                }
            }
        }
    };
}

cloud_kind!(
    /// A cloud usable by clusters of every namespace.
    GlobalCloud, GLOBAL_CLOUD, "GlobalCloud", "GlobalCloudList", "globalclouds", Global,
    "/infrastructure/globalclouds/{name}", "globalclouds/status",
    "GlobalCloud::default_api", "GlobalCloud::default_kind"
);
cloud_kind!(
    /// A cloud usable by the clusters of its namespace.
    Cloud, CLOUD, "Cloud", "CloudList", "clouds", Namespaced,
    "/infrastructure/clouds/{namespace}/{name}", "clouds/status",
    "Cloud::default_api", "Cloud::default_kind"
);

impl Validate for GlobalCloud {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
        // A global object cannot depend on something that lives in a namespace.
        v.field("spec", |v| {
            if self.spec.infrastructure_provider().namespaced {
                v.schema_error(
                    "A GlobalCloud cannot reference a namespaced infrastructure provider.",
                );
            }
            if self.spec.metrics().iter().any(|m| m.namespaced) {
                v.schema_error("A GlobalCloud cannot reference a namespaced metric.");
            }
        });
    }
}

impl Validate for Cloud {
    fn validate(&self, v: &mut Validator) {
        validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
        v.nested("spec", &self.spec);
    }
}

/// The body of `PUT .../clusters/{name}/binding`: the cloud to create the cluster on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CloudBinding {
    /// Always `infrastructure`.
    #[serde(default = "CloudBinding::default_api")]
    pub api: String,
    /// Always `CloudBinding`.
    #[serde(default = "CloudBinding::default_kind")]
    pub kind: String,
    /// The cloud.
    pub cloud: ResourceRef,
}

declare_body!(
    CloudBinding,
    CLOUD_BINDING {
        api: "infrastructure",
        kind: "CloudBinding"
    }
);

impl CloudBinding {
    /// A binding to `cloud`.
    pub fn new(cloud: ResourceRef) -> Self {
        CloudBinding {
            api: Self::default_api(),
            kind: Self::default_kind(),
            cloud,
        }
    }
}

impl Validate for CloudBinding {
    fn validate(&self, v: &mut Validator) {
        crate::registry::validate_type_meta(
            &self.api,
            &self.kind,
            "infrastructure",
            "CloudBinding",
            v,
        );
    }
}
