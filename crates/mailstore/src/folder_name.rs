//! Folder names: the INBOX, Maildir++ subfolders, and the special-use folders.

use std::fmt;

use crate::error::{Result, StoreError};

/// Longest folder name accepted, in bytes of UTF-8. The folder is one directory entry
/// `.<name>` on disk, and file systems hold 255 bytes per entry.
pub const MAX_FOLDER_NAME_LEN: usize = 200;

/// The name of a folder of a mailbox: `INBOX`, or a Maildir++ name such as `Sent` or
/// `Lists.rust` whose components are separated by [`FolderName::DELIMITER`].
///
/// The INBOX is the mailbox's root directory; any other folder `A.B` is the directory
/// `.A.B` beside it, with the name stored as UTF-8 (not the modified UTF-7 of IMAP: the
/// IMAP server converts at the protocol edge).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderName(String);

impl FolderName {
    /// The hierarchy delimiter, as in Maildir++ and as the IMAP server announces it.
    pub const DELIMITER: char = '.';

    /// The INBOX, the mailbox's root.
    pub fn inbox() -> FolderName {
        FolderName("INBOX".to_owned())
    }

    /// Checks a folder name given by a user. `INBOX` is recognised in any case, also as
    /// the first component of a longer name. Refused: empty names or components (so no
    /// leading, trailing or doubled `.`), `/`, control characters, the IMAP wildcards `*`
    /// and `%`, and names longer than [`MAX_FOLDER_NAME_LEN`] bytes.
    pub fn new(name: &str) -> Result<FolderName> {
        let refuse = |reason| StoreError::InvalidFolderName {
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(refuse("empty"));
        }
        if name.len() > MAX_FOLDER_NAME_LEN {
            return Err(refuse("too long"));
        }
        if name.starts_with(Self::DELIMITER) {
            return Err(refuse("starts with '.'"));
        }
        if name.split(Self::DELIMITER).any(str::is_empty) {
            return Err(refuse("empty component (\"..\" or a trailing '.')"));
        }
        if name.contains('/') {
            return Err(refuse("contains '/'"));
        }
        if name.chars().any(char::is_control) {
            return Err(refuse("contains a control character"));
        }
        if name.contains(['*', '%']) {
            return Err(refuse("contains an IMAP wildcard ('*' or '%')"));
        }
        let (first, rest) = match name.split_once(Self::DELIMITER) {
            Some((first, rest)) => (first, Some(rest)),
            None => (name, None),
        };
        if first.eq_ignore_ascii_case("INBOX") {
            return Ok(match rest {
                Some(rest) => FolderName(format!("INBOX.{rest}")),
                None => FolderName::inbox(),
            });
        }
        Ok(FolderName(name.to_owned()))
    }

    /// The name, `INBOX` or components joined by `.`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the INBOX itself (not for its children).
    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }

    /// The components of the name, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split(Self::DELIMITER)
    }

    /// The special use of this folder, for IMAP SPECIAL-USE (RFC 6154), if it is one of
    /// the folders the store makes on first use.
    pub fn special_use(&self) -> Option<SpecialUse> {
        SpecialUse::ALL
            .into_iter()
            .find(|s| s.folder_name_str() == self.0)
    }

    /// The directory name beside the INBOX (`.Sent`, `.Lists.rust`); `None` for the INBOX.
    pub(crate) fn dir_name(&self) -> Option<String> {
        (!self.is_inbox()).then(|| format!(".{}", self.0))
    }

    /// The folder a directory entry of the mailbox root stands for, if any.
    pub(crate) fn from_dir_name(entry: &str) -> Option<FolderName> {
        let name = FolderName::new(entry.strip_prefix('.')?).ok()?;
        // `.INBOX` on disk would shadow the root; it is no folder of ours.
        (!name.is_inbox() && entry == format!(".{}", name.0)).then_some(name)
    }
}

impl fmt::Display for FolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The folders with a special use (RFC 6154). The store creates them on first use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// `Sent`: copies of messages the user sent (`\Sent`).
    Sent,
    /// `Drafts`: messages being written (`\Drafts`).
    Drafts,
    /// `Trash`: messages the user deleted (`\Trash`).
    Trash,
    /// `Junk`: messages classified as spam (`\Junk`).
    Junk,
}

impl SpecialUse {
    /// All of them.
    pub const ALL: [SpecialUse; 4] = [
        SpecialUse::Sent,
        SpecialUse::Drafts,
        SpecialUse::Trash,
        SpecialUse::Junk,
    ];

    /// The folder that has this use.
    pub fn folder_name(self) -> FolderName {
        FolderName(self.folder_name_str().to_owned())
    }

    /// The IMAP attribute that announces it in LIST.
    pub fn imap_attribute(self) -> &'static str {
        match self {
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
        }
    }

    fn folder_name_str(self) -> &'static str {
        match self {
            SpecialUse::Sent => "Sent",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept() {
        for name in ["Sent", "Lists.rust", "Año.Größe", "a b", "Archive.2024.Q1"] {
            let folder = FolderName::new(name).unwrap();
            assert_eq!(folder.as_str(), name);
            assert_eq!(folder.dir_name().unwrap(), format!(".{name}"));
            assert_eq!(FolderName::from_dir_name(&format!(".{name}")), Some(folder));
        }
        let nested = FolderName::new("Lists.rust").unwrap();
        assert_eq!(nested.components().collect::<Vec<_>>(), ["Lists", "rust"]);
    }

    #[test]
    fn traversal_and_junk_are_refused() {
        let long = "x".repeat(MAX_FOLDER_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            ".hidden",
            "a..b",
            "a.",
            "a/b",
            "/etc",
            "a\0b",
            "a\nb",
            "a*",
            "%",
            long.as_str(),
        ] {
            let err = FolderName::new(bad).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidFolderName { ref name, .. } if name == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn inbox_in_any_case_is_the_root() {
        for name in ["INBOX", "inbox", "InBoX"] {
            let folder = FolderName::new(name).unwrap();
            assert!(folder.is_inbox());
            assert_eq!(folder.dir_name(), None);
        }
        let child = FolderName::new("inbox.Sub").unwrap();
        assert_eq!(child.as_str(), "INBOX.Sub");
        assert!(!child.is_inbox());
        assert_eq!(FolderName::from_dir_name(".INBOX"), None);
        assert_eq!(FolderName::from_dir_name("cur"), None);
        assert_eq!(FolderName::from_dir_name(".inbox.Sub"), None);
    }

    #[test]
    fn special_use_is_known_for_the_four_folders_only() {
        for use_ in SpecialUse::ALL {
            assert_eq!(use_.folder_name().special_use(), Some(use_));
        }
        assert_eq!(
            FolderName::new("Sent").unwrap().special_use(),
            Some(SpecialUse::Sent)
        );
        assert_eq!(SpecialUse::Junk.imap_attribute(), "\\Junk");
        assert_eq!(FolderName::new("sent").unwrap().special_use(), None);
        assert_eq!(FolderName::new("Sent.Old").unwrap().special_use(), None);
        assert_eq!(FolderName::inbox().special_use(), None);
    }
}
