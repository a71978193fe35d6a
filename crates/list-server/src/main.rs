//! `list-server`: mailing lists and their web page.
//! See the library part.

use std::path::PathBuf;

use clap::Parser;

/// list-server's command line.
#[derive(Debug, Parser)]
#[command(name = "list-server", version, about = "Quicksilver's list server")]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "list-server",
        qs_service::restart::Style::Successor,
        args.config.as_deref(),
        list_server::run,
    )
}
