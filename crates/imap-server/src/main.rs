//! `imap-server` binary.

fn main() {}
