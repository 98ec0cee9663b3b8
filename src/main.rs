//! The `pulsewatch` binary: parse flags, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use pulsewatch::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("pulsewatch: {err:#}");
            ExitCode::from(cli::EXIT_FAILURE)
        }
    }
}
