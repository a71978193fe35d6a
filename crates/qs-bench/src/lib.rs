//! qs-bench: one load tool for every Quicksilver protocol, so that every figure
//! in the README is measured the same way and an administrator can measure an
//! installation of their own (as Postfix users do with smtp-source and Dovecot
//! users with imaptest).
//!
//! Each subcommand is a module with an `Options` struct (the command line's
//! flags, also filled in by the cargo benchmarks), a `run` function and a
//! report that prints itself as a table or as JSON ([`report`]):
//!
//! - [`smtp`]: messages/s accepted, the time from the end of the data to the
//!   reply (p50/p90/p99), errors by reply code (lettre as the client);
//! - [`deliver`]: the same, then until the last message is in the Maildir (or
//!   seen over IMAP): the queue and local delivery are in the figure;
//! - [`imap`]: fills a folder by APPEND, times SELECT, FETCH, UID SEARCH and
//!   STORE, and the server's memory per idle connection (async-imap);
//! - [`pop3`]: STAT, LIST, UIDL and RETR of a whole maildrop;
//! - [`relay`]: deliveries/s out of smtp-relay into a sink of its own;
//! - [`list`]: one post to a list of N members, list-server's fan-out into
//!   the queue, then recipients/s out of smtp-relay into the same sink.
//!
//! Targets are `HOST:PORT`, or read from the run files of an installation
//! named with `--config` (`<data_dir>/run/<module>.json`), which also give the
//! pid whose memory is read from `/proc`. TLS is checked against a CA file
//! (the installation's own certificate with `--config`); `--insecure` (SMTP)
//! accepts any certificate. Nothing here is durable: the figures are the
//! servers', every one of which syncs to disk before it acknowledges.
//!
//! Load goes only where the flags point; runs are bounded by `--messages` and
//! by time-outs, so a stuck server ends a run with an error, not a hang.

pub mod deliver;
pub mod imap;
pub mod install;
pub mod list;
pub mod message;
pub mod net;
pub mod pop3;
pub mod progress;
pub mod relay;
pub mod report;
pub mod smtp;
pub mod stats;

/// Why a run could not be made or finished.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Flags that cannot work together, or a value the run cannot use.
    #[error("{0}")]
    Usage(String),
    /// The target did not answer, or not as that protocol's server.
    #[error("cannot reach {target}: {reason}")]
    Unreachable {
        /// HOST:PORT.
        target: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused what the run depends on (a login, a folder, TLS).
    #[error("{0}")]
    Refused(String),
    /// The installation's config or run files could not be used.
    #[error("{0}")]
    Installation(String),
    /// The run did not finish within its time limit.
    #[error("{0}")]
    Timeout(String),
    /// A local file (a Maildir, `/proc`) could not be read.
    #[error("{what}: {source}")]
    Io {
        /// What was being read.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}
