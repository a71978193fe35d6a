//! `smtp-relay` binary.

fn main() {}
