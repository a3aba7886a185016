//! The controller runtime of krake-rs: what third-party services embed to
//! run their own controllers against Krake, and what Krake's own controllers
//! are built on.
//!
//! Small stages, each usable alone (kube-runtime's layering):
//!
//! - [`reflector`] and [`store`]: list, then watch through `krake-client`,
//!   into an in-memory [`store::Store`] that is ready after the first list,
//!   with secondary indexes; [`shared::Reflectors`] runs one reflector per
//!   (kind, namespace, selector) for the whole process;
//! - [`work_queue`] and [`runner`]: keys with due times, deduplicated,
//!   debounced, per-key exponential backoff, never two runs of a key at once,
//!   bounded concurrency, draining on shutdown;
//! - [`controller`]: the stages put together for a kind, with `owns` and
//!   `watches` triggers, resync, predicates, leader election, metrics and a
//!   tracing span per reconcile;
//! - [`finalizer`]: Krake's finalizer stack; [`timers`]: per-object periodic
//!   functions (observers); [`leader`]: active-passive replicas through a
//!   `core/Lease` held in the API; [`metrics`]: Prometheus metrics;
//! - `metrics_provider` (feature `metrics-providers`): the values of
//!   Krake's metrics from Prometheus, KSQL, InfluxDB or static providers,
//!   with a timeout and a single-flight cache;
//! - `testing` (feature `testing`): a fake API with fault injection and a
//!   write log; a real Prometheus process, an exporter, and fakes of KSQL
//!   and InfluxDB for metrics providers.
//!
//! Krake's own controllers, built on those stages, each behind a cargo
//! feature (all off by default):
//!
//! - `scheduler` (feature `scheduler`): places applications on clusters,
//!   clusters on clouds and Magnum clusters on projects by labels and live
//!   metrics;
//! - `gc` (feature `gc`): the garbage collector, Krake's cascading deletion;
//! - `infrastructure` (feature `infrastructure`): clusters created on
//!   clouds through the Infrastructure Manager (IM), behind a provider
//!   trait;
//! - `magnum` (feature `magnum`): Krake's deprecated Magnum controller,
//!   Kubernetes clusters created through OpenStack Magnum;
//! - `metrics_provider` (feature `metrics-providers`, implied by
//!   `scheduler`): Prometheus, KSQL (Kafka), InfluxDB and static metrics
//!   providers with a timeout and a short-lived cache.
//!
//! Controllers never touch the store: everything goes through the API.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use krake_client::Client;
//! use krake_controller::controller::Controller;
//! use krake_controller::shared::Reflectors;
//! use krake_controller::work_queue::Attempt;
//! use krake_controller::Action;
//! use krake_data::kinds::kubernetes::Application;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let shutdown = CancellationToken::new();
//! let reflectors = Reflectors::new(client, shutdown.clone());
//! Controller::<Application>::new(&reflectors, Some("testing"))
//!     .run(
//!         |app: Arc<Application>, _: Arc<()>| async move {
//!             println!("{} is {:?}", app.metadata.name, app.status.state);
//!             Ok::<_, std::convert::Infallible>(Action::await_change())
//!         },
//!         |_, _, _: Attempt, _| Action::await_change(),
//!         Arc::new(()),
//!         shutdown,
//!     )
//!     .await;
//! # Ok(())
//! # }
//! ```

pub mod action;
pub mod controller;
pub mod finalizer;
#[cfg(feature = "gc")]
pub mod gc;
#[cfg(feature = "infrastructure")]
pub mod infrastructure;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod leader;
#[cfg(feature = "magnum")]
pub mod magnum;
pub mod metrics;
#[cfg(feature = "metrics-providers")]
pub mod metrics_provider;
pub mod object_key;
pub mod reflector;
pub mod runner;
#[cfg(feature = "scheduler")]
pub mod scheduler;
pub mod shared;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timers;
pub mod work_queue;

pub use action::Action;
pub use object_key::ObjectKey;

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
