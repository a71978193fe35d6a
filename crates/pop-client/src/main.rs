//! `pop-client` binary.

fn main() {}
