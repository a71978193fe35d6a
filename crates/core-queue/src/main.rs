//! `core-queue`: owns the queue, routes and delivers. See the library part.

use std::path::PathBuf;

use clap::Parser;

/// core-queue's command line.
#[derive(Debug, Parser)]
#[command(
    name = "core-queue",
    version,
    about = "Quicksilver's queue and local delivery"
)]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "core-queue",
        qs_service::restart::Style::InPlace,
        args.config.as_deref(),
        core_queue::run,
    )
}
