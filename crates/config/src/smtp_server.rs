//! `[smtp_server]`: the SMTP listeners, their limits and the sender checks.

use std::net::SocketAddr;
use std::time::Duration;

use crate::reader::Section;
use crate::values::{IpNetwork, is_host_name};

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
    pub max_message_size: usize,
    /// Networks allowed to relay without AUTH.
    pub relay_networks: Vec<IpNetwork>,
    /// Allow AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Recipients per message.
    pub max_recipients: usize,
    /// Recipients past `max_recipients` refused with 452 in one transaction
    /// before each further one counts as an error.
    pub max_recipient_overshoot: usize,
    /// Connections at once on the port-25 role listeners (`listen`).
    pub max_connections: usize,
    /// Connections at once on the submission listeners.
    pub submission_max_connections: usize,
    /// Connections at once on the submissions (implicit TLS) listeners.
    pub submissions_max_connections: usize,
    /// Connections from one address, all listeners together.
    pub max_connections_per_ip: usize,
    /// Errors per session before 421.
    pub max_errors: u64,
    /// How long a session may wait for a command (`idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// The longest session (`session_timeout_secs`).
    pub session_timeout: Duration,
    /// Failed AUTH attempts per address before refusal.
    pub max_auth_failures: u32,
    /// Authenticated users may send only as their own addresses.
    pub enforce_sender: bool,
    /// Octets of a message body kept in memory while it arrives; past this
    /// it goes to a file in `<data_dir>/spool/smtp-server/`.
    pub spool_threshold: usize,
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
    /// How long one DNS lookup may take (`dns_timeout_secs`).
    pub dns_timeout: Duration,
    /// How long all the checks of one message (or one MAIL FROM) may take
    /// (`check_timeout_secs`).
    pub timeout: Duration,
    /// Octets of messages held in memory for DKIM at once, all sessions together.
    pub memory_limit: u64,
    /// Unknown (client /24, sender, recipient) triplets are refused for a while.
    pub greylisting: bool,
    /// How long an unknown triplet is refused (451 4.7.1) before it is let in
    /// (`greylist_delay_secs`).
    pub greylist_delay: Duration,
    /// How long without mail before a triplet is forgotten (`greylist_expiry_days`).
    pub greylist_expiry: Duration,
}

/// Reads `[smtp_server]`.
pub(crate) fn read(root: &Section<'_>) -> SmtpServerConfig {
    let day = 86_400;
    let s = root.section("smtp_server");
    let smtp_server = SmtpServerConfig {
        listen: s.socket_addrs("listen", &["127.0.0.1:2525"]),
        submission: s.socket_addrs("submission", &["127.0.0.1:5587"]),
        submissions: s.socket_addrs("submissions", &["127.0.0.1:5465"]),
        max_message_size: s.count("max_message_size", 26_214_400, 1024, 1 << 30),
        relay_networks: s.networks("relay_networks"),
        allow_plaintext_auth: s.bool("allow_plaintext_auth", false),
        max_recipients: s.count("max_recipients", 100, 1, 100_000),
        max_recipient_overshoot: s.count("max_recipient_overshoot", 1000, 0, 1_000_000),
        max_connections: s.count("max_connections", 200, 1, 1_000_000),
        submission_max_connections: s.count("submission_max_connections", 100, 1, 1_000_000),
        submissions_max_connections: s.count("submissions_max_connections", 100, 1, 1_000_000),
        max_connections_per_ip: s.count("max_connections_per_ip", 20, 1, 1_000_000),
        max_errors: s.number("max_errors", 10, 1, 1000),
        idle_timeout: s.secs("idle_timeout_secs", 300, 1, day),
        session_timeout: s.secs("session_timeout_secs", 1800, 1, day),
        max_auth_failures: s.count("max_auth_failures", 5, 1, 1000),
        enforce_sender: s.bool("enforce_sender", true),
        spool_threshold: s.count("spool_threshold", 1_048_576, 0, 1 << 30),
        checks: SenderChecksConfig {
            enabled: s.bool("check_senders", true),
            unchecked_networks: s.networks_or("unchecked_networks", &["127.0.0.0/8", "::1/128"]),
            spf_fail_reject: s.bool("spf_fail_reject", false),
            dmarc_reject: s.bool("dmarc_reject", true),
            dmarc_quarantine: s.bool("dmarc_quarantine", true),
            dnsbl_zones: s.string_list("dnsbl_zones", &[]),
            dns_server: s.socket_addr("dns_server", ""),
            dns_timeout: s.secs("dns_timeout_secs", 5, 1, 60),
            timeout: s.secs("check_timeout_secs", 30, 1, 600),
            memory_limit: s.number("check_memory_limit", 67_108_864, 1_048_576, 1 << 34),
            greylisting: s.bool("greylisting", false),
            greylist_delay: s.secs("greylist_delay_secs", 300, 1, day),
            greylist_expiry: s.days("greylist_expiry_days", 35, 1, 3650),
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
    smtp_server
}
