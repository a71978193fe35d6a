//! `[smtp_relay]`: how outgoing mail leaves.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reader::Section;
use crate::values::{ClientTls, PasswordSource, read_password, split_host_port};

/// How outgoing mail leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Everything through one smarthost.
    Smarthost,
    /// To each recipient domain's MX.
    Direct,
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
    pub max_recipients_per_message: usize,
    /// SMTP connections (deliveries) at once, in all.
    pub max_connections: usize,
    /// SMTP connections at once to one destination.
    pub max_connections_per_host: usize,
    /// How long to wait for a connection and its greeting (`connect_timeout_secs`).
    pub connect_timeout: Duration,
    /// How long to wait for each reply, and to send the message (`command_timeout_secs`).
    pub command_timeout: Duration,
    /// How long a host that could not be reached is skipped (`down_period_secs`).
    pub down_period: Duration,
    /// Direct mode: the name server to ask (`None` = the system's).
    pub dns_server: Option<SocketAddr>,
    /// Direct mode: the port to connect to at each MX.
    pub mx_port: u16,
    /// Sign outgoing mail with DKIM when its From domain has a key.
    pub dkim: bool,
    /// The DKIM keys, `<domain>.<selector>.key` (absolute).
    pub dkim_dir: PathBuf,
}

/// Reads `[smtp_relay]`; the paths are resolved against `data_dir`.
pub(crate) fn read(root: &Section<'_>, data_dir: &Path) -> SmtpRelayConfig {
    let data = |p: PathBuf| data_dir.join(p);
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
        password: read_password(&r, data_dir),
        tls_verify: r.bool("tls_verify", true),
        tls_ca_file: r.optional_path("tls_ca_file").map(data),
        max_recipients_per_message: r.count("max_recipients_per_message", 50, 1, 10_000),
        max_connections: r.count("max_connections", 20, 1, 10_000),
        max_connections_per_host: r.count("max_connections_per_host", 10, 1, 10_000),
        connect_timeout: r.secs("connect_timeout_secs", 30, 1, 3600),
        command_timeout: r.secs("command_timeout_secs", 300, 1, 3600),
        down_period: r.secs("down_period_secs", 60, 0, 86_400),
        dns_server: r.socket_addr("dns_server", ""),
        mx_port: r.count("mx_port", 25, 1, 65_535),
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
    smtp_relay
}
