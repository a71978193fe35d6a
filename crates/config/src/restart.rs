//! `[restart]`: how a module hands over to a new process of itself.

use crate::reader::Section;

/// `[restart]`: how a module hands over to a new process of itself (SIGHUP,
/// `qsctl restart`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestartConfig {
    /// Once the new process serves, how long the old one lets its sessions go
    /// on (POP3 sessions, IMAP sessions outside IDLE, SMTP sessions between
    /// transactions) before it closes them.
    pub grace_secs: u64,
    /// How long the old process waits for the new one to be ready; past it the
    /// new one is stopped and the old one keeps serving.
    pub ready_timeout_secs: u64,
}

/// Reads `[restart]`.
pub(crate) fn read(root: &Section<'_>) -> RestartConfig {
    let restart = root.section("restart");
    let config = RestartConfig {
        grace_secs: restart.number("grace_secs", 30, 0, 3600),
        ready_timeout_secs: restart.number("ready_timeout_secs", 60, 1, 3600),
    };
    restart.finish();
    config
}
