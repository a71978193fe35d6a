//! `[restart]`: how a module hands over to a new process of itself.

use std::time::Duration;

use crate::reader::Section;

/// `[restart]`: how a module hands over to a new process of itself (SIGHUP,
/// `qsctl restart`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestartConfig {
    /// Once the new process serves, how long the old one lets its sessions go
    /// on (POP3 sessions, IMAP sessions outside IDLE, SMTP sessions between
    /// transactions) before it closes them (`grace_secs`).
    pub grace: Duration,
    /// How long the old process waits for the new one to be ready; past it the
    /// new one is stopped and the old one keeps serving (`ready_timeout_secs`).
    pub ready_timeout: Duration,
}

/// Reads `[restart]`.
pub(crate) fn read(root: &Section<'_>) -> RestartConfig {
    let restart = root.section("restart");
    let config = RestartConfig {
        grace: restart.secs("grace_secs", 30, 0, 3600),
        ready_timeout: restart.secs("ready_timeout_secs", 60, 1, 3600),
    };
    restart.finish();
    config
}
