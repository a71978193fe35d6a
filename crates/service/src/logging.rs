//! Logging set-up: one format for every module, the level from the config,
//! `RUST_LOG` overriding it.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber writing to standard error. `level` is the
/// config's `[log] level`; `RUST_LOG`, when set, wins. Calling it twice is harmless.
pub fn init(module: &str, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    tracing::debug!(module, "logging started");
}
