//! The session's questions answered from the user directory and the lists
//! folder, both re-read when they change, so a user or list added with qsctl
//! receives mail at once.

use qs_directory::lists::ListIndex;
use qs_directory::{Directory, Resolution};

use crate::session::{Policy, RecipientCheck};

/// The directory-backed policy.
pub struct DirectoryPolicy {
    directory: Directory,
    lists: ListIndex,
}

impl DirectoryPolicy {
    /// A policy over `directory` and the lists in `lists`.
    pub fn new(directory: Directory, lists: ListIndex) -> Self {
        DirectoryPolicy { directory, lists }
    }

    /// The directory (for password checks).
    pub fn directory(&self) -> &Directory {
        &self.directory
    }
}

impl Policy for DirectoryPolicy {
    fn recipient(&self, address: &str) -> RecipientCheck {
        let snapshot = self.directory.snapshot();
        let Ok(parsed) = qs_directory::parse_address(address) else {
            return RecipientCheck::Unknown;
        };
        if !snapshot.is_local_domain(parsed.domain()) {
            return RecipientCheck::Remote;
        }
        let domain = snapshot
            .canonical_domain(parsed.domain())
            .unwrap_or(parsed.domain());
        let as_list = format!("{}@{domain}", parsed.local().to_ascii_lowercase());
        if self.lists.list_for(&as_list).is_some() {
            return RecipientCheck::Local;
        }
        match snapshot.resolve_address(&parsed) {
            // As core-queue routes it: a forward without a copy leaves the
            // user's own INBOX out, so only the targets are delivered to.
            Resolution::User(user) if user.forward.is_active() && !user.forward.keep_copy => {
                RecipientCheck::Local
            }
            Resolution::User(user) => RecipientCheck::Mailbox(user.address),
            Resolution::Alias(_) => RecipientCheck::Local,
            Resolution::NotLocal => RecipientCheck::Remote,
            _ => RecipientCheck::Unknown,
        }
    }

    fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.directory.snapshot().may_send_as(user, address)
    }

    fn postmaster(&self) -> Option<String> {
        self.directory.snapshot().postmaster().map(str::to_string)
    }
}
