//! qs-config — Quicksilver's one configuration file, typed and validated.
//!
//! # Description
//! Every Quicksilver binary reads the same TOML file. Its location is, in order:
//! the `--config PATH` argument, the `QS_CONFIG` environment variable, then
//! `./quicksilver.toml`. Every key is optional and takes the default shown in
//! [`DEFAULT_CONFIG`] (the commented file that `qsctl init` writes), so a file with
//! any subset of keys loads, and the defaults run out of the box on loopback ports.
//!
//! `data_dir` is relative to the config file's folder; every other path is
//! relative to `data_dir`. The values returned here are already resolved to
//! absolute paths, and typed: a `*_secs` or `*_days` key is a
//! [`std::time::Duration`], a count or a size the integer type its daemon uses
//! (`usize` for memory and connections, `u32`, `u16` for ports). The defaults
//! are here only; the daemons take them from [`Config`], never repeat them.
//!
//! Each section has a module of its own (`smtp_server`, `imap_server`,
//! `queue` …) holding its type and its reader; `mail_access` holds what
//! `[imap_server]` and `[pop3_server]` share, `values` the value types several
//! sections use, and `reader` the walk over the TOML document that every reader
//! goes through. Every type is re-exported here.
//!
//! # Errors
//! Unknown keys, values of the wrong type, out-of-range numbers and malformed
//! addresses are all errors. The loader collects *every* problem with its key path
//! (`smtp_server.listen[1]: "x" is not a socket address ...`) and returns them
//! together, so the program can print them all and refuse to start; it never falls
//! back silently.
//!
//! # Security
//! Secrets (the relay and POP account passwords) may be written in the file or,
//! better, in a separate file named by `password_file`; [`Config::readable_by_others`]
//! lets a daemon warn when a file holding passwords is readable by other users.

mod directory;
mod error;
mod imap_server;
mod list_server;
mod log;
mod mail_access;
mod pop3_server;
mod pop_client;
mod queue;
mod reader;
mod restart;
mod smtp_relay;
mod smtp_server;
mod tls;
mod values;

use std::path::{Path, PathBuf};

use reader::{Problems, Section};
use values::is_host_name;

pub use directory::DirectoryConfig;
pub use error::{ConfigError, KeyError};
pub use imap_server::ImapLimits;
pub use list_server::ListServerConfig;
pub use log::LogConfig;
pub use mail_access::MailAccessConfig;
pub use pop_client::{PopAccount, PopClientConfig};
pub use queue::QueueConfig;
pub use restart::RestartConfig;
pub use smtp_relay::{RelayMode, SmtpRelayConfig};
pub use smtp_server::{SenderChecksConfig, SmtpServerConfig};
pub use tls::TlsConfig;
pub use values::{ClientTls, IpNetwork, PasswordSource, split_host_port};

/// The commented default configuration, as `qsctl init` writes it.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The file name looked for in the current folder when nothing else is given.
pub const DEFAULT_FILE_NAME: &str = "quicksilver.toml";

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "QS_CONFIG";

/// The whole configuration, with every path resolved.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The file this was loaded from (absolute), or the one it would be written to.
    pub file: PathBuf,
    /// The server's host name.
    pub hostname: String,
    /// The data folder (absolute).
    pub data_dir: PathBuf,
    /// `[log]`.
    pub log: LogConfig,
    /// `[restart]`.
    pub restart: RestartConfig,
    /// `[tls]`.
    pub tls: TlsConfig,
    /// `[directory]`.
    pub directory: DirectoryConfig,
    /// `[queue]`.
    pub queue: QueueConfig,
    /// `[smtp_server]`.
    pub smtp_server: SmtpServerConfig,
    /// `[imap_server]`.
    pub imap_server: MailAccessConfig,
    /// `[imap_server]`: the keys only IMAP has.
    pub imap_limits: ImapLimits,
    /// `[pop3_server]`.
    pub pop3_server: MailAccessConfig,
    /// `[smtp_relay]`.
    pub smtp_relay: SmtpRelayConfig,
    /// `[pop_client]`.
    pub pop_client: PopClientConfig,
    /// `[list_server]`.
    pub list_server: ListServerConfig,
}

impl Config {
    /// Finds the config file: `explicit`, else `$QS_CONFIG`, else `./quicksilver.toml`.
    pub fn locate(explicit: Option<&Path>) -> PathBuf {
        if let Some(path) = explicit {
            return path.to_path_buf();
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_FILE_NAME),
        }
    }

    /// Locates and loads the config file.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_file(&Config::locate(explicit))
    }

    /// Loads and validates the file at `path`.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(ConfigError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Config::parse(&text, path)
    }

    /// Parses config text as if it had been read from `path` (which anchors
    /// `data_dir`; the file itself is not read).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string().trim_end().replace('\n', " "),
                })?;
        let problems = Problems::default();
        let config = read_config(&Section::root(&table, &problems), path);
        let errors = problems.into_inner();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                errors,
            })
        }
    }

    /// The built-in defaults, as if `DEFAULT_CONFIG` were written at `path`.
    pub fn defaults_at(path: &Path) -> Config {
        let problems = Problems::default();
        let empty = toml::Table::new();
        read_config(&Section::root(&empty, &problems), path)
    }

    /// The directory file's lock and other per-data-dir paths start here.
    pub fn data_path(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// True when the config file holds a password and other users may read it.
    pub fn readable_by_others(&self) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let holds_password = matches!(self.smtp_relay.password, PasswordSource::Inline(_))
            || self
                .pop_client
                .accounts
                .iter()
                .any(|a| matches!(a.password, PasswordSource::Inline(_)));
        holds_password
            && std::fs::metadata(&self.file).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
}

/// Makes `path` absolute against the current folder without touching the disk.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn read_config(root: &Section<'_>, file: &Path) -> Config {
    let file = absolute(file);
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let hostname = root.string("hostname", "mail.example.test");
    if !is_host_name(&hostname) {
        root.problem("hostname", format!("\"{hostname}\" is not a host name"));
    }
    let data_dir = base.join(root.path("data_dir", "var"));

    let log = log::read(root);
    let restart = restart::read(root);
    let tls = tls::read(root, &data_dir);
    let directory = directory::read(root, &data_dir);
    let queue = queue::read(root, &data_dir);
    let smtp_server = smtp_server::read(root);
    let (imap_server, imap_limits) = imap_server::read(root);
    let pop3_server = pop3_server::read(root);
    let smtp_relay = smtp_relay::read(root, &data_dir);
    let pop_client = pop_client::read(root, &data_dir);
    let list_server = list_server::read(root);
    root.finish();

    Config {
        file,
        hostname,
        data_dir,
        log,
        restart,
        tls,
        directory,
        queue,
        smtp_server,
        imap_server,
        imap_limits,
        pop3_server,
        smtp_relay,
        pop_client,
        list_server,
    }
}

#[cfg(test)]
mod tests;
