//! Krake's resource model: every kind of the `core`, `kubernetes`,
//! `infrastructure` and `openstack` APIs, serialized exactly as Krake 1.0.1
//! writes them on the wire, with Krake's validation rules and messages, the
//! label and metric constraint languages, and a registry that describes every
//! kind for code that handles them generically. No I/O.
//!
//! - [`kinds`]: Krake's 14 persistent kinds (and, beyond Krake, `Lease`) and
//!   the sub-operation bodies;
//! - [`metadata`]: [`Metadata`], [`ResourceRef`], naming and label rules;
//! - [`registry`]: [`KindInfo`] for every kind (paths,
//!   store keys, sub-operations, field markers, type-erased parsing and JSON
//!   Schema) and the typed [`Resource`] trait;
//! - [`constraints`]: [`LabelConstraint`] and [`MetricConstraint`];
//! - [`validation`]: structured errors that render as Krake's 422 bodies;
//! - [`lenient`]: numbers, integers and booleans read from strings, as
//!   Krake's marshmallow schemas accept them;
//! - [`timestamp`], [`reason`], [`watch`], [`list`]: the shared wire types.
//!
//! # Example
//!
//! ```
//! use krake_data::kinds::kubernetes::Application;
//! use krake_data::registry::{ParseMode, Resource};
//! use krake_data::LabelConstraint;
//!
//! // A create request body as krakectl sends it: the server fills in defaults.
//! let body = serde_json::json!({
//!     "metadata": {"name": "echo", "labels": {"tier": "web"}},
//!     "spec": {
//!         "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}],
//!         "constraints": {"cluster": {"labels": ["location in (DE, AT)"]}},
//!     },
//! });
//! let normalized = Application::INFO.parse(body, ParseMode::Create).unwrap();
//! let app: Application = serde_json::from_value(normalized).unwrap();
//! assert_eq!(app.spec.backoff_limit, -1);
//! assert_eq!(serde_json::to_value(&app.status.state).unwrap(), "PENDING");
//!
//! // Constraints keep the user's text and evaluate against labels.
//! let constraint = &app.spec.constraints.cluster.labels.as_ref().unwrap()[0];
//! assert_eq!(constraint.as_str(), "location in (DE, AT)");
//! let mut labels = krake_data::metadata::Labels::new();
//! labels.insert("location".into(), "DE".into());
//! assert!(constraint.matches(&labels));
//! assert!(!"location = FR".parse::<LabelConstraint>().unwrap().matches(&labels));
//!
//! // Invalid bodies give Krake's 422 detail, with field paths.
//! let bad = serde_json::json!({"metadata": {"name": "bad name"}, "spec": {"manifest": [], "constraints": {"cluster": {}}}});
//! let errors = Application::INFO.parse(bad, ParseMode::Create).unwrap_err();
//! assert_eq!(
//!     errors.to_python_repr(),
//!     "{'metadata': {'name': ['Invalid character in resource name.']}, 'spec': {'_schema': \
//!      ['The application should be defined by a manifest file, a TOSCA template or a CSAR file.']}}"
//! );
//! ```

pub mod constraints;
pub mod kinds;
pub mod lenient;
pub mod list;
pub mod metadata;
pub mod reason;
pub mod registry;
#[doc(hidden)]
pub mod tagged;
pub mod timestamp;
pub mod validation;
pub mod watch;

pub use constraints::{LabelConstraint, MetricConstraint};
pub use list::ResourceList;
pub use metadata::{Metadata, ResourceRef};
pub use reason::{Reason, ReasonCode};
pub use registry::{KindInfo, Resource};
pub use timestamp::Timestamp;
pub use watch::{WatchEvent, WatchEventType};
