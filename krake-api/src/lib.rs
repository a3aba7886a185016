//! The REST API of krake-rs, as a library: Krake 1.0.1's HTTP routes over
//! pluggable stores.
//!
//! **Not built yet.** This crate is a skeleton. The roadmap fills it in two
//! steps:
//!
//! 1. *REST API + stores*: the routes of Krake 1.0.1's `core`, `kubernetes`,
//!    `infrastructure` and `openstack` APIs (create, read, list, update,
//!    update of the status and other subresources, delete, watch),
//!    wire-compatible with Krake's JSON, over a store trait with an embedded
//!    implementation and an etcd one.
//! 2. *auth/RBAC/TLS*: authentication, Krake's role-based access control and
//!    TLS with client certificates.
//!
//! The resources it serves, their validation and their JSON Schemas already
//! exist in [`krake_data`], the crate this one builds on. `krake-server` is
//! the binary that will run this API.
//!
//! # Example
//!
//! The objects this API will store are [`krake_data`] values, such as their
//! metadata:
//!
//! ```
//! use krake_data::metadata::{Metadata, validate_label_key};
//!
//! let mut metadata = Metadata::named("my-app");
//! metadata.labels.insert("location".into(), "DE".into());
//! assert!(metadata.labels.keys().all(|key| validate_label_key(key).is_ok()));
//! assert!(!krake_api::VERSION.is_empty());
//! ```

/// The version of this crate (`CARGO_PKG_VERSION`), the same for every crate
/// of the krake-rs workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use super::VERSION;

    #[test]
    fn version_is_the_package_version() {
        let parts: Vec<&str> = VERSION.split('.').collect();
        assert_eq!(parts.len(), 3, "{VERSION}");
        assert!(
            parts.iter().all(|part| part.parse::<u64>().is_ok()),
            "{VERSION}"
        );
    }
}
