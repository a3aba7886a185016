//! Test support shared by the tests and benchmarks of the krake-rs
//! workspace (not published).
//!
//! - [`etcd`]: a real `etcd` process (Debian's `etcd-server`) on a free
//!   loopback port;
//! - [`etcd_cluster`]: a real N-member etcd cluster on loopback (plain or
//!   TLS), whose members can be killed, frozen and restarted;
//! - [`prometheus`]: a real `prometheus` process and an exporter;
//! - [`server`]: krake-rs API servers over a real etcd process;
//! - [`process`]: what both share: free ports, a child killed on drop;
//! - [`wire`]: Krake's captured traffic (objects, exchanges, watch streams),
//!   shipped inside this crate so a clone of the repository alone passes
//!   its tests;
//! - [`kube`]: a fake Kubernetes API server that the unmodified `kube`
//!   client talks to over HTTP(S), with a simulated kubelet and fault
//!   injection;
//! - [`openstack`]: a fake Keystone v3 and Magnum v1 (tokens, clusters,
//!   resizes, certificates) for the Magnum controller;
//! - [`im`]: a fake Infrastructure Manager (IM) speaking IM's REST API
//!   (infrastructures created from TOSCA that move through IM's states over
//!   time, outputs with a kubeconfig, IM's auth data), with fault injection
//!   and request records.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() {
//! let dir = krake_testkit::wire::dir();
//! assert!(dir.join("objects").is_dir());
//! # }
//! ```

pub mod etcd;
pub mod etcd_cluster;
pub mod im;
pub mod kube;
pub mod openstack;
pub mod process;
pub mod prometheus;
pub mod server;
pub mod wire;
