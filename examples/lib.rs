//! Runnable examples of krake-rs (the `krake-examples` helper package, not
//! published).
//!
//! The examples live in this `examples/` directory as `[[example]]` targets
//! declared in its `Cargo.toml`; run one with
//! `cargo run -p krake-examples --example NAME`. They build with
//! `cargo test --all-targets` (and so in CI), which keeps them compiling.
//! This library itself is empty: it only gives the package a crate to hang
//! these docs on.
