//! The one error type of the directory.

use std::io;
use std::path::PathBuf;

/// What can go wrong while reading, changing or querying the directory.
///
/// Every message is a complete sentence fragment meant to be printed on one line,
/// e.g. by `qsctl` after `error: `. None of them ever contains a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address does not follow RFC 5321 syntax, or uses a character the
    /// directory refuses ('/', NUL, CR, LF, a space outside quotes, …).
    #[error("malformed address {input:?}: {reason}")]
    MalformedAddress {
        /// The address as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A domain name is not a valid host name.
    #[error("malformed domain {input:?}: {reason}")]
    MalformedDomain {
        /// The domain as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `*@domain` was given where an address is wanted.
    #[error("{0:?} is a wildcard, not an address; set the domain's catch-all instead")]
    Wildcard(String),
    /// The domain is neither a local domain nor a domain alias.
    #[error("unknown domain {0}")]
    UnknownDomain(String),
    /// A domain (or domain alias) of that name already exists.
    #[error("domain {0} already exists")]
    DomainExists(String),
    /// The operation needs a real domain but was given a domain alias.
    #[error("domain {domain} is an alias of {target}; use {target}")]
    DomainIsAlias {
        /// The domain alias given.
        domain: String,
        /// The domain it stands for.
        target: String,
    },
    /// A domain cannot be removed while something still refers to it.
    #[error("domain {domain} is still used by {by}")]
    DomainInUse {
        /// The domain.
        domain: String,
        /// The first thing found that uses it, e.g. "user alice@example.test".
        by: String,
    },
    /// A user of that address already exists (local parts compare case-insensitively).
    #[error("user {0} already exists")]
    UserExists(String),
    /// An alias of that address already exists.
    #[error("alias {0} already exists")]
    AliasExists(String),
    /// A user and an alias cannot share an address.
    #[error("{address} is already taken by {by}")]
    AddressTaken {
        /// The address.
        address: String,
        /// "a user" or "an alias".
        by: &'static str,
    },
    /// No user has that address.
    #[error("unknown user {0}")]
    UnknownUser(String),
    /// No alias has that address.
    #[error("unknown alias {0}")]
    UnknownAlias(String),
    /// An alias needs at least one target.
    #[error("alias {0} has no targets")]
    NoTargets(String),
    /// An alias may not list itself among its targets.
    #[error("alias {0} cannot point to itself")]
    SelfTarget(String),
    /// A target in a local domain names no user or alias (a typo, most likely).
    #[error("{owner} points to {target}, which is not a local user or alias")]
    UnknownTarget {
        /// What holds the target, e.g. "alias sales@example.test".
        owner: String,
        /// The target address.
        target: String,
    },
    /// A user or alias cannot be removed while something still points to it.
    #[error("{what} is still used by {by}")]
    InUse {
        /// What was to be removed, e.g. "user bob@example.test".
        what: String,
        /// What points to it, e.g. "alias sales@example.test".
        by: String,
    },
    /// A password must not be empty.
    #[error("the password is empty")]
    EmptyPassword,
    /// A display name may not hold control characters (it ends up in headers).
    #[error("display name {0:?} contains a control character")]
    BadDisplayName(String),
    /// The configured subaddress separator cannot separate anything.
    #[error("subaddress separator {0:?} must be one of !#$%&'*+-=?^_`{{|}}~")]
    BadSeparator(char),
    /// The directory file does not exist (`qsctl init` creates it).
    #[error("directory file {} does not exist", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// `Directory::create` found a file already there.
    #[error("directory file {} already exists", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// A system call on the directory's files failed.
    #[error("cannot {op} {}: {error}", path.display())]
    Io {
        /// What was being done: "open", "read", "lock", "rename onto", …
        op: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The directory file is not valid JSON, or not the expected shape.
    #[error("{}: invalid directory file: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's error, with line and column.
        error: serde_json::Error,
    },
    /// The directory file was written by a program that uses a newer format.
    #[error("{}: format version {found} is not supported (this program reads version {supported})", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this crate reads and writes.
        supported: u32,
    },
    /// The directory file parses but contradicts itself (a duplicate user, a
    /// malformed address, a user in an unknown domain, …).
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Hashing a new password failed.
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// A stored password hash is not a valid argon2 PHC string.
    #[error("the stored password hash of {0} is not a valid argon2 PHC string")]
    CorruptHash(String),
    /// The blocking task that checks a password did not complete.
    #[error("password check task failed: {0}")]
    Task(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error about `path` while doing `op`.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |error| Error::Io { op, path, error }
    }
}
