//! `[imap_server]`: the keys it shares with POP3, and the limits only IMAP has.

use crate::mail_access::{MailAccessConfig, read_access};
use crate::reader::Section;

/// `[imap_server]`: the limits only IMAP has.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ImapLimits {
    /// Longest command line in octets, literals excluded.
    pub max_line_length: usize,
    /// Largest literal once logged in, in octets (APPENDLIMIT: the largest message).
    pub max_literal_size: u32,
    /// Octets a client may send before it has logged in.
    pub login_byte_budget: usize,
    /// Logged-in sessions at once of one user.
    pub max_connections_per_user: usize,
    /// An APPEND message literal larger than this, in octets, goes to a file
    /// in `<data_dir>/spool/imap-server/` instead of memory while it arrives.
    pub spool_threshold: usize,
    /// The longest LIST or LSUB reference and pattern together, in octets.
    pub max_list_pattern_length: usize,
    /// Search keys in one SEARCH (each OR, NOT and parenthesised list counts).
    pub max_search_keys: usize,
    /// How deep a SEARCH's groups may nest (a chain of ORs is one level).
    pub max_search_depth: usize,
}

/// Reads `[imap_server]`.
pub(crate) fn read(root: &Section<'_>) -> (MailAccessConfig, ImapLimits) {
    // RFC 3501 asks for an autologout of at least 30 minutes.
    let (imap_server, i) = read_access(
        root,
        "imap_server",
        "127.0.0.1:1143",
        "127.0.0.1:1993",
        1800,
    );
    let imap_limits = ImapLimits {
        max_line_length: i.count("max_line_length", 65_536, 1024, 1 << 24),
        max_literal_size: i.count(
            "max_literal_size",
            26_214_400,
            1024,
            u64::from(u32::MAX >> 2),
        ),
        login_byte_budget: i.count("login_byte_budget", 65_536, 1024, 1 << 24),
        max_connections_per_user: i.count("max_connections_per_user", 20, 1, 1_000_000),
        spool_threshold: i.count("spool_threshold", 1_048_576, 0, 1 << 30),
        max_list_pattern_length: i.count("max_list_pattern_length", 1024, 64, 65_536),
        max_search_keys: i.count("max_search_keys", 1000, 16, 100_000),
        // The search is evaluated recursively, one stack frame per level.
        max_search_depth: i.count("max_search_depth", 64, 8, 1000),
    };
    i.finish();
    (imap_server, imap_limits)
}
