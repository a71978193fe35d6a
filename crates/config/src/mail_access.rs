//! The keys `[imap_server]` and `[pop3_server]` share.

use std::net::SocketAddr;
use std::time::Duration;

use crate::reader::Section;

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
    pub max_connections: usize,
    /// Connections at once on the implicit-TLS listeners (`tls_listen`).
    pub tls_max_connections: usize,
    /// Connections from one client address, all listeners together.
    pub max_connections_per_ip: usize,
    /// How long without a command before the session is closed (autologout,
    /// `idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// Failed logins from one address (within 15 minutes) before it is refused.
    pub max_auth_failures: u32,
    /// Protocol errors in one session before it is closed.
    pub max_errors: u32,
}

/// The keys IMAP and POP3 share; the section is returned unfinished, for the keys
/// only one of them has.
pub(crate) fn read_access<'a>(
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
        max_connections: s.count("max_connections", 200, 1, 1_000_000),
        tls_max_connections: s.count("tls_max_connections", 200, 1, 1_000_000),
        max_connections_per_ip: s.count("max_connections_per_ip", 20, 1, 1_000_000),
        idle_timeout: s.secs(
            "idle_timeout_secs",
            idle_timeout_secs,
            idle_timeout_secs,
            86_400,
        ),
        max_auth_failures: s.count("max_auth_failures", 10, 1, 1000),
        max_errors: s.count("max_errors", 10, 1, 1000),
    };
    (config, s)
}
