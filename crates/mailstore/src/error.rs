//! The one error type of the mail store.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the mail store. Each variant names the path (or the
/// name that would have become a path) it is about.
///
/// For delivery, every variant except [`StoreError::InvalidName`],
/// [`StoreError::InvalidFolderName`] and [`StoreError::InvalidDelivery`] is worth a retry:
/// the caller keeps the message queued and tries again later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A domain, local part or message identifier cannot be used as a file name.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What the name is: "domain", "local part", "message id".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A folder name given by a user cannot be used.
    #[error("invalid folder name {name:?}: {reason}")]
    InvalidFolderName {
        /// The folder name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A folder does not exist (and was not to be created).
    #[error("no such folder: {}", path.display())]
    FolderNotFound {
        /// The folder's directory.
        path: PathBuf,
    },

    /// A message is in none of its folder's `new/` and `cur/` (it was expunged, or
    /// another process kept renaming it while we looked).
    #[error("no message {id} in {}", folder.display())]
    MessageNotFound {
        /// The folder's directory.
        folder: PathBuf,
        /// The message's identity (its base name).
        id: String,
    },

    /// The delivery was refused as given: an empty message, an empty delivery key or a
    /// batch that is full. Retrying the same call will not help.
    #[error("delivery into {} refused: {reason}", path.display())]
    InvalidDelivery {
        /// The mailbox's root directory.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },

    /// Another process or thread is delivering the same delivery key right now.
    /// Retry later: the retry reports the message as already delivered.
    #[error("a delivery of the same key is in progress: {}", path.display())]
    Busy {
        /// The staging file of the delivery in progress.
        path: PathBuf,
    },

    /// Two different delivery keys have the same 128-bit hash, so the marker of one would
    /// suppress the other. Never expected; reported instead of dropping the message.
    #[error("delivery marker {} belongs to another key", path.display())]
    KeyCollision {
        /// The delivery marker.
        path: PathBuf,
    },
}

impl StoreError {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// An equivalent error, for reporting one failure against several messages of a
    /// batch (`io::Error` cannot be cloned; its kind and text are kept).
    pub(crate) fn replicate(&self) -> Self {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::InvalidName { what, name, reason } => StoreError::InvalidName {
                what,
                name: name.clone(),
                reason,
            },
            StoreError::InvalidFolderName { name, reason } => StoreError::InvalidFolderName {
                name: name.clone(),
                reason,
            },
            StoreError::FolderNotFound { path } => {
                StoreError::FolderNotFound { path: path.clone() }
            }
            StoreError::MessageNotFound { folder, id } => StoreError::MessageNotFound {
                folder: folder.clone(),
                id: id.clone(),
            },
            StoreError::InvalidDelivery { path, reason } => StoreError::InvalidDelivery {
                path: path.clone(),
                reason,
            },
            StoreError::Busy { path } => StoreError::Busy { path: path.clone() },
            StoreError::KeyCollision { path } => StoreError::KeyCollision { path: path.clone() },
        }
    }

    /// True if the error says a file or folder is not there.
    pub fn is_not_found(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            StoreError::FolderNotFound { .. } | StoreError::MessageNotFound { .. } => true,
            _ => false,
        }
    }
}

/// The mail store's `Result`.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
