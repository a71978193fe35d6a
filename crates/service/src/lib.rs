//! qs-service — what every Quicksilver daemon shares.
//!
//! # Description
//! The plumbing that every daemon would otherwise copy, in the spirit of Postfix's
//! `single_server_main`: logging set-up ([`logging`]), the TLS acceptor built from
//! `[tls]` and the self-signed default certificate ([`tls`]), the user
//! directory opened as `[directory]` says ([`directory`]), listener binding
//! with errors that name the address and the config key ([`listen`]), the
//! accept loops, connection limits (a budget per listener role, per address,
//! per user), the log of refused connections and TLS handshakes of the servers
//! ([`accept`]), the driver of one connection (TLS from the first byte, or a
//! fresh session over TLS after STARTTLS/STLS; the loop between the socket
//! and a daemon's sans-IO session; the write with its time limit:
//! [`connection`]), failed logins per client address, counted as each attempt
//! starts ([`login_limit`]), the
//! shutdown signal ([`shutdown`]), restart without downtime ([`restart`]: socket
//! hand-over to a successor, or an in-place `exec` after a graceful stop), the
//! run file that says a daemon is ready ([`runfile`], [`notify`] for systemd),
//! and the `main` they all share ([`daemon`]).
//!
//! # Security
//! Private keys are written with mode 0600. TLS uses rustls with its safe defaults
//! (TLS 1.2 and 1.3 only).

pub mod accept;
pub mod connection;
pub mod credentials;
pub mod daemon;
pub mod directory;
pub mod listen;
pub mod logging;
pub mod login_limit;
pub mod notify;
pub mod queue;
pub mod restart;
pub mod runfile;
pub mod shutdown;
pub mod spool;
pub mod tls;

use std::path::PathBuf;

/// Why a piece of daemon plumbing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A certificate or key file could not be read or parsed.
    #[error("TLS {what} {}: {reason}", path.display())]
    Tls {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate could not be generated or written.
    #[error("cannot create a self-signed certificate at {}: {reason}", path.display())]
    CertificateGeneration {
        /// Where it was to be written.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The queue's shared secret could not be read.
    #[error("cannot read the queue secret {}: {source}", path.display())]
    QueueSecret {
        /// The secret file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The config key that names it.
        key: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}
