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
//! absolute paths.
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

mod reader;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use reader::{Problems, Section};

/// The commented default configuration, as `qsctl init` writes it.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The file name looked for in the current folder when nothing else is given.
pub const DEFAULT_FILE_NAME: &str = "quicksilver.toml";

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "QS_CONFIG";

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

/// `[log]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// Default log level filter.
    pub level: String,
}

/// `[restart]`: how a module hands over to a new process of itself (SIGHUP,
/// `qsctl restart`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestartConfig {
    /// Once the new process serves, how long the old one lets its sessions go
    /// on (POP3 sessions, IMAP sessions outside IDLE, SMTP sessions between
    /// transactions) before it closes them.
    pub grace_secs: u64,
    /// How long the old process waits for the new one to be ready; past it the
    /// new one is stopped and the old one keeps serving.
    pub ready_timeout_secs: u64,
}

/// `[tls]`: the certificate every TLS listener presents.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[directory]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DirectoryConfig {
    /// The directory's JSON file.
    pub file: PathBuf,
    /// The sub-address separator (`+` in `user+tag@domain`), if any.
    pub subaddress_separator: Option<char>,
    /// How long a successful login is remembered, so the same credentials
    /// again are not hashed again (0 = never).
    pub credentials_cache_secs: u64,
    /// The most successful logins remembered by each process (0 = none).
    pub credentials_cache_entries: u64,
}

/// `[queue]`: where the queue lives and how mail is retried.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueConfig {
    /// core-queue's Unix socket.
    pub socket: PathBuf,
    /// The sled database folder.
    pub store: PathBuf,
    /// Optional TCP listener of core-queue.
    pub tcp_listen: Option<SocketAddr>,
    /// Optional remote core-queue for the clients.
    pub tcp_connect: Option<SocketAddr>,
    /// File with the TCP shared secret.
    pub secret_file: Option<PathBuf>,
    /// Seconds a client retries while core-queue is unreachable.
    pub client_retry_secs: u64,
    /// Seconds before the first retry.
    pub first_retry_secs: u64,
    /// Longest interval between retries, in seconds.
    pub max_retry_interval_secs: u64,
    /// Age in seconds after which undelivered mail is bounced.
    pub give_up_after_secs: u64,
    /// Age in seconds at which a delay warning is sent (`None` = never).
    pub delay_warning_secs: Option<u64>,
    /// Copy every bounce to the postmaster.
    pub bounce_copy_to_postmaster: bool,
    /// The application drop folder.
    pub maildrop: PathBuf,
    /// Periodic scan interval of the drop folder, in seconds.
    pub maildrop_scan_secs: u64,
}

/// `[smtp_server]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SmtpServerConfig {
    /// Port-25 role listeners.
    pub listen: Vec<SocketAddr>,
    /// Submission (STARTTLS) listeners.
    pub submission: Vec<SocketAddr>,
    /// Submission over implicit TLS listeners.
    pub submissions: Vec<SocketAddr>,
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Networks allowed to relay without AUTH.
    pub relay_networks: Vec<IpNetwork>,
    /// Allow AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Recipients per message.
    pub max_recipients: u64,
    /// Recipients past `max_recipients` refused with 452 in one transaction
    /// before each further one counts as an error.
    pub max_recipient_overshoot: u64,
    /// Connections at once on the port-25 role listeners (`listen`).
    pub max_connections: u64,
    /// Connections at once on the submission listeners.
    pub submission_max_connections: u64,
    /// Connections at once on the submissions (implicit TLS) listeners.
    pub submissions_max_connections: u64,
    /// Connections from one address, all listeners together.
    pub max_connections_per_ip: u64,
    /// Errors per session before 421.
    pub max_errors: u64,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: u64,
    /// Longest session in seconds.
    pub session_timeout_secs: u64,
    /// Failed AUTH attempts per address before refusal.
    pub max_auth_failures: u64,
    /// Authenticated users may send only as their own addresses.
    pub enforce_sender: bool,
    /// Octets of a message body kept in memory while it arrives; past this
    /// it goes to a file in `<data_dir>/spool/smtp-server/`.
    pub spool_threshold: u64,
    /// The sender checks of the port-25 role (SPF, DKIM, DMARC, ARC, DNS
    /// blacklists, greylisting).
    pub checks: SenderChecksConfig,
}

/// `[smtp_server]`: the checks of mail arriving on the port-25 role from
/// clients that are neither authenticated nor in `relay_networks`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SenderChecksConfig {
    /// SPF, DKIM, DMARC and ARC are checked and written into an
    /// Authentication-Results field.
    pub enabled: bool,
    /// Clients that are not checked at all (besides `relay_networks`).
    pub unchecked_networks: Vec<IpNetwork>,
    /// SPF `fail` (`-all`) is refused (550 5.7.23) instead of marked.
    pub spf_fail_reject: bool,
    /// DMARC `p=reject` is refused with 550 5.7.1.
    pub dmarc_reject: bool,
    /// DMARC `p=quarantine` is delivered into the recipient's Junk folder.
    pub dmarc_quarantine: bool,
    /// DNS blacklist zones asked about the client's address at connect.
    pub dnsbl_zones: Vec<String>,
    /// The name server the checks ask (`None` = the system's).
    pub dns_server: Option<SocketAddr>,
    /// Seconds one DNS lookup may take.
    pub dns_timeout_secs: u64,
    /// Seconds all the checks of one message (or one MAIL FROM) may take.
    pub timeout_secs: u64,
    /// Octets of messages held in memory for DKIM at once, all sessions together.
    pub memory_limit: u64,
    /// Unknown (client /24, sender, recipient) triplets are refused for a while.
    pub greylisting: bool,
    /// Seconds an unknown triplet is refused (451 4.7.1) before it is let in.
    pub greylist_delay_secs: u64,
    /// Days without mail after which a triplet is forgotten.
    pub greylist_expiry_days: u64,
}

/// `[imap_server]` and `[pop3_server]`: a mail access protocol's listeners.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MailAccessConfig {
    /// Plain listeners (STARTTLS/STLS offered).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    pub tls_listen: Vec<SocketAddr>,
    /// Allow login without TLS.
    pub allow_plaintext_auth: bool,
    /// Connections at once on the plain listeners (`listen`).
    pub max_connections: u64,
    /// Connections at once on the implicit-TLS listeners (`tls_listen`).
    pub tls_max_connections: u64,
    /// Connections from one client address, all listeners together.
    pub max_connections_per_ip: u64,
    /// Seconds without a command before the session is closed (autologout).
    pub idle_timeout_secs: u64,
    /// Failed logins from one address (within 15 minutes) before it is refused.
    pub max_auth_failures: u64,
    /// Protocol errors in one session before it is closed.
    pub max_errors: u64,
}

/// `[imap_server]`: the limits only IMAP has.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImapLimits {
    /// Longest command line in octets, literals excluded.
    pub max_line_length: u64,
    /// Largest literal once logged in, in octets (APPENDLIMIT: the largest message).
    pub max_literal_size: u64,
    /// Octets a client may send before it has logged in.
    pub login_byte_budget: u64,
    /// Logged-in sessions at once of one user.
    pub max_connections_per_user: u64,
    /// An APPEND message literal larger than this, in octets, goes to a file
    /// in `<data_dir>/spool/imap-server/` instead of memory while it arrives.
    pub spool_threshold: u64,
    /// The longest LIST or LSUB reference and pattern together, in octets.
    pub max_list_pattern_length: u64,
    /// Search keys in one SEARCH (each OR, NOT and parenthesised list counts).
    pub max_search_keys: u64,
    /// How deep a SEARCH's groups may nest (a chain of ORs is one level).
    pub max_search_depth: u64,
}

/// How outgoing mail leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Everything through one smarthost.
    Smarthost,
    /// To each recipient domain's MX.
    Direct,
}

/// TLS towards a remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTls {
    /// STARTTLS, required: never fall back to plaintext.
    StartTls,
    /// TLS from the first byte.
    Implicit,
    /// No TLS.
    None,
}

impl ClientTls {
    fn from_name(name: &str) -> Self {
        match name {
            "implicit" => ClientTls::Implicit,
            "none" => ClientTls::None,
            _ => ClientTls::StartTls,
        }
    }
}

/// A password given in the file or in a file of its own. `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum PasswordSource {
    /// No password.
    #[default]
    None,
    /// Written in the config file.
    Inline(String),
    /// Read from this file (first line) when needed.
    File(PathBuf),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::None => f.write_str("None"),
            PasswordSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl PasswordSource {
    /// Reads the password (the first line of the file, without its line end).
    pub fn read(&self) -> std::io::Result<Option<String>> {
        match self {
            PasswordSource::None => Ok(None),
            PasswordSource::Inline(p) => Ok(Some(p.clone())),
            PasswordSource::File(path) => {
                let text = std::fs::read_to_string(path)?;
                Ok(Some(text.lines().next().unwrap_or("").to_string()))
            }
        }
    }
}

/// `[smtp_relay]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SmtpRelayConfig {
    /// Smarthost or direct delivery.
    pub mode: RelayMode,
    /// The smarthost, `host:port`.
    pub smarthost: String,
    /// TLS towards the smarthost.
    pub tls: ClientTls,
    /// Login at the smarthost (empty = no AUTH).
    pub username: String,
    /// Its password.
    pub password: PasswordSource,
    /// Verify certificates and names.
    pub tls_verify: bool,
    /// Extra CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Recipients per SMTP transaction.
    pub max_recipients_per_message: u64,
    /// SMTP connections (deliveries) at once, in all.
    pub max_connections: u64,
    /// SMTP connections at once to one destination.
    pub max_connections_per_host: u64,
    /// Seconds to wait for a connection and its greeting.
    pub connect_timeout_secs: u64,
    /// Seconds to wait for each reply (and to send the message).
    pub command_timeout_secs: u64,
    /// Seconds a host that could not be reached is skipped.
    pub down_period_secs: u64,
    /// Direct mode: the name server to ask (`None` = the system's).
    pub dns_server: Option<SocketAddr>,
    /// Direct mode: the port to connect to at each MX.
    pub mx_port: u16,
    /// Sign outgoing mail with DKIM when its From domain has a key.
    pub dkim: bool,
    /// The DKIM keys, `<domain>.<selector>.key` (absolute).
    pub dkim_dir: PathBuf,
}

/// `[pop_client]`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PopClientConfig {
    /// The remote mailboxes to fetch.
    pub accounts: Vec<PopAccount>,
}

/// One `[[pop_client.account]]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PopAccount {
    /// Name shown in logs and qsctl.
    pub name: String,
    /// The provider's POP3 host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// TLS mode.
    pub tls: ClientTls,
    /// Login.
    pub username: String,
    /// Password.
    pub password: PasswordSource,
    /// Seconds between polls.
    pub interval_secs: u64,
    /// Single-user mode: everything to this address.
    pub deliver_to: Option<String>,
    /// Where unmatched mail goes.
    pub default_user: String,
    /// Envelope headers read first, in order.
    pub headers: Vec<String>,
    /// Read only `headers`, not To/Cc/Received.
    pub only_listed_headers: bool,
    /// Leave mail on the provider's server.
    pub keep_on_server: bool,
    /// With keep_on_server: delete this many days after the first fetch (0 = never).
    pub delete_after_days: u64,
    /// Larger messages stay on the server.
    pub max_message_size: u64,
    /// Extra CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Verify certificates and names.
    pub tls_verify: bool,
    /// Longest wait for the server (connect, TLS, each reply or piece of a message).
    pub timeout_secs: u64,
    /// A failure lasting this long is reported to the postmaster (once, and
    /// again when it clears).
    pub report_failure_after_secs: u64,
}

/// `[list_server]`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListServerConfig {
    /// The web page's listener.
    pub web_listen: SocketAddr,
    /// The page's public address, for links in mail.
    pub web_url: String,
    /// Bounces that suspend a member.
    pub bounce_threshold: u32,
    /// Days a held post waits for a moderator before it is dropped.
    pub hold_expiry_days: u64,
    /// Days a subscription confirmation link or token stays valid.
    pub confirm_expiry_days: u64,
    /// Days the one-click unsubscribe link of a post stays valid.
    pub unsubscribe_link_days: u64,
    /// Open connections to the web page at once, from everyone.
    pub web_max_connections: u64,
    /// Open connections to the web page at once from one client address.
    pub web_max_connections_per_ip: u64,
    /// Seconds a request's line and header fields may take to arrive, all of them.
    pub web_head_timeout_secs: u64,
    /// Seconds a connection may wait for its next request.
    pub web_idle_timeout_secs: u64,
    /// Seconds a request may take from its head to the answer (its body included).
    pub web_request_timeout_secs: u64,
    /// The largest request body, in bytes.
    pub web_max_body_bytes: u64,
    /// Seconds a subscription form stays valid after it was shown.
    pub web_form_expiry_secs: u64,
    /// Seconds after a confirmation mail during which no other goes to the
    /// same address for the same list.
    pub confirm_window_secs: u64,
    /// Subscription requests on the web page per client address per hour.
    pub web_requests_per_ip_per_hour: u64,
}

/// An IP network in CIDR notation, e.g. `192.168.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// True when `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("\"{s}\" is not a network (e.g. 192.168.1.0/24 or 10.0.0.7)");
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
        };
        if prefix > max {
            return Err(format!("\"{s}\": prefix length {prefix} is over {max}"));
        }
        Ok(IpNetwork { addr, prefix })
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
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
    let data = |p: PathBuf| data_dir.join(p);

    let log = root.section("log");
    let log_config = LogConfig {
        level: log.choice(
            "level",
            "info",
            &["error", "warn", "info", "debug", "trace"],
        ),
    };
    log.finish();

    let restart = root.section("restart");
    let restart_config = RestartConfig {
        grace_secs: restart.number("grace_secs", 30, 0, 3600),
        ready_timeout_secs: restart.number("ready_timeout_secs", 60, 1, 3600),
    };
    restart.finish();

    let tls = root.section("tls");
    let tls_config = TlsConfig {
        cert: data(tls.path("cert", "tls/cert.pem")),
        key: data(tls.path("key", "tls/key.pem")),
    };
    tls.finish();

    let dir = root.section("directory");
    let separator = dir.string("subaddress_separator", "+");
    let mut chars = separator.chars();
    let subaddress_separator = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) if c.is_ascii_punctuation() && c != '@' && c != '"' => Some(c),
        _ => {
            dir.problem(
                "subaddress_separator",
                format!("\"{separator}\" must be one punctuation character (not @ or \"), or \"\""),
            );
            Some('+')
        }
    };
    let directory = DirectoryConfig {
        file: data(dir.path("file", "directory.json")),
        subaddress_separator,
        credentials_cache_secs: dir.number("credentials_cache_secs", 600, 0, 86_400),
        credentials_cache_entries: dir.number("credentials_cache_entries", 1024, 0, 1_000_000),
    };
    dir.finish();

    let q = root.section("queue");
    let day = 86_400;
    let queue = QueueConfig {
        socket: data(q.path("socket", "run/queue.sock")),
        store: data(q.path("store", "queue")),
        tcp_listen: q.socket_addr("tcp_listen", ""),
        tcp_connect: q.socket_addr("tcp_connect", ""),
        secret_file: q.optional_path("secret_file").map(data),
        client_retry_secs: q.number("client_retry_secs", 30, 1, 3600),
        first_retry_secs: q.number("first_retry_secs", 300, 1, day),
        max_retry_interval_secs: q.number("max_retry_interval_secs", 3600, 1, day),
        give_up_after_secs: q.number("give_up_after_secs", 5 * day, 60, 60 * day),
        delay_warning_secs: match q.number("delay_warning_secs", 4 * 3600, 0, 60 * day) {
            0 => None,
            n => Some(n),
        },
        bounce_copy_to_postmaster: q.bool("bounce_copy_to_postmaster", true),
        maildrop: data(q.path("maildrop", "maildrop")),
        maildrop_scan_secs: q.number("maildrop_scan_secs", 10, 1, 3600),
    };
    if (queue.tcp_listen.is_some() || queue.tcp_connect.is_some()) && queue.secret_file.is_none() {
        q.problem(
            "secret_file",
            "the TCP transport (tcp_listen or tcp_connect) needs a shared secret file",
        );
    }
    q.finish();

    let s = root.section("smtp_server");
    let smtp_server = SmtpServerConfig {
        listen: s.socket_addrs("listen", &["127.0.0.1:2525"]),
        submission: s.socket_addrs("submission", &["127.0.0.1:5587"]),
        submissions: s.socket_addrs("submissions", &["127.0.0.1:5465"]),
        max_message_size: s.number("max_message_size", 26_214_400, 1024, 1 << 30),
        relay_networks: s.networks("relay_networks"),
        allow_plaintext_auth: s.bool("allow_plaintext_auth", false),
        max_recipients: s.number("max_recipients", 100, 1, 100_000),
        max_recipient_overshoot: s.number("max_recipient_overshoot", 1000, 0, 1_000_000),
        max_connections: s.number("max_connections", 200, 1, 1_000_000),
        submission_max_connections: s.number("submission_max_connections", 100, 1, 1_000_000),
        submissions_max_connections: s.number("submissions_max_connections", 100, 1, 1_000_000),
        max_connections_per_ip: s.number("max_connections_per_ip", 20, 1, 1_000_000),
        max_errors: s.number("max_errors", 10, 1, 1000),
        idle_timeout_secs: s.number("idle_timeout_secs", 300, 1, day),
        session_timeout_secs: s.number("session_timeout_secs", 1800, 1, day),
        max_auth_failures: s.number("max_auth_failures", 5, 1, 1000),
        enforce_sender: s.bool("enforce_sender", true),
        spool_threshold: s.number("spool_threshold", 1_048_576, 0, 1 << 30),
        checks: SenderChecksConfig {
            enabled: s.bool("check_senders", true),
            unchecked_networks: s.networks_or("unchecked_networks", &["127.0.0.0/8", "::1/128"]),
            spf_fail_reject: s.bool("spf_fail_reject", false),
            dmarc_reject: s.bool("dmarc_reject", true),
            dmarc_quarantine: s.bool("dmarc_quarantine", true),
            dnsbl_zones: s.string_list("dnsbl_zones", &[]),
            dns_server: s.socket_addr("dns_server", ""),
            dns_timeout_secs: s.number("dns_timeout_secs", 5, 1, 60),
            timeout_secs: s.number("check_timeout_secs", 30, 1, 600),
            memory_limit: s.number("check_memory_limit", 67_108_864, 1_048_576, 1 << 34),
            greylisting: s.bool("greylisting", false),
            greylist_delay_secs: s.number("greylist_delay_secs", 300, 1, day),
            greylist_expiry_days: s.number("greylist_expiry_days", 35, 1, 3650),
        },
    };
    for (i, zone) in smtp_server.checks.dnsbl_zones.iter().enumerate() {
        if !is_host_name(zone) {
            s.problem(
                &format!("dnsbl_zones[{i}]"),
                format!("\"{zone}\" is not a DNS zone name (e.g. zen.spamhaus.org)"),
            );
        }
    }
    s.finish();

    // RFC 3501 asks for an autologout of at least 30 minutes, RFC 1939 of 10.
    let (imap_server, i) = read_access(
        root,
        "imap_server",
        "127.0.0.1:1143",
        "127.0.0.1:1993",
        1800,
    );
    let imap_limits = ImapLimits {
        max_line_length: i.number("max_line_length", 65_536, 1024, 1 << 24),
        max_literal_size: i.number(
            "max_literal_size",
            26_214_400,
            1024,
            u64::from(u32::MAX >> 2),
        ),
        login_byte_budget: i.number("login_byte_budget", 65_536, 1024, 1 << 24),
        max_connections_per_user: i.number("max_connections_per_user", 20, 1, 1_000_000),
        spool_threshold: i.number("spool_threshold", 1_048_576, 0, 1 << 30),
        max_list_pattern_length: i.number("max_list_pattern_length", 1024, 64, 65_536),
        max_search_keys: i.number("max_search_keys", 1000, 16, 100_000),
        // The search is evaluated recursively, one stack frame per level.
        max_search_depth: i.number("max_search_depth", 64, 8, 1000),
    };
    i.finish();
    let (pop3_server, p3) =
        read_access(root, "pop3_server", "127.0.0.1:1110", "127.0.0.1:1995", 600);
    p3.finish();

    let r = root.section("smtp_relay");
    let smtp_relay = SmtpRelayConfig {
        mode: match r
            .choice("mode", "smarthost", &["smarthost", "direct"])
            .as_str()
        {
            "direct" => RelayMode::Direct,
            _ => RelayMode::Smarthost,
        },
        smarthost: r.string("smarthost", "127.0.0.1:2626"),
        tls: ClientTls::from_name(&r.choice("tls", "starttls", &["starttls", "implicit", "none"])),
        username: r.string("username", ""),
        password: read_password(&r, &data_dir),
        tls_verify: r.bool("tls_verify", true),
        tls_ca_file: r.optional_path("tls_ca_file").map(data),
        max_recipients_per_message: r.number("max_recipients_per_message", 50, 1, 10_000),
        max_connections: r.number("max_connections", 20, 1, 10_000),
        max_connections_per_host: r.number("max_connections_per_host", 10, 1, 10_000),
        connect_timeout_secs: r.number("connect_timeout_secs", 30, 1, 3600),
        command_timeout_secs: r.number("command_timeout_secs", 300, 1, 3600),
        down_period_secs: r.number("down_period_secs", 60, 0, 86_400),
        dns_server: r.socket_addr("dns_server", ""),
        mx_port: u16::try_from(r.number("mx_port", 25, 1, 65_535)).unwrap_or(25),
        dkim: r.bool("dkim", true),
        dkim_dir: data(r.path("dkim_dir", "dkim")),
    };
    if split_host_port(&smtp_relay.smarthost).is_none() {
        r.problem(
            "smarthost",
            format!(
                "\"{}\" is not host:port (e.g. smtp.provider.example:587)",
                smtp_relay.smarthost
            ),
        );
    }
    r.finish();

    let p = root.section("pop_client");
    let mut accounts: Vec<PopAccount> = Vec::new();
    for account in p.tables("account") {
        let parsed = read_pop_account(account, &data_dir);
        if accounts.iter().any(|a| a.name == parsed.name) {
            p.problem(
                "account",
                format!("two accounts are named \"{}\"", parsed.name),
            );
        }
        accounts.push(parsed);
    }
    p.finish();

    let l = root.section("list_server");
    let list_server = ListServerConfig {
        web_listen: l
            .socket_addr("web_listen", "127.0.0.1:8025")
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8025))),
        web_url: l
            .string("web_url", "http://127.0.0.1:8025")
            .trim_end_matches('/')
            .to_string(),
        bounce_threshold: u32::try_from(l.number("bounce_threshold", 5, 1, 1000)).unwrap_or(5),
        hold_expiry_days: l.number("hold_expiry_days", 14, 1, 365),
        confirm_expiry_days: l.number("confirm_expiry_days", 7, 1, 90),
        unsubscribe_link_days: l.number("unsubscribe_link_days", 90, 1, 3650),
        web_max_connections: l.number("web_max_connections", 256, 1, 1_000_000),
        web_max_connections_per_ip: l.number("web_max_connections_per_ip", 16, 1, 1_000_000),
        web_head_timeout_secs: l.number("web_head_timeout_secs", 10, 1, 300),
        web_idle_timeout_secs: l.number("web_idle_timeout_secs", 10, 1, 3600),
        web_request_timeout_secs: l.number("web_request_timeout_secs", 30, 1, 3600),
        web_max_body_bytes: l.number("web_max_body_bytes", 16_384, 1024, 1 << 20),
        web_form_expiry_secs: l.number("web_form_expiry_secs", 86_400, 60, 30 * day),
        confirm_window_secs: l.number("confirm_window_secs", 3600, 1, 30 * day),
        web_requests_per_ip_per_hour: l.number("web_requests_per_ip_per_hour", 20, 1, 1_000_000),
    };
    if !(list_server.web_url.starts_with("http://") || list_server.web_url.starts_with("https://"))
    {
        l.problem("web_url", "must start with http:// or https://");
    }
    l.finish();

    root.finish();

    Config {
        file,
        hostname,
        data_dir,
        log: log_config,
        restart: restart_config,
        tls: tls_config,
        directory,
        queue,
        smtp_server,
        imap_server,
        imap_limits,
        pop3_server,
        smtp_relay,
        pop_client: PopClientConfig { accounts },
        list_server,
    }
}

/// The keys IMAP and POP3 share; the section is returned unfinished, for the keys
/// only one of them has.
fn read_access<'a>(
    root: &Section<'a>,
    name: &str,
    plain: &str,
    tls: &str,
    idle_timeout_secs: u64,
) -> (MailAccessConfig, Section<'a>) {
    let s = root.section(name);
    let config = MailAccessConfig {
        listen: s.socket_addrs("listen", &[plain]),
        tls_listen: s.socket_addrs("tls_listen", &[tls]),
        allow_plaintext_auth: s.bool("allow_plaintext_auth", false),
        max_connections: s.number("max_connections", 200, 1, 1_000_000),
        tls_max_connections: s.number("tls_max_connections", 200, 1, 1_000_000),
        max_connections_per_ip: s.number("max_connections_per_ip", 20, 1, 1_000_000),
        idle_timeout_secs: s.number(
            "idle_timeout_secs",
            idle_timeout_secs,
            idle_timeout_secs,
            86_400,
        ),
        max_auth_failures: s.number("max_auth_failures", 10, 1, 1000),
        max_errors: s.number("max_errors", 10, 1, 1000),
    };
    (config, s)
}

fn read_password(s: &Section<'_>, data_dir: &Path) -> PasswordSource {
    let inline = s.string("password", "");
    let file = s.optional_path("password_file");
    match (inline.is_empty(), file) {
        (true, None) => PasswordSource::None,
        (false, None) => PasswordSource::Inline(inline),
        (true, Some(path)) => PasswordSource::File(data_dir.join(path)),
        (false, Some(_)) => {
            s.problem(
                "password_file",
                "give either password or password_file, not both",
            );
            PasswordSource::Inline(inline)
        }
    }
}

fn read_pop_account(mut a: Section<'_>, data_dir: &Path) -> PopAccount {
    let name = a.string("name", "");
    if name.is_empty() {
        a.problem("name", "every account needs a name");
    } else {
        // From here on, problems name the account rather than its position.
        a.rename(format!("pop_client.account \"{name}\""));
    }
    let host = a.string("host", "");
    if host.is_empty() {
        a.problem("host", "missing: the provider's POP3 server name");
    }
    let tls = ClientTls::from_name(&a.choice("tls", "implicit", &["implicit", "starttls", "none"]));
    let default_port = if tls == ClientTls::Implicit { 995 } else { 110 };
    let username = a.string("username", "");
    if username.is_empty() {
        a.problem("username", "missing: the login at the provider");
    }
    let password = read_password(&a, data_dir);
    if password == PasswordSource::None {
        a.problem("password", "missing: give password or password_file");
    }
    let deliver_to = a.string("deliver_to", "");
    let default_user = a.string("default_user", "");
    let check_address = |key: &str, value: &str| {
        if !value.is_empty() && !looks_like_address(value) {
            a.problem(key, format!("\"{value}\" is not an address (user@domain)"));
        }
    };
    check_address("deliver_to", &deliver_to);
    check_address("default_user", &default_user);
    let account = PopAccount {
        port: a.number("port", default_port, 1, 65535) as u16,
        interval_secs: a.number("interval_secs", 200, 10, 86_400),
        deliver_to: (!deliver_to.is_empty()).then_some(deliver_to),
        default_user,
        headers: a.string_list(
            "headers",
            &[
                "Delivered-To",
                "X-Original-To",
                "X-Envelope-To",
                "Envelope-To",
            ],
        ),
        only_listed_headers: a.bool("only_listed_headers", false),
        keep_on_server: a.bool("keep_on_server", false),
        delete_after_days: a.number("delete_after_days", 0, 0, 36_500),
        max_message_size: a.number("max_message_size", 52_428_800, 1024, 1 << 31),
        tls_ca_file: a.optional_path("tls_ca_file").map(|p| data_dir.join(p)),
        tls_verify: a.bool("tls_verify", true),
        timeout_secs: a.number("timeout_secs", 60, 1, 3600),
        report_failure_after_secs: a.number("report_failure_after_secs", 86_400, 1, 31_536_000),
        name,
        host,
        tls,
        username,
        password,
    };
    a.finish();
    account
}

/// Splits `host:port` (or `[v6]:port`), checking the port.
pub fn split_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

fn looks_like_address(text: &str) -> bool {
    match text.rsplit_once('@') {
        Some((local, domain)) => !local.is_empty() && is_host_name(domain),
        None => false,
    }
}

fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests;
