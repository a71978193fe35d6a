//! imap-server (in progress).
