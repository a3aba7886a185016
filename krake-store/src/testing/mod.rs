//! Test helpers (feature `testing`): the conformance suite every [`Store`](crate::Store)
//! backend must pass, and a real etcd process on a free loopback port.

pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
