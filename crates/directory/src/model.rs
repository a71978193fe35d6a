//! The records of the directory file, as serde reads and writes them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The version of the file format this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The whole directory file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileData {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) postmaster: Option<String>,
    #[serde(default)]
    pub(crate) domains: Vec<Domain>,
    #[serde(default)]
    pub(crate) users: Vec<UserRecord>,
    #[serde(default)]
    pub(crate) aliases: Vec<Alias>,
}

impl Default for FileData {
    fn default() -> Self {
        FileData {
            version: FORMAT_VERSION,
            postmaster: None,
            domains: Vec::new(),
            users: Vec::new(),
            aliases: Vec::new(),
        }
    }
}

/// A local domain, or a domain alias that stands for one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) alias_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) catch_all: Option<String>,
}

impl Domain {
    /// The domain name, lowercase.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// For a domain alias, the domain it stands for.
    pub fn alias_of(&self) -> Option<&str> {
        self.alias_of.as_deref()
    }

    /// The address that receives mail for unknown local parts, if any.
    pub fn catch_all(&self) -> Option<&str> {
        self.catch_all.as_deref()
    }
}

/// A local user as stored in the file, password hash included. Crate-private,
/// so no public type can serialise a hash by accident.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserRecord {
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) display_name: String,
    pub(crate) password_hash: String,
    #[serde(default = "yes")]
    pub(crate) enabled: bool,
    #[serde(default)]
    pub(crate) forward: Forward,
    #[serde(default)]
    pub(crate) pop3: Pop3Options,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("address", &self.address)
            .field("display_name", &self.display_name)
            .field("password_hash", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("forward", &self.forward)
            .field("pop3", &self.pop3)
            .finish()
    }
}

/// A local user: a mailbox that can log in.
///
/// The password hash stays inside the crate: no getter, not in `Debug`, no serde.
#[derive(Clone)]
pub struct User {
    pub(crate) record: UserRecord,
}

impl User {
    /// The canonical address (lowercase domain, local part as created).
    pub fn address(&self) -> &str {
        &self.record.address
    }

    /// The display name, possibly empty.
    pub fn display_name(&self) -> &str {
        &self.record.display_name
    }

    /// Whether the user may log in.
    pub fn enabled(&self) -> bool {
        self.record.enabled
    }

    /// Where the user's mail is forwarded to, if anywhere.
    pub fn forward(&self) -> &Forward {
        &self.record.forward
    }

    /// The user's POP3 options.
    pub fn pop3(&self) -> Pop3Options {
        self.record.pop3
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.record.fmt(f)
    }
}

/// Forwarding of a user's mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forward {
    /// The addresses the mail goes to; none means no forwarding.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Whether the user's own mailbox keeps a copy as well.
    #[serde(default = "yes")]
    pub keep_copy: bool,
}

impl Forward {
    /// Whether any forwarding is set.
    pub fn is_active(&self) -> bool {
        !self.targets.is_empty()
    }
}

impl Default for Forward {
    fn default() -> Self {
        Forward {
            targets: Vec::new(),
            keep_copy: true,
        }
    }
}

/// How the POP3 server treats a user's mailbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pop3Options {
    /// Accept DELE but keep the message (for clients that delete what they fetch).
    pub ignore_dele: bool,
    /// List only messages not yet marked as seen.
    pub only_unread: bool,
}

/// An alias: an address whose mail goes to one or more other addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    pub(crate) address: String,
    pub(crate) targets: Vec<String>,
}

impl Alias {
    /// The alias address (lowercase domain).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The addresses its mail goes to, local or remote.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }
}

fn yes() -> bool {
    true
}
