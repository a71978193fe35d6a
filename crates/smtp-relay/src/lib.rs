//! smtp-relay — Quicksilver's SMTP client (Mercury's MercuryC and MercuryE).
//!
//! # Description
//! Leases `outbound` jobs from core-queue and delivers them:
//!
//! - `[smtp_relay] mode = "smarthost"` (MercuryC): every message to one server,
//!   the provider's, with `tls = "starttls"` (required: a server that does not
//!   offer STARTTLS, or fails it, is a temporary failure and gets nothing in
//!   plaintext), `"implicit"` (TLS from the first byte) or `"none"`; AUTH PLAIN
//!   or LOGIN when `username` is set. Certificates and host names are checked
//!   against the webpki roots plus `tls_ca_file`; `tls_verify = false` turns
//!   the check off.
//! - `mode = "direct"` (MercuryE): to each recipient domain's MX hosts, lowest
//!   preference first and in random order among equals, the domain's own
//!   addresses when it has no MX; a null MX (RFC 7505) or a domain that does
//!   not exist is a permanent failure. STARTTLS is used whenever offered,
//!   without certificate checks (opportunistic, RFC 7435).
//!
//! Recipients are grouped by destination and sent in transactions of at most
//! `max_recipients_per_message`. Connections are kept for reuse (see [`pool`]),
//! with PIPELINING when the server offers it (RFC 2920). Each recipient's
//! result goes back to core-queue: 2xx delivered, 4xx temporary, 5xx permanent
//! (the DSN carries the remote reply and the host), connection and TLS errors
//! temporary. The peer's replies are read into qs-queue's `Reply` (code,
//! enhanced status code, every line), and the outcome carries that reply with
//! the host after its text; a failure found here is a reply without a code
//! (see [`reply`]). One log line per attempt names the queue id, the
//! recipients, the host and the reply.
//!
//! Every message whose `From` domain (or a parent domain) has a key in
//! `dkim_dir` is signed with DKIM (RFC 6376, see `qs_dkim`) after the checks
//! below: the signature is one more header field at the top, the rest of the
//! bytes are the queued message. Mail from other domains goes out unsigned
//! (logged at debug). The keys are read at start; a key file that cannot be
//! used (bad contents, readable by others) stops the start with its name.
//!
//! Protocol: RFC 5321, with STARTTLS (RFC 3207), AUTH (RFC 4954), PIPELINING
//! (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531).
//!
//! # Security
//! - Before TLS, a reply read ahead of its command, or any byte after the
//!   reply to STARTTLS, closes the connection as a protocol violation (see
//!   [`plaintext_guard`], CVE-2011-0411): a temporary failure, the message
//!   stays queued; nothing read in plaintext is ever taken as an answer to a
//!   command sent over TLS.
//! - The bytes on the wire are the queued message, dot-stuffed: a message with
//!   a bare CR or LF is never sent (permanent failure, logged). An 8-bit body
//!   goes only to a server with 8BITMIME, a UTF-8 address only to one with
//!   SMTPUTF8; otherwise a permanent failure says why (no conversion).
//! - Addresses with control characters or angle brackets never reach a
//!   command line.
//! - The smarthost password is read once at start and never logged.
//!
//! # Limits
//! `max_connections` (in all), `max_connections_per_host`,
//! `connect_timeout_secs`, `command_timeout_secs` (each reply, and the message
//! transfer), `down_period_secs` (how long an unreachable host is skipped),
//! `max_recipients_per_message`. Idle connections close after 10 s.
//!
//! # Config
//! `hostname` (EHLO), `[queue]` (the client), and every key of `[smtp_relay]`
//! (`dkim`, `dkim_dir` for signing).

use std::io;

pub mod client;
pub mod dns;
pub mod ehlo;
pub mod message;
pub mod mx;
pub mod plaintext_guard;
pub mod plan;
pub mod pool;
pub mod relay;
pub mod reply;
pub mod transaction;

pub use relay::run;

/// Why smtp-relay cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// A setting cannot be used (password file, CA file, resolver).
    #[error("{0}")]
    Config(String),
    /// The queue client cannot be set up.
    #[error(transparent)]
    Service(#[from] qs_service::ServiceError),
    /// The run file cannot be written.
    #[error("cannot write the run file: {0}")]
    RunFile(io::Error),
}
