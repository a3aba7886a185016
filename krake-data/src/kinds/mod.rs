//! Every kind of Krake's four API groups.
//!
//! - [`core`] holds `Role`, `RoleBinding`, `GlobalMetric`, `Metric`,
//!   `GlobalMetricsProvider` and `MetricsProvider`, and beyond Krake `Lease`;
//! - [`kubernetes`] holds `Application`, `Cluster` and the bodies
//!   `ClusterBinding`, `Complete` and `Shutdown`;
//! - [`infrastructure`] holds `GlobalInfrastructureProvider`,
//!   `InfrastructureProvider`, `GlobalCloud`, `Cloud` and `CloudBinding`;
//! - [`openstack`] holds `Project`, `MagnumCluster` and `MagnumClusterBinding`.

pub mod core;
pub mod infrastructure;
pub mod kubernetes;
pub mod openstack;

/// Declares a persistent kind: its registry entry (a `KindInfo` static) and
/// the `Resource` (and, with a status, `HasStatus`) implementation of its type.
macro_rules! declare_kind {
    (
        $ty:ident, $info:ident {
            api: $api:literal,
            kind: $kind:literal,
            list_kind: $list:literal,
            plural: $plural:literal,
            scope: $scope:ident,
            key: $key:literal,
            immutable: [$($immutable:literal),* $(,)?],
            subresources: [$($sub:expr),* $(,)?],
            status: $status:tt $(,)?
        }
    ) => {
        #[doc = concat!("The registry entry of [`", stringify!($ty), "`].")]
        pub static $info: $crate::registry::KindInfo = $crate::registry::KindInfo {
            api: $api,
            kind: $kind,
            list_kind: $list,
            plural: $plural,
            scope: $crate::registry::Scope::$scope,
            subresources: &[$($sub),*],
            key_template: $key,
            readonly_fields: $crate::registry::READONLY_FIELDS,
            subresource_fields: declare_kind!(@subresource_fields $status),
            immutable_fields: &["metadata.name", "metadata.namespace" $(, $immutable)*],
            parse_object: $crate::registry::parse_erased::<$ty>,
            default_status: declare_kind!(@default_status $ty $status),
            create_object: |body, new| {
                $crate::registry::create_erased::<$ty>(
                    body,
                    new,
                    declare_kind!(@reset_status $ty $status),
                )
            },
            schema: $crate::registry::schema_erased::<$ty>,
        };

        impl $ty {
            #[doc(hidden)]
            pub fn default_api() -> String {
                $api.to_owned()
            }

            #[doc(hidden)]
            pub fn default_kind() -> String {
                $kind.to_owned()
            }
        }

        impl $crate::registry::Resource for $ty {
            const INFO: &'static $crate::registry::KindInfo = &$info;

            fn metadata(&self) -> &$crate::metadata::Metadata {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut $crate::metadata::Metadata {
                &mut self.metadata
            }
        }

        declare_kind!(@has_status $ty $status);
    };
    (@subresource_fields none) => { &[] };
    (@subresource_fields ($status:ty)) => { &["status"] };
    (@default_status $ty:ident none) => { $crate::registry::no_status };
    (@default_status $ty:ident ($status:ty)) => { $crate::registry::default_status_erased::<$ty> };
    (@reset_status $ty:ident none) => { $crate::registry::no_status_of::<$ty> };
    (@reset_status $ty:ident ($status:ty)) => { $crate::registry::default_status_of::<$ty> };
    (@has_status $ty:ident none) => {};
    (@has_status $ty:ident ($status:ty)) => {
        impl $crate::registry::HasStatus for $ty {
            type Status = $status;

            fn status(&self) -> &$status {
                &self.status
            }

            fn status_mut(&mut self) -> &mut $status {
                &mut self.status
            }
        }
    };
}

/// Declares a kind made of `api`, `kind`, `metadata` and a `spec` of type
/// `$spec` (no status): the struct, its registry entry, a constructor and its
/// validation (type meta, metadata, spec).
macro_rules! spec_kind {
    (
        $(#[$doc:meta])*
        $ty:ident, $info:ident {
            api: $api:literal,
            kind: $kind:literal,
            list_kind: $list:literal,
            plural: $plural:literal,
            scope: $scope:ident,
            key: $key:literal,
            spec: $spec:ty,
            serde_defaults: ($default_api:literal, $default_kind:literal) $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        pub struct $ty {
            #[doc = concat!("Always `", $api, "`.")]
            #[serde(default = $default_api)]
            pub api: String,
            #[doc = concat!("Always `", $kind, "`.")]
            #[serde(default = $default_kind)]
            pub kind: String,
            /// Metadata.
            pub metadata: $crate::metadata::Metadata,
            /// Desired state.
            pub spec: $spec,
        }

        declare_kind!($ty, $info {
            api: $api,
            kind: $kind,
            list_kind: $list,
            plural: $plural,
            scope: $scope,
            key: $key,
            immutable: [],
            subresources: [],
            status: none,
        });

        impl $ty {
            /// An object with this spec.
            pub fn new(metadata: $crate::metadata::Metadata, spec: $spec) -> Self {
                $ty { api: Self::default_api(), kind: Self::default_kind(), metadata, spec }
            }
        }

        impl $crate::validation::Validate for $ty {
            fn validate(&self, v: &mut $crate::validation::Validator) {
                $crate::kinds::core::validate_object::<Self>(&self.api, &self.kind, &self.metadata, v);
                v.nested("spec", &self.spec);
            }
        }
    };
}

/// Declares a request-only body kind's registry entry and its `api`/`kind` defaults.
macro_rules! declare_body {
    ($ty:ident, $info:ident { api: $api:literal, kind: $kind:literal $(,)? }) => {
        #[doc = concat!("The registry entry of the body [`", stringify!($ty), "`].")]
        pub static $info: $crate::registry::BodyInfo = $crate::registry::BodyInfo {
            api: $api,
            kind: $kind,
            parse: $crate::registry::parse_erased::<$ty>,
            schema: $crate::registry::schema_erased::<$ty>,
        };

        impl $ty {
            #[doc(hidden)]
            pub fn default_api() -> String {
                $api.to_owned()
            }

            #[doc(hidden)]
            pub fn default_kind() -> String {
                $kind.to_owned()
            }
        }
    };
}

/// The `/status` sub-operation (body: the whole object).
macro_rules! status_subresource {
    ($rbac:literal) => {
        $crate::registry::SubresourceInfo {
            operation: $crate::registry::Subresource::Status,
            body: $crate::registry::SubresourceBody::Object,
            rbac_resource: $rbac,
        }
    };
}

use declare_body;
use declare_kind;
use spec_kind;
use status_subresource;
