//! `[log]`: the log level.

use crate::reader::Section;

/// `[log]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// Default log level filter.
    pub level: String,
}

/// Reads `[log]`.
pub(crate) fn read(root: &Section<'_>) -> LogConfig {
    let log = root.section("log");
    let config = LogConfig {
        level: log.choice(
            "level",
            "info",
            &["error", "warn", "info", "debug", "trace"],
        ),
    };
    log.finish();
    config
}
