//! `krake-server`: the krake-rs reference server, serving Krake 1.0.1's REST
//! API (from `krake-api`) on an embedded store or on etcd.
//!
//! **Not built yet.** The roadmap's *REST API + stores* step builds it; until
//! then this binary prints one line saying so and exits with code 2.

use std::process::ExitCode;

/// The line printed while the REST API is not implemented.
const NOT_IMPLEMENTED: &str = concat!(
    "krake-server ",
    env!("CARGO_PKG_VERSION"),
    ": the REST API is not implemented yet in this version"
);

/// The exit code of a binary that cannot do its job yet.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    eprintln!("{NOT_IMPLEMENTED}");
    ExitCode::from(EXIT_NOT_IMPLEMENTED)
}
