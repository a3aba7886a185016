//! `krakectl`: the krake-rs command line tool for Krake's REST API, built on
//! `krake-client` (create, get, list, update and delete of every kind from
//! YAML or JSON manifests).
//!
//! **Not built yet.** The roadmap's *client + krakectl* step builds it; until
//! then this binary prints one line saying so and exits with code 2.

use std::process::ExitCode;

/// The line printed while the CLI is not implemented.
const NOT_IMPLEMENTED: &str = concat!(
    "krakectl ",
    env!("CARGO_PKG_VERSION"),
    ": the CLI is not implemented yet in this version"
);

/// The exit code of a binary that cannot do its job yet.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    eprintln!("{NOT_IMPLEMENTED}");
    ExitCode::from(EXIT_NOT_IMPLEMENTED)
}
