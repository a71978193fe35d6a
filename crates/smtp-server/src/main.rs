//! `smtp-server`: SMTP in and submission. See the library part.

use std::path::PathBuf;

use clap::Parser;

/// smtp-server's command line.
#[derive(Debug, Parser)]
#[command(name = "smtp-server", version, about = "Quicksilver's SMTP server")]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "smtp-server",
        qs_service::restart::Style::Successor,
        args.config.as_deref(),
        smtp_server::run,
    )
}
