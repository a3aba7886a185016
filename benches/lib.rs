//! Benchmarks of krake-rs (the `krake-benches` helper package, not published).
//!
//! The benchmarks live in this `benches/` directory as `[[bench]]` targets
//! with `harness = false` declared in its `Cargo.toml`; run them with
//! `cargo bench -p krake-benches`, or one with
//! `cargo bench -p krake-benches --bench NAME`. This library itself is empty:
//! it only gives the package a crate to hang these docs on.
