//! The controller runtime of krake-rs: what Krake's controllers (scheduler,
//! garbage collector, Kubernetes application and cluster controllers) are
//! built on.
//!
//! **Not built yet.** This crate is a skeleton. The roadmap fills it in two
//! steps:
//!
//! 1. *controller runtime*: watch-driven reflectors and work queues on top of
//!    `krake-client`, with resynchronisation, back-off and graceful shutdown.
//! 2. *scheduler/GC*: Krake's scheduler (placing applications on clusters by
//!    label and metric constraints, the constraint languages of
//!    [`krake_data`]) and its garbage collector (cascading deletion through
//!    owners and finalizers).
//!
//! # Example
//!
//! Controllers act on [`krake_data`] objects, for example by following the
//! finalizer stack of an object being deleted:
//!
//! ```
//! use krake_data::metadata::Metadata;
//!
//! let mut metadata = Metadata::named("my-app");
//! metadata.finalizers.push("cascade_deletion".into());
//! assert_eq!(metadata.tail_finalizer(), Some("cascade_deletion"));
//! assert!(!metadata.is_deleted());
//! assert!(!krake_controller::VERSION.is_empty());
//! ```

/// The version of this crate (`CARGO_PKG_VERSION`), the same for every crate
/// of the krake-rs workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod runner;
pub mod work_queue;

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
