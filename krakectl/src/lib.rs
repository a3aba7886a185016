//! `krakectl`: the command line tool of krake-rs, built on `krake-client`.
//!
//! It has Krake's command tree (`kube app|cluster`, `infra …`, `core …`,
//! `os …`) with Krake's aliases, flags, configuration search path and
//! tables, generated from the kind registry, plus `core role` and
//! `core rolebinding`, `-A/--all-namespaces`, `-l` label selectors on lists,
//! `watch` commands, shell completions and `-o table|wide|json|yaml`.
//!
//! Exit codes: 0 on success, 1 when the API answers an error (its problem
//! body is printed) or cannot be reached, 2 for bad flags (with clap's usage).

mod body;
mod catalog;
pub mod cli;
mod config;
mod error;
mod output;
mod run;
mod table;
mod wait;

use std::process::ExitCode;

/// The whole program: parses the command line, runs the command and answers
/// the exit code.
pub fn main() -> ExitCode {
    let mut command = cli::command();
    let matches = command.clone().get_matches();
    if let Some(shell) = matches.get_one::<String>("print-completion") {
        if shell == "tcsh" {
            print!("{}", cli::tcsh_completion(&command));
            return ExitCode::SUCCESS;
        }
        return match shell.parse::<clap_complete::Shell>() {
            Ok(shell) => {
                clap_complete::generate(shell, &mut command, "krakectl", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("krakectl: --print-completion {shell}: {err}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(("completion", sub)) = matches.subcommand() {
        if let Some(shell) = sub.get_one::<clap_complete::Shell>("shell") {
            clap_complete::generate(*shell, &mut command, "krakectl", &mut std::io::stdout());
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("krakectl: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run::run(&matches)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", run::describe_error(&err));
            ExitCode::from(err.exit_code())
        }
    }
}
