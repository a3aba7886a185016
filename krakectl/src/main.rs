//! `krakectl`: the command line tool of krake-rs (see the library's
//! documentation; the parser is `krakectl::cli::command`).

use std::process::ExitCode;

fn main() -> ExitCode {
    krakectl::main()
}
