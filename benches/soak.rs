//! Soak entry point: see `krake_benches::soak_suite`. Run it with
//! `scripts/soak [DURATION]`, which builds `krake-server` and names it;
//! without a server (`cargo bench`, `cargo test`) it only says so.

fn main() -> std::process::ExitCode {
    krake_benches::soak_suite::main()
}
