//! `pop3-server` binary.

fn main() {}
