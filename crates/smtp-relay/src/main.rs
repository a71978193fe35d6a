//! `smtp-relay`: outgoing mail, through a smarthost or to each domain's MX.
//! See the library part.

use std::path::PathBuf;

use clap::Parser;

/// smtp-relay's command line.
#[derive(Debug, Parser)]
#[command(name = "smtp-relay", version, about = "Quicksilver's SMTP relay")]
struct Args {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    qs_service::daemon::main(
        "smtp-relay",
        qs_service::restart::Style::InPlace,
        args.config.as_deref(),
        smtp_relay::run,
    )
}
