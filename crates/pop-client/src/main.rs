//! `pop-client`: fetches the provider's POP3 mailboxes. See the library part.

use std::path::PathBuf;

use clap::Parser;

/// pop-client's command line.
#[derive(Debug, Parser)]
#[command(
    name = "pop-client",
    version,
    about = "Quicksilver's POP3 client (MercuryD)"
)]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "pop-client",
        qs_service::restart::Style::InPlace,
        args.config.as_deref(),
        pop_client::run,
    )
}
