//! Test helpers (feature `testing`): the conformance suite every
//! [`Store`](crate::Store) backend must pass. A real etcd process to run it
//! against is `krake_testkit::etcd::EtcdProcess` (the workspace's unpublished
//! test support).

pub mod conformance;
