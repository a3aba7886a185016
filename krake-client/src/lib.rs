//! The client of krake-rs: a typed Rust client for Krake's REST API.
//!
//! **Not built yet.** This crate is a skeleton. The roadmap's *client +
//! krakectl* step fills it: one typed handle per kind of [`krake_data`]
//! (create, get, list, update, delete, watch) over HTTP, wire-compatible with
//! Krake 1.0.1 servers and with `krake-server`, with TLS client certificates
//! and retries. The `krakectl` command line tool is built on it, and so is the
//! controller runtime in `krake-controller`.
//!
//! # Example
//!
//! The values it will send and receive are [`krake_data`] types already:
//!
//! ```
//! use krake_data::metadata::{Metadata, ResourceRef};
//!
//! let metadata = Metadata::namespaced("system", "my-app");
//! let reference = ResourceRef::new(
//!     "kubernetes",
//!     "Application",
//!     metadata.namespace.clone(),
//!     metadata.name.clone(),
//! );
//! assert_eq!(reference.name, "my-app");
//! assert!(!krake_client::VERSION.is_empty());
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
