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
    let config = match qs_config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pop-client: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    qs_service::logging::init("pop-client", &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pop-client: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = qs_service::shutdown::on_signals().map_err(|e| e.to_string())?;
        pop_client::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pop-client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
