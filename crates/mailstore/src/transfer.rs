//! What IMAP does to messages and folders besides flags: claiming new mail, APPEND,
//! COPY, MOVE, and deleting and renaming folders.
//!
//! A message put into a folder here gets a new base name, so that a UID index never
//! takes it for a message it saw before (see [`crate::UidIndex`]). Files enter `cur/`
//! only by the rename of a complete, synced file, and the folder's `cur/` is synced
//! before the call returns.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Result, StoreError};
use crate::folder_name::FolderName;
use crate::fsutil::{sync_dir, write_options};
use crate::mailbox::{Folder, Mailbox, MessageEntry};
use crate::names::{Flags, MessageId, cur_name, new_base_name};

/// Folders being deleted are first renamed to `<root>/qs-deleting-<pid>-<n>` (no leading
/// `.`, so never taken for a folder), then removed.
const DELETING_PREFIX: &str = "qs-deleting-";

static DELETIONS: AtomicU64 = AtomicU64::new(0);

impl Folder {
    /// Moves a message from `new/` to `cur/` (no flags), the Maildir way of saying that
    /// a client has seen it arrive. Only one of several processes trying at once
    /// succeeds: `Ok(Some(entry))` for it, `Ok(None)` for the others (and when the
    /// message is not in `new/` any more).
    pub fn claim(&self, entry: &MessageEntry) -> Result<Option<MessageEntry>> {
        let from = self.path().join("new").join(entry.id.as_str());
        let to = self
            .path()
            .join("cur")
            .join(cur_name(&entry.id, Flags::new()));
        match fs::rename(&from, &to) {
            Ok(()) => Ok(Some(MessageEntry {
                id: entry.id.clone(),
                size: entry.size,
                flags: Flags::new(),
                path: to,
                is_new: false,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(from, e)),
        }
    }

    /// The message's file size in bytes (from its name when recorded there).
    pub fn size_of(&self, entry: &MessageEntry) -> Result<u64> {
        if let Some(size) = entry.size {
            return Ok(size);
        }
        match fs::metadata(&entry.path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let now = self.find(&entry.id)?;
                fs::metadata(&now.path)
                    .map(|m| m.len())
                    .map_err(|e| StoreError::io(now.path, e))
            }
            Err(e) => Err(StoreError::io(&entry.path, e)),
        }
    }

    /// Opens a message's file for reading, looking it up again if it was renamed.
    pub fn open_message(&self, entry: &MessageEntry) -> Result<File> {
        for _ in 0..3 {
            let path = match File::open(&entry.path) {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.find(&entry.id)?.path,
                Err(e) => return Err(StoreError::io(&entry.path, e)),
            };
            match File::open(&path) {
                Ok(file) => return Ok(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(path, e)),
            }
        }
        Err(StoreError::MessageNotFound {
            folder: self.path().to_owned(),
            id: entry.id.to_string(),
        })
    }
}

impl Mailbox {
    /// Stores a message in `folder`'s `cur/` with `flags` (IMAP APPEND): written to the
    /// folder's `tmp/`, synced, its modification time set to `internal_date` (seconds
    /// since 1970), renamed into `cur/`, `cur/` synced. Returns where it is.
    pub fn append(
        &self,
        folder: &Folder,
        bytes: &[u8],
        flags: Flags,
        internal_date: i64,
    ) -> Result<MessageEntry> {
        let mut reader = bytes;
        self.append_from(
            folder,
            &mut reader,
            bytes.len() as u64,
            flags,
            internal_date,
        )
    }

    /// Like [`Mailbox::append`], with the message copied from `message`, which holds
    /// exactly `len` octets (a message spooled to a file is copied, never read whole
    /// into memory). A reader that gives fewer or more octets stores nothing.
    pub fn append_from(
        &self,
        folder: &Folder,
        message: &mut dyn Read,
        len: u64,
        flags: Flags,
        internal_date: i64,
    ) -> Result<MessageEntry> {
        if len == 0 {
            return Err(StoreError::InvalidDelivery {
                path: folder.path().to_owned(),
                reason: "empty message",
            });
        }
        let id = new_base_name(self.hostname(), len);
        let temp = folder.path().join("tmp").join(id.as_str());
        let mut write = || -> io::Result<()> {
            let mut file = write_options().create_new(true).open(&temp)?;
            // One octet more than announced tells a reader that is too long.
            let copied = io::copy(&mut message.take(len.saturating_add(1)), &mut file)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the message has {copied} octets, not the {len} announced"),
                ));
            }
            file.set_modified(time_of(internal_date))?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&temp);
            return Err(folder_error(folder, &temp, e));
        }
        self.enter_cur(folder, &temp, id, Some(len), flags)
    }

    /// Copies a message into `dest` with `flags` (IMAP COPY): a hard link when the file
    /// system allows, else a copy of the bytes; the modification time (INTERNALDATE) is
    /// kept. Returns the copy.
    pub fn copy_message(
        &self,
        from: &Folder,
        entry: &MessageEntry,
        dest: &Folder,
        flags: Flags,
    ) -> Result<MessageEntry> {
        let size = from.size_of(entry)?;
        let id = new_base_name(self.hostname(), size);
        let temp = dest.path().join("tmp").join(id.as_str());
        let mut source = entry.path.clone();
        for attempt in 0..3 {
            match fs::hard_link(&source, &temp) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 2 => {
                    if !dest.path().join("tmp").is_dir() {
                        return Err(folder_error(dest, &temp, e));
                    }
                    source = from.find(&entry.id)?.path;
                }
                Err(_) => {
                    // Another file system, or links not allowed: copy the bytes.
                    let mut input = from.open_message(entry)?;
                    let modified = input
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or_else(|_| SystemTime::now());
                    let mut copy = || -> io::Result<()> {
                        let mut out = write_options().create_new(true).open(&temp)?;
                        io::copy(&mut input, &mut out)?;
                        out.set_modified(modified)?;
                        out.sync_all()
                    };
                    if let Err(e) = copy() {
                        let _ = fs::remove_file(&temp);
                        return Err(folder_error(dest, &temp, e));
                    }
                    break;
                }
            }
        }
        self.enter_cur(dest, &temp, id, Some(size), flags)
    }

    /// Moves a message into `dest` with `flags` (IMAP MOVE): one rename, so it is in
    /// exactly one of the folders at any time. It gets a new base name.
    pub fn move_message(
        &self,
        from: &Folder,
        entry: &MessageEntry,
        dest: &Folder,
        flags: Flags,
    ) -> Result<MessageEntry> {
        let size = from.size_of(entry)?;
        let id = new_base_name(self.hostname(), size);
        let target = dest.path().join("cur").join(cur_name(&id, flags));
        let mut source = entry.path.clone();
        for attempt in 0..3 {
            match fs::rename(&source, &target) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 2 => {
                    if !dest.path().join("cur").is_dir() {
                        return Err(folder_error(dest, &target, e));
                    }
                    source = from.find(&entry.id)?.path;
                }
                Err(e) => return Err(StoreError::io(source, e)),
            }
        }
        sync_dir(&dest.path().join("cur"))?;
        if let Some(dir) = source.parent() {
            sync_dir(dir)?;
        }
        Ok(MessageEntry {
            id,
            size: Some(size),
            flags,
            path: target,
            is_new: false,
        })
    }

    /// True if the folder exists (the INBOX always does).
    pub fn folder_exists(&self, name: &FolderName) -> bool {
        self.open_folder(name).is_ok()
    }

    /// Deletes a folder and every message in it (not its subfolders, which are folders
    /// of their own). It first disappears under a name no reader takes for a folder,
    /// then is removed. The INBOX cannot be deleted.
    pub fn delete_folder(&self, name: &FolderName) -> Result<()> {
        if name.is_inbox() {
            return Err(StoreError::InvalidFolderName {
                name: name.to_string(),
                reason: "the INBOX cannot be deleted",
            });
        }
        let folder = self.open_folder(name)?;
        let n = DELETIONS.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .root()
            .join(format!("{DELETING_PREFIX}{}-{n}", std::process::id()));
        fs::rename(folder.path(), &doomed).map_err(|e| StoreError::io(folder.path(), e))?;
        sync_dir(self.root())?;
        fs::remove_dir_all(&doomed).map_err(|e| StoreError::io(&doomed, e))
    }

    /// Renames a folder and its subfolders (`A` to `B` also makes `A.x` `B.x`). The
    /// target and its subfolders must not exist. The INBOX is not renamed here: IMAP's
    /// RENAME of the INBOX moves its messages (see [`Mailbox::move_message`]).
    pub fn rename_folder(&self, from: &FolderName, to: &FolderName) -> Result<()> {
        if from.is_inbox() || to.is_inbox() {
            return Err(StoreError::InvalidFolderName {
                name: to.to_string(),
                reason: "the INBOX cannot be renamed this way",
            });
        }
        let prefix = format!("{}{}", from.as_str(), FolderName::DELIMITER);
        let mut moves: Vec<(FolderName, FolderName)> = Vec::new();
        for name in self.folders()? {
            if name == *from {
                moves.push((name, to.clone()));
            } else if let Some(rest) = name.as_str().strip_prefix(&prefix) {
                let target =
                    FolderName::new(&format!("{}{}{rest}", to.as_str(), FolderName::DELIMITER))?;
                moves.push((name, target));
            }
        }
        if moves.is_empty() {
            return Err(StoreError::FolderNotFound {
                path: self.folder_dir(from),
            });
        }
        for (_, target) in &moves {
            let dir = self.folder_dir(target);
            if fs::symlink_metadata(&dir).is_ok() {
                return Err(StoreError::io(
                    dir,
                    io::Error::new(io::ErrorKind::AlreadyExists, "the folder exists"),
                ));
            }
        }
        for (source, target) in &moves {
            let (a, b) = (self.folder_dir(source), self.folder_dir(target));
            fs::rename(&a, &b).map_err(|e| StoreError::io(a, e))?;
        }
        sync_dir(self.root())
    }

    fn folder_dir(&self, name: &FolderName) -> PathBuf {
        match name.dir_name() {
            Some(dir) => self.root().join(dir),
            None => self.root().to_owned(),
        }
    }

    /// Renames a complete, synced file from the folder's `tmp/` into `cur/`.
    fn enter_cur(
        &self,
        folder: &Folder,
        temp: &Path,
        id: MessageId,
        size: Option<u64>,
        flags: Flags,
    ) -> Result<MessageEntry> {
        let target = folder.path().join("cur").join(cur_name(&id, flags));
        if let Err(e) = fs::rename(temp, &target) {
            let _ = fs::remove_file(temp);
            return Err(folder_error(folder, &target, e));
        }
        sync_dir(&folder.path().join("cur"))?;
        Ok(MessageEntry {
            id,
            size,
            flags,
            path: target,
            is_new: false,
        })
    }
}

/// The time `secs` seconds after 1970 (before it for negative values).
fn time_of(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// A file operation in a folder failed: a folder that is gone says so.
fn folder_error(folder: &Folder, path: &Path, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound && !folder.path().join("cur").is_dir() {
        StoreError::FolderNotFound {
            path: folder.path().to_owned(),
        }
    } else {
        StoreError::io(path, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Delivery;
    use crate::names::Flag;

    fn mailbox() -> (tempfile::TempDir, Mailbox) {
        let tmp = tempfile::tempdir().unwrap();
        let mailbox = Mailbox::open(tmp.path().join("mail/example.org/bob"), "mx").unwrap();
        (tmp, mailbox)
    }

    fn deliver(mailbox: &Mailbox, key: &str) -> MessageId {
        match mailbox
            .deliver(&FolderName::inbox(), key.as_bytes(), key)
            .unwrap()
        {
            Delivery::Stored { id, .. } => id,
            Delivery::AlreadyDelivered => panic!("{key} was delivered before"),
        }
    }

    #[test]
    fn only_one_claim_of_a_new_message_succeeds() {
        let (_tmp, mailbox) = mailbox();
        deliver(&mailbox, "Q1:bob");
        let inbox = mailbox.inbox();
        let entry = inbox.messages().unwrap().remove(0);
        assert!(entry.is_new);
        let claimed = inbox.claim(&entry).unwrap().unwrap();
        assert!(!claimed.is_new);
        assert!(claimed.path.to_string_lossy().ends_with(":2,"));
        assert!(inbox.claim(&entry).unwrap().is_none());
        assert_eq!(inbox.read(&entry.id).unwrap(), b"Q1:bob");
    }

    #[test]
    fn copy_and_move_make_new_names_and_keep_the_date() {
        let (_tmp, mailbox) = mailbox();
        let id = deliver(&mailbox, "Q1:bob");
        let inbox = mailbox.inbox();
        let archive = mailbox
            .folder(&FolderName::new("Archive").unwrap())
            .unwrap();
        let entry = inbox.find(&id).unwrap();
        let old = UNIX_EPOCH + Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&entry.path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let seen = Flags::new().with(Flag::Seen);
        let copy = mailbox
            .copy_message(&inbox, &entry, &archive, seen)
            .unwrap();
        assert_ne!(copy.id, id);
        assert_eq!(archive.read(&copy.id).unwrap(), b"Q1:bob");
        assert_eq!(archive.find(&copy.id).unwrap().flags, seen);
        assert_eq!(fs::metadata(&copy.path).unwrap().modified().unwrap(), old);
        assert_eq!(copy.size, Some(6));

        let moved = mailbox
            .move_message(&inbox, &entry, &archive, Flags::new())
            .unwrap();
        assert_ne!(moved.id, id);
        assert!(inbox.messages().unwrap().is_empty());
        assert_eq!(archive.messages().unwrap().len(), 2);
        assert_eq!(fs::metadata(&moved.path).unwrap().modified().unwrap(), old);
        // A stale entry of a message that is gone is reported.
        let err = mailbox
            .move_message(&inbox, &entry, &archive, Flags::new())
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn append_refuses_empty_messages_and_missing_folders() {
        let (_tmp, mailbox) = mailbox();
        let inbox = mailbox.inbox();
        assert!(mailbox.append(&inbox, b"", Flags::new(), 0).is_err());
        let gone = mailbox.folder(&FolderName::new("Gone").unwrap()).unwrap();
        mailbox.delete_folder(gone.name()).unwrap();
        let err = mailbox.append(&gone, b"x", Flags::new(), 0).unwrap_err();
        assert!(matches!(err, StoreError::FolderNotFound { .. }), "{err}");
    }

    #[test]
    fn append_from_copies_exactly_the_announced_octets() {
        let (_tmp, mailbox) = mailbox();
        let inbox = mailbox.inbox();
        let message: Vec<u8> = b"Subject: big\r\n\r\n"
            .iter()
            .copied()
            .chain((0..200_000u32).map(|i| b'a' + (i % 26) as u8))
            .collect();
        let entry = mailbox
            .append_from(
                &inbox,
                &mut &message[..],
                message.len() as u64,
                Flags::new(),
                1000,
            )
            .unwrap();
        assert_eq!(entry.size, Some(message.len() as u64));
        assert!(inbox.read(&entry.id).unwrap() == message);
        // A reader shorter or longer than announced stores nothing.
        for len in [message.len() as u64 + 1, message.len() as u64 - 1] {
            let err = mailbox
                .append_from(&inbox, &mut &message[..], len, Flags::new(), 1000)
                .unwrap_err();
            assert!(err.to_string().contains("announced"), "{err}");
        }
        assert_eq!(inbox.messages().unwrap().len(), 1);
        assert_eq!(fs::read_dir(inbox.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn folders_are_deleted_without_their_children_and_renamed_with_them() {
        let (_tmp, mailbox) = mailbox();
        for name in ["A", "A.B", "A.B.C", "AB"] {
            mailbox.folder(&FolderName::new(name).unwrap()).unwrap();
        }
        let a = FolderName::new("A").unwrap();
        mailbox
            .rename_folder(&a, &FolderName::new("X").unwrap())
            .unwrap();
        let names: Vec<String> = mailbox
            .folders()
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(names, ["INBOX", "AB", "X", "X.B", "X.B.C"]);
        // The target must not exist.
        let err = mailbox
            .rename_folder(
                &FolderName::new("AB").unwrap(),
                &FolderName::new("X").unwrap(),
            )
            .unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        mailbox
            .delete_folder(&FolderName::new("X").unwrap())
            .unwrap();
        let names: Vec<String> = mailbox
            .folders()
            .unwrap()
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(names, ["INBOX", "AB", "X.B", "X.B.C"]);
        assert!(mailbox.delete_folder(&FolderName::inbox()).is_err());
        assert!(
            mailbox
                .delete_folder(&FolderName::new("Nope").unwrap())
                .unwrap_err()
                .is_not_found()
        );
        assert!(!fs::read_dir(mailbox.root()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(DELETING_PREFIX)
        }));
    }
}
