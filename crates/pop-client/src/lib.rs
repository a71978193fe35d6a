//! pop-client (in progress).
