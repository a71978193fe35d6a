//! `[pop3_server]`: only the keys it shares with IMAP.

use crate::mail_access::{MailAccessConfig, read_access};
use crate::reader::Section;

/// Reads `[pop3_server]`.
pub(crate) fn read(root: &Section<'_>) -> MailAccessConfig {
    // RFC 1939 asks for an autologout of at least 10 minutes.
    let (pop3_server, p3) =
        read_access(root, "pop3_server", "127.0.0.1:1110", "127.0.0.1:1995", 600);
    p3.finish();
    pop3_server
}
