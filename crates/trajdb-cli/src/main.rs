//! `trajdb`: the command-line tool. Parses arguments, runs the command and maps the result
//! to an exit code: 0 ok, 1 error (one line on stderr), 2 usage (from clap).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trajdb: error: {e}");
            ExitCode::from(1)
        }
    }
}
