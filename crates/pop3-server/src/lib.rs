//! pop3-server (in progress).
