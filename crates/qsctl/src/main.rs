//! `qsctl`: Quicksilver's console. See the library part for the commands.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = qsctl::Cli::parse();
    match qsctl::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One clear line (or a few, for a config with several errors).
            eprintln!("qsctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
