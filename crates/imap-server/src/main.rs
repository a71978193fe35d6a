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

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let config = match qs_config::Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("imap-server: {e}");
            return Ok(std::process::ExitCode::from(2));
        }
    };
    qs_service::logging::init(imap_server::MODULE, &config.log.level);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let shutdown = qs_service::shutdown::on_signals()?;
        imap_server::run(config, shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
