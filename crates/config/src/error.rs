//! What goes wrong when the file is loaded: the file-level errors, and the
//! problems of single keys, each with its key path.

use std::fmt;
use std::path::PathBuf;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file does not exist.
    #[error(
        "config file {} not found (run `qsctl init` to create one, or pass --config PATH / set QS_CONFIG)",
        path.display()
    )]
    NotFound {
        /// The path that was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Unreadable {
        /// The config file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file is valid TOML but some keys are wrong.
    #[error("config file {}: {}", path.display(), list_problems(errors))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found, in file order.
        errors: Vec<KeyError>,
    },
}

fn list_problems(errors: &[KeyError]) -> String {
    let mut out = format!(
        "{} error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    out
}

/// One problem in the file, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted key path, e.g. `smtp_server.listen[1]`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
