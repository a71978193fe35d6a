//! smtp-server (in progress).
