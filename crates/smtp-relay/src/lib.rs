//! smtp-relay (in progress).
