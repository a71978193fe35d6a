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
    let config = match qs_config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("core-queue: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    qs_service::logging::init("core-queue", &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("core-queue: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = qs_service::shutdown::on_signals().map_err(|e| e.to_string())?;
        core_queue::run(config, shutdown)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("core-queue: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
