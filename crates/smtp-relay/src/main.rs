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
    let config = match qs_config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("smtp-relay: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    qs_service::logging::init("smtp-relay", &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("smtp-relay: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = qs_service::shutdown::on_signals().map_err(|e| e.to_string())?;
        smtp_relay::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtp-relay: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
