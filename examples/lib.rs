//! Runnable examples of krake-rs (the `krake-examples` helper package, not
//! published).
//!
//! The examples live in this `examples/` directory as `[[example]]` targets
//! declared in its `Cargo.toml`; run one with
//! `cargo run -p krake-examples --example NAME`. They build with
//! `cargo test --all-targets` (and so in CI), which keeps them compiling.
//! This library itself is empty: it only gives the package a crate to hang
//! these docs on.
//!
//! - `custom_scheduler`: a complete small scheduler on `krake-client` alone:
//!   it watches Applications and Clusters and binds each pending application
//!   to a matching ONLINE cluster. `tests/custom_scheduler.rs` runs it
//!   against a real API server.
//! - `embedded_controller`: a Krake controller inside an axum service, next
//!   to the service's own routes. `tests/embedded_controller.rs` runs it
//!   against a real API server.
//! - `fake_cluster`: an in-process fake Kubernetes cluster (no container
//!   really runs; a simulated kubelet marks workloads ready) that writes its
//!   kubeconfig, for trying krake-rs without a cluster: the README's
//!   walk-through registers it with krakectl. `tests/fake_cluster.rs` checks
//!   the kubeconfig with the real `kube` client.
