//! The `main` every daemon shares: load the config (exit status 2 with the
//! file, key and reason when it is wrong), set up logging, run the daemon under
//! a runtime with the stop and restart signals, and, for an in-place restart,
//! start the new program once everything is closed.

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::restart::{Restart, Style};
use crate::shutdown::Shutdown;

/// After `serve` returns, how long blocking work still running may take to finish
/// before the process goes on without it.
const ABANDON_BLOCKING_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Every daemon's command line: only where its config is.
#[derive(Debug, clap::Parser)]
struct DaemonArgs {
    /// The config file (default: $QS_CONFIG, else ./quicksilver.toml).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// A daemon's whole `main`: parses its command line (`--config PATH`,
/// `--help` with `about`, `--version`), then runs it as [`main`] does.
pub fn from_command_line<F, Fut, E>(
    module: &'static str,
    about: &'static str,
    style: Style,
    serve: F,
) -> ExitCode
where
    F: FnOnce(qs_config::Config, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = DaemonArgs::command()
        .name(module)
        .bin_name(module)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let args = match DaemonArgs::from_arg_matches(&command.get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    main(module, style, args.config.as_deref(), serve)
}

/// Runs daemon `module` with the config at `config_path` (or the default
/// place): `serve` runs until its [`Shutdown`] fires and everything is closed.
pub fn main<F, Fut, E>(module: &str, style: Style, config_path: Option<&Path>, serve: F) -> ExitCode
where
    F: FnOnce(qs_config::Config, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let config = match qs_config::Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{module}: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(module, &config.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{module}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let restart = Restart::new(module, style, &config);
    let result = runtime.block_on(async {
        let shutdown = crate::restart::on_signals(restart)
            .map_err(|e| format!("cannot handle signals: {e}"))?;
        serve(config, shutdown).await.map_err(|e| format!("{e:#}"))
    });
    // Every task, socket and database is closed before a new program starts. `serve`
    // has given its sessions their drain time; blocking work still running after it
    // (a session stuck in a long command) is abandoned, not waited for: dropping the
    // runtime would wait for it without end, and a stop would need SIGKILL.
    let stopping = std::time::Instant::now();
    runtime.shutdown_timeout(ABANDON_BLOCKING_AFTER);
    if stopping.elapsed() >= ABANDON_BLOCKING_AFTER {
        tracing::warn!("stopping with blocking work still under way (abandoned)");
    }
    if let Err(e) = result {
        eprintln!("{module}: {e}");
        return ExitCode::FAILURE;
    }
    match crate::restart::exec_if_requested() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{module}: restart: {e}");
            ExitCode::FAILURE
        }
    }
}
