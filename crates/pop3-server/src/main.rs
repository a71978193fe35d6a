//! `pop3-server`: POP3 for local users. See the library part.

use std::path::PathBuf;

use clap::Parser;

/// pop3-server's command line.
#[derive(Debug, Parser)]
#[command(
    name = "pop3-server",
    version,
    about = "Quicksilver's POP3 server (MercuryP)"
)]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "pop3-server",
        qs_service::restart::Style::Successor,
        args.config.as_deref(),
        pop3_server::run,
    )
}
