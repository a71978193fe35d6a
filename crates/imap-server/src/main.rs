//! `imap-server`: IMAP for local users. See the library part.

use std::path::PathBuf;

use clap::Parser;

/// imap-server's command line.
#[derive(Debug, Parser)]
#[command(
    name = "imap-server",
    version,
    about = "Quicksilver's IMAP server (MercuryI)"
)]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "imap-server",
        qs_service::restart::Style::Successor,
        args.config.as_deref(),
        imap_server::run,
    )
}
