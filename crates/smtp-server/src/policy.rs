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

#[cfg(test)]
mod tests {
    use qs_directory::{Options, Secret};

    use super::*;

    #[test]
    fn a_user_given_directly_names_the_mailbox_that_local_delivery_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = Directory::create(dir.path().join("directory.json"), Options::default()).unwrap();
        d.add_domain("example.test").unwrap();
        d.add_domain_alias("company.example", "example.test")
            .unwrap();
        let pw = Secret::new(&b"pw"[..]);
        for u in ["alice", "carol", "dave"] {
            d.add_user(&format!("{u}@example.test"), "", &pw).unwrap();
        }
        d.add_alias("team@example.test", ["alice@example.test"])
            .unwrap();
        d.set_forward("carol@example.test", ["alice@example.test"], false)
            .unwrap();
        d.set_forward("dave@example.test", ["alice@example.test"], true)
            .unwrap();
        let policy = DirectoryPolicy::new(d, ListIndex::new(dir.path().join("lists")));
        let alice = RecipientCheck::Mailbox("alice@example.test".into());
        assert_eq!(policy.recipient("alice@example.test"), alice);
        assert_eq!(policy.recipient("Alice+news@Company.Example"), alice);
        // A forward that keeps a copy still delivers into dave's INBOX.
        assert_eq!(
            policy.recipient("dave@example.test"),
            RecipientCheck::Mailbox("dave@example.test".into())
        );
        // Mail for carol or team goes to other mailboxes, checked as delivered.
        assert_eq!(
            policy.recipient("carol@example.test"),
            RecipientCheck::Local
        );
        assert_eq!(policy.recipient("team@example.test"), RecipientCheck::Local);
        assert_eq!(
            policy.recipient("nobody@example.test"),
            RecipientCheck::Unknown
        );
        assert_eq!(policy.recipient("x@far.example"), RecipientCheck::Remote);
    }
}
