//! `smtp-server` binary.

fn main() {}
