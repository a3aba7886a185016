//! Krake's Kubernetes controllers (feature `kubernetes`). (Work in progress.)

pub mod health;
pub mod observer_schema;
